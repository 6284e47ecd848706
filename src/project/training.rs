//! Training on a cluster: time, energy and carbon from the training FLOPs.
//!
//! time = FLOPs / (chips x achieved FLOP/s per chip), achieved = peak x utilisation (or given);
//! energy = chips x time x power per chip x PUE; carbon = energy x grid intensity.
//! This is the method of Patterson et al. 2021 (arXiv 2104.10350, section 2.5), where the power is
//! the measured average system power per chip.

use serde::{Deserialize, Serialize};

use super::{bad, pick_power, pick_precision, pick_pue, ProjectError, J_PER_MWH};
use crate::accounting::train_flops_per_token;
use crate::profile::{HardwareProfile, ModelProfile, PowerScope, Precision};

/// How busy the chips are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utilization {
    /// Model FLOPs utilisation: achieved / peak, in (0, 1].
    Mfu(f64),
    /// Achieved FLOP/s per chip (not TFLOP/s).
    AchievedFlops(f64),
}

/// What a training projection is asked for. `None` fields take the hardware profile's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub chips: usize,
    pub utilization: Option<Utilization>,
    /// W per chip; its scope is `power_scope` (default: given by the user).
    pub power_w_per_chip: Option<f64>,
    pub power_scope: Option<PowerScope>,
    pub pue: Option<f64>,
    /// kgCO2e per kWh drawn by the data centre.
    pub grid_kg_per_kwh: f64,
    pub precision: Option<Precision>,
}

impl Settings {
    /// `chips` chips with every other figure from the profile and the default grid intensity.
    pub fn new(chips: usize) -> Settings {
        Settings {
            chips,
            utilization: None,
            power_w_per_chip: None,
            power_scope: None,
            pue: None,
            grid_kg_per_kwh: super::DEFAULT_GRID_KG_PER_KWH,
            precision: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(1)
    }
}

/// A training run projected onto one hardware profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingProjection {
    pub hardware: String,
    pub chips: usize,
    pub precision: Precision,
    /// Training FLOPs of the whole run.
    pub flops: f64,
    /// Tokens trained, when the FLOPs came from a model and a token count.
    pub tokens: Option<f64>,
    pub peak_flops_per_chip: f64,
    pub achieved_flops_per_chip: f64,
    /// achieved / peak.
    pub mfu: f64,
    /// Where the utilisation came from ("--mfu", "--achieved-tflops", the profile's source).
    pub utilization_source: String,
    pub seconds: f64,
    pub hours: f64,
    pub days: f64,
    pub power_w_per_chip: f64,
    pub power_scope: PowerScope,
    pub pue: f64,
    /// Facility energy: chips x time x power x PUE, J.
    pub energy_j: f64,
    pub energy_mwh: f64,
    pub grid_kg_per_kwh: f64,
    pub co2e_tonnes: f64,
    /// Facility energy per training FLOP.
    pub joules_per_flop: f64,
    /// Facility energy per token trained (denominator: tokens trained), when tokens are known.
    pub joules_per_token: Option<f64>,
}

/// Training FLOPs of `tokens` tokens of `model` (analytic count, docs/accounting.md: 3 x forward
/// at the profile's sequence length, attention counted in full).
pub fn training_flops(model: &ModelProfile, tokens: f64) -> f64 {
    train_flops_per_token(model).total() * tokens
}

/// Project a training run of `flops` FLOPs onto `hw`.
pub fn project_training(
    flops: f64,
    hw: &HardwareProfile,
    s: &Settings,
) -> Result<TrainingProjection, ProjectError> {
    if !(flops.is_finite() && flops > 0.0) {
        return Err(bad("flops", format!("must be > 0, got {flops}")));
    }
    if s.chips == 0 {
        return Err(bad("chips", "must be at least 1, got 0"));
    }
    if !(s.grid_kg_per_kwh.is_finite() && s.grid_kg_per_kwh >= 0.0) {
        return Err(bad(
            "grid_kg_per_kwh",
            format!("must be a number >= 0, got {}", s.grid_kg_per_kwh),
        ));
    }
    let (precision, peak) = pick_precision(hw, s.precision)?;
    let (achieved, utilization_source) = match s.utilization {
        None => (
            peak * hw.default_utilization,
            format!("profile default: {}", hw.utilization_source),
        ),
        Some(Utilization::Mfu(u)) => {
            if !(u.is_finite() && u > 0.0 && u <= 1.0) {
                return Err(bad("mfu", format!("must be in (0, 1], got {u}")));
            }
            (peak * u, "given as MFU".to_string())
        }
        Some(Utilization::AchievedFlops(f)) => {
            if !(f.is_finite() && f > 0.0) {
                return Err(bad("achieved_flops", format!("must be > 0, got {f}")));
            }
            if f > peak {
                return Err(bad(
                    "achieved_flops",
                    format!(
                        "{:.1} TFLOP/s is above {}'s {precision} peak of {:.1} TFLOP/s",
                        f / 1e12,
                        hw.name,
                        peak / 1e12
                    ),
                ));
            }
            (f, "given as achieved FLOP/s".to_string())
        }
    };
    let power = pick_power(hw, s.power_w_per_chip, s.power_scope)?;
    let pue = pick_pue(hw, s.pue)?;
    let chips = s.chips as f64;
    let seconds = flops / (chips * achieved);
    let energy_j = chips * seconds * power.watts * pue;
    let energy_mwh = energy_j / J_PER_MWH;
    // MWh x kg/kWh = 1000 kg = tonnes.
    let co2e_tonnes = energy_mwh * s.grid_kg_per_kwh;
    Ok(TrainingProjection {
        hardware: hw.name.clone(),
        chips: s.chips,
        precision,
        flops,
        tokens: None,
        peak_flops_per_chip: peak,
        achieved_flops_per_chip: achieved,
        mfu: achieved / peak,
        utilization_source,
        seconds,
        hours: seconds / 3600.0,
        days: seconds / 86400.0,
        power_w_per_chip: power.watts,
        power_scope: power.scope,
        pue,
        energy_j,
        energy_mwh,
        grid_kg_per_kwh: s.grid_kg_per_kwh,
        co2e_tonnes,
        joules_per_flop: energy_j / flops,
        joules_per_token: None,
    })
}

/// Project training `model` on `tokens` tokens, with the FLOPs from the accounting.
pub fn project_training_tokens(
    model: &ModelProfile,
    tokens: f64,
    hw: &HardwareProfile,
    s: &Settings,
) -> Result<TrainingProjection, ProjectError> {
    if !(tokens.is_finite() && tokens > 0.0) {
        return Err(bad("tokens", format!("must be > 0, got {tokens}")));
    }
    let mut p = project_training(training_flops(model, tokens), hw, s)?;
    p.tokens = Some(tokens);
    p.joules_per_token = Some(p.energy_j / tokens);
    Ok(p)
}

/// The MFU that `flops` on `chips` chips in `hours` hours implies at `precision`'s peak (the
/// profile's default when `None`). Used to read a published run backwards (GLaM's 574 hours).
pub fn implied_utilization(
    flops: f64,
    hw: &HardwareProfile,
    chips: usize,
    hours: f64,
    precision: Option<Precision>,
) -> Result<f64, ProjectError> {
    let (_, peak) = pick_precision(hw, precision)?;
    if chips == 0 || !(hours.is_finite() && hours > 0.0) {
        return Err(bad("hours", "chips and hours must be > 0"));
    }
    Ok(flops / (chips as f64 * hours * 3600.0 * peak))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_hardware;

    #[test]
    fn doubling_chips_halves_time_and_keeps_energy() {
        let hw = load_hardware("h100-sxm").unwrap();
        let a = project_training(1e23, &hw, &Settings::new(100)).unwrap();
        let b = project_training(1e23, &hw, &Settings::new(200)).unwrap();
        assert!((a.hours / b.hours - 2.0).abs() < 1e-12);
        assert!((a.energy_mwh - b.energy_mwh).abs() < 1e-9 * a.energy_mwh);
    }

    #[test]
    fn energy_is_chips_time_power_pue() {
        let hw = load_hardware("tpu-v4").unwrap();
        let mut s = Settings::new(8);
        s.utilization = Some(Utilization::Mfu(0.5));
        let p = project_training(1e21, &hw, &s).unwrap();
        let secs = 1e21 / (8.0 * 275e12 * 0.5);
        let want_j = 8.0 * secs * 326.0 * 1.11;
        assert!((p.seconds - secs).abs() < 1e-9 * secs);
        assert!((p.energy_j - want_j).abs() < 1e-9 * want_j);
        assert!((p.co2e_tonnes - want_j / 3.6e9 * 0.429).abs() < 1e-9);
        assert_eq!(p.power_scope, PowerScope::SystemPerChip);
    }

    #[test]
    fn achieved_above_peak_is_refused() {
        let hw = load_hardware("v100").unwrap();
        let mut s = Settings::new(1);
        s.utilization = Some(Utilization::AchievedFlops(200e12));
        let e = project_training(1e20, &hw, &s).unwrap_err().to_string();
        assert!(e.contains("achieved_flops") && e.contains("peak"), "{e}");
    }

    #[test]
    fn missing_precision_is_named() {
        let hw = load_hardware("v100").unwrap();
        let mut s = Settings::new(1);
        s.precision = Some(Precision::Bf16);
        let e = project_training(1e20, &hw, &s).unwrap_err().to_string();
        assert!(e.contains("bf16") && e.contains("v100"), "{e}");
    }

    #[test]
    fn implied_utilization_round_trips() {
        let hw = load_hardware("tpu-v4").unwrap();
        let mut s = Settings::new(1024);
        s.utilization = Some(Utilization::Mfu(0.3));
        let p = project_training(1e23, &hw, &s).unwrap();
        let u = implied_utilization(1e23, &hw, 1024, p.hours, None).unwrap();
        assert!((u - 0.3).abs() < 1e-12);
    }
}
