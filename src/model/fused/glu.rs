//! The elementwise middle of a gated feed-forward unit (GEGLU, SwiGLU; Shazeer 2020, "GLU
//! Variants Improve Transformer", arXiv 2002.05202): `z = act(g) * u` from the gate projection
//! `g` and the up projection `u`, and its backward pass, each one pass over the hidden values.
//! The plain MLP's GELU stays in [`super::gelu`]; these run only for gated profiles.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gelu::forward_with_slope_kernel as gelu_with_slope_kernel;
use super::math::exp;
use super::par::{filled, multiversion, rows_per_task};
use crate::profile::FfnKind;

multiversion! {
    /// SiLU `y = x sigmoid(x)` and its slope `sigmoid(x) (1 + x (1 - sigmoid(x)))` in one pass.
    pub fn silu_with_slope_kernel(
        x: &[f32],
        y: &mut [MaybeUninit<f32>],
        s: &mut [MaybeUninit<f32>],
    ) {
        for ((y, s), &x) in y.iter_mut().zip(s.iter_mut()).zip(x) {
            let sig = 1.0 / (1.0 + exp(-x));
            y.write(x * sig);
            s.write(sig * (1.0 + x * (1.0 - sig)));
        }
    }
}

multiversion! {
    /// `z = a * u`.
    pub fn product_kernel(a: &[f32], u: &[f32], z: &mut [MaybeUninit<f32>]) {
        for ((z, &a), &u) in z.iter_mut().zip(a).zip(u) {
            z.write(a * u);
        }
    }
}

multiversion! {
    /// From `dz`: `du = dz a` and `dg = dz u s`, with `a = act(g)` and `s = act'(g)`.
    pub fn backward_kernel(
        dz: &[f32],
        a: &[f32],
        u: &[f32],
        s: &[f32],
        du: &mut [MaybeUninit<f32>],
        dg: &mut [MaybeUninit<f32>],
    ) {
        for (i, (du, dg)) in du.iter_mut().zip(dg.iter_mut()).enumerate() {
            du.write(dz[i] * a[i]);
            dg.write(dz[i] * u[i] * s[i]);
        }
    }
}

/// An activation with its slope: (input, values, slopes).
type ActKernel = fn(&[f32], &mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]);

/// The activation of a gated unit's gate: GELU for GEGLU, SiLU for SwiGLU.
fn act_kernel(kind: FfnKind) -> ActKernel {
    match kind {
        FfnKind::Swiglu => silu_with_slope_kernel,
        FfnKind::Mlp | FfnKind::Geglu => gelu_with_slope_kernel,
    }
}

/// Chunk length for splitting `n` elements over the cores, or `n` to stay on this thread.
fn chunk(n: usize, parallel: bool) -> usize {
    let per = rows_per_task(n, 1);
    if parallel {
        per.max(1)
    } else {
        n.max(1)
    }
}

/// What the forward pass of a gated unit keeps: the down projection's input `z = act(g) * u`,
/// `a = act(g)`, `u` and the activation's slope `s` at `g`, each (rows, d_ff).
pub struct Gated {
    pub z: Vec<f32>,
    pub a: Vec<f32>,
    pub u: Vec<f32>,
    pub s: Vec<f32>,
}

/// `act(g) * u` for the gate and up projections `g` and `u` (equal lengths), split over the
/// cores when `parallel`.
pub fn forward(kind: FfnKind, g: &[f32], u: Vec<f32>, parallel: bool) -> Gated {
    let per = chunk(g.len(), parallel);
    let act = act_kernel(kind);
    let mut s = Vec::new();
    let a = filled(g.len(), |a| {
        s = filled(g.len(), |s| {
            a.par_chunks_mut(per)
                .zip(s.par_chunks_mut(per))
                .zip(g.par_chunks(per))
                .for_each(|((a, s), g)| act(g, a, s));
        })
    });
    let z = filled(g.len(), |z| {
        z.par_chunks_mut(per)
            .zip(a.par_chunks(per))
            .zip(u.par_chunks(per))
            .for_each(|((z, a), u)| product_kernel(a, u, z));
    });
    Gated { z, a, u, s }
}

/// The gradients of the up and gate projections' outputs, `(du, dg)`, from that of `z`.
pub fn backward(saved: &Gated, dz: &[f32], parallel: bool) -> (Vec<f32>, Vec<f32>) {
    let n = dz.len();
    let per = chunk(n, parallel);
    let mut dg = Vec::new();
    let du = filled(n, |du| {
        dg = filled(n, |dg| {
            du.par_chunks_mut(per)
                .zip(dg.par_chunks_mut(per))
                .enumerate()
                .for_each(|(i, (du, dg))| {
                    let r = i * per..i * per + du.len();
                    let (a, u, s) = (
                        &saved.a[r.clone()],
                        &saved.u[r.clone()],
                        &saved.s[r.clone()],
                    );
                    backward_kernel(&dz[r], a, u, s, du, dg)
                });
        })
    });
    (du, dg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The activation and its slope against the formulas in f64, the slope also against a
    /// central finite difference of the activation.
    #[test]
    fn silu_and_its_slope_match_the_formula_and_a_finite_difference() {
        let x: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) * 0.01).collect();
        let (y, s) = {
            let mut s = Vec::new();
            let y = filled(x.len(), |y| {
                s = filled(x.len(), |s| silu_with_slope_kernel(&x, y, s))
            });
            (y, s)
        };
        let silu = |v: f64| v / (1.0 + (-v).exp());
        for i in 0..x.len() {
            let v = x[i] as f64;
            let tol = 2e-6 * silu(v).abs().max(1.0);
            assert!((y[i] as f64 - silu(v)).abs() < tol, "silu({v})");
            let h = 1e-4;
            let fd = (silu(v + h) - silu(v - h)) / (2.0 * h);
            assert!((s[i] as f64 - fd).abs() < 1e-5, "slope at {v}");
        }
    }

    #[test]
    fn gated_forward_and_backward_are_the_products_on_one_thread_and_many() {
        let n = 70_000; // enough to split over the cores
        let g: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.07).collect();
        let u: Vec<f32> = (0..n).map(|i| ((i % 31) as f32 - 15.0) * 0.1).collect();
        let dz: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.3).collect();
        for kind in [FfnKind::Geglu, FfnKind::Swiglu] {
            let one = forward(kind, &g, u.clone(), false);
            let many = forward(kind, &g, u.clone(), true);
            assert_eq!(one.z, many.z);
            for i in (0..n).step_by(101) {
                assert_eq!(one.z[i], one.a[i] * u[i]);
            }
            let (du1, dg1) = backward(&one, &dz, false);
            let (du2, dg2) = backward(&many, &dz, true);
            assert_eq!((du1.clone(), dg1.clone()), (du2, dg2));
            for i in (0..n).step_by(101) {
                assert_eq!(du1[i], dz[i] * one.a[i]);
                assert_eq!(dg1[i], dz[i] * u[i] * one.s[i]);
            }
        }
    }
}
