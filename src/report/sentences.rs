//! The report's sentences that carry figures: where the energy comes from, the machine and its
//! sensor, the idle baseline, the expert load of a phase, the seed's full-size comparison.

use super::document::*;
use super::format::{num, opt, source_label, with_ci};
use super::page::{Inline, Line};
use crate::units::count;

/// One line under the answer saying where the energy figures come from; an estimate in bold.
pub fn energy_line(r: &Report) -> Line {
    const RATIOS: &str = "Ratios are sparse / dense; below 1 the sparse model is cheaper.";
    if r.sensor.is_measurement {
        vec![Inline::Text(format!(
            "Energy source: {} (measured), scope: {}. {RATIOS}",
            r.sensor.source, r.sensor.scope
        ))]
    } else {
        vec![
            Inline::Text("Energy source: ".into()),
            Inline::Strong("estimate (not measured)".into()),
            Inline::Text(format!(
                ": modelled from CPU time, scope: {}. {RATIOS}",
                r.sensor.scope
            )),
        ]
    }
}

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

pub fn expert_summary(e: &ExpertLoad) -> String {
    format!(
        "{} ({}), {}, {} measured steps: {} of {} expert assignments dropped ({}).",
        e.model,
        e.role.label(),
        e.phase.label(),
        e.steps,
        count(e.dropped.value),
        count(e.assignments.value),
        opt(e.dropped_fraction.as_ref(), |f| format!(
            "{}%",
            num(f.value * 100.0)
        ))
    )
}

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
