//! Layer norm with gain and bias as one pass per row forward and one backward, the backward
//! giving the input, gain and bias gradients together. Composed from candle's ops it is about ten
//! full-size tensors each way.

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

use super::math::{dot, sum};
use super::par::{f32_slice, filled, for_rows, map_rows, multiversion};

/// `(x - mean) / sqrt(var + eps) * gain + bias` over the last dimension of `x`.
pub fn layer_norm(x: &Tensor, gain: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&gain.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}

/// Mean and 1 / standard deviation of one row.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    // sum((x - mean)^2) = sum(x^2) - n mean^2 loses digits when the mean is large against the
    // spread; a second pass over the cached row does not.
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    let var = (sum(&acc) + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    /// Normalises whole rows of `x` into `y`.
    pub fn forward_rows(x: &[f32], gain: &[f32], bias: &[f32], eps: f32, y: &mut [MaybeUninit<f32>]) {
        let d = gain.len();
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let (mean, rstd) = moments(x, eps);
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gain).zip(bias) {
                y.write((x - mean) * rstd * g + b);
            }
        }
    }
}

multiversion! {
    /// Input gradients of whole rows into `dx`, plus `residual` (the gradient that reaches `x`
    /// around the norm) when it is not empty; adds the rows' gain and bias gradients to `dgain`
    /// and `dbias`.
    pub fn backward_rows(
        x: &[f32],
        gain: &[f32],
        g: &[f32],
        eps: f32,
        residual: &[f32],
        dx: &mut [MaybeUninit<f32>],
        gain_bias_grads: (&mut [f32], &mut [f32]),
    ) {
        let (dgain, dbias) = gain_bias_grads;
        let d = gain.len();
        let n = d as f32;
        let (mut xhat, mut gg) = (vec![0f32; d], vec![0f32; d]);
        for (i, ((x, g), dx)) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).enumerate() {
            let (mean, rstd) = moments(x, eps);
            // With xhat = (x - mean) rstd and gg = g gain:
            // dx = rstd (gg - mean(gg) - xhat mean(gg xhat)).
            for ((((xh, gw), &x), &g), &w) in xhat.iter_mut().zip(gg.iter_mut()).zip(x).zip(g).zip(gain) {
                *xh = (x - mean) * rstd;
                *gw = g * w;
            }
            for (((dw, db), &g), &xh) in dgain.iter_mut().zip(dbias.iter_mut()).zip(g).zip(&xhat) {
                *dw += g * xh;
                *db += g;
            }
            let (m1, m2) = (sum(&gg) / n, dot(&gg, &xhat) / n);
            if residual.is_empty() {
                for ((dx, &gw), &xh) in dx.iter_mut().zip(&gg).zip(&xhat) {
                    dx.write(rstd * (gw - m1 - xh * m2));
                }
            } else {
                let res = &residual[i * d..(i + 1) * d];
                for (((dx, &gw), &xh), &r) in dx.iter_mut().zip(&gg).zip(&xhat).zip(res) {
                    dx.write(r + rstd * (gw - m1 - xh * m2));
                }
            }
        }
    }
}

/// The layer norm of every `gain.len()`-long row of `x`, split over the cores.
pub(super) fn forward(x: &[f32], gain: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let d = gain.len();
    filled(x.len(), |y| {
        for_rows(y, d, |row, y| {
            let x = &x[row * d..row * d + y.len()];
            forward_rows(x, gain, bias, eps, y)
        })
    })
}

/// The gradients of the layer norm of `x` from the gradient `g` of its output: `dx` (plus
/// `residual`, when not empty), `dgain` and `dbias`, split over the cores.
pub(super) fn backward(
    x: &[f32],
    gain: &[f32],
    g: &[f32],
    eps: f32,
    residual: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gain.len();
    let mut partials = Vec::new();
    let dx = filled(x.len(), |dx| {
        partials = map_rows(dx, d, |row, dx| {
            let r = row * d..row * d + dx.len();
            let res = if residual.is_empty() {
                residual
            } else {
                &residual[r.clone()]
            };
            let (mut dgain, mut dbias) = (vec![0f32; d], vec![0f32; d]);
            backward_rows(
                &x[r.clone()],
                gain,
                &g[r],
                eps,
                res,
                dx,
                (&mut dgain, &mut dbias),
            );
            (dgain, dbias)
        });
    });
    let dgain = (0..d)
        .map(|j| partials.iter().map(|p| p.0[j]).sum())
        .collect();
    let dbias = (0..d)
        .map(|j| partials.iter().map(|p| p.1[j]).sum())
        .collect();
    (dx, dgain, dbias)
}

struct LayerNorm {
    eps: f32,
}

/// Checks that `x` is whole rows of `gain`'s length and `bias` matches `gain`.
fn check(what: &str, x: &[f32], gain: &[f32], other: &[f32]) -> Result<usize> {
    let d = gain.len();
    if d == 0 || !x.len().is_multiple_of(d) || !other.len().is_multiple_of(d) {
        bail!(
            "fused {what}: {} values are not rows of the gain's {d}",
            x.len()
        );
    }
    Ok(d)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer norm")?;
        let gain = f32_slice(s2, l2, "layer norm")?;
        let bias = f32_slice(s3, l3, "layer norm")?;
        let d = check("layer norm", x, gain, bias)?;
        if bias.len() != d {
            bail!("fused layer norm: bias has {} values, gain {d}", bias.len());
        }
        Ok((
            CpuStorage::F32(forward(x, gain, bias, self.eps)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed =
            x.apply_op3_no_bwd(gain, &g.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        let rows = packed.dim(0)? - 2;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dgain = packed.get(rows)?.reshape(gain.shape())?;
        let dbias = packed.get(rows + 1)?.reshape(gain.shape())?;
        Ok((Some(dx), Some(dgain), Some(dbias)))
    }
}

/// Input, gain and bias gradients as one (rows + 2, d) tensor: the rows of `dx`, then `dgain`,
/// then `dbias` (a custom op has one output).
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer norm backward")?;
        let gain = f32_slice(s2, l2, "layer norm backward")?;
        let g = f32_slice(s3, l3, "layer norm backward")?;
        let d = check("layer norm backward", x, gain, g)?;
        if g.len() != x.len() {
            bail!(
                "fused layer norm backward: {} inputs, {} gradients",
                x.len(),
                g.len()
            );
        }
        let rows = x.len() / d;
        // One more copy of dx than writing it in place; the tail is small and this op now
        // serves only the norms outside the fused blocks.
        let (mut out, dgain, dbias) = backward(x, gain, g, self.eps, &[]);
        out.extend(dgain);
        out.extend(dbias);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// `(x - mean) / sqrt(var + eps)` over the last dimension, from candle's ops.
pub fn normalise_composed(x: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)
}

#[cfg(test)]
fn layer_norm_composed(x: &Tensor, gain: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    normalise_composed(x, eps)?
        .broadcast_mul(gain)?
        .broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::{max_abs_diff, weighted_sum_grads};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_all_three_gradients_match_the_composed_norm() {
        let dev = Device::Cpu;
        // Enough rows to run in parallel; rows with offsets and scales of their own.
        let (rows, d) = (300, 96);
        let data: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 + (i / d) as f32 * 0.01)
            .collect();
        let x = Var::from_vec(data, (3, rows / 3, d), &dev).unwrap();
        let gain =
            Var::from_vec((0..d).map(|j| 0.5 + j as f32 / d as f32).collect(), d, &dev).unwrap();
        let bias = Var::from_vec((0..d).map(|j| j as f32 * 0.1 - 3.0).collect(), d, &dev).unwrap();
        let w = Tensor::rand(0f32, 1.0, (3, rows / 3, d), &dev).unwrap();

        let ours = layer_norm(x.as_tensor(), gain.as_tensor(), bias.as_tensor(), 1e-5).unwrap();
        let theirs =
            layer_norm_composed(x.as_tensor(), gain.as_tensor(), bias.as_tensor(), 1e-5).unwrap();
        assert!(max_abs_diff(&ours, &theirs) < 2e-5);

        let ga = weighted_sum_grads(&ours, &w);
        let gb = weighted_sum_grads(&theirs, &w);
        for v in [&x, &gain, &bias] {
            let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            assert_eq!(a.dims(), b.dims());
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_abs_diff(a, b) / scale < 1e-4, "{:?}", v.dims());
        }
    }

    #[test]
    fn normalised_rows_have_zero_mean_and_unit_variance() {
        let x = Tensor::new(
            &[[1f32, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 14.0]],
            &Device::Cpu,
        )
        .unwrap();
        let ones = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let zeros = ones.zeros_like().unwrap();
        let y = layer_norm(&x, &ones, &zeros, 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for row in y {
            let mean = row.iter().sum::<f32>() / 4.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        }
    }
}
