//! Markdown, HTML (inline SVG charts) and JSON renderings of a run folder, and the comparison of two.
//!
//! [`build`] turns a run's records into a [`Report`] (the JSON document, schema in docs/report.md).
//! [`sections`] lays a report out once as a `page::Page` (headings, paragraphs, tables, charts as
//! data), and [`compare`] a comparison; [`markdown`] and [`html`] render a page. [`write_all`] is
//! what the run engine calls at the end of a run. A cut-off run is reported the same way, from the
//! records it has, and says so.

mod build;
mod charts;
mod compare;
pub mod document;
mod efficiency;
mod experts;
pub mod format;
mod html;
mod markdown;
mod method;
mod page;
mod power;
mod projection;
pub mod quality;
mod sections;
mod sentences;
mod svg;
mod tables;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use build::{build, build_with_target, ratio_of};
pub use compare::compare;
pub use document::{Comparison, Figure, Report, REPORT_FORMAT_VERSION};

use crate::runlog::{read_run, read_summary_or_rebuild, RunFolderError};

pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
pub const JSON_FILE: &str = "report.json";

/// The three renderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Json => "json",
        }
    }

    /// The format a file name asks for by its extension (`.md`, `.markdown`, `.html`, `.htm`, `.json`).
    pub fn from_path(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Read a run folder and build its report.
pub fn load(dir: &Path) -> Result<Report, RunFolderError> {
    Ok(build(&read_run(dir)?))
}

/// [`load`] with the to-target figures at `target_loss` when given.
pub fn load_with_target(dir: &Path, target_loss: Option<f64>) -> Result<Report, RunFolderError> {
    Ok(build_with_target(&read_run(dir)?, target_loss))
}

pub fn to_json<T: serde::Serialize>(x: &T) -> String {
    let mut s = serde_json::to_string_pretty(x).expect("reports serialise");
    s.push('\n');
    s
}

pub fn render(r: &Report, f: Format) -> String {
    match f {
        Format::Markdown => markdown::render(&sections::page(r)),
        Format::Html => html::render(&sections::page(r)),
        Format::Json => to_json(r),
    }
}

/// Render `report A B`; `a` and `b` are the two runs' reports (the HTML charts read them).
pub fn render_comparison(c: &Comparison, a: &Report, b: &Report, f: Format) -> String {
    match f {
        Format::Markdown => markdown::render(&compare::page(c, a, b)),
        Format::Html => html::render(&compare::page(c, a, b)),
        Format::Json => to_json(c),
    }
}

/// Write `report.md`, `report.html` and `report.json` into the run folder, and `summary.json` when
/// the run did not write one (a cut-off run) or wrote one that does not parse. Returns the paths
/// written.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let run = read_run(dir)?;
    let report = build(&run);
    let mut written = Vec::new();
    // A run cut off before its end wrote no summary, and a crash mid-write may have left one that
    // does not parse: either is rebuilt from the records (runlog writes it atomically).
    let summary = read_summary_or_rebuild(dir, |run| {
        crate::project::summarize_run(&run.header, &run.records)
    })?;
    if summary.rebuilt.is_some() {
        written.push(summary.path);
    }
    for (name, f) in [
        (MARKDOWN_FILE, Format::Markdown),
        (HTML_FILE, Format::Html),
        (JSON_FILE, Format::Json),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, render(&report, f))
            .with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}
