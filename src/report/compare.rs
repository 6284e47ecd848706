//! `report A B`: two runs side by side (before and after a change, or two machines), each figure
//! with B / A.

use super::charts;
use super::document::*;
use super::format::{num, opt, source_label, with_ci};
use super::page::{text, Block, Page, Tone};
use crate::vocab::{Phase, Role};

fn run_ref(r: &Report) -> RunRef {
    RunRef {
        dir: r.run.dir.clone(),
        id: r.run.id.clone(),
        device: r.machine.device.clone(),
        cpu_model: r.machine.cpu_model.clone(),
        source: r.sensor.source.clone(),
        scope: r.sensor.scope.clone(),
        complete: r.run.complete,
        status: r.run.status.clone(),
    }
}

type Pick = fn(&PhaseFigures) -> Option<&Figure>;

const METRICS: [(&str, Pick); 5] = [
    ("J/token", |p| p.joules_per_token.as_ref()),
    ("J/token idle-subtracted", |p| {
        p.joules_per_token_idle_subtracted.as_ref()
    }),
    ("FLOP/token", |p| Some(&p.flops_per_token)),
    ("token/s", |p| p.tokens_per_s.as_ref()),
    ("J/FLOP", |p| p.joules_per_flop.as_ref()),
];

type PickRatio = fn(&RatioFigures) -> Option<&Figure>;

const RATIO_METRICS: [(&str, PickRatio); 2] = [
    ("J/token ratio", |r| r.joules_per_token.as_ref()),
    ("FLOP/token ratio", |r| r.flops_per_token.as_ref()),
];

fn row(
    phase: Phase,
    role: &str,
    metric: &str,
    a: Option<&Figure>,
    b: Option<&Figure>,
) -> Option<CompareRow> {
    if a.is_none() && b.is_none() {
        return None;
    }
    let b_over_a = match (a, b) {
        (Some(a), Some(b)) if a.value != 0.0 => Some(b.value / a.value),
        _ => None,
    };
    Some(CompareRow {
        phase,
        role: role.into(),
        metric: metric.into(),
        a: a.cloned(),
        b: b.cloned(),
        b_over_a,
    })
}

/// Compare two reports: every per-phase figure of both sides, and the sparse / dense ratios.
pub fn compare(a: &Report, b: &Report) -> Comparison {
    let mut rows = Vec::new();
    for phase in [Phase::Train, Phase::Prefill, Phase::Decode] {
        let pa = a.phases.iter().find(|p| p.phase == phase);
        let pb = b.phases.iter().find(|p| p.phase == phase);
        for role in [Role::Sparse, Role::Dense] {
            let (sa, sb) = (pa.and_then(|p| p.side(role)), pb.and_then(|p| p.side(role)));
            for (metric, pick) in METRICS {
                rows.extend(row(
                    phase,
                    role.label(),
                    metric,
                    sa.and_then(pick),
                    sb.and_then(pick),
                ));
            }
        }
        let (ra, rb) = (
            pa.and_then(|p| p.ratio.as_ref()),
            pb.and_then(|p| p.ratio.as_ref()),
        );
        for (metric, pick) in RATIO_METRICS {
            rows.extend(row(
                phase,
                "sparse/dense",
                metric,
                ra.and_then(pick),
                rb.and_then(pick),
            ));
        }
    }
    Comparison {
        report_format_version: REPORT_FORMAT_VERSION,
        a: run_ref(a),
        b: run_ref(b),
        rows,
        warnings: warnings(a, b),
    }
}

fn warnings(a: &Report, b: &Report) -> Vec<String> {
    let mut w = Vec::new();
    if a.sensor.source != b.sensor.source {
        w.push(format!(
            "Energy comes from different sources (A: {}, B: {}): the energy figures do not compare as like with like.",
            source_label(&a.sensor.source),
            source_label(&b.sensor.source)
        ));
    } else if a.sensor.scope != b.sensor.scope {
        w.push(format!(
            "The sensors cover different scopes (A: {}, B: {}).",
            a.sensor.scope, b.sensor.scope
        ));
    }
    for (name, r) in [("A", a), ("B", b)] {
        if !r.sensor.is_measurement {
            w.push(format!(
                "{name}'s energy is an estimate, not a measurement."
            ));
        }
        if !r.run.complete {
            w.push(format!("{name}: {}", r.run.status));
        }
    }
    for role in [Role::Sparse, Role::Dense] {
        let name = |r: &Report| {
            r.models
                .iter()
                .find(|m| m.role == role)
                .map(|m| m.name.clone())
        };
        let (na, nb) = (name(a), name(b));
        if na != nb {
            w.push(format!(
                "The {} models differ (A: {}, B: {}).",
                role.label(),
                na.unwrap_or_else(|| "none".into()),
                nb.unwrap_or_else(|| "none".into())
            ));
        }
    }
    w
}

fn rows(c: &Comparison) -> Vec<Vec<String>> {
    c.rows
        .iter()
        .map(|r| {
            vec![
                r.phase.label().into(),
                r.role.clone(),
                r.metric.clone(),
                opt(r.a.as_ref(), with_ci),
                opt(r.b.as_ref(), with_ci),
                r.b_over_a.map_or("–".into(), num),
            ]
        })
        .collect()
}

const HEADER: [&str; 6] = ["phase", "side", "figure", "A", "B", "B / A"];

fn runs(c: &Comparison) -> Vec<Vec<String>> {
    [("A", &c.a), ("B", &c.b)]
        .into_iter()
        .map(|(n, r)| {
            vec![
                n.into(),
                r.id.clone(),
                r.dir.clone(),
                r.device.clone(),
                r.cpu_model.clone(),
                format!("{}, {}", source_label(&r.source), r.scope),
                if r.complete {
                    "finished".into()
                } else {
                    "cut off".into()
                },
            ]
        })
        .collect()
}

const RUN_HEADER: [&str; 7] = [
    "run",
    "id",
    "folder",
    "device",
    "CPU",
    "energy source, scope",
    "ended",
];

/// The comparison as one page: the two runs, the warnings, J/token charts (HTML) and every figure
/// with B / A. `a` and `b` are the two runs' reports (the charts read them).
pub fn page(c: &Comparison, a: &Report, b: &Report) -> Page {
    let mut p = Page {
        title: format!("sparsewatt comparison: {} against {}", c.a.id, c.b.id),
        blocks: Vec::new(),
    };
    p.heading(
        1,
        format!(
            "sparsewatt comparison: {} (A) against {} (B)",
            c.a.id, c.b.id
        ),
    );
    p.table(&RUN_HEADER, runs(c));
    if !c.warnings.is_empty() {
        let items = c.warnings.iter().map(|w| text(w.clone())).collect();
        p.blocks.push(Block::List(Tone::Warning, items));
    }
    p.charts(charts::compared_joules_per_token(a, b));
    p.heading(2, "Figures");
    p.table(&HEADER, rows(c));
    p.para("B / A below 1: B is lower (cheaper, or slower for token/s). Energy figures are means over measured steps ± the half-width of their 95% CI.");
    p
}
