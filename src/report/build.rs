//! From a run folder's records to the [`Report`]: the figures, their units and sources, and the
//! sentences that state the answer.

use crate::accounting::params;
use crate::runlog::{IdleWhen, PhaseSummary, Record, RunData, RunSummary, StepRecord};
use crate::stats::Estimate;
use crate::vocab::EnergySource;
use crate::vocab::Role;

use super::document::*;
use super::efficiency::data_efficiency;
use super::experts::expert_load;
use super::format::num;
use super::method::{method, notes};
use super::power::power_series;

const PHASES: [crate::vocab::Phase; 3] = [
    crate::vocab::Phase::Train,
    crate::vocab::Phase::Prefill,
    crate::vocab::Phase::Decode,
];

/// z of a two-sided 95% normal interval, for the approximate CI of a ratio of two means.
const Z95: f64 = 1.959_963_984_540_054;

/// Build the report of a run (finished or cut off), its to-target figures at the loss the run
/// asked for (`--target-loss` or `--until-loss`), else at the lowest loss both models reached.
pub fn build(run: &RunData) -> Report {
    build_with_target(run, None)
}

/// [`build`] with the to-target figures at `target_loss` (`report --target-loss`) when given.
pub fn build_with_target(run: &RunData, target_loss: Option<f64>) -> Report {
    let target = match target_loss {
        Some(l) => Some((l, crate::runlog::TARGET_GIVEN)),
        None => run.header.config.target(),
    };
    let summary =
        crate::project::summarize_run(&run.header, &run.records).with_target(&run.records, target);
    let steps: Vec<&StepRecord> = run.steps().collect();
    let phases = phase_rows(&summary);
    let source = summary.source.unwrap_or(run.header.sensor.source);
    Report {
        report_format_version: REPORT_FORMAT_VERSION,
        run: run_section(run, &summary, &steps),
        answer: Answer {
            quality: summary.to_target.as_ref().map_or_else(
                || vec!["No validation loss was recorded: no energy-to-quality comparison.".into()],
                |t| super::quality::sentences(t, Some(trained_steps(&steps))),
            ),
            ..answer(&phases, source)
        },
        to_target: summary.to_target.clone(),
        models: run
            .header
            .models
            .iter()
            .map(|m| model_section(m.role, &m.profile))
            .collect(),
        machine: run.header.machine.clone(),
        sensor: SensorSection {
            source: run.header.sensor.source.label().into(),
            scope: run.header.sensor.scope.clone(),
            is_measurement: run.header.sensor.source != EnergySource::Estimate,
            fallbacks: run.header.sensor.fallbacks.clone(),
            sample_hz: run.header.sensor.sample_hz,
            update_period_s: run.header.sensor.update_period_s,
        },
        idle: idle_section(&run.records, &summary),
        data_efficiency: data_efficiency(&run.records, source),
        expert_load: expert_load(&steps, &run.header),
        power: power_series(&run.records, &run.header.sensor.scope),
        projections: super::projection::projections(run, &phases),
        method: method(run, &summary),
        notes: notes(run, &summary),
        phases,
        peak: summary.peak.clone(),
    }
}

/// Training steps the run did per model (the most of either).
fn trained_steps(steps: &[&StepRecord]) -> u64 {
    steps
        .iter()
        .filter(|s| s.phase == crate::vocab::Phase::Train)
        .map(|s| s.step + 1)
        .max()
        .unwrap_or(0)
}

fn run_section(run: &RunData, summary: &RunSummary, steps: &[&StepRecord]) -> RunSection {
    let measured = steps.iter().filter(|s| !s.warmup).count();
    let warm = steps.len() - measured;
    let status = if summary.complete {
        format!(
            "Run ended cleanly ({}); figures cover {measured} measured steps ({warm} warm-up steps left out).",
            summary.end_reason
        )
    } else {
        let mut s = format!(
            "Run cut off: records end without an end record (killed or crashed); figures cover the {} steps recorded ({measured} measured after warm-up).",
            steps.len()
        );
        if run.unreadable_lines > 0 {
            s.push_str(&format!(
                " {} unreadable line(s) (a half-written last line) were skipped.",
                run.unreadable_lines
            ));
        }
        s
    };
    let duration_s = run
        .records
        .iter()
        .filter_map(Record::t_s)
        .fold(0.0, f64::max);
    RunSection {
        id: run.header.id.clone(),
        dir: run.dir.display().to_string(),
        started_unix_s: run.header.started_unix_s,
        command: run.header.command.clone(),
        sparsewatt_version: run.header.sparsewatt_version.clone(),
        config: run.header.config.clone(),
        complete: summary.complete,
        end_reason: summary.end_reason.clone(),
        status,
        step_records: steps.len(),
        measured_steps: measured,
        unreadable_lines: run.unreadable_lines,
        duration_s,
    }
}

fn phase_figures(model: &str, p: &PhaseSummary) -> PhaseFigures {
    let per = denominator(p.phase);
    let energy_source = p.source.map_or("unknown", EnergySource::label);
    let scope = p.scope.as_deref();
    let jpt = |e: &Estimate| {
        Figure::from_estimate(e, "J/token", energy_source)
            .with_scope(scope)
            .per(per)
    };
    PhaseFigures {
        model: model.into(),
        steps: p.steps,
        warmup_steps_excluded: p.warmup_steps_excluded,
        tokens: Figure::new(p.tokens as f64, "tokens", source::RECORDS).per(per),
        seconds: Figure::new(p.seconds, "s", source::WALL_CLOCK),
        joules_per_token: p.joules_per_token.as_ref().map(|j| jpt(&j.total)),
        joules_per_token_idle_subtracted: p
            .joules_per_token
            .as_ref()
            .and_then(|j| j.idle_subtracted.as_ref())
            .map(jpt),
        flops_per_token: Figure::new(p.flops_per_token, "FLOP/token", source::EXECUTED_FLOPS)
            .per(per),
        tokens_per_s: p
            .tokens_per_s
            .as_ref()
            .map(|e| Figure::from_estimate(e, "token/s", source::WALL_CLOCK).per(per)),
        flops_per_s: Figure::new(p.flops_per_s, "FLOP/s", source::EXECUTED_FLOPS),
        utilization: p.utilization.map(|u| {
            let from = p.peak_from.as_deref().unwrap_or("unknown");
            Figure::new(u, "fraction of peak", &format!("peak: {from}"))
        }),
        joules_per_flop: p
            .joules_per_flop
            .map(|v| Figure::new(v, "J/FLOP", energy_source).with_scope(scope)),
        last_loss: p
            .last_loss
            .map(|v| Figure::new(v, "nats/token", source::TRAINING_LOSS)),
        host_joules_per_token: p.host_joules_per_token.as_ref().map(|e| {
            let src = p.host_source.map_or("unknown", EnergySource::label);
            Figure::from_estimate(e, "J/token", src)
                .with_scope(p.host_scope.as_deref())
                .per(per)
        }),
    }
}

/// Sparse / dense of two means; with an approximate 95% CI when both carry a spread
/// (delta method: the ratio's relative standard error is the root sum of squares of theirs).
pub fn ratio_of(a: &Figure, b: &Figure) -> Option<Figure> {
    if b.value == 0.0 || !a.value.is_finite() || !b.value.is_finite() {
        return None;
    }
    let r = a.value / b.value;
    let source = if a.source == b.source {
        format!("ratio of {} figures", a.source)
    } else {
        format!("ratio of {} to {} figures", a.source, b.source)
    };
    let mut f = Figure::new(r, "ratio", &source);
    let se = |x: &Figure| Some(x.std_dev? / (x.n? as f64).sqrt());
    if let (Some(sa), Some(sb)) = (se(a), se(b)) {
        if a.value != 0.0 {
            let rel = ((sa / a.value).powi(2) + (sb / b.value).powi(2)).sqrt();
            f.ci95 = Some([r * (1.0 - Z95 * rel), r * (1.0 + Z95 * rel)]);
        }
    }
    f.per = a.per.clone();
    Some(f)
}

fn phase_rows(summary: &RunSummary) -> Vec<PhaseRow> {
    PHASES
        .iter()
        .filter_map(|&phase| {
            let side = |role: Role| {
                let m = summary.model(role)?;
                Some(phase_figures(&m.model, m.phase(phase)?))
            };
            let (sparse, dense) = (side(Role::Sparse), side(Role::Dense));
            if sparse.is_none() && dense.is_none() {
                return None;
            }
            let ratio = match (&sparse, &dense) {
                (Some(s), Some(d)) => {
                    let both = |f: fn(&PhaseFigures) -> Option<&Figure>| ratio_of(f(s)?, f(d)?);
                    // J/token: the ratio of means with its interval from the paired windows
                    // where there are two pairs or more; the delta method otherwise.
                    let paired = summary
                        .ratios
                        .iter()
                        .find(|r| r.phase == phase)
                        .and_then(|r| r.joules_per_token_ratio_paired);
                    let jpt = both(|p| p.joules_per_token.as_ref()).map(|f| match paired {
                        Some(e) => Figure {
                            source: format!(
                                "{}; 95% interval from {} paired windows (Student t)",
                                f.source, e.n
                            ),
                            ..Figure::from_estimate(&e, "ratio", "")
                        }
                        .per_opt(f.per.as_deref()),
                        None => f,
                    });
                    Some(RatioFigures {
                        joules_per_token: jpt,
                        joules_per_token_idle_subtracted: both(|p| {
                            p.joules_per_token_idle_subtracted.as_ref()
                        }),
                        flops_per_token: both(|p| Some(&p.flops_per_token)),
                        tokens_per_s: both(|p| p.tokens_per_s.as_ref()),
                    })
                }
                _ => None,
            };
            Some(PhaseRow {
                phase,
                denominator: denominator(phase).into(),
                sparse,
                dense,
                ratio,
            })
        })
        .collect()
}

fn phase_name(p: crate::vocab::Phase) -> &'static str {
    match p {
        crate::vocab::Phase::Train => "Training",
        crate::vocab::Phase::Prefill => "Prefill",
        crate::vocab::Phase::Decode => "Decode",
    }
}

fn overlap(a: &Figure, b: &Figure) -> Option<bool> {
    let ([al, ah], [bl, bh]) = (a.ci95?, b.ci95?);
    Some(al <= bh && bl <= ah)
}

fn answer(phases: &[PhaseRow], source: EnergySource) -> Answer {
    let energy_word = if source == EnergySource::Estimate {
        "estimated energy (not measured: see the sensor section)"
    } else {
        "energy"
    };
    let mut sentences = Vec::new();
    for row in phases {
        let (Some(s), Some(d), Some(r)) = (&row.sparse, &row.dense, &row.ratio) else {
            let only = row.sparse.as_ref().or(row.dense.as_ref());
            if let Some(m) = only {
                sentences.push(format!(
                    "{}: only {} was measured; no comparison.",
                    phase_name(row.phase),
                    m.model
                ));
            }
            continue;
        };
        let mut text = format!("{}: the sparse model ({})", phase_name(row.phase), s.model);
        match (
            &r.joules_per_token,
            &s.joules_per_token,
            &d.joules_per_token,
        ) {
            (Some(rj), Some(sj), Some(dj)) => {
                text.push_str(&format!(
                    " used {}x the {energy_word} per {} of the dense model ({}): {} against {} J/token ({}, n = {} and {})",
                    num(rj.value),
                    per_one(row.phase),
                    d.model,
                    num(sj.value),
                    num(dj.value),
                    sj.source,
                    s.steps,
                    d.steps
                ));
                if overlap(sj, dj) == Some(true) {
                    text.push_str(", and the two 95% intervals overlap, so the difference is not established by this run");
                }
            }
            _ => text.push_str(&format!(
                " has no energy figure against the dense model ({})",
                d.model
            )),
        }
        if let Some(rf) = &r.flops_per_token {
            text.push_str(&format!(
                "; it executed {}x the FLOPs per token ({} against {}).",
                num(rf.value),
                crate::units::count(s.flops_per_token.value),
                crate::units::count(d.flops_per_token.value)
            ));
        } else {
            text.push('.');
        }
        sentences.push(text);
    }
    if sentences.is_empty() {
        sentences
            .push("The run recorded no measured step: there is nothing to compare yet.".into());
    }
    Answer {
        quality: Vec::new(),
        question: "What does a token cost, in joules and in FLOPs, on the sparse mixture-of-experts model against its dense baseline, for training, prefill and decode?".into(),
        sentences,
    }
}

fn model_section(role: Role, p: &crate::profile::ModelProfile) -> ModelSection {
    let c = params(p);
    ModelSection {
        role,
        name: p.name.clone(),
        total_params: Figure::new(c.total, "parameters", source::ACCOUNTING),
        active_params: Figure::new(c.active, "parameters", source::ACCOUNTING).per("token"),
        layers: p.layers,
        d_model: p.d_model,
        d_ff: p.d_ff,
        experts: p.experts,
        top_k: p.top_k,
        moe_layers: p.moe_layers(),
        capacity_factor: p.capacity_factor,
        seq_len: p.seq_len,
        profile_source: p.source.clone(),
    }
}

fn idle_section(records: &[Record], summary: &RunSummary) -> Option<IdleSection> {
    let before = records.iter().find_map(|r| match r {
        Record::Idle(i) if i.when == IdleWhen::Before => Some(i),
        _ => None,
    })?;
    let src = before.source.label();
    let scope = Some(before.scope.as_str());
    let watts = |e: &Estimate| Figure::from_estimate(e, "W", src).with_scope(scope);
    let base = summary.idle.as_ref();
    Some(IdleSection {
        seconds: Figure::new(before.seconds, "s", source::WALL_CLOCK),
        joules: Figure::new(before.joules, "J", src).with_scope(scope),
        power_w: base.map_or_else(
            || Figure::new(before.power_w, "W", src).with_scope(scope),
            |b| watts(&b.power_w),
        ),
        before_w: base.map(|b| watts(&b.before_w)),
        after_w: base.and_then(|b| b.after_w.as_ref()).map(watts),
        drift_w: base
            .and_then(|b| b.drift_w)
            .map(|d| Figure::new(d, "W", src).with_scope(scope)),
        drift_fraction: base.and_then(|b| b.drift_fraction),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_too_short_for_its_sensor_is_warned_about_and_long_ones_are_not() {
        use crate::runlog::{Energy, WindowInfo};
        use crate::vocab::{Phase, Role};
        let mut header = crate::runlog::test_header();
        header.sensor.source = EnergySource::Nvml;
        header.sensor.update_period_s = Some(0.1);
        let step = |role: Role, phase: Phase, index: u64, updates: f64| {
            Record::Step(StepRecord {
                t_s: 1.0,
                model: format!("{role:?}"),
                role,
                phase,
                step: index,
                warmup: false,
                tokens: 8,
                seconds: 0.05,
                flops: 1e6,
                flops_by_component: Default::default(),
                energy: Some(Energy {
                    joules: 2.0,
                    idle_joules: None,
                    source: EnergySource::Nvml,
                    scope: "gpu 0".into(),
                    window: Some(WindowInfo {
                        index,
                        steps: 1,
                        seconds: updates * 0.1,
                        updates: Some(updates),
                    }),
                    host: None,
                }),
                loss: None,
                aux_loss: None,
                expert_tokens: vec![],
                dropped: 0,
                domain_expert_tokens: Default::default(),
            })
        };
        let run = RunData {
            dir: "x".into(),
            header,
            records: vec![
                step(Role::Sparse, Phase::Decode, 0, 25.0),
                step(Role::Sparse, Phase::Decode, 1, 0.5),
                step(Role::Dense, Phase::Decode, 2, 30.0),
                step(Role::Dense, Phase::Decode, 3, 20.0),
            ],
            unreadable_lines: 0,
        };
        let r = build(&run);
        let warned: Vec<&String> = r
            .notes
            .iter()
            .filter(|n| n.starts_with("energy unresolved"))
            .collect();
        assert_eq!(warned.len(), 1, "{:?}", r.notes);
        assert!(
            warned[0].contains("sparse Sparse decode: 1 of 2 measurement windows")
                && warned[0].contains("every 100.0 ms")
                && warned[0].contains("fewest 0.5"),
            "{}",
            warned[0]
        );
        assert_eq!(r.sensor.update_period_s, Some(0.1));
    }

    fn mean(v: f64, sd: f64, n: usize) -> Figure {
        Figure {
            std_dev: Some(sd),
            n: Some(n),
            ..Figure::new(v, "J/token", "rapl")
        }
    }

    #[test]
    fn the_ratio_interval_follows_the_delta_method() {
        // 2 / 4 = 0.5; relative standard errors 0.2/2/sqrt(4) = 0.05 and 0.6/4/sqrt(9) = 0.05.
        let r = ratio_of(&mean(2.0, 0.2, 4), &mean(4.0, 0.6, 9)).unwrap();
        let h = 0.5 * Z95 * (2.0 * 0.05f64.powi(2)).sqrt();
        let [lo, hi] = r.ci95.unwrap();
        assert!((r.value - 0.5).abs() < 1e-12);
        assert!((lo - (0.5 - h)).abs() < 1e-12 && (hi - (0.5 + h)).abs() < 1e-12);
        assert_eq!(r.source, "ratio of rapl figures");
    }

    #[test]
    fn no_ratio_over_zero_and_none_without_spread() {
        assert!(ratio_of(&mean(1.0, 0.1, 3), &Figure::new(0.0, "J/token", "rapl")).is_none());
        let r = ratio_of(&Figure::new(1.0, "x", "a"), &Figure::new(2.0, "x", "b")).unwrap();
        assert_eq!(
            (r.ci95, r.source.as_str()),
            (None, "ratio of a to b figures")
        );
    }
}
