//! The report's sections, in order, written once: each function lays out one section of a
//! [`Report`] as blocks of a [`Page`], which [`super::markdown`] and [`super::html`] render.

use super::document::*;
use super::page::{text, Block, Inline, Page, Tone};
use super::sentences::{energy_line, expert_summary, full_size_lines, machine_lines};
use super::{charts, quality, tables};

/// The whole report as one page.
pub fn page(r: &Report) -> Page {
    let mut p = Page {
        title: format!("sparsewatt report: run {}", r.run.id),
        blocks: Vec::new(),
    };
    p.heading(1, p.title.clone());
    p.blocks.push(if r.run.complete {
        Block::Paragraph(Tone::Done, vec![Inline::Text(r.run.status.clone())])
    } else {
        Block::Paragraph(Tone::CutOff, vec![Inline::Strong(r.run.status.clone())])
    });
    same_quality(&mut p, r);
    per_token(&mut p, r);
    p.heading(2, "Each phase in detail");
    p.blocks.push(Block::Table(tables::detail(&r.phases)));
    p.heading(2, "Models");
    p.blocks.push(Block::Table(tables::models(&r.models)));
    p.para("Parameters are counted analytically from the profiles (docs/accounting.md).");
    p.heading(2, "Machine, sensor and idle baseline");
    p.list(&machine_lines(r));
    p.charts(charts::power(r).into_iter().collect());
    data_efficiency(&mut p, &r.data_efficiency);
    expert_load(&mut p, &r.expert_load);
    projections(&mut p, &r.projections);
    method(&mut p, r);
    p
}

/// The first answer: energy to reach the same validation loss.
fn same_quality(p: &mut Page, r: &Report) {
    p.heading(2, "Energy to reach the same validation loss");
    p.list(&r.answer.quality);
    if let Some(t) = &r.to_target {
        p.table(&quality::TABLE_HEADER, quality::table_rows(t));
    }
}

/// The second answer: J/token and FLOPs/token of each phase, and where the energy comes from.
fn per_token(p: &mut Page, r: &Report) {
    p.heading(2, "Per-token cost");
    p.para(r.answer.question.clone());
    p.list(&r.answer.sentences);
    p.blocks.push(Block::Table(tables::answer(&r.phases)));
    let tone = match r.sensor.is_measurement {
        true => Tone::Plain,
        false => Tone::Warning,
    };
    p.blocks.push(Block::Paragraph(tone, energy_line(r)));
    p.charts(charts::joules_per_token(&r.phases));
}

/// Loss curves (charts in HTML, tables in Markdown) and the same-loss comparison.
fn data_efficiency(p: &mut Page, de: &DataEfficiency) {
    p.heading(2, format!("Data efficiency ({})", de.basis));
    let mut fallback = Vec::new();
    if de.curves.is_empty() {
        fallback.push(Block::Paragraph(Tone::Plain, text("No loss was recorded.")));
    }
    for c in &de.curves {
        fallback.push(Block::Paragraph(
            Tone::Plain,
            text(format!("{} ({}):", c.model, c.role.label())),
        ));
        fallback.push(Block::Table(tables::curve(c)));
    }
    p.blocks.push(Block::Figure {
        charts: charts::loss(de),
        fallback,
    });
    match &de.same_loss {
        Some(s) => {
            p.para(format!(
                "To reach the same {} of {:.4} nats/token (the lowest both reached):",
                de.basis, s.target_loss.value
            ));
            p.blocks.push(Block::Table(tables::same_loss(s)));
        }
        None => p.para("No loss both models reached: no same-loss comparison."),
    }
}

fn expert_load(p: &mut Page, loads: &[ExpertLoad]) {
    p.heading(2, "Expert load");
    if loads.is_empty() {
        p.para("No routed tokens were recorded.");
    }
    for e in loads {
        p.para(expert_summary(e));
        p.charts(vec![charts::expert_load(e)]);
        p.blocks.push(Block::Table(tables::experts(e)));
    }
}

fn projections(p: &mut Page, s: &ProjectionSection) {
    p.heading(2, "Projections");
    if let Some(c) = &s.full_size {
        p.para(super::sentences::FULL_SIZE_TITLE);
        p.table(&crate::project::seed::SEED_HEADER, c.cells());
        p.list(&full_size_lines(c));
    }
    for n in &s.notes {
        p.para(n.clone());
    }
    if !s.rows.is_empty() {
        p.blocks.push(Block::Table(tables::projections(s)));
    }
    if let Some(c) = s.this_machine.first() {
        p.para(format!(
            "This machine ({}), projected against measured (no PUE on either side):",
            c.hardware
        ));
        p.blocks.push(Block::Table(tables::checks(s)));
    }
}

/// How the figures were made, the notes, and the footer.
fn method(p: &mut Page, r: &Report) {
    p.heading(2, "Method");
    p.list(&r.method.points);
    let docs = r.method.docs.iter().map(|d| {
        vec![
            Inline::Text(format!("{}: ", d.title)),
            Inline::Code(d.path.clone()),
        ]
    });
    p.blocks.push(Block::List(Tone::Plain, docs.collect()));
    if !r.notes.is_empty() {
        p.heading(2, "Notes");
        p.list(&r.notes);
    }
    p.blocks.push(Block::Footer(vec![
        Inline::Text(format!(
            "sparsewatt {}, report format {}, run folder ",
            r.run.sparsewatt_version, r.report_format_version
        )),
        Inline::Code(r.run.dir.clone()),
        Inline::Text(", command ".into()),
        Inline::Code(r.run.command.clone()),
    ]));
}
