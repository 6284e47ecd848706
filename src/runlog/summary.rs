//! `summary.json`: per model and phase, joules and FLOPs per token with confidence intervals.
//! Computed from the records alone, so a cut-off run is summarised the same way as a finished one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::idle::{with_baseline_spread, IdleBaseline};
use super::peak::SummaryPeak;
use super::record::{IdleWhen, Record, StepRecord, WindowInfo, FORMAT_VERSION};
use crate::stats::{estimate, paired_ratio_of_means, Estimate};
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

/// Energy per token, total and with the idle baseline subtracted. Denominator: the phase's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoulesPerToken {
    pub total: Estimate,
    /// Absent when the run has no idle window. The baseline is the pooled one
    /// ([`IdleBaseline::power_w`]); its interval adds the baseline's own in quadrature.
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
    /// Joules / tokens of each measurement window (a step's own window, or a block of steps
    /// sharing one); absent when no step carried energy.
    pub joules_per_token: Option<JoulesPerToken>,
    /// Measurement windows behind `joules_per_token`, and how many of them spanned fewer counter
    /// updates than the sensor resolves (`meter::SAFE_UPDATES_PER_WINDOW`): any such window
    /// leaves the energy figure unresolved.
    #[serde(default)]
    pub windows: usize,
    #[serde(default)]
    pub short_windows: usize,
    /// Measured steps without energy: their window's sensor reads failed. The joules per token
    /// come from the other steps.
    #[serde(default)]
    pub unmeasured_steps: usize,
    /// The host CPU beside a GPU run (a second meter, RAPL): its joules per token over the same
    /// windows, and what it covers; absent where no second meter ran. Not in `joules_per_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_joules_per_token: Option<Estimate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_source: Option<EnergySource>,
    /// Fewest counter updates any of those windows spanned (absent for the estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_window_updates: Option<f64>,
    /// Joules per token of each window, in run order (for the paired ratio; not written).
    #[serde(skip)]
    pub window_joules_per_token: Vec<f64>,
    /// Executed FLOPs per token, over all measured steps.
    pub flops_per_token: f64,
    /// Tokens / seconds of each measurement window (steps sharing a window are one sample).
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
    /// Sparse over dense J/token from paired windows: the i-th sparse window of the phase with
    /// the i-th dense one (they run back to back: A then B), the mean of the per-pair ratios
    /// with a Student-t 95% interval over the pairs (`n` = pairs). Absent without two pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_per_token_paired: Option<Estimate>,
    /// `joules_per_token` (the ratio of the two means over the paired windows) with its 95%
    /// interval from the pairs ([`crate::stats::paired_ratio_of_means`]); absent without two
    /// pairs. The report's J/token ratio uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_per_token_ratio_paired: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub format_version: u32,
    /// True when the run wrote its end record (finished or stopped with Ctrl-C).
    pub complete: bool,
    /// Why the run ended; "cut off" when the records stop without an end record.
    pub end_reason: String,
    /// The idle baseline's mean power (`idle.power_w.mean`).
    pub idle_power_w: Option<f64>,
    /// The baseline before and after the workload, its spread and its drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleBaseline>,
    pub source: Option<EnergySource>,
    pub models: Vec<ModelSummary>,
    /// Sparse / dense per phase, where the run has both roles.
    pub ratios: Vec<Ratio>,
    /// The peak the phases' `utilization` divides by (absent when no peak is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<SummaryPeak>,
    /// Each model's joules, FLOPs, tokens and seconds to a target validation loss, with 95%
    /// intervals (format 2; absent without evals and in format 1 summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_target: Option<super::target::ToTarget>,
}

impl RunSummary {
    pub fn model(&self, role: Role) -> Option<&ModelSummary> {
        self.models.iter().find(|m| m.role == role)
    }

    /// The to-target figures for `target` (loss, how it was chosen) instead of the default (the
    /// lowest loss all models reached); `None` keeps the default.
    pub fn with_target(mut self, records: &[Record], target: Option<(f64, &str)>) -> RunSummary {
        if target.is_some() {
            self.to_target = super::target::to_target(records, target);
        }
        self
    }
}

impl ModelSummary {
    pub fn phase(&self, phase: Phase) -> Option<&PhaseSummary> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// The baseline a phase subtracts: the pooled power, and the factor from the power the steps'
/// recorded `idle_joules` used (the window before) to it.
#[derive(Clone, Copy)]
struct Baseline<'a> {
    power_w: &'a Estimate,
    scale: f64,
}

/// Steps sharing a window are one sample: the window's joules over its tokens.
struct Group<'a> {
    id: Option<u64>,
    joules: f64,
    idle_joules: Option<f64>,
    host_joules: Option<f64>,
    tokens: u64,
    window: Option<&'a WindowInfo>,
}

/// The measured steps with energy, grouped by window (a step without a window index alone).
fn window_groups<'a>(with_energy: &[&'a StepRecord]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group> = Vec::new();
    for s in with_energy {
        let Some(e) = s.energy.as_ref() else { continue };
        let id = e.window.as_ref().map(|w| w.index);
        match groups.last_mut() {
            Some(g) if id.is_some() && g.id == id => {
                g.joules += e.joules;
                g.idle_joules = g.idle_joules.zip(e.idle_joules).map(|(a, b)| a + b);
                g.host_joules = g
                    .host_joules
                    .zip(e.host.as_ref())
                    .map(|(a, h)| a + h.joules);
                g.tokens += s.tokens;
            }
            _ => groups.push(Group {
                id,
                joules: e.joules,
                idle_joules: e.idle_joules,
                host_joules: e.host.as_ref().map(|h| h.joules),
                tokens: s.tokens,
                window: e.window.as_ref(),
            }),
        }
    }
    groups
}

/// Tokens per second over the same windows as the energy (steps without a window alone), so
/// J/token x tokens/s is the window's power.
fn tokens_per_s_by_window(measured: &[&StepRecord]) -> Vec<f64> {
    let mut runs: Vec<(Option<u64>, u64, f64)> = Vec::new();
    for s in measured {
        let id = s
            .energy
            .as_ref()
            .and_then(|e| e.window.as_ref())
            .map(|w| w.index);
        match runs.last_mut() {
            Some(r) if id.is_some() && r.0 == id => {
                r.1 += s.tokens;
                r.2 += s.seconds;
            }
            _ => runs.push((id, s.tokens, s.seconds)),
        }
    }
    runs.iter()
        .filter(|r| r.2 > 0.0)
        .map(|r| r.1 as f64 / r.2)
        .collect()
}

fn summarize_phase(phase: Phase, steps: &[&StepRecord], base: Option<Baseline>) -> PhaseSummary {
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
    let groups = window_groups(&with_energy);
    let jpt: Vec<f64> = groups.iter().map(|g| g.joules / g.tokens as f64).collect();
    let scale = base.map_or(1.0, |b| b.scale);
    let jpt_idle: Vec<f64> = groups
        .iter()
        .filter_map(|g| Some((g.joules - g.idle_joules? * scale) / g.tokens as f64))
        .collect();
    let seconds_per_token = if tokens > 0 {
        seconds / tokens as f64
    } else {
        0.0
    };
    let spread = |e: Estimate| match base {
        Some(b) => with_baseline_spread(e, b.power_w, seconds_per_token),
        None => e,
    };
    // Only where every window had the host's reading: a partial figure would mislead.
    let host_jpt: Vec<f64> = groups
        .iter()
        .filter_map(|g| Some(g.host_joules? / g.tokens as f64))
        .collect();
    let short_windows = groups
        .iter()
        .filter(|g| g.window.is_some_and(WindowInfo::too_short))
        .count();
    let min_window_updates = groups
        .iter()
        .filter_map(|g| g.window.and_then(|w| w.updates))
        .reduce(f64::min);
    let joules: f64 = with_energy
        .iter()
        .map(|s| s.energy.as_ref().map_or(0.0, |e| e.joules))
        .sum();
    let first_energy = with_energy.first().and_then(|s| s.energy.as_ref());
    let tps = tokens_per_s_by_window(&measured);
    PhaseSummary {
        phase,
        steps: measured.len(),
        warmup_steps_excluded: warm,
        tokens,
        seconds,
        joules_per_token: estimate(&jpt).map(|total| JoulesPerToken {
            total,
            idle_subtracted: if jpt_idle.len() == jpt.len() {
                estimate(&jpt_idle).map(spread)
            } else {
                None
            },
        }),
        host_joules_per_token: if !host_jpt.is_empty() && host_jpt.len() == groups.len() {
            estimate(&host_jpt)
        } else {
            None
        },
        host_scope: with_energy
            .iter()
            .find_map(|s| s.energy.as_ref()?.host.as_ref().map(|h| h.scope.clone())),
        host_source: with_energy
            .iter()
            .find_map(|s| s.energy.as_ref()?.host.as_ref().map(|h| h.source)),
        windows: groups.len(),
        short_windows,
        unmeasured_steps: measured.iter().filter(|s| s.energy.is_none()).count(),
        min_window_updates,
        window_joules_per_token: jpt.clone(),
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
    let mut idles = Vec::new();
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
                idles.push(i);
                source = source.or(Some(i.source));
            }
            Record::End { .. } | Record::Sample(_) | Record::Log { .. } => {}
        }
    }
    let idle = IdleBaseline::from_records(idles.iter().copied());
    // The steps' idle shares used the first window before the workload.
    let recorded_w = idles
        .iter()
        .find(|i| i.when == IdleWhen::Before)
        .map(|i| i.power_w);
    let base = idle.as_ref().zip(recorded_w).map(|(b, w)| Baseline {
        power_w: &b.power_w,
        scale: if w > 0.0 { b.power_w.mean / w } else { 1.0 },
    });
    let models: Vec<ModelSummary> = by_model
        .into_iter()
        .map(|((role, model), phases)| ModelSummary {
            val_loss: val.get(&(role, model.clone())).copied(),
            model,
            role,
            phases: phases
                .into_iter()
                .map(|(p, steps)| summarize_phase(p, &steps, base))
                .collect(),
        })
        .collect();
    let ratios = ratios(&models);
    // Complete means the records end with `end`: anything after one (a folder appended to by
    // a second run) makes it another, unfinished run.
    let end = match records.last() {
        Some(Record::End { reason, .. }) => Some(reason.clone()),
        _ => None,
    };
    RunSummary {
        format_version: FORMAT_VERSION,
        complete: end.is_some(),
        end_reason: end.unwrap_or_else(|| "cut off: the records end without an end record".into()),
        idle_power_w: idle.as_ref().map(|b| b.power_w.mean),
        idle,
        source,
        models,
        ratios,
        peak: None,
        to_target: super::target::to_target(records, None),
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
            let windows: Vec<(f64, f64)> = sp
                .window_joules_per_token
                .iter()
                .copied()
                .zip(dp.window_joules_per_token.iter().copied())
                .collect();
            let pairs: Vec<f64> = windows
                .iter()
                .filter(|(_, d)| *d > 0.0)
                .map(|(a, b)| a / b)
                .collect();
            Some(Ratio {
                phase: p,
                joules_per_token_paired: (pairs.len() >= 2).then(|| estimate(&pairs)).flatten(),
                joules_per_token_ratio_paired: paired_ratio_of_means(&windows),
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
    use crate::runlog::{test_energy, test_step, Energy};

    fn step(role: Role, phase: Phase, warmup: bool, tokens: u64, joules: f64) -> Record {
        Record::Step(StepRecord {
            warmup,
            tokens,
            flops: 1000.0 * tokens as f64,
            energy: Some(Energy {
                idle_joules: Some(1.0),
                ..test_energy(joules)
            }),
            loss: Some(2.0),
            ..test_step(role, phase)
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

    #[test]
    fn steps_sharing_a_window_are_one_sample_and_short_windows_are_counted() {
        let in_window = |index: u64, steps: u64, updates: f64, tokens: u64, joules: f64| {
            let Record::Step(mut s) = step(Role::Sparse, Phase::Decode, false, tokens, joules)
            else {
                unreachable!()
            };
            let e = s.energy.as_mut().unwrap();
            e.idle_joules = Some(joules / 2.0);
            e.window = Some(WindowInfo {
                index,
                steps,
                seconds: 2.0,
                updates: Some(updates),
            });
            Record::Step(s)
        };
        let recs = vec![
            // Window 0: three steps, 12 J over 6 tokens, spanning 25 updates.
            in_window(0, 3, 25.0, 2, 3.0),
            in_window(0, 3, 25.0, 2, 4.0),
            in_window(0, 3, 25.0, 2, 5.0),
            // Window 1: two steps, 4 J over 4 tokens, only 12 updates.
            in_window(1, 2, 12.0, 2, 1.0),
            in_window(1, 2, 12.0, 2, 3.0),
        ];
        let s = summarize(&recs);
        let d = s.model(Role::Sparse).unwrap().phase(Phase::Decode).unwrap();
        assert_eq!((d.steps, d.windows, d.short_windows), (5, 2, 1));
        assert_eq!(d.min_window_updates, Some(12.0));
        let j = d.joules_per_token.as_ref().unwrap();
        assert_eq!(j.total.n, 2);
        assert!((j.total.mean - (2.0 + 1.0) / 2.0).abs() < 1e-12);
        assert!((j.idle_subtracted.unwrap().mean - 0.75).abs() < 1e-12);
        // Tokens per second over the same windows: 6 tokens in 1.5 s, 4 in 1 s.
        let tps = d.tokens_per_s.unwrap();
        assert_eq!(tps.n, 2);
        assert!((tps.mean - 4.0).abs() < 1e-12);
        // Paired: sparse window i over dense window i, Student t over the pairs.
        let mut dense = recs.clone();
        for r in &mut dense {
            if let Record::Step(st) = r {
                st.role = Role::Dense;
                st.model = "Dense".into();
                // Window 0 costs dense 3x, window 1 2x: 6 and 2 J/token against 2 and 1.
                let e = st.energy.as_mut().unwrap();
                e.joules *= if e.window.as_ref().unwrap().index == 0 {
                    3.0
                } else {
                    2.0
                };
            }
        }
        let both: Vec<Record> = recs.iter().chain(&dense).cloned().collect();
        let r = &summarize(&both).ratios[0];
        let paired = r.joules_per_token_paired.as_ref().unwrap();
        assert_eq!(paired.n, 2);
        // (2/6 + 1/2) / 2, not the ratio of the means (1.5 / 4) nor crossed pairs.
        assert!((paired.mean - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert!((r.joules_per_token.unwrap() - 0.375).abs() < 1e-12);
        assert!(paired.ci95.is_some());
        // The ratio of means over the same pairs, with the pairs' interval.
        let rm = r.joules_per_token_ratio_paired.unwrap();
        assert!((rm.mean - 1.5 / 4.0).abs() < 1e-12 && rm.n == 2);
        // Steps without a recorded window (older folders) are each their own sample.
        let old = summarize(&[
            step(Role::Dense, Phase::Train, false, 10, 10.0),
            step(Role::Dense, Phase::Train, false, 10, 30.0),
        ]);
        let t = old.model(Role::Dense).unwrap().phase(Phase::Train).unwrap();
        assert_eq!(
            (t.windows, t.short_windows, t.min_window_updates),
            (2, 0, None)
        );
    }
    #[test]
    fn the_idle_subtracted_figure_uses_the_pooled_baseline_and_carries_its_spread() {
        // Steps recorded idle shares at the window before (10 W x 0.1 s = 1 J); the window after
        // read 14 W, so the pooled baseline is 12 W and each step's idle share becomes 1.2 J.
        let idle = |when, w: [f64; 2]| {
            Record::Idle(crate::runlog::IdleRecord {
                when,
                seconds: 2.0,
                joules: w.iter().sum::<f64>(),
                power_w: (w[0] + w[1]) / 2.0,
                window_power_w: w.to_vec(),
                source: EnergySource::Rapl,
                scope: "test".into(),
            })
        };
        let timed = |joules: f64| {
            let Record::Step(mut s) = step(Role::Sparse, Phase::Train, false, 10, joules) else {
                unreachable!()
            };
            s.seconds = 0.1;
            Record::Step(s)
        };
        let steps = [timed(3.0), timed(3.2), timed(2.8), timed(3.0)];
        let mut recs = vec![idle(IdleWhen::Before, [9.0, 11.0])];
        recs.extend(steps.iter().cloned());
        let before_only = summarize(&recs);
        recs.push(idle(IdleWhen::After, [13.0, 15.0]));
        let both = summarize(&recs);
        let b = both.idle.as_ref().unwrap();
        assert_eq!((b.before_w.mean, b.after_w.unwrap().mean), (10.0, 14.0));
        assert_eq!(both.idle_power_w, Some(12.0));
        let sub = |s: &RunSummary| {
            s.model(Role::Sparse)
                .unwrap()
                .phase(Phase::Train)
                .unwrap()
                .joules_per_token
                .as_ref()
                .unwrap()
                .idle_subtracted
                .unwrap()
        };
        // By hand: (3.0 - 1.2) / 10 on average over the four steps.
        assert!((sub(&both).mean - 0.18).abs() < 1e-12, "{:?}", sub(&both));
        assert!((sub(&before_only).mean - 0.2).abs() < 1e-12);
        // The interval: the steps' t-interval and the baseline's (x 0.01 s/token) in quadrature.
        let steps_only = crate::stats::estimate(&[0.18, 0.2, 0.16, 0.18]).unwrap();
        let hb = b.power_w.half_width().unwrap() * 0.01;
        let want = steps_only.half_width().unwrap().hypot(hb);
        assert!((sub(&both).half_width().unwrap() - want).abs() < 1e-12);
    }
}
