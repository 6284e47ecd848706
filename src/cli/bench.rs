//! `sparsewatt bench`: training, prefill and decode throughput of a profile (medians after
//! warm-up), or with `--draw RUN_DIR` the dashboard's drawing cost on a recorded run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sparsewatt::model::pick_device;
use sparsewatt::profile::load_model;
use sparsewatt::runlog::{read_run, summarize, Record};
use sparsewatt::tui::{self, App, View};
use sparsewatt::workload::{bench, BenchConfig};

use super::{at_least_one, bad_input};

#[derive(clap::Args)]
pub struct Args {
    /// Model profile: a name (see `sparsewatt profiles`) or a path to a .toml file.
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    /// Override the number of experts per MoE layer (1 = the dense model).
    #[arg(long)]
    experts: Option<usize>,
    /// Training batch, sequences [default: 16].
    #[arg(long, value_parser = at_least_one)]
    batch: Option<usize>,
    /// Sequence length (and position embeddings) [default: the profile's].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Timed training steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    steps: usize,
    /// Timed generations of 64 new tokens after a 64-token prompt, batch 1 (after one warm-up).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    repeats: usize,
    /// Run on the GPU when built with the `cuda` feature and one is present.
    #[arg(long)]
    gpu: bool,
    /// Print the result as JSON (keys: train_tokens_per_s, prefill_tokens_per_s, decode_tokens_per_s, ...).
    #[arg(long)]
    json: bool,
    /// Instead of the model: the dashboard's cost on this run folder. The CPU time of drawing
    /// each view at 140×45 over --frames frames, and of the live summary refresh.
    #[arg(long, value_name = "RUN_DIR")]
    draw: Option<PathBuf>,
    /// Frames per view that --draw times.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    frames: u32,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(dir) = &a.draw {
        return bench_draw(dir, a.frames);
    }
    let profile = load_model(&a.model)?.with_overrides(a.experts, a.seq_len)?;
    let mut cfg = BenchConfig::for_profile(&profile);
    if let Some(b) = a.batch {
        cfg.batch = b;
    }
    cfg.train_steps = a.steps;
    cfg.repeats = a.repeats;
    let (device, _, fallback) = pick_device(a.gpu);
    if let Some(f) = fallback {
        eprintln!("warning: {f}");
    }
    let r = bench(&profile, &cfg, &device)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} ({} experts, top-{}, {} parameters) on {} with {} threads",
            r.model, r.experts, r.top_k, r.params_total, r.device, r.threads
        );
        println!(
            "  train    {:>9.0} tokens/s   (batch {} x seq {}, median of {} steps, {:.3} s/step{}, {:.1} GFLOP/s)",
            r.train_tokens_per_s,
            cfg.batch,
            cfg.seq_len,
            cfg.train_steps,
            r.train_step_s,
            spread(r.train_step_s_range, 1.0, 3),
            r.train_flops_per_s / 1e9
        );
        let parts = r.train_step_parts;
        println!(
            "           one more step: forward {:.3} s, backward {:.3} s, optimizer {:.3} s",
            parts.forward_s, parts.backward_s, parts.optimizer_s
        );
        println!(
            "  prefill  {:>9.0} tokens/s   (batch 1, {}-token prompt, median of {}, {:.1} ms{})",
            r.prefill_tokens_per_s,
            cfg.prompt_len,
            cfg.repeats,
            r.prefill_s * 1e3,
            spread(r.prefill_s_range, 1e3, 1)
        );
        println!(
            "  decode   {:>9.0} tokens/s   (batch 1, {} new tokens, median of {}, {:.2} ms/token{})",
            r.decode_tokens_per_s,
            cfg.new_tokens,
            cfg.repeats,
            r.decode_token_s * 1e3,
            spread(r.decode_token_s_range, 1e3, 2)
        );
    }
    Ok(())
}

/// " (fastest-slowest)" of a timing range, scaled and to `digits` decimals; empty without one.
fn spread(range: Option<[f64; 2]>, scale: f64, digits: usize) -> String {
    range.map_or_else(String::new, |[lo, hi]| {
        format!(" ({:.digits$}-{:.digits$})", lo * scale, hi * scale)
    })
}

/// Print per view the CPU time of a frame and the share of one core at the dashboard's frame rate.
fn bench_draw(dir: &Path, frames: u32) -> anyhow::Result<()> {
    let run = read_run(dir).map_err(|e| bad_input("reading the run folder", e))?;
    let mut app = App::replay(run);
    let (w, h) = (140, 45);
    println!(
        "view         ms/frame  % of one core at {} frames/s",
        tui::MIN_FPS
    );
    for v in View::ALL {
        app.view = v;
        tui::draw_cost(&app, w, h, frames / 10 + 1)?; // warm caches
        let s = tui::draw_cost(&app, w, h, frames)?;
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
