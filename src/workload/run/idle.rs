//! The idle baseline: nothing runs but the sampler, in sub-windows the sensor resolves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Ctx;
use crate::meter::UpdatePeriod;
use crate::runlog::{IdleBaseline, IdleRecord, IdleWhen, Record};

/// The shortest idle sub-window: its spread is meaningful where the sensor resolves it.
pub(super) const MIN_IDLE_SUBWINDOW_S: f64 = 0.2;
/// Sub-windows of one idle window, at most.
pub(super) const MAX_IDLE_SUBWINDOWS: usize = 10;

/// How many equal sub-windows an idle window of `seconds` is read in: each long enough for the
/// sensor (its safe window, [`MIN_IDLE_SUBWINDOW_S`] at least), one at least.
pub(super) fn idle_subwindows(seconds: f64, period: Option<&UpdatePeriod>) -> usize {
    let min = period
        .map_or(0.0, UpdatePeriod::min_window_s)
        .max(MIN_IDLE_SUBWINDOW_S);
    // The epsilon keeps 0.6 / 0.2 at 3, not 2.9999.
    ((seconds / min + 1e-9).floor() as usize).clamp(1, MAX_IDLE_SUBWINDOWS)
}

/// Measure an idle window of `seconds` in sub-windows and record it; returns its mean power, or
/// `None` (logged) when the sensor could not be read or the user stopped the run.
pub(super) fn measure_idle(
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
        let until = ctx.clock.now() + Duration::from_secs_f64(seconds / n as f64);
        while ctx.clock.now() < until && !stopped() {
            ctx.clock.sleep(Duration::from_millis(10));
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
