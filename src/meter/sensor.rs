//! The sensor trait, its reading, and the choice of reader (`--sensor`).

use std::str::FromStr;

use super::estimate::EstimateSensor;
use super::nvml::NvmlSensor;
use super::rapl::RaplSensor;
use super::{EnergySource, MeterError};
use crate::runlog::GpuSample;

/// One reading of a sensor. A quantity the sensor does not measure is `None`, never `0.0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Cumulative joules since the sensor opened, counter wraps and resets already handled;
    /// `None` for a sensor without an energy counter (the meter then integrates `power_w`).
    pub energy_j: Option<f64>,
    /// Average power, watts: the sensor's own average (NVML ~1 s), or energy over the time
    /// since the previous reading (RAPL, estimate).
    pub power_w: Option<f64>,
    /// Instant power where the sensor has it (NVML field 186), watts.
    pub instant_power_w: Option<f64>,
    /// Per-GPU state (NVML only).
    pub gpus: Vec<GpuSample>,
}

/// A reader of energy: NVML, RAPL or the estimate.
pub trait Sensor: Send {
    fn source(&self) -> EnergySource;
    /// What the figures cover, e.g. "2 GPUs, board power (nvml)".
    fn scope(&self) -> String;
    fn read(&mut self) -> Result<Reading, MeterError>;
}

/// Which reader to use: `Auto` tries NVML, then RAPL, then the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SensorChoice {
    #[default]
    Auto,
    Nvml,
    Rapl,
    Estimate,
}

impl FromStr for SensorChoice {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(SensorChoice::Auto),
            "nvml" => Ok(SensorChoice::Nvml),
            "rapl" => Ok(SensorChoice::Rapl),
            "estimate" => Ok(SensorChoice::Estimate),
            _ => Err(MeterError::UnknownSensor(s.to_string())),
        }
    }
}

impl std::fmt::Display for SensorChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SensorChoice::Auto => "auto",
            SensorChoice::Nvml => "nvml",
            SensorChoice::Rapl => "rapl",
            SensorChoice::Estimate => "estimate",
        })
    }
}

/// The figures of the estimate: watts per busy core and idle watts, from a hardware profile.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateParams {
    /// Name of the hardware profile the figures come from (shown in the scope).
    pub profile: String,
    pub cores: usize,
    /// Watts one core adds when busy, above idle.
    pub busy_w_per_core: f64,
    /// Watts of the whole CPU at idle (all cores).
    pub idle_w: f64,
}

impl EstimateParams {
    /// Cloud Carbon Footprint methodology (cloudcarbonfootprint.org/docs/methodology, "Compute"):
    /// an AWS vCPU averages 0.74 W at 0% and 3.5 W at 100% utilisation, linear in between. So a
    /// busy core adds 3.5 - 0.74 = 2.76 W and the idle CPU draws 0.74 W x cores. Used when no
    /// hardware profile is given; the cores are this machine's.
    pub fn cpu_generic_fallback() -> EstimateParams {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EstimateParams::cpu_generic_for_cores(cores)
    }

    /// [`EstimateParams::cpu_generic_fallback`] for a given number of cores.
    pub fn cpu_generic_for_cores(cores: usize) -> EstimateParams {
        const CCF_MIN_W_PER_VCPU: f64 = 0.74;
        const CCF_MAX_W_PER_VCPU: f64 = 3.5;
        EstimateParams {
            profile: "cpu-generic".to_string(),
            cores,
            busy_w_per_core: CCF_MAX_W_PER_VCPU - CCF_MIN_W_PER_VCPU,
            idle_w: CCF_MIN_W_PER_VCPU * cores as f64,
        }
    }
}

/// Opens the chosen reader. With `Auto`, the second value lists the readers tried before the
/// one returned, each with the reason it could not be used ("nvml: libnvidia-ml.so.1 not found
/// (no NVIDIA driver)"). An explicit choice that cannot open is an error saying why.
pub fn open_sensor(
    choice: SensorChoice,
    est: &EstimateParams,
) -> Result<(Box<dyn Sensor>, Vec<String>), MeterError> {
    let estimate = || -> Result<Box<dyn Sensor>, MeterError> {
        Ok(Box::new(EstimateSensor::open(est.clone())?))
    };
    match choice {
        SensorChoice::Nvml => Ok((Box::new(NvmlSensor::open_default()?), Vec::new())),
        SensorChoice::Rapl => Ok((Box::new(RaplSensor::open_default()?), Vec::new())),
        SensorChoice::Estimate => Ok((estimate()?, Vec::new())),
        SensorChoice::Auto => {
            let mut tried = Vec::new();
            match NvmlSensor::open_default() {
                Ok(s) => return Ok((Box::new(s), tried)),
                Err(e) => tried.push(e.to_string()),
            }
            match RaplSensor::open_default() {
                Ok(s) => return Ok((Box::new(s), tried)),
                Err(e) => tried.push(e.to_string()),
            }
            Ok((estimate()?, tried))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_choice_parses_the_flag_values_and_rejects_others() {
        assert_eq!("nvml".parse::<SensorChoice>().unwrap(), SensorChoice::Nvml);
        assert_eq!("RAPL".parse::<SensorChoice>().unwrap(), SensorChoice::Rapl);
        assert_eq!(
            "estimate".parse::<SensorChoice>().unwrap(),
            SensorChoice::Estimate
        );
        assert_eq!("auto".parse::<SensorChoice>().unwrap(), SensorChoice::Auto);
        let err = "gpu".parse::<SensorChoice>().unwrap_err().to_string();
        assert!(
            err.contains("\"gpu\"") && err.contains("nvml, rapl, estimate"),
            "{err}"
        );
        for c in [
            SensorChoice::Auto,
            SensorChoice::Nvml,
            SensorChoice::Rapl,
            SensorChoice::Estimate,
        ] {
            assert_eq!(c.to_string().parse::<SensorChoice>().unwrap(), c);
        }
    }

    #[test]
    fn cpu_generic_figures_follow_cloud_carbon_footprint() {
        let p = EstimateParams::cpu_generic_for_cores(2);
        assert!((p.busy_w_per_core - 2.76).abs() < 1e-12);
        assert!((p.idle_w - 1.48).abs() < 1e-12);
        assert_eq!(p.profile, "cpu-generic");
    }
}
