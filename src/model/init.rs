//! Deterministic parameter initialisation: each parameter draws from its own generator, seeded
//! by the model seed and the parameter's name, so a parameter's values do not depend on which
//! other parameters exist. That is what makes `experts = 1` give exactly the dense model.

use candle_core::{DType, Device, Result, Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;

use crate::data::rng::SplitMix64;
use crate::profile::{FfnKind, ModelProfile};

/// Standard deviation of weights (GPT-2); residual output projections are scaled down by
/// 1/sqrt(2 x layers) so the residual stream's variance does not grow with depth.
const INIT_STD: f64 = 0.02;

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

/// Every parameter of `p`, by name, initialised from `seed`.
pub fn init_vars(
    p: &ModelProfile,
    device: &Device,
    dtype: DType,
    seed: u64,
) -> Result<BTreeMap<String, Var>> {
    let d = p.d_model;
    let resid_std = INIT_STD / (2.0 * p.layers as f64).sqrt();
    let mut specs: Vec<(String, Vec<usize>, Fill)> = vec![
        (
            "tok_emb".into(),
            vec![p.vocab_size, d],
            Fill::Normal(INIT_STD),
        ),
        (
            "pos_emb".into(),
            vec![p.seq_len, d],
            Fill::Normal(INIT_STD / 2.0),
        ),
        ("final_norm.gain".into(), vec![d], Fill::Ones),
        ("final_norm.bias".into(), vec![d], Fill::Zeros),
    ];
    if !p.tied_embeddings {
        specs.push(("head".into(), vec![d, p.vocab_size], Fill::Normal(INIT_STD)));
    }
    // A gated unit's gate is drawn as its up projection is; the plain MLP has none, so its
    // parameters (and their values) are those of before gated units existed.
    let mlp = |specs: &mut Vec<(String, Vec<usize>, Fill)>, name: &str, kind: FfnKind| {
        specs.push((
            format!("{name}.up.w"),
            vec![d, p.d_ff],
            Fill::Normal(INIT_STD),
        ));
        if kind.is_gated() {
            specs.push((
                format!("{name}.gate.w"),
                vec![d, p.d_ff],
                Fill::Normal(INIT_STD),
            ));
        }
        specs.push((
            format!("{name}.down.w"),
            vec![p.d_ff, d],
            Fill::Normal(resid_std),
        ));
    };
    for i in 0..p.layers {
        let b = format!("blocks.{i}");
        for n in ["norm1", "norm2"] {
            specs.push((format!("{b}.{n}.gain"), vec![d], Fill::Ones));
            specs.push((format!("{b}.{n}.bias"), vec![d], Fill::Zeros));
        }
        specs.push((
            format!("{b}.attn.qkv.w"),
            vec![d, 3 * p.attn_dim()],
            Fill::Normal(INIT_STD),
        ));
        specs.push((
            format!("{b}.attn.out.w"),
            vec![p.attn_dim(), d],
            Fill::Normal(resid_std),
        ));
        if p.is_moe_layer(i) {
            specs.push((
                format!("{b}.moe.router.w"),
                vec![d, p.experts],
                Fill::Normal(INIT_STD),
            ));
            for e in 0..p.experts {
                mlp(&mut specs, &format!("{b}.moe.experts.{e}"), p.expert_ffn);
            }
        } else {
            mlp(&mut specs, &format!("{b}.ffn"), p.ffn);
        }
    }
    // Each parameter has its own generator, so they are drawn side by side with the same values
    // as one after another: 64 experts' 67 M normals took seconds on one core.
    specs
        .into_par_iter()
        .map(|(name, shape, fill)| {
            let count: usize = shape.iter().product();
            let values = match fill {
                Fill::Normal(std) => normal(&name, seed, count, std),
                Fill::Ones => vec![1.0; count],
                Fill::Zeros => vec![0.0; count],
            };
            let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
            Ok((name, Var::from_tensor(&t)?))
        })
        .collect()
}

enum Fill {
    Normal(f64),
    Ones,
    Zeros,
}

#[cfg(test)]
mod tests {
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
