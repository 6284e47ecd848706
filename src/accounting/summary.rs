//! The account of one model in one struct: what `sparsewatt account --json` prints. The keys are
//! stable and documented in docs/accounting.md.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::analytic::{
    decode_flops_per_token, decode_flops_per_token_avg, forward_flops_per_token,
    forward_flops_per_token_with, prefill_flops_per_token, train_flops_per_token, AttnCounting,
};
use super::bytes::{bytes_per_token, ByteCount};
use super::params::{params, ComponentParams};
use super::{Component, FlopCount};
use crate::profile::{FfnKind, ModelProfile};
use crate::vocab::Phase;

/// What to account at. `Default` is the profile's seq_len, batch 1, bf16 weights and activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountOptions {
    /// Context length; `None` means the profile's seq_len.
    pub ctx_len: Option<usize>,
    pub batch: usize,
    pub bytes_per_param: f64,
    pub bytes_per_act: f64,
}

impl Default for AccountOptions {
    fn default() -> Self {
        AccountOptions {
            ctx_len: None,
            batch: 1,
            bytes_per_param: 2.0,
            bytes_per_act: 2.0,
        }
    }
}

/// FLOPs per token, totals (see [`Summary`] for each denominator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlopsPerToken {
    /// Full-sequence forward at ctx_len, attention counted in full, logits at every position.
    pub forward: f64,
    /// The same with causal attention counted over unmasked keys only.
    pub forward_causal: f64,
    /// Forward + backward at the profile's seq_len (3 x forward).
    pub train: f64,
    /// Per prompt token of a ctx_len prompt, logits for the last position only.
    pub prefill: f64,
    /// The last token of a ctx_len sequence generated one token at a time (ctx_len - 1 cached).
    pub decode: f64,
    /// Mean per generated token over ctx_len tokens generated from position 0.
    pub decode_avg: f64,
}

/// FLOPs per token by component (every component, zero where it costs nothing), for each figure of
/// [`FlopsPerToken`] but the causal and the mean decode ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlopsByComponent {
    pub forward: BTreeMap<Component, f64>,
    pub train: BTreeMap<Component, f64>,
    pub prefill: BTreeMap<Component, f64>,
    pub decode: BTreeMap<Component, f64>,
}

/// Bytes per token of each phase at the summary's batch: training at ctx_len tokens a sequence,
/// prefill of a ctx_len prompt, decode of the last token of a ctx_len sequence (ctx_len - 1 cached).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BytesPerToken {
    pub train: ByteCount,
    pub prefill: ByteCount,
    pub decode: ByteCount,
}

/// The account of a model: parameters, FLOPs per token and bytes per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub source: Option<String>,
    pub seq_len: usize,
    pub ctx_len: usize,
    pub batch: usize,
    pub bytes_per_param: f64,
    pub bytes_per_act: f64,
    /// Feed-forward kind of the dense layers and of the experts (absent in JSON written before
    /// gated units existed: plain MLP).
    #[serde(default)]
    pub ffn: FfnKind,
    #[serde(default)]
    pub expert_ffn: FfnKind,
    pub params_total: f64,
    pub params_active: f64,
    /// The totals the model's authors publish, from the profile (absent where none is given);
    /// the difference from the count is docs/accounting.md's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_active: Option<f64>,
    /// Every component, zero where it has no parameters.
    pub params_by_component: BTreeMap<Component, ComponentParams>,
    pub flops_per_token: FlopsPerToken,
    pub flops_by_component: FlopsByComponent,
    pub bytes_per_token: BytesPerToken,
}

impl Summary {
    /// Account `p` at the given options.
    pub fn of(p: &ModelProfile, o: &AccountOptions) -> Summary {
        let ctx = o.ctx_len.unwrap_or(p.seq_len).max(1);
        let batch = o.batch.max(1);
        let pc = params(p);
        let forward = forward_flops_per_token(p, ctx);
        let train = train_flops_per_token(p);
        let prefill = prefill_flops_per_token(p, ctx);
        // Decode figures are for the last token of a ctx-long sequence: ctx - 1 cached tokens.
        let decode = decode_flops_per_token(p, ctx - 1);
        let bytes =
            |phase, n| bytes_per_token(p, phase, batch, n, o.bytes_per_param, o.bytes_per_act);
        Summary {
            model: p.name.clone(),
            source: p.source.clone(),
            seq_len: p.seq_len,
            ctx_len: ctx,
            batch,
            bytes_per_param: o.bytes_per_param,
            bytes_per_act: o.bytes_per_act,
            ffn: p.ffn,
            expert_ffn: p.expert_ffn,
            params_total: pc.total,
            params_active: pc.active,
            published_params_total: p.published_params_total,
            published_params_active: p.published_params_active,
            params_by_component: Component::ALL.iter().map(|&c| (c, pc.get(c))).collect(),
            flops_per_token: FlopsPerToken {
                forward: forward.total(),
                forward_causal: forward_flops_per_token_with(p, ctx, AttnCounting::Causal).total(),
                train: train.total(),
                prefill: prefill.total(),
                decode: decode.total(),
                decode_avg: decode_flops_per_token_avg(p, 0, ctx).total(),
            },
            flops_by_component: FlopsByComponent {
                forward: every_component(&forward),
                train: every_component(&train),
                prefill: every_component(&prefill),
                decode: every_component(&decode),
            },
            bytes_per_token: BytesPerToken {
                train: bytes(Phase::Train, ctx),
                prefill: bytes(Phase::Prefill, ctx),
                decode: bytes(Phase::Decode, ctx - 1),
            },
        }
    }

    /// Parameters of a component (zero when absent).
    pub fn params_of(&self, c: Component) -> ComponentParams {
        self.params_by_component
            .get(&c)
            .copied()
            .unwrap_or_default()
    }
}

/// Every component, zero where it costs nothing, so the JSON keys do not depend on the model.
fn every_component(f: &FlopCount) -> BTreeMap<Component, f64> {
    Component::ALL.iter().map(|&c| (c, f.get(c))).collect()
}
