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
    /// The validation loss (nats per token) of the energy-to-target answer [default: the run's
    /// --target-loss or --until-loss, else the lowest loss both models reached].
    #[arg(long, value_name = "L", conflicts_with = "write")]
    target_loss: Option<f64>,
}

fn load(dir: &Path, target_loss: Option<f64>) -> anyhow::Result<report::Report> {
    // A missing or malformed run folder is the user's input being wrong: exit code 2.
    report::load_with_target(dir, target_loss)
        .map_err(|e| anyhow::Error::new(BadInput(format!("reading run folder: {e}"))))
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
    if let Some(l) = args.target_loss.filter(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(BadInput(format!(
            "--target-loss must be a validation loss above 0 (nats per token), got {l}"
        ))
        .into());
    }
    let a = load(&args.run, args.target_loss)?;
    let text = match &args.other {
        None => report::render(&a, format),
        Some(other) => {
            let b = load(other, args.target_loss)?;
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
