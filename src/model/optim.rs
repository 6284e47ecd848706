//! AdamW (Loshchilov and Hutter 2019) with clipping of the global gradient norm, its moments kept
//! by parameter name so a checkpoint can save them and a resumed run continues exactly; and a
//! warm-up + cosine learning-rate schedule.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Storage, Tensor, TensorId, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::fused::par::multiversion;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// First and second moments by parameter name, flattened, on the host.
pub type HostMoments = BTreeMap<String, (Vec<f32>, Vec<f32>)>;

/// AdamW whose update is one fused pass on the host per parameter: each weight, its gradient and
/// its two moments are read and written together. The clipping norm takes each gradient's sum of
/// squares from the op that wrote it where that op took it ([`GradSquares`]), and reads the
/// gradient for it otherwise. candle's tensor-op formulation costs about fifteen passes, each
/// with a fresh allocation, which dominated the step of a model with many experts.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken (for bias correction).
    pub t: u64,
    /// First and second moments by parameter name (flattened), of parameters on the host.
    pub moments: HostMoments,
    /// The moments of parameters on a GPU, kept there (f32, the parameter's shape): copying
    /// them and the weights to the host every step would cost more than the step.
    device_moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
            t: 0,
            moments: BTreeMap::new(),
            device_moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, after clipping the global gradient norm
    /// to `clip_norm` (0 = no clipping). Returns the norm before clipping. Weight decay applies to
    /// matrices only, not to gains, biases or vectors (the usual practice).
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
        lr: f64,
        clip_norm: f64,
    ) -> Result<f64> {
        self.step_with_squares(vars, grads, &GradSquares::default(), lr, clip_norm)
    }

    /// As [`AdamW::step`], taking the sum of squares of a gradient from `known` where the op
    /// that computed it took it already, rather than reading the gradient once more for it.
    pub fn step_with_squares(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
        known: &GradSquares,
        lr: f64,
        clip_norm: f64,
    ) -> Result<f64> {
        let mut with_grad: Vec<(&String, &Var, &Tensor)> = Vec::new();
        let mut sumsq = 0f64;
        // Off the host, each gradient's sum of squares stays on its device until one sum of
        // them all is read: one synchronisation for the norm, not one per parameter.
        let mut on_device: Vec<Tensor> = Vec::new();
        for (name, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                match known.get(var.as_tensor()) {
                    Some(s) => sumsq += s,
                    None if g.device().is_cpu() => sumsq += with_host_slice(g, sum_of_squares)?,
                    None => on_device.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?),
                }
                with_grad.push((name, var, g));
            }
        }
        if !on_device.is_empty() {
            sumsq += Tensor::stack(&on_device, 0)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        let norm = sumsq.sqrt();
        let scale = if clip_norm > 0.0 && norm > clip_norm {
            (clip_norm / norm) as f32
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let c1 = 1.0 / (1.0 - self.beta1.powi(self.t as i32)) as f32;
        let c2 = 1.0 / (1.0 - self.beta2.powi(self.t as i32)) as f32;
        let (lr32, eps) = (lr as f32, self.eps as f32);
        for (name, var, g) in with_grad {
            let decay = if var.rank() >= 2 {
                1.0 - (lr * self.weight_decay) as f32
            } else {
                1.0
            };
            let h = Hyper {
                scale,
                b1,
                b2,
                c1,
                c2,
                lr: lr32,
                eps,
                decay,
            };
            if !var.device().is_cpu() {
                self.update_on_device(name, var, g, h)?;
                continue;
            }
            let n = var.elem_count();
            let (m, v) = self
                .moments
                .entry(name.clone())
                .or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
            with_host_slice(g, |g| -> Result<()> {
                let update = FusedUpdate {
                    g,
                    moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                    h,
                };
                if var.dtype() == DType::F32 {
                    // In place: no copy of the weights, no allocation.
                    var.as_tensor().inplace_op1(&update)
                } else {
                    let mut theta: Vec<f32> = var
                        .as_tensor()
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1()?;
                    update.apply(&mut theta);
                    let t = Tensor::from_vec(theta, var.shape(), var.device())?
                        .to_dtype(var.dtype())?;
                    var.set(&t)
                }
            })??;
        }
        Ok(norm)
    }

    /// The update of one parameter that lives off the host, from tensor ops on its device, in
    /// f32: the same arithmetic as [`apply_range`], about a dozen memory-bound passes, which on a
    /// GPU take less time than copying the weights out and back. Moments loaded from a checkpoint
    /// (on the host) move to the device at their first update.
    fn update_on_device(&mut self, name: &str, var: &Var, g: &Tensor, h: Hyper) -> Result<()> {
        let (m, v) = match self.device_moments.remove(name) {
            Some(mv) => mv,
            None => match self.moments.remove(name) {
                Some((m, v)) => (
                    Tensor::from_vec(m, var.shape(), var.device())?,
                    Tensor::from_vec(v, var.shape(), var.device())?,
                ),
                None => (
                    Tensor::zeros(var.shape(), DType::F32, var.device())?,
                    Tensor::zeros(var.shape(), DType::F32, var.device())?,
                ),
            },
        };
        let (m, v, theta) = composed_update(var.as_tensor(), g, &m, &v, h)?;
        var.set(&theta)?;
        self.device_moments.insert(name.to_string(), (m, v));
        Ok(())
    }

    /// Every moment on the host, by parameter name, for a checkpoint.
    pub fn host_moments(&self) -> Result<HostMoments> {
        let mut out = self.moments.clone();
        for (name, (m, v)) in &self.device_moments {
            out.insert(
                name.clone(),
                (m.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?),
            );
        }
        Ok(out)
    }
}

/// One AdamW update from tensor ops: returns the new first and second moments and the new
/// weights (in the weights' dtype). The path off the host; on the host, the reference the tests
/// hold it to.
pub(crate) fn composed_update(
    theta: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: Hyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    let f = |x: f32| f64::from(x);
    let g = g.to_dtype(DType::F32)?.affine(f(h.scale), 0.0)?;
    let m = (m.affine(f(h.b1), 0.0)? + g.affine(1.0 - f(h.b1), 0.0)?)?;
    let v = (v.affine(f(h.b2), 0.0)? + g.sqr()?.affine(1.0 - f(h.b2), 0.0)?)?;
    let denom = v.affine(f(h.c2), 0.0)?.sqrt()?.affine(1.0, f(h.eps))?;
    let step = (m.affine(f(h.lr) * f(h.c1), 0.0)? / denom)?;
    let theta32 = theta.to_dtype(DType::F32)?;
    let new = (theta32.affine(f(h.decay), 0.0)? - step)?.to_dtype(theta.dtype())?;
    Ok((m, v, new))
}

/// The sums of squares of some parameters' gradients, by parameter, each as [`sum_of_squares`]
/// gives it. With 64 experts, reading every expert's gradient again only for the clipping norm
/// costs a pass over hundreds of megabytes; the fused ops take the sum while the gradient they
/// just wrote is still in cache.
#[derive(Default, Debug)]
pub struct GradSquares(HashMap<TensorId, f64>);

impl GradSquares {
    pub fn get(&self, param: &Tensor) -> Option<f64> {
        self.0.get(&param.id()).copied()
    }

    pub fn insert(&mut self, param: &Tensor, sumsq: f64) {
        self.0.insert(param.id(), sumsq);
    }

    /// Records `param`'s sum, or forgets any it had when `sumsq` is `None` (its gradient is no
    /// longer the one a sum was taken of).
    pub fn set(&mut self, param: &Tensor, sumsq: Option<f64>) {
        match sumsq {
            Some(s) => self.insert(param, s),
            None => {
                self.0.remove(&param.id());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Run `f` on a tensor's values as f32: borrowed from a contiguous f32 CPU tensor, copied otherwise.
fn with_host_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&data[a..b]));
        }
    }
    let copy: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(f(&copy))
}

/// One AdamW update of one parameter, applied in place to a CPU tensor's storage.
struct FusedUpdate<'a> {
    g: &'a [f32],
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    h: Hyper,
}

/// The scalars of one update.
#[derive(Clone, Copy)]
pub struct Hyper {
    scale: f32,
    b1: f32,
    b2: f32,
    /// Bias corrections 1 / (1 - beta^t).
    c1: f32,
    c2: f32,
    lr: f32,
    eps: f32,
    decay: f32,
}

/// Elements per parallel task of the update and the norm: big enough that a task outweighs its
/// scheduling, small enough that the experts' matrices spread over the cores.
const CHUNK: usize = 1 << 16;

/// Sum of squares in f64 (the global norm of tens of millions of values), over rayon's pool.
pub fn sum_of_squares(g: &[f32]) -> f64 {
    if g.len() <= CHUNK {
        return lanes(g);
    }
    // Partials collected in order and summed in order: the same norm on every run, however
    // rayon splits the work.
    let partials: Vec<f64> = g.par_chunks(CHUNK).map(lanes).collect();
    partials.iter().sum()
}

/// [`sum_of_squares`] on the calling thread, to the same bits: for an op whose threads are each
/// busy with work of their own.
pub fn sum_of_squares_here(g: &[f32]) -> f64 {
    if g.len() <= CHUNK {
        return lanes(g);
    }
    g.chunks(CHUNK).map(lanes).sum()
}

multiversion! {
    /// Sum of squares of one chunk, in eight f64 lanes. Compiled for AVX2 and AVX-512 beside the
    /// baseline (two f64 lanes a vector), with the same operations in the same order, so every
    /// version gives the same bits.
    pub fn lanes(g: &[f32]) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = g.chunks_exact(8);
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += f64::from(x) * f64::from(x);
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

impl FusedUpdate<'_> {
    fn apply(&self, theta: &mut [f32]) {
        let mut guard = self.moments.borrow_mut();
        let (m, v) = &mut *guard;
        let h = self.h;
        if theta.len() <= CHUNK {
            apply_range(h, theta, self.g, m, v);
            return;
        }
        // Large parameters (the experts' matrices) are split over the cores: the update is a
        // memory-bound pass and one core does not saturate the memory bus. rayon's pool is
        // persistent; a thread per call cost its stack's page faults on every parameter.
        theta
            .par_chunks_mut(CHUNK)
            .zip(self.g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((t, g), (m, v))| apply_range(h, t, g, m, v));
    }
}

multiversion! {
    /// The update of one range of a parameter. Compiled for AVX-512 and AVX2 beside the
    /// baseline: with 64 experts it runs over tens of millions of weights a step, and the
    /// baseline's 4-wide square roots and divisions held it back as much as the memory traffic.
    pub fn apply_range(h: Hyper, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((t, &g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
            let g = g * h.scale;
            *m = h.b1 * *m + (1.0 - h.b1) * g;
            *v = h.b2 * *v + (1.0 - h.b2) * g * g;
            *t = *t * h.decay - h.lr * (*m * h.c1) / ((*v * h.c2).sqrt() + h.eps);
        }
    }
}

impl InplaceOp1 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused AdamW updates f32 parameters only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused AdamW needs a contiguous parameter");
        };
        if end - start != self.g.len() {
            candle_core::bail!(
                "fused AdamW: parameter of {} elements, gradient of {}",
                end - start,
                self.g.len()
            );
        }
        self.apply(&mut data[start..end]);
        Ok(())
    }
}

/// Linear warm-up to `peak`, then cosine decay to `peak x min_ratio` at `total` steps (constant
/// after).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_ratio: f64,
}

impl LrSchedule {
    /// Learning rate of step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_device_update_from_tensor_ops_matches_the_fused_host_update() {
        // Three steps of each formulation from the same weights, gradients and moments; the
        // clipping scale, bias corrections and decay all differ from 1.
        let n = 2 * CHUNK + 77;
        let mut rng = crate::data::rng::SplitMix64::new(3);
        let mut draw = || (rng.next_f64() as f32 - 0.5) * 2.0;
        let mut theta: Vec<f32> = (0..n).map(|_| draw()).collect();
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        let dev = Device::Cpu;
        let mut t_theta = Tensor::from_slice(&theta, n, &dev).unwrap();
        let mut t_m = Tensor::zeros(n, DType::F32, &dev).unwrap();
        let mut t_v = t_m.clone();
        for step in 1..=3 {
            let g: Vec<f32> = (0..n).map(|_| draw()).collect();
            let h = Hyper {
                scale: 0.7,
                b1: 0.9,
                b2: 0.95,
                c1: 1.0 / (1.0 - 0.9f32.powi(step)),
                c2: 1.0 / (1.0 - 0.95f32.powi(step)),
                lr: 1e-2,
                eps: 1e-8,
                decay: 0.999,
            };
            apply_range(h, &mut theta, &g, &mut m, &mut v);
            let tg = Tensor::from_slice(&g, n, &dev).unwrap();
            (t_m, t_v, t_theta) = composed_update(&t_theta, &tg, &t_m, &t_v, h).unwrap();
        }
        let got: Vec<f32> = t_theta.to_vec1().unwrap();
        let worst = got
            .iter()
            .zip(&theta)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // f32 rounding of a different order of operations: a few ulps of the weights (about 1).
        assert!(worst < 1e-5, "largest difference {worst}");
        let moved = got
            .iter()
            .zip(&theta)
            .filter(|(a, _)| a.abs() > 0.0)
            .count();
        assert_eq!(moved, n);
    }

    #[test]
    fn gradient_norm_matches_a_plain_sum_and_repeats_exactly() {
        // Over several parallel chunks and a ragged tail.
        let g: Vec<f32> = (0..3 * CHUNK + 123)
            .map(|i| ((i % 997) as f32 - 498.0) * 1e-3)
            .collect();
        let plain: f64 = g.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let ours = sum_of_squares(&g);
        assert!((ours - plain).abs() <= 1e-9 * plain);
        assert_eq!(ours.to_bits(), sum_of_squares(&g).to_bits());
        // On one thread, as the fused ops take it: the same bits, at every length.
        for n in [0, 7, CHUNK, CHUNK + 1, g.len()] {
            let here = sum_of_squares_here(&g[..n]);
            assert_eq!(here.to_bits(), sum_of_squares(&g[..n]).to_bits(), "{n}");
        }
    }

    #[test]
    fn a_known_sum_of_squares_is_used_rather_than_recomputed() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let loss = (w.as_tensor() * &Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let vars = BTreeMap::from([("w".to_string(), w.clone())]);
        let mut known = GradSquares::default();
        known.insert(w.as_tensor(), 25.0);
        let norm = AdamW::new(0.0)
            .step_with_squares(&vars, &grads, &known, 0.1, 0.0)
            .unwrap();
        assert_eq!(norm, 5.0);
        // A different sum is taken as given: the optimiser does not read the gradient for it.
        known.insert(w.as_tensor(), 16.0);
        let norm = AdamW::new(0.0)
            .step_with_squares(&vars, &grads, &known, 0.1, 0.0)
            .unwrap();
        assert_eq!(norm, 4.0);
    }

    #[test]
    fn schedule_warms_up_peaks_and_decays_to_the_floor() {
        let s = LrSchedule {
            peak: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            min_ratio: 0.1,
        };
        assert!((s.at(0) - 1e-4).abs() < 1e-12);
        assert!((s.at(9) - 1e-3).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!((s.at(60) - 0.55e-3).abs() < 1e-9); // half-way down the cosine
        assert!((s.at(110) - 1e-4).abs() < 1e-12);
        assert!((s.at(500) - 1e-4).abs() < 1e-12);
        assert!((1..200).all(|i| i <= 10 || s.at(i) <= s.at(i - 1) + 1e-15));
    }

    #[test]
    fn first_adamw_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // With bias correction, the first update is lr * g / (|g| + eps) = lr * sign(g).
        let w = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let loss = (w.as_tensor() * &Tensor::new(&[2f32, -1.0, 0.5], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let vars = BTreeMap::from([("w".to_string(), w.clone())]);
        let mut opt = AdamW::new(0.0);
        let norm = opt.step(&vars, &grads, 0.1, 0.0).unwrap();
        let v = w.as_tensor().to_vec1::<f32>().unwrap();
        for (got, want) in v.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((got - want).abs() < 1e-5, "{v:?}");
        }
        assert!((norm - (4.0f64 + 1.0 + 0.25).sqrt()).abs() < 1e-6);
    }
}
