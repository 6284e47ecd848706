//! Model profiles: the raw TOML as written, and the resolved, validated form everything else takes.

use serde::{Deserialize, Serialize};

use super::ProfileError;

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
        Ok(ModelProfile {
            ffn,
            expert_ffn,
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

impl ModelProfile {
    /// True when this profile has more than one expert per MoE layer.
    pub fn is_sparse(&self) -> bool {
        self.experts > 1
    }

    /// Whether layer `i` (0-based) has a mixture-of-experts FFN.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.is_sparse() && (i + 1).is_multiple_of(self.moe_every)
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
