//! GELU (the exact, erf form) as one pass forward and one pass backward. Composed from candle's
//! ops, the backward alone makes eight full-size tensors.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::math::{exp, normal_cdf_given_exp};
use rayon::prelude::*;

use super::par::{f32_slice, filled, for_rows, multiversion, rows_per_task};

/// 1 / sqrt(2 pi), the normal density's constant.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `x * Phi(x)`, with `Phi` the standard normal CDF.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

multiversion! {
    /// `y = x Phi(x)`, `Phi(x) = (1 + erf(x / sqrt 2)) / 2`.
    pub fn forward_kernel(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        for (y, &x) in y.iter_mut().zip(x) {
            let e = exp(-0.5 * x * x);
            y.write(x * normal_cdf_given_exp(x, e));
        }
    }
}

multiversion! {
    /// `dx = g (Phi(x) + x phi(x))`; `exp(-x^2 / 2)` serves both terms.
    pub fn backward_kernel(x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let e = exp(-0.5 * x * x);
            let cdf = normal_cdf_given_exp(x, e);
            dx.write(g * (cdf + x * e * INV_SQRT_2PI));
        }
    }
}

multiversion! {
    /// `y = x Phi(x)` and its slope `s = Phi(x) + x phi(x)` in one pass, for a backward pass
    /// that then needs one multiplication per element ([`slope_backward_kernel`]) instead of a
    /// second erf and exp. Both equal [`forward_kernel`] and [`backward_kernel`] with g = 1.
    pub fn forward_with_slope_kernel(
        x: &[f32],
        y: &mut [MaybeUninit<f32>],
        s: &mut [MaybeUninit<f32>],
    ) {
        for ((y, s), &x) in y.iter_mut().zip(s.iter_mut()).zip(x) {
            let e = exp(-0.5 * x * x);
            let cdf = normal_cdf_given_exp(x, e);
            y.write(x * cdf);
            s.write(cdf + x * e * INV_SQRT_2PI);
        }
    }
}

multiversion! {
    /// `dx = g s`, from the slope the forward pass kept.
    pub fn slope_backward_kernel(s: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>]) {
        for ((dx, &s), &g) in dx.iter_mut().zip(s).zip(g) {
            dx.write(g * s);
        }
    }
}

/// `x Phi(x)` and its slope over all of `x` ([`forward_with_slope_kernel`]), split over the
/// cores when `parallel`: (values, slopes).
pub fn forward_with_slope(x: &[f32], parallel: bool) -> (Vec<f32>, Vec<f32>) {
    let mut slope = Vec::new();
    let y = filled(x.len(), |y| {
        slope = filled(x.len(), |s| {
            let per = rows_per_task(x.len(), 1);
            if !parallel || per >= x.len() {
                return forward_with_slope_kernel(x, y, s);
            }
            y.par_chunks_mut(per)
                .zip(s.par_chunks_mut(per))
                .zip(x.par_chunks(per))
                .for_each(|((y, s), x)| forward_with_slope_kernel(x, y, s));
        })
    });
    (y, slope)
}

/// [`slope_backward_kernel`] over all of `s`, split over the cores when `parallel`.
pub fn slope_backward_into(s: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], parallel: bool) {
    binary_into(slope_backward_kernel, s, g, dx, parallel)
}

/// [`forward_kernel`] over all of `x`, split over the cores when `parallel`.
pub fn forward_into(x: &[f32], y: &mut [MaybeUninit<f32>], parallel: bool) {
    if !parallel {
        return forward_kernel(x, y);
    }
    for_rows(y, 1, |i, y| forward_kernel(&x[i..i + y.len()], y))
}

/// [`backward_kernel`] over all of `x`, split over the cores when `parallel`.
pub fn backward_into(x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>], parallel: bool) {
    binary_into(backward_kernel, x, g, dx, parallel)
}

/// An elementwise `kernel` of two equal-length inputs over all of them, split over the cores
/// when `parallel`.
fn binary_into(
    kernel: fn(&[f32], &[f32], &mut [MaybeUninit<f32>]),
    a: &[f32],
    b: &[f32],
    out: &mut [MaybeUninit<f32>],
    parallel: bool,
) {
    if !parallel {
        return kernel(a, b, out);
    }
    for_rows(out, 1, |i, out| {
        let r = i..i + out.len();
        kernel(&a[r.clone()], &b[r], out)
    })
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "gelu")?;
        let y = filled(x.len(), |y| forward_into(x, y, true));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluBackward)?))
    }
}

struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "gelu backward")?;
        let g = f32_slice(s2, l2, "gelu backward")?;
        if x.len() != g.len() {
            candle_core::bail!(
                "fused gelu backward: {} inputs, {} gradients",
                x.len(),
                g.len()
            );
        }
        let dx = filled(x.len(), |dx| backward_into(x, g, dx, true));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::{max_abs_diff, weighted_sum_grads};
    use candle_core::{Device, Var};

    fn inputs() -> Vec<f32> {
        (0..40_000).map(|i| (i as f32 - 20_000.0) * 4e-4).collect()
    }

    #[test]
    fn forward_and_gradient_match_candles_gelu_erf() {
        let v = Var::from_vec(inputs(), 40_000, &Device::Cpu).unwrap();
        let ours = gelu(v.as_tensor()).unwrap();
        let theirs = v.as_tensor().gelu_erf().unwrap();
        assert!(max_abs_diff(&ours, &theirs) < 2e-6);

        let w = Tensor::arange(0f32, 40_000.0, &Device::Cpu).unwrap() / 40_000.0;
        let w = w.unwrap();
        let ga = weighted_sum_grads(&ours, &w);
        let gb = weighted_sum_grads(&theirs, &w);
        assert!(max_abs_diff(ga.get(&v).unwrap(), gb.get(&v).unwrap()) < 2e-6);
    }

    /// The one-pass forward with its slope gives exactly the forward's values and, through the
    /// slope, exactly the backward's gradients, on one thread and split over the cores.
    #[test]
    fn the_kept_slope_gives_the_backward_pass_exactly() {
        let x = inputs();
        let g: Vec<f32> = (0..x.len())
            .map(|i| ((i % 13) as f32 - 6.0) * 0.37)
            .collect();
        for parallel in [false, true] {
            let y = filled(x.len(), |y| forward_into(&x, y, parallel));
            let dx = filled(x.len(), |dx| backward_into(&x, &g, dx, parallel));
            let (y2, s) = forward_with_slope(&x, parallel);
            let dx2 = filled(x.len(), |dx| slope_backward_into(&s, &g, dx, parallel));
            assert_eq!(y, y2);
            assert_eq!(dx, dx2);
        }
    }

    #[test]
    fn known_values() {
        let x = Tensor::new(&[0f32, 1.0, -1.0, 3.0], &Device::Cpu).unwrap();
        let y = gelu(&x).unwrap().to_vec1::<f32>().unwrap();
        // x * Phi(x) with Phi(1) = 0.841344746, Phi(3) = 0.998650102.
        let want = [0.0, 0.841_344_7, -0.158_655_26, 2.995_950_4];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
