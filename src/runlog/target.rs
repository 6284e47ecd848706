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
use std::collections::BTreeMap;

use super::record::{EvalRecord, Record, StepRecord};
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

/// One model's evals and the cumulative cost of its training at each of them.
struct Curve {
    role: Role,
    model: String,
    steps: Vec<f64>,
    losses: Vec<f64>,
    /// Per eval: the loss of each eval sequence (empty when not recorded).
    units: Vec<Vec<f64>>,
    tokens: Vec<f64>,
    flops: Vec<f64>,
    /// Absent when a step before some eval has no energy (an unmeasured window).
    joules: Option<Vec<f64>>,
    idle_joules: Option<Vec<f64>>,
    seconds: Vec<f64>,
    windows: Vec<Window>,
}

/// Cumulative cost of a model's first n training steps.
#[derive(Clone, Copy)]
struct Cum {
    tokens: f64,
    flops: f64,
    joules: Option<f64>,
    idle_joules: Option<f64>,
    seconds: f64,
}

/// One measured training window (steps sharing a window index).
#[derive(Clone, Copy)]
struct Window {
    index: Option<u64>,
    joules: f64,
    idle_joules: Option<f64>,
    seconds: f64,
    tokens: u64,
}

fn curves(records: &[Record]) -> Vec<Curve> {
    let mut evals: BTreeMap<(Role, String), Vec<&EvalRecord>> = BTreeMap::new();
    let mut steps: BTreeMap<(Role, String), Vec<&StepRecord>> = BTreeMap::new();
    for r in records {
        match r {
            Record::Eval(e) if e.val_loss.is_finite() => {
                evals.entry((e.role, e.model.clone())).or_default().push(e)
            }
            Record::Step(s) if s.phase == Phase::Train => {
                steps.entry((s.role, s.model.clone())).or_default().push(s)
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for ((role, model), mut es) in evals {
        es.sort_by_key(|e| e.train_steps);
        let mut ss = steps.remove(&(role, model.clone())).unwrap_or_default();
        ss.sort_by_key(|s| s.step);
        // Cumulative cost after n steps, n = 0 ..= steps.
        let n = ss.len();
        let zero = Cum {
            tokens: 0.0,
            flops: 0.0,
            joules: Some(0.0),
            idle_joules: Some(0.0),
            seconds: 0.0,
        };
        let mut cum = vec![zero; n + 1];
        for (i, s) in ss.iter().enumerate() {
            let c = cum[i];
            let e = s.energy.as_ref();
            cum[i + 1] = Cum {
                tokens: c.tokens + s.tokens as f64,
                flops: c.flops + s.flops,
                joules: c.joules.zip(e).map(|(j, e)| j + e.joules),
                idle_joules: c
                    .idle_joules
                    .zip(e.and_then(|e| e.idle_joules))
                    .map(|(a, b)| a + b),
                seconds: c.seconds + s.seconds,
            };
        }
        let at_eval = |e: &EvalRecord| cum[(e.train_steps as usize).min(n)];
        let pick = |f: fn(&Cum) -> Option<f64>| {
            es.iter()
                .map(|e| f(&at_eval(e)))
                .collect::<Option<Vec<f64>>>()
        };
        // Measured windows (warm-up left out, as in the per-token figures): steps sharing a
        // window index are one sample.
        let mut windows: Vec<Window> = Vec::new();
        for s in ss.iter().filter(|s| !s.warmup && s.tokens > 0) {
            let Some(e) = &s.energy else { continue };
            let index = e.window.as_ref().map(|w| w.index);
            match windows.last_mut() {
                Some(w) if index.is_some() && w.index == index => {
                    w.joules += e.joules;
                    w.idle_joules = w.idle_joules.zip(e.idle_joules).map(|(a, b)| a + b);
                    w.seconds += s.seconds;
                    w.tokens += s.tokens;
                }
                _ => windows.push(Window {
                    index,
                    joules: e.joules,
                    idle_joules: e.idle_joules,
                    seconds: s.seconds,
                    tokens: s.tokens,
                }),
            }
        }
        let k = es.first().map_or(0, |e| e.val_losses.len());
        let units_ok = k > 1 && es.iter().all(|e| e.val_losses.len() == k);
        out.push(Curve {
            role,
            model,
            steps: es.iter().map(|e| e.train_steps as f64).collect(),
            losses: es.iter().map(|e| e.val_loss).collect(),
            units: if units_ok {
                es.iter().map(|e| e.val_losses.clone()).collect()
            } else {
                Vec::new()
            },
            tokens: pick(|c| Some(c.tokens)).unwrap_or_default(),
            flops: pick(|c| Some(c.flops)).unwrap_or_default(),
            joules: pick(|c| c.joules),
            idle_joules: pick(|c| c.idle_joules),
            seconds: pick(|c| Some(c.seconds)).unwrap_or_default(),
            windows,
        });
    }
    out
}

/// One replicate's costs to the target for one model (`None`: not reached).
#[derive(Clone, Copy)]
struct Cost {
    joules: Option<f64>,
    idle_subtracted: Option<f64>,
    flops: f64,
    tokens: f64,
    seconds: f64,
}

/// Rates of one replicate's resampled windows over the run's own: (J/token, idle-subtracted
/// J/token, s/token), each as a factor on the run's cumulative figures.
fn rate_factors(w: &[Window], pick: &[usize]) -> (f64, f64, f64) {
    let sum = |idx: &mut dyn Iterator<Item = usize>| {
        let mut s = (0.0, 0.0, 0.0);
        let mut n = 0usize;
        for i in idx {
            let x = w[i];
            let t = x.tokens as f64;
            s.0 += x.joules / t;
            s.1 += x.idle_joules.map_or(0.0, |i| (x.joules - i) / t);
            s.2 += x.seconds / t;
            n += 1;
        }
        (s.0 / n as f64, s.1 / n as f64, s.2 / n as f64)
    };
    if w.is_empty() || pick.is_empty() {
        return (1.0, 1.0, 1.0);
    }
    let base = sum(&mut (0..w.len()));
    let re = sum(&mut pick.iter().copied());
    let ratio = |a: f64, b: f64| if b != 0.0 { a / b } else { 1.0 };
    (
        ratio(re.0, base.0),
        ratio(re.1, base.1),
        ratio(re.2, base.2),
    )
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
    let lowest_reached = |losses: &[Vec<f64>]| {
        losses
            .iter()
            .map(|l| l.iter().copied().fold(f64::INFINITY, f64::min))
            .fold(f64::NEG_INFINITY, f64::max)
    };
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
    let figure = |k: usize, f: fn(&Cost) -> Option<f64>, end: Option<f64>| -> Option<Interval> {
        let mean = reps[k][0].as_ref().and_then(f)?;
        let r: Vec<Option<f64>> = reps[k].iter().map(|c| c.as_ref().and_then(f)).collect();
        Some(interval(mean, &r, end.unwrap_or(mean)))
    };
    let models: Vec<ModelToTarget> = curves
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
        .collect();
    let si = curves.iter().position(|c| c.role == Role::Sparse);
    let di = curves.iter().position(|c| c.role == Role::Dense);
    let ratio = si.zip(di).and_then(|(s, d)| {
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
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{test_energy, test_step, Energy};

    fn eval(role: Role, steps: u64, losses: &[f64]) -> Record {
        Record::Eval(EvalRecord {
            t_s: 0.0,
            model: format!("{role:?}"),
            role,
            train_steps: steps,
            train_tokens: 0,
            train_flops: 0.0,
            train_joules: None,
            val_loss: losses.iter().sum::<f64>() / losses.len() as f64,
            val_losses: losses.to_vec(),
        })
    }

    fn train(role: Role, step: u64, joules: f64) -> Record {
        Record::Step(StepRecord {
            step,
            warmup: step == 0,
            tokens: 100,
            seconds: 0.5,
            flops: 1e6,
            energy: Some(Energy {
                idle_joules: Some(0.25 * joules),
                ..test_energy(joules)
            }),
            ..test_step(role, Phase::Train)
        })
    }

    #[test]
    fn the_crossing_is_interpolated_between_the_evals_around_it() {
        // 2.5 lies halfway between 3.0 (index 1) and 2.0 (index 2).
        let x = first_reach(&[4.0, 3.0, 2.0], 2.5).unwrap();
        assert!((x - 1.5).abs() < 1e-12);
        assert!((at(&[100.0, 200.0, 300.0], x) - 250.0).abs() < 1e-9);
        assert!(first_reach(&[4.0, 3.0], 2.0).is_none());
        assert_eq!(first_reach(&[4.0, 3.0], 5.0), Some(0.0));
        assert_eq!(at(&[1.0, 2.0], 1.0), 2.0);
    }

    /// Two models, 4 steps each, evals at 0, 2 and 4 steps on two sequences.
    fn run(sparse_j: f64) -> Vec<Record> {
        let mut r = Vec::new();
        for (role, j, evals) in [
            (Role::Sparse, sparse_j, [[5.0, 5.0], [3.0, 3.2], [2.0, 2.2]]),
            (Role::Dense, 1.0, [[5.0, 5.0], [3.8, 4.0], [2.9, 3.1]]),
        ] {
            for s in 0..4 {
                r.push(train(role, s, j));
            }
            for (k, l) in evals.iter().enumerate() {
                r.push(eval(role, 2 * k as u64, l));
            }
        }
        r
    }

    #[test]
    fn the_default_target_is_the_lowest_loss_both_reached_and_costs_follow_the_records() {
        let t = to_target(&run(2.0), None).unwrap();
        // Dense's best is 3.0 (mean of 2.9 and 3.1); sparse crosses 3.0 between 2 steps (3.1)
        // and 4 steps (2.1): at 2 + 2 x (3.1 - 3.0) / (3.1 - 2.1) = 2.2 steps.
        assert!((t.target_loss - 3.0).abs() < 1e-12);
        assert_eq!(t.target_from, TARGET_LOWEST_REACHED);
        let s = t.model(Role::Sparse).unwrap();
        let x = 2.2;
        assert!((s.steps.unwrap() - x).abs() < 1e-9);
        // Independent: x steps of 100 tokens, 1e6 FLOPs, 2 J (0.5 J idle), 0.5 s each.
        assert!((s.tokens.unwrap().mean - 100.0 * x).abs() < 1e-9);
        assert!((s.flops.unwrap().mean - 1e6 * x).abs() < 1e-3);
        assert!((s.joules.unwrap().mean - 2.0 * x).abs() < 1e-9);
        assert!((s.joules_idle_subtracted.unwrap().mean - 1.5 * x).abs() < 1e-9);
        assert!((s.seconds.unwrap().mean - 0.5 * x).abs() < 1e-9);
        let d = t.model(Role::Dense).unwrap();
        assert!((d.joules.unwrap().mean - 4.0).abs() < 1e-9);
        let r = t.ratio.as_ref().unwrap().joules.unwrap();
        assert!((r.mean - 2.0 * x / 4.0).abs() < 1e-9);
        assert!(r.ci95[0] <= r.mean && r.mean <= r.ci95[1]);
        assert_eq!(t.val_sequences, 2);
        assert_eq!(t.sparse_ahead_at_end, Some(true));
        assert!(t.lead_changes.is_empty());
    }

    #[test]
    fn the_interval_covers_the_eval_sequences_spread_and_a_target_never_reached_has_no_figures() {
        let t = to_target(&run(1.0), Some((2.5, TARGET_GIVEN))).unwrap();
        let s = t.model(Role::Sparse).unwrap();
        assert!(s.reached);
        // Resampling the two sequences: the curve at 2 steps is 3.0, 3.1 or 3.2, at 4 steps
        // 2.0, 2.1 or 2.2, so the crossing of 2.5 lies between these brute-force extremes.
        let cross = |l2: f64, l4: f64| 2.0 + 2.0 * (l2 - 2.5) / (l2 - l4);
        let (lo, hi) = (cross(3.0, 2.0), cross(3.2, 2.2));
        assert!(lo < hi);
        // With two sequences a resample is (0, 0), (0, 1) or (1, 0), or (1, 1), with chances 1/4,
        // 1/2 and 1/4: the 2.5th and 97.5th percentiles are the two extremes, exactly.
        let tokens = s.tokens.unwrap();
        assert!((tokens.ci95[0] - 100.0 * lo).abs() < 1e-9, "{tokens:?}");
        assert!((tokens.ci95[1] - 100.0 * hi).abs() < 1e-9, "{tokens:?}");
        assert!((tokens.mean - 100.0 * cross(3.1, 2.1)).abs() < 1e-9);
        assert_eq!(s.reached_share, 1.0);
        let d = t.model(Role::Dense).unwrap();
        assert!(!d.reached && d.joules.is_none() && d.tokens.is_none());
        assert!(t.ratio.is_none());
        let json = serde_json::to_value(&t).unwrap();
        assert!(json["models"][1].get("joules").is_none());
    }

    #[test]
    fn energy_noise_widens_the_joules_interval_but_not_the_tokens() {
        // No eval sequences recorded: only the windows' spread moves the figures.
        let mut r = run(1.0);
        for rec in &mut r {
            match rec {
                Record::Eval(e) => e.val_losses.clear(),
                Record::Step(s) if s.role == Role::Sparse => {
                    let e = s.energy.as_mut().unwrap();
                    e.joules = if s.step % 2 == 0 { 0.5 } else { 1.5 };
                }
                _ => {}
            }
        }
        let t = to_target(&r, None).unwrap();
        assert_eq!(t.val_sequences, 0);
        let s = t.model(Role::Sparse).unwrap();
        let tok = s.tokens.unwrap();
        assert_eq!(tok.ci95, [tok.mean, tok.mean]);
        let j = s.joules.unwrap();
        assert!(j.ci95[0] < j.mean && j.mean < j.ci95[1], "{j:?}");
    }

    #[test]
    fn curves_that_cross_give_the_step_of_the_change() {
        let mut r = run(1.0);
        // Dense ahead at 2 steps (2.5 against sparse 3.1), behind at 4 (2.9 against 2.1).
        for rec in &mut r {
            if let Record::Eval(e) = rec {
                if e.role == Role::Dense && e.train_steps == 2 {
                    e.val_loss = 2.5;
                    e.val_losses = vec![2.5, 2.5];
                }
            }
        }
        let t = to_target(&r, None).unwrap();
        assert_eq!(t.lead_changes.len(), 1);
        let c = &t.lead_changes[0];
        // diff 0.6 at 2 steps, -0.9 at 4: zero at 2 + 2 x 0.6 / 1.5.
        assert!((c.steps - 2.8).abs() < 1e-9 && c.sparse_ahead_after);
    }
}
