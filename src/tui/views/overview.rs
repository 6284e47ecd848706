//! Overview: sparse and dense side by side (power, energy and FLOPs per token, speed, utilisation,
//! energy per FLOP, loss), their ratios, and where the energy figures come from.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Chart, Dataset, GraphType, Paragraph, Row, Table, Widget};

use super::charts::{axis, bounds, thin, Series};
use crate::accounting::params;
use crate::project::TrainingProjection;
use crate::runlog::PhaseSummary;
use crate::tui::app::App;
use crate::tui::format::{estimate, or_dash};
use crate::tui::theme;
use crate::tui::whatif::{glam_rows, ProjectionRow, GLAM_DENSE, GLAM_SPARSE, GLAM_TOKENS};
use crate::units::{count, duration, in_prefix_of, loss, percent, ratio, si, sig3, FlopPerSecond};
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

pub const PHASES: [Phase; 3] = [Phase::Train, Phase::Prefill, Phase::Decode];

/// Below this width the two models' columns no longer fit side by side; one table holds both.
const TWO_COLUMNS_WIDTH: u16 = 136;

pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    let [top, ratios, note] = Layout::vertical([
        Constraint::Min(8),
        Constraint::Length(7),
        Constraint::Length(2),
    ])
    .areas(area);
    let s = &app.state;
    let all_power = s
        .power
        .values()
        .chain(s.step_power.values())
        .map(|v| v.as_slice());
    let y = bounds(all_power, |p| p.1).map(|[_, hi]| [0.0, hi * 1.1]);
    let x = [0.0, s.t_s.max(1.0)];
    if area.width >= TWO_COLUMNS_WIDTH {
        let shown = projected_rows(app);
        let seed_lines = u16::from(app.projection.seed.is_some());
        let proj_h = if shown.is_empty() || area.height < 36 {
            0
        } else {
            shown.len() as u16 + 2 + seed_lines
        };
        let [top, proj] =
            Layout::vertical([Constraint::Min(8), Constraint::Length(proj_h)]).areas(top);
        if proj_h > 0 {
            projected_block(app, &shown, proj, buf);
        }
        let [left, right] = Layout::horizontal([Constraint::Percentage(50); 2]).areas(top);
        column(app, Role::Sparse, x, y, left, buf);
        column(app, Role::Dense, x, y, right, buf);
    } else {
        compact(app, x, y, top, buf);
    }
    ratio_block(app, ratios, buf);
    footnote(app, note, buf);
}

/// Chips the Overview projects the full-size pair onto (those of them that are loaded).
const OVERVIEW_CHIPS: [&str; 3] = ["tpu-v4", "tpu-v5p", "h100-sxm"];

fn projected_rows(app: &App) -> Vec<ProjectionRow> {
    glam_rows(&app.projection, &app.what_if)
        .into_iter()
        .filter(|r| OVERVIEW_CHIPS.contains(&r.hardware.as_str()))
        .collect()
}

/// The full-size GLaM pair on a few chips, with the Projections view's what-if settings.
fn projected_block(app: &App, rows: &[ProjectionRow], area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(format!(
        " projected: {GLAM_SPARSE} vs {GLAM_DENSE}, {} tokens on {} chips (more in Projections) ",
        count(GLAM_TOKENS),
        app.what_if.chips
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let one = |p: &Result<TrainingProjection, String>| match p {
        Ok(p) => format!(
            "{:>9} · {:>9} · {:>8} CO2e",
            duration(p.seconds),
            si(p.energy_j / 3600.0, "Wh"),
            super::projections::co2e(p.co2e_tonnes)
        ),
        Err(_) => "n/a".into(),
    };
    let lines: Vec<Line> = rows
        .iter()
        .map(|r| {
            Line::from(vec![
                Span::raw(format!("{:<10}", r.hardware)),
                Span::styled(
                    format!("sparse {}", one(&r.sparse)),
                    theme::role(Role::Sparse),
                ),
                Span::raw("   "),
                Span::styled(format!("dense {}", one(&r.dense)), theme::role(Role::Dense)),
                Span::raw(format!(
                    "   sparse÷dense energy {}",
                    or_dash(r.energy_ratio().map(ratio))
                )),
            ])
        })
        .collect();
    let mut lines = lines;
    if let Some(c) = &app.projection.seed {
        let mwh = |m: &str| {
            c.row(m)
                .map_or("—".into(), |r| si(r.training.energy_mwh * 1e6, "Wh"))
        };
        let gflop = |m: &str| {
            c.row(m)
                .map_or("—".into(), |r| sig3(r.inference_flops_per_token / 1e9))
        };
        let (glam, gpt3) = (crate::project::seed::GLAM, crate::project::seed::GPT3);
        lines.push(Line::from(format!(
            "same quality: GLaM {} vs GPT-3 {} projected, {} vs {} GFLOP/tok; published (Du et al. 2022): 456 vs 1,287 MWh, 180 vs 350",
            mwh(glam),
            mwh(gpt3),
            gflop(glam),
            gflop(gpt3),
        )));
    }
    Paragraph::new(lines).render(inner, buf);
}

/// Both models in one table over one power chart, for narrow terminals.
fn compact(app: &App, x: [f64; 2], y: Option<[f64; 2]>, area: Rect, buf: &mut Buffer) {
    let [table, chart] = Layout::vertical([Constraint::Length(9), Constraint::Min(3)]).areas(area);
    let block = Block::bordered().title(Line::from(
        [Role::Sparse, Role::Dense]
            .iter()
            .flat_map(|&r| {
                [
                    Span::styled(format!(" {} ", r.label()), theme::role(r)),
                    Span::raw(format!("{} ", app.state.model_name(r).unwrap_or("—"))),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    let inner = block.inner(table);
    block.render(table, buf);
    phase_table(app, &[Role::Sparse, Role::Dense], inner, buf);
    let block = Block::bordered().title(" power while each model's steps ran ");
    let inner = block.inner(chart);
    block.render(chart, buf);
    power_chart(app, &[Role::Sparse, Role::Dense], x, y, inner, buf);
}

fn column(app: &App, role: Role, x: [f64; 2], y: Option<[f64; 2]>, area: Rect, buf: &mut Buffer) {
    let s = &app.state;
    let mut title = vec![Span::styled(
        format!(" {} ", role.label()),
        theme::role(role).add_modifier(ratatui::style::Modifier::BOLD),
    )];
    match s.header.as_ref().and_then(|h| h.model(role)) {
        Some(p) => {
            let n = params(p);
            let shape = if p.is_sparse() {
                format!(
                    " · {} experts, top-{} · {} params, {} active per token",
                    p.experts,
                    p.top_k,
                    count(n.total),
                    count(n.active)
                )
            } else {
                format!(" · {} params", count(n.total))
            };
            title.push(Span::raw(format!("{}{shape} ", p.name)));
        }
        None => title.push(Span::styled("not in this run ", theme::dim())),
    }
    let block = Block::bordered()
        .title(Line::from(title))
        .border_style(theme::role(role));
    let inner = block.inner(area);
    block.render(area, buf);
    let [chart, table, extra] = Layout::vertical([
        Constraint::Min(5),
        Constraint::Length(4),
        Constraint::Length(2),
    ])
    .areas(inner);
    power_chart(app, &[role], x, y, chart, buf);
    phase_table(app, &[role], table, buf);
    extra_lines(app, role, extra, buf);
}

fn power_chart(
    app: &App,
    roles: &[Role],
    x: [f64; 2],
    y: Option<[f64; 2]>,
    area: Rect,
    buf: &mut Buffer,
) {
    let s = &app.state;
    let Some(y) = y else {
        Paragraph::new(Line::styled("power: no readings yet", theme::dim())).render(area, buf);
        return;
    };
    let max_points = 2 * area.width as usize;
    let series: Vec<(Role, Series, Series)> = roles
        .iter()
        .map(|r| {
            let get = |m: &std::collections::BTreeMap<Role, Vec<(f64, f64)>>| {
                thin(m.get(r).map_or(&[][..], |v| v), max_points)
            };
            (*r, get(&s.power), get(&s.step_power))
        })
        .collect();
    let mut datasets = Vec::new();
    for (role, readings, steps) in &series {
        let name = if roles.len() > 1 { role.label() } else { "" };
        datasets.push(
            Dataset::default()
                .name(format!("{name} sensor W").trim_start().to_string())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(theme::role(*role))
                .data(readings),
        );
        if roles.len() == 1 {
            datasets.push(
                Dataset::default()
                    .name("step mean W")
                    .marker(Marker::Dot)
                    .graph_type(GraphType::Scatter)
                    .style(Style::new())
                    .data(steps),
            );
        }
    }
    Chart::new(datasets)
        .x_axis(axis("", x, "s").style(theme::dim()))
        .y_axis(axis("", y, "W").style(theme::dim()))
        .render(area, buf);
}

fn phase_of(app: &App, role: Role, p: Phase) -> Option<&PhaseSummary> {
    app.state.summary()?.model(role)?.phase(p)
}

fn phase_table(app: &App, roles: &[Role], area: Rect, buf: &mut Buffer) {
    let label_w: u16 = if roles.len() > 1 { 14 } else { 7 };
    let header = Row::new([
        "phase",
        "J/tok ±95% CI",
        "FLOP/tok",
        "tok/s",
        "util",
        "J/FLOP",
    ])
    .style(theme::header());
    let rows = roles.iter().flat_map(|&role| {
        PHASES.iter().map(move |&p| {
            let ph = phase_of(app, role, p);
            let jpt = ph
                .and_then(|x| x.joules_per_token.as_ref())
                .map(|j| estimate(&j.total, "J"));
            let fpt = ph
                .filter(|x| x.tokens > 0)
                .map(|x| si(x.flops_per_token, "FLOP"));
            let tps = ph.and_then(|x| x.tokens_per_s).map(|e| si(e.mean, ""));
            // Against the run's peak (measured, or its profile's), never above 100%.
            let util = ph
                .and_then(|x| x.utilization)
                .map(|u| percent(u.min(1.0), 1));
            let jpf = ph.and_then(|x| x.joules_per_flop).map(|j| si(j, "J"));
            let label = if roles.len() > 1 {
                format!("{} {}", role.label(), p.label())
            } else {
                p.label().to_string()
            };
            let row = Row::new([
                label,
                or_dash(jpt),
                or_dash(fpt),
                or_dash(tps),
                or_dash(util),
                or_dash(jpf),
            ]);
            if roles.len() > 1 {
                row.style(theme::role(role))
            } else {
                row
            }
        })
    });
    Table::new(
        rows,
        [
            Constraint::Length(label_w),
            Constraint::Length(21),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .render(area, buf);
}

fn extra_lines(app: &App, role: Role, area: Rect, buf: &mut Buffer) {
    let s = &app.state;
    let idle: Vec<String> = PHASES
        .iter()
        .map(|&p| {
            let v = phase_of(app, role, p)
                .and_then(|x| x.joules_per_token.as_ref()?.idle_subtracted)
                .map(|e| si(e.mean, "J"));
            format!("{} {}", p.label(), or_dash(v))
        })
        .collect();
    let model = s.summary().and_then(|x| x.model(role));
    let train_loss = model
        .and_then(|m| m.phase(Phase::Train)?.last_loss)
        .map(loss);
    let val_loss = model.and_then(|m| m.val_loss).map(loss);
    let steps: Vec<String> = PHASES
        .iter()
        .map(|&p| {
            format!(
                "{} {}",
                p.label(),
                s.steps.get(&(role, p)).copied().unwrap_or(0)
            )
        })
        .collect();
    Paragraph::new(vec![
        Line::from(format!("idle-subtracted: {}", idle.join(" · "))),
        Line::from(format!(
            "loss: train {} · val {}   steps: {}",
            or_dash(train_loss),
            or_dash(val_loss),
            steps.join(" ")
        )),
    ])
    .render(area, buf);
}

/// The first answer: each model's energy to the target validation loss and their ratio, with
/// 95% intervals (`summary.json`'s `to_target`), and where the validation curves stand.
fn target_lines(app: &App) -> Vec<Line<'static>> {
    let Some(t) = app.state.summary().and_then(|s| s.to_target.as_ref()) else {
        return vec![Line::styled(
            "to target: no validation loss of both models yet",
            theme::dim(),
        )];
    };
    let iv = |x: Option<&crate::runlog::Interval>| {
        x.map_or("not reached".into(), |x| {
            format!(
                "{} [{}, {}{}]",
                si(x.mean, "J"),
                in_prefix_of(x.ci95[0], x.mean),
                in_prefix_of(x.ci95[1], x.mean),
                if x.open_above { "+" } else { "" }
            )
        })
    };
    let joules = |r: Role| iv(t.model(r).and_then(|m| m.joules.as_ref()));
    let ratio = t
        .ratio
        .as_ref()
        .and_then(|r| r.joules.as_ref())
        .map_or("—".into(), |r| {
            format!(
                "{} [{}, {}]",
                ratio(r.mean),
                ratio(r.ci95[0]),
                ratio(r.ci95[1])
            )
        });
    let src = match t.source {
        Some(EnergySource::Estimate) => "estimate, not measured".to_string(),
        Some(s) => s.label().to_string(),
        None => "no energy".into(),
    };
    let lead = match t.sparse_ahead_at_end {
        Some(true) => "sparse ahead at the end",
        Some(false) => "sparse BEHIND at the end",
        None => "",
    };
    vec![
        Line::from(vec![
            Span::styled(
                format!("to val loss {}: ", loss(t.target_loss)),
                theme::header(),
            ),
            Span::styled(format!("sparse {}", joules(Role::Sparse)), theme::role(Role::Sparse)),
            Span::raw(" · "),
            Span::styled(format!("dense {}", joules(Role::Dense)), theme::role(Role::Dense)),
            Span::raw(format!(" · S÷D {ratio} ({src})")),
        ]),
        Line::styled(
            format!(
                "  training steps' energy, warm-up in, evals out; 95% CI over eval sequences and windows; {} curve crossing(s), {lead}",
                t.lead_changes.len()
            ),
            theme::dim(),
        ),
    ]
}

fn ratio_block(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered()
        .title(" quality per joule, then per token: sparse ÷ dense (below 1×: sparse costs less) ");
    let inner = block.inner(area);
    block.render(area, buf);
    let ratios = app
        .state
        .summary()
        .map(|s| s.ratios.as_slice())
        .unwrap_or(&[]);
    let fmt = |x: Option<f64>| or_dash(x.map(ratio));
    let lines: Vec<Line> = PHASES
        .iter()
        .map(|&p| match ratios.iter().find(|r| r.phase == p) {
            Some(r) => Line::from(format!(
                "{:<8} J/tok {:<8} FLOP/tok {:<8} tok/s {}",
                p.label(),
                fmt(r.joules_per_token),
                fmt(r.flops_per_token),
                fmt(r.tokens_per_s)
            )),
            None => Line::styled(
                format!("{:<8} not measured for both models yet", p.label()),
                theme::dim(),
            ),
        })
        .collect();
    let lines: Vec<Line> = target_lines(app).into_iter().chain(lines).collect();
    Paragraph::new(lines).render(inner, buf);
}

fn footnote(app: &App, area: Rect, buf: &mut Buffer) {
    let peak = app.state.summary().and_then(|s| s.peak.as_ref());
    let util = match (peak, &app.machine_peak) {
        (Some(p), _) => match &p.replaced {
            Some(r) => format!(
                " util = achieved FLOP/s ÷ this run's best {} (above the {} peak).",
                FlopPerSecond(p.flops_per_s),
                r.from
            ),
            None => format!(
                " util = achieved FLOP/s ÷ {} peak {} ({}).",
                p.from,
                FlopPerSecond(p.flops_per_s),
                p.dtype
            ),
        },
        (None, Some(m)) => format!(
            " util = achieved FLOP/s ÷ {} peak {} ({}).",
            m.hardware,
            FlopPerSecond(m.flops_per_s),
            m.precision
        ),
        (None, None) => " util: no peak known for this machine.".into(),
    };
    let source = match app.state.source() {
        Some(EnergySource::Estimate) => Line::from(vec![
            Span::styled(
                "Energy is an ESTIMATE (CPU time × profile watts), not a sensor reading.",
                theme::warn(),
            ),
            Span::styled(util, theme::dim()),
        ]),
        Some(s) => Line::from(vec![
            Span::raw(format!(
                "Energy measured by {}; J/tok includes the idle baseline, idle-subtracted removes it.",
                s.label()
            )),
            Span::styled(util, theme::dim()),
        ]),
        None => Line::styled("No energy source yet.", theme::dim()),
    };
    Paragraph::new(vec![
        Line::styled(
            "J/tok per token trained (train), prompt token (prefill), generated token (decode); \
             warm-up left out; ± = 95% CI over steps.",
            theme::dim(),
        ),
        source,
    ])
    .render(area, buf);
}
