//! Bytes per token that a roofline needs: weights read, activations, KV cache read and written.
//!
//! All figures are per token of the phase's denominator (tokens trained, prompt tokens, generated
//! tokens). Weights are read once per pass and shared by the tokens of the step; a MoE layer reads
//! only the experts its tokens were routed to, in expectation under uniform routing.

use serde::{Deserialize, Serialize};

use super::params::{attn_matrices, expert_params, params};
use crate::profile::ModelProfile;
use crate::vocab::Phase;

/// Bytes moved per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ByteCount {
    /// Weight bytes read in the step divided by the step's tokens.
    pub weights_read: f64,
    /// Inputs and outputs of every matmul the token goes through (read once, written once); the
    /// attention score matrices are taken to stay on chip (a fused attention kernel).
    pub activations: f64,
    /// KV cache read (decode: the cached keys and values of every layer).
    pub kv_read: f64,
    /// KV cache written (prefill and decode: this token's keys and values of every layer).
    pub kv_written: f64,
}

impl ByteCount {
    pub fn total(&self) -> f64 {
        self.weights_read + self.activations + self.kv_read + self.kv_written
    }
}

/// Expected number of distinct experts that `tokens` tokens, each routed to `top_k` of `experts`
/// uniformly at random, touch: E x (1 - (1 - k/E)^tokens).
pub fn expected_experts_touched(experts: usize, top_k: usize, tokens: f64) -> f64 {
    let e = experts as f64;
    e * (1.0 - (1.0 - top_k as f64 / e).powf(tokens))
}

/// Weights (in parameters) one step of `tokens` tokens reads: everything outside the routed experts
/// (shared experts included), and in each MoE layer the distinct experts its tokens were routed to
/// ([`expected_experts_touched`]).
pub fn weights_read_per_step(p: &ModelProfile, tokens: f64) -> f64 {
    let touched = expected_experts_touched(p.experts, p.top_k, tokens);
    params(p).non_expert_total() + p.moe_layers() as f64 * touched * expert_params(p)
}

/// KV-cache bytes one position holds over all layers: keys and values of `kv_heads` heads, or MLA's
/// latent and rope key ([`ModelProfile::kv_cache_elems_per_layer`]).
pub fn kv_cache_bytes_per_position(p: &ModelProfile, bytes_per_elem: f64) -> f64 {
    p.layers as f64 * p.kv_cache_elems_per_layer() as f64 * bytes_per_elem
}

/// Tokens in one step of `phase` at `batch` sequences of `ctx_len`: training and prefill run every
/// position of every sequence, decode one new token per sequence.
pub fn tokens_per_step(phase: Phase, batch: usize, ctx_len: usize) -> f64 {
    match phase {
        Phase::Train | Phase::Prefill => (batch * ctx_len.max(1)) as f64,
        Phase::Decode => batch as f64,
    }
}

/// Bytes per token of `phase` at `batch` sequences. `ctx_len` is the sequence length for training,
/// the prompt length for prefill and the number of cached tokens for decode. Training reads the
/// weights twice (forward and backward) and moves 3x the forward activations; gradient and optimizer
/// traffic is not counted.
pub fn bytes_per_token(
    p: &ModelProfile,
    phase: Phase,
    batch: usize,
    ctx_len: usize,
    bytes_per_param: f64,
    bytes_per_act: f64,
) -> ByteCount {
    let tokens = tokens_per_step(phase, batch.max(1), ctx_len);
    let passes = if phase == Phase::Train { 2.0 } else { 1.0 };
    let weights_read = passes * weights_read_per_step(p, tokens) * bytes_per_param / tokens;

    let d = p.d_model as f64;
    let d_ff = p.d_ff as f64;
    let d_ff_expert = p.d_ff_expert() as f64;
    // Each attention matrix reads a row of its input width and writes one of its output width.
    let attn: f64 = attn_matrices(p)
        .iter()
        .map(|&(r, c)| r as f64 + c as f64)
        .sum();
    // Matmul inputs + outputs per token, in elements.
    let mut elems = 0.0;
    for i in 0..p.layers {
        elems += attn;
        // Each FFN matrix reads a d_model or d_ff row and writes the other.
        let matrices = p.ffn_of_layer(i).matrices() as f64;
        if p.is_moe_layer(i) {
            let expert = matrices * (d + d_ff_expert);
            let used = (p.top_k + p.shared_experts) as f64;
            elems += (d + p.experts as f64) + used * expert;
        } else {
            elems += matrices * (d + d_ff);
        }
    }
    let logits_share = match phase {
        Phase::Prefill => 1.0 / ctx_len.max(1) as f64,
        _ => 1.0,
    };
    elems += logits_share * (d + p.vocab_size as f64);
    let act_multiple = if phase == Phase::Train { 3.0 } else { 1.0 };
    let activations = act_multiple * elems * bytes_per_act;

    let kv_per_position = kv_cache_bytes_per_position(p, bytes_per_act);
    let (kv_read, kv_written) = match phase {
        Phase::Train => (0.0, 0.0),
        Phase::Prefill => (0.0, kv_per_position),
        Phase::Decode => (ctx_len as f64 * kv_per_position, kv_per_position),
    };
    ByteCount {
        weights_read,
        activations,
        kv_read,
        kv_written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;

    #[test]
    fn one_token_touches_top_k_experts_and_a_big_batch_all() {
        assert!((expected_experts_touched(64, 2, 1.0) - 2.0).abs() < 1e-12);
        assert!((expected_experts_touched(64, 2, 100_000.0) - 64.0).abs() < 1e-9);
        assert!(expected_experts_touched(64, 2, 8.0) < 16.0);
    }

    #[test]
    fn decode_weights_per_token_fall_with_batch() {
        let p = load_model("dense-tiny").unwrap();
        let one = bytes_per_token(&p, Phase::Decode, 1, 100, 2.0, 2.0);
        let eight = bytes_per_token(&p, Phase::Decode, 8, 100, 2.0, 2.0);
        assert!((one.weights_read / eight.weights_read - 8.0).abs() < 1e-9);
        assert_eq!(one.kv_read, 2.0 * 4.0 * 100.0 * 256.0 * 2.0);
        assert_eq!(one.kv_read, eight.kv_read);
    }

    #[test]
    fn moe_decode_at_batch_one_reads_top_k_of_the_experts() {
        let p = load_model("glam-tiny").unwrap();
        let b = bytes_per_token(&p, Phase::Decode, 1, 10, 1.0, 1.0);
        let c = params(&p);
        let want = c.non_expert_total() + c.get(crate::accounting::Component::Experts).active;
        assert!((b.weights_read - want).abs() < 1e-6 * want);
    }
}
