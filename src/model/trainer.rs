//! Training: next-token cross-entropy plus the MoE balancing loss, AdamW with warm-up and cosine
//! decay, global gradient-norm clipping, validation loss on a held-out split, checkpoints and
//! resume.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::checkpoint::{self, CheckpointError, TrainerState};
use super::layers::{cross_entropy, cross_entropy_per_sequence};
use super::optim::{AdamW, LrSchedule};
use super::Model;
use crate::accounting::{FlopCount, TRAIN_FORWARD_MULTIPLE};
use crate::data::{Batch, BatchSampler, Corpus};
use crate::profile::ModelProfile;

/// Hyper-parameters of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Steps of the whole run (the cosine decay ends there).
    pub total_steps: u64,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub clip_norm: f64,
    /// Share of the corpus held out for validation.
    pub val_fraction: f64,
    /// Batches in one validation (the same windows every time).
    pub val_batches: usize,
    pub seed: u64,
}

impl TrainConfig {
    /// Defaults that train the tiny profiles well on the CPU.
    pub fn for_profile(p: &ModelProfile, total_steps: u64) -> TrainConfig {
        TrainConfig {
            batch: 16,
            seq_len: p.seq_len,
            lr: 2e-3,
            warmup_steps: (total_steps / 20).clamp(1, 100),
            total_steps,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            clip_norm: 1.0,
            val_fraction: 0.05,
            val_batches: 4,
            seed: 42,
        }
    }

    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.total_steps,
            min_ratio: self.min_lr_ratio,
        }
    }
}

/// What one training step did.
#[derive(Debug, Clone)]
pub struct TrainStep {
    pub step: u64,
    /// Tokens trained (the per-token denominator): batch x seq_len.
    pub tokens: u64,
    /// Cross-entropy, nats per token (without the auxiliary loss).
    pub loss: f64,
    /// The weighted balancing loss, for MoE models.
    pub aux_loss: Option<f64>,
    pub grad_norm: f64,
    pub lr: f64,
    /// Executed FLOPs: forward x [`TRAIN_FORWARD_MULTIPLE`] (backward = 2 x forward).
    pub flops: FlopCount,
    pub expert_tokens: Vec<Vec<u64>>,
    pub dropped: u64,
    /// Domain name -> MoE layer -> tokens sent to each expert.
    pub domain_expert_tokens: BTreeMap<String, Vec<Vec<u64>>>,
}

/// Seconds of each part of one training step (forward with the loss, backward, optimizer with
/// the cast of the weights for the next pass), each ended by waiting for the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StepTimes {
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

pub struct Trainer {
    pub model: Model,
    pub config: TrainConfig,
    opt: AdamW,
    sampler: BatchSampler,
    val: Vec<Batch>,
    domain_names: Vec<String>,
    pub step: u64,
    pub tokens: u64,
    pub flops: f64,
    pub last_val_loss: Option<f64>,
}

impl Trainer {
    /// A trainer for `model` on `corpus` (split into training and validation parts).
    pub fn new(model: Model, corpus: &Corpus, config: TrainConfig) -> anyhow::Result<Trainer> {
        let (train, val) = corpus.split(config.val_fraction)?;
        train.check_windows(config.seq_len)?;
        let val_batches = val
            .eval_batches(config.batch, config.seq_len, config.val_batches)
            .or_else(|_| val.eval_batches(1, config.seq_len, config.val_batches))?;
        let domain_names = train.domain_names().to_vec();
        Ok(Trainer {
            opt: AdamW::new(config.weight_decay),
            sampler: BatchSampler::new(train, config.seed),
            val: val_batches,
            domain_names,
            model,
            config,
            step: 0,
            tokens: 0,
            flops: 0.0,
            last_val_loss: None,
        })
    }

    fn batch_tensors(&self, b: &Batch) -> candle_core::Result<(Tensor, Tensor)> {
        let dev = self.model.device();
        Ok((
            Tensor::from_slice(&b.inputs, (b.batch, b.seq_len), dev)?,
            Tensor::from_slice(&b.targets, b.batch * b.seq_len, dev)?,
        ))
    }

    /// One optimisation step on the next training batch.
    pub fn train_step(&mut self) -> anyhow::Result<TrainStep> {
        crate::model::fused::on_pool(|| self.train_step_on_pool(None))
    }

    /// As [`Trainer::train_step`], waiting for the device after each part of the step to time
    /// it: where a step's time goes, for `bench` (the waits cost a little time of their own).
    pub fn train_step_timed(&mut self) -> anyhow::Result<(TrainStep, StepTimes)> {
        let mut times = StepTimes::default();
        let step = crate::model::fused::on_pool(|| self.train_step_on_pool(Some(&mut times)))?;
        Ok((step, times))
    }

    fn train_step_on_pool(
        &mut self,
        mut times: Option<&mut StepTimes>,
    ) -> anyhow::Result<TrainStep> {
        let device = self.model.device().clone();
        let mut clock = std::time::Instant::now();
        // Seconds since the last lap, once the device has finished its queued work.
        let mut lap = |slot: fn(&mut StepTimes) -> &mut f64| -> anyhow::Result<()> {
            if let Some(t) = times.as_deref_mut() {
                device.synchronize()?;
                *slot(t) = clock.elapsed().as_secs_f64();
                clock = std::time::Instant::now();
            }
            Ok(())
        };
        let batch = self
            .sampler
            .next_batch(self.config.batch, self.config.seq_len)?;
        let (ids, targets) = self.batch_tensors(&batch)?;
        let fwd = self.model.forward(&ids)?;
        let ce = cross_entropy(&fwd.logits, &targets)?;
        let total = match &fwd.aux_loss {
            Some(a) => (&ce + a)?,
            None => ce.clone(),
        };
        lap(|t| &mut t.forward_s)?;
        let (grads, squares) = fwd.backward_with_squares(&total)?;
        lap(|t| &mut t.backward_s)?;
        let lr = self.config.schedule().at(self.step);
        let (vars, clip) = (self.model.vars(), self.config.clip_norm);
        let norm = self
            .opt
            .step_with_squares(vars, &grads, &squares, lr, clip)?;
        // A model computing in bf16 casts its updated f32 parameters for the next pass.
        self.model.refresh_weights()?;
        lap(|t| &mut t.optimizer_s)?;
        let loss = ce.to_scalar::<f32>()? as f64;
        let aux_loss = match &fwd.aux_loss {
            Some(a) => Some(a.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? as f64),
            None => None,
        };
        let flops = fwd.flops.scaled(TRAIN_FORWARD_MULTIPLE);
        let tokens = batch.tokens() as u64;
        self.step += 1;
        self.tokens += tokens;
        self.flops += flops.total();
        Ok(TrainStep {
            step: self.step - 1,
            tokens,
            loss,
            aux_loss,
            grad_norm: norm,
            lr,
            domain_expert_tokens: domain_loads(
                &fwd.routing,
                &batch.domains,
                &self.domain_names,
                self.model.profile(),
            ),
            expert_tokens: fwd.expert_tokens(),
            dropped: fwd.dropped(),
            flops,
        })
    }

    /// Mean cross-entropy (nats per token) over the fixed validation batches.
    pub fn validate(&mut self) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for b in &self.val {
            let (ids, targets) = self.batch_tensors(b)?;
            let fwd = self.model.forward(&ids)?;
            sum += cross_entropy(&fwd.logits.detach(), &targets)?.to_scalar::<f32>()? as f64;
        }
        let loss = sum / self.val.len() as f64;
        self.last_val_loss = Some(loss);
        Ok(loss)
    }

    /// The loss of each validation sequence (nats per token; the same fixed sequences every
    /// time), in batch order; their mean is the validation loss, which this records as the last.
    pub fn validate_sequences(&mut self) -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::new();
        for b in &self.val {
            let (ids, targets) = self.batch_tensors(b)?;
            let fwd = self.model.forward(&ids)?;
            let per = cross_entropy_per_sequence(&fwd.logits.detach(), &targets, b.batch)?;
            out.extend(per.into_iter().map(f64::from));
        }
        if !out.is_empty() {
            self.last_val_loss = Some(out.iter().sum::<f64>() / out.len() as f64);
        }
        Ok(out)
    }

    /// Save the model, the optimiser's moments and the trainer's position into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        self.model.save(dir)?;
        let moments = self
            .opt
            .host_moments()
            .map_err(|e| checkpoint::file_err(dir, e))?;
        checkpoint::save_trainer(dir, &self.state(), &moments)
    }

    pub fn state(&self) -> TrainerState {
        TrainerState {
            step: self.step,
            tokens: self.tokens,
            flops: self.flops,
            schedule: self.config.schedule(),
            seed: self.config.seed,
            adam_t: self.opt.t,
            val_loss: self.last_val_loss,
        }
    }

    /// Continue from a checkpoint written by [`Trainer::save`]: weights, moments, step and the
    /// data position (the sampler is replayed to the same batch).
    pub fn resume(
        dir: &Path,
        device: &Device,
        corpus: &Corpus,
        mut config: TrainConfig,
    ) -> anyhow::Result<Trainer> {
        let model = checkpoint::load_checkpoint(dir, device)?;
        let Some((state, moments)) = checkpoint::load_trainer(dir)? else {
            anyhow::bail!(
                "{}: no {} beside the weights: this checkpoint has no trainer state to resume",
                dir.display(),
                checkpoint::TRAINER_FILE
            );
        };
        config.seed = state.seed;
        let mut t = Trainer::new(model, corpus, config)?;
        for _ in 0..state.step {
            t.sampler.next_batch(t.config.batch, t.config.seq_len)?;
        }
        t.step = state.step;
        t.tokens = state.tokens;
        t.flops = state.flops;
        t.last_val_loss = state.val_loss;
        t.opt.t = state.adam_t;
        t.opt.moments = moments;
        Ok(t)
    }
}

/// Tokens each corpus domain sent to each expert of each MoE layer.
fn domain_loads(
    routing: &[super::LayerRouting],
    domains: &[u16],
    names: &[String],
    p: &ModelProfile,
) -> BTreeMap<String, Vec<Vec<u64>>> {
    let mut out: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    if routing.is_empty() || names.is_empty() {
        return out;
    }
    for (j, r) in routing.iter().enumerate() {
        for (t, chosen) in r.experts.chunks(p.top_k).enumerate() {
            let Some(name) = domains.get(t).and_then(|&d| names.get(d as usize)) else {
                continue;
            };
            let layers = out
                .entry(name.clone())
                .or_insert_with(|| vec![vec![0; p.experts]; routing.len()]);
            for &e in chosen {
                layers[j][e as usize] += 1;
            }
        }
    }
    out
}
