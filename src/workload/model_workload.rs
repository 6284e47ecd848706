//! The candle model as a [`Workload`]: a training step, a prefill of a batch of held-out prompts,
//! and decode steps that continue those sequences with the KV cache.

use candle_core::{DType, Tensor};

use super::{StepOutcome, Workload};
use crate::accounting::add_expert_tokens;
use crate::accounting::FlopCount;
use crate::data::Corpus;
use crate::model::{KvCache, Model, SampleConfig, TokenSampler, TrainConfig, Trainer};
use crate::vocab::{Phase, Role};

/// Shapes of the inference steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferenceShape {
    /// Sequences served together in prefill and decode.
    pub batch: usize,
    /// Prompt tokens per sequence.
    pub prompt_len: usize,
    /// New tokens per sequence in one decode step (one forward per token).
    pub decode_tokens_per_step: usize,
}

pub struct ModelWorkload {
    name: String,
    role: Role,
    trainer: Trainer,
    shape: InferenceShape,
    prompts: Vec<Vec<u32>>,
    prompt_index: usize,
    cache: Option<KvCache>,
    next: Vec<u32>,
    sampler: TokenSampler,
}

fn last_rows(logits: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    logits.to_dtype(DType::F32)?.to_vec2()
}

impl ModelWorkload {
    pub fn new(
        model: Model,
        role: Role,
        corpus: &Corpus,
        train: TrainConfig,
        shape: InferenceShape,
    ) -> anyhow::Result<ModelWorkload> {
        let name = model.profile().name.clone();
        let seq_len = model.profile().seq_len;
        if shape.prompt_len + shape.decode_tokens_per_step > seq_len {
            anyhow::bail!(
                "prompt of {} tokens plus {} decoded per step exceeds {name}'s seq_len {seq_len}",
                shape.prompt_len,
                shape.decode_tokens_per_step
            );
        }
        let (_, val) = corpus.split(train.val_fraction)?;
        // Held-out prompts from every domain in turn.
        let domains = val.domain_names().len().max(1) as u16;
        let prompts = (0..domains)
            .filter_map(|d| val.prompt_in(d, shape.prompt_len).ok())
            .collect::<Vec<_>>();
        if prompts.is_empty() {
            anyhow::bail!(
                "corpus {}: no held-out text of {} tokens for prompts",
                corpus.name(),
                shape.prompt_len
            );
        }
        let trainer = Trainer::new(model, corpus, train)?;
        Ok(ModelWorkload {
            name,
            role,
            trainer,
            shape,
            prompts,
            prompt_index: 0,
            cache: None,
            next: Vec::new(),
            sampler: TokenSampler::new(SampleConfig::greedy()),
        })
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn model(&self) -> &Model {
        &self.trainer.model
    }

    /// Whether a decode step fits in the cache, or a prefill must come first.
    fn room_to_decode(&self) -> bool {
        let seq_len = self.model().profile().seq_len;
        self.cache
            .as_ref()
            .is_some_and(|c| c.len() + self.shape.decode_tokens_per_step <= seq_len)
    }

    fn prefill(&mut self) -> anyhow::Result<StepOutcome> {
        let b = self.shape.batch;
        let mut toks = Vec::with_capacity(b * self.shape.prompt_len);
        for _ in 0..b {
            toks.extend_from_slice(&self.prompts[self.prompt_index % self.prompts.len()]);
            self.prompt_index += 1;
        }
        let model = &self.trainer.model;
        let mut cache = model.new_cache();
        let fwd = model.forward_cached(&model.ids(&toks, b)?, &mut cache)?;
        self.next = last_rows(&fwd.logits)?
            .iter()
            .map(|r| self.sampler.sample(r))
            .collect();
        self.cache = Some(cache);
        Ok(StepOutcome {
            tokens: toks.len() as u64,
            expert_tokens: fwd.expert_tokens(),
            dropped: fwd.dropped(),
            flops: fwd.flops,
            ..StepOutcome::default()
        })
    }

    fn decode(&mut self) -> anyhow::Result<StepOutcome> {
        if !self.room_to_decode() {
            anyhow::bail!(
                "{}: decode step without room in the KV cache; prefill first",
                self.name
            );
        }
        let b = self.shape.batch;
        let model = &self.trainer.model;
        let cache = self.cache.as_mut().expect("checked by room_to_decode");
        let mut flops = FlopCount::default();
        let mut loads: Vec<Vec<u64>> = Vec::new();
        let mut dropped = 0;
        for _ in 0..self.shape.decode_tokens_per_step {
            let fwd = model.forward_cached(&model.ids(&self.next, b)?, cache)?;
            flops.merge(&fwd.flops);
            dropped += fwd.dropped();
            add_expert_tokens(&mut loads, &fwd.expert_tokens());
            self.next = last_rows(&fwd.logits)?
                .iter()
                .map(|r| self.sampler.sample(r))
                .collect();
        }
        Ok(StepOutcome {
            tokens: (b * self.shape.decode_tokens_per_step) as u64,
            flops,
            expert_tokens: loads,
            dropped,
            ..StepOutcome::default()
        })
    }
}

impl Workload for ModelWorkload {
    fn name(&self) -> &str {
        &self.name
    }

    fn synchronize(&mut self) -> anyhow::Result<()> {
        Ok(self.trainer.model.device().synchronize()?)
    }

    fn role(&self) -> Role {
        self.role
    }

    fn step(&mut self, phase: Phase) -> anyhow::Result<StepOutcome> {
        match phase {
            Phase::Train => {
                let s = self.trainer.train_step()?;
                Ok(StepOutcome {
                    tokens: s.tokens,
                    flops: s.flops,
                    loss: Some(s.loss),
                    aux_loss: s.aux_loss,
                    expert_tokens: s.expert_tokens,
                    dropped: s.dropped,
                    domain_expert_tokens: s.domain_expert_tokens,
                })
            }
            Phase::Prefill => self.prefill(),
            Phase::Decode => self.decode(),
        }
    }

    fn validate(&mut self) -> anyhow::Result<Vec<f64>> {
        self.trainer.validate_sequences()
    }

    fn can_decode(&self) -> bool {
        self.room_to_decode()
    }
}
