//! `sparsewatt bench`: training, prefill and decode throughput of a profile (medians after warm-up).

use sparsewatt::model::pick_device;
use sparsewatt::profile::load_model;
use sparsewatt::workload::{bench, BenchConfig};

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// Model profile: a name (see `sparsewatt profiles`) or a path to a .toml file.
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    /// Override the number of experts per MoE layer (1 = the dense model).
    #[arg(long)]
    experts: Option<usize>,
    /// Training batch, sequences [default: 16].
    #[arg(long)]
    batch: Option<usize>,
    /// Sequence length (and position embeddings) [default: the profile's].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Timed training steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Timed generations of 64 new tokens after a 64-token prompt, batch 1 (after one warm-up).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Run on the GPU when built with the `cuda` feature and one is present.
    #[arg(long)]
    gpu: bool,
    /// Print the result as JSON (keys: train_tokens_per_s, prefill_tokens_per_s, decode_tokens_per_s, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let profile = load_model(&a.model)?.with_overrides(a.experts, a.seq_len)?;
    let mut cfg = BenchConfig::for_profile(&profile);
    if let Some(b) = a.batch {
        if b == 0 {
            return Err(BadInput("--batch must be at least 1, got 0".into()).into());
        }
        cfg.batch = b;
    }
    if a.steps == 0 || a.repeats == 0 {
        return Err(BadInput("--steps and --repeats must be at least 1".into()).into());
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
