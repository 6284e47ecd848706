//! Parameter counts by component: the total, and what one token touches.
//!
//! Structure counted (the model sparsewatt trains; published profiles are counted the same way, see
//! docs/accounting.md): token embedding (vocab x d_model) and, with learned positions, a position
//! embedding (seq_len x d_model; rotary positions have none); per block two LayerNorms (weight +
//! bias), Q, K, V, O projections without biases (K and V of `kv_heads` heads; or multi-head latent
//! attention's low-rank projections, [`attn_params`]), and either a dense FFN (d_model -> d_ff ->
//! d_model, no biases; two matrices for the plain GELU MLP, three for a gated unit, `ffn`) or a MoE
//! FFN (router d_model x experts without bias, `experts` routed FFNs of the kind `expert_ffn` and
//! width `d_ff_expert`, and `shared_experts` more of the same shape that every token uses, counted
//! under [`Component::DenseFfn`]); a final LayerNorm; the output projection shares the token
//! embedding when `tied_embeddings`, otherwise it is its own matrix.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::Component;
use crate::profile::{FfnKind, ModelProfile, Positions};

/// Parameters of one component: all of them, and those one token touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentParams {
    pub total: f64,
    pub active: f64,
}

/// Parameter counts of a model (floating point: full-size totals exceed what f32 holds exactly,
/// and every consumer divides them anyway).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamCount {
    /// Every parameter, embedding matrices counted once (a tied output projection is not counted
    /// again).
    pub total: f64,
    /// What one token touches: everything except the experts it is not routed to (top_k of E per
    /// MoE layer; the router counts in full). Embeddings and the output projection count in full,
    /// as GLaM's "activated parameters" do.
    pub active: f64,
    pub by_component: BTreeMap<Component, ComponentParams>,
}

impl ParamCount {
    fn add(&mut self, c: Component, total: f64, active: f64) {
        let e = self.by_component.entry(c).or_default();
        e.total += total;
        e.active += active;
        self.total += total;
        self.active += active;
    }

    /// Parameters of a component (zero when the model has none).
    pub fn get(&self, c: Component) -> ComponentParams {
        self.by_component.get(&c).copied().unwrap_or_default()
    }

    /// Total parameters outside the expert FFNs (the weights every step reads in full).
    pub fn non_expert_total(&self) -> f64 {
        self.total - self.get(Component::Experts).total
    }
}

/// Parameters of one dense FFN of `kind`: two matrices (d_model x d_ff up, d_ff x d_model down),
/// or three for a gated unit (plus the d_model x d_ff gate).
pub fn ffn_params(p: &ModelProfile, kind: FfnKind) -> f64 {
    kind.matrices() as f64 * p.d_model as f64 * p.d_ff as f64
}

/// Parameters of one expert (routed or shared): as [`ffn_params`] at `d_ff_expert`.
pub fn expert_params(p: &ModelProfile) -> f64 {
    p.expert_ffn.matrices() as f64 * p.d_model as f64 * p.d_ff_expert() as f64
}

/// The weight matrices of one layer's attention as (rows, columns), in the order a token goes
/// through them. Multi-head attention: Q (d x heads·d_head), K and V (d x kv_heads·d_head each),
/// O (heads·d_head x d). Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, section 2.1):
/// Q down (d x q_lora_rank) and up (q_lora_rank x heads·(nope + rope)), or one d x heads·(nope +
/// rope) without a query rank; KV down with the rope key (d x (kv_lora_rank + rope)); KV up
/// (kv_lora_rank x heads·(nope + v)); O (heads·v x d).
pub fn attn_matrices(p: &ModelProfile) -> Vec<(usize, usize)> {
    let (d, h) = (p.d_model, p.heads);
    match &p.mla {
        None => {
            let kv = p.kv_heads() * p.d_head;
            vec![(d, p.attn_dim()), (d, kv), (d, kv), (p.attn_dim(), d)]
        }
        Some(m) => {
            let q_out = h * m.qk_head_dim();
            let mut out = match m.q_lora_rank {
                Some(r) => vec![(d, r), (r, q_out)],
                None => vec![(d, q_out)],
            };
            out.push((d, m.kv_lora_rank + m.qk_rope_head_dim));
            out.push((m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim)));
            out.push((h * m.v_head_dim, d));
            out
        }
    }
}

/// Parameters of one layer's attention projections ([`attn_matrices`]).
pub fn attn_params(p: &ModelProfile) -> f64 {
    attn_matrices(p)
        .iter()
        .map(|&(r, c)| r as f64 * c as f64)
        .sum()
}

/// Widths normalised inside one layer's attention beyond its pre-norm: MLA's RMSNorms on the query
/// and key-value latents (weight only).
pub fn attn_norm_widths(p: &ModelProfile) -> f64 {
    p.mla.as_ref().map_or(0.0, |m| {
        (m.q_lora_rank.unwrap_or(0) + m.kv_lora_rank) as f64
    })
}

/// Count the parameters of a profile by component.
pub fn params(p: &ModelProfile) -> ParamCount {
    let d = p.d_model as f64;
    let e = p.experts as f64;
    let k = p.top_k as f64;
    let mut out = ParamCount::default();
    let positions = match p.positions {
        Positions::Learned => p.seq_len as f64,
        Positions::Rotary => 0.0,
    };
    let embed = (p.vocab_size as f64 + positions) * d;
    out.add(Component::Embedding, embed, embed);
    let attn = attn_params(p);
    let attn_norms = attn_norm_widths(p);
    for i in 0..p.layers {
        out.add(Component::AttnProj, attn, attn);
        out.add(Component::NormAct, attn_norms, attn_norms);
        if p.is_moe_layer(i) {
            out.add(Component::Router, d * e, d * e);
            let one = expert_params(p);
            out.add(Component::Experts, e * one, k * one);
            let shared = p.shared_experts as f64 * one;
            out.add(Component::DenseFfn, shared, shared);
        } else {
            let one = ffn_params(p, p.ffn);
            out.add(Component::DenseFfn, one, one);
        }
    }
    // Two LayerNorms per block and the final one, each weight + bias.
    let norms = (2 * p.layers + 1) as f64 * 2.0 * d;
    out.add(Component::NormAct, norms, norms);
    if !p.tied_embeddings {
        let head = p.vocab_size as f64 * d;
        out.add(Component::Logits, head, head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;

    #[test]
    fn gated_units_add_a_third_matrix_to_dense_layers_and_experts() {
        // glam-tiny: 2 dense layers and 2 MoE layers of 8 experts (top-2), d 256, d_ff 1024.
        let plain = load_model("glam-tiny").unwrap();
        let m = 256.0 * 1024.0; // one d x d_ff matrix
        let gated = ModelProfile {
            ffn: FfnKind::Geglu,
            ..plain.clone()
        };
        let (a, b) = (params(&plain), params(&gated));
        assert_eq!(
            b.get(Component::DenseFfn).total - a.get(Component::DenseFfn).total,
            2.0 * m
        );
        assert_eq!(b.get(Component::Experts), a.get(Component::Experts));
        let gated = ModelProfile {
            expert_ffn: FfnKind::Swiglu,
            ..plain
        };
        let c = params(&gated);
        assert_eq!(c.get(Component::Experts).total, 2.0 * 8.0 * 3.0 * m);
        assert_eq!(c.get(Component::Experts).active, 2.0 * 2.0 * 3.0 * m);
        assert_eq!(c.total - a.total, 2.0 * 8.0 * m);
    }
}
