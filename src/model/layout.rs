//! The model's parameters, written once: every name (which also seeds the parameter's initial
//! values, [`super::init`]), shape and initial fill. `init_vars` draws them from this layout and
//! `Model::from_vars_in` builds the layers from the same names.

use crate::profile::{FfnKind, ModelProfile};

/// Standard deviation of weights (GPT-2); residual output projections are scaled down by
/// 1/sqrt(2 x layers) so the residual stream's variance does not grow with depth.
pub(super) const INIT_STD: f64 = 0.02;

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    Normal(f64),
    Ones,
    Zeros,
}

/// One parameter: its name, shape and initial fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub fill: Fill,
}

/// A layer norm's gain and bias.
pub struct NormLayout {
    pub gain: Param,
    pub bias: Param,
}

/// A feed-forward unit: up (and gate, when gated) then down; no biases (GLaM, and the
/// accounting's structure).
pub struct MlpLayout {
    pub up: Param,
    pub gate: Option<Param>,
    pub down: Param,
    pub kind: FfnKind,
}

pub enum FfnLayout {
    Dense(MlpLayout),
    Moe {
        router: Param,
        experts: Vec<MlpLayout>,
    },
}

pub struct BlockLayout {
    pub norm1: NormLayout,
    pub qkv: Param,
    pub out: Param,
    pub norm2: NormLayout,
    pub ffn: FfnLayout,
}

pub struct Layout {
    pub tok_emb: Param,
    pub pos_emb: Param,
    pub blocks: Vec<BlockLayout>,
    pub final_norm: NormLayout,
    /// Absent with tied embeddings (the head is the token embedding's transpose).
    pub head: Option<Param>,
}

fn param(name: String, shape: Vec<usize>, fill: Fill) -> Param {
    Param { name, shape, fill }
}

fn norm(prefix: &str, d: usize) -> NormLayout {
    NormLayout {
        gain: param(format!("{prefix}.gain"), vec![d], Fill::Ones),
        bias: param(format!("{prefix}.bias"), vec![d], Fill::Zeros),
    }
}

/// The layout of `p`'s parameters.
pub fn layout(p: &ModelProfile) -> Layout {
    let d = p.d_model;
    let resid_std = INIT_STD / (2.0 * p.layers as f64).sqrt();
    // A gated unit's gate is drawn as its up projection is; the plain MLP has none, so its
    // parameters (and their values) are those of before gated units existed.
    let mlp = |name: &str, kind: FfnKind| MlpLayout {
        up: param(
            format!("{name}.up.w"),
            vec![d, p.d_ff],
            Fill::Normal(INIT_STD),
        ),
        gate: kind.is_gated().then(|| {
            param(
                format!("{name}.gate.w"),
                vec![d, p.d_ff],
                Fill::Normal(INIT_STD),
            )
        }),
        down: param(
            format!("{name}.down.w"),
            vec![p.d_ff, d],
            Fill::Normal(resid_std),
        ),
        kind,
    };
    let blocks = (0..p.layers)
        .map(|i| {
            let b = format!("blocks.{i}");
            let ffn = if p.is_moe_layer(i) {
                FfnLayout::Moe {
                    router: param(
                        format!("{b}.moe.router.w"),
                        vec![d, p.experts],
                        Fill::Normal(INIT_STD),
                    ),
                    experts: (0..p.experts)
                        .map(|e| mlp(&format!("{b}.moe.experts.{e}"), p.expert_ffn))
                        .collect(),
                }
            } else {
                FfnLayout::Dense(mlp(&format!("{b}.ffn"), p.ffn))
            };
            BlockLayout {
                norm1: norm(&format!("{b}.norm1"), d),
                qkv: param(
                    format!("{b}.attn.qkv.w"),
                    vec![d, 3 * p.attn_dim()],
                    Fill::Normal(INIT_STD),
                ),
                out: param(
                    format!("{b}.attn.out.w"),
                    vec![p.attn_dim(), d],
                    Fill::Normal(resid_std),
                ),
                norm2: norm(&format!("{b}.norm2"), d),
                ffn,
            }
        })
        .collect();
    Layout {
        tok_emb: param(
            "tok_emb".into(),
            vec![p.vocab_size, d],
            Fill::Normal(INIT_STD),
        ),
        pos_emb: param(
            "pos_emb".into(),
            vec![p.seq_len, d],
            Fill::Normal(INIT_STD / 2.0),
        ),
        blocks,
        final_norm: norm("final_norm", d),
        head: (!p.tied_embeddings)
            .then(|| param("head".into(), vec![d, p.vocab_size], Fill::Normal(INIT_STD))),
    }
}

impl MlpLayout {
    fn params(&self) -> impl Iterator<Item = &Param> {
        [Some(&self.up), self.gate.as_ref(), Some(&self.down)]
            .into_iter()
            .flatten()
    }
}

impl Layout {
    /// Every parameter, in the order they were always listed (the names, not the order, seed
    /// the values).
    pub fn params(&self) -> Vec<&Param> {
        let mut all = vec![
            &self.tok_emb,
            &self.pos_emb,
            &self.final_norm.gain,
            &self.final_norm.bias,
        ];
        all.extend(self.head.as_ref());
        for b in &self.blocks {
            all.extend([&b.norm1.gain, &b.norm1.bias, &b.norm2.gain, &b.norm2.bias]);
            all.extend([&b.qkv, &b.out]);
            match &b.ffn {
                FfnLayout::Dense(m) => all.extend(m.params()),
                FfnLayout::Moe { router, experts } => {
                    all.push(router);
                    for m in experts {
                        all.extend(m.params());
                    }
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_model;
    use std::collections::BTreeSet;

    #[test]
    fn every_name_is_unique_and_the_elements_are_the_accountings_parameters() {
        for name in ["glam-tiny", "dense-tiny", "dense-tiny-matched"] {
            let p = load_model(name).unwrap();
            let l = layout(&p);
            let params = l.params();
            let names: BTreeSet<&str> = params.iter().map(|x| x.name.as_str()).collect();
            assert_eq!(names.len(), params.len(), "{name}: a name twice");
            let elements: usize = params
                .iter()
                .map(|x| x.shape.iter().product::<usize>())
                .sum();
            assert_eq!(
                elements as f64,
                crate::accounting::params(&p).total,
                "{name}"
            );
        }
    }
}
