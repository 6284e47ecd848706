//! Calibration: what this machine achieved in a measured run against what its hardware profile
//! projects, and the ratios that can be carried onto other profiles when the user asks.
//!
//! For each model and phase of the run's summary:
//! - measured: achieved FLOP/s (executed FLOPs / seconds) and joules per executed FLOP, hence the
//!   mean power drawn (J/FLOP x FLOP/s), with the run's energy source and scope;
//! - projected for this machine's profile: peak x default utilisation, and its default power per
//!   chip. PUE is left out on both sides: a local measurement has no data-centre overhead.
//! - ratios measured / projected: utilisation (FLOP/s), power, and J/FLOP (= power / utilisation).
//!
//! Carrying the ratios onto another chip assumes the workload would lose (or gain) the same share of
//! peak there and draw the same share of its profile's power. That holds for neither a different
//! kind of chip nor a model a thousand times the size; it is offered on request, never by default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::training::{Settings, Utilization};
use super::ProjectError;
use crate::meter::EnergySource;
use crate::profile::{load_hardware, HardwareProfile, PowerScope};
use crate::runlog::{read_run, summarize, Phase, Role, RunSummary};

/// Profile used for a run that names none: the generic CPU, as the local estimate does.
pub const DEFAULT_LOCAL_HARDWARE: &str = "cpu-generic";

/// One model in one phase of a run, measured against the projection for this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseCalibration {
    pub model: String,
    pub role: Role,
    pub phase: Phase,
    pub measured_flops_per_s: f64,
    /// Absent when no step carried energy.
    pub measured_joules_per_flop: Option<f64>,
    pub measured_power_w: Option<f64>,
    pub source: Option<EnergySource>,
    pub scope: Option<String>,
    /// Peak x the profile's default utilisation (one chip).
    pub projected_flops_per_s: f64,
    /// The profile's default power per chip, and its scope.
    pub projected_power_w: f64,
    pub projected_power_scope: PowerScope,
    /// projected power / projected FLOP/s, no PUE.
    pub projected_joules_per_flop: f64,
    /// measured / projected FLOP/s.
    pub utilization_ratio: f64,
    /// measured / projected power.
    pub power_ratio: Option<f64>,
    /// measured / projected J/FLOP.
    pub joules_per_flop_ratio: Option<f64>,
    /// The MFU this run reached against the profile's peak.
    pub achieved_mfu: f64,
}

/// A run against its machine's hardware profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub hardware: String,
    pub phases: Vec<PhaseCalibration>,
}

/// Compare a run's summary with the projection for `hw` (the machine the run ran on).
pub fn calibrate(summary: &RunSummary, hw: &HardwareProfile) -> Calibration {
    let peak = hw.peak();
    let projected_flops_per_s = peak * hw.default_utilization;
    let power = hw.default_power();
    let projected_joules_per_flop = power.watts / projected_flops_per_s;
    let mut phases = Vec::new();
    for m in &summary.models {
        for p in &m.phases {
            if p.flops_per_s <= 0.0 {
                continue;
            }
            let measured_power_w = p.joules_per_flop.map(|j| j * p.flops_per_s);
            phases.push(PhaseCalibration {
                model: m.model.clone(),
                role: m.role,
                phase: p.phase,
                measured_flops_per_s: p.flops_per_s,
                measured_joules_per_flop: p.joules_per_flop,
                measured_power_w,
                source: p.source,
                scope: p.scope.clone(),
                projected_flops_per_s,
                projected_power_w: power.watts,
                projected_power_scope: power.scope,
                projected_joules_per_flop,
                utilization_ratio: p.flops_per_s / projected_flops_per_s,
                power_ratio: measured_power_w.map(|w| w / power.watts),
                joules_per_flop_ratio: p.joules_per_flop.map(|j| j / projected_joules_per_flop),
                achieved_mfu: p.flops_per_s / peak,
            });
        }
    }
    Calibration {
        hardware: hw.name.clone(),
        phases,
    }
}

/// Read a run folder and calibrate it against `hardware` (a name or path), or the profile the run
/// names, or [`DEFAULT_LOCAL_HARDWARE`].
pub fn calibrate_run(dir: &Path, hardware: Option<&str>) -> Result<Calibration, ProjectError> {
    let run = read_run(dir)?;
    let name = hardware
        .map(str::to_string)
        .or_else(|| run.header.machine.hardware_profile.clone())
        .unwrap_or_else(|| DEFAULT_LOCAL_HARDWARE.to_string());
    let hw = load_hardware(&name)?;
    Ok(calibrate(&summarize(&run.records), &hw))
}

impl Calibration {
    /// The entry for a role and phase.
    pub fn get(&self, role: Role, phase: Phase) -> Option<&PhaseCalibration> {
        self.phases
            .iter()
            .find(|c| c.role == role && c.phase == phase)
    }

    /// The training entry to carry: the sparse model's, else the dense one's.
    pub fn training(&self) -> Option<&PhaseCalibration> {
        self.get(Role::Sparse, Phase::Train)
            .or_else(|| self.get(Role::Dense, Phase::Train))
    }

    /// `s` with the training ratios carried onto `target`: utilisation = target's default x the
    /// utilisation ratio (at most 1), power = target's default x the power ratio (when measured).
    /// Figures the user set in `s` are kept. `None` when the run has no training phase.
    pub fn carry(&self, target: &HardwareProfile, s: &Settings) -> Option<Settings> {
        let c = self.training()?;
        let mut out = s.clone();
        if out.utilization.is_none() {
            let u = (target.default_utilization * c.utilization_ratio).min(1.0);
            out.utilization = Some(Utilization::Mfu(u));
        }
        if out.power_w_per_chip.is_none() {
            if let Some(r) = c.power_ratio {
                out.power_w_per_chip = Some(target.default_power().watts * r);
                out.power_scope = Some(PowerScope::Calibrated);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{Energy, Record, StepRecord};

    fn train_step(seconds: f64, flops: f64, joules: f64) -> Record {
        Record::Step(StepRecord {
            t_s: 0.0,
            model: "glam-tiny".into(),
            role: Role::Sparse,
            phase: Phase::Train,
            step: 0,
            warmup: false,
            tokens: 100,
            seconds,
            flops,
            flops_by_component: Default::default(),
            energy: Some(Energy {
                joules,
                idle_joules: None,
                source: EnergySource::Estimate,
                scope: "test".into(),
                window: None,
            }),
            loss: None,
            aux_loss: None,
            expert_tokens: vec![],
            dropped: 0,
            domain_expert_tokens: Default::default(),
        })
    }

    #[test]
    fn ratios_compare_measured_with_the_profile() {
        let hw = load_hardware("cpu-generic").unwrap();
        // 28 GFLOP/s for 1 s, 3.5 J: half of 0.4 x 140 GFLOP/s, half of the 7 W all-busy estimate.
        let recs = vec![train_step(1.0, 28e9, 3.5), train_step(1.0, 28e9, 3.5)];
        let c = calibrate(&summarize(&recs), &hw);
        let t = c.training().unwrap();
        assert!((t.utilization_ratio - 0.5).abs() < 1e-9);
        assert!((t.power_ratio.unwrap() - 0.5).abs() < 1e-9);
        assert!((t.joules_per_flop_ratio.unwrap() - 1.0).abs() < 1e-9);
        assert!((t.achieved_mfu - 0.2).abs() < 1e-9);
    }

    #[test]
    fn carrying_scales_the_target_defaults_and_keeps_user_figures() {
        let hw = load_hardware("cpu-generic").unwrap();
        let recs = vec![train_step(1.0, 28e9, 3.5)];
        let c = calibrate(&summarize(&recs), &hw);
        let v4 = load_hardware("tpu-v4").unwrap();
        let s = c.carry(&v4, &Settings::new(8)).unwrap();
        assert_eq!(s.utilization, Some(Utilization::Mfu(0.462 * 0.5)));
        assert!((s.power_w_per_chip.unwrap() - 163.0).abs() < 1e-9);
        let mut given = Settings::new(8);
        given.pue = Some(1.5);
        given.utilization = Some(Utilization::Mfu(0.3));
        let s = c.carry(&v4, &given).unwrap();
        assert_eq!(
            (s.utilization, s.pue),
            (Some(Utilization::Mfu(0.3)), Some(1.5))
        );
    }
}
