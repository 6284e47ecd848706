//! The report's tables: header and rows of each, from the [`Report`]'s sections.

use super::document::*;
use super::format::{interval, num, opt, plain, source_label, with_ci};
use super::page::Table;
use crate::units::count;
use crate::vocab::{Phase, Role};

/// The answer table: J/token and FLOPs/token of both models per phase, with the ratios.
pub fn answer(phases: &[PhaseRow]) -> Table {
    Table::new(&ANSWER_HEADER, answer_rows(phases))
}

/// Every figure of each phase and model.
pub fn detail(phases: &[PhaseRow]) -> Table {
    Table::new(&DETAIL_HEADER, detail_rows(phases))
}

pub fn models(models: &[ModelSection]) -> Table {
    Table::new(&MODEL_HEADER, model_rows(models))
}

/// Tokens, FLOPs and joules each model needed to reach the same loss, and their ratios.
pub fn same_loss(s: &SameLoss) -> Table {
    Table::new(&["model", "tokens", "FLOPs", "joules"], same_loss_rows(s))
}

/// A loss curve, at most 20 points of it.
pub fn curve(c: &LossCurve) -> Table {
    let rows = thin(&c.points, 20)
        .into_iter()
        .map(|p| {
            vec![
                count(p.train_tokens as f64),
                count(p.train_flops),
                p.train_joules.map_or("–".into(), num),
                format!("{:.4}", p.loss_nats),
            ]
        })
        .collect();
    Table::new(
        &["tokens trained", "FLOPs", "joules", "loss (nats/token)"],
        rows,
    )
}

pub fn experts(e: &ExpertLoad) -> Table {
    Table::new(&EXPERT_HEADER, expert_rows(e))
}

pub fn projections(p: &ProjectionSection) -> Table {
    Table::new(&PROJECTION_HEADER, projection_rows(p))
}

/// This machine's projections against its measurements.
pub fn checks(p: &ProjectionSection) -> Table {
    Table::new(&CHECK_HEADER, check_rows(p))
}
const ANSWER_HEADER: [&str; 8] = [
    "phase",
    "sparse J/token ± 95% CI",
    "dense J/token ± 95% CI",
    "n (steps)",
    "J ratio [95% CI]",
    "sparse FLOP/token",
    "dense FLOP/token",
    "FLOP ratio",
];

fn answer_rows(phases: &[PhaseRow]) -> Vec<Vec<String>> {
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
                x.map_or("–".into(), |p| count(p.flops_per_token.value))
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

fn detail_rows(phases: &[PhaseRow]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in phases {
        for (role, p) in [(Role::Sparse, &r.sparse), (Role::Dense, &r.dense)] {
            let Some(p) = p else { continue };
            rows.push(vec![
                r.phase.label().into(),
                format!("{} ({})", p.model, role.label()),
                format!("{} ({})", p.steps, p.warmup_steps_excluded),
                count(p.tokens.value),
                num(p.seconds.value),
                opt(p.joules_per_token.as_ref(), plain),
                opt(p.joules_per_token.as_ref(), interval),
                opt(p.joules_per_token_idle_subtracted.as_ref(), with_ci),
                opt(p.tokens_per_s.as_ref(), with_ci),
                count(p.flops_per_s.value),
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

const DETAIL_HEADER: [&str; 13] = [
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

fn model_rows(models: &[ModelSection]) -> Vec<Vec<String>> {
    models
        .iter()
        .map(|m| {
            vec![
                m.role.label().into(),
                m.name.clone(),
                count(m.total_params.value),
                count(m.active_params.value),
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

const MODEL_HEADER: [&str; 10] = [
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

/// At most `max` evenly spaced points of a curve, always keeping the last.
fn thin(points: &[LossPoint], max: usize) -> Vec<&LossPoint> {
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

fn same_loss_rows(s: &SameLoss) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = s
        .reach
        .iter()
        .map(|r| {
            vec![
                format!("{} ({})", r.model, r.role.label()),
                count(r.tokens.value),
                count(r.flops.value),
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

fn expert_rows(e: &ExpertLoad) -> Vec<Vec<String>> {
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

const EXPERT_HEADER: [&str; 6] = [
    "MoE layer",
    "block",
    "tokens per expert",
    "busiest / mean",
    "CV",
    "idle experts",
];

/// One row per hardware profile and model: J/token of each phase side by side.
fn projection_rows(p: &ProjectionSection) -> Vec<Vec<String>> {
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

const PROJECTION_HEADER: [&str; 6] = [
    "hardware",
    "power",
    "model",
    "train J/token",
    "prefill J/token (bound)",
    "decode J/token (bound)",
];

fn check_rows(p: &ProjectionSection) -> Vec<Vec<String>> {
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

const CHECK_HEADER: [&str; 7] = [
    "hardware",
    "role",
    "phase",
    "figure",
    "projected",
    "measured",
    "measured / projected",
];
