//! The candle model: a decoder-only transformer with GLaM's mixture-of-experts FFN in every
//! `moe_every`-th layer. Learned token and position embeddings, pre-norm blocks (layer norm),
//! causal multi-head attention, GELU feed-forward blocks; with `experts = 1` it is exactly the
//! dense baseline (same parameter names, no router, no auxiliary loss). See docs/model.md.

mod attention;
mod checkpoint;
mod device;
mod fused;
mod generate;
mod init;
mod layers;
mod layout;
mod moe;
mod optim;
mod trainer;

pub use attention::{causal_mask, LayerCache};
pub use checkpoint::{load_checkpoint, CheckpointError, TrainerState, PROFILE_FILE, WEIGHTS_FILE};
pub use device::{
    describe_device, gpu_identity, nvml_uuid, pick_device, tune_cpu_runtime, GpuIdentity,
};
pub use fused::CAUSAL_BLOCK;
pub use generate::{generate, generate_uncached, Generation, SampleConfig, TokenSampler};
pub use layers::{cross_entropy, log_softmax};
pub use moe::{brute_force as moe_brute_force, capacity, LayerRouting};
pub use optim::{AdamW, GradSquares, LrSchedule};
pub use trainer::{StepTimes, TrainConfig, TrainStep, Trainer};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::accounting::flops::elementwise::{
    RESIDUAL_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT,
};
use crate::accounting::{Component, FlopCount};
use crate::profile::ModelProfile;
use attention::Attention;
use layers::{LayerNorm, Linear, Mlp};
use layout::{layout, FfnLayout, MlpLayout, NormLayout, Param};
use moe::Moe;

#[derive(Clone, Debug)]
enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    ffn: Ffn,
}

/// What one forward pass collects besides the activations.
struct Pass {
    flops: FlopCount,
    /// Tokens in the pass and the model's width, for the elementwise counts.
    rows: usize,
    d_model: usize,
    routing: Vec<LayerRouting>,
    balance: Vec<Tensor>,
    side_grads: Vec<Arc<fused::WeightGrads>>,
}

impl Pass {
    fn count_residual(&mut self) {
        self.flops.add(
            Component::NormAct,
            RESIDUAL_FLOPS_PER_ELEMENT * (self.rows * self.d_model) as f64,
        );
    }
}

/// How a block's attention runs in this pass: `shape` is (batch, new positions); `fused` where
/// the fused op may serve (the CPU, no cache), otherwise candle's ops with the mask and cache.
struct Attend<'a> {
    shape: (usize, usize),
    fused: bool,
    mask: Option<&'a Tensor>,
    cache: Option<&'a mut LayerCache>,
}

impl Block {
    /// `x + attention(norm1(x))`: one fused op where it may serve and its backward pass reaches
    /// the weights, candle's ops otherwise.
    fn attention_half(&self, x: Tensor, how: Attend, pass: &mut Pass) -> Result<Tensor> {
        let (norm, attn) = (&self.norm1, &self.attn);
        let (b, t) = how.shape;
        if how.fused && fused::reaches_weights(&x, norm.params().chain(attn.matrices())) {
            norm.count(pass.rows * pass.d_model, &mut pass.flops);
            attn.count_fused(b, t, &mut pass.flops);
            pass.count_residual();
            let dims = fused::AttentionDims {
                batch: b,
                seq: t,
                heads: attn.heads,
                d_head: attn.d_head,
            };
            let (y, grads) =
                fused::attention_block(&x, norm.fused(), &attn.qkv.w, &attn.out.w, dims)?;
            pass.side_grads.push(grads);
            return Ok(y);
        }
        let h = norm.forward(&x, &mut pass.flops)?;
        let a = attn.forward(&h, b, t, how.mask, how.cache, &mut pass.flops)?;
        pass.count_residual();
        x + a
    }

    /// `x + ffn(norm2(x))` for the dense FFN (one fused op where `fused` and its backward pass
    /// reaches the weights) or the MoE layer `layer`, whose routing the pass records.
    fn ffn_half(&self, x: Tensor, layer: usize, fused: bool, pass: &mut Pass) -> Result<Tensor> {
        let norm = &self.norm2;
        let y = match &self.ffn {
            Ffn::Dense(mlp)
                if fused && fused::reaches_weights(&x, norm.params().chain(mlp.matrices())) =>
            {
                norm.count(pass.rows * pass.d_model, &mut pass.flops);
                mlp.count(pass.rows, Component::DenseFfn, &mut pass.flops);
                pass.count_residual();
                let (y, grads) = match &mlp.gate {
                    None => fused::feed_forward_block(&x, norm.fused(), &mlp.up.w, &mlp.down.w)?,
                    Some(gate) => fused::gated_feed_forward_block(
                        &x,
                        norm.fused(),
                        [&gate.w, &mlp.up.w, &mlp.down.w],
                        mlp.kind,
                    )?,
                };
                pass.side_grads.push(grads);
                return Ok(y);
            }
            Ffn::Dense(mlp) => {
                let h = norm.forward(&x, &mut pass.flops)?;
                mlp.forward(&h, Component::DenseFfn, &mut pass.flops)?
            }
            Ffn::Moe(moe) => {
                let h = norm.forward(&x, &mut pass.flops)?;
                let out = moe.forward(&h, layer, &mut pass.flops)?;
                pass.routing.push(out.routing);
                pass.balance.push(out.balance_loss);
                pass.side_grads.extend(out.expert_grads);
                out.y
            }
        };
        pass.count_residual();
        x + y
    }
}

/// One forward pass: logits, the (already weighted) auxiliary loss, what the routers did and the
/// FLOPs executed.
pub struct Forward {
    /// (rows, vocab): every position for [`Model::forward`], the last position of each sequence
    /// for [`Model::forward_cached`].
    pub logits: Tensor,
    /// `aux_loss_weight x mean over MoE layers of the balancing loss`; `None` for a dense model.
    pub aux_loss: Option<Tensor>,
    pub routing: Vec<LayerRouting>,
    pub flops: FlopCount,
    /// Weight gradients that the fused CPU ops compute outside candle's graph.
    side_grads: Vec<Arc<fused::WeightGrads>>,
}

impl Forward {
    /// The gradients of `loss` (computed from this pass) for every parameter. Use this rather
    /// than `loss.backward()`: on the CPU the weights of the feed-forward blocks and the experts
    /// get their gradients from the fused ops outside candle's graph, and this is where they join
    /// the rest.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        Ok(self.backward_with_squares(loss)?.0)
    }

    /// As [`Forward::backward`], with the sums of squares that the fused ops took of the
    /// gradients they computed, for [`AdamW::step_with_squares`].
    pub fn backward_with_squares(&self, loss: &Tensor) -> Result<(GradStore, GradSquares)> {
        let mut grads = fused::on_pool(|| loss.backward())?;
        let mut squares = GradSquares::default();
        for g in &self.side_grads {
            g.move_into(&mut grads, &mut squares)?;
        }
        Ok((grads, squares))
    }

    /// Tokens per expert, one vector per MoE layer.
    pub fn expert_tokens(&self) -> Vec<Vec<u64>> {
        self.routing
            .iter()
            .map(|r| r.tokens_per_expert.clone())
            .collect()
    }

    pub fn dropped(&self) -> u64 {
        self.routing.iter().map(|r| r.dropped).sum()
    }
}

/// Keys and values of every layer, for generation.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The model: its profile, its parameters (named `Var`s) and the modules built on them.
pub struct Model {
    profile: ModelProfile,
    device: Device,
    dtype: DType,
    vars: BTreeMap<String, Var>,
    /// The token and position embedding tables, looked up in the parameters' dtype (f32) and
    /// cast after: a gradient that sums many tokens into one row is summed in f32.
    tok_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    /// (d_model, vocab); the transposed token embedding when tied.
    head: Tensor,
}

/// The dtype of the parameters themselves (the optimizer's master copy), on every device.
pub const MASTER_DTYPE: DType = DType::F32;

/// The dtype the model computes in: f32 on the CPU (bf16 is widened there and slower), bf16 on
/// a GPU, as GLaM (fp32 weights, bf16 activations). The parameters stay f32 either way.
pub fn dtype_for(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

impl Model {
    /// A freshly initialised model computing in its device's dtype ([`dtype_for`]); the same
    /// profile and seed give the same parameters.
    pub fn new(profile: &ModelProfile, device: &Device, seed: u64) -> Result<Model> {
        Model::with_compute_dtype(profile, device, seed, dtype_for(device))
    }

    /// As [`Model::new`], computing in `compute` whatever the device: bf16 on the CPU runs the
    /// GPU's code path (candle's composed ops, f32 master weights cast at each use), which is how
    /// the tests check that path without a GPU.
    pub fn with_compute_dtype(
        profile: &ModelProfile,
        device: &Device,
        seed: u64,
        compute: DType,
    ) -> Result<Model> {
        // Profiles of today's LLMs are for accounting and projection; refuse what is not built here.
        let lacks = profile.features_the_model_lacks();
        if !lacks.is_empty() {
            return Err(candle_core::Error::Msg(format!(
                "model profile `{}` uses {}, which sparsewatt's model does not build (`account` and `project` take it)",
                profile.name,
                lacks.join(", ")
            )));
        }
        let vars = init::init_vars(profile, device, MASTER_DTYPE, seed)?;
        Model::from_vars_in(profile, device, vars, compute)
    }

    /// Build the modules on a complete set of named parameters, computing in the device's dtype.
    pub(crate) fn from_vars(
        profile: &ModelProfile,
        device: &Device,
        vars: BTreeMap<String, Var>,
    ) -> Result<Model> {
        Model::from_vars_in(profile, device, vars, dtype_for(device))
    }

    /// After the parameters changed (an optimizer step): cast them again for the next pass when
    /// the model computes in another dtype than it stores. A no-op otherwise, since then the
    /// modules hold the parameters' own tensors.
    pub fn refresh_weights(&mut self) -> Result<()> {
        if self.dtype == MASTER_DTYPE {
            return Ok(());
        }
        let (profile, device) = (self.profile.clone(), self.device.clone());
        *self = Model::from_vars_in(&profile, &device, self.vars.clone(), self.dtype)?;
        Ok(())
    }

    /// Build the modules on `vars`, each weight cast to `compute` (on the autograd graph, so
    /// gradients reach the f32 parameters in f32).
    fn from_vars_in(
        profile: &ModelProfile,
        device: &Device,
        vars: BTreeMap<String, Var>,
        compute: DType,
    ) -> Result<Model> {
        let p = profile;
        let get = |param: &Param| -> Result<Tensor> {
            vars.get(&param.name)
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("missing parameter {}", param.name))
                })?
                .as_tensor()
                .to_dtype(compute)
        };
        let lin = |param: &Param| -> Result<Linear> { Ok(Linear { w: get(param)? }) };
        let norm = |n: &NormLayout| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gain: get(&n.gain)?,
                bias: get(&n.bias)?,
            })
        };
        let mlp = |m: &MlpLayout| -> Result<Mlp> {
            Ok(Mlp {
                up: lin(&m.up)?,
                down: lin(&m.down)?,
                gate: m.gate.as_ref().map(lin).transpose()?,
                kind: m.kind,
            })
        };
        let l = layout(p);
        let mut blocks = Vec::with_capacity(p.layers);
        for b in &l.blocks {
            let ffn = match &b.ffn {
                FfnLayout::Moe { router, experts } => Ffn::Moe(Moe {
                    router: lin(router)?,
                    experts: experts.iter().map(mlp).collect::<Result<_>>()?,
                    top_k: p.top_k,
                    capacity_factor: p.capacity_factor,
                }),
                FfnLayout::Dense(m) => Ffn::Dense(mlp(m)?),
            };
            blocks.push(Block {
                norm1: norm(&b.norm1)?,
                attn: Attention {
                    qkv: lin(&b.qkv)?,
                    out: lin(&b.out)?,
                    heads: p.heads,
                    d_head: p.d_head,
                },
                norm2: norm(&b.norm2)?,
                ffn,
            });
        }
        let master = |param: &Param| -> Result<Tensor> {
            vars.get(&param.name)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {}", param.name)))
        };
        let tok_emb = master(&l.tok_emb)?;
        let head = match &l.head {
            None => tok_emb.to_dtype(compute)?.t()?,
            Some(h) => get(h)?,
        };
        let dtype = compute;
        Ok(Model {
            profile: p.clone(),
            device: device.clone(),
            dtype,
            pos_emb: master(&l.pos_emb)?,
            final_norm: norm(&l.final_norm)?,
            tok_emb,
            blocks,
            head,
            vars,
        })
    }

    pub fn profile(&self) -> &ModelProfile {
        &self.profile
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every trainable parameter by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Token ids (batch, seq) u32 as a tensor on the model's device.
    pub fn ids(&self, tokens: &[u32], batch: usize) -> Result<Tensor> {
        let seq = tokens.len() / batch.max(1);
        Tensor::from_slice(tokens, (batch, seq), &self.device)
    }

    /// Forward over whole sequences: logits at every position.
    pub fn forward(&self, ids: &Tensor) -> Result<Forward> {
        self.run(ids, None, false)
    }

    /// Forward of new tokens appended to `cache` (prefill with an empty cache, then one token per
    /// decode step): logits at the last new position of each sequence.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Forward> {
        if cache.layers.is_empty() {
            cache.layers =
                vec![LayerCache::with_capacity(self.profile.seq_len); self.profile.layers];
        }
        self.run(ids, Some(cache), true)
    }

    /// An empty cache for [`Model::forward_cached`].
    pub fn new_cache(&self) -> KvCache {
        KvCache::default()
    }

    fn run(&self, ids: &Tensor, cache: Option<&mut KvCache>, last_only: bool) -> Result<Forward> {
        let rows = ids.elem_count();
        fused::on_pool_for(rows * self.profile.d_model, || {
            self.run_on_pool(ids, cache, last_only)
        })
    }

    fn run_on_pool(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Forward> {
        let p = &self.profile;
        let (b, t) = ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        if past + t > p.seq_len {
            candle_core::bail!(
                "{} positions requested but {} has {} position embeddings (seq_len)",
                past + t,
                p.name,
                p.seq_len
            );
        }
        let n = b * t;
        let d = p.d_model;
        let mut pass = Pass {
            flops: FlopCount::default(),
            rows: n,
            d_model: d,
            routing: Vec::new(),
            balance: Vec::new(),
            side_grads: Vec::new(),
        };
        let tok = self.tok_emb.index_select(&ids.flatten_all()?, 0)?; // (n, d)
        let pos = self.pos_emb.narrow(0, past, t)?; // (t, d)
        let mut x = tok
            .reshape((b, t, d))?
            .broadcast_add(&pos)?
            .reshape((n, d))?
            .to_dtype(self.dtype)?;
        // The position embedding added to the token's.
        pass.count_residual();
        // On the CPU each dense feed-forward half of a block is one fused op, and so is each
        // attention half without a cache, which masks as it goes and needs no mask tensor.
        let fused_ffn = fused::applies(&x);
        let fused_attention = cache.is_none() && fused_ffn;
        let mask = if t > 1 && !fused_attention {
            Some(causal_mask(t, past, &self.device)?) // f32: the softmax's dtype
        } else {
            None
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c.layers[i]);
            let attention = Attend {
                shape: (b, t),
                fused: fused_attention,
                mask: mask.as_ref(),
                cache: layer_cache,
            };
            x = block.attention_half(x, attention, &mut pass)?;
            x = block.ffn_half(x, i, fused_ffn, &mut pass)?;
        }
        let Pass {
            flops: mut f,
            routing,
            balance,
            side_grads,
            ..
        } = pass;
        let x = if last_only {
            x.reshape((b, t, d))?.narrow(1, t - 1, 1)?.reshape((b, d))?
        } else {
            x
        };
        let x = self.final_norm.forward(&x, &mut f)?;
        let rows = x.dim(0)?;
        f.add_matmul(Component::Logits, rows, d, p.vocab_size);
        // The softmax over the vocabulary (in the loss or the sampler) is part of the forward count.
        f.add(
            Component::NormAct,
            SOFTMAX_FLOPS_PER_ELEMENT * (rows * p.vocab_size) as f64,
        );
        let logits = x.matmul(&self.head)?;
        let aux_loss = if balance.is_empty() {
            None
        } else {
            let mean = Tensor::stack(&balance, 0)?.mean_all()?;
            Some((mean * p.aux_loss_weight)?)
        };
        Ok(Forward {
            logits,
            aux_loss,
            routing,
            flops: f,
            side_grads,
        })
    }

    /// The sparse output of MoE layer `layer` on `x` (tokens, d_model) and the brute-force
    /// reference (every expert on every token); for tests.
    pub fn moe_against_brute_force(&self, layer: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.blocks[layer].ffn {
            Ffn::Moe(m) => Ok((
                m.forward(x, layer, &mut FlopCount::default())?.y,
                moe::brute_force(m, x)?,
            )),
            Ffn::Dense(_) => candle_core::bail!("layer {layer} is not a MoE layer"),
        }
    }

    /// Write the weights (safetensors) and the profile beside them into `dir`.
    pub fn save(&self, dir: &std::path::Path) -> std::result::Result<(), CheckpointError> {
        checkpoint::save_model(self, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;

    #[test]
    fn uuids_are_spelled_as_nvml_spells_them() {
        let b: Vec<u8> = (0..16u8).map(|i| i * 17).collect();
        assert_eq!(nvml_uuid(&b), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn parameter_count_matches_the_accounting() {
        for name in ["glam-tiny", "dense-tiny"] {
            let p = load_model(name).unwrap();
            let m = Model::new(&p, &Device::Cpu, 0).unwrap();
            let acc = crate::accounting::params(&p);
            // Both count the same structure (docs/accounting.md): they must agree exactly.
            assert_eq!(m.num_params() as f64, acc.total, "{name}");
        }
    }
}
