//! The report's charts as data: J/token with error bars, power over time, loss curves, expert load.

use super::document::*;
use super::format::source_label;
use super::page::{Bar, Chart, HLine, Series};
use crate::vocab::{Phase, Role};

/// Colours of the two sides, used everywhere in the report.
pub const SPARSE: &str = "#1b6ca8";
pub const DENSE: &str = "#d9782d";

pub fn side_colour(role: Role) -> &'static str {
    match role {
        Role::Sparse => SPARSE,
        Role::Dense => DENSE,
    }
}

/// One bar chart per phase: J/token of each model with its 95% interval.
pub fn joules_per_token(phases: &[PhaseRow]) -> Vec<Chart> {
    phases
        .iter()
        .filter_map(|row| {
            let bars: Vec<Bar> = [Role::Sparse, Role::Dense]
                .into_iter()
                .filter_map(|role| {
                    let p = row.side(role)?;
                    let j = p.joules_per_token.as_ref()?;
                    Some(Bar {
                        label: format!("{} ({})", p.model, role.label()),
                        color: side_colour(role),
                        value: j.value,
                        ci95: j.ci95,
                    })
                })
                .collect();
            let source = &row
                .side(Role::Sparse)
                .or(row.side(Role::Dense))?
                .joules_per_token
                .as_ref()?
                .source;
            let title = format!(
                "J per {}, {} ({}), 95% CI",
                per_one(row.phase),
                row.phase.label(),
                source_label(source)
            );
            // Three phases side by side: each chart a third of the page wide.
            (!bars.is_empty()).then(|| Chart::Bars {
                title,
                y_label: "J/token".into(),
                bars,
                narrow: true,
            })
        })
        .collect()
}

/// J/token of both runs of a comparison, one chart per phase: A and B of each side.
pub fn compared_joules_per_token(a: &Report, b: &Report) -> Vec<Chart> {
    let mut charts = Vec::new();
    for phase in [Phase::Train, Phase::Prefill, Phase::Decode] {
        let mut bars = Vec::new();
        for role in [Role::Sparse, Role::Dense] {
            for (name, r) in [("A", a), ("B", b)] {
                let side = r.phases.iter().find(|p| p.phase == phase);
                let Some(p) = side.and_then(|p| p.side(role)) else {
                    continue;
                };
                let Some(j) = &p.joules_per_token else {
                    continue;
                };
                bars.push(Bar {
                    label: format!("{name} {}", role.label()),
                    color: side_colour(role),
                    value: j.value,
                    ci95: j.ci95,
                });
            }
        }
        if !bars.is_empty() {
            charts.push(Chart::Bars {
                title: format!("J/token, {}, A against B, 95% CI", phase.label()),
                y_label: "J/token".into(),
                bars,
                narrow: false,
            });
        }
    }
    charts
}

/// Power over the run with the idle baseline; none with fewer than two samples.
pub fn power(r: &Report) -> Option<Chart> {
    let p = &r.power;
    if p.points.len() < 2 {
        return None;
    }
    let source = source_label(p.source.as_deref().unwrap_or("?"));
    Some(Chart::Lines {
        title: format!("Power over time, {}", p.scope.as_deref().unwrap_or("")),
        x_label: "seconds since start".into(),
        y_label: "W".into(),
        series: vec![Series {
            name: format!("power ({source})"),
            color: SPARSE,
            points: p.points.iter().map(|q| (q[0], q[1])).collect(),
        }],
        hline: r.idle.as_ref().map(|i| HLine {
            name: "idle baseline".into(),
            y: i.power_w.value,
        }),
    })
}

/// Loss against tokens trained and against FLOPs; none when no loss was recorded.
pub fn loss(de: &DataEfficiency) -> Vec<Chart> {
    if de.curves.iter().all(|c| c.points.is_empty()) {
        return Vec::new();
    }
    let series = |x: fn(&LossPoint) -> f64| -> Vec<Series> {
        de.curves
            .iter()
            .map(|c| Series {
                name: format!("{} ({})", c.model, c.role.label()),
                color: side_colour(c.role),
                points: c.points.iter().map(|p| (x(p), p.loss_nats)).collect(),
            })
            .collect()
    };
    let y_label = format!("{} (nats/token)", de.basis);
    vec![
        Chart::Lines {
            title: format!("{} against tokens trained", de.basis),
            x_label: "tokens trained".into(),
            y_label: y_label.clone(),
            series: series(|p| p.train_tokens as f64),
            hline: None,
        },
        Chart::Lines {
            title: format!("{} against training FLOPs", de.basis),
            x_label: "FLOPs executed".into(),
            y_label,
            series: series(|p| p.train_flops),
            hline: None,
        },
    ]
}

/// Tokens per expert, one row per MoE layer.
pub fn expert_load(e: &ExpertLoad) -> Chart {
    Chart::Heatmap {
        title: format!("Expert load, {} {}", e.model, e.phase.label()),
        row_labels: e
            .layers
            .iter()
            .map(|l| match l.block {
                Some(b) => format!("MoE {} (block {b})", l.moe_layer),
                None => format!("MoE {}", l.moe_layer),
            })
            .collect(),
        rows: e
            .layers
            .iter()
            .map(|l| l.tokens_per_expert.clone())
            .collect(),
    }
}
