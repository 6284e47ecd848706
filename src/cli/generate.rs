//! `sparsewatt generate`: continue a prompt with a trained checkpoint (or an untrained profile).

use std::io::Write;
use std::path::PathBuf;

use sparsewatt::data::{decode, encode};
use sparsewatt::model::{generate, load_checkpoint, pick_device, Model, SampleConfig};
use sparsewatt::profile::load_model;

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint folder written by `sparsewatt train --out`.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Without a checkpoint: an untrained model of this profile (for timing; its text is noise).
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    #[arg(long, default_value = "The ")]
    prompt: String,
    /// New tokens (bytes) to generate; generation stops at the profile's seq_len.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run on the GPU when built with the `cuda` feature and one is present.
    #[arg(long)]
    gpu: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.top_p > 0.0 && a.top_p <= 1.0) || a.temperature < 0.0 {
        return Err(BadInput("--top-p must be in (0, 1] and --temperature >= 0".into()).into());
    }
    let (device, _, fallback) = pick_device(a.gpu);
    if let Some(f) = fallback {
        eprintln!("warning: {f}");
    }
    let model = match &a.checkpoint {
        Some(dir) => load_checkpoint(dir, &device).map_err(|e| {
            super::bad_input(format!("reading the checkpoint {}", dir.display()), e)
        })?,
        None => {
            eprintln!(
                "warning: no --checkpoint: an untrained {} generates noise",
                a.model
            );
            Model::new(&load_model(&a.model)?, &device, a.seed)?
        }
    };
    let prompt = encode(&a.prompt);
    if prompt.is_empty() || prompt.len() >= model.profile().seq_len {
        return Err(BadInput(format!(
            "--prompt must have 1 to {} bytes, got {}",
            model.profile().seq_len - 1,
            prompt.len()
        ))
        .into());
    }
    let cfg = SampleConfig {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    };
    let g = generate(&model, &prompt, a.tokens, cfg)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{}", a.prompt, decode(&g.tokens))?;
    let decoded = g.tokens.len().saturating_sub(1).max(1);
    eprintln!(
        "prefill {} tokens in {:.1} ms ({:.0} tokens/s, {:.2e} FLOPs); decode {} tokens at {:.0} tokens/s ({:.2e} FLOPs/token)",
        prompt.len(),
        g.prefill_seconds * 1e3,
        prompt.len() as f64 / g.prefill_seconds,
        g.prefill_flops.total(),
        g.tokens.len(),
        decoded as f64 / g.decode_seconds.max(1e-9),
        g.decode_flops.total() / decoded as f64
    );
    Ok(())
}
