//! Energy to a target quality (GLaM's comparison, MLPerf Power's metric): for each model, the
//! joules, FLOPs, tokens and seconds its training used until its validation loss first reached a
//! target, each with a 95% bootstrap interval over the two sources of noise the run measures —
//! the validation loss (resampling the eval sequences) and the energy and time per token
//! (resampling the measurement windows). Method and its limits: docs/report.md, "Energy to a
//! target loss".
//!
//! Joules are the training steps' energy, warm-up included (the model learns during warm-up
//! too) and evaluation excluded (evals are outside the step windows); seconds are the steps'
//! wall clock, evaluation excluded.

use serde::{Deserialize, Serialize};

use super::record::Record;
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

/// Bootstrap replicates behind every interval (the first is the run itself).
pub const REPLICATES: usize = 2000;
/// Seed of the bootstrap's draws, so a summary is the same every time it is computed.
const BOOTSTRAP_SEED: u64 = 0x5EED_7A26;

/// How the target loss was chosen.
pub const TARGET_LOWEST_REACHED: &str = "the lowest validation loss all models reached";
pub const TARGET_GIVEN: &str = "given (--target-loss)";
pub const TARGET_UNTIL: &str = "the stop rule's loss (--until-loss)";

/// The to-target loss a run or a report asks for (`--target-loss`, else `--until-loss`) and
/// how it was chosen; `None`: the lowest loss all models reached.
pub fn chosen_target(
    target_loss: Option<f64>,
    until_loss: Option<f64>,
) -> Option<(f64, &'static str)> {
    match (target_loss, until_loss) {
        (Some(l), _) => Some((l, TARGET_GIVEN)),
        (None, Some(l)) => Some((l, TARGET_UNTIL)),
        (None, None) => None,
    }
}

/// A figure with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    /// [low, high]: the 2.5th and 97.5th percentiles of the bootstrap replicates, widened to
    /// hold `mean` where the replicates lie to one side of it.
    pub ci95: [f64; 2],
    /// True when more than 2.5% of the replicates never reached the target within the run:
    /// `ci95[1]` is then the figure at the end of the run, a lower bound of the true high end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_above: bool,
}

/// One model's cost to the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelToTarget {
    pub model: String,
    pub role: Role,
    /// Whether the model's validation loss reached the target within the run. The figures are
    /// absent when it did not.
    pub reached: bool,
    /// Energy of the training steps (warm-up included, evaluation excluded), joules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules: Option<Interval>,
    /// The same with the idle baseline's share taken off (absent without an idle window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_idle_subtracted: Option<Interval>,
    /// Executed training FLOPs (forward and backward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<Interval>,
    /// Tokens trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Interval>,
    /// Wall-clock seconds of the training steps (evaluation excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Interval>,
    /// Training steps at the crossing (interpolated between the evals around it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<f64>,
    /// Share of the bootstrap replicates in which the model reached the target.
    pub reached_share: f64,
    /// Lowest and last validation loss of the run.
    pub best_val_loss: f64,
    pub last_val_loss: f64,
}

/// Sparse over dense of the costs to the target, each from the paired replicates (the same
/// eval sequences and the same window pairs for both models); below 1 the sparse model is cheaper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRatio {
    pub joules: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_idle_subtracted: Option<Interval>,
    pub flops: Option<Interval>,
    pub tokens: Option<Interval>,
    pub seconds: Option<Interval>,
}

/// Where the sparse model's validation curve crosses the dense model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadChange {
    /// Training steps at the crossing (interpolated between two evals).
    pub steps: f64,
    /// Whether the sparse model's loss is the lower one after it.
    pub sparse_ahead_after: bool,
}

/// `summary.json`'s `to_target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToTarget {
    /// Validation loss, nats per token.
    pub target_loss: f64,
    /// How it was chosen ([`TARGET_LOWEST_REACHED`], [`TARGET_GIVEN`], [`TARGET_UNTIL`]).
    pub target_from: String,
    /// Source and scope of the joules.
    pub source: Option<EnergySource>,
    pub scope: Option<String>,
    pub models: Vec<ModelToTarget>,
    /// Absent unless the run has both roles and both reached the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<TargetRatio>,
    /// Eval sequences behind each validation loss, resampled by the bootstrap; 0 for folders
    /// written before they were recorded (the intervals then leave the loss's noise out).
    pub val_sequences: usize,
    pub replicates: usize,
    /// Where the two validation curves cross, in training order; empty when one model stayed ahead.
    pub lead_changes: Vec<LeadChange>,
    /// Whether the sparse model's last validation loss is the lower one (absent without both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_ahead_at_end: Option<bool>,
}

impl ToTarget {
    pub fn model(&self, role: Role) -> Option<&ModelToTarget> {
        self.models.iter().find(|m| m.role == role)
    }
}

/// Where a curve first reaches `target`, as a fractional index into `losses`: interpolated
/// linearly between the last point above it and the first at or below it; 0 when the first point
/// is already at or below. `None` when no point reaches it.
pub fn first_reach(losses: &[f64], target: f64) -> Option<f64> {
    let i = losses.iter().position(|&l| l <= target)?;
    if i == 0 || losses[i - 1] == losses[i] {
        return Some(i as f64);
    }
    let f = (losses[i - 1] - target) / (losses[i - 1] - losses[i]);
    Some((i - 1) as f64 + f)
}

/// `values` at a fractional index `x` (linear between neighbours).
pub fn at(values: &[f64], x: f64) -> f64 {
    let i = (x.floor() as usize).min(values.len().saturating_sub(1));
    let f = x - i as f64;
    match values.get(i + 1) {
        Some(&next) if f > 0.0 => values[i] + f * (next - values[i]),
        _ => values[i],
    }
}

fn interval(mean: f64, reps: &[Option<f64>], end: f64) -> Interval {
    let mut v: Vec<f64> = reps
        .iter()
        .map(|r| r.unwrap_or(f64::INFINITY))
        .filter(|x| !x.is_nan())
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| -> f64 {
        if v.is_empty() {
            return mean;
        }
        let x = p * (v.len() - 1) as f64;
        at(&v, x)
    };
    let (lo, hi) = (q(0.025), q(0.975));
    let open_above = !hi.is_finite();
    let hi = if open_above { end.max(mean) } else { hi };
    Interval {
        mean,
        ci95: [lo.min(mean), hi.max(mean)],
        open_above,
    }
}

/// Costs to `target` (or, when `None`, to the lowest validation loss all models reached) from
/// the run's records; `None` when no model has an eval.
pub fn to_target(records: &[Record], target: Option<(f64, &str)>) -> Option<ToTarget> {
    let curves = curves(records);
    if curves.is_empty() || curves.iter().any(|c| c.losses.is_empty()) {
        return None;
    }
    let (source, scope) = records
        .iter()
        .find_map(|r| match r {
            Record::Step(s) if s.phase == Phase::Train => s
                .energy
                .as_ref()
                .map(|e| (Some(e.source), Some(e.scope.clone()))),
            _ => None,
        })
        .unwrap_or((None, None));
    let point: Vec<Vec<f64>> = curves.iter().map(|c| c.losses.clone()).collect();
    let (target_loss, target_from) = match target {
        Some((l, from)) => (l, from.to_string()),
        None => (lowest_reached(&point), TARGET_LOWEST_REACHED.to_string()),
    };
    // Eval sequences: resampled together for every eval of every model (the same sequences
    // each time), so the correlation between evals and between models is kept.
    let units = curves
        .first()
        .and_then(|c| c.units.first())
        .map_or(0, Vec::len);
    let units = if curves
        .iter()
        .all(|c| c.units.first().map(Vec::len) == Some(units))
    {
        units
    } else {
        0
    };
    // Windows of the two models pair up (A then B) when they are as many.
    let paired_windows = curves
        .windows(2)
        .all(|w| w[0].windows.len() == w[1].windows.len());
    let reps = bootstrap(&curves, target, units, paired_windows);
    let models = model_figures(&curves, &reps, target_loss);
    let si = curves.iter().position(|c| c.role == Role::Sparse);
    let di = curves.iter().position(|c| c.role == Role::Dense);
    let ratio = si
        .zip(di)
        .and_then(|(s, d)| sparse_dense_ratio(&reps, s, d));
    let (lead_changes, sparse_ahead_at_end) = match si.zip(di) {
        Some((s, d)) => lead(&curves[s], &curves[d]),
        None => (Vec::new(), None),
    };
    Some(ToTarget {
        target_loss,
        target_from,
        source,
        scope,
        models,
        ratio,
        val_sequences: units,
        replicates: REPLICATES,
        lead_changes,
        sparse_ahead_at_end,
    })
}

/// Where the sparse curve crosses the dense one, at the evals both have (the same step counts).
fn lead(s: &Curve, d: &Curve) -> (Vec<LeadChange>, Option<bool>) {
    let diffs: Vec<(f64, f64)> = s
        .steps
        .iter()
        .zip(&s.losses)
        .filter_map(|(&st, &ls)| {
            let j = d.steps.iter().position(|&x| x == st)?;
            Some((st, ls - d.losses[j]))
        })
        .collect();
    let mut out = Vec::new();
    // The first eval (before training, or at the first eval after it) sets the sign.
    let mut prev: Option<(f64, f64)> = None;
    for &(st, diff) in &diffs {
        if diff == 0.0 {
            continue;
        }
        if let Some((pst, pdiff)) = prev {
            if (pdiff < 0.0) != (diff < 0.0) {
                let f = pdiff / (pdiff - diff);
                out.push(LeadChange {
                    steps: pst + f * (st - pst),
                    sparse_ahead_after: diff < 0.0,
                });
            }
        }
        prev = Some((st, diff));
    }
    (out, diffs.last().map(|&(_, d)| d < 0.0))
}

/// The lowest validation loss every model reached: the best of each curve, the worst of those.
fn lowest_reached(losses: &[Vec<f64>]) -> f64 {
    losses
        .iter()
        .map(|l| l.iter().copied().fold(f64::INFINITY, f64::min))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Each model's cost to the target in each of [`REPLICATES`] replicates (the first the run
/// itself): eval sequences resampled together for all models (`units` of them; 0: not
/// resampled), windows resampled in pairs where the models have as many.
fn bootstrap(
    curves: &[Curve],
    target: Option<(f64, &str)>,
    units: usize,
    paired_windows: bool,
) -> Vec<Vec<Option<Cost>>> {
    let mut rng = crate::data::rng::SplitMix64::new(BOOTSTRAP_SEED);
    let mut reps: Vec<Vec<Option<Cost>>> = vec![Vec::with_capacity(REPLICATES); curves.len()];
    for b in 0..REPLICATES {
        let idx: Vec<usize> = if b == 0 {
            (0..units).collect()
        } else {
            (0..units).map(|_| rng.below(units)).collect()
        };
        let draw = |rng: &mut crate::data::rng::SplitMix64, n: usize| -> Vec<usize> {
            if b == 0 {
                (0..n).collect()
            } else {
                (0..n).map(|_| rng.below(n)).collect()
            }
        };
        let shared = paired_windows.then(|| draw(&mut rng, curves[0].windows.len()));
        let losses: Vec<Vec<f64>> = curves
            .iter()
            .map(|c| {
                if units == 0 || b == 0 {
                    return c.losses.clone();
                }
                c.units
                    .iter()
                    .map(|u| idx.iter().map(|&i| u[i]).sum::<f64>() / units as f64)
                    .collect()
            })
            .collect();
        let t = match target {
            Some((l, _)) => l,
            None => lowest_reached(&losses),
        };
        for (k, c) in curves.iter().enumerate() {
            let pick = match &shared {
                Some(p) => p.clone(),
                None => draw(&mut rng, c.windows.len()),
            };
            let (fj, fi, fs) = rate_factors(&c.windows, &pick);
            let cost = first_reach(&losses[k], t).map(|x| Cost {
                joules: c.joules.as_ref().map(|j| at(j, x) * fj),
                idle_subtracted: c
                    .joules
                    .as_ref()
                    .zip(c.idle_joules.as_ref())
                    .map(|(j, i)| (at(j, x) - at(i, x)) * fi),
                flops: at(&c.flops, x),
                tokens: at(&c.tokens, x),
                seconds: at(&c.seconds, x) * fs,
            });
            reps[k].push(cost);
        }
    }
    reps
}

/// Each model's figures to `target_loss`: the run's own, with intervals over the replicates.
fn model_figures(
    curves: &[Curve],
    reps: &[Vec<Option<Cost>>],
    target_loss: f64,
) -> Vec<ModelToTarget> {
    let figure = |k: usize, f: fn(&Cost) -> Option<f64>, end: Option<f64>| -> Option<Interval> {
        let mean = reps[k][0].as_ref().and_then(f)?;
        let r: Vec<Option<f64>> = reps[k].iter().map(|c| c.as_ref().and_then(f)).collect();
        Some(interval(mean, &r, end.unwrap_or(mean)))
    };
    curves
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let reached = reps[k][0].is_some();
            let last = |v: &[f64]| v.last().copied();
            let g = |f: fn(&Cost) -> Option<f64>, end: Option<f64>| {
                if reached {
                    figure(k, f, end)
                } else {
                    None
                }
            };
            let end_j = c.joules.as_deref().and_then(last);
            let end_i = c
                .joules
                .as_deref()
                .zip(c.idle_joules.as_deref())
                .and_then(|(j, i)| Some(last(j)? - last(i)?));
            ModelToTarget {
                model: c.model.clone(),
                role: c.role,
                reached,
                joules: g(|c| c.joules, end_j),
                joules_idle_subtracted: g(|c| c.idle_subtracted, end_i),
                flops: g(|c| Some(c.flops), last(&c.flops)),
                tokens: g(|c| Some(c.tokens), last(&c.tokens)),
                seconds: g(|c| Some(c.seconds), last(&c.seconds)),
                steps: first_reach(&c.losses, target_loss).map(|x| at(&c.steps, x)),
                reached_share: reps[k].iter().filter(|c| c.is_some()).count() as f64
                    / REPLICATES as f64,
                best_val_loss: c.losses.iter().copied().fold(f64::INFINITY, f64::min),
                last_val_loss: c.losses.last().copied().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// Sparse over dense, per figure, with intervals; `None` unless both reached the target.
fn sparse_dense_ratio(reps: &[Vec<Option<Cost>>], s: usize, d: usize) -> Option<TargetRatio> {
    if reps[s][0].is_none() || reps[d][0].is_none() {
        return None;
    }
    let r = |f: fn(&Cost) -> Option<f64>| -> Option<Interval> {
        let one = |i: usize| -> Option<f64> {
            let (a, b) = (f(reps[s][i].as_ref()?)?, f(reps[d][i].as_ref()?)?);
            (b > 0.0).then(|| a / b)
        };
        let mean = one(0)?;
        // A replicate where only the dense model reached the target has the sparse model
        // behind without bound; one where only the sparse model did, ahead (ratio 0).
        let v: Vec<Option<f64>> = (0..REPLICATES)
            .map(|i| match (&reps[s][i], &reps[d][i]) {
                (Some(_), None) => Some(0.0),
                (None, Some(_)) => None,
                _ => one(i),
            })
            .collect();
        Some(interval(mean, &v, mean))
    };
    Some(TargetRatio {
        joules: r(|c| c.joules),
        joules_idle_subtracted: r(|c| c.idle_subtracted),
        flops: r(|c| Some(c.flops)),
        tokens: r(|c| Some(c.tokens)),
        seconds: r(|c| Some(c.seconds)),
    })
}

mod curves;
#[cfg(test)]
mod tests;

use curves::{curves, rate_factors, Cost, Curve};
