//! FLOP tallies by model component, shared by the analytic count and the executed counter.
//! Convention: a multiply-add is 2 FLOPs, so an (m x k) @ (k x n) matmul is 2*m*k*n.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parts of a transformer that FLOPs, parameters and bytes are attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Token and position embeddings (lookups cost no FLOPs; parameters only).
    Embedding,
    /// Q, K, V and output projections.
    AttnProj,
    /// Q @ K^T and the attention-weighted sum of V.
    AttnScores,
    /// The feed-forward block of a dense layer.
    DenseFfn,
    /// The MoE gating network (d_model x experts).
    Router,
    /// The expert feed-forward blocks of MoE layers.
    Experts,
    /// The output projection to the vocabulary.
    Logits,
    /// Norms, activations, softmax, residual adds: small, kept on their own line.
    NormAct,
}

impl Component {
    pub const ALL: [Component; 8] = [
        Component::Embedding,
        Component::AttnProj,
        Component::AttnScores,
        Component::DenseFfn,
        Component::Router,
        Component::Experts,
        Component::Logits,
        Component::NormAct,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Component::Embedding => "embedding",
            Component::AttnProj => "attn_proj",
            Component::AttnScores => "attn_scores",
            Component::DenseFfn => "dense_ffn",
            Component::Router => "router",
            Component::Experts => "experts",
            Component::Logits => "logits",
            Component::NormAct => "norm_act",
        }
    }
}

/// FLOPs by component. Floating point because full-size models pass 2^53 FLOPs per run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlopCount {
    pub by_component: BTreeMap<Component, f64>,
}

impl FlopCount {
    /// Count an (m x k) @ (k x n) matmul: 2*m*k*n FLOPs.
    pub fn add_matmul(&mut self, c: Component, m: usize, k: usize, n: usize) {
        self.add(c, 2.0 * m as f64 * k as f64 * n as f64);
    }

    pub fn add(&mut self, c: Component, flops: f64) {
        *self.by_component.entry(c).or_insert(0.0) += flops;
    }

    pub fn get(&self, c: Component) -> f64 {
        self.by_component.get(&c).copied().unwrap_or(0.0)
    }

    pub fn total(&self) -> f64 {
        self.by_component.values().sum()
    }

    pub fn merge(&mut self, other: &FlopCount) {
        for (&c, &f) in &other.by_component {
            self.add(c, f);
        }
    }

    /// Every component multiplied by `k` (e.g. 3 for forward + backward, 1/tokens for per token).
    pub fn scaled(&self, k: f64) -> FlopCount {
        FlopCount {
            by_component: self
                .by_component
                .iter()
                .map(|(&c, &f)| (c, f * k))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matmul_counts_two_flops_per_multiply_add() {
        let mut f = FlopCount::default();
        f.add_matmul(Component::AttnProj, 3, 4, 5);
        f.add_matmul(Component::AttnProj, 1, 1, 1);
        assert_eq!(f.get(Component::AttnProj), 122.0);
        assert_eq!(f.get(Component::Experts), 0.0);
        assert_eq!(f.scaled(0.5).total(), 61.0);
    }
}

/// Elementwise work of the norm/activation line, per element, shared by the analytic count and the
/// executed counter so that the two agree by construction. Rough by nature; kept on its own line.
pub mod elementwise {
    /// LayerNorm: mean, centre, square, mean, normalise, scale, shift.
    pub const NORM_FLOPS_PER_ELEMENT: f64 = 7.0;
    /// GELU (erf form), counted as 8 FLOPs an element.
    pub const GELU_FLOPS_PER_ELEMENT: f64 = 8.0;
    /// SiLU, x / (1 + exp(-x)): negate, exp, add, divide.
    pub const SILU_FLOPS_PER_ELEMENT: f64 = 4.0;
    /// The product of a gated unit's activated gate and its up projection.
    pub const GATE_FLOPS_PER_ELEMENT: f64 = 1.0;
    /// Softmax: max, subtract, exp, sum, divide.
    pub const SOFTMAX_FLOPS_PER_ELEMENT: f64 = 5.0;
    /// A residual add.
    pub const RESIDUAL_FLOPS_PER_ELEMENT: f64 = 1.0;
    /// Rotary positions: x cos + rotate(x) sin, two multiplies and an add an element.
    pub const ROPE_FLOPS_PER_ELEMENT: f64 = 3.0;

    use crate::profile::FfnKind;

    /// Elementwise FLOPs of a feed-forward block per hidden (d_ff) element: the activation, and
    /// for a gated unit the product with the up projection.
    pub fn ffn_activation_flops_per_element(kind: FfnKind) -> f64 {
        match kind {
            FfnKind::Mlp => GELU_FLOPS_PER_ELEMENT,
            FfnKind::Geglu => GELU_FLOPS_PER_ELEMENT + GATE_FLOPS_PER_ELEMENT,
            FfnKind::Swiglu => SILU_FLOPS_PER_ELEMENT + GATE_FLOPS_PER_ELEMENT,
        }
    }
}
