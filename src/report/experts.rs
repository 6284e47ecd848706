//! Expert load per MoE layer: the router's token counts summed over a phase's measured steps, how
//! uneven they are, and the assignments the capacity factor dropped.

use std::collections::BTreeMap;

use crate::accounting::sum_expert_tokens;
use crate::runlog::{RunHeader, StepRecord};
use crate::vocab::{Phase, Role};

use super::document::{source, ExpertLoad, Figure, LayerLoad};

/// One [`ExpertLoad`] per model and phase that routed tokens (dense models have none).
pub fn expert_load(steps: &[&StepRecord], header: &RunHeader) -> Vec<ExpertLoad> {
    type Key = (Role, String, Phase);
    let mut groups: BTreeMap<Key, Vec<&StepRecord>> = BTreeMap::new();
    for s in steps
        .iter()
        .filter(|s| !s.warmup && !s.expert_tokens.is_empty())
    {
        groups
            .entry((s.role, s.model.clone(), s.phase))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|((role, model, phase), steps)| {
            let profile = header.model(role);
            let sums = sum_expert_tokens(steps.iter().map(|s| s.expert_tokens.as_slice()));
            let n_layers = sums.len();
            let dropped: u64 = steps.iter().map(|s| s.dropped).sum();
            let tokens: u64 = steps.iter().map(|s| s.tokens).sum();
            // Every token is routed to top_k experts in every MoE layer.
            let top_k = profile.map_or(1, |p| p.top_k) as f64;
            let assignments = tokens as f64 * top_k * n_layers as f64;
            let block = |i: usize| profile.map(|p| (i + 1) * p.moe_every - 1);
            ExpertLoad {
                role,
                model,
                phase,
                steps: steps.len(),
                layers: sums
                    .into_iter()
                    .enumerate()
                    .map(|(i, counts)| layer_load(i, block(i), counts))
                    .collect(),
                dropped: Figure::new(dropped as f64, "assignments", source::RECORDS),
                assignments: Figure::new(assignments, "assignments", source::RECORDS),
                dropped_fraction: (assignments > 0.0).then(|| {
                    Figure::new(dropped as f64 / assignments, "fraction", source::RECORDS)
                        .per("expert assignment (token x top_k x MoE layer)")
                }),
            }
        })
        .collect()
}

fn layer_load(moe_layer: usize, block: Option<usize>, counts: Vec<u64>) -> LayerLoad {
    let n = counts.len().max(1) as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    LayerLoad {
        moe_layer,
        block,
        idle_experts: counts.iter().filter(|&&c| c == 0).count(),
        max_over_mean: if mean > 0.0 { max / mean } else { 0.0 },
        cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        tokens_per_expert: counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_layer_has_max_over_mean_one_and_no_spread() {
        let l = layer_load(0, Some(1), vec![5, 5, 5, 5]);
        assert_eq!((l.max_over_mean, l.cv, l.idle_experts), (1.0, 0.0, 0));
    }

    #[test]
    fn a_skewed_layer_reports_its_busiest_expert_and_idle_ones() {
        // mean 2, max 6, population sd = sqrt((16 + 4 + 4 + 0) / 4) = sqrt(6).
        let l = layer_load(0, None, vec![6, 0, 0, 2]);
        assert_eq!(l.max_over_mean, 3.0);
        assert!((l.cv - 6f64.sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(l.idle_experts, 2);
    }
}
