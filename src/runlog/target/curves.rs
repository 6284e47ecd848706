//! One model's training curve (its evals and the cumulative cost at each) and its measured
//! windows, read from the records; the resampling factors of one bootstrap replicate.

use std::collections::BTreeMap;

use super::super::record::{EvalRecord, Record, StepRecord};
use crate::vocab::{Phase, Role};

/// One model's evals and the cumulative cost of its training at each of them.
pub(super) struct Curve {
    pub(super) role: Role,
    pub(super) model: String,
    pub(super) steps: Vec<f64>,
    pub(super) losses: Vec<f64>,
    /// Per eval: the loss of each eval sequence (empty when not recorded).
    pub(super) units: Vec<Vec<f64>>,
    pub(super) tokens: Vec<f64>,
    pub(super) flops: Vec<f64>,
    /// Absent when a step before some eval has no energy (an unmeasured window).
    pub(super) joules: Option<Vec<f64>>,
    pub(super) idle_joules: Option<Vec<f64>>,
    pub(super) seconds: Vec<f64>,
    pub(super) windows: Vec<Window>,
}

/// Cumulative cost of a model's first n training steps.
#[derive(Clone, Copy)]
pub(super) struct Cum {
    pub(super) tokens: f64,
    pub(super) flops: f64,
    pub(super) joules: Option<f64>,
    pub(super) idle_joules: Option<f64>,
    pub(super) seconds: f64,
}

/// One measured training window (steps sharing a window index).
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub(super) index: Option<u64>,
    pub(super) joules: f64,
    pub(super) idle_joules: Option<f64>,
    pub(super) seconds: f64,
    pub(super) tokens: u64,
}

pub(super) fn curves(records: &[Record]) -> Vec<Curve> {
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
pub(super) struct Cost {
    pub(super) joules: Option<f64>,
    pub(super) idle_subtracted: Option<f64>,
    pub(super) flops: f64,
    pub(super) tokens: f64,
    pub(super) seconds: f64,
}

/// Rates of one replicate's resampled windows over the run's own: (J/token, idle-subtracted
/// J/token, s/token), each as a factor on the run's cumulative figures.
pub(super) fn rate_factors(w: &[Window], pick: &[usize]) -> (f64, f64, f64) {
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
