//! Projections: the measured workload and its full-size GLaM counterpart trained on every hardware
//! profile (time, J/token, energy, CO2e), sparse against dense, under the what-if settings; the
//! selected chip's assumptions and GLaM serving on it; the run against its own machine's profile.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Widget};

use crate::project::{InferenceComparison, TrainingProjection};
use crate::tui::app::App;
use crate::tui::format::or_dash;
use crate::tui::theme;
use crate::tui::whatif::{
    comparison, comparison_inference, comparison_rows, machine_calibration, measured_rows,
    ProjectionRow,
};
use crate::units::{duration, ratio, si};
use crate::vocab::{Phase, Role};

/// Column widths: chip, then time, J/token, energy, CO2e for sparse and for dense, then the ratio.
const WIDTHS: [u16; 10] = [12, 10, 9, 10, 9, 10, 9, 10, 9, 11];

/// Tonnes of CO2e, or kilograms and grams below a tonne.
pub fn co2e(tonnes: f64) -> String {
    if tonnes >= 1.0 {
        si(tonnes, "t")
    } else {
        si(tonnes * 1e6, "g")
    }
}

pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    let inputs = &app.projection;
    if inputs.hardware.is_empty() {
        Paragraph::new(Line::styled(
            "No hardware profiles loaded (see the Log view).",
            theme::dim(),
        ))
        .render(area, buf);
        return;
    }
    let n = inputs.hardware.len() as u16;
    let seed_h = inputs.seed.as_ref().map_or(0, |c| c.rows.len() as u16 + 4);
    let [settings, glam, seed, measured, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(n + 4),
        Constraint::Length(seed_h),
        Constraint::Length(n + 4),
        Constraint::Min(0),
    ])
    .areas(area);
    if let Some(c) = &inputs.seed {
        seed_block(c, seed, buf);
    }
    settings_line(app, settings, buf);
    let c = comparison(&app.what_if);
    let names = inputs
        .pair(app.what_if.comparison)
        .map_or(("—", "—"), |_| (c.sparse, c.dense));
    // The default (GLaM's) title as before; another comparison names its tokens' source and `m`.
    let more = if app.what_if.comparison == 0 {
        String::new()
    } else {
        format!("({}; m: next comparison) ", c.tokens_source)
    };
    table(
        app,
        &comparison_rows(inputs, &app.what_if),
        &format!(
            " full size: {} vs {}, {} tokens on {} chips each {more}",
            names.0,
            names.1,
            si(c.tokens, "").trim_end(),
            app.what_if.chips
        ),
        names,
        glam,
        buf,
    );
    let s = &app.state;
    let tokens = |r: Role| s.training.get(&r).map_or(0, |c| c.tokens);
    let measured_names = (
        s.model_name(Role::Sparse).unwrap_or("sparse"),
        s.model_name(Role::Dense).unwrap_or("dense"),
    );
    table(
        app,
        &measured_rows(inputs, &app.what_if, s),
        &format!(
            " measured here: {} vs {}, their executed training FLOPs ({} and {} tokens), on 1 chip ",
            measured_names.0,
            measured_names.1,
            si(tokens(Role::Sparse) as f64, "").trim_end(),
            si(tokens(Role::Dense) as f64, "").trim_end()
        ),
        measured_names,
        measured,
        buf,
    );
    detail_lines(app, detail, buf);
}

/// GLaM 64B/64E against its dense base and GPT-3 175B, projected beside the published figures.
fn seed_block(c: &crate::project::SeedComparison, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(
        " full size at the same quality: GLaM vs GPT-3 (as published runs were set up; what-if keys do not apply) ",
    );
    let inner = block.inner(area);
    block.render(area, buf);
    let [body, line] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    let rows = c.cells().into_iter().map(Row::new);
    Table::new(
        rows,
        [
            Constraint::Length(15),
            Constraint::Length(24),
            Constraint::Length(7),
            Constraint::Length(14),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new([
            "model",
            "compared as",
            "tokens",
            "chips",
            "MWh proj.",
            "MWh publ.",
            "GFLOP/tok",
            "GFLOP publ.",
        ])
        .style(theme::header()),
    )
    .render(body, buf);
    Line::styled(
        format!(
            "GLaM ÷ GPT-3 energy {} projected, {} published (Du et al. 2022, Table 1); GLaM ÷ its dense base {} per token at the same width",
            ratio(c.energy_vs_gpt3),
            ratio(c.published_energy_vs_gpt3),
            ratio(c.energy_vs_dense)
        ),
        theme::dim(),
    )
    .render(line, buf);
}

fn settings_line(app: &App, area: Rect, buf: &mut Buffer) {
    let w = &app.what_if;
    let or_default = |x: Option<String>| x.unwrap_or_else(|| "chip default".into());
    Line::from(vec![
        Span::styled("what-if ", theme::header()),
        Span::raw(format!(
            "chips {} (full-size run) · utilisation: {} · PUE: {} · grid {:.3} kgCO2e/kWh{}",
            w.chips,
            or_default(w.utilization.map(|u| format!("{:.0}%", 100.0 * u))),
            or_default(w.pue.map(|p| format!("{p:.2}"))),
            w.grid_kg_per_kwh,
            if w.grid_kg_per_kwh == crate::project::DEFAULT_GRID_KG_PER_KWH {
                " (Patterson et al. 2021, US)"
            } else {
                ""
            }
        )),
    ])
    .render(area, buf);
}

fn cells(p: &Result<TrainingProjection, String>) -> [String; 4] {
    match p {
        Ok(p) => [
            duration(p.seconds),
            or_dash(p.joules_per_token.map(|j| si(j, "J"))),
            si(p.energy_j / 3600.0, "Wh"),
            co2e(p.co2e_tonnes),
        ],
        Err(_) => ["n/a".into(), "—".into(), "—".into(), "—".into()],
    }
}

fn table(
    app: &App,
    rows: &[ProjectionRow],
    title: &str,
    names: (&str, &str),
    area: Rect,
    buf: &mut Buffer,
) {
    let block = Block::bordered().title(title.to_string());
    let inner = block.inner(area);
    block.render(area, buf);
    if rows.is_empty() {
        Paragraph::new(Line::styled(
            "nothing to project yet: both models need training steps",
            theme::dim(),
        ))
        .render(inner, buf);
        return;
    }
    let [groups, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    // A line over the header names the model of each group of four columns.
    let group_w = |r: std::ops::Range<usize>| WIDTHS[r].iter().map(|w| w + 1).sum::<u16>() as usize;
    let label = |name: &str, w: usize| format!("{:─^w$}", format!(" {name} "), w = w - 1) + " ";
    Line::from(vec![
        Span::raw(" ".repeat(group_w(0..1))),
        Span::styled(
            label(&format!("sparse {}", names.0), group_w(1..5)),
            theme::role(Role::Sparse),
        ),
        Span::styled(
            label(&format!("dense {}", names.1), group_w(5..9)),
            theme::role(Role::Dense),
        ),
    ])
    .render(groups, buf);
    let header = Row::new([
        "chip",
        "time",
        "J/tok",
        "energy",
        "CO2e",
        "time",
        "J/tok",
        "energy",
        "CO2e",
        "S÷D energy",
    ])
    .style(theme::header());
    let body_rows = rows.iter().enumerate().map(|(i, r)| {
        let mut c: Vec<Cell> = vec![Cell::from(r.hardware.clone())];
        c.extend(cells(&r.sparse).map(|x| Cell::from(x).style(theme::role(Role::Sparse))));
        c.extend(cells(&r.dense).map(|x| Cell::from(x).style(theme::role(Role::Dense))));
        c.push(Cell::from(or_dash(r.energy_ratio().map(ratio))));
        let row = Row::new(c);
        if i == app.what_if.selected {
            row.style(theme::selected())
        } else {
            row
        }
    });
    Table::new(body_rows, WIDTHS.map(Constraint::Length))
        .header(header)
        .render(body, buf);
}

fn inference_line(c: &InferenceComparison) -> String {
    let d = |x: &crate::project::PhaseRoofline| {
        format!(
            "{} tok/s, {}/tok {}-bound",
            si(x.tokens_per_s, "").trim_end(),
            si(x.joules_per_token, "J"),
            x.bound.label()
        )
    };
    format!(
        "decode: sparse {} vs dense {} → {} the energy per token{}",
        d(&c.sparse.decode),
        d(&c.dense.decode),
        ratio(c.decode_joules_per_token_ratio),
        if c.sparse.fits_in_memory {
            ""
        } else {
            " (sparse weights do not fit: more chips needed)"
        }
    )
}

fn detail_lines(app: &App, area: Rect, buf: &mut Buffer) {
    let inputs = &app.projection;
    let Some(hw) = inputs.hardware.get(app.what_if.selected) else {
        return;
    };
    let rows = comparison_rows(inputs, &app.what_if);
    let sel = rows.iter().find(|r| r.hardware == hw.name);
    let mut lines = Vec::new();
    match sel.map(|r| &r.sparse) {
        Some(Ok(p)) => lines.push(Line::from(format!(
            "{}: {} peak {} per chip · utilisation {:.1}% ({}) · {} W per chip ({}) · PUE {:.2}",
            hw.name,
            p.precision.label(),
            si(p.peak_flops_per_chip, "FLOP/s"),
            100.0 * p.mfu,
            p.utilization_source,
            si(p.power_w_per_chip, "").trim_end(),
            p.power_scope.label(),
            p.pue
        ))),
        Some(Err(e)) => lines.push(Line::styled(format!("{}: {e}", hw.name), theme::warn())),
        None => {}
    }
    let spec = comparison(&app.what_if);
    match comparison_inference(inputs, &app.what_if) {
        Some(Ok(c)) => {
            // GLaM's 64 experts on 64 chips: one expert each.
            let experts = inputs
                .pair(app.what_if.comparison)
                .map(|(sp, _)| sp.experts);
            let one_each = if experts == Some(spec.serve_chips) {
                " (one expert each)"
            } else {
                ""
            };
            lines.push(Line::from(format!(
                "serving {} on {} {} chips{one_each}, batch {}, context {}:",
                spec.sparse, spec.serve_chips, hw.name, spec.serve_batch, spec.serve_context
            )));
            lines.push(Line::from(format!("  {}", inference_line(&c))));
        }
        Some(Err(e)) => lines.push(Line::styled(format!("serving: {e}"), theme::warn())),
        None => {}
    }
    let cal = machine_calibration(inputs, app.state.header.as_ref(), app.state.summary());
    if let Some(cal) = cal {
        let c = cal
            .get(Role::Sparse, Phase::Train)
            .or_else(|| cal.get(Role::Dense, Phase::Train));
        if let Some(c) = c {
            lines.push(Line::from(format!(
                "this machine ({}): {} training reached {:.1}% of {}peak (profile assumes {:.0}%); J/FLOP measured {} vs projected {}",
                cal.hardware,
                c.model,
                100.0 * c.achieved_mfu,
                if cal.peak.replaced.is_some() {
                    "its best achieved "
                } else {
                    ""
                },
                100.0 * c.achieved_mfu / c.utilization_ratio,
                or_dash(c.measured_joules_per_flop.map(|j| si(j, "J"))),
                si(c.projected_joules_per_flop, "J"),
            )));
        }
    }
    lines.push(Line::styled(
        "time = FLOPs ÷ (chips × peak × utilisation); energy = chips × time × W per chip × PUE; CO2e = energy × grid. docs/projection.md",
        theme::dim(),
    ));
    Paragraph::new(lines)
        .style(Style::new())
        .wrap(ratatui::widgets::Wrap { trim: true })
        .block(Block::bordered().title(format!(" {} (↑/↓ selects) ", hw.name)))
        .render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buf: &Buffer) -> String {
        let a = buf.area;
        (a.top()..a.bottom())
            .map(|y| {
                (a.left()..a.right())
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    fn screen(app: &App) -> String {
        let area = Rect::new(0, 0, 140, 45);
        let mut buf = Buffer::empty(area);
        draw(app, area, &mut buf);
        text(&buf)
    }

    #[test]
    fn m_switches_the_full_size_comparison_and_wraps_back_to_glam() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/run-small");
        let mut app = App::replay(crate::runlog::read_run(&dir).expect("fixture run folder"));
        let glam = screen(&app);
        assert!(glam.contains("glam-64b-64e vs glam-64b-dense"), "{glam}");
        let key = |app: &mut App| {
            app.what_if
                .on_key(ratatui::crossterm::event::KeyCode::Char('m'), &[])
        };
        assert!(key(&mut app));
        let mixtral = screen(&app);
        assert!(
            mixtral.contains("mixtral-8x7b vs llama3-70b, 15.0 T tokens"),
            "{mixtral}"
        );
        assert!(mixtral.contains("serving mixtral-8x7b on 8 "), "{mixtral}");
        // The h100-sxm row projects both models (a time, not "n/a").
        let row = mixtral.lines().find(|l| l.contains("h100-sxm")).unwrap();
        assert!(!row.contains("n/a"), "{row}");
        key(&mut app);
        let deepseek = screen(&app);
        assert!(
            deepseek.contains("deepseek-v3 vs llama3-405b"),
            "{deepseek}"
        );
        key(&mut app);
        assert_eq!(screen(&app), glam);
    }

    #[test]
    fn carbon_is_shown_in_tonnes_from_one_tonne_and_in_grams_below() {
        assert_eq!(co2e(40.2), "40.2 t");
        assert_eq!(co2e(0.0123), "12.3 kg");
        assert_eq!(co2e(2e-9), "2.00 mg");
    }
}
