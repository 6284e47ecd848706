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
use crate::profile::{load_hardware, HardwareKind, HardwareProfile, PowerScope, Precision};
use crate::runlog::{
    effective_peak, read_run, summarize, MachineInfo, Record, RunData, RunHeader, RunPeak,
    RunSummary, SummaryPeak,
};
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

/// Profile used for a CPU run that names none: the generic CPU, as the local estimate does.
pub const DEFAULT_LOCAL_HARDWARE: &str = "cpu-generic";

/// The hardware profile of a GPU, from the name its driver reports ("NVIDIA H200",
/// "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"); `None` for a GPU no profile describes
/// (an H100 PCIe or NVL, a 40 GB A100, a consumer card).
pub fn gpu_profile_for(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    let has = |s: &str| n.contains(s);
    if has("h200") {
        Some("h200")
    } else if has("h100") {
        // The PCIe and NVL boards run lower clocks and power than the SXM profile.
        (!has("pcie") && !has("nvl")).then_some("h100-sxm")
    } else if has("a100") {
        has("80g").then_some("a100-80gb")
    } else if has("b200") {
        Some("b200")
    } else if has("v100") {
        Some("v100")
    } else {
        None
    }
}

/// The GPU's name in a run header's device ("cuda:0 NVIDIA H200" -> "NVIDIA H200"); `None` for a
/// CPU run or a device string without a name.
pub fn gpu_name(device: &str) -> Option<&str> {
    let rest = device.strip_prefix("cuda:")?;
    let (_, name) = rest.split_once(' ')?;
    Some(name.trim()).filter(|n| !n.is_empty())
}

/// Which hardware profile describes the machine a run was on: for a GPU run the GPU's profile
/// (matched from its name; `None` when no profile matches), for a CPU run the profile the header
/// names, else [`DEFAULT_LOCAL_HARDWARE`]. The one answer calibration, reports and the dashboard use.
pub fn machine_hardware(m: &MachineInfo) -> Option<String> {
    if m.device.starts_with("cuda") {
        return gpu_name(&m.device)
            .and_then(gpu_profile_for)
            .map(str::to_string);
    }
    Some(
        m.hardware_profile
            .clone()
            .unwrap_or_else(|| DEFAULT_LOCAL_HARDWARE.to_string()),
    )
}

/// The precision a run computes in on `hw`'s kind of chip: bf16 on accelerators, f32 on a CPU
/// (candle widens bf16 to f32 there).
fn run_precision(hw: &HardwareProfile, dtype: Option<&str>) -> Precision {
    let wanted = match dtype {
        Some("bf16") => Some(Precision::Bf16),
        Some("f32") => Some(Precision::Fp32),
        Some("f16") => Some(Precision::Fp16),
        Some(_) => None,
        None if hw.kind == HardwareKind::Cpu => Some(Precision::Fp32),
        None => Some(Precision::Bf16),
    };
    wanted
        .filter(|p| hw.peak_at(*p).is_some())
        .unwrap_or(hw.default_precision)
}

/// A precision as the probe and the summary name dtypes (candle's names: "f32", "bf16").
fn dtype_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "f32",
        Precision::Fp16 => "f16",
        other => other.label(),
    }
}

/// The peak a run measures its utilisation against: the measured one in its header, else its
/// machine's profile peak (bf16 for a GPU, f32 for a CPU) named by the profile; `None` for a GPU
/// no profile describes in a run that measured nothing.
pub fn peak_of_run(h: &RunHeader) -> Option<RunPeak> {
    if let Some(p) = &h.machine.peak {
        return Some(p.clone());
    }
    let hw = load_hardware(&machine_hardware(&h.machine)?).ok()?;
    let p = run_precision(&hw, None);
    Some(RunPeak {
        flops_per_s: hw.peak_at(p)?,
        dtype: if p == Precision::Fp32 {
            "f32"
        } else {
            p.label()
        }
        .into(),
        from: hw.name.clone(),
        measurement: None,
    })
}

/// The summary of a run's records with utilisation against the run's peak ([`peak_of_run`]).
pub fn summarize_run(h: &RunHeader, records: &[Record]) -> RunSummary {
    summarize(records).with_peak(peak_of_run(h).as_ref())
}

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
    /// The MFU this run reached against the calibration's peak (`Calibration::peak`): at most 1.
    pub achieved_mfu: f64,
    /// Utilisation against the run's own peak (probed or cached), as in `summary.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_utilization: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_peak_from: Option<String>,
}

/// A run against its machine's hardware profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub hardware: String,
    /// The peak MFU divides by: the profile's at the run's precision, or the run's highest achieved
    /// rate where that is higher (`from` = "achieved").
    pub peak: SummaryPeak,
    pub phases: Vec<PhaseCalibration>,
}

/// Compare a run's summary with the projection for `hw` (the machine the run ran on). The peak is
/// the profile's at the precision the run computed in (its summary's peak dtype; bf16 for an
/// accelerator, f32 for a CPU), raised to the run's achieved rate where that is higher.
pub fn calibrate(summary: &RunSummary, hw: &HardwareProfile) -> Calibration {
    let precision = run_precision(hw, summary.peak.as_ref().map(|p| p.dtype.as_str()));
    let profile_peak = RunPeak {
        flops_per_s: hw.peak_at(precision).unwrap_or_else(|| hw.peak()),
        dtype: dtype_name(precision).into(),
        from: hw.name.clone(),
        measurement: None,
    };
    let used = effective_peak(
        &profile_peak,
        summary
            .models
            .iter()
            .flat_map(|m| m.phases.iter().map(|p| p.flops_per_s)),
    );
    let peak = used.flops_per_s;
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
                achieved_mfu: (p.flops_per_s / peak).min(1.0),
                run_utilization: p.utilization,
                run_peak_from: p.peak_from.clone(),
            });
        }
    }
    Calibration {
        hardware: hw.name.clone(),
        peak: used,
        phases,
    }
}

/// Calibrate a run read from its folder against `hardware` (a name or path), or the profile of the
/// machine it ran on ([`machine_hardware`]: the GPU's for a GPU run).
pub fn calibrate_run_data(
    run: &RunData,
    hardware: Option<&str>,
) -> Result<Calibration, ProjectError> {
    let name = match hardware {
        Some(h) => h.to_string(),
        None => machine_hardware(&run.header.machine).ok_or_else(|| {
            super::bad(
                "hardware",
                format!(
                    "the run ran on `{}`, which no hardware profile describes; name one with --hardware",
                    run.header.machine.device
                ),
            )
        })?,
    };
    let hw = load_hardware(&name)?;
    Ok(calibrate(&summarize_run(&run.header, &run.records), &hw))
}

/// Read a run folder and calibrate it (see [`calibrate_run_data`]).
pub fn calibrate_run(dir: &Path, hardware: Option<&str>) -> Result<Calibration, ProjectError> {
    calibrate_run_data(&read_run(dir)?, hardware)
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
    use crate::runlog::{test_energy, test_step, Record, StepRecord};

    fn train_step(seconds: f64, flops: f64, joules: f64) -> Record {
        Record::Step(StepRecord {
            model: "glam-tiny".into(),
            tokens: 100,
            seconds,
            flops,
            energy: Some(test_energy(joules)),
            ..test_step(Role::Sparse, Phase::Train)
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
    fn gpu_names_from_the_driver_match_their_profiles() {
        let cases = [
            ("NVIDIA H200", Some("h200")),
            ("NVIDIA H200 NVL", Some("h200")),
            ("NVIDIA H100 80GB HBM3", Some("h100-sxm")),
            ("NVIDIA H100 PCIe", None),
            ("NVIDIA H100 NVL", None),
            ("NVIDIA A100-SXM4-80GB", Some("a100-80gb")),
            ("NVIDIA A100 80GB PCIe", Some("a100-80gb")),
            ("NVIDIA A100-SXM4-40GB", None),
            ("Tesla V100-SXM2-32GB", Some("v100")),
            ("NVIDIA B200", Some("b200")),
            ("NVIDIA GeForce RTX 4090", None),
        ];
        for (name, want) in cases {
            assert_eq!(gpu_profile_for(name), want, "{name}");
        }
        // Every profile a name can map to exists and is a GPU.
        for (_, want) in cases {
            if let Some(n) = want {
                assert_eq!(load_hardware(n).unwrap().kind, HardwareKind::Gpu, "{n}");
            }
        }
    }

    fn machine(device: &str, profile: Option<&str>) -> MachineInfo {
        MachineInfo {
            hostname: "h".into(),
            cpu_model: "c".into(),
            logical_cpus: 2,
            os: "linux".into(),
            device: device.into(),
            hardware_profile: profile.map(str::to_string),
            peak: None,
        }
    }

    #[test]
    fn the_machines_profile_is_the_gpus_for_a_gpu_run_and_the_named_cpus_otherwise() {
        // A GPU run's header names the CPU profile of the estimate: the GPU wins.
        let m = machine("cuda:0 NVIDIA H200", Some("cpu-generic"));
        assert_eq!(machine_hardware(&m).as_deref(), Some("h200"));
        let m = machine("cuda:1 NVIDIA H100 80GB HBM3", None);
        assert_eq!(machine_hardware(&m).as_deref(), Some("h100-sxm"));
        // A GPU without a name or without a profile has none (never the CPU's).
        assert_eq!(
            machine_hardware(&machine("cuda:0", Some("cpu-generic"))),
            None
        );
        assert_eq!(
            machine_hardware(&machine("cuda:0 NVIDIA GeForce RTX 4090", None)),
            None
        );
        assert_eq!(
            machine_hardware(&machine("cpu", Some("my-cpu"))).as_deref(),
            Some("my-cpu")
        );
        assert_eq!(
            machine_hardware(&machine("cpu", None)).as_deref(),
            Some(DEFAULT_LOCAL_HARDWARE)
        );
        assert_eq!(gpu_name("cuda:0 NVIDIA H200 "), Some("NVIDIA H200"));
        assert_eq!(gpu_name("cpu"), None);
    }

    #[test]
    fn a_run_above_the_profiles_peak_is_calibrated_against_its_achieved_rate() {
        // 280 GFLOP/s on a 140 GFLOP/s profile: MFU 1, not 2; the peak says it was replaced.
        let hw = load_hardware("cpu-generic").unwrap();
        let recs = vec![train_step(1.0, 280e9, 3.5)];
        let c = calibrate(&summarize(&recs), &hw);
        let t = c.training().unwrap();
        assert_eq!(t.achieved_mfu, 1.0);
        assert_eq!(c.peak.from, "achieved");
        assert_eq!(c.peak.replaced.as_ref().unwrap().flops_per_s, 140e9);
        assert_eq!(c.peak.dtype, "f32");
        assert!((t.projected_flops_per_s - 280e9 * 0.4).abs() < 1.0);
    }

    #[test]
    fn a_gpu_run_is_calibrated_in_bf16_against_its_gpus_profile() {
        let mut h = crate::runlog::test_header();
        h.machine = machine("cuda:0 NVIDIA H200", Some("cpu-generic"));
        // No measured peak: the profile's bf16 peak, named after the profile.
        let p = peak_of_run(&h).unwrap();
        assert_eq!(
            (p.flops_per_s, p.dtype.as_str(), p.from.as_str()),
            (989e12, "bf16", "h200")
        );
        // 395.6 TFLOP/s for 1 s: 40% of the H200's bf16 peak.
        let recs = vec![train_step(1.0, 395.6e12, 300.0)];
        let s = summarize_run(&h, &recs);
        let ph = &s.models[0].phases[0];
        assert!((ph.utilization.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(ph.peak_from.as_deref(), Some("h200"));
        let hw = load_hardware(&machine_hardware(&h.machine).unwrap()).unwrap();
        let c = calibrate(&s, &hw);
        assert_eq!(c.peak.dtype, "bf16");
        assert!((c.training().unwrap().achieved_mfu - 0.4).abs() < 1e-9);
        // A probed bf16 peak of 700 TFLOP/s: the summary divides by it, the calibration still by
        // the profile's.
        h.machine.peak = Some(RunPeak {
            flops_per_s: 700e12,
            dtype: "bf16".into(),
            from: "probe".into(),
            measurement: None,
        });
        let s = summarize_run(&h, &recs);
        let c = calibrate(&s, &hw);
        let t = c.training().unwrap();
        assert!((t.run_utilization.unwrap() - 395.6 / 700.0).abs() < 1e-9);
        assert_eq!(t.run_peak_from.as_deref(), Some("probe"));
        assert!((t.achieved_mfu - 0.4).abs() < 1e-9);
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
