//! Throughput benchmark of one profile: training steps, prefill and batch-1 decode, each as the
//! median of several timed repetitions after warm-up. Used by `sparsewatt bench` and `cargo bench`.

use candle_core::Device;
use serde::Serialize;
use std::time::Instant;

use crate::data::Corpus;
use crate::model::{generate, Model, SampleConfig, StepTimes, TrainConfig, Trainer};
use crate::profile::ModelProfile;
use crate::stats::{median, range};

#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Training batch (sequences) and sequence length.
    pub batch: usize,
    pub seq_len: usize,
    /// Timed training steps (after `warmup_steps` untimed ones).
    pub train_steps: usize,
    pub warmup_steps: usize,
    /// Prompt tokens and new tokens of each batch-1 generation.
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Timed generations (after one untimed).
    pub repeats: usize,
    pub seed: u64,
}

impl BenchConfig {
    pub fn for_profile(p: &ModelProfile) -> BenchConfig {
        BenchConfig {
            batch: 16,
            seq_len: p.seq_len,
            train_steps: 10,
            warmup_steps: 2,
            prompt_len: 64.min(p.seq_len / 2).max(1),
            new_tokens: 64.min(p.seq_len / 2),
            repeats: 10,
            seed: 42,
        }
    }
}

/// Medians of the timed repetitions. Denominators: tokens trained (batch x seq_len per step),
/// prompt tokens, generated tokens.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub experts: usize,
    pub top_k: usize,
    pub params_total: usize,
    pub device: String,
    pub threads: usize,
    pub config: BenchConfig,
    pub train_tokens_per_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Median seconds of one training step, one prefill, one decode token.
    pub train_step_s: f64,
    pub prefill_s: f64,
    pub decode_token_s: f64,
    /// `[fastest, slowest]` of the timed repetitions behind each median, in the same units: on
    /// a shared machine the spread says how far one median can be trusted.
    pub train_step_s_range: Option<[f64; 2]>,
    pub prefill_s_range: Option<[f64; 2]>,
    pub decode_token_s_range: Option<[f64; 2]>,
    /// Executed FLOPs per trained token and the FLOP/s that achieves.
    pub train_flops_per_token: f64,
    pub train_flops_per_s: f64,
    pub decode_flops_per_token: f64,
    pub last_train_loss: f64,
    /// Where one more training step's time went, each part timed to the device's completion.
    pub train_step_parts: StepTimes,
}

/// Worker threads candle's CPU matmuls use (rayon).
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn bench(p: &ModelProfile, cfg: &BenchConfig, device: &Device) -> anyhow::Result<BenchResult> {
    if cfg.prompt_len + cfg.new_tokens > p.seq_len {
        anyhow::bail!(
            "prompt {} + new tokens {} exceed the profile's seq_len {}",
            cfg.prompt_len,
            cfg.new_tokens,
            p.seq_len
        );
    }
    let model = Model::new(p, device, cfg.seed)?;
    let params_total = model.num_params();
    let mut tc = TrainConfig::for_profile(p, 1000);
    tc.batch = cfg.batch;
    tc.seq_len = cfg.seq_len;
    let corpus = Corpus::embedded();
    let mut trainer = Trainer::new(model, corpus, tc)?;
    let mut step_s = Vec::new();
    let mut flops_per_token = 0.0;
    let mut loss = f64::NAN;
    for i in 0..cfg.warmup_steps + cfg.train_steps {
        let t = Instant::now();
        let s = trainer.train_step()?;
        // A GPU's kernels run behind the host: the step ends when the device has finished it.
        device.synchronize()?;
        let dt = t.elapsed().as_secs_f64();
        if i >= cfg.warmup_steps {
            step_s.push(dt);
        }
        flops_per_token = s.flops.total() / s.tokens as f64;
        loss = s.loss;
    }
    let (_, parts) = trainer.train_step_timed()?;
    let model = &trainer.model;
    let (_, val) = corpus.split(0.05)?;
    let prompt = val.prompt(cfg.prompt_len)?;
    let mut prefill_s = Vec::new();
    let mut decode_s = Vec::new();
    let mut decode_flops = 0.0;
    let steps = cfg.new_tokens.max(1) as f64;
    for r in 0..=cfg.repeats {
        // The first token comes from the prefill; the other `new_tokens` each cost a decode step.
        let g = generate(model, &prompt, cfg.new_tokens + 1, SampleConfig::greedy())?;
        if r > 0 {
            prefill_s.push(g.prefill_seconds);
            decode_s.push(g.decode_seconds / steps);
            decode_flops = g.decode_flops.total() / steps;
        }
    }
    let ranges = (range(&step_s), range(&prefill_s), range(&decode_s));
    let med = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let (train_step_s, prefill_s, decode_token_s) = (med(&step_s), med(&prefill_s), med(&decode_s));
    let tokens = (cfg.batch * cfg.seq_len) as f64;
    Ok(BenchResult {
        model: p.name.clone(),
        experts: p.experts,
        top_k: p.top_k,
        params_total,
        device: crate::model::describe_device(device),
        threads: cpu_threads(),
        config: cfg.clone(),
        train_tokens_per_s: tokens / train_step_s,
        prefill_tokens_per_s: cfg.prompt_len as f64 / prefill_s,
        decode_tokens_per_s: 1.0 / decode_token_s,
        train_step_s,
        prefill_s,
        decode_token_s,
        train_step_s_range: ranges.0,
        prefill_s_range: ranges.1,
        decode_token_s_range: ranges.2,
        train_flops_per_token: flops_per_token,
        train_flops_per_s: flops_per_token * tokens / train_step_s,
        decode_flops_per_token: decode_flops,
        last_train_loss: loss,
        train_step_parts: parts,
    })
}
