//! Projections of the run's models onto every hardware profile (one chip, the profile's defaults),
//! and this machine's projection against what the run measured (`project::calibrate`). Formulas:
//! docs/projection.md.

use crate::profile::{load_all_hardware, load_hardware, HardwareProfile, ModelProfile};
use crate::project::{
    calibrate, machine_hardware, project_inference, project_training_tokens, summarize_run,
    InferenceSettings, Settings,
};
use crate::runlog::RunData;
use crate::vocab::Phase;

use super::document::{
    denominator, Figure, PhaseRow, ProjectionCheck, ProjectionRow, ProjectionSection,
};

/// Any positive count works: a projection's J/token does not depend on how many tokens.
const TOKENS: f64 = 1e6;

fn label(hw: &HardwareProfile) -> String {
    format!("projection: {}", hw.name)
}

fn rows_for(
    hw: &HardwareProfile,
    role: crate::vocab::Role,
    m: &ModelProfile,
    batch: usize,
    context: usize,
) -> Vec<ProjectionRow> {
    let src = label(hw);
    let power = hw.default_power();
    let scope = format!("{} x PUE {}", power.scope.label(), hw.default_pue);
    let row =
        |phase: Phase, s_per_token: f64, j_per_token: f64, bound: Option<&str>| ProjectionRow {
            hardware: hw.name.clone(),
            role,
            model: m.name.clone(),
            phase,
            seconds_per_token: Figure::new(s_per_token, "s/token", &src).per(denominator(phase)),
            joules_per_token: Figure::new(j_per_token, "J/token", &src)
                .with_scope(Some(&scope))
                .per(denominator(phase)),
            bound: bound.map(str::to_string),
            power_scope: power.scope.label().into(),
            pue: hw.default_pue,
        };
    let mut out = Vec::new();
    if let Ok(t) = project_training_tokens(m, TOKENS, hw, &Settings::new(1)) {
        out.push(row(
            Phase::Train,
            t.seconds / TOKENS,
            t.energy_j / TOKENS,
            None,
        ));
    }
    if let Ok(i) = project_inference(m, hw, &InferenceSettings::new(1, batch, context)) {
        for r in [&i.prefill, &i.decode] {
            out.push(row(
                r.phase,
                1.0 / r.tokens_per_s,
                r.joules_per_token,
                Some(r.bound.label()),
            ));
        }
    }
    out
}

pub fn projections(run: &RunData, phases: &[PhaseRow]) -> ProjectionSection {
    let cfg = &run.header.config;
    let context = cfg.prompt_len.max(1);
    // The serving batch from the header; folders from before it was recorded: what a prefill
    // step ran.
    let batch = cfg.infer_batch.unwrap_or_else(|| {
        run.records
            .iter()
            .find_map(|r| match r {
                crate::runlog::Record::Step(s) if s.phase == Phase::Prefill && s.tokens > 0 => {
                    Some((s.tokens as usize / context).max(1))
                }
                _ => None,
            })
            .unwrap_or(cfg.batch.max(1))
    });
    let mut notes = vec![format!(
        "One chip of each profile at its defaults: training at the profile's utilisation; prefill and decode on the roofline (peak compute) at batch {batch} and context {context} (the run's prompt length). Energy is facility energy: the profile's power per chip x its PUE. These are projections, not measurements."
    )];
    let mut rows = Vec::new();
    match load_all_hardware() {
        Ok(all) => {
            for hw in &all {
                for m in &run.header.models {
                    rows.extend(rows_for(hw, m.role, &m.profile, batch, context));
                }
            }
        }
        Err(e) => notes.push(format!(
            "No projections: a hardware profile does not load: {e}"
        )),
    }
    let local = machine_hardware(&run.header.machine);
    let this_machine = match local.as_deref().map(load_hardware) {
        None => {
            notes.push(format!(
                "No comparison with this machine: no hardware profile describes `{}`.",
                run.header.machine.device
            ));
            Vec::new()
        }
        Some(Ok(hw)) => {
            if run.header.sensor.source == crate::vocab::EnergySource::Estimate {
                notes.push(format!(
                    "This run's energy is an estimate made from a CPU power model, so its power against {}'s is not an independent check; FLOP/s is.",
                    hw.name
                ));
            }
            let mut c = checks(run, &hw);
            c.extend(jpt_checks(&hw, &rows, phases));
            c.sort_by_key(|x| (x.role, x.phase));
            c
        }
        Some(Err(e)) => {
            notes.push(format!("No comparison with this machine: {e}"));
            Vec::new()
        }
    };
    let full_size = match crate::project::seed_comparison() {
        Ok(c) => Some(c),
        Err(e) => {
            notes.push(format!("No full-size comparison: {e}"));
            None
        }
    };
    ProjectionSection {
        notes,
        rows,
        this_machine,
        full_size,
    }
}

/// Measured FLOP/s, power and J/FLOP against the projection for the machine the run used (no PUE
/// on either side: a local measurement has no data-centre overhead).
fn checks(run: &RunData, hw: &HardwareProfile) -> Vec<ProjectionCheck> {
    let c = calibrate(&summarize_run(&run.header, &run.records), hw);
    let src = label(hw);
    let mut out = Vec::new();
    for p in &c.phases {
        let energy = p.source.map_or("unknown", |s| s.label());
        let scope = p.scope.as_deref();
        let mut push = |metric: &str, unit: &str, projected: Figure, measured: Figure| {
            if projected.value > 0.0 {
                out.push(ProjectionCheck {
                    hardware: hw.name.clone(),
                    role: p.role,
                    phase: p.phase,
                    metric: metric.into(),
                    measured_over_projected: measured.value / projected.value,
                    projected: Figure {
                        unit: unit.into(),
                        ..projected
                    },
                    measured,
                });
            }
        };
        push(
            "FLOP/s",
            "FLOP/s",
            Figure::new(p.projected_flops_per_s, "FLOP/s", &src),
            Figure::new(
                p.measured_flops_per_s,
                "FLOP/s",
                super::document::source::EXECUTED_FLOPS,
            ),
        );
        if let Some(w) = p.measured_power_w {
            push(
                "power",
                "W",
                Figure::new(p.projected_power_w, "W", &src)
                    .with_scope(Some(p.projected_power_scope.label())),
                Figure::new(w, "W", energy).with_scope(scope),
            );
        }
        if let Some(j) = p.measured_joules_per_flop {
            push(
                "J/FLOP",
                "J/FLOP",
                Figure::new(p.projected_joules_per_flop, "J/FLOP", &src),
                Figure::new(j, "J/FLOP", energy).with_scope(scope),
            );
        }
    }
    out
}

/// Measured J/token against this machine's projected J/token, PUE taken off the projection.
fn jpt_checks(
    hw: &HardwareProfile,
    rows: &[ProjectionRow],
    phases: &[PhaseRow],
) -> Vec<ProjectionCheck> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.hardware == hw.name) {
        let measured = phases
            .iter()
            .find(|p| p.phase == row.phase)
            .and_then(|p| p.side(row.role))
            .and_then(|p| p.joules_per_token.clone());
        let Some(measured) = measured else { continue };
        let projected = Figure {
            value: row.joules_per_token.value / row.pue,
            scope: Some(format!("{}, no PUE", row.power_scope)),
            ..row.joules_per_token.clone()
        };
        if projected.value > 0.0 {
            out.push(ProjectionCheck {
                hardware: hw.name.clone(),
                role: row.role,
                phase: row.phase,
                metric: "J/token".into(),
                measured_over_projected: measured.value / projected.value,
                projected,
                measured,
            });
        }
    }
    out
}
