//! Analytic FLOPs per token for any profile: forward, training, prefill and decode.
//!
//! Conventions (docs/accounting.md): a multiply-add is 2 FLOPs; every matmul with its real shape;
//! attention scores (Q @ K^T) and the weighted sum (P @ V) counted over every key the executed
//! matmul touches ([`AttnCounting::Full`]) unless [`AttnCounting::Causal`] is asked for; embedding
//! lookups cost nothing; norms, GELU, softmaxes, residual adds and the gate-weighted combine of
//! expert outputs go on [`Component::NormAct`] with the [`elementwise`] constants.

use serde::{Deserialize, Serialize};

use super::flops::elementwise::{
    ffn_activation_flops_per_element as act_flops, NORM_FLOPS_PER_ELEMENT as NORM,
    RESIDUAL_FLOPS_PER_ELEMENT as RESIDUAL, ROPE_FLOPS_PER_ELEMENT as ROPE,
    SOFTMAX_FLOPS_PER_ELEMENT as SOFTMAX,
};
use super::params::{attn_norm_widths, attn_params};
use super::{Component, FlopCount};
use crate::profile::{ModelProfile, Positions};

/// Backward of a matmul is two matmuls of the forward's size (gradient of the input and of the
/// weight), so training costs 3 x forward. Applied to the norm/activation line too, as a round
/// figure.
pub const TRAIN_FORWARD_MULTIPLE: f64 = 3.0;

/// How attention over a causal mask is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnCounting {
    /// Every key of the square (ctx x ctx) matmul, masked or not: what a dense kernel executes.
    Full,
    /// Only the unmasked keys: position i sees i + 1 keys, (ctx + 1) / 2 on average, about half.
    Causal,
}

/// FLOPs of one token passing through the model, with `keys` keys in each attention (a mean over
/// tokens may be fractional) and `logits_share` of a logits row (1 when every position gets its
/// logits, 1/prompt_len when only the last prompt position does).
fn token_flops(p: &ModelProfile, keys: f64, logits_share: f64) -> FlopCount {
    let d = p.d_model as f64;
    let d_ff = p.d_ff as f64;
    let d_ff_expert = p.d_ff_expert() as f64;
    let heads = p.heads as f64;
    let e = p.experts as f64;
    let k = p.top_k as f64;
    let shared = p.shared_experts as f64;
    let vocab = p.vocab_size as f64;
    // Per head, the query-key width and the value width.
    let (qk_dim, v_dim) = match &p.mla {
        Some(m) => (m.qk_head_dim() as f64, m.v_head_dim as f64),
        None => (p.d_head as f64, p.d_head as f64),
    };
    let attn = attn_params(p);
    let mut f = FlopCount::default();
    // Token + position embedding add (rotary positions add nothing here).
    if p.positions == Positions::Learned {
        f.add(Component::NormAct, RESIDUAL * d);
    }
    for i in 0..p.layers {
        // Each projection matrix is a 1 x rows by rows x columns matmul: 2 FLOPs a parameter.
        f.add(Component::AttnProj, 2.0 * attn);
        // Per head: q (1 x qk) @ K^T (qk x keys), then p (1 x keys) @ V (keys x v).
        f.add(Component::AttnScores, 2.0 * keys * heads * (qk_dim + v_dim));
        f.add(Component::NormAct, SOFTMAX * heads * keys);
        f.add(
            Component::NormAct,
            rope_flops(p) + NORM * attn_norm_widths(p),
        );
        // Two pre-norms, two residual adds.
        f.add(Component::NormAct, 2.0 * NORM * d + 2.0 * RESIDUAL * d);
        // One FFN: each of its d x d_ff matrices (2, or 3 when gated) is a 1 x d by d x d_ff
        // (or 1 x d_ff by d_ff x d) matmul.
        let kind = p.ffn_of_layer(i);
        let ffn_matmuls = |width: f64| kind.matrices() as f64 * 2.0 * d * width;
        if p.is_moe_layer(i) {
            f.add(Component::Router, 2.0 * d * e);
            f.add(Component::NormAct, SOFTMAX * e);
            // top_k experts, then scale each output by its gate and sum (2 FLOPs an element);
            // the shared experts' outputs are added unscaled.
            f.add(Component::Experts, k * ffn_matmuls(d_ff_expert));
            f.add(
                Component::NormAct,
                k * (act_flops(kind) * d_ff_expert + 2.0 * d),
            );
            f.add(Component::DenseFfn, shared * ffn_matmuls(d_ff_expert));
            f.add(
                Component::NormAct,
                shared * (act_flops(kind) * d_ff_expert + RESIDUAL * d),
            );
        } else {
            f.add(Component::DenseFfn, ffn_matmuls(d_ff));
            f.add(Component::NormAct, act_flops(kind) * d_ff);
        }
    }
    // Final norm, output projection (d -> vocab) and its softmax, for the rows that get logits.
    f.add(Component::NormAct, logits_share * NORM * d);
    f.add(Component::Logits, logits_share * 2.0 * d * vocab);
    f.add(Component::NormAct, logits_share * SOFTMAX * vocab);
    f
}

/// Rotary positions' elementwise work in one layer: every rotated query and key element is
/// multiplied by a cosine and a sine and the two summed. Multi-head attention rotates all of
/// queries and keys; MLA only the decoupled rope part (one shared rope key).
fn rope_flops(p: &ModelProfile) -> f64 {
    if p.positions != Positions::Rotary {
        return 0.0;
    }
    let rotated = match &p.mla {
        Some(m) => (p.heads + 1) * m.qk_rope_head_dim,
        None => (p.heads + p.kv_heads()) * p.d_head,
    };
    ROPE * rotated as f64
}

/// Forward FLOPs per token of a full-sequence (training-style) pass over `ctx_len` tokens, attention
/// counted in full (the square matmul the model executes), logits at every position.
pub fn forward_flops_per_token(p: &ModelProfile, ctx_len: usize) -> FlopCount {
    forward_flops_per_token_with(p, ctx_len, AttnCounting::Full)
}

/// [`forward_flops_per_token`] with the attention counting chosen.
pub fn forward_flops_per_token_with(
    p: &ModelProfile,
    ctx_len: usize,
    attn: AttnCounting,
) -> FlopCount {
    let keys = match attn {
        AttnCounting::Full => ctx_len as f64,
        AttnCounting::Causal => (ctx_len as f64 + 1.0) / 2.0,
    };
    token_flops(p, keys, 1.0)
}

/// Training FLOPs per token: forward + backward = 3 x forward at the profile's `seq_len`.
pub fn train_flops_per_token(p: &ModelProfile) -> FlopCount {
    forward_flops_per_token(p, p.seq_len).scaled(TRAIN_FORWARD_MULTIPLE)
}

/// Prefill FLOPs per prompt token: a full (unmasked-count) pass over `prompt_len` tokens that
/// computes logits only for the last prompt position, so the logits cost 1/prompt_len of a row.
pub fn prefill_flops_per_token(p: &ModelProfile, prompt_len: usize) -> FlopCount {
    let n = prompt_len.max(1) as f64;
    token_flops(p, n, 1.0 / n)
}

/// Decode FLOPs of one new token at `position`: it attends to `position` cached tokens plus itself.
pub fn decode_flops_per_token(p: &ModelProfile, position: usize) -> FlopCount {
    token_flops(p, position as f64 + 1.0, 1.0)
}

/// Mean decode FLOPs per generated token over `tokens` tokens generated from position `start`
/// (positions start .. start + tokens - 1). Decode cost is linear in the position, so this is the
/// cost at the mean position. `tokens == 0` gives the cost at `start`.
pub fn decode_flops_per_token_avg(p: &ModelProfile, start: usize, tokens: usize) -> FlopCount {
    let mean_position = start as f64 + (tokens.max(1) as f64 - 1.0) / 2.0;
    token_flops(p, mean_position + 1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;

    #[test]
    fn causal_attention_is_about_half_of_full() {
        let p = load_model("glam-tiny").unwrap();
        let full = forward_flops_per_token(&p, 128).get(Component::AttnScores);
        let causal =
            forward_flops_per_token_with(&p, 128, AttnCounting::Causal).get(Component::AttnScores);
        assert_eq!(causal / full, 129.0 / 256.0);
    }

    #[test]
    fn training_is_three_forwards() {
        let p = load_model("dense-tiny").unwrap();
        let f = forward_flops_per_token(&p, p.seq_len).total();
        assert!((train_flops_per_token(&p).total() - 3.0 * f).abs() < 1e-6 * f);
    }

    #[test]
    fn decode_attention_grows_linearly_with_position() {
        let p = load_model("glam-tiny").unwrap();
        let a = |pos| decode_flops_per_token(&p, pos).get(Component::AttnScores);
        assert_eq!(a(0), 4.0 * 256.0 * 4.0);
        assert_eq!(a(99) - a(49), a(50) - a(0));
        let avg = decode_flops_per_token_avg(&p, 0, 128).get(Component::AttnScores);
        let brute: f64 = (0..128).map(a).sum::<f64>() / 128.0;
        assert!((avg - brute).abs() < 1e-9 * brute);
    }

    #[test]
    fn prefill_pays_one_logits_row_per_prompt() {
        let p = load_model("glam-tiny").unwrap();
        let pre = prefill_flops_per_token(&p, 64).get(Component::Logits);
        let fwd = forward_flops_per_token(&p, 64).get(Component::Logits);
        assert_eq!(pre * 64.0, fwd);
        assert_eq!(
            prefill_flops_per_token(&p, 64).get(Component::Experts),
            forward_flops_per_token(&p, 64).get(Component::Experts)
        );
    }
}
