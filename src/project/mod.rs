//! Projections onto hardware: cluster training time, energy and carbon (`training`), the per-token
//! roofline of inference (`inference`), sparse against dense (`compare`) and calibration from a
//! measured run (`calibrate`), and another model's training on the run's own machine from a roofline
//! fitted to the run (`local`). Formulas, scopes and the validation table: docs/projection.md.

pub mod calibrate;
pub mod compare;
pub mod inference;
pub mod local;
pub mod probe;
pub mod seed;
pub mod table;
pub mod training;

pub use calibrate::{
    calibrate, calibrate_run, gpu_profile_for, machine_hardware, peak_of_run, summarize_run,
    Calibration, PhaseCalibration,
};
pub use compare::{
    compare_inference, compare_training, dense_counterpart, InferenceComparison, TrainingComparison,
};
pub use inference::{
    project_inference, Bound, InferenceProjection, InferenceSettings, PhaseRoofline,
};
pub use local::{
    fit_run, prefill_traffic, train_traffic, FitPoint, LocalFit, LocalPrediction, StepTraffic,
};
pub use seed::{seed_comparison, SeedComparison, SeedRow};
pub use training::{
    implied_utilization, project_training, project_training_tokens, training_flops, Settings,
    TrainingProjection, Utilization,
};

use crate::profile::{HardwareProfile, PowerFigure, PowerScope, Precision, ProfileError};

/// Grid carbon intensity used when none is given: 0.429 kgCO2e/kWh, the net figure Patterson et
/// al. 2021 (arXiv 2104.10350, Table 4) use for GPT-3's US data centre. Override per region.
pub const DEFAULT_GRID_KG_PER_KWH: f64 = 0.429;

/// Joules in a megawatt-hour.
pub const J_PER_MWH: f64 = 3.6e9;

/// Errors of a projection: a setting out of range, a profile, or a run folder.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// A setting (from the command line or a caller) that cannot be used.
    #[error("{setting}: {message}")]
    Setting {
        setting: &'static str,
        message: String,
    },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Run(#[from] crate::runlog::RunFolderError),
}

pub(crate) fn bad(setting: &'static str, message: impl Into<String>) -> ProjectError {
    ProjectError::Setting {
        setting,
        message: message.into(),
    }
}

/// The precision asked for, or the profile's default; an error when the profile has no peak for it.
pub(crate) fn pick_precision(
    hw: &HardwareProfile,
    asked: Option<Precision>,
) -> Result<(Precision, f64), ProjectError> {
    let p = asked.unwrap_or(hw.default_precision);
    match hw.peak_at(p) {
        Some(peak) => Ok((p, peak)),
        None => Err(bad(
            "precision",
            format!(
                "{} publishes no {p} peak (it has: {})",
                hw.name,
                hw.peak_flops
                    .keys()
                    .map(|k| k.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The power per chip given, or the profile's default with its scope.
pub(crate) fn pick_power(
    hw: &HardwareProfile,
    given_w: Option<f64>,
    given_scope: Option<PowerScope>,
) -> Result<PowerFigure, ProjectError> {
    match given_w {
        Some(w) if !(w.is_finite() && w > 0.0) => {
            Err(bad("power_w_per_chip", format!("must be > 0 W, got {w}")))
        }
        Some(w) => Ok(PowerFigure {
            watts: w,
            scope: given_scope.unwrap_or(PowerScope::UserGiven),
        }),
        None => Ok(hw.default_power()),
    }
}

pub(crate) fn pick_pue(hw: &HardwareProfile, given: Option<f64>) -> Result<f64, ProjectError> {
    match given {
        Some(p) if !(p.is_finite() && p >= 1.0) => {
            Err(bad("pue", format!("must be a number >= 1, got {p}")))
        }
        Some(p) => Ok(p),
        None => Ok(hw.default_pue),
    }
}
