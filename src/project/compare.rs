//! Sparse against dense: the same workload (tokens trained, or batch and context served) on a MoE
//! profile and on its dense counterpart, on the same hardware with the same settings.

use serde::{Deserialize, Serialize};

use super::inference::{project_inference, InferenceProjection, InferenceSettings};
use super::training::{project_training_tokens, Settings, TrainingProjection};
use super::ProjectError;
use crate::profile::{load_model, HardwareProfile, ModelProfile, ProfileError};

/// Training the sparse and the dense model on the same tokens. Ratios are sparse / dense: below 1
/// means the sparse model is cheaper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingComparison {
    pub sparse: TrainingProjection,
    pub dense: TrainingProjection,
    pub flops_ratio: f64,
    pub hours_ratio: f64,
    pub energy_ratio: f64,
}

/// Serving the sparse and the dense model at the same batch and context. Ratios are sparse / dense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceComparison {
    pub sparse: InferenceProjection,
    pub dense: InferenceProjection,
    pub prefill_joules_per_token_ratio: f64,
    pub decode_joules_per_token_ratio: f64,
    pub decode_tokens_per_s_ratio: f64,
    pub decode_flops_per_token_ratio: f64,
}

/// The dense model a sparse profile names as its `dense_baseline`, loaded; `None` when it names none.
pub fn dense_counterpart(model: &ModelProfile) -> Result<Option<ModelProfile>, ProfileError> {
    model.dense_baseline.as_deref().map(load_model).transpose()
}

pub fn compare_training(
    sparse: &ModelProfile,
    dense: &ModelProfile,
    tokens: f64,
    hw: &HardwareProfile,
    s: &Settings,
) -> Result<TrainingComparison, ProjectError> {
    let sp = project_training_tokens(sparse, tokens, hw, s)?;
    let de = project_training_tokens(dense, tokens, hw, s)?;
    Ok(TrainingComparison {
        flops_ratio: sp.flops / de.flops,
        hours_ratio: sp.hours / de.hours,
        energy_ratio: sp.energy_j / de.energy_j,
        sparse: sp,
        dense: de,
    })
}

pub fn compare_inference(
    sparse: &ModelProfile,
    dense: &ModelProfile,
    hw: &HardwareProfile,
    s: &InferenceSettings,
) -> Result<InferenceComparison, ProjectError> {
    let sp = project_inference(sparse, hw, s)?;
    let de = project_inference(dense, hw, s)?;
    Ok(InferenceComparison {
        prefill_joules_per_token_ratio: sp.prefill.joules_per_token / de.prefill.joules_per_token,
        decode_joules_per_token_ratio: sp.decode.joules_per_token / de.decode.joules_per_token,
        decode_tokens_per_s_ratio: sp.decode.tokens_per_s / de.decode.tokens_per_s,
        decode_flops_per_token_ratio: sp.decode.flops_per_token / de.decode.flops_per_token,
        sparse: sp,
        dense: de,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_hardware;

    #[test]
    fn glam_64e_trains_with_about_the_flops_of_its_dense_base_plus_one_expert() {
        let sp = load_model("glam-64b-64e").unwrap();
        let de = dense_counterpart(&sp).unwrap().unwrap();
        let hw = load_hardware("tpu-v4").unwrap();
        let c = compare_training(&sp, &de, 1e9, &hw, &Settings::new(1024)).unwrap();
        // Top-2 in every other layer: each MoE layer costs two FFNs where the dense costs one, so
        // the sparse model costs more FLOPs per token than its dense base (GLaM 64B/64E: 96.6B
        // activated against 64B), while holding 64x the FFN weights of those layers.
        assert!(
            c.flops_ratio > 1.0 && c.flops_ratio < 2.0,
            "{}",
            c.flops_ratio
        );
        assert!((c.energy_ratio - c.flops_ratio).abs() < 1e-9);
    }
}
