//! The measured run: an idle window for the baseline power, then training steps of the sparse
//! and the dense model alternating A B A B, validation along the way, then prefill and decode
//! steps alternating the same way. Steps are measured by energy windows and written to the run
//! folder as they happen; a viewer (the dashboard) gets the same records over a channel.
//!
//! A window must span [`SAFE_UPDATES_PER_WINDOW`] updates of the sensor's counter. Where a step
//! is shorter than that, blocks of steps alternate (k of A in one window, then k of B): whether
//! to block comes from the steps of that phase timed so far ([`block_steps`]); A's window then
//! runs until it is long enough by the clock, and B runs as many steps ([`pair_block`]). The
//! window's joules are split among its steps in proportion to their seconds. Warm-up steps keep their own windows
//! and give the first timing. A phase too short to fill [`RunPlan::min_windows`] such windows
//! per model is lengthened when that costs at most [`RunPlan::max_lengthen_s`]; otherwise its
//! windows stay short and the summary and report say the figure is unresolved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::{RunEvent, StepOutcome, Workload};
use crate::meter::{
    attribute_by_duration, block_steps, Meter, UpdatePeriod, BLOCK_MARGIN, SAFE_UPDATES_PER_WINDOW,
};
use crate::runlog::{
    summarize, Energy, EvalRecord, HostEnergy, IdleBaseline, IdleRecord, IdleWhen, Record,
    RunSummary, RunWriter, StepRecord, WindowInfo,
};
use crate::vocab::Phase;

/// How many steps of what.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// Training steps per model (warm-up included).
    pub train_steps: u64,
    /// The first steps of each model and phase, recorded but left out of summaries.
    pub warmup_steps: u64,
    pub prefill_steps: u64,
    pub decode_steps: u64,
    pub idle_seconds: f64,
    /// Validate both models every this many training steps (and after the last).
    pub eval_every: u64,
    /// The peak the summary's utilisation divides by (the run header's `machine.peak`).
    pub peak: Option<crate::runlog::RunPeak>,
    /// The sensor's counter update period, measured at the start; `None` (the estimate, a
    /// sensor without a counter) keeps one window per step.
    pub update_period: Option<UpdatePeriod>,
    /// Windows per model and phase a phase is lengthened (more steps) to fill, when its
    /// planned steps cannot fill them with windows of the safe length.
    pub min_windows: u64,
    /// The most seconds lengthening may add to one phase (both models); a phase that would
    /// need more keeps its planned steps and its figure is reported as unresolved.
    pub max_lengthen_s: f64,
    /// The stop rule: training ends at the first eval where every model's validation loss is at
    /// or below this (`train_steps` stays the cap). Both models train, alternating, until both
    /// have reached it, so neither runs alone on the machine; each one's cost is read at its
    /// own first crossing.
    pub until_loss: Option<f64>,
    /// The target of `summary.json`'s `to_target` [default: `until_loss`, else the lowest
    /// validation loss all models reached].
    pub target_loss: Option<f64>,
}

impl RunPlan {
    /// The to-target loss and how it was chosen, when the plan sets one.
    pub fn target(&self) -> Option<(f64, &'static str)> {
        crate::runlog::chosen_target(self.target_loss, self.until_loss)
    }
}

/// Shapes of `sparsewatt run` a user picks by name; explicit flags override their figures.
/// Both models get the same steps, evals, data and seed whatever the preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A few minutes on a 2-core CPU: enough steps for both models to cross a common
    /// validation loss.
    Default,
    /// Four times the steps, an eval every 20: where, or whether, the sparse model pulls ahead
    /// later in training (docs/report.md gives its duration).
    Long,
}

impl Preset {
    /// Training steps per model (warm-up included).
    pub fn steps(self) -> u64 {
        match self {
            Preset::Default => 200,
            Preset::Long => 800,
        }
    }

    /// Validate both models every this many training steps.
    pub fn eval_every(self) -> u64 {
        match self {
            Preset::Default => 10,
            Preset::Long => 20,
        }
    }
}

/// Default of [`RunPlan::min_windows`].
pub const DEFAULT_MIN_WINDOWS: u64 = 2;
/// Default of [`RunPlan::max_lengthen_s`].
pub const DEFAULT_MAX_LENGTHEN_S: f64 = 20.0;

/// Where the run stands, shared with whoever prints progress.
pub trait Progress {
    fn step(&mut self, r: &StepRecord);
    fn note(&mut self, message: &str);
}

/// Progress printed nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&mut self, _: &StepRecord) {}
    fn note(&mut self, _: &str) {}
}

struct Ctx<'a> {
    meter: &'a Meter,
    /// The host CPU beside a GPU run's meter (RAPL), read over the same windows.
    host: Option<&'a Meter>,
    writer: &'a mut RunWriter,
    events: Option<&'a Sender<RunEvent>>,
    progress: &'a mut dyn Progress,
    epoch: Instant,
    records: Vec<Record>,
    idle_power_w: Option<f64>,
    update_period: Option<UpdatePeriod>,
    next_window: u64,
}

impl Ctx<'_> {
    fn t(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn emit(&mut self, r: Record) -> anyhow::Result<()> {
        self.writer.append(&r)?;
        if let Some(tx) = self.events {
            // A viewer that has gone away must not stop the measurement.
            let _ = tx.send(RunEvent::Record(Box::new(r.clone())));
        }
        self.records.push(r);
        Ok(())
    }

    fn flush_samples(&mut self) -> anyhow::Result<()> {
        for s in self.meter.take_samples() {
            self.emit(Record::Sample(s))?;
        }
        self.writer.flush()?;
        Ok(())
    }

    fn log(&mut self, level: &str, message: String) -> anyhow::Result<()> {
        self.progress.note(&message);
        let t_s = self.t();
        self.emit(Record::Log {
            t_s,
            level: level.into(),
            message,
        })
    }
}

/// Counters per model and phase, for step indices and warm-up.
#[derive(Default)]
struct Counts {
    steps: std::collections::BTreeMap<(String, Phase), u64>,
    train_tokens: std::collections::BTreeMap<String, (u64, f64, f64)>,
    /// Seconds of every step so far, per model and phase: the timing blocks are sized from.
    seconds: std::collections::BTreeMap<(String, Phase), (u64, f64)>,
}

impl Counts {
    /// Mean seconds of `model`'s steps of `phase` so far.
    fn mean_step_s(&self, model: &str, phase: Phase) -> Option<f64> {
        let (n, s) = *self.seconds.get(&(model.to_string(), phase))?;
        (n > 0).then(|| s / n as f64)
    }
}

/// Steps per window for `phase`, from the shorter of the two models' mean step so far (so both
/// models' windows are long enough); 1 before either has a timed step.
fn phase_block(
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
struct Done {
    phase: Phase,
    out: StepOutcome,
    seconds: f64,
    t_s: f64,
}

fn timed_step(ctx: &Ctx, w: &mut dyn Workload, phase: Phase) -> anyhow::Result<Done> {
    let t0 = Instant::now();
    let out = w.step(phase)?;
    // The step ends when its work does, not when its kernels are queued.
    w.synchronize()?;
    Ok(Done {
        phase,
        out,
        seconds: t0.elapsed().as_secs_f64(),
        t_s: ctx.t(),
    })
}

/// How many steps one window holds.
#[derive(Debug, Clone, Copy)]
enum Size {
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
fn measured_block(
    ctx: &mut Ctx,
    counts: &mut Counts,
    w: &mut dyn Workload,
    phase: Phase,
    size: Size,
    warmup_steps: u64,
) -> anyhow::Result<u64> {
    let window = ctx.meter.begin();
    let host_window = ctx.host.map(Meter::begin);
    let t0 = Instant::now();
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
                let elapsed = t0.elapsed().as_secs_f64();
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
                format!(
                    "{}: window {index} ({} {} steps) unmeasured: {err}",
                    w.name(),
                    done.len(),
                    phase.label()
                ),
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
fn pair_block(
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

fn record_step(
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
fn lengthened(
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
fn evaluate(
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

/// Run `plan` on the two models, measuring with `meter`, writing to `writer` and, if given,
/// sending every record to `events`. Returns the summary, also written as `summary.json`.
/// `stop` ends the run cleanly between two steps (Ctrl-C, the dashboard's `q`).
#[allow(clippy::too_many_arguments)]
pub fn execute(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    meter: &Meter,
    host: Option<&Meter>,
    writer: &mut RunWriter,
    events: Option<&Sender<RunEvent>>,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    epoch: Instant,
) -> anyhow::Result<RunSummary> {
    let mut ctx = Ctx {
        meter,
        host,
        writer,
        events,
        progress,
        epoch,
        records: Vec::new(),
        idle_power_w: None,
        update_period: plan.update_period,
        next_window: 0,
    };
    let result = run_phases(plan, sparse, dense, &mut ctx, stop);
    let reason = match &result {
        Ok(()) if stop.load(Ordering::SeqCst) => "stopped by the user".to_string(),
        Ok(()) => "finished".to_string(),
        Err(e) => format!("failed: {e:#}"),
    };
    if let Err(e) = &result {
        let _ = ctx.log("error", format!("{e:#}"));
    }
    let _ = ctx.flush_samples();
    let overhead = ctx.meter.overhead_fraction();
    let _ = ctx.log(
        if overhead > 0.01 { "warn" } else { "info" },
        format!(
            "meter overhead: the sampler spent {:.3}% of the run's wall time reading the sensor",
            overhead * 100.0
        ),
    );
    let (errors, last) = ctx.meter.read_errors();
    if errors > 0 {
        let _ = ctx.log(
            "warn",
            format!(
                "{errors} sensor readings failed and were skipped (last: {})",
                last.unwrap_or_default()
            ),
        );
    }
    let t_s = ctx.t();
    ctx.emit(Record::End { t_s, reason })?;
    ctx.writer.flush()?;
    let summary = summarize(&ctx.records)
        .with_peak(plan.peak.as_ref())
        .with_target(&ctx.records, plan.target());
    let path = ctx.writer.dir().join(crate::runlog::SUMMARY_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    result.map(|()| summary)
}

fn run_phases(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    ctx: &mut Ctx,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // The idle baseline: nothing runs but the sampler, before the workload and after it.
    if plan.idle_seconds > 0.0 {
        ctx.idle_power_w = measure_idle(ctx, plan.idle_seconds, IdleWhen::Before, stop)?;
    }
    run_workload(plan, sparse, dense, ctx, stop)?;
    if plan.idle_seconds > 0.0 && ctx.idle_power_w.is_some() && !stop.load(Ordering::SeqCst) {
        measure_idle(ctx, plan.idle_seconds, IdleWhen::After, stop)?;
    }
    Ok(())
}

/// The shortest idle sub-window: its spread is meaningful where the sensor resolves it.
const MIN_IDLE_SUBWINDOW_S: f64 = 0.2;
/// Sub-windows of one idle window, at most.
const MAX_IDLE_SUBWINDOWS: usize = 10;

/// How many equal sub-windows an idle window of `seconds` is read in: each long enough for the
/// sensor (its safe window, [`MIN_IDLE_SUBWINDOW_S`] at least), one at least.
fn idle_subwindows(seconds: f64, period: Option<&UpdatePeriod>) -> usize {
    let min = period
        .map_or(0.0, UpdatePeriod::min_window_s)
        .max(MIN_IDLE_SUBWINDOW_S);
    // The epsilon keeps 0.6 / 0.2 at 3, not 2.9999.
    ((seconds / min + 1e-9).floor() as usize).clamp(1, MAX_IDLE_SUBWINDOWS)
}

/// Measure an idle window of `seconds` in sub-windows and record it; returns its mean power, or
/// `None` (logged) when the sensor could not be read or the user stopped the run.
fn measure_idle(
    ctx: &mut Ctx,
    seconds: f64,
    when: IdleWhen,
    stop: &AtomicBool,
) -> anyhow::Result<Option<f64>> {
    let stopped = || stop.load(Ordering::SeqCst);
    let label = match when {
        IdleWhen::Before => "before",
        IdleWhen::After => "after",
    };
    ctx.progress.note(&format!(
        "measuring the idle baseline {label} the workload for {seconds:.1} s"
    ));
    let n = idle_subwindows(seconds, ctx.update_period.as_ref());
    let (mut joules, mut total_s, mut powers) = (0.0, 0.0, Vec::with_capacity(n));
    let mut first = None;
    for _ in 0..n {
        let w = ctx.meter.begin();
        let until = Instant::now() + Duration::from_secs_f64(seconds / n as f64);
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if stopped() {
            return Ok(None);
        }
        match ctx.meter.end(w) {
            Ok(e) if e.seconds > 0.0 => {
                joules += e.joules;
                total_s += e.seconds;
                powers.push(e.joules / e.seconds);
                first.get_or_insert((e.source, e.scope));
            }
            Ok(_) => {}
            Err(err) => {
                ctx.log(
                    "warn",
                    format!("an idle sub-window {label} the workload is unmeasured: {err}"),
                )?;
            }
        }
    }
    let Some((source, scope)) = first else {
        ctx.log(
            "warn",
            format!("the idle window {label} the workload is unmeasured, no baseline"),
        )?;
        return Ok(None);
    };
    let power_w = joules / total_s;
    ctx.emit(Record::Idle(IdleRecord {
        when,
        seconds: total_s,
        joules,
        power_w,
        window_power_w: powers,
        source,
        scope,
    }))?;
    ctx.flush_samples()?;
    let idles = ctx.records.iter().filter_map(|r| match r {
        Record::Idle(i) => Some(i),
        _ => None,
    });
    if let Some(b) = IdleBaseline::from_records(idles).filter(IdleBaseline::drifted) {
        ctx.log(
            "warn",
            format!(
                "the idle baseline drifted by {:.2} W ({:+.0}%) from before the workload to after it; \
                 idle-subtracted figures use both windows pooled, and their intervals carry the spread",
                b.drift_w.unwrap_or_default(),
                b.drift_fraction.unwrap_or_default() * 100.0
            ),
        )?;
    }
    Ok(Some(power_w))
}

/// Training, then inference, in windows the sensor resolves.
fn run_workload(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    ctx: &mut Ctx,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let stopped = || stop.load(Ordering::SeqCst);
    let mut counts = Counts::default();
    if plan.train_steps > 0 && !stopped() {
        evaluate(ctx, &counts, sparse, 0)?;
        evaluate(ctx, &counts, dense, 0)?;
    }
    let eval_every = plan.eval_every.max(1);
    let mut train_steps = plan.train_steps;
    let mut done = 0;
    let (mut sized, mut grow) = (false, false);
    // Whether the stop rule ended training (both models at or below `until_loss`).
    let mut reached = false;
    while done < train_steps {
        if stopped() {
            return Ok(());
        }
        let timed = counts.mean_step_s(sparse.name(), Phase::Train).is_some();
        let blocks = done >= plan.warmup_steps && timed;
        if blocks && !sized {
            // The warm-up (or the first pair) timed the phase: lengthen it if it must.
            let measured = train_steps - done;
            let (want, longer) =
                lengthened(ctx, &counts, plan, sparse, dense, Phase::Train, measured)?;
            train_steps = done + want;
            (sized, grow) = (true, longer);
        }
        let n = pair_block(
            ctx,
            &mut counts,
            sparse,
            dense,
            Phase::Train,
            train_steps - done,
            plan.warmup_steps,
            blocks,
            grow,
        )?;
        let before = done;
        done += n;
        train_steps = train_steps.max(done);
        if done / eval_every > before / eval_every || done == train_steps {
            let ls = evaluate(ctx, &counts, sparse, done)?;
            let ld = evaluate(ctx, &counts, dense, done)?;
            if let Some(l) = plan.until_loss.filter(|&l| ls <= l && ld <= l) {
                reached = true;
                ctx.log(
                    "info",
                    format!(
                        "stop rule: both models reached validation loss {l} after {done} steps \
                         (validation {ls:.4} and {ld:.4}); training ends"
                    ),
                )?;
                break;
            }
        }
    }
    if let Some(l) = plan.until_loss {
        if !reached && !stopped() {
            ctx.log(
                "info",
                format!("stop rule: {train_steps} steps (the cap) done before both models reached validation loss {l}"),
            )?;
        }
    }
    // Inference: one warm-up step of each phase and model (its own window, the phase's first
    // timing), then the measured ones in blocks.
    let infer_warmup = 1;
    let (mut prefills, mut decodes) = (0, 0);
    let mut want_prefill = plan.prefill_steps + infer_warmup;
    let mut want_decode = if plan.decode_steps > 0 {
        plan.decode_steps + infer_warmup
    } else {
        0
    };
    let (mut prefill_sized, mut decode_sized) = (false, false);
    let (mut prefill_grow, mut decode_grow) = (false, false);
    while (prefills < want_prefill || decodes < want_decode) && !stopped() {
        let decode_blocks =
            decode_sized && phase_block(ctx, &counts, sparse, dense, Phase::Decode) > 1;
        // Decode blocks refill the cache inside their windows; per-step decoding refills here.
        let need_prefill = prefills < want_prefill
            || (!decode_blocks && (!sparse.can_decode() || !dense.can_decode()));
        if need_prefill {
            let blocks = prefills >= infer_warmup;
            if blocks && !prefill_sized {
                let measured = want_prefill.saturating_sub(prefills);
                let (want, longer) =
                    lengthened(ctx, &counts, plan, sparse, dense, Phase::Prefill, measured)?;
                want_prefill = prefills + want;
                (prefill_sized, prefill_grow) = (true, longer);
            }
            let n = pair_block(
                ctx,
                &mut counts,
                sparse,
                dense,
                Phase::Prefill,
                want_prefill.saturating_sub(prefills).max(1),
                infer_warmup,
                blocks,
                prefill_grow,
            )?;
            prefills += n;
            want_prefill = want_prefill.max(prefills);
            // Decode continues what this prefill started, until the cache is full.
        }
        while decodes < want_decode && !stopped() {
            let warm = decodes < infer_warmup;
            if !warm && !decode_sized {
                let measured = want_decode - decodes;
                let (want, longer) =
                    lengthened(ctx, &counts, plan, sparse, dense, Phase::Decode, measured)?;
                want_decode = decodes + want;
                (decode_sized, decode_grow) = (true, longer);
            }
            let blocks = !warm && phase_block(ctx, &counts, sparse, dense, Phase::Decode) > 1;
            if !blocks && (!sparse.can_decode() || !dense.can_decode()) {
                break; // a per-step decode needs a prefill of its own window first
            }
            let n = pair_block(
                ctx,
                &mut counts,
                sparse,
                dense,
                Phase::Decode,
                want_decode - decodes,
                infer_warmup,
                !warm,
                decode_grow,
            )?;
            decodes += n;
            want_decode = want_decode.max(decodes);
            if prefills < want_prefill {
                break; // interleave: prefill and decode alternate while both are wanted
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::{MeterError, Reading, Sensor};
    use crate::runlog::read_run;
    use crate::vocab::EnergySource;
    use crate::vocab::Role;
    use std::collections::BTreeMap;

    /// A workload whose steps sleep a fixed time, the first of each phase 3x as long (a slow
    /// warm-up); decode continues a prefill 3 times.
    struct Fake {
        name: &'static str,
        role: Role,
        room: u32,
        synced: u64,
        steps: u64,
        seen: Vec<Phase>,
    }

    impl Workload for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn role(&self) -> Role {
            self.role
        }
        fn step(&mut self, phase: Phase) -> anyhow::Result<StepOutcome> {
            self.steps += 1;
            let ms = match phase {
                Phase::Train => 2,
                Phase::Prefill => 1,
                Phase::Decode => {
                    anyhow::ensure!(self.room > 0, "decode without room");
                    self.room -= 1;
                    1
                }
            };
            if phase == Phase::Prefill {
                self.room = 3;
            }
            let slow = if self.seen.contains(&phase) { 1 } else { 3 };
            self.seen.push(phase);
            std::thread::sleep(Duration::from_millis(ms * slow));
            Ok(StepOutcome {
                tokens: 10,
                loss: (phase == Phase::Train).then_some(1.0),
                ..StepOutcome::default()
            })
        }
        fn validate(&mut self) -> anyhow::Result<Vec<f64>> {
            // Falls with the steps trained, the same for both models.
            let l = 5.0 / (1.0 + self.steps as f64);
            Ok(vec![l * 0.9, l * 1.1])
        }
        fn can_decode(&self) -> bool {
            self.room > 0
        }
        fn synchronize(&mut self) -> anyhow::Result<()> {
            self.synced += 1;
            Ok(())
        }
    }

    /// A plan of one warm-up step, no inference, no idle window and no evaluation but the first
    /// and the last; tests set what they measure.
    fn test_plan() -> RunPlan {
        RunPlan {
            train_steps: 4,
            warmup_steps: 1,
            prefill_steps: 0,
            decode_steps: 0,
            idle_seconds: 0.0,
            eval_every: 1000,
            update_period: None,
            min_windows: 1,
            max_lengthen_s: 1.0,
            peak: None,
            until_loss: None,
            target_loss: None,
        }
    }

    /// An empty temporary folder named for this test and process.
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// `plan` run on two fakes (`a` sparse, `b` dense) metered by `meter` (and `host`), written to
    /// `dir`: the fakes after the run, its summary and the folder read back.
    fn run_fakes(
        plan: &RunPlan,
        meter: &Meter,
        host: Option<&Meter>,
        dir: &std::path::Path,
        epoch: Instant,
    ) -> (Fake, Fake, RunSummary, crate::runlog::RunData) {
        let mut writer = RunWriter::create(dir, &crate::runlog::test_header()).unwrap();
        let fake = |name, role| Fake {
            name,
            role,
            room: 0,
            synced: 0,
            steps: 0,
            seen: Vec::new(),
        };
        let (mut a, mut b) = (fake("a", Role::Sparse), fake("b", Role::Dense));
        let summary = execute(
            plan,
            &mut a,
            &mut b,
            meter,
            host,
            &mut writer,
            None,
            &AtomicBool::new(false),
            &mut Quiet,
            epoch,
        )
        .unwrap();
        drop(writer);
        (a, b, summary, read_run(dir).unwrap())
    }

    /// A counter at 100 W that updates every 5 ms; reads numbered in `fail` fail.
    struct Coarse {
        origin: Instant,
        reads: u64,
        fail: Vec<u64>,
    }

    impl Sensor for Coarse {
        fn source(&self) -> EnergySource {
            EnergySource::Nvml
        }
        fn scope(&self) -> String {
            "coarse".into()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            self.reads += 1;
            if self.fail.contains(&self.reads) {
                return Err(MeterError::Read {
                    reader: "nvml",
                    reason: "flaky".into(),
                });
            }
            let t = (self.origin.elapsed().as_secs_f64() / 0.005).floor() * 0.005;
            Ok(Reading {
                energy_j: Some(100.0 * t),
                ..Reading::default()
            })
        }
    }

    #[test]
    fn short_steps_are_measured_in_blocks_whose_joules_follow_durations() {
        let period = UpdatePeriod {
            period_s: 0.005,
            energy_j: 0.5,
            updates: 10,
        };
        let plan = RunPlan {
            train_steps: 8,
            prefill_steps: 2,
            decode_steps: 2,
            update_period: Some(period),
            max_lengthen_s: 5.0,
            ..test_plan()
        };
        let dir = fresh_dir("sw-blocks");
        let epoch = Instant::now();
        // Read 1: the meter's start; 2 and 3: the first window. Its end fails twice (3, 4).
        let sensor = Coarse {
            origin: epoch,
            reads: 0,
            fail: vec![3, 4],
        };
        let meter = Meter::start(Box::new(sensor), 0.0, epoch);
        let (a, b, _, run) = run_fakes(&plan, &meter, None, &dir, epoch);
        // Every step synchronised before its time was taken.
        assert_eq!((a.synced, b.synced), (a.steps, b.steps));
        let steps: Vec<&StepRecord> = run.steps().collect();
        // The first window's end could not be read: unmeasured, and the run went on.
        assert!(steps[0].energy.is_none() && steps[0].warmup);
        assert!(run.records.iter().any(|r| matches!(r,
            Record::Log { level, message, .. } if level == "warn" && message.contains("unmeasured"))));
        assert!(steps[1..].iter().all(|s| s.energy.is_some()));
        // Windows: one model each, consecutive steps, joules split by duration.
        let mut windows: BTreeMap<u64, Vec<&StepRecord>> = BTreeMap::new();
        for s in &steps[1..] {
            let w = s.energy.as_ref().unwrap().window.as_ref().unwrap();
            windows.entry(w.index).or_default().push(s);
        }
        let mut blocks = 0;
        for (index, ss) in &windows {
            let e0 = ss[0].energy.as_ref().unwrap();
            let w = e0.window.as_ref().unwrap();
            assert_eq!(w.steps as usize, ss.len(), "window {index}");
            assert!(ss.iter().all(|s| s.model == ss[0].model));
            let joules: f64 = ss.iter().map(|s| s.energy.as_ref().unwrap().joules).sum();
            let rate = joules / ss.iter().map(|s| s.seconds).sum::<f64>();
            for s in ss {
                let j = s.energy.as_ref().unwrap().joules;
                assert!(
                    (j / s.seconds - rate).abs() <= 1e-9 * rate,
                    "window {index}"
                );
            }
            if ss.iter().all(|s| !s.warmup) {
                // Measured windows span the safe 20 updates and read 100 W within 10%.
                blocks += 1;
                assert!(ss.len() > 1 && !w.too_short(), "window {index}: {w:?}");
                let watts = joules / w.seconds;
                assert!((watts - 100.0).abs() <= 10.0, "window {index}: {watts} W");
            } else {
                assert_eq!(ss.len(), 1, "warm-up steps keep their own windows");
            }
        }
        // Train, prefill and decode: at least one window per model each (min_windows 1),
        // lengthened; both models run the same steps in each pair of windows.
        assert!(blocks >= 6, "{:?}", windows.keys().collect::<Vec<_>>());
        let train_blocks = |role: Role| -> Vec<u64> {
            windows
                .values()
                .filter(|ss| ss[0].role == role && ss[0].phase == Phase::Train && !ss[0].warmup)
                .map(|ss| ss.len() as u64)
                .collect()
        };
        assert!(!train_blocks(Role::Sparse).is_empty());
        assert_eq!(train_blocks(Role::Sparse), train_blocks(Role::Dense));
        // Decode windows refill the cache inside themselves: prefills sharing a decode window.
        assert!(windows.values().any(|ss| {
            ss.iter().any(|s| s.phase == Phase::Decode)
                && ss.iter().any(|s| s.phase == Phase::Prefill)
        }));
        let summary = summarize(&run.records);
        for m in &summary.models {
            for p in &m.phases {
                assert_eq!((p.windows, p.short_windows), (p.windows.max(1), 0), "{p:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    /// A continuous counter: `energy_j` of the seconds since `origin`.
    struct Continuous {
        origin: Instant,
        source: EnergySource,
        energy_j: Box<dyn Fn(f64) -> f64 + Send>,
    }

    impl Continuous {
        fn new(
            origin: Instant,
            source: EnergySource,
            f: impl Fn(f64) -> f64 + Send + 'static,
        ) -> Self {
            Continuous {
                origin,
                source,
                energy_j: Box::new(f),
            }
        }
    }

    impl Sensor for Continuous {
        fn source(&self) -> EnergySource {
            self.source
        }
        fn scope(&self) -> String {
            "test".into()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            Ok(Reading {
                energy_j: Some((self.energy_j)(self.origin.elapsed().as_secs_f64())),
                ..Reading::default()
            })
        }
    }

    #[test]
    fn the_idle_baseline_is_measured_before_and_after_in_sub_windows_and_drift_is_reported() {
        let plan = RunPlan {
            train_steps: 4,
            idle_seconds: 0.6,
            ..test_plan()
        };
        let dir = fresh_dir("sw-idle");
        let epoch = Instant::now();
        // Power ramps up with time: 10 W + 40 W/s x t.
        let ramp = Continuous::new(epoch, EnergySource::Rapl, |t| 10.0 * t + 20.0 * t * t);
        let meter = Meter::start(Box::new(ramp), 0.0, epoch);
        let (_, _, summary, run) = run_fakes(&plan, &meter, None, &dir, epoch);
        let idles: Vec<&IdleRecord> = run
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Idle(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(idles.len(), 2);
        assert_eq!(
            (idles[0].when, idles[1].when),
            (IdleWhen::Before, IdleWhen::After)
        );
        for i in &idles {
            // 0.6 s in sub-windows of 0.2 s, each reading a higher power than the last (the ramp).
            assert_eq!(i.window_power_w.len(), 3, "{i:?}");
            assert!(i.window_power_w.windows(2).all(|w| w[1] > w[0]), "{i:?}");
            assert!((i.power_w * i.seconds - i.joules).abs() < 1e-9);
        }
        // The ramp: the window before averages about 10 + 40 x 0.3 = 22 W; after is higher.
        assert!(
            (idles[0].power_w - 22.0).abs() < 3.0,
            "{}",
            idles[0].power_w
        );
        let base = summary.idle.as_ref().unwrap();
        let drift = idles[1].power_w - idles[0].power_w;
        assert!(drift > 5.0 && (base.drift_w.unwrap() - drift).abs() < 0.05 * drift);
        assert!(run.records.iter().any(|r| matches!(r,
            Record::Log { level, message, .. } if level == "warn" && message.contains("drifted"))));
        // The after window follows every step.
        let last_step = run.steps().map(|s| s.t_s).fold(0.0, f64::max);
        let after_at = run
            .records
            .iter()
            .position(|r| matches!(r, Record::Idle(i) if i.when == IdleWhen::After))
            .unwrap();
        assert!(run.records[..after_at]
            .iter()
            .filter_map(Record::t_s)
            .any(|t| t >= last_step));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn idle_sub_windows_are_as_long_as_the_sensor_resolves() {
        let coarse = UpdatePeriod {
            period_s: 0.1,
            energy_j: 25.0,
            updates: 5,
        };
        assert_eq!(idle_subwindows(2.0, None), 10);
        assert_eq!(idle_subwindows(0.5, None), 2);
        assert_eq!(idle_subwindows(0.1, None), 1);
        // 20 updates of 100 ms: one 2-second window, two of a 4-second idle.
        assert_eq!(idle_subwindows(2.0, Some(&coarse)), 1);
        assert_eq!(idle_subwindows(4.0, Some(&coarse)), 2);
        assert_eq!(idle_subwindows(100.0, None), MAX_IDLE_SUBWINDOWS);
    }
    #[test]
    fn a_host_meter_beside_the_main_one_is_recorded_as_its_own_component() {
        let plan = RunPlan {
            train_steps: 6,
            prefill_steps: 2,
            ..test_plan()
        };
        let dir = fresh_dir("sw-host");
        let epoch = Instant::now();
        let steady = |watts: f64, source| Continuous::new(epoch, source, move |t| watts * t);
        let meter = Meter::start(Box::new(steady(250.0, EnergySource::Nvml)), 0.0, epoch);
        let host = Meter::start(Box::new(steady(30.0, EnergySource::Rapl)), 0.0, epoch);
        let (_, _, summary, run) = run_fakes(&plan, &meter, Some(&host), &dir, epoch);
        for s in run.steps() {
            let e = s.energy.as_ref().unwrap();
            let h = e.host.as_ref().unwrap();
            assert_eq!(
                (e.source, h.source),
                (EnergySource::Nvml, EnergySource::Rapl)
            );
            // Each meter's own power, split by duration; the host's is not in `joules`.
            let (main_w, host_w) = (e.joules / s.seconds, h.joules / s.seconds);
            assert!((main_w - 250.0).abs() < 25.0, "{main_w} W");
            assert!((host_w - 30.0).abs() < 3.0, "{host_w} W");
        }
        for m in &summary.models {
            for p in &m.phases {
                // Over the same windows and tokens, host over main J/token is 30 W over 250 W.
                let main = p.joules_per_token.as_ref().unwrap().total.mean;
                let r = p.host_joules_per_token.unwrap().mean / main;
                assert!((r - 0.12).abs() < 0.012, "{r}");
                assert_eq!(p.host_source, Some(EnergySource::Rapl));
            }
        }
        let report =
            crate::report::render(&crate::report::build(&run), crate::report::Format::Markdown);
        assert!(report.contains("Host CPU beside the GPU"), "{report}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_stop_rule_ends_training_at_the_first_eval_where_both_models_reached_the_loss() {
        // Fake validation: 5 / (1 + steps so far), for both; <= 1.0 from 4 steps on.
        let plan = RunPlan {
            train_steps: 40,
            eval_every: 2,
            max_lengthen_s: 0.0,
            until_loss: Some(1.0),
            ..test_plan()
        };
        let dir = fresh_dir("sw-until");
        let epoch = Instant::now();
        let sensor = Coarse {
            origin: epoch,
            reads: 0,
            fail: vec![],
        };
        let meter = Meter::start(Box::new(sensor), 0.0, epoch);
        let (_, _, summary, run) = run_fakes(&plan, &meter, None, &dir, epoch);
        for m in ["a", "b"] {
            let trained = run
                .steps()
                .filter(|s| s.model == m && s.phase == Phase::Train)
                .count();
            // Evals at 0, 2 and 4 steps: 5/3 > 1, then 5/5 = 1 <= 1.
            assert_eq!(trained, 4, "{m}");
        }
        assert!(run.records.iter().any(|r| matches!(r,
            Record::Log { message, .. } if message.contains("stop rule: both models reached"))));
        let t = summary.to_target.unwrap();
        assert_eq!(
            (t.target_loss, t.target_from.as_str()),
            (1.0, crate::runlog::TARGET_UNTIL)
        );
        assert!(t.models.iter().all(|m| m.reached && m.joules.is_some()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
