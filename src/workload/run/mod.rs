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
use std::sync::Arc;
use std::time::Instant;

use super::{RunObserver, Workload};
use crate::clock::Clock;
use crate::meter::{Meter, UpdatePeriod};
use crate::runlog::{summarize, IdleWhen, Record, RunSummary, RunWriter, StepRecord};

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
    observers: &'a mut [Box<dyn RunObserver>],
    progress: &'a mut dyn Progress,
    /// The main meter's clock: steps, windows and record times are all on its time.
    clock: Arc<dyn Clock>,
    epoch: Instant,
    records: Vec<Record>,
    idle_power_w: Option<f64>,
    update_period: Option<UpdatePeriod>,
    next_window: u64,
}

impl Ctx<'_> {
    fn t(&self) -> f64 {
        self.clock.since(self.epoch).as_secs_f64()
    }

    fn emit(&mut self, r: Record) -> anyhow::Result<()> {
        self.writer.append(&r)?;
        for o in self.observers.iter_mut() {
            o.record(&r);
        }
        self.records.push(r);
        Ok(())
    }

    fn flush_samples(&mut self) -> anyhow::Result<()> {
        for s in self.meter.take_samples() {
            self.emit(Record::Sample(s))?;
        }
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

mod blocks;
mod idle;
mod phases;
#[cfg(test)]
mod tests;

use idle::measure_idle;
use phases::run_workload;

/// The meters a run reads: the main sensor's, and the host CPU's beside a GPU run's; times are
/// seconds since `epoch` on the main meter's clock (the host's must be on the same clock).
pub struct Meters<'a> {
    pub main: &'a Meter,
    pub host: Option<&'a Meter>,
    pub epoch: Instant,
}

/// Where a run's records go: the run folder, then every observer; progress lines to `progress`.
pub struct Outputs<'a> {
    pub writer: &'a mut RunWriter,
    pub observers: &'a mut [Box<dyn RunObserver>],
    pub progress: &'a mut dyn Progress,
}

/// Run `plan` on the two models, measuring with `meters`, appending every record to the run
/// folder and handing it to the observers. Returns the summary, also written as `summary.json`.
/// `stop` ends the run cleanly between two steps (a signal, the dashboard's `q`).
pub fn execute(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    meters: Meters,
    out: Outputs,
    stop: &AtomicBool,
) -> anyhow::Result<RunSummary> {
    let mut ctx = Ctx {
        meter: meters.main,
        host: meters.host,
        writer: out.writer,
        observers: out.observers,
        progress: out.progress,
        clock: Arc::clone(meters.main.clock()),
        epoch: meters.epoch,
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
    crate::runlog::write_summary(ctx.writer.dir(), &summary)?;
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
