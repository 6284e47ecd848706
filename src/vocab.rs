//! The shared vocabulary at the bottom of the crate: which side of the comparison, what a step
//! did, where an energy figure comes from, and what the sampler reads. Every layer speaks it; it
//! imports nothing from the crate (docs/architecture.md).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which side of the comparison a model is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Sparse,
    Dense,
}

/// What a step did. Denominators: `Train` counts tokens trained, `Prefill` prompt tokens,
/// `Decode` generated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Train,
    Prefill,
    Decode,
}

impl Phase {
    /// The phase as the records, tables and logs spell it: "train", "prefill", "decode".
    pub fn label(self) -> &'static str {
        match self {
            Phase::Train => "train",
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

impl Role {
    /// The role as records, tables and logs spell it: "sparse", "dense".
    pub fn label(self) -> &'static str {
        match self {
            Role::Sparse => "sparse",
            Role::Dense => "dense",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

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

impl fmt::Display for EnergySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A reading of the sensor by the sampler thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_s: f64,
    /// Average power over the sensor's own window (NVML's ~1 s average, RAPL or the estimate
    /// between two readings), watts.
    pub power_w: Option<f64>,
    /// Instant power where the sensor has it (NVML field 186), watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant_power_w: Option<f64>,
    /// Running energy total since the run started, joules.
    pub energy_j: Option<f64>,
    pub source: EnergySource,
    /// Per-GPU readings (NVML only; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuSample>,
}

/// One GPU's state at a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub power_w: Option<f64>,
    pub utilization_pct: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    pub memory_used_bytes: Option<u64>,
}
