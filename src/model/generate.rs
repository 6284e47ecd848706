//! Generation: a prefill of the prompt, then one decode step per new token with the key/value
//! cache; greedy or temperature + nucleus (top-p) sampling.

use candle_core::{DType, Result, Tensor};
use std::time::Instant;

use super::{KvCache, Model};
use crate::accounting::FlopCount;
use crate::data::rng::SplitMix64;

/// How the next token is chosen. `temperature == 0` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = all).
    pub top_p: f64,
    pub seed: u64,
}

impl SampleConfig {
    pub fn greedy() -> SampleConfig {
        SampleConfig {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Draws tokens from logits according to a [`SampleConfig`].
pub struct TokenSampler {
    config: SampleConfig,
    rng: SplitMix64,
}

impl TokenSampler {
    pub fn new(config: SampleConfig) -> TokenSampler {
        TokenSampler {
            rng: SplitMix64::new(config.seed),
            config,
        }
    }

    /// The next token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i as u32)
        };
        if self.config.temperature <= 0.0 {
            return argmax();
        }
        let t = self.config.temperature as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (((l - max) / t) as f64).exp()))
            .collect();
        let z: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= z);
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            kept += p.1;
            if kept >= self.config.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        let mass: f64 = probs.iter().map(|p| p.1).sum();
        let mut u = self.rng.next_f64() * mass;
        for p in &probs {
            if u < p.1 {
                return p.0;
            }
            u -= p.1;
        }
        probs.last().map_or_else(argmax, |p| p.0)
    }
}

/// A generated continuation, with what it cost.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Executed FLOPs of the prefill and of all decode steps.
    pub prefill_flops: FlopCount,
    pub decode_flops: FlopCount,
    /// Tokens per expert per MoE layer, summed over the decode steps.
    pub decode_expert_tokens: Vec<Vec<u64>>,
}

fn last_row(logits: &Tensor) -> Result<Vec<f32>> {
    let rows = logits.dim(0)?;
    logits.get(rows - 1)?.to_dtype(DType::F32)?.to_vec1()
}

/// Continue `prompt` by `new_tokens` tokens with the KV cache (stops early at the profile's
/// seq_len, the number of position embeddings).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    new_tokens: usize,
    config: SampleConfig,
) -> Result<Generation> {
    let mut out = Generation::default();
    if prompt.is_empty() {
        candle_core::bail!("generation needs a prompt of at least one token");
    }
    let room = model.profile().seq_len.saturating_sub(prompt.len());
    let new_tokens = new_tokens.min(room + 1);
    let mut sampler = TokenSampler::new(config);
    let mut cache: KvCache = model.new_cache();
    let t0 = Instant::now();
    let fwd = model.forward_cached(&model.ids(prompt, 1)?, &mut cache)?;
    let mut next = sampler.sample(&last_row(&fwd.logits)?);
    out.prefill_seconds = t0.elapsed().as_secs_f64();
    out.prefill_flops = fwd.flops;
    let t1 = Instant::now();
    for i in 0..new_tokens {
        out.tokens.push(next);
        if i + 1 == new_tokens {
            break;
        }
        let fwd = model.forward_cached(&model.ids(&[next], 1)?, &mut cache)?;
        out.decode_flops.merge(&fwd.flops);
        crate::accounting::add_expert_tokens(&mut out.decode_expert_tokens, &fwd.expert_tokens());
        next = sampler.sample(&last_row(&fwd.logits)?);
    }
    out.decode_seconds = t1.elapsed().as_secs_f64();
    Ok(out)
}

/// The same continuation by full recomputation at every step (no cache): the reference the
/// cached path is tested against.
pub fn generate_uncached(
    model: &Model,
    prompt: &[u32],
    new_tokens: usize,
    config: SampleConfig,
) -> Result<Vec<u32>> {
    let mut sampler = TokenSampler::new(config);
    let mut seq = prompt.to_vec();
    let room = model.profile().seq_len.saturating_sub(prompt.len());
    let mut out = Vec::new();
    for _ in 0..new_tokens.min(room + 1) {
        let fwd = model.forward(&model.ids(&seq, 1)?)?;
        let next = sampler.sample(&last_row(&fwd.logits)?);
        out.push(next);
        seq.push(next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_top_p_keeps_only_the_nucleus() {
        let mut g = TokenSampler::new(SampleConfig::greedy());
        assert_eq!(g.sample(&[0.1, 3.0, -1.0]), 1);
        // Token 2 holds ~0.9999 of the mass: with top_p 0.5 nothing else is ever drawn.
        let mut s = TokenSampler::new(SampleConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
        });
        assert!((0..200).all(|_| s.sample(&[0.0, 0.0, 10.0, 0.0]) == 2));
        // At temperature 1 over two equal logits both are drawn, about evenly.
        let mut s = TokenSampler::new(SampleConfig {
            temperature: 1.0,
            top_p: 1.0,
            seed: 7,
        });
        let ones = (0..2000).filter(|_| s.sample(&[1.0, 1.0]) == 1).count();
        assert!((800..1200).contains(&ones), "{ones}");
    }
}
