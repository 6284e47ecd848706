//! `report.md`: the same sections and tables as the HTML, without charts.

use std::fmt::Write;

use super::document::*;
use super::format::{interval, num, opt, plain, source_label, with_ci};
use crate::accounting::human;
use crate::vocab::{Phase, Role};

/// A Markdown table; `|` in cells is escaped.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The answer table: J/token and FLOPs/token of both models per phase, with the ratios.
pub fn answer_table(phases: &[PhaseRow]) -> String {
    table(&ANSWER_HEADER, &answer_rows(phases))
}

pub const ANSWER_HEADER: [&str; 8] = [
    "phase",
    "sparse J/token ± 95% CI",
    "dense J/token ± 95% CI",
    "n (steps)",
    "J ratio [95% CI]",
    "sparse FLOP/token",
    "dense FLOP/token",
    "FLOP ratio",
];

pub fn answer_rows(phases: &[PhaseRow]) -> Vec<Vec<String>> {
    phases
        .iter()
        .map(|r| {
            let s = r.sparse.as_ref();
            let d = r.dense.as_ref();
            let jpt = |x: Option<&PhaseFigures>| {
                opt(x.and_then(|p| p.joules_per_token.as_ref()), with_ci)
            };
            let n = |x: Option<&PhaseFigures>| x.map_or("–".into(), |p| p.steps.to_string());
            let fpt = |x: Option<&PhaseFigures>| {
                x.map_or("–".into(), |p| human(p.flops_per_token.value))
            };
            let ratio = r.ratio.as_ref();
            vec![
                format!("{} (per {})", r.phase.label(), per_one(r.phase)),
                jpt(s),
                jpt(d),
                format!("{}, {}", n(s), n(d)),
                opt(ratio.and_then(|x| x.joules_per_token.as_ref()), |f| {
                    format!("{} {}", num(f.value), interval(f))
                }),
                fpt(s),
                fpt(d),
                opt(ratio.and_then(|x| x.flops_per_token.as_ref()), plain),
            ]
        })
        .collect()
}

/// One line under the answer saying where the energy figures come from.
pub fn energy_line(r: &Report) -> String {
    if r.sensor.is_measurement {
        format!(
            "Energy source: {} (measured), scope: {}. Ratios are sparse / dense; below 1 the sparse model is cheaper.",
            r.sensor.source, r.sensor.scope
        )
    } else {
        format!(
            "Energy source: **estimate (not measured)**: modelled from CPU time, scope: {}. Ratios are sparse / dense; below 1 the sparse model is cheaper.",
            r.sensor.scope
        )
    }
}

pub fn detail_rows(phases: &[PhaseRow]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in phases {
        for (role, p) in [(Role::Sparse, &r.sparse), (Role::Dense, &r.dense)] {
            let Some(p) = p else { continue };
            rows.push(vec![
                r.phase.label().into(),
                format!("{} ({})", p.model, role.label()),
                format!("{} ({})", p.steps, p.warmup_steps_excluded),
                human(p.tokens.value),
                num(p.seconds.value),
                opt(p.joules_per_token.as_ref(), plain),
                opt(p.joules_per_token.as_ref(), interval),
                opt(p.joules_per_token_idle_subtracted.as_ref(), with_ci),
                opt(p.tokens_per_s.as_ref(), with_ci),
                human(p.flops_per_s.value),
                opt(p.utilization.as_ref(), |f| {
                    format!("{:.1}%", 100.0 * f.value.min(1.0))
                }),
                opt(p.joules_per_flop.as_ref(), plain),
                opt(p.joules_per_token.as_ref(), |f| source_label(&f.source)),
            ]);
        }
    }
    rows
}

pub const DETAIL_HEADER: [&str; 13] = [
    "phase",
    "model",
    "steps (warm-up left out)",
    "tokens",
    "seconds",
    "J/token",
    "95% CI",
    "J/token idle-subtracted",
    "token/s",
    "FLOP/s",
    "utilisation of peak",
    "J/FLOP",
    "energy source",
];

pub fn model_rows(models: &[ModelSection]) -> Vec<Vec<String>> {
    models
        .iter()
        .map(|m| {
            vec![
                m.role.label().into(),
                m.name.clone(),
                human(m.total_params.value),
                human(m.active_params.value),
                m.layers.to_string(),
                m.d_model.to_string(),
                m.d_ff.to_string(),
                if m.experts > 1 {
                    format!("{} (top-{})", m.experts, m.top_k)
                } else {
                    "dense".into()
                },
                m.moe_layers.to_string(),
                m.capacity_factor.map_or("unlimited".into(), num),
            ]
        })
        .collect()
}

pub const MODEL_HEADER: [&str; 10] = [
    "role",
    "model",
    "total params",
    "active params / token",
    "layers",
    "d_model",
    "d_ff",
    "experts",
    "MoE layers",
    "capacity factor",
];

/// The two idle windows and the drift between them, or the one window of an older run.
fn idle_sides(i: &IdleSection) -> String {
    match (&i.before_w, &i.after_w) {
        (Some(b), Some(a)) => {
            format!(
            "{} W over {} s before the workload, {} W after it: drift {} W ({:+.1}%), both pooled",
            with_ci(b),
            num(i.seconds.value),
            with_ci(a),
            i.drift_w.as_ref().map_or_else(|| "?".into(), |d| num(d.value)),
            i.drift_fraction.unwrap_or_default() * 100.0
        )
        }
        _ => format!(
            "one window of {} s before the workload ({} J), none after",
            num(i.seconds.value),
            num(i.joules.value)
        ),
    }
}

/// The host CPU metered beside a GPU run: each model and phase's J/token of it.
fn host_line(r: &Report) -> Option<String> {
    let mut parts = Vec::new();
    let mut first = None;
    for row in &r.phases {
        for f in [&row.sparse, &row.dense].into_iter().flatten() {
            if let Some(h) = &f.host_joules_per_token {
                first.get_or_insert(h);
                parts.push(format!("{} {} {}", f.model, row.phase.label(), with_ci(h)));
            }
        }
    }
    let h = first?;
    Some(format!(
        "Host CPU beside the GPU, a separate component not in the J/token above ({}, scope: {}): J per token {}",
        source_label(&h.source),
        h.scope.as_deref().unwrap_or("?"),
        parts.join("; ")
    ))
}

pub fn machine_lines(r: &Report) -> Vec<String> {
    let m = &r.machine;
    let s = &r.sensor;
    let mut v = vec![
        format!(
            "Machine: {} ({}, {} logical CPUs, {})",
            m.hostname, m.cpu_model, m.logical_cpus, m.os
        ),
        format!("Device: {}", m.device),
        match &r.peak {
            Some(p) => format!("Utilisation: achieved FLOP/s over the {}", p.describe()),
            None => "Utilisation: no peak known for this machine".into(),
        },
        // The profile "this machine" means in projections: the GPU's for a GPU run (the
        // header's is the CPU profile of the estimate, unused there).
        format!(
            "Hardware profile: {}",
            crate::project::machine_hardware(m)
                .unwrap_or_else(|| "none (no profile for this GPU)".into())
        ),
        format!(
            "Sensor: {} ({}), scope: {}, sampled at {} Hz",
            s.source,
            if s.is_measurement {
                "a measurement"
            } else {
                "an estimate, not a measurement"
            },
            s.scope,
            num(s.sample_hz)
        ),
    ];
    if let Some(p) = s.update_period_s {
        v.push(format!(
            "Sensor counter updates every {} ms (measured at the start): windows of at least {} s",
            num(p * 1e3),
            num(p * crate::meter::SAFE_UPDATES_PER_WINDOW)
        ));
    }
    for f in &s.fallbacks {
        v.push(format!("Sensor not used: {f}"));
    }
    if let Some(h) = host_line(r) {
        v.push(h);
    }
    v.push(match &r.idle {
        Some(i) => format!(
            "Idle baseline: {} W ({}, scope: {}); {}",
            with_ci(&i.power_w),
            source_label(&i.power_w.source),
            i.power_w.scope.as_deref().unwrap_or("?"),
            idle_sides(i)
        ),
        None => "Idle baseline: not measured (no idle window); idle-subtracted figures are absent"
            .into(),
    });
    v.push(match &r.power.mean_power_w {
        Some(p) => format!(
            "Power: mean {} W over {} samples ({})",
            num(p.value),
            r.power.samples,
            source_label(&p.source)
        ),
        None => "Power: no samples recorded".into(),
    });
    v
}

/// At most `max` evenly spaced points of a curve, always keeping the last.
pub fn thin(points: &[LossPoint], max: usize) -> Vec<&LossPoint> {
    if points.len() <= max {
        return points.iter().collect();
    }
    let step = points.len().div_ceil(max);
    let mut v: Vec<&LossPoint> = points.iter().step_by(step).collect();
    if let Some(last) = points.last() {
        if !std::ptr::eq(*v.last().unwrap_or(&last), last) {
            v.push(last);
        }
    }
    v
}

pub fn same_loss_rows(s: &SameLoss) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = s
        .reach
        .iter()
        .map(|r| {
            vec![
                format!("{} ({})", r.model, r.role.label()),
                human(r.tokens.value),
                human(r.flops.value),
                opt(r.joules.as_ref(), |f| {
                    format!("{} ({})", num(f.value), source_label(&f.source))
                }),
            ]
        })
        .collect();
    rows.push(vec![
        "sparse / dense".into(),
        opt(s.ratio_tokens.as_ref(), plain),
        opt(s.ratio_flops.as_ref(), plain),
        opt(s.ratio_joules.as_ref(), plain),
    ]);
    rows
}

pub fn expert_summary(e: &ExpertLoad) -> String {
    format!(
        "{} ({}), {}, {} measured steps: {} of {} expert assignments dropped ({}).",
        e.model,
        e.role.label(),
        e.phase.label(),
        e.steps,
        human(e.dropped.value),
        human(e.assignments.value),
        opt(e.dropped_fraction.as_ref(), |f| format!(
            "{}%",
            num(f.value * 100.0)
        ))
    )
}

pub fn expert_rows(e: &ExpertLoad) -> Vec<Vec<String>> {
    e.layers
        .iter()
        .map(|l| {
            let counts = if l.tokens_per_expert.len() <= 16 {
                l.tokens_per_expert
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                let min = l.tokens_per_expert.iter().min().copied().unwrap_or(0);
                let max = l.tokens_per_expert.iter().max().copied().unwrap_or(0);
                format!("{} experts, {min} .. {max}", l.tokens_per_expert.len())
            };
            vec![
                l.moe_layer.to_string(),
                l.block.map_or("?".into(), |b| b.to_string()),
                counts,
                num(l.max_over_mean),
                num(l.cv),
                l.idle_experts.to_string(),
            ]
        })
        .collect()
}

pub const EXPERT_HEADER: [&str; 6] = [
    "MoE layer",
    "block",
    "tokens per expert",
    "busiest / mean",
    "CV",
    "idle experts",
];

/// One row per hardware profile and model: J/token of each phase side by side.
pub fn projection_rows(p: &ProjectionSection) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut last: Option<(&str, Role)> = None;
    for r in &p.rows {
        if last != Some((r.hardware.as_str(), r.role)) {
            last = Some((r.hardware.as_str(), r.role));
            rows.push(vec![
                r.hardware.clone(),
                format!("{} x PUE {}", r.power_scope, num(r.pue)),
                format!("{} ({})", r.model, r.role.label()),
                "–".into(),
                "–".into(),
                "–".into(),
            ]);
        }
        let col = match r.phase {
            Phase::Train => 3,
            Phase::Prefill => 4,
            Phase::Decode => 5,
        };
        let mut cell = num(r.joules_per_token.value);
        if let Some(b) = &r.bound {
            cell.push_str(&format!(" ({b})"));
        }
        if let Some(row) = rows.last_mut() {
            row[col] = cell;
        }
    }
    rows
}

pub const PROJECTION_HEADER: [&str; 6] = [
    "hardware",
    "power",
    "model",
    "train J/token",
    "prefill J/token (bound)",
    "decode J/token (bound)",
];

pub fn check_rows(p: &ProjectionSection) -> Vec<Vec<String>> {
    p.this_machine
        .iter()
        .map(|c| {
            vec![
                c.hardware.clone(),
                c.role.label().into(),
                c.phase.label().into(),
                c.metric.clone(),
                format!("{} {}", num(c.projected.value), c.projected.unit),
                format!(
                    "{} {} ({})",
                    num(c.measured.value),
                    c.measured.unit,
                    source_label(&c.measured.source)
                ),
                num(c.measured_over_projected),
            ]
        })
        .collect()
}

pub const CHECK_HEADER: [&str; 7] = [
    "hardware",
    "role",
    "phase",
    "figure",
    "projected",
    "measured",
    "measured / projected",
];

/// Heading of the seed's full-size comparison table.
pub const FULL_SIZE_TITLE: &str =
    "The seed's full-size comparison (projections beside the published figures):";

/// The sentences under the full-size table: both answers, the notes and the published sources.
pub fn full_size_lines(c: &crate::project::SeedComparison) -> Vec<String> {
    let mut v: Vec<String> = c.summary_lines().into_iter().collect();
    v.extend(c.notes.iter().cloned());
    v.push(format!(
        "Published: {} (GLaM); {} (GPT-3).",
        crate::project::seed::GLAM_SOURCE,
        crate::project::seed::GPT3_SOURCE
    ));
    v
}

/// Render the whole report as Markdown.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# sparsewatt report: run {}\n", r.run.id);
    let status = if r.run.complete {
        r.run.status.clone()
    } else {
        format!("**{}**", r.run.status)
    };
    let _ = writeln!(o, "{status}\n");
    let _ = writeln!(o, "## Energy to reach the same validation loss\n");
    for s in &r.answer.quality {
        let _ = writeln!(o, "- {s}");
    }
    if let Some(t) = &r.to_target {
        let _ = writeln!(
            o,
            "\n{}",
            table(
                &super::quality::TABLE_HEADER,
                &super::quality::table_rows(t)
            )
        );
    } else {
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "## Per-token cost\n\n{}\n", r.answer.question);
    for s in &r.answer.sentences {
        let _ = writeln!(o, "- {s}");
    }
    let _ = writeln!(o, "\n{}\n{}\n", answer_table(&r.phases), energy_line(r));
    let _ = writeln!(
        o,
        "## Each phase in detail\n\n{}",
        table(&DETAIL_HEADER, &detail_rows(&r.phases))
    );
    let _ = writeln!(
        o,
        "## Models\n\n{}",
        table(&MODEL_HEADER, &model_rows(&r.models))
    );
    let _ = writeln!(
        o,
        "Parameters are counted analytically from the profiles (docs/accounting.md).\n"
    );
    let _ = writeln!(o, "## Machine, sensor and idle baseline\n");
    for l in machine_lines(r) {
        let _ = writeln!(o, "- {l}");
    }
    let de = &r.data_efficiency;
    let _ = writeln!(o, "\n## Data efficiency ({})\n", de.basis);
    if de.curves.is_empty() {
        let _ = writeln!(o, "No loss was recorded.\n");
    }
    for c in &de.curves {
        let rows: Vec<Vec<String>> = thin(&c.points, 20)
            .into_iter()
            .map(|p| {
                vec![
                    human(p.train_tokens as f64),
                    human(p.train_flops),
                    p.train_joules.map_or("–".into(), num),
                    format!("{:.4}", p.loss_nats),
                ]
            })
            .collect();
        let _ = writeln!(
            o,
            "{} ({}):\n\n{}",
            c.model,
            c.role.label(),
            table(
                &["tokens trained", "FLOPs", "joules", "loss (nats/token)"],
                &rows
            )
        );
    }
    match &de.same_loss {
        Some(s) => {
            let _ = writeln!(
                o,
                "To reach the same {} of {:.4} nats/token (the lowest both reached):\n\n{}",
                de.basis,
                s.target_loss.value,
                table(&["model", "tokens", "FLOPs", "joules"], &same_loss_rows(s))
            );
        }
        None => {
            let _ = writeln!(o, "No loss both models reached: no same-loss comparison.\n");
        }
    }
    let _ = writeln!(o, "## Expert load\n");
    if r.expert_load.is_empty() {
        let _ = writeln!(o, "No routed tokens were recorded.\n");
    }
    for e in &r.expert_load {
        let _ = writeln!(
            o,
            "{}\n\n{}",
            expert_summary(e),
            table(&EXPERT_HEADER, &expert_rows(e))
        );
    }
    let _ = writeln!(o, "## Projections\n");
    if let Some(c) = &r.projections.full_size {
        let _ = writeln!(
            o,
            "{FULL_SIZE_TITLE}\n\n{}",
            table(&crate::project::seed::SEED_HEADER, &c.cells())
        );
        for l in full_size_lines(c) {
            let _ = writeln!(o, "- {l}");
        }
        let _ = writeln!(o);
    }
    for n in &r.projections.notes {
        let _ = writeln!(o, "{n}\n");
    }
    if !r.projections.rows.is_empty() {
        let _ = writeln!(
            o,
            "{}",
            table(&PROJECTION_HEADER, &projection_rows(&r.projections))
        );
    }
    if !r.projections.this_machine.is_empty() {
        let _ = writeln!(
            o,
            "This machine ({}), projected against measured (no PUE on either side):\n\n{}",
            r.projections.this_machine[0].hardware,
            table(&CHECK_HEADER, &check_rows(&r.projections))
        );
    }
    let _ = writeln!(o, "## Method\n");
    for p in &r.method.points {
        let _ = writeln!(o, "- {p}");
    }
    let _ = writeln!(o);
    for d in &r.method.docs {
        let _ = writeln!(o, "- {}: `{}`", d.title, d.path);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
    }
    let _ = writeln!(
        o,
        "\n---\nsparsewatt {}, report format {}, run folder `{}`, command `{}`",
        r.run.sparsewatt_version, r.report_format_version, r.run.dir, r.run.command
    );
    o
}
