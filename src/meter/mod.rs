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
