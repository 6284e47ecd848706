//! AdamW (Loshchilov and Hutter 2019) with its moments kept by parameter name, so a checkpoint can
//! save them and a resumed run continues exactly; a warm-up + cosine learning-rate schedule; and
//! clipping of the global gradient norm.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken (for bias correction).
    pub t: u64,
    /// First and second moments by parameter name.
    pub moments: BTreeMap<String, (Tensor, Tensor)>,
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
        }
    }

    /// One update of every parameter that has a gradient, each gradient first multiplied by
    /// `grad_scale` (clipping). Weight decay applies to matrices only, not to gains, biases or
    /// vectors (the usual practice).
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 / (1.0 - b1.powi(self.t as i32));
        let c2 = 1.0 / (1.0 - b2.powi(self.t as i32));
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients can carry the graph that produced them: detach so the moments kept
            // across steps do not keep every step's graph alive.
            let g = g.detach();
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g
            };
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => (
                    ((m * b1)? + (&g * (1.0 - b1))?)?,
                    ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                ),
                None => ((&g * (1.0 - b1))?, (g.sqr()? * (1.0 - b2))?),
            };
            let update = ((&m * c1)? / ((&v * c2)?.sqrt()? + self.eps)?)?;
            let theta = &var.as_tensor().detach();
            let decayed = if var.rank() >= 2 && self.weight_decay > 0.0 {
                (theta * (1.0 - lr * self.weight_decay))?
            } else {
                theta.clone()
            };
            var.set(&decayed.sub(&(update * lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }
}

/// The global L2 norm of the gradients of `vars`.
pub fn grad_norm(vars: &BTreeMap<String, Var>, grads: &GradStore) -> Result<f64> {
    let mut sum = 0f64;
    for var in vars.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += g
                .to_dtype(candle_core::DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
    }
    Ok(sum.sqrt())
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
        opt.step(&vars, &grads, 0.1, 1.0).unwrap();
        let v = w.as_tensor().to_vec1::<f32>().unwrap();
        for (got, want) in v.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((got - want).abs() < 1e-5, "{v:?}");
        }
        assert!((grad_norm(&vars, &grads).unwrap() - (4.0f64 + 1.0 + 0.25).sqrt()).abs() < 1e-6);
    }
}
