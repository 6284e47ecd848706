//! The measured run: an idle window for the baseline power, then training steps of the sparse
//! and the dense model alternating A B A B, validation along the way, then prefill and decode
//! steps alternating the same way. Every step is measured by an energy window and written to
//! the run folder as it happens; a viewer (the dashboard) gets the same records over a channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::{RunEvent, Workload};
use crate::meter::Meter;
use crate::runlog::{
    summarize, Energy, EvalRecord, IdleRecord, Phase, Record, RunSummary, RunWriter, StepRecord,
};

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
}

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
    writer: &'a mut RunWriter,
    events: Option<&'a Sender<RunEvent>>,
    progress: &'a mut dyn Progress,
    epoch: Instant,
    records: Vec<Record>,
    idle_power_w: Option<f64>,
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
}

fn measured_step(
    ctx: &mut Ctx,
    counts: &mut Counts,
    w: &mut dyn Workload,
    phase: Phase,
    warmup_steps: u64,
) -> anyhow::Result<()> {
    let window = ctx.meter.begin();
    let t0 = Instant::now();
    let out = w.step(phase)?;
    let seconds = t0.elapsed().as_secs_f64();
    let e = ctx.meter.end(window)?;
    let key = (w.name().to_string(), phase);
    let index = *counts.steps.get(&key).unwrap_or(&0);
    counts.steps.insert(key, index + 1);
    let flops = out.flops.total();
    if phase == Phase::Train {
        let acc = counts.train_tokens.entry(w.name().to_string()).or_default();
        acc.0 += out.tokens;
        acc.1 += flops;
        acc.2 += e.joules;
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
        t_s: ctx.t(),
        model: w.name().to_string(),
        role: w.role(),
        phase,
        step: index,
        warmup: index < warmup_steps,
        tokens: out.tokens,
        seconds,
        flops,
        flops_by_component: out.flops.by_component.clone(),
        energy: Some(Energy {
            joules: e.joules,
            idle_joules: ctx.idle_power_w.map(|p| p * e.seconds),
            source: e.source,
            scope: e.scope,
        }),
        loss: out.loss,
        aux_loss: out.aux_loss,
        expert_tokens: out.expert_tokens,
        dropped: out.dropped,
        domain_expert_tokens: out.domain_expert_tokens,
    };
    ctx.progress.step(&rec);
    ctx.emit(Record::Step(rec))?;
    ctx.flush_samples()
}

fn evaluate(
    ctx: &mut Ctx,
    counts: &Counts,
    w: &mut dyn Workload,
    steps: u64,
) -> anyhow::Result<()> {
    let val_loss = w.validate()?;
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
    };
    ctx.progress.note(&format!(
        "{} after {steps} steps: validation loss {val_loss:.4}",
        w.name()
    ));
    ctx.emit(Record::Eval(rec))
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
    writer: &mut RunWriter,
    events: Option<&Sender<RunEvent>>,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    epoch: Instant,
) -> anyhow::Result<RunSummary> {
    let mut ctx = Ctx {
        meter,
        writer,
        events,
        progress,
        epoch,
        records: Vec::new(),
        idle_power_w: None,
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
    let summary = summarize(&ctx.records).with_peak(plan.peak.as_ref());
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
    let stopped = || stop.load(Ordering::SeqCst);
    // The idle baseline: nothing runs but the sampler.
    if plan.idle_seconds > 0.0 {
        ctx.progress.note(&format!(
            "measuring the idle baseline for {:.1} s",
            plan.idle_seconds
        ));
        let w = ctx.meter.begin();
        let until = Instant::now() + Duration::from_secs_f64(plan.idle_seconds);
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = ctx.meter.end(w)?;
        let power_w = if e.seconds > 0.0 {
            e.joules / e.seconds
        } else {
            0.0
        };
        ctx.idle_power_w = Some(power_w);
        ctx.emit(Record::Idle(IdleRecord {
            seconds: e.seconds,
            joules: e.joules,
            power_w,
            source: e.source,
            scope: e.scope,
        }))?;
        ctx.flush_samples()?;
    }
    let mut counts = Counts::default();
    if plan.train_steps > 0 && !stopped() {
        evaluate(ctx, &counts, sparse, 0)?;
        evaluate(ctx, &counts, dense, 0)?;
    }
    for i in 0..plan.train_steps {
        if stopped() {
            return Ok(());
        }
        measured_step(ctx, &mut counts, sparse, Phase::Train, plan.warmup_steps)?;
        measured_step(ctx, &mut counts, dense, Phase::Train, plan.warmup_steps)?;
        let done = i + 1;
        if done % plan.eval_every.max(1) == 0 || done == plan.train_steps {
            evaluate(ctx, &counts, sparse, done)?;
            evaluate(ctx, &counts, dense, done)?;
        }
    }
    // Inference: one warm-up step of each phase and model, then the measured ones.
    let infer_warmup = 1;
    let (mut prefills, mut decodes) = (0, 0);
    let want_prefill = plan.prefill_steps + infer_warmup;
    let want_decode = if plan.decode_steps > 0 {
        plan.decode_steps + infer_warmup
    } else {
        0
    };
    while (prefills < want_prefill || decodes < want_decode) && !stopped() {
        let need_prefill = prefills < want_prefill || !sparse.can_decode() || !dense.can_decode();
        if need_prefill {
            measured_step(ctx, &mut counts, sparse, Phase::Prefill, infer_warmup)?;
            measured_step(ctx, &mut counts, dense, Phase::Prefill, infer_warmup)?;
            prefills += 1;
            // Decode continues what this prefill started, until the cache is full.
        }
        while decodes < want_decode && sparse.can_decode() && dense.can_decode() && !stopped() {
            measured_step(ctx, &mut counts, sparse, Phase::Decode, infer_warmup)?;
            measured_step(ctx, &mut counts, dense, Phase::Decode, infer_warmup)?;
            decodes += 1;
            if prefills < want_prefill {
                break; // interleave: prefill and decode alternate while both are wanted
            }
        }
    }
    Ok(())
}
