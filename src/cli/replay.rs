//! `sparsewatt replay RUN_DIR`: a finished or cut-off run in the dashboard, with a time cursor.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use sparsewatt::runlog::read_run;
use sparsewatt::tui::{self, App};

use super::{bad_input, BadInput};

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (holds run.json and records.jsonl).
    pub run_dir: PathBuf,
    /// Start with the time cursor at this many seconds into the run (default: its end).
    #[arg(long, value_name = "SECONDS", value_parser = super::nonnegative_seconds)]
    pub at: Option<f64>,
    /// Serve the run's final values as Prometheus metrics at http://ADDR/metrics until Ctrl-C,
    /// instead of opening the dashboard (docs/metrics.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = read_run(&args.run_dir).map_err(|e| bad_input("reading the run folder", e))?;
    if let Some(addr) = &args.metrics {
        sparsewatt::metrics::serve_run(addr, &run).map_err(|e| bad_input("--metrics", e))?;
        return Ok(());
    }
    let mut app = App::replay(run);
    if let Some(at) = args.at {
        app.set_cursor(at);
    }
    if !std::io::stdout().is_terminal() {
        return Err(BadInput(
            "`sparsewatt replay` draws a dashboard and needs a terminal on standard output \
             (`sparsewatt report RUN_DIR` writes a report instead)"
                .into(),
        )
        .into());
    }
    tui::replay_app(app).context("running the dashboard")
}
