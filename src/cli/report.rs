//! `sparsewatt report`: render a run folder (or compare two) as Markdown, HTML or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sparsewatt::report::{self, Format};

use super::BadInput;

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Md,
    Html,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// Run folder to report on (finished or cut off).
    run: PathBuf,
    /// A second run folder: compare the two side by side, with B / A for every figure.
    other: Option<PathBuf>,
    /// Output format [default: from --out's extension, else md].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write report.md, report.html and report.json into the run folder (as a run does at its end).
    #[arg(long, conflicts_with_all = ["other", "out", "format"])]
    write: bool,
}

fn load(dir: &Path) -> anyhow::Result<report::Report> {
    // A missing or malformed run folder is the user's input being wrong: exit code 2.
    report::load(dir).map_err(|e| anyhow::Error::new(BadInput(format!("reading run folder: {e}"))))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.write {
        for p in report::write_all(&args.run).map_err(|e| match e
            .downcast::<sparsewatt::runlog::RunFolderError>()
        {
            Ok(rf) => anyhow::Error::new(BadInput(format!("reading run folder: {rf}"))),
            Err(e) => e,
        })? {
            println!("{}", p.display());
        }
        return Ok(());
    }
    let format = match (args.format, &args.out) {
        (Some(FormatArg::Md), _) => Format::Markdown,
        (Some(FormatArg::Html), _) => Format::Html,
        (Some(FormatArg::Json), _) => Format::Json,
        (None, Some(out)) => Format::from_path(out).unwrap_or(Format::Markdown),
        (None, None) => Format::Markdown,
    };
    let a = load(&args.run)?;
    let text = match &args.other {
        None => report::render(&a, format),
        Some(other) => {
            let b = load(other)?;
            report::render_comparison(&report::compare(&a, &b), &a, &b, format)
        }
    };
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing to standard output")?,
    }
    Ok(())
}
