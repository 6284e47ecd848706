//! Executed FLOPs of one step, from the shapes the model really runs and the tokens each expert
//! really received, so an uneven load, dropped tokens and empty experts all show.
//!
//! Written independently of the per-token formulas in [`super::analytic`] (matmul by matmul, with
//! the step's token counts) so that tests can check one against the other.

use super::flops::elementwise::{
    ffn_activation_flops_per_element as act_flops, NORM_FLOPS_PER_ELEMENT as NORM,
    RESIDUAL_FLOPS_PER_ELEMENT as RESIDUAL, SOFTMAX_FLOPS_PER_ELEMENT as SOFTMAX,
};
use super::{AccountingError, Component, FlopCount};
use crate::profile::{FfnKind, ModelProfile};

/// The matmuls and elementwise work of one FFN of `kind` on `rows` tokens, on component `c`:
/// (rows, d) @ up (d, d_ff), the same with the gate when gated, then (rows, d_ff) @ down.
fn ffn(f: &mut FlopCount, c: Component, kind: FfnKind, rows: usize, d: usize, d_ff: usize) {
    for _ in 1..kind.matrices() {
        f.add_matmul(c, rows, d, d_ff);
    }
    f.add_matmul(c, rows, d_ff, d);
    f.add(Component::NormAct, act_flops(kind) * (rows * d_ff) as f64);
}

/// The shape of one pass: `batch` sequences, each running `new` tokens over `cached + new` keys,
/// with logits for `logits_rows` positions of each sequence.
struct PassShape {
    batch: usize,
    new: usize,
    cached: usize,
    logits_rows: usize,
    attention: AttentionRun,
}

/// Which query-key pairs the attention kernel computed scores for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionRun {
    /// Every pair of the (new, cached + new) rectangle, masked or not: the composed kernel, and
    /// any pass with a cache.
    Square,
    /// A pass without a cache in blocks of this many query rows, each against the keys up to its
    /// own last row: the fused CPU kernel (`model::CAUSAL_BLOCK`).
    CausalBlocks(usize),
}

/// Query-key pairs of one (sequence, head) that `run` computed for `new` queries over `keys`.
fn score_pairs(run: AttentionRun, new: usize, keys: usize) -> usize {
    match run {
        AttentionRun::CausalBlocks(block) if block > 0 && keys == new => {
            // Block i holds queries i*block .. and sees keys up to its last query.
            let mut pairs = 0;
            let mut first = 0;
            while first < new {
                let rows = block.min(new - first);
                pairs += rows * (first + rows);
                first += rows;
            }
            pairs
        }
        _ => new * keys,
    }
}

fn executed(p: &ModelProfile, s: PassShape, tokens_per_expert: &[Vec<u64>]) -> FlopCount {
    let (d, d_ff, heads, d_head) = (p.d_model, p.d_ff, p.heads, p.d_head);
    let attn = p.attn_dim();
    let rows = s.batch * s.new; // tokens in the step
    let keys = s.cached + s.new;
    let n = rows as f64;
    let mut f = FlopCount::default();
    f.add(Component::NormAct, RESIDUAL * n * d as f64); // token + position embedding
    let mut moe_index = 0;
    for i in 0..p.layers {
        f.add(Component::NormAct, NORM * n * d as f64);
        // xs (rows, d) @ W_q, W_k, W_v (d, attn) -> (rows, attn); (rows, attn) @ W_o (attn, d).
        for _ in 0..3 {
            f.add_matmul(Component::AttnProj, rows, d, attn);
        }
        f.add_matmul(Component::AttnProj, rows, attn, d);
        // Per (sequence, head): q (new, d_head) @ k^T (d_head, keys); probs (new, keys) @ v (keys,
        // d_head), over the pairs the kernel computed; the softmax covers the whole rectangle.
        let q_rows = s.batch * heads * s.new;
        let pairs = s.batch * heads * score_pairs(s.attention, s.new, keys);
        f.add(Component::AttnScores, 2.0 * 2.0 * (pairs * d_head) as f64);
        f.add(Component::NormAct, SOFTMAX * q_rows as f64 * keys as f64);
        f.add(Component::NormAct, RESIDUAL * n * d as f64);
        f.add(Component::NormAct, NORM * n * d as f64);
        if p.is_moe_layer(i) {
            f.add_matmul(Component::Router, rows, d, p.experts);
            f.add(Component::NormAct, SOFTMAX * n * p.experts as f64);
            let loads = tokens_per_expert
                .get(moe_index)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for &t in loads {
                let t = t as usize;
                ffn(&mut f, Component::Experts, p.expert_ffn, t, d, d_ff);
                // Gate scale and sum into the output on (t, d).
                f.add(Component::NormAct, 2.0 * t as f64 * d as f64);
            }
            moe_index += 1;
        } else {
            ffn(&mut f, Component::DenseFfn, p.ffn, rows, d, d_ff);
        }
        f.add(Component::NormAct, RESIDUAL * n * d as f64);
    }
    let logit_rows = s.batch * s.logits_rows;
    // The final norm runs on the rows that get logits only.
    f.add(Component::NormAct, NORM * logit_rows as f64 * d as f64);
    f.add_matmul(Component::Logits, logit_rows, d, p.vocab_size);
    f.add(
        Component::NormAct,
        SOFTMAX * logit_rows as f64 * p.vocab_size as f64,
    );
    f
}

/// FLOPs of one forward pass over `batch` x `seq` tokens (attention over the full square, logits at
/// every position) when MoE layer j's expert e received `tokens_per_expert[j][e]` tokens. One vector
/// per MoE layer in layer order; a missing vector means no expert ran in that layer (use
/// [`check_expert_tokens`] to refuse a malformed one). Dense models pass `&[]`.
pub fn executed_forward_flops(
    p: &ModelProfile,
    batch: usize,
    seq: usize,
    tokens_per_expert: &[Vec<u64>],
) -> FlopCount {
    executed_forward_flops_with(p, batch, seq, tokens_per_expert, AttentionRun::Square)
}

/// [`executed_forward_flops`] with the attention kernel's coverage chosen.
pub fn executed_forward_flops_with(
    p: &ModelProfile,
    batch: usize,
    seq: usize,
    tokens_per_expert: &[Vec<u64>],
    attention: AttentionRun,
) -> FlopCount {
    let shape = PassShape {
        batch,
        new: seq,
        cached: 0,
        logits_rows: seq,
        attention,
    };
    executed(p, shape, tokens_per_expert)
}

/// FLOPs of one prefill of `batch` prompts of `prompt_len` tokens: the same pass as
/// [`executed_forward_flops`] but logits for the last prompt position only.
pub fn executed_prefill_flops(
    p: &ModelProfile,
    batch: usize,
    prompt_len: usize,
    tokens_per_expert: &[Vec<u64>],
) -> FlopCount {
    let shape = PassShape {
        batch,
        new: prompt_len,
        cached: 0,
        logits_rows: 1.min(prompt_len),
        attention: AttentionRun::Square,
    };
    executed(p, shape, tokens_per_expert)
}

/// FLOPs of one decode step: `batch` new tokens, each attending to `position` cached tokens plus
/// itself, logits for each.
pub fn executed_decode_flops(
    p: &ModelProfile,
    batch: usize,
    position: usize,
    tokens_per_expert: &[Vec<u64>],
) -> FlopCount {
    let shape = PassShape {
        batch,
        new: 1,
        cached: position,
        logits_rows: 1,
        attention: AttentionRun::Square,
    };
    executed(p, shape, tokens_per_expert)
}

/// Check that `tokens_per_expert` has one vector of `experts` counts per MoE layer and that no
/// layer routes more than `tokens x top_k` tokens.
pub fn check_expert_tokens(
    p: &ModelProfile,
    tokens: usize,
    tokens_per_expert: &[Vec<u64>],
) -> Result<(), AccountingError> {
    if tokens_per_expert.len() != p.moe_layers() {
        return Err(AccountingError::ExpertTokens(format!(
            "{} has {} MoE layers but {} expert-load vectors were given",
            p.name,
            p.moe_layers(),
            tokens_per_expert.len()
        )));
    }
    let most = (tokens * p.top_k) as u64;
    for (j, loads) in tokens_per_expert.iter().enumerate() {
        if loads.len() != p.experts {
            return Err(AccountingError::ExpertTokens(format!(
                "MoE layer {j} of {} has {} experts but {} counts were given",
                p.name,
                p.experts,
                loads.len()
            )));
        }
        let sum: u64 = loads.iter().sum();
        if sum > most {
            return Err(AccountingError::ExpertTokens(format!(
                "MoE layer {j} of {} routed {sum} tokens, more than {tokens} tokens x top_k {}",
                p.name, p.top_k
            )));
        }
    }
    Ok(())
}

/// Tokens one expert may take in a step of `tokens` tokens: ceil(factor x tokens x top_k / experts)
/// (GShard, Lepikhin et al. 2020, arXiv 2006.16668), or `None` without a factor (no limit). The one
/// definition: the model's dispatch and the executed count both use it.
pub fn capacity(factor: Option<f64>, tokens: usize, top_k: usize, experts: usize) -> Option<u64> {
    factor.map(|c| (c * tokens as f64 * top_k as f64 / experts as f64).ceil() as u64)
}

/// [`capacity`] at the profile's `capacity_factor`, `top_k` and `experts`.
pub fn expert_capacity(p: &ModelProfile, tokens: usize) -> Option<u64> {
    capacity(p.capacity_factor, tokens, p.top_k, p.experts)
}

/// The loads after capacity: each expert keeps at most `capacity` tokens, the rest are dropped
/// (they pass through the residual connection without expert compute).
pub fn cap_expert_tokens(tokens_per_expert: &[Vec<u64>], capacity: u64) -> Vec<Vec<u64>> {
    tokens_per_expert
        .iter()
        .map(|layer| layer.iter().map(|&t| t.min(capacity)).collect())
        .collect()
}

/// An even routing of `tokens` tokens, top_k each, over every MoE layer (remainder on the first
/// experts): the no-dropping, perfectly balanced load.
pub fn even_expert_tokens(p: &ModelProfile, tokens: usize) -> Vec<Vec<u64>> {
    let assignments = (tokens * p.top_k) as u64;
    let e = p.experts as u64;
    let layer: Vec<u64> = (0..e)
        .map(|i| assignments / e + u64::from(i < assignments % e))
        .collect();
    vec![layer; p.moe_layers()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_blocks_count_the_lower_triangle_plus_the_diagonal_blocks_upper_halves() {
        // 128 positions in blocks of 32: 32 x (32 + 64 + 96 + 128) pairs, 5/8 of the square.
        assert_eq!(
            score_pairs(AttentionRun::CausalBlocks(32), 128, 128),
            10_240
        );
        // One block per query: exactly the causal triangle.
        assert_eq!(score_pairs(AttentionRun::CausalBlocks(1), 10, 10), 55);
        // A block as long as the sequence, or a cache: the whole rectangle.
        assert_eq!(score_pairs(AttentionRun::CausalBlocks(64), 40, 40), 1_600);
        assert_eq!(score_pairs(AttentionRun::CausalBlocks(32), 1, 70), 70);
        let p = crate::profile::load_model("dense-tiny").unwrap();
        let square = executed_forward_flops(&p, 2, 128, &[]);
        let blocks = executed_forward_flops_with(&p, 2, 128, &[], AttentionRun::CausalBlocks(32));
        let (a, b) = (
            square.get(Component::AttnScores),
            blocks.get(Component::AttnScores),
        );
        assert!((b / a - 0.625).abs() < 1e-12);
        for c in Component::ALL
            .into_iter()
            .filter(|&c| c != Component::AttnScores)
        {
            assert_eq!(square.get(c), blocks.get(c), "{c:?}");
        }
    }
    use crate::accounting::{
        decode_flops_per_token, forward_flops_per_token, prefill_flops_per_token,
    };
    use crate::profile::load_model;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// `p` with its dense FFNs and experts of the given kinds.
    fn with_ffn(p: ModelProfile, ffn: FfnKind, expert_ffn: FfnKind) -> ModelProfile {
        ModelProfile {
            ffn,
            expert_ffn,
            ..p
        }
    }

    #[test]
    fn even_load_equals_the_analytic_forward() {
        for (name, kind) in [
            ("glam-tiny", FfnKind::Mlp),
            ("dense-tiny", FfnKind::Mlp),
            ("glam-tiny", FfnKind::Geglu),
            ("glam-tiny", FfnKind::Swiglu),
            ("dense-tiny", FfnKind::Swiglu),
        ] {
            let p = with_ffn(load_model(name).unwrap(), kind, kind);
            let (b, s) = (3, p.seq_len);
            let ex = executed_forward_flops(&p, b, s, &even_expert_tokens(&p, b * s));
            let an = forward_flops_per_token(&p, s).scaled((b * s) as f64);
            for c in Component::ALL {
                assert!(close(ex.get(c), an.get(c)), "{name} {c:?}");
            }
        }
    }

    #[test]
    fn a_gated_unit_adds_one_matrix_of_flops_per_ffn() {
        // glam-tiny: layers 0 and 2 dense, 1 and 3 MoE (top-2); d 256, d_ff 1024, 64 tokens.
        let plain = load_model("glam-tiny").unwrap();
        let gated = with_ffn(plain.clone(), FfnKind::Geglu, FfnKind::Swiglu);
        let even = even_expert_tokens(&plain, 64);
        let (a, b) = (
            executed_forward_flops(&plain, 1, 64, &even),
            executed_forward_flops(&gated, 1, 64, &even),
        );
        let matrix = 2.0 * 64.0 * 256.0 * 1024.0; // one (64, 256) @ (256, 1024)
        assert_eq!(a.get(Component::DenseFfn), 2.0 * 2.0 * matrix);
        assert_eq!(b.get(Component::DenseFfn), 2.0 * 3.0 * matrix);
        // Two MoE layers, each 64 tokens x top-2 rows through three matrices instead of two.
        assert_eq!(b.get(Component::Experts), 1.5 * a.get(Component::Experts));
        // Activations: GELU 8 -> GELU 8 + gate 1 on the dense layers' 2 x 64 x 1024 elements;
        // SiLU 4 + gate 1 on the experts' 2 x 128 x 1024.
        let dense_elems = 2.0 * 64.0 * 1024.0;
        let expert_elems = 2.0 * 128.0 * 1024.0;
        let want = dense_elems * (9.0 - 8.0) + expert_elems * (5.0 - 8.0);
        let got = b.get(Component::NormAct) - a.get(Component::NormAct);
        assert_eq!(got, want);
    }

    #[test]
    fn prefill_and_decode_match_the_analytic_counts() {
        let p = load_model("glam-tiny").unwrap();
        let pre = executed_prefill_flops(&p, 2, 50, &even_expert_tokens(&p, 100));
        assert!(close(
            pre.total(),
            100.0 * prefill_flops_per_token(&p, 50).total()
        ));
        let dec = executed_decode_flops(&p, 4, 70, &even_expert_tokens(&p, 4));
        assert!(close(
            dec.total(),
            4.0 * decode_flops_per_token(&p, 70).total()
        ));
    }

    #[test]
    fn dropped_tokens_lower_expert_flops_only_by_their_share() {
        let p = load_model("glam-tiny").unwrap();
        let even = even_expert_tokens(&p, 64);
        let mut dropped = even.clone();
        dropped[0][0] = 0; // expert 0 of the first MoE layer drops its 16 tokens
        let a = executed_forward_flops(&p, 1, 64, &even);
        let b = executed_forward_flops(&p, 1, 64, &dropped);
        let per_token_expert = 4.0 * 256.0 * 1024.0;
        assert_eq!(
            a.get(Component::Experts) - b.get(Component::Experts),
            16.0 * per_token_expert
        );
        assert_eq!(a.get(Component::AttnProj), b.get(Component::AttnProj));
    }

    #[test]
    fn a_capacity_factor_drops_the_overflow_of_busy_experts() {
        let p = load_model("glam-tiny").unwrap();
        let p = ModelProfile {
            capacity_factor: Some(1.0),
            ..p
        };
        // 64 tokens x top-2 over 8 experts: capacity 16 each.
        assert_eq!(expert_capacity(&p, 64), Some(16));
        let skewed = vec![vec![40, 24, 16, 16, 8, 8, 8, 8]; 2];
        let kept = cap_expert_tokens(&skewed, 16);
        assert_eq!(kept[0], vec![16, 16, 16, 16, 8, 8, 8, 8]);
        let before = executed_forward_flops(&p, 1, 64, &skewed);
        let after = executed_forward_flops(&p, 1, 64, &kept);
        let dropped_per_layer = 24.0 + 8.0;
        let expert_token = 4.0 * 256.0 * 1024.0;
        assert_eq!(
            before.get(Component::Experts) - after.get(Component::Experts),
            2.0 * dropped_per_layer * expert_token
        );
        assert_eq!(expert_capacity(&load_model("glam-tiny").unwrap(), 64), None);
    }

    #[test]
    fn malformed_expert_loads_are_refused() {
        let p = load_model("glam-tiny").unwrap();
        assert!(check_expert_tokens(&p, 64, &even_expert_tokens(&p, 64)).is_ok());
        assert!(check_expert_tokens(&p, 64, &[]).is_err());
        assert!(check_expert_tokens(&p, 10, &even_expert_tokens(&p, 64)).is_err());
        assert!(check_expert_tokens(&p, 64, &[vec![1; 3], vec![1; 8]]).is_err());
    }
}
