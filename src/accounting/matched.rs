//! The compute-matched dense baseline of a sparse profile: the dense model of the same depth,
//! width and attention whose training FLOPs per token equal the sparse model's, by a wider FFN.
//! GLaM (Du et al. 2022, arXiv 2112.06905, section 5) compares each MoE model with dense models
//! of similar FLOPs per token; the same-shape dense model (the profile's `dense_baseline`) computes
//! about half the MoE layers' feed-forward FLOPs of a top-2 model.

use super::analytic::train_flops_per_token;
use crate::profile::{load_model, ModelProfile, ProfileError};

/// The matched model's d_ff is a multiple of this (kernel-friendly shapes); the rounding moves
/// its FLOPs by under 1% for every shipped profile.
pub const MATCHED_D_FF_MULTIPLE: usize = 64;

/// The dense profile whose training FLOPs per token ([`train_flops_per_token`]) are nearest the
/// sparse profile `p`'s with a d_ff that is a multiple of [`MATCHED_D_FF_MULTIPLE`]: one expert,
/// every layer a dense FFN of `p`'s `ffn` kind, everything else as `p`. Named after `p`'s dense
/// baseline with `-matched` (`dense-tiny-matched` for glam-tiny), or `<name>-dense-matched`. A
/// dense `p` comes back as it is.
pub fn matched_dense(p: &ModelProfile) -> ModelProfile {
    if !p.is_sparse() {
        return p.clone();
    }
    let base = p
        .dense_baseline
        .clone()
        .unwrap_or_else(|| format!("{}-dense", p.name));
    let with_d_ff = |d_ff: usize| ModelProfile {
        name: format!("{base}-matched"),
        experts: 1,
        top_k: 1,
        d_ff,
        capacity_factor: None,
        dense_baseline: None,
        source: Some(format!(
            "sparsewatt's compute-matched dense baseline of {}: training FLOPs per token within \
             3% by a wider d_ff (accounting::matched_dense)",
            p.name
        )),
        ..p.clone()
    };
    // Training FLOPs are linear in d_ff: a + b d_ff.
    let a = train_flops_per_token(&with_d_ff(0)).total();
    let b = train_flops_per_token(&with_d_ff(1)).total() - a;
    let want = train_flops_per_token(p).total();
    let m = MATCHED_D_FF_MULTIPLE as f64;
    let d_ff = (((want - a) / b / m).round() * m).max(m) as usize;
    with_d_ff(d_ff)
}

/// The dense model a run compares a sparse model with (`run --baseline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Baseline {
    /// [`matched_dense`]: equal training FLOPs per token, GLaM's comparison. The default.
    Matched,
    /// The profile's `dense_baseline`: the same blocks with one FFN of an expert's width, which
    /// computes less per token than a top-2 model; without one, the sparse profile with one expert.
    SameShape,
    /// A profile by name or path.
    Named(String),
}

impl Baseline {
    /// `matched`, `same-shape`, or anything else as a profile name or path.
    pub fn parse(s: &str) -> Baseline {
        match s {
            "matched" => Baseline::Matched,
            "same-shape" => Baseline::SameShape,
            other => Baseline::Named(other.to_string()),
        }
    }

    /// The dense profile this choice gives for `sparse`.
    pub fn profile(&self, sparse: &ModelProfile) -> Result<ModelProfile, ProfileError> {
        match self {
            Baseline::Matched => Ok(matched_dense(sparse)),
            Baseline::SameShape => match &sparse.dense_baseline {
                Some(name) => load_model(name),
                None => sparse.with_overrides(Some(1), None),
            },
            Baseline::Named(name) => load_model(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load_model, names, Kind};

    fn relative_gap(a: &ModelProfile, b: &ModelProfile) -> f64 {
        let (x, y) = (
            train_flops_per_token(a).total(),
            train_flops_per_token(b).total(),
        );
        (x - y).abs() / y
    }

    #[test]
    fn every_shipped_sparse_profile_has_a_dense_match_within_three_percent() {
        let mut sparse = 0;
        for n in names(Kind::Model) {
            let p = load_model(&n).unwrap();
            if !p.is_sparse() {
                continue;
            }
            sparse += 1;
            let d = matched_dense(&p);
            assert!(!d.is_sparse() && d.moe_layers() == 0, "{n}");
            assert_eq!(
                (d.d_model, d.layers, d.heads, d.seq_len, d.vocab_size, d.ffn),
                (p.d_model, p.layers, p.heads, p.seq_len, p.vocab_size, p.ffn),
                "{n}"
            );
            assert!(
                d.d_ff > p.d_ff,
                "{n}: a top-{} model needs a wider FFN",
                p.top_k
            );
            let gap = relative_gap(&d, &p);
            assert!(gap < 0.03, "{n}: {} is {gap} off", d.name);
            // The round trip through TOML gives a valid profile.
            crate::profile::parse_model(&d.to_toml(), "derived").unwrap();
        }
        assert!(sparse >= 4, "only {sparse} sparse profiles");
    }

    /// glam-tiny: 2 dense layers of d_ff 1024 and 2 MoE layers of top-2 x 1024, 1536 a layer on
    /// average; the router and the wider FFN's activations move it to the nearest 64.
    #[test]
    fn the_shipped_matched_profiles_are_the_derived_ones() {
        for (sparse, shipped) in [
            ("glam-tiny", "dense-tiny-matched"),
            ("glam-small", "dense-small-matched"),
        ] {
            let d = matched_dense(&load_model(sparse).unwrap());
            let s = load_model(shipped).unwrap();
            assert_eq!(d.name, s.name);
            assert_eq!(d.d_ff, s.d_ff, "{shipped}");
            let same = ModelProfile {
                source: s.source.clone(),
                aux_loss_weight: s.aux_loss_weight,
                ..d
            };
            assert_eq!(same, s, "{shipped}");
        }
        assert_eq!(load_model("dense-tiny-matched").unwrap().d_ff, 1536);
    }

    #[test]
    fn the_baseline_choices_give_the_matched_the_same_shape_or_the_named_model() {
        let tiny = load_model("glam-tiny").unwrap();
        let pick = |s: &str| Baseline::parse(s).profile(&tiny).unwrap().name;
        assert_eq!(pick("matched"), "dense-tiny-matched");
        assert_eq!(pick("same-shape"), "dense-tiny");
        assert_eq!(pick("dense-small"), "dense-small");
        let unnamed = ModelProfile {
            dense_baseline: None,
            ..tiny
        };
        let same = Baseline::SameShape.profile(&unnamed).unwrap();
        assert_eq!((same.name.as_str(), same.experts), ("glam-tiny-e1", 1));
        assert!(Baseline::parse("no-such-profile")
            .profile(&unnamed)
            .is_err());
    }

    #[test]
    fn a_dense_profile_is_its_own_match() {
        let p = load_model("dense-tiny").unwrap();
        assert_eq!(matched_dense(&p), p);
    }
}
