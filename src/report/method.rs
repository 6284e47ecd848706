//! How the report's figures were made (the method's points and the docs behind them) and the
//! notes: warnings of unresolved and unmeasured energy, the run's own warnings and unreadable
//! lines.

use std::collections::{BTreeMap, BTreeSet};

use crate::runlog::{unmeasured_window_model, Record, RunData, RunSummary};
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
    out.extend(unmeasured_warnings(summary));
    out.extend(log_notes(run));
    if run.unreadable_lines > 0 {
        out.push(format!(
            "{} line(s) of records.jsonl could not be read and were skipped.",
            run.unreadable_lines
        ));
    }
    out
}

/// The run's warnings and errors, each with its time. A sensor lost for good logs one warning
/// per window from then on: only the first of each model's is listed, saying how many followed.
fn log_notes(run: &RunData) -> Vec<String> {
    let warnings = run.records.iter().filter_map(|r| match r {
        Record::Log {
            t_s,
            level,
            message,
        } if level != "info" && level != "debug" => Some((t_s, level, message)),
        _ => None,
    });
    let mut unmeasured: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, m) in warnings.clone() {
        if let Some(model) = unmeasured_window_model(m) {
            *unmeasured.entry(model).or_default() += 1;
        }
    }
    let mut listed = BTreeSet::new();
    warnings
        .filter_map(|(t_s, level, message)| {
            let line = format!("t = {t_s:.1} s, {level}: {message}");
            let Some(model) = unmeasured_window_model(message) else {
                return Some(line);
            };
            if !listed.insert(model) {
                return None;
            }
            Some(match unmeasured[model] {
                1 => line,
                n => format!(
                    "{line} (the first of {n} unmeasured windows of {model}; the others are in \
                     the run's log)"
                ),
            })
        })
        .collect()
}

/// A warning for every model and phase with measured steps whose energy could not be read.
fn unmeasured_warnings(summary: &RunSummary) -> Vec<String> {
    let mut out = Vec::new();
    for m in &summary.models {
        for p in m.phases.iter().filter(|p| p.unmeasured_steps > 0) {
            let (k, n) = (p.unmeasured_steps, p.steps);
            let rest = if k < n {
                format!("its joules per token come from the other {}", n - k)
            } else {
                "it has no joules per token".to_string()
            };
            out.push(format!(
                "energy unmeasured: {} {} {}: {k} of {n} measured steps have no energy reading \
                 (the sensor could not be read over their windows); {rest}.",
                m.role,
                m.model,
                p.phase.label(),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{summarize, test_header, test_step, unmeasured_window_warning};
    use crate::vocab::{Phase, Role};

    #[test]
    fn a_sensor_lost_for_good_gives_one_note_per_phase_and_the_first_of_its_warnings() {
        // Sparse train: 2 measured steps, then 5 whose windows' reads failed, each logged.
        let warn = |t_s: f64, message: String| Record::Log {
            t_s,
            level: "warn".into(),
            message,
        };
        let mut records = Vec::new();
        for i in 0..7u64 {
            let mut s = test_step(Role::Sparse, Phase::Train);
            (s.step, s.t_s) = (i, i as f64);
            if i >= 2 {
                s.energy = None;
                let m = unmeasured_window_warning("Sparse", i, 1, Phase::Train, &"nvml: GPU lost");
                records.push(warn(i as f64, m));
            }
            records.push(Record::Step(s));
        }
        records.push(warn(9.0, "Sparse: loss is NaN at step 6".into()));
        let run = RunData {
            dir: Default::default(),
            header: test_header(),
            records,
            unreadable_lines: 0,
        };
        let summary = summarize(&run.records);
        let train = summary.model(Role::Sparse).unwrap().phase(Phase::Train);
        assert_eq!(train.unwrap().unmeasured_steps, 5);
        let notes = notes(&run, &summary);
        let unmeasured: Vec<&String> = notes.iter().filter(|n| n.contains("unmeasured")).collect();
        assert_eq!(unmeasured.len(), 2, "{notes:#?}");
        assert!(
            unmeasured[0]
                .starts_with("energy unmeasured: sparse Sparse train: 5 of 7 measured steps")
                && unmeasured[0].contains("from the other 2"),
            "{}",
            unmeasured[0]
        );
        assert_eq!(
            unmeasured[1],
            "t = 2.0 s, warn: Sparse: window 2 (1 train steps) unmeasured: nvml: GPU lost (the \
             first of 5 unmeasured windows of Sparse; the others are in the run's log)"
        );
        // Other warnings are listed as they are.
        assert!(notes.contains(&"t = 9.0 s, warn: Sparse: loss is NaN at step 6".to_string()));
    }
}
