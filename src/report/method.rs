//! How the report's figures were made (the method's points and the docs behind them) and the
//! notes: warnings of unresolved energy windows, the run's own warnings and unreadable lines.

use crate::runlog::{Record, RunData, RunSummary};
use crate::vocab::EnergySource;

use super::document::*;

pub fn method(run: &RunData, summary: &RunSummary) -> Method {
    let excluded: usize = summary
        .models
        .iter()
        .flat_map(|m| &m.phases)
        .map(|p| p.warmup_steps_excluded)
        .sum();
    let sensor = &run.header.sensor;
    let energy = if sensor.source == EnergySource::Estimate {
        format!(
            "Energy is an ESTIMATE, not a measurement: this process's CPU time x watts per busy core from the hardware profile, plus its idle share (scope: {}). No readable sensor was found{}.",
            sensor.scope,
            if sensor.fallbacks.is_empty() {
                String::new()
            } else {
                format!(" ({})", sensor.fallbacks.join("; "))
            }
        )
    } else {
        format!(
            "Energy is measured by {} (scope: {}), read at {} Hz by the sampler thread; energy is the counter's difference over a measurement window{}.",
            sensor.source,
            sensor.scope,
            sensor.sample_hz,
            match sensor.update_period_s {
                Some(p) => format!(
                    ". The counter updates every {:.1} ms (measured at the start), so a window spans at least {} updates ({:.2} s): steps shorter than that are measured in blocks of k steps of one model per window (k of sparse, then k of dense), and a block's joules are split among its steps in proportion to their seconds; per-token figures are per window",
                    p * 1e3,
                    crate::meter::SAFE_UPDATES_PER_WINDOW,
                    p * crate::meter::SAFE_UPDATES_PER_WINDOW
                ),
                None => String::new(),
            }
        )
    };
    let paired: Vec<String> = summary
        .ratios
        .iter()
        .filter_map(|r| {
            let e = r.joules_per_token_paired.as_ref()?;
            let ci = e
                .ci95
                .map(|[lo, hi]| format!(" [{lo:.3}, {hi:.3}]"))
                .unwrap_or_default();
            Some(format!(
                "{} {:.3}{ci} over {} pairs",
                r.phase.label(),
                e.mean,
                e.n
            ))
        })
        .collect();
    Method {
        points: vec![
            format!(
                "Warm-up: the first {} train steps of each model (and every step flagged warm-up) are run and recorded but left out of every figure; {excluded} steps were left out in all.",
                run.header.config.warmup_steps
            ),
            "Sparse and dense steps alternate (A B A B ...) in one process, so both models see the same machine.".into(),
            energy,
            "Joules per token: each measurement window's energy (one step, or a block of steps where the sensor updates coarsely) divided by its tokens; the figure is the mean over windows with a two-sided 95% Student-t confidence interval; n is the number of windows.".into(),
            "Idle-subtracted: the idle baseline's share of each window (idle watts x seconds) is taken off before dividing. The baseline is measured in sub-windows before the workload and again after it, pooled; its 95% interval (scaled to a token) is added to the windows' in quadrature, and the drift between the two is reported.".into(),
            "Denominators: training figures are per token trained, prefill per prompt token, decode per generated token.".into(),
            "FLOPs per token: FLOPs executed (from the shapes the model ran and the tokens each expert received; a multiply-add is 2 FLOPs; training counts forward and backward) summed over measured steps, over their tokens.".into(),
            "Ratios are sparse / dense of the means; below 1 the sparse model is cheaper. The J/token ratio's 95% interval comes from the paired windows (sparse window i and the dense window i run right after it): the linearised standard error of the ratio of means, sd(s_i - R d_i) / (sqrt(n) mean(d)), Student t over the pairs; with fewer than two pairs, and for the other ratios, the delta method on the two means (normal quantile, approximate).".into(),
            "Data efficiency: the target is the lowest loss both models reached; tokens, FLOPs and joules to first reach it are interpolated linearly between the two evals around the crossing.".into(),
            "Energy to the target loss (the first answer): each model's training steps' joules (warm-up included, evaluation excluded), FLOPs, tokens and seconds summed up to its first crossing of the target, interpolated between the evals around it; 95% intervals from a paired percentile bootstrap over the eval sequences (the validation loss's noise) and the measurement windows (the energy's and time's noise), not over training seeds (docs/report.md, \"Energy to a target loss\").".into(),
            if paired.is_empty() {
                "Sparse/dense ratios: the ratio of the two phases' means, its 95% interval by the delta method (z = 1.96).".into()
            } else {
                format!(
                    "Sparse/dense ratios: the ratio of the two phases' means, its 95% interval by the delta method (z = 1.96). Paired (sparse window i over the dense window i run right after it, mean of the per-pair ratios, Student-t 95% interval over the pairs; summary.json `joules_per_token_paired`): J/token {}.",
                    paired.join("; ")
                )
            },
        ],
        docs: [
            ("FLOP and parameter conventions", "docs/accounting.md"),
            ("Sensors, scopes and the estimate", "docs/metering.md"),
            ("Projection model", "docs/projection.md"),
            ("This report's fields", "docs/report.md"),
        ]
        .into_iter()
        .map(|(t, p)| DocLink {
            title: t.into(),
            path: p.into(),
        })
        .collect(),
    }
}

pub fn notes(run: &RunData, summary: &RunSummary) -> Vec<String> {
    let mut out: Vec<String> = window_warnings(run, summary);
    out.extend(run.records.iter().filter_map(|r| match r {
        Record::Log {
            t_s,
            level,
            message,
        } if level != "info" && level != "debug" => {
            Some(format!("t = {t_s:.1} s, {level}: {message}"))
        }
        _ => None,
    }));
    if run.unreadable_lines > 0 {
        out.push(format!(
            "{} line(s) of records.jsonl could not be read and were skipped.",
            run.unreadable_lines
        ));
    }
    out
}

/// A warning for every model and phase with a measurement window shorter than its sensor
/// resolves (fewer than `SAFE_UPDATES_PER_WINDOW` counter updates): its energy is unresolved.
fn window_warnings(run: &RunData, summary: &RunSummary) -> Vec<String> {
    let period = run
        .header
        .sensor
        .update_period_s
        .map(|p| format!(", which updates every {:.1} ms", p * 1e3))
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in &summary.models {
        for p in m.phases.iter().filter(|p| p.short_windows > 0) {
            out.push(format!(
                "energy unresolved: {} {} {}: {} of {} measurement windows spanned fewer than {} updates of the sensor's counter{period} (fewest {:.1}); its joules per token are not trustworthy.",
                m.role,
                m.model,
                p.phase.label(),
                p.short_windows,
                p.windows,
                crate::meter::SAFE_UPDATES_PER_WINDOW,
                p.min_window_updates.unwrap_or(0.0),
            ));
        }
    }
    out
}
