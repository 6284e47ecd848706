//! Checkpoints: a folder with the weights (`model.safetensors`), the profile they belong to
//! (`profile.toml`, so a checkpoint is self-describing) and, for resuming training, the
//! optimiser's moments (`optimizer.safetensors`) and the trainer's position (`trainer.json`).

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::optim::LrSchedule;
use super::Model;
use crate::profile::{parse_model, ModelProfile, ProfileError};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const PROFILE_FILE: &str = "profile.toml";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
}

pub(super) fn file_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// AdamW's first and second moments by parameter name.
pub(super) type Moments = BTreeMap<String, (Vec<f32>, Vec<f32>)>;

/// Where training stands, for resuming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub tokens: u64,
    pub flops: f64,
    pub schedule: LrSchedule,
    pub seed: u64,
    pub adam_t: u64,
    /// The last validation loss, if one was measured.
    pub val_loss: Option<f64>,
}

pub(super) fn save_model(model: &Model, dir: &Path) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let tensors: HashMap<String, Tensor> = model
        .vars()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let wp = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &wp).map_err(|e| file_err(&wp, e))?;
    let pp = dir.join(PROFILE_FILE);
    std::fs::write(&pp, model.profile().to_toml()).map_err(|e| file_err(&pp, e))
}

pub(super) fn save_trainer(
    dir: &Path,
    state: &TrainerState,
    moments: &Moments,
) -> Result<(), CheckpointError> {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (k, (m, v)) in moments {
        let vec = |x: &Vec<f32>| Tensor::from_slice(x, x.len(), &Device::Cpu);
        t.insert(format!("m.{k}"), vec(m).map_err(|e| file_err(dir, e))?);
        t.insert(format!("v.{k}"), vec(v).map_err(|e| file_err(dir, e))?);
    }
    let op = dir.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&t, &op).map_err(|e| file_err(&op, e))?;
    let sp = dir.join(TRAINER_FILE);
    let text = serde_json::to_string_pretty(state).expect("trainer state serialises");
    std::fs::write(&sp, text).map_err(|e| file_err(&sp, e))
}

/// The trainer state and optimiser moments of a checkpoint, if it has them (the moments live on
/// the host, where the optimiser updates them).
pub(super) fn load_trainer(dir: &Path) -> Result<Option<(TrainerState, Moments)>, CheckpointError> {
    let sp = dir.join(TRAINER_FILE);
    if !sp.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&sp).map_err(|e| file_err(&sp, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| file_err(&sp, e))?;
    let op = dir.join(OPTIMIZER_FILE);
    let t = candle_core::safetensors::load(&op, &Device::Cpu).map_err(|e| file_err(&op, e))?;
    let host = |x: &Tensor| x.to_vec1::<f32>().map_err(|e| file_err(&op, e));
    let mut moments = BTreeMap::new();
    for (k, m) in &t {
        if let Some(name) = k.strip_prefix("m.") {
            let v = t.get(&format!("v.{name}")).ok_or_else(|| {
                file_err(&op, format!("moment m.{name} has no matching v.{name}"))
            })?;
            moments.insert(name.to_string(), (host(m)?, host(v)?));
        }
    }
    Ok(Some((state, moments)))
}

/// Load a checkpoint folder: the profile beside the weights, then the weights, checked against
/// the profile (every parameter present, with its shape).
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Model, CheckpointError> {
    let pp = dir.join(PROFILE_FILE);
    let text = std::fs::read_to_string(&pp).map_err(|e| file_err(&pp, e))?;
    let profile: ModelProfile = parse_model(&text, &pp.display().to_string())?;
    let wp = dir.join(WEIGHTS_FILE);
    let loaded = candle_core::safetensors::load(&wp, device).map_err(|e| file_err(&wp, e))?;
    let fresh = super::init::init_vars(&profile, device, super::MASTER_DTYPE, 0)
        .map_err(|e| file_err(&wp, e))?;
    let mut vars = BTreeMap::new();
    for (name, var) in fresh {
        let t = loaded.get(&name).ok_or_else(|| CheckpointError::Mismatch {
            path: wp.clone(),
            message: format!("parameter {name} of profile {} is missing", profile.name),
        })?;
        if t.dims() != var.dims() {
            return Err(CheckpointError::Mismatch {
                path: wp.clone(),
                message: format!(
                    "parameter {name} has shape {:?}, profile {} needs {:?}",
                    t.dims(),
                    profile.name,
                    var.dims()
                ),
            });
        }
        let t = t.to_dtype(var.dtype()).map_err(|e| file_err(&wp, e))?;
        vars.insert(name, Var::from_tensor(&t).map_err(|e| file_err(&wp, e))?);
    }
    Model::from_vars(&profile, device, vars).map_err(|e| file_err(&wp, e))
}
