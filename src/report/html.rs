//! `report.html`: one self-contained file (inline CSS and SVG, no script, nothing fetched) with the
//! Markdown's tables and the charts: power over time, loss curves, J/token with error bars, expert
//! load.

use std::fmt::Write;

use super::document::*;
use super::markdown as md;
use super::svg::{self, esc, Bar, HLine, Series, DENSE, SPARSE};
use crate::vocab::Role;

pub const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}.cutoff{background:#fde2e1;border:1px solid #c33;padding:0.6em 1em}
.done{background:#e6f2e6;border:1px solid #6a6;padding:0.6em 1em}.estimate{background:#fff4d6;border:1px solid #d9a400;padding:0.4em 1em}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg.chart{border:1px solid #ddd;max-width:100%;height:auto}svg.third{width:32%}code{background:#f4f4f4;padding:0 3px}footer{color:#666;font-size:0.85em;margin-top:2em}";

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut o = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>");
    for r in rows {
        o.push_str("<tr>");
        for c in r {
            let _ = write!(o, "<td>{}</td>", esc(c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>\n");
    o
}

fn side_colour(role: Role) -> &'static str {
    match role {
        Role::Sparse => SPARSE,
        Role::Dense => DENSE,
    }
}

/// One bar chart per phase: J/token of each model with its 95% interval.
pub fn jpt_charts(phases: &[PhaseRow]) -> Vec<String> {
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
            let source = row
                .side(Role::Sparse)
                .or(row.side(Role::Dense))?
                .joules_per_token
                .as_ref()?
                .source
                .clone();
            let title = format!(
                "J per {}, {} ({}), 95% CI",
                per_one(row.phase),
                row.phase.label(),
                super::format::source_label(&source)
            );
            // Three phases side by side: each chart a third of the page wide.
            (!bars.is_empty()).then(|| {
                svg::bar_chart(&title, "J/token", &bars).replacen(
                    "class=\"chart\"",
                    "class=\"chart third\"",
                    1,
                )
            })
        })
        .collect()
}

pub fn power_chart(r: &Report) -> Option<String> {
    let p = &r.power;
    if p.points.len() < 2 {
        return None;
    }
    let source = super::format::source_label(p.source.as_deref().unwrap_or("?"));
    let series = [Series {
        name: format!("power ({source})"),
        color: SPARSE,
        points: p.points.iter().map(|q| (q[0], q[1])).collect(),
    }];
    let idle = r.idle.as_ref().map(|i| HLine {
        name: "idle baseline".into(),
        y: i.power_w.value,
    });
    Some(svg::line_chart(
        &format!("Power over time, {}", p.scope.as_deref().unwrap_or("")),
        "seconds since start",
        "W",
        &series,
        idle.as_ref(),
    ))
}

pub fn loss_charts(de: &DataEfficiency) -> Vec<String> {
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
    let y = format!("{} (nats/token)", de.basis);
    vec![
        svg::line_chart(
            &format!("{} against tokens trained", de.basis),
            "tokens trained",
            &y,
            &series(|p| p.train_tokens as f64),
            None,
        ),
        svg::line_chart(
            &format!("{} against training FLOPs", de.basis),
            "FLOPs executed",
            &y,
            &series(|p| p.train_flops),
            None,
        ),
    ]
}

pub fn expert_chart(e: &ExpertLoad) -> String {
    let labels: Vec<String> = e
        .layers
        .iter()
        .map(|l| match l.block {
            Some(b) => format!("MoE {} (block {b})", l.moe_layer),
            None => format!("MoE {}", l.moe_layer),
        })
        .collect();
    let rows: Vec<Vec<u64>> = e
        .layers
        .iter()
        .map(|l| l.tokens_per_expert.clone())
        .collect();
    svg::heatmap(
        &format!("Expert load, {} {}", e.model, e.phase.label()),
        &labels,
        &rows,
    )
}

fn charts(o: &mut String, svgs: &[String]) {
    if svgs.is_empty() {
        return;
    }
    o.push_str("<div class=\"charts\">");
    for s in svgs {
        o.push_str(s);
    }
    o.push_str("</div>\n");
}

fn list(o: &mut String, items: &[String]) {
    o.push_str("<ul>");
    for i in items {
        let _ = write!(o, "<li>{}</li>", esc(i));
    }
    o.push_str("</ul>\n");
}

pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        esc(title)
    )
}

/// Render the whole report as one HTML page.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "<h1>sparsewatt report: run {}</h1>", esc(&r.run.id));
    let class = if r.run.complete { "done" } else { "cutoff" };
    let _ = writeln!(o, "<p class=\"{class}\">{}</p>", esc(&r.run.status));
    o.push_str("<h2>Energy to reach the same validation loss</h2>");
    list(&mut o, &r.answer.quality);
    if let Some(t) = &r.to_target {
        o.push_str(&table(
            &super::quality::TABLE_HEADER,
            &super::quality::table_rows(t),
        ));
    }
    let _ = writeln!(
        o,
        "<h2>Per-token cost</h2><p>{}</p>",
        esc(&r.answer.question)
    );
    list(&mut o, &r.answer.sentences);
    o.push_str(&table(&md::ANSWER_HEADER, &md::answer_rows(&r.phases)));
    let class = if r.sensor.is_measurement {
        ""
    } else {
        " class=\"estimate\""
    };
    let _ = writeln!(
        o,
        "<p{class}>{}</p>",
        esc(&md::energy_line(r).replace("**", ""))
    );
    charts(&mut o, &jpt_charts(&r.phases));
    o.push_str("<h2>Each phase in detail</h2>");
    o.push_str(&table(&md::DETAIL_HEADER, &md::detail_rows(&r.phases)));
    o.push_str("<h2>Models</h2>");
    o.push_str(&table(&md::MODEL_HEADER, &md::model_rows(&r.models)));
    o.push_str("<p>Parameters are counted analytically from the profiles (<code>docs/accounting.md</code>).</p>\n");
    o.push_str("<h2>Machine, sensor and idle baseline</h2>");
    list(&mut o, &md::machine_lines(r));
    charts(&mut o, &power_chart(r).into_iter().collect::<Vec<_>>());
    let de = &r.data_efficiency;
    let _ = writeln!(o, "<h2>Data efficiency ({})</h2>", esc(&de.basis));
    charts(&mut o, &loss_charts(de));
    match &de.same_loss {
        Some(s) => {
            let _ = writeln!(
                o,
                "<p>To reach the same {} of {:.4} nats/token (the lowest both reached):</p>",
                esc(&de.basis),
                s.target_loss.value
            );
            o.push_str(&table(
                &["model", "tokens", "FLOPs", "joules"],
                &md::same_loss_rows(s),
            ));
        }
        None => o.push_str("<p>No loss both models reached: no same-loss comparison.</p>\n"),
    }
    o.push_str("<h2>Expert load</h2>");
    if r.expert_load.is_empty() {
        o.push_str("<p>No routed tokens were recorded.</p>\n");
    }
    for e in &r.expert_load {
        let _ = writeln!(o, "<p>{}</p>", esc(&md::expert_summary(e)));
        charts(&mut o, &[expert_chart(e)]);
        o.push_str(&table(&md::EXPERT_HEADER, &md::expert_rows(e)));
    }
    o.push_str("<h2>Projections</h2>");
    if let Some(c) = &r.projections.full_size {
        let _ = writeln!(o, "<p>{}</p>", esc(md::FULL_SIZE_TITLE));
        o.push_str(&table(&crate::project::seed::SEED_HEADER, &c.cells()));
        list(&mut o, &md::full_size_lines(c));
    }
    for n in &r.projections.notes {
        let _ = writeln!(o, "<p>{}</p>", esc(n));
    }
    if !r.projections.rows.is_empty() {
        o.push_str(&table(
            &md::PROJECTION_HEADER,
            &md::projection_rows(&r.projections),
        ));
    }
    if let Some(c) = r.projections.this_machine.first() {
        let _ = writeln!(
            o,
            "<p>This machine ({}), projected against measured (no PUE on either side):</p>",
            esc(&c.hardware)
        );
        o.push_str(&table(&md::CHECK_HEADER, &md::check_rows(&r.projections)));
    }
    o.push_str("<h2>Method</h2>");
    list(&mut o, &r.method.points);
    list(
        &mut o,
        &r.method
            .docs
            .iter()
            .map(|d| format!("{}: {}", d.title, d.path))
            .collect::<Vec<_>>(),
    );
    if !r.notes.is_empty() {
        o.push_str("<h2>Notes</h2>");
        list(&mut o, &r.notes);
    }
    let _ = writeln!(
        o,
        "<footer>sparsewatt {}, report format {}, run folder <code>{}</code>, command <code>{}</code></footer>",
        esc(&r.run.sparsewatt_version),
        r.report_format_version,
        esc(&r.run.dir),
        esc(&r.run.command)
    );
    page(&format!("sparsewatt report: run {}", r.run.id), &o)
}
