//! The GLaM mixture-of-experts layer: softmax router, top-k experts per token with the k gate
//! weights renormalised to sum to 1, truly sparse dispatch, an optional expert capacity, and the
//! GShard/Switch load-balancing loss.
//!
//! Dispatch happens on the host: the router's probabilities are copied out (tokens x experts
//! floats, small), the top-k are chosen there, and each expert runs on exactly the rows routed to
//! it; the outputs, scaled by their gates, are summed back per token (inside the fused experts
//! op on the CPU, with one `index_add` elsewhere). An expert without
//! tokens is not touched, in the forward or the backward pass. The gate weights stay on the
//! graph (`gather` from the probabilities), so the router is trained by the language-model loss
//! as well as by the balancing loss.

use candle_core::{DType, Result, Tensor, D};

use std::sync::Arc;

use super::fused::{self, ExpertWeights, WeightGrads};
use super::layers::{softmax, Linear, Mlp};
use crate::accounting::{Component, FlopCount};

#[derive(Clone, Debug)]
pub struct Moe {
    /// d_model -> experts, no bias.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub top_k: usize,
    pub capacity_factor: Option<f64>,
}

/// What the router did in one MoE layer for one pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerRouting {
    /// Index of the layer in the model (0-based).
    pub layer: usize,
    /// Tokens each expert computed on (after capacity).
    pub tokens_per_expert: Vec<u64>,
    /// Assignments dropped by the capacity limit.
    pub dropped: u64,
    /// The chosen experts, `top_k` per token, in token order (row-major over batch and position),
    /// best first; dropped assignments keep their expert id.
    pub experts: Vec<u32>,
}

/// The output of a MoE layer.
pub struct MoeOutput {
    pub y: Tensor,
    /// `E * sum_e f_e * P_e` (unweighted); 1.0 for a perfectly balanced router.
    pub balance_loss: Tensor,
    pub routing: LayerRouting,
    /// The experts' weight gradients, filled by the backward pass (fused CPU path only).
    pub expert_grads: Option<Arc<WeightGrads>>,
}

/// The top `k` indices of `row`, best first (ties to the lower index). One pass keeping the best
/// k so far (k is 1 or 2 in practice): sorting all 64 experts per token was measurable.
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<u32> = Vec::with_capacity(k + 1);
    for (i, v) in row.iter().enumerate() {
        // Insert after every kept index whose value is at least v (earlier indices win ties).
        let at = best
            .iter()
            .position(|&b| v.total_cmp(&row[b as usize]).is_gt())
            .unwrap_or(best.len());
        if at < k {
            best.insert(at, i as u32);
            best.truncate(k);
        }
    }
    best
}

/// Expert capacity for `tokens` tokens: ceil(factor x tokens x k / experts) (GShard).
pub fn capacity(factor: Option<f64>, tokens: usize, k: usize, experts: usize) -> Option<usize> {
    factor.map(|c| (c * tokens as f64 * k as f64 / experts as f64).ceil() as usize)
}

impl Moe {
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// `x` is (tokens, d_model).
    pub fn forward(&self, x: &Tensor, layer: usize, f: &mut FlopCount) -> Result<MoeOutput> {
        let (n, d) = x.dims2()?;
        let e_count = self.num_experts();
        let k = self.top_k;
        let logits = self.router.forward(x, Component::Router, f)?;
        let probs = softmax(&logits.to_dtype(DType::F32)?, f)?;
        let host: Vec<f32> = probs.detach().flatten_all()?.to_vec1()?;
        let chosen: Vec<u32> = host.chunks(e_count).flat_map(|r| top_k(r, k)).collect();

        // Gate weights on the graph, renormalised over the k chosen experts.
        let idx = Tensor::from_vec(chosen.clone(), (n, k), x.device())?;
        let gates = probs.gather(&idx, 1)?;
        let gates = gates.broadcast_div(&gates.sum_keepdim(1)?)?;
        let gates_flat = gates.flatten_all()?.to_dtype(x.dtype())?;

        // Buckets per expert; with a capacity, first choices claim slots before second choices
        // (GShard), each in token order.
        let cap = capacity(self.capacity_factor, n, k, e_count).unwrap_or(usize::MAX);
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); e_count];
        let mut slots: Vec<Vec<u32>> = vec![Vec::new(); e_count];
        let mut dropped = 0u64;
        for rank in 0..k {
            for t in 0..n {
                let a = t * k + rank;
                let e = chosen[a] as usize;
                if rows[e].len() < cap {
                    rows[e].push(t as u32);
                    slots[e].push(a as u32);
                } else {
                    dropped += 1;
                }
            }
        }

        // Experts run on their rows only; their outputs, scaled by the gates, are summed back
        // per token.
        let all_rows: Vec<u32> = rows.concat();
        let all_slots: Vec<u32> = slots.concat();
        let kept = all_rows.len();
        let mut expert_grads = None;
        let y = if kept == 0 {
            Tensor::zeros((n, d), x.dtype(), x.device())?
        } else {
            let slots_t = Tensor::from_vec(all_slots, kept, x.device())?;
            let g = gates_flat.index_select(&slots_t, 0)?;
            f.add(Component::NormAct, 2.0 * (kept * d) as f64); // scale and sum back
            let weights = self.experts.iter().flat_map(Mlp::matrices);
            if fused::applies(x) && fused::reaches_weights(x, weights) {
                for r in rows.iter().filter(|r| !r.is_empty()) {
                    self.experts[0].count(r.len(), Component::Experts, f);
                }
                let weights: Vec<ExpertWeights> = self.experts.iter().map(Mlp::weights).collect();
                let kind = self.experts[0].kind;
                let (y, grads) = fused::experts(x, &g, &weights, &rows, kind)?;
                expert_grads = Some(grads);
                y
            } else {
                let mut outs = Vec::new();
                for (e, expert) in self.experts.iter().enumerate() {
                    if rows[e].is_empty() {
                        continue;
                    }
                    let r = Tensor::from_slice(&rows[e], rows[e].len(), x.device())?;
                    outs.push(expert.forward(&x.index_select(&r, 0)?, Component::Experts, f)?);
                }
                let scaled = Tensor::cat(&outs, 0)?.broadcast_mul(&g.unsqueeze(1)?)?;
                let idx = Tensor::from_vec(all_rows, kept, x.device())?;
                Tensor::zeros((n, d), x.dtype(), x.device())?.index_add(&idx, &scaled, 0)?
            }
        };

        // Load balancing: f_e = share of the n x k assignments routed to e (a constant),
        // P_e = mean router probability of e (differentiable).
        let mut routed = vec![0f32; e_count];
        for &e in &chosen {
            routed[e as usize] += 1.0 / (n * k) as f32;
        }
        let fe = Tensor::from_vec(routed, e_count, x.device())?;
        let pe = probs.mean(0)?;
        let balance_loss = (pe.mul(&fe)?.sum_all()? * e_count as f64)?;

        Ok(MoeOutput {
            y,
            balance_loss,
            expert_grads,
            routing: LayerRouting {
                layer,
                tokens_per_expert: rows.iter().map(|r| r.len() as u64).collect(),
                dropped,
                experts: chosen,
            },
        })
    }
}

/// The MoE output computed the slow way: every expert on every token, weighted by the
/// renormalised top-k gates and zero elsewhere. For tests.
pub fn brute_force(moe: &Moe, x: &Tensor) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    let e_count = moe.num_experts();
    let mut f = FlopCount::default();
    let logits = moe.router.forward(x, Component::Router, &mut f)?;
    let probs: Vec<Vec<f32>> = softmax(&logits, &mut f)?.to_vec2()?;
    let mut weights = vec![0f32; n * e_count];
    for (t, row) in probs.iter().enumerate() {
        let top = top_k(row, moe.top_k);
        let z: f32 = top.iter().map(|&e| row[e as usize]).sum();
        for &e in &top {
            weights[t * e_count + e as usize] = row[e as usize] / z;
        }
    }
    let w = Tensor::from_vec(weights, (n, e_count), x.device())?;
    let mut y = Tensor::zeros_like(x)?;
    for (e, expert) in moe.experts.iter().enumerate() {
        let he = expert.forward(x, Component::Experts, &mut f)?;
        y = (y + he.broadcast_mul(&w.narrow(D::Minus1, e, 1)?)?)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_best_first_with_ties_to_the_lower_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5], 2), vec![1, 3]);
        assert_eq!(top_k(&[0.3, 0.1, 0.6], 1), vec![2]);
        assert_eq!(top_k(&[0.2, 0.2, 0.2], 3), vec![0, 1, 2]);
    }

    #[test]
    fn top_k_agrees_with_a_full_sort() {
        let mut x = 12345u64;
        for k in 1..=4 {
            for _ in 0..200 {
                let row: Vec<f32> = (0..64)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((x >> 40) % 50) as f32 // many ties
                    })
                    .collect();
                let mut want: Vec<u32> = (0..64).collect();
                want.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
                want.truncate(k);
                assert_eq!(top_k(&row, k), want);
            }
        }
    }

    #[test]
    fn capacity_follows_gshard() {
        assert_eq!(capacity(Some(1.0), 64, 2, 8), Some(16));
        assert_eq!(capacity(Some(1.25), 10, 2, 8), Some(4)); // ceil(3.125)
        assert_eq!(capacity(None, 64, 2, 8), None);
    }
}
