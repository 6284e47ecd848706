//! Energy metering: sensors (NVML, RAPL, estimate) behind one trait, a sampler thread and
//! measurement windows.

use serde::{Deserialize, Serialize};

/// Where an energy figure comes from. An `Estimate` is never presented as a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// The NVIDIA GPU's total-energy counter (or integrated NVML power).
    Nvml,
    /// Linux powercap RAPL counters (CPU package and DRAM).
    Rapl,
    /// CPU time of this process x watts per busy core from a hardware profile, plus its idle share.
    Estimate,
}

impl EnergySource {
    pub fn label(self) -> &'static str {
        match self {
            EnergySource::Nvml => "nvml",
            EnergySource::Rapl => "rapl",
            EnergySource::Estimate => "estimate",
        }
    }
}

impl std::fmt::Display for EnergySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

mod error;
mod estimate;
mod nvml;
mod period;
mod rapl;
mod sampler;
mod sensor;
mod window;

pub use error::MeterError;
pub use estimate::{proc_stat_cpu_s, process_cpu_s, EstimateSensor};
pub use nvml::{counter_delta_mj, NvmlSensor, NVML_LIB_ENV};
pub use period::{
    attribute_by_duration, block_steps, detect_update_period, period_from_readings, UpdatePeriod,
    BLOCK_MARGIN, DETECT_FOR, MAX_BLOCK_STEPS, SAFE_UPDATES_PER_WINDOW,
};
pub use rapl::{wrapped_delta_uj, RaplSensor, DEFAULT_POWERCAP_ROOT, POWERCAP_ROOT_ENV};
pub use sampler::{Meter, DEFAULT_SAMPLE_HZ};
pub use sensor::{
    open_host_sensor, open_sensor, EstimateParams, GpuSelector, Reading, Sensor, SensorChoice,
    Workplace,
};
pub use window::{trapezoid_j, trapezoid_step_j, Window, WindowEnergy};
