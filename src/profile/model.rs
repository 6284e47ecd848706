//! Model profiles: the raw TOML as written, and the resolved, validated form everything else takes.

use serde::{Deserialize, Serialize};

use super::ProfileError;

/// The largest size any key may take (2^24): far above any published model's widths, counts and
/// context lengths, and small enough that products of two sizes stay exact in f64 and in usize.
pub const MAX_SIZE: usize = 1 << 24;

/// A model profile exactly as written in TOML. Unknown keys are refused.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawModelProfile {
    pub name: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_ff: usize,
    /// Experts per MoE layer; 1 means a dense model (no router, no auxiliary loss).
    pub experts: usize,
    pub top_k: usize,
    /// Every `moe_every`-th layer is a MoE layer: layer i (0-based) when (i + 1) % moe_every == 0.
    pub moe_every: usize,
    pub seq_len: usize,
    pub aux_loss_weight: f64,
    /// Width of one attention head; defaults to d_model / heads.
    #[serde(default)]
    pub d_head: Option<usize>,
    /// Expert capacity = ceil(capacity_factor * tokens * top_k / experts); absent means unlimited.
    #[serde(default)]
    pub capacity_factor: Option<f64>,
    /// The output projection shares the token embedding matrix. Default true.
    #[serde(default)]
    pub tied_embeddings: Option<bool>,
    /// Name of the dense model this sparse model is compared with (GLaM's "base dense model").
    #[serde(default)]
    pub dense_baseline: Option<String>,
    /// Where the figures come from (a paper, a table); free text.
    #[serde(default)]
    pub source: Option<String>,
    /// Feed-forward block of the dense (non-MoE) layers: "mlp" (default), "geglu" or "swiglu".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn: Option<String>,
    /// Feed-forward block of each expert, as `ffn`; default "mlp".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_ffn: Option<String>,
    /// Key/value heads (grouped-query attention; 1 is multi-query); default `heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    /// Position encoding: "learned" (absolute embeddings, default) or "rotary" (no parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<String>,
    /// Hidden width of one expert (fine-grained experts); default `d_ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_ff_expert: Option<usize>,
    /// Shared experts of each MoE layer that every token passes through beside its routed top_k
    /// (DeepSeekMoE), each `d_ff_expert` wide and of kind `expert_ffn`; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_experts: Option<usize>,
    /// The first `first_dense_layers` layers are dense whatever `moe_every` says; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_dense_layers: Option<usize>,
    /// Total parameters as the model's authors publish them (see the profile's comment for where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_total: Option<f64>,
    /// Parameters activated per token as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_active: Option<f64>,
    /// Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434) in place of multi-head attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<Mla>,
}

/// Multi-head latent attention's sizes, named as DeepSeek's config.json names them. Queries:
/// d_model -> q_lora_rank -> heads x (qk_nope_head_dim + qk_rope_head_dim) (or one d_model ->
/// heads x ... projection without `q_lora_rank`); keys and values: d_model -> kv_lora_rank (the
/// latent the KV cache holds) plus one shared qk_rope_head_dim rope key, then the latent ->
/// heads x (qk_nope_head_dim + v_head_dim); output heads x v_head_dim -> d_model.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mla {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
}

impl Mla {
    /// Width of one head's query and key: the part without and the part with rotary positions.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned seq_len x d_model embedding added to the token embedding (GPT-2, GPT-3).
    #[default]
    Learned,
    /// Rotary embeddings applied to queries and keys (Su et al. 2021, arXiv 2104.09864): no
    /// parameters, a few FLOPs per query and key element.
    Rotary,
}

impl Positions {
    pub fn label(self) -> &'static str {
        match self {
            Positions::Learned => "learned",
            Positions::Rotary => "rotary",
        }
    }
}

/// The shape of a feed-forward block (a dense layer's FFN or one expert).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    /// `gelu(x W_up) W_down`: two matrices (GPT-2, GPT-3; sparsewatt's default).
    #[default]
    Mlp,
    /// `(gelu(x W_gate) * (x W_up)) W_down`: three matrices (Shazeer 2020, "GLU Variants Improve
    /// Transformer", arXiv 2002.05202; GLaM's dense layers).
    Geglu,
    /// As `Geglu` with SiLU (Swish-1) in place of GELU (Shazeer 2020; LLaMA).
    Swiglu,
}

impl FfnKind {
    pub const ALL: [FfnKind; 3] = [FfnKind::Mlp, FfnKind::Geglu, FfnKind::Swiglu];

    /// The name a profile writes.
    pub fn label(self) -> &'static str {
        match self {
            FfnKind::Mlp => "mlp",
            FfnKind::Geglu => "geglu",
            FfnKind::Swiglu => "swiglu",
        }
    }

    /// Whether the block has a gate matrix beside the up projection.
    pub fn is_gated(self) -> bool {
        self != FfnKind::Mlp
    }

    /// Weight matrices of d_model x d_ff each: 2 for an MLP, 3 for a gated unit.
    pub fn matrices(self) -> usize {
        if self.is_gated() {
            3
        } else {
            2
        }
    }

    fn parse(s: &str) -> Option<FfnKind> {
        FfnKind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// A validated model profile with its derived sizes. Construct with [`RawModelProfile::resolve`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelProfile {
    pub name: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_head: usize,
    pub d_ff: usize,
    pub experts: usize,
    pub top_k: usize,
    pub moe_every: usize,
    pub seq_len: usize,
    pub aux_loss_weight: f64,
    pub capacity_factor: Option<f64>,
    pub tied_embeddings: bool,
    pub dense_baseline: Option<String>,
    pub source: Option<String>,
    /// Absent in run folders written before the key existed: plain MLP.
    #[serde(default)]
    pub ffn: FfnKind,
    #[serde(default)]
    pub expert_ffn: FfnKind,
    /// Key/value heads as written; `None` means `heads` ([`ModelProfile::kv_heads`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Positions::is_learned")]
    pub positions: Positions,
    /// Expert width as written; `None` means `d_ff` ([`ModelProfile::d_ff_expert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_ff_expert: Option<usize>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_experts: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_dense_layers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<Mla>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_params_active: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Positions {
    fn is_learned(&self) -> bool {
        *self == Positions::Learned
    }
}

impl RawModelProfile {
    /// Check the rules a profile must obey and compute derived sizes. `origin` names the file
    /// (or the embedded profile) in error messages.
    pub fn resolve(self, origin: &str) -> Result<ModelProfile, ProfileError> {
        let err = |key: &str, msg: String| ProfileError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message: msg,
        };
        self.check_sizes(origin)?;
        if self.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        if self.top_k > self.experts {
            return Err(err(
                "top_k",
                format!(
                    "is {} but there are only {} experts (top_k must be <= experts)",
                    self.top_k, self.experts
                ),
            ));
        }
        let d_head = match self.d_head {
            Some(0) => return Err(err("d_head", "must be at least 1, got 0".into())),
            Some(h) => h,
            None => {
                if !self.d_model.is_multiple_of(self.heads) {
                    return Err(err(
                        "heads",
                        format!(
                            "d_model {} is not divisible by heads {} (set d_head to choose the head width)",
                            self.d_model, self.heads
                        ),
                    ));
                }
                self.d_model / self.heads
            }
        };
        if !self.aux_loss_weight.is_finite() || self.aux_loss_weight < 0.0 {
            return Err(err(
                "aux_loss_weight",
                format!("must be a finite number >= 0, got {}", self.aux_loss_weight),
            ));
        }
        if let Some(c) = self.capacity_factor {
            if !c.is_finite() || c <= 0.0 {
                return Err(err("capacity_factor", format!("must be > 0, got {c}")));
            }
        }
        let kind = |key: &str, v: &Option<String>| match v.as_deref() {
            None => Ok(FfnKind::Mlp),
            Some(s) => FfnKind::parse(s).ok_or_else(|| {
                err(
                    key,
                    format!("unknown feed-forward kind `{s}` (expected mlp, geglu or swiglu)"),
                )
            }),
        };
        let ffn = kind("ffn", &self.ffn)?;
        let expert_ffn = kind("expert_ffn", &self.expert_ffn)?;
        self.check_architecture(origin)?;
        let positions = match self.positions.as_deref() {
            None | Some("learned") => Positions::Learned,
            Some("rotary") => Positions::Rotary,
            Some(s) => {
                return Err(err(
                    "positions",
                    format!("unknown position encoding `{s}` (expected learned or rotary)"),
                ))
            }
        };
        Ok(ModelProfile {
            ffn,
            expert_ffn,
            positions,
            kv_heads: self.kv_heads,
            d_ff_expert: self.d_ff_expert,
            shared_experts: self.shared_experts.unwrap_or(0),
            first_dense_layers: self.first_dense_layers.unwrap_or(0),
            mla: self.mla,
            published_params_total: self.published_params_total,
            published_params_active: self.published_params_active,
            name: self.name,
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            layers: self.layers,
            heads: self.heads,
            d_head,
            d_ff: self.d_ff,
            experts: self.experts,
            top_k: self.top_k,
            moe_every: self.moe_every,
            seq_len: self.seq_len,
            aux_loss_weight: self.aux_loss_weight,
            capacity_factor: self.capacity_factor,
            tied_embeddings: self.tied_embeddings.unwrap_or(true),
            dense_baseline: self.dense_baseline,
            source: self.source,
        })
    }
}

impl RawModelProfile {
    /// Every size at least 1 and at most [`MAX_SIZE`].
    fn check_sizes(&self, origin: &str) -> Result<(), ProfileError> {
        let err = |key: &str, msg: String| ProfileError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message: msg,
        };
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("layers", self.layers),
            ("heads", self.heads),
            ("d_ff", self.d_ff),
            ("experts", self.experts),
            ("top_k", self.top_k),
            ("moe_every", self.moe_every),
            ("seq_len", self.seq_len),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1, got 0".into()));
            }
        }
        let sizes = [
            ("vocab_size", Some(self.vocab_size)),
            ("d_model", Some(self.d_model)),
            ("layers", Some(self.layers)),
            ("heads", Some(self.heads)),
            ("d_ff", Some(self.d_ff)),
            ("experts", Some(self.experts)),
            ("moe_every", Some(self.moe_every)),
            ("seq_len", Some(self.seq_len)),
            ("d_head", self.d_head),
            ("kv_heads", self.kv_heads),
            ("d_ff_expert", self.d_ff_expert),
            ("shared_experts", self.shared_experts),
        ];
        for (key, v) in sizes {
            if let Some(v) = v.filter(|&v| v > MAX_SIZE) {
                return Err(err(
                    key,
                    format!("is {v}, above the largest size taken ({MAX_SIZE})"),
                ));
            }
        }
        Ok(())
    }

    /// The rules of the keys beyond the original architecture: GQA, fine-grained and shared
    /// experts, dense first layers, MLA and the published counts.
    fn check_architecture(&self, origin: &str) -> Result<(), ProfileError> {
        let err = |key: &str, msg: String| ProfileError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message: msg,
        };
        if let Some(kv) = self.kv_heads {
            if kv == 0 || kv > self.heads || !self.heads.is_multiple_of(kv) {
                return Err(err(
                    "kv_heads",
                    format!(
                        "is {kv}; it must be at least 1 and divide heads ({})",
                        self.heads
                    ),
                ));
            }
            if self.mla.is_some() {
                return Err(err(
                    "kv_heads",
                    "does not apply with [mla] (its cache is the latent, not per-head keys)".into(),
                ));
            }
        }
        if self.d_ff_expert == Some(0) {
            return Err(err("d_ff_expert", "must be at least 1, got 0".into()));
        }
        if let Some(n) = self.first_dense_layers {
            if n > self.layers {
                return Err(err(
                    "first_dense_layers",
                    format!("is {n} but the model has {} layers", self.layers),
                ));
            }
        }
        if let Some(m) = &self.mla {
            for (key, v) in [
                ("mla.kv_lora_rank", m.kv_lora_rank),
                ("mla.qk_nope_head_dim", m.qk_nope_head_dim),
                ("mla.qk_rope_head_dim", m.qk_rope_head_dim),
                ("mla.v_head_dim", m.v_head_dim),
                ("mla.q_lora_rank", m.q_lora_rank.unwrap_or(1)),
            ] {
                if v == 0 {
                    return Err(err(key, "must be at least 1, got 0".into()));
                }
                if v > MAX_SIZE {
                    return Err(err(
                        key,
                        format!("is {v}, above the largest size taken ({MAX_SIZE})"),
                    ));
                }
            }
        }
        for (key, v) in [
            ("published_params_total", self.published_params_total),
            ("published_params_active", self.published_params_active),
        ] {
            if let Some(x) = v {
                if !(x.is_finite() && x > 0.0) {
                    return Err(err(key, format!("must be a number > 0, got {x}")));
                }
            }
        }
        if let (Some(t), Some(a)) = (self.published_params_total, self.published_params_active) {
            if a > t {
                return Err(err(
                    "published_params_active",
                    format!("{a} is more than published_params_total {t}"),
                ));
            }
        }
        Ok(())
    }
}

impl ModelProfile {
    /// Key/value heads: `kv_heads`, or `heads` (multi-head attention) when the profile sets none.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }

    /// Hidden width of one expert (routed or shared): `d_ff_expert`, or `d_ff`.
    pub fn d_ff_expert(&self) -> usize {
        self.d_ff_expert.unwrap_or(self.d_ff)
    }

    /// Elements one position stores in one layer's KV cache: keys and values of every key/value
    /// head, or with MLA the latent and the shared rope key (DeepSeek-V2, section 2.1).
    pub fn kv_cache_elems_per_layer(&self) -> usize {
        match &self.mla {
            Some(m) => m.kv_lora_rank + m.qk_rope_head_dim,
            None => 2 * self.kv_heads() * self.d_head,
        }
    }

    /// The architecture features of this profile that sparsewatt's candle model does not build
    /// (it accounts and projects them, but cannot train or run them). Empty when it can.
    pub fn features_the_model_lacks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.kv_heads() != self.heads {
            out.push("grouped-query attention (kv_heads)");
        }
        if self.positions == Positions::Rotary {
            out.push("rotary positions (positions = \"rotary\")");
        }
        if self.mla.is_some() {
            out.push("multi-head latent attention ([mla])");
        }
        if self.is_sparse() && self.d_ff_expert() != self.d_ff {
            out.push("fine-grained experts (d_ff_expert != d_ff)");
        }
        if self.is_sparse() && self.shared_experts > 0 {
            out.push("shared experts (shared_experts)");
        }
        if self.is_sparse() && self.first_dense_layers > 0 {
            out.push("dense first layers (first_dense_layers)");
        }
        out
    }

    /// True when this profile has more than one expert per MoE layer.
    pub fn is_sparse(&self) -> bool {
        self.experts > 1
    }

    /// Whether layer `i` (0-based) has a mixture-of-experts FFN.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.is_sparse() && i >= self.first_dense_layers && (i + 1).is_multiple_of(self.moe_every)
    }

    /// Number of MoE layers (0 for a dense model).
    pub fn moe_layers(&self) -> usize {
        (0..self.layers).filter(|&i| self.is_moe_layer(i)).count()
    }

    /// The feed-forward kind of layer `i`: `expert_ffn` in MoE layers, `ffn` elsewhere.
    pub fn ffn_of_layer(&self, i: usize) -> FfnKind {
        if self.is_moe_layer(i) {
            self.expert_ffn
        } else {
            self.ffn
        }
    }

    /// Width of the attention projections' output, heads x d_head.
    pub fn attn_dim(&self) -> usize {
        self.heads * self.d_head
    }

    /// Back to the raw form, for writing a profile beside a checkpoint or into a run folder.
    pub fn to_raw(&self) -> RawModelProfile {
        RawModelProfile {
            name: self.name.clone(),
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            layers: self.layers,
            heads: self.heads,
            d_ff: self.d_ff,
            experts: self.experts,
            top_k: self.top_k,
            moe_every: self.moe_every,
            seq_len: self.seq_len,
            aux_loss_weight: self.aux_loss_weight,
            d_head: Some(self.d_head),
            capacity_factor: self.capacity_factor,
            tied_embeddings: Some(self.tied_embeddings),
            dense_baseline: self.dense_baseline.clone(),
            source: self.source.clone(),
            // Written only when not the default, so plain profiles read as before.
            ffn: self.ffn.is_gated().then(|| self.ffn.label().to_string()),
            expert_ffn: self
                .expert_ffn
                .is_gated()
                .then(|| self.expert_ffn.label().to_string()),
            kv_heads: self.kv_heads,
            positions: (!self.positions.is_learned()).then(|| self.positions.label().to_string()),
            d_ff_expert: self.d_ff_expert,
            shared_experts: (self.shared_experts > 0).then_some(self.shared_experts),
            first_dense_layers: (self.first_dense_layers > 0).then_some(self.first_dense_layers),
            published_params_total: self.published_params_total,
            published_params_active: self.published_params_active,
            mla: self.mla,
        }
    }

    /// The profile as TOML text that [`super::parse_model`] reads back to an equal profile.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_raw()).expect("a model profile always serialises to TOML")
    }

    /// Overrides from the command line (`--experts`, `--seq-len`), validated again as a whole.
    pub fn with_overrides(
        &self,
        experts: Option<usize>,
        seq_len: Option<usize>,
    ) -> Result<ModelProfile, ProfileError> {
        let mut raw = self.to_raw();
        if let Some(e) = experts {
            raw.experts = e;
            if e == 1 {
                raw.top_k = 1;
            }
            if e != self.experts {
                raw.name = format!("{}-e{}", self.name, e);
            }
        }
        if let Some(s) = seq_len {
            raw.seq_len = s;
        }
        raw.resolve("command-line override")
    }
}
