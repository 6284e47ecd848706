//! Deterministic parameter initialisation: each parameter draws from its own generator, seeded
//! by the model seed and the parameter's name, so a parameter's values do not depend on which
//! other parameters exist. That is what makes `experts = 1` give exactly the dense model.

use candle_core::{DType, Device, Result, Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;

use super::layout::{layout, Fill};
use crate::data::rng::SplitMix64;
use crate::profile::ModelProfile;

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn normal(name: &str, seed: u64, count: usize, std: f64) -> Vec<f32> {
    let mut rng = SplitMix64::new(name_seed(seed, name));
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        // Box-Muller: two normals from two uniforms.
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        out.push((r * th.cos() * std) as f32);
        out.push((r * th.sin() * std) as f32);
    }
    out.truncate(count);
    out
}

/// Every parameter of `p` ([`super::layout`]), by name, initialised from `seed`.
pub fn init_vars(
    p: &ModelProfile,
    device: &Device,
    dtype: DType,
    seed: u64,
) -> Result<BTreeMap<String, Var>> {
    let layout = layout(p);
    // Each parameter has its own generator, so they are drawn side by side with the same values
    // as one after another: 64 experts' 67 M normals took seconds on one core.
    layout
        .params()
        .into_par_iter()
        .map(|param| {
            let count: usize = param.shape.iter().product();
            let values = match param.fill {
                Fill::Normal(std) => normal(&param.name, seed, count, std),
                Fill::Ones => vec![1.0; count],
                Fill::Zeros => vec![0.0; count],
            };
            let t = Tensor::from_vec(values, param.shape.clone(), device)?.to_dtype(dtype)?;
            Ok((param.name.clone(), Var::from_tensor(&t)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::layout::INIT_STD;
    use super::*;

    #[test]
    fn normal_draws_have_the_asked_spread_and_depend_on_name_and_seed() {
        let v = normal("w", 1, 20_000, 0.02);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let sd =
            (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(mean.abs() < 1e-3 && (sd - 0.02).abs() < 1e-3, "{mean} {sd}");
        assert_eq!(normal("w", 1, 8, 1.0), normal("w", 1, 8, 1.0));
        assert_ne!(normal("w", 1, 8, 1.0), normal("w", 2, 8, 1.0));
        assert_ne!(normal("w", 1, 8, 1.0), normal("v", 1, 8, 1.0));
    }

    /// Drawn side by side, every parameter still has the values of its own generator.
    #[test]
    fn parameters_drawn_in_parallel_are_those_of_their_own_generators() {
        let p = crate::profile::load_model("glam-tiny").unwrap();
        let vars = init_vars(&p, &Device::Cpu, DType::F32, 7).unwrap();
        assert!(vars.keys().any(|k| k.contains(".moe.experts.7.")));
        let name = "blocks.1.moe.experts.5.up.w";
        let got = vars[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, normal(name, 7, p.d_model * p.d_ff, INIT_STD));
        let gain = vars["blocks.2.norm1.gain"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gain, vec![1.0; p.d_model]);
    }
}
