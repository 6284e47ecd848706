//! `sparsewatt train`: train a profile on the embedded corpus or a file, headless, with
//! validation, checkpoints and resume.

use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use sparsewatt::data::Corpus;
use sparsewatt::model::{pick_device, Model, TrainConfig, Trainer};
use sparsewatt::profile::load_model;

use super::{at_least_one, bad_input};

#[derive(clap::Args)]
pub struct Args {
    /// Model profile: a name (see `sparsewatt profiles`) or a path to a .toml file.
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    /// Train on this file instead of the embedded corpus.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Optimisation steps in total (a resumed run counts the steps already done).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    batch: usize,
    /// Override the profile's number of experts.
    #[arg(long)]
    experts: Option<usize>,
    /// Override the profile's sequence length.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate (linear warm-up, cosine decay to a tenth).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warm-up steps [default: 5% of --steps, at most 100].
    #[arg(long)]
    warmup: Option<u64>,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Validate every N steps (and at the end).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: u64,
    /// Write a checkpoint here every --eval-every steps and at the end.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from a checkpoint folder written by --out.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run on the GPU when built with the `cuda` feature and one is present.
    #[arg(long)]
    gpu: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let corpus =
        Corpus::load(a.data.as_deref()).map_err(|e| bad_input("reading the training data", e))?;
    let (device, dev_name, fallback) = pick_device(a.gpu);
    if let Some(f) = fallback {
        eprintln!("warning: {f}");
    }
    let mut trainer = trainer(&a, &corpus, &device)?;
    let p = trainer.model.profile().clone();
    eprintln!(
        "training {} ({} parameters, {} experts, top-{}) on {} ({} bytes) on {dev_name}, steps {}..{}",
        p.name,
        trainer.model.num_params(),
        p.experts,
        p.top_k,
        corpus.name(),
        corpus.len(),
        trainer.step,
        a.steps
    );
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let first = trainer.step;
    let mut val = trainer.validate()?;
    eprintln!(
        "step {:>5}  validation loss {val:.4} (perplexity {:.2})",
        trainer.step,
        val.exp()
    );
    while trainer.step < a.steps {
        let s = trainer.train_step()?;
        if !s.loss.is_finite() {
            anyhow::bail!(
                "step {}: the loss is {} (diverged); lower --lr",
                s.step,
                s.loss
            );
        }
        let done = trainer.step - first;
        let rate = (done * s.tokens) as f64 / start.elapsed().as_secs_f64();
        let eta = (a.steps - trainer.step) as f64 * start.elapsed().as_secs_f64() / done as f64;
        let line = format!(
            "step {:>5}/{}  loss {:.4}{}  lr {:.2e}  |g| {:.2}  {:.0} tokens/s  eta {:.0}s",
            trainer.step,
            a.steps,
            s.loss,
            s.aux_loss
                .map(|x| format!(" aux {x:.4}"))
                .unwrap_or_default(),
            s.lr,
            s.grad_norm,
            rate,
            eta
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else if trainer.step % 10 == 0 || trainer.step == a.steps {
            eprintln!("{line}");
        }
        if trainer.step % a.eval_every == 0 || trainer.step == a.steps {
            val = trainer.validate()?;
            if tty {
                eprintln!();
            }
            eprintln!(
                "step {:>5}  validation loss {val:.4} (perplexity {:.2})",
                trainer.step,
                val.exp()
            );
            if let Some(dir) = &a.out {
                trainer.save(dir)?;
            }
        }
    }
    println!(
        "{}: {} steps, {} tokens, {:.3e} FLOPs, validation loss {val:.4} (perplexity {:.2})",
        p.name,
        trainer.step,
        trainer.tokens,
        trainer.flops,
        val.exp()
    );
    if let Some(dir) = &a.out {
        trainer.save(dir)?;
        println!("checkpoint: {}", dir.display());
    }
    Ok(())
}

/// A new trainer, or the one a checkpoint (`--resume`) holds.
fn trainer(a: &Args, corpus: &Corpus, device: &Device) -> anyhow::Result<Trainer> {
    Ok(if let Some(dir) = &a.resume {
        let profile = load_model(&dir.join("profile.toml").display().to_string())?;
        let mut cfg = TrainConfig::for_profile(&profile, a.steps);
        apply(a, &mut cfg);
        Trainer::resume(dir, device, corpus, cfg)
            .with_context(|| format!("resuming from {}", dir.display()))?
    } else {
        let profile = load_model(&a.model)?.with_overrides(a.experts, a.seq_len)?;
        let mut cfg = TrainConfig::for_profile(&profile, a.steps);
        apply(a, &mut cfg);
        let model = Model::new(&profile, device, a.seed)?;
        Trainer::new(model, corpus, cfg)
            .map_err(|e| bad_input(format!("setting up the training of {}", profile.name), e))?
    })
}

fn apply(a: &Args, cfg: &mut TrainConfig) {
    cfg.batch = a.batch;
    cfg.lr = a.lr;
    cfg.clip_norm = a.clip;
    cfg.seed = a.seed;
    if let Some(w) = a.warmup {
        cfg.warmup_steps = w;
    }
}
