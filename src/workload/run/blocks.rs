//! Windows of steps: one model's block of steps in one energy window, a pair of blocks (A then
//! B), the lengthening of a phase too short for its sensor, and validation.

use super::super::{StepOutcome, Workload};
use super::{Ctx, RunPlan};
use crate::meter::{
    attribute_by_duration, block_steps, Meter, BLOCK_MARGIN, SAFE_UPDATES_PER_WINDOW,
};
use crate::runlog::{
    unmeasured_window_warning, Energy, EvalRecord, HostEnergy, Record, StepRecord, WindowInfo,
};
use crate::vocab::Phase;

/// Counters per model and phase, for step indices and warm-up.
#[derive(Default)]
pub(super) struct Counts {
    steps: std::collections::BTreeMap<(String, Phase), u64>,
    train_tokens: std::collections::BTreeMap<String, (u64, f64, f64)>,
    /// Seconds of every step so far, per model and phase: the timing blocks are sized from.
    seconds: std::collections::BTreeMap<(String, Phase), (u64, f64)>,
}

impl Counts {
    /// Mean seconds of `model`'s steps of `phase` so far.
    pub(super) fn mean_step_s(&self, model: &str, phase: Phase) -> Option<f64> {
        let (n, s) = *self.seconds.get(&(model.to_string(), phase))?;
        (n > 0).then(|| s / n as f64)
    }
}

/// Steps per window for `phase`, from the shorter of the two models' mean step so far (so both
/// models' windows are long enough); 1 before either has a timed step.
pub(super) fn phase_block(
    ctx: &Ctx,
    counts: &Counts,
    a: &dyn Workload,
    b: &dyn Workload,
    phase: Phase,
) -> u64 {
    let (Some(sa), Some(sb)) = (
        counts.mean_step_s(a.name(), phase),
        counts.mean_step_s(b.name(), phase),
    ) else {
        return 1;
    };
    block_steps(sa.min(sb), ctx.update_period.as_ref())
}

/// A step done inside a window, waiting for the window's joules.
pub(super) struct Done {
    phase: Phase,
    out: StepOutcome,
    seconds: f64,
    t_s: f64,
}

pub(super) fn timed_step(ctx: &Ctx, w: &mut dyn Workload, phase: Phase) -> anyhow::Result<Done> {
    let t0 = ctx.clock.now();
    let out = w.step(phase)?;
    // The step ends when its work does, not when its kernels are queued.
    w.synchronize()?;
    Ok(Done {
        phase,
        out,
        seconds: ctx.clock.since(t0).as_secs_f64(),
        t_s: ctx.t(),
    })
}

/// How many steps one window holds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Size {
    /// Exactly this many (at least 1).
    Steps(u64),
    /// Steps until the window has lasted `seconds`, at most `max_steps` (more if `may_exceed`,
    /// until it has lasted `seconds`: a lengthened phase grows by those steps); where the steps
    /// left after that could not fill a window of their own, those too.
    Until {
        seconds: f64,
        max_steps: u64,
        may_exceed: bool,
    },
}

/// Steps of `phase` by `w` in one window, as many as `size` says (decode steps refill the cache
/// with a prefill inside the window where it is full; that prefill is recorded as a prefill
/// step of the same window). The window's joules are split among the steps by duration. A
/// window whose sensor reads fail is recorded as unmeasured (steps without energy) and the run
/// goes on. Returns the steps of `phase` run.
pub(super) fn measured_block(
    ctx: &mut Ctx,
    counts: &mut Counts,
    w: &mut dyn Workload,
    phase: Phase,
    size: Size,
    warmup_steps: u64,
) -> anyhow::Result<u64> {
    let window = ctx.meter.begin();
    let host_window = ctx.host.map(Meter::begin);
    let t0 = ctx.clock.now();
    let mut done = Vec::new();
    let mut n = 0u64;
    loop {
        match size {
            Size::Steps(m) if n >= m.max(1) => break,
            Size::Until {
                seconds,
                max_steps,
                may_exceed,
            } => {
                let elapsed = ctx.clock.since(t0).as_secs_f64();
                if n >= max_steps.max(1) && !(may_exceed && elapsed < seconds) {
                    break;
                }
                if n > 0 && elapsed >= seconds {
                    let rest_s = max_steps.saturating_sub(n) as f64 * elapsed / n as f64;
                    if rest_s >= seconds {
                        break;
                    }
                }
            }
            Size::Steps(_) => {}
        }
        if phase == Phase::Decode && !w.can_decode() {
            done.push(timed_step(ctx, w, Phase::Prefill)?);
        }
        done.push(timed_step(ctx, w, phase)?);
        n += 1;
    }
    // The last step synchronised: the window closes after the work.
    let energy = ctx.meter.end(window);
    // The host's window closes after the main one: the two differ by one read.
    let host = match (ctx.host, host_window) {
        (Some(m), Some(hw)) => m.end(hw).ok(),
        _ => None,
    };
    let index = ctx.next_window;
    ctx.next_window += 1;
    let seconds: Vec<f64> = done.iter().map(|d| d.seconds).collect();
    let (shares, idle_shares, e) = match energy {
        Ok(e) => {
            let shares = attribute_by_duration(e.joules, &seconds);
            let idle = ctx
                .idle_power_w
                .map(|p| attribute_by_duration(p * e.seconds, &seconds));
            (shares, idle, Some(e))
        }
        Err(err) => {
            ctx.log(
                "warn",
                unmeasured_window_warning(w.name(), index, done.len(), phase, &err),
            )?;
            (Vec::new(), None, None)
        }
    };
    let info = e.as_ref().map(|e| WindowInfo {
        index,
        steps: done.len() as u64,
        seconds: e.seconds,
        updates: ctx.update_period.map(|p| e.seconds / p.period_s),
    });
    let host_shares = host
        .as_ref()
        .map(|h| attribute_by_duration(h.joules, &seconds));
    for (j, d) in done.into_iter().enumerate() {
        let energy = e.as_ref().map(|e| Energy {
            joules: shares[j],
            idle_joules: idle_shares.as_ref().map(|s| s[j]),
            source: e.source,
            scope: e.scope.clone(),
            window: info.clone(),
            host: host.as_ref().zip(host_shares.as_ref()).map(|(h, s)| {
                Box::new(HostEnergy {
                    joules: s[j],
                    source: h.source,
                    scope: h.scope.clone(),
                })
            }),
        });
        record_step(ctx, counts, w, d, energy, warmup_steps)?;
    }
    ctx.flush_samples()?;
    Ok(n)
}

/// One block of each model: `a`'s window runs steps until it lasts [`BLOCK_MARGIN`] x the safe
/// window, scaled by how much longer `a`'s steps are than `b`'s (so that `b`'s window of as many
/// steps is long enough too), at most `remaining` steps; `b` then runs the same number. Timing
/// `a`'s window by the clock, not by a count from the warm-up steps, keeps windows long enough
/// when the warm-up ran slower than the steps after it. Per-step windows (`blocks` false, or
/// `k` = 1 for this phase) run one step each. A lengthened phase (`may_exceed`) lets `a`'s
/// window run past `remaining` until it is long enough. Returns the steps each model ran.
#[allow(clippy::too_many_arguments)]
pub(super) fn pair_block(
    ctx: &mut Ctx,
    counts: &mut Counts,
    a: &mut dyn Workload,
    b: &mut dyn Workload,
    phase: Phase,
    remaining: u64,
    warmup_steps: u64,
    blocks: bool,
    may_exceed: bool,
) -> anyhow::Result<u64> {
    let k = phase_block(ctx, counts, a, b, phase);
    let size = match (blocks && k > 1, ctx.update_period) {
        (true, Some(p)) => {
            let sa = counts.mean_step_s(a.name(), phase).unwrap_or(0.0);
            let sb = counts.mean_step_s(b.name(), phase).unwrap_or(0.0);
            let ratio = if sb > 0.0 { (sa / sb).max(1.0) } else { 1.0 };
            Size::Until {
                seconds: BLOCK_MARGIN * p.min_window_s() * ratio,
                max_steps: remaining,
                may_exceed,
            }
        }
        _ => Size::Steps(1),
    };
    let n = measured_block(ctx, counts, a, phase, size, warmup_steps)?;
    measured_block(ctx, counts, b, phase, Size::Steps(n), warmup_steps)?;
    Ok(n)
}

pub(super) fn record_step(
    ctx: &mut Ctx,
    counts: &mut Counts,
    w: &dyn Workload,
    d: Done,
    energy: Option<Energy>,
    warmup_steps: u64,
) -> anyhow::Result<()> {
    let Done {
        phase,
        out,
        seconds,
        t_s,
    } = d;
    let key = (w.name().to_string(), phase);
    let index = *counts.steps.get(&key).unwrap_or(&0);
    counts.steps.insert(key.clone(), index + 1);
    let acc = counts.seconds.entry(key).or_default();
    acc.0 += 1;
    acc.1 += seconds;
    let flops = out.flops.total();
    if phase == Phase::Train {
        let acc = counts.train_tokens.entry(w.name().to_string()).or_default();
        acc.0 += out.tokens;
        acc.1 += flops;
        acc.2 += energy.as_ref().map_or(0.0, |e| e.joules);
    }
    if let Some(l) = out.loss {
        if !l.is_finite() {
            ctx.log("warn", format!("{}: loss is {l} at step {index}", w.name()))?;
        }
    }
    if out.dropped > 0 {
        ctx.log(
            "warn",
            format!(
                "{}: {} expert assignments dropped by the capacity limit",
                w.name(),
                out.dropped
            ),
        )?;
    }
    let rec = StepRecord {
        t_s,
        model: w.name().to_string(),
        role: w.role(),
        phase,
        step: index,
        warmup: index < warmup_steps,
        tokens: out.tokens,
        seconds,
        flops,
        flops_by_component: out.flops.by_component.clone(),
        energy,
        loss: out.loss,
        aux_loss: out.aux_loss,
        expert_tokens: out.expert_tokens,
        dropped: out.dropped,
        domain_expert_tokens: out.domain_expert_tokens,
    };
    ctx.progress.step(&rec);
    ctx.emit(Record::Step(rec))
}

/// After the warm-up of `phase`: the measured steps per model it should have so each model
/// fills `plan.min_windows` windows of `k` steps, when that is more than `planned` and costs
/// at most `plan.max_lengthen_s`; else `planned`, with a note either way when it falls short.
/// The flag says the phase was lengthened (its windows may then run a few steps more, where
/// the warm-up's timing gave too small a `k`).
pub(super) fn lengthened(
    ctx: &mut Ctx,
    counts: &Counts,
    plan: &RunPlan,
    a: &dyn Workload,
    b: &dyn Workload,
    phase: Phase,
    planned: u64,
) -> anyhow::Result<(u64, bool)> {
    let k = phase_block(ctx, counts, a, b, phase);
    let want = k.saturating_mul(plan.min_windows.max(1));
    if k <= 1 || planned >= want || planned == 0 {
        return Ok((planned, false));
    }
    let step_s = counts.mean_step_s(a.name(), phase).unwrap_or(0.0)
        + counts.mean_step_s(b.name(), phase).unwrap_or(0.0);
    let extra_s = (want - planned) as f64 * step_s;
    let name = phase.label();
    let period_ms = ctx.update_period.map_or(0.0, |p| p.period_s * 1e3);
    if extra_s <= plan.max_lengthen_s {
        ctx.log(
            "info",
            format!(
                "{name}: {want} measured steps per model instead of {planned}, so each model fills \
                 {} windows of {k} steps (at least {SAFE_UPDATES_PER_WINDOW} updates of the \
                 sensor's {period_ms:.1} ms counter each); {extra_s:.1} s more",
                plan.min_windows.max(1)
            ),
        )?;
        Ok((want, true))
    } else {
        ctx.log(
            "warn",
            format!(
                "{name}: {planned} measured steps per model cannot fill {} windows of {k} steps \
                 (at least {SAFE_UPDATES_PER_WINDOW} updates of the sensor's {period_ms:.1} ms \
                 counter); lengthening would add {extra_s:.1} s, over the {:.1} s allowed: its \
                 energy figures are unresolved",
                plan.min_windows.max(1),
                plan.max_lengthen_s
            ),
        )?;
        Ok((planned, false))
    }
}

/// Validates `w` and records it; returns the validation loss.
pub(super) fn evaluate(
    ctx: &mut Ctx,
    counts: &Counts,
    w: &mut dyn Workload,
    steps: u64,
) -> anyhow::Result<f64> {
    let val_losses = w.validate()?;
    anyhow::ensure!(
        !val_losses.is_empty(),
        "{}: validation returned no loss",
        w.name()
    );
    let val_loss = val_losses.iter().sum::<f64>() / val_losses.len() as f64;
    let (tokens, flops, joules) = counts
        .train_tokens
        .get(w.name())
        .copied()
        .unwrap_or_default();
    let rec = EvalRecord {
        t_s: ctx.t(),
        model: w.name().to_string(),
        role: w.role(),
        train_steps: steps,
        train_tokens: tokens,
        train_flops: flops,
        train_joules: Some(joules),
        val_loss,
        val_losses,
    };
    ctx.progress.note(&format!(
        "{} after {steps} steps: validation loss {val_loss:.4}",
        w.name()
    ));
    ctx.emit(Record::Eval(rec))?;
    Ok(val_loss)
}
