//! `sparsewatt replay RUN_DIR`: a finished or cut-off run in the dashboard, with a time cursor.

use std::io::IsTerminal;
use std::path::PathBuf;

use std::time::Instant;

use anyhow::Context;
use sparsewatt::runlog::{read_run, summarize, Record};
use sparsewatt::tui::{self, App, View};

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// The run folder (holds run.json and records.jsonl).
    pub run_dir: PathBuf,
    /// Start with the time cursor at this many seconds into the run (default: its end).
    #[arg(long, value_name = "SECONDS")]
    pub at: Option<f64>,
    /// Measure the CPU time of drawing each view at 140×45 over this many frames, print it, and
    /// exit without opening the dashboard.
    #[arg(long, value_name = "FRAMES")]
    pub bench_draw: Option<u32>,
    /// Serve the run's final values as Prometheus metrics at http://ADDR/metrics until Ctrl-C,
    /// instead of opening the dashboard (docs/metrics.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = read_run(&args.run_dir).map_err(|e| BadInput(e.to_string()))?;
    if let Some(addr) = &args.metrics {
        sparsewatt::metrics::serve_run(addr, &run)
            .map_err(|e| BadInput(format!("--metrics: {e}")))?;
        return Ok(());
    }
    let mut app = App::replay(run);
    if let Some(at) = args.at {
        if !at.is_finite() || at < 0.0 {
            return Err(BadInput(format!("--at {at}: expected seconds, 0 or more")).into());
        }
        app.set_cursor(at);
    }
    if let Some(frames) = args.bench_draw {
        return bench_draw(&mut app, frames);
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

/// Print per view the CPU time of a frame and the share of one core at the dashboard's frame rate.
fn bench_draw(app: &mut App, frames: u32) -> anyhow::Result<()> {
    let (w, h) = (140, 45);
    println!(
        "view         ms/frame  % of one core at {} frames/s",
        tui::MIN_FPS
    );
    for v in View::ALL {
        app.view = v;
        tui::draw_cost(app, w, h, frames / 10 + 1)?; // warm caches
        let s = tui::draw_cost(app, w, h, frames)?;
        println!(
            "{:<12} {:>8.3}  {:>6.2}%",
            v.title(),
            s * 1e3,
            100.0 * s * tui::MIN_FPS as f64
        );
    }
    // A live dashboard also re-summarises the run at most once a second while records arrive;
    // that cost grows with the steps so far, so it is measured on a long run made of copies.
    let steps: Vec<Record> = app
        .replay_records()
        .unwrap_or(&[])
        .iter()
        .filter(|r| matches!(r, Record::Step(_)))
        .cloned()
        .collect();
    if !steps.is_empty() {
        let n = 10_000;
        let long: Vec<Record> = steps.iter().cycle().take(n).cloned().collect();
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(summarize(&long));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "summary refresh over {n} steps: {:.2} ms, at most once a second: {:.2}% of one core",
            best * 1e3,
            100.0 * best
        );
    }
    Ok(())
}
