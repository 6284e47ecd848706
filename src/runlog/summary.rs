//! `summary.json`: per model and phase, joules and FLOPs per token with confidence intervals.
//! Computed from the records alone, so a cut-off run is summarised the same way as a finished one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::peak::SummaryPeak;
use super::record::{Phase, Record, Role, StepRecord, FORMAT_VERSION};
use crate::meter::EnergySource;
use crate::stats::{estimate, Estimate};

/// Energy per token, total and with the idle baseline subtracted. Denominator: the phase's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoulesPerToken {
    pub total: Estimate,
    /// Absent when the run has no idle window.
    pub idle_subtracted: Option<Estimate>,
}

/// One model in one phase, over its measured (non-warm-up) steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: Phase,
    /// Measured steps (warm-up left out) and the warm-up steps that were left out.
    pub steps: usize,
    pub warmup_steps_excluded: usize,
    /// The denominator: tokens trained, prompt tokens or generated tokens, summed over measured steps.
    pub tokens: u64,
    pub seconds: f64,
    /// Per-step joules / tokens; absent when no step carried energy.
    pub joules_per_token: Option<JoulesPerToken>,
    /// Executed FLOPs per token, over all measured steps.
    pub flops_per_token: f64,
    /// Per-step tokens / seconds.
    pub tokens_per_s: Option<Estimate>,
    /// Achieved FLOP/s over all measured steps.
    pub flops_per_s: f64,
    /// Joules per executed FLOP (total energy over total FLOPs).
    pub joules_per_flop: Option<f64>,
    pub source: Option<EnergySource>,
    pub scope: Option<String>,
    /// Training loss of the last measured step (train only).
    pub last_loss: Option<f64>,
    /// Achieved FLOP/s over the peak the run used (`RunSummary::peak`), at most 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    /// Where that peak came from: "probe", "cache", "achieved" or a hardware profile's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    pub role: Role,
    pub phases: Vec<PhaseSummary>,
    /// Last validation loss, if any was measured.
    pub val_loss: Option<f64>,
}

/// Sparse over dense for one phase: below 1 means the sparse model is cheaper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub phase: Phase,
    pub joules_per_token: Option<f64>,
    pub flops_per_token: Option<f64>,
    pub tokens_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub format_version: u32,
    /// True when the run wrote its end record (finished or stopped with Ctrl-C).
    pub complete: bool,
    /// Why the run ended; "cut off" when the records stop without an end record.
    pub end_reason: String,
    pub idle_power_w: Option<f64>,
    pub source: Option<EnergySource>,
    pub models: Vec<ModelSummary>,
    /// Sparse / dense per phase, where the run has both roles.
    pub ratios: Vec<Ratio>,
    /// The peak the phases' `utilization` divides by (absent when no peak is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<SummaryPeak>,
}

impl RunSummary {
    pub fn model(&self, role: Role) -> Option<&ModelSummary> {
        self.models.iter().find(|m| m.role == role)
    }
}

impl ModelSummary {
    pub fn phase(&self, phase: Phase) -> Option<&PhaseSummary> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

fn summarize_phase(phase: Phase, steps: &[&StepRecord]) -> PhaseSummary {
    let warm = steps.iter().filter(|s| s.warmup).count();
    let measured: Vec<&StepRecord> = steps.iter().copied().filter(|s| !s.warmup).collect();
    let tokens: u64 = measured.iter().map(|s| s.tokens).sum();
    let seconds: f64 = measured.iter().map(|s| s.seconds).sum();
    let flops: f64 = measured.iter().map(|s| s.flops).sum();
    let with_energy: Vec<&StepRecord> = measured
        .iter()
        .copied()
        .filter(|s| s.energy.is_some() && s.tokens > 0)
        .collect();
    let jpt: Vec<f64> = with_energy
        .iter()
        .map(|s| s.energy.as_ref().map_or(0.0, |e| e.joules) / s.tokens as f64)
        .collect();
    let jpt_idle: Vec<f64> = with_energy
        .iter()
        .filter_map(|s| {
            let e = s.energy.as_ref()?;
            Some((e.joules - e.idle_joules?) / s.tokens as f64)
        })
        .collect();
    let joules: f64 = with_energy
        .iter()
        .map(|s| s.energy.as_ref().map_or(0.0, |e| e.joules))
        .sum();
    let first_energy = with_energy.first().and_then(|s| s.energy.as_ref());
    let tps: Vec<f64> = measured
        .iter()
        .filter(|s| s.seconds > 0.0)
        .map(|s| s.tokens as f64 / s.seconds)
        .collect();
    PhaseSummary {
        phase,
        steps: measured.len(),
        warmup_steps_excluded: warm,
        tokens,
        seconds,
        joules_per_token: estimate(&jpt).map(|total| JoulesPerToken {
            total,
            idle_subtracted: if jpt_idle.len() == jpt.len() {
                estimate(&jpt_idle)
            } else {
                None
            },
        }),
        flops_per_token: if tokens > 0 {
            flops / tokens as f64
        } else {
            0.0
        },
        tokens_per_s: estimate(&tps),
        flops_per_s: if seconds > 0.0 { flops / seconds } else { 0.0 },
        joules_per_flop: (flops > 0.0 && !with_energy.is_empty()).then(|| joules / flops),
        source: first_energy.map(|e| e.source),
        scope: first_energy.map(|e| e.scope.clone()),
        last_loss: measured.iter().rev().find_map(|s| s.loss),
        utilization: None,
        peak_from: None,
    }
}

/// Summarise the records of a run (finished or cut off).
pub fn summarize(records: &[Record]) -> RunSummary {
    let mut by_model: BTreeMap<(Role, String), BTreeMap<Phase, Vec<&StepRecord>>> = BTreeMap::new();
    let mut val: BTreeMap<(Role, String), f64> = BTreeMap::new();
    let mut idle_power_w = None;
    let mut end = None;
    let mut source = None;
    for r in records {
        match r {
            Record::Step(s) => {
                source = source.or(s.energy.as_ref().map(|e| e.source));
                by_model
                    .entry((s.role, s.model.clone()))
                    .or_default()
                    .entry(s.phase)
                    .or_default()
                    .push(s)
            }
            Record::Eval(e) => {
                val.insert((e.role, e.model.clone()), e.val_loss);
            }
            Record::Idle(i) => {
                idle_power_w = Some(i.power_w);
                source = source.or(Some(i.source));
            }
            Record::End { reason, .. } => end = Some(reason.clone()),
            Record::Sample(_) | Record::Log { .. } => {}
        }
    }
    let models: Vec<ModelSummary> = by_model
        .into_iter()
        .map(|((role, model), phases)| ModelSummary {
            val_loss: val.get(&(role, model.clone())).copied(),
            model,
            role,
            phases: phases
                .into_iter()
                .map(|(p, steps)| summarize_phase(p, &steps))
                .collect(),
        })
        .collect();
    let ratios = ratios(&models);
    RunSummary {
        format_version: FORMAT_VERSION,
        complete: end.is_some(),
        end_reason: end.unwrap_or_else(|| "cut off: the records end without an end record".into()),
        idle_power_w,
        source,
        models,
        ratios,
        peak: None,
    }
}

fn ratios(models: &[ModelSummary]) -> Vec<Ratio> {
    let find = |r: Role| models.iter().find(|m| m.role == r);
    let (Some(s), Some(d)) = (find(Role::Sparse), find(Role::Dense)) else {
        return Vec::new();
    };
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    [Phase::Train, Phase::Prefill, Phase::Decode]
        .into_iter()
        .filter_map(|p| {
            let (sp, dp) = (s.phase(p)?, d.phase(p)?);
            let jpt = |x: &PhaseSummary| x.joules_per_token.as_ref().map(|j| j.total.mean);
            Some(Ratio {
                phase: p,
                joules_per_token: div(jpt(sp), jpt(dp)),
                flops_per_token: div(Some(sp.flops_per_token), Some(dp.flops_per_token)),
                tokens_per_s: div(
                    sp.tokens_per_s.map(|e| e.mean),
                    dp.tokens_per_s.map(|e| e.mean),
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::Energy;

    fn step(role: Role, phase: Phase, warmup: bool, tokens: u64, joules: f64) -> Record {
        Record::Step(StepRecord {
            t_s: 0.0,
            model: format!("{role:?}"),
            role,
            phase,
            step: 0,
            warmup,
            tokens,
            seconds: 0.5,
            flops: 1000.0 * tokens as f64,
            flops_by_component: Default::default(),
            energy: Some(Energy {
                joules,
                idle_joules: Some(1.0),
                source: EnergySource::Estimate,
                scope: "test".into(),
            }),
            loss: Some(2.0),
            aux_loss: None,
            expert_tokens: vec![],
            dropped: 0,
            domain_expert_tokens: Default::default(),
        })
    }

    #[test]
    fn warmup_is_left_out_and_ratios_compare_sparse_with_dense() {
        let recs = vec![
            step(Role::Sparse, Phase::Train, true, 10, 1000.0),
            step(Role::Sparse, Phase::Train, false, 10, 10.0),
            step(Role::Sparse, Phase::Train, false, 10, 30.0),
            step(Role::Dense, Phase::Train, false, 10, 40.0),
            step(Role::Dense, Phase::Train, false, 10, 40.0),
        ];
        let s = summarize(&recs);
        assert!(!s.complete);
        let sp = s.model(Role::Sparse).unwrap().phase(Phase::Train).unwrap();
        assert_eq!((sp.steps, sp.warmup_steps_excluded, sp.tokens), (2, 1, 20));
        let j = sp.joules_per_token.as_ref().unwrap();
        assert!((j.total.mean - 2.0).abs() < 1e-12);
        assert!((j.idle_subtracted.unwrap().mean - 1.9).abs() < 1e-12);
        assert_eq!(sp.flops_per_token, 1000.0);
        assert!((s.ratios[0].joules_per_token.unwrap() - 0.5).abs() < 1e-12);
    }
}
