//! NVML: the total-energy counter (mJ since the driver loaded), power and state of the GPUs
//! metered (those named, else every GPU NVML sees), summed.
//!
//! Energy is the difference of counter readings; a reading below the previous one means the
//! driver reloaded and the counter restarted: the total continues from the new value (that
//! interval adds nothing rather than a negative amount). Where a GPU has no energy counter
//! (before Volta), no reading carries energy and the meter integrates `power_w` instead.

use std::ffi::OsString;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};

use super::sensor::{GpuSelector, Reading, Sensor};
use super::MeterError;
use crate::vocab::EnergySource;
use crate::vocab::GpuSample;

/// Path of the NVML library to load instead of the system's `libnvidia-ml.so.1` (tests load a
/// stub through it).
pub const NVML_LIB_ENV: &str = "SPARSEWATT_NVML_LIB";

/// `NVML_FI_DEV_POWER_INSTANT`: instant board power, mW.
const FIELD_POWER_INSTANT: u32 = 186;

#[derive(Debug)]
struct GpuCounter {
    index: u32,
    last_mj: u64,
    total_mj: u64,
}

pub struct NvmlSensor {
    nvml: Nvml,
    /// One per GPU; `None` where the energy counter is unsupported (power integration).
    counters: Option<Vec<GpuCounter>>,
    /// NVML indices of the GPUs metered, in order, and their names.
    indices: Vec<u32>,
    names: Vec<String>,
}

impl NvmlSensor {
    /// Loads `$SPARSEWATT_NVML_LIB` if set, else the system's NVML, and meters the GPUs in
    /// `gpus` (every GPU when `None`).
    pub fn open_default(gpus: Option<&[GpuSelector]>) -> Result<NvmlSensor, MeterError> {
        let lib = std::env::var_os(NVML_LIB_ENV);
        NvmlSensor::open_gpus(lib.as_deref().map(std::path::Path::new), gpus)
    }

    /// Loads NVML from `lib` (or the system's) and reads every GPU's counter once.
    pub fn open(lib: Option<&std::path::Path>) -> Result<NvmlSensor, MeterError> {
        NvmlSensor::open_gpus(lib, None)
    }

    /// Loads NVML from `lib` (or the system's) and reads the counter of each GPU in `gpus`
    /// (every GPU when `None`) once. A GPU that is not there is an error naming it.
    pub fn open_gpus(
        lib: Option<&std::path::Path>,
        gpus: Option<&[GpuSelector]>,
    ) -> Result<NvmlSensor, MeterError> {
        let init = match lib {
            Some(path) => {
                let os: OsString = path.as_os_str().to_owned();
                Nvml::builder().lib_path(&os).init()
            }
            None => Nvml::init(),
        };
        let nvml = init.map_err(|e| MeterError::Unavailable {
            reader: "nvml",
            reason: init_reason(lib, &e),
        })?;
        let device_count = nvml.device_count().map_err(|e| MeterError::Unavailable {
            reader: "nvml",
            reason: format!("cannot count GPUs: {e}"),
        })?;
        if device_count == 0 {
            return Err(MeterError::Unavailable {
                reader: "nvml",
                reason: "NVML loaded but sees no GPU".to_string(),
            });
        }
        let indices: Vec<u32> = match gpus {
            None => (0..device_count).collect(),
            Some(list) => list
                .iter()
                .map(|g| resolve(&nvml, device_count, g))
                .collect::<Result<_, _>>()?,
        };
        let mut counters = Some(Vec::new());
        let mut names = Vec::with_capacity(indices.len());
        for &index in &indices {
            let device = device(&nvml, index).map_err(|e| MeterError::Unavailable {
                reader: "nvml",
                reason: e.to_string(),
            })?;
            names.push(device.name().unwrap_or_else(|_| "unknown GPU".to_string()));
            match device.total_energy_consumption() {
                Ok(mj) => {
                    if let Some(c) = counters.as_mut() {
                        c.push(GpuCounter {
                            index,
                            last_mj: mj,
                            total_mj: 0,
                        });
                    }
                }
                // One GPU without a counter: integrate power for all, not a mix of both.
                Err(NvmlError::NotSupported) => counters = None,
                Err(e) => {
                    return Err(MeterError::Unavailable {
                        reader: "nvml",
                        reason: format!("GPU {index}: energy counter: {e}"),
                    })
                }
            }
        }
        Ok(NvmlSensor {
            nvml,
            counters,
            indices,
            names,
        })
    }

    fn read_counters(&mut self) -> Result<Option<f64>, MeterError> {
        let Some(counters) = self.counters.as_mut() else {
            return Ok(None);
        };
        for c in counters.iter_mut() {
            let mj = device(&self.nvml, c.index)?
                .total_energy_consumption()
                .map_err(|e| read_error(c.index, "energy counter", e))?;
            c.total_mj += counter_delta_mj(c.last_mj, mj);
            c.last_mj = mj;
        }
        Ok(Some(
            counters.iter().map(|c| c.total_mj).sum::<u64>() as f64 / 1e3,
        ))
    }
}

/// The NVML index of a named GPU.
fn resolve(nvml: &Nvml, device_count: u32, g: &GpuSelector) -> Result<u32, MeterError> {
    let unavailable = |reason: String| MeterError::Unavailable {
        reader: "nvml",
        reason,
    };
    match g {
        GpuSelector::Index(i) if *i < device_count => Ok(*i),
        GpuSelector::Index(i) => Err(unavailable(format!(
            "no GPU {i}: NVML sees {device_count} (indices 0 to {})",
            device_count - 1
        ))),
        GpuSelector::Uuid(u) => nvml
            .device_by_uuid(u.as_str())
            .and_then(|d| d.index())
            .map_err(|e| unavailable(format!("no GPU with UUID {u}: {e}"))),
    }
}

/// mJ between two counter readings; a decrease is a driver reset and counts nothing.
pub fn counter_delta_mj(last_mj: u64, mj: u64) -> u64 {
    mj.saturating_sub(last_mj)
}

impl Sensor for NvmlSensor {
    fn source(&self) -> EnergySource {
        EnergySource::Nvml
    }

    fn scope(&self) -> String {
        let list = self
            .indices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let gpus = match self.indices.len() {
            1 => format!("gpu {list} ({})", self.names.join(", ")),
            _ => format!("gpus {list} ({})", self.names.join(", ")),
        };
        match self.counters {
            Some(_) => format!("{gpus}, board power (nvml)"),
            None => format!(
                "{gpus}, board power integrated from power samples, no energy counter (nvml)"
            ),
        }
    }

    fn read_energy_j(&mut self) -> Result<Option<f64>, MeterError> {
        self.read_counters()
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let energy_j = self.read_counters()?;
        let mut gpus = Vec::with_capacity(self.indices.len());
        let mut instant_sum_w = Some(0.0);
        for &index in &self.indices {
            let d = device(&self.nvml, index)?;
            let power_w = match d.power_usage() {
                Ok(mw) => Some(mw as f64 / 1e3),
                Err(NvmlError::NotSupported) => None,
                Err(e) => return Err(read_error(index, "power", e)),
            };
            // A sum over some GPUs only would be silently low: all or nothing.
            instant_sum_w = match (instant_sum_w, instant_power_w(&d)) {
                (Some(sum), Some(w)) => Some(sum + w),
                _ => None,
            };
            gpus.push(GpuSample {
                index,
                power_w,
                utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
                sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                memory_used_bytes: d.memory_info().ok().map(|m| m.used),
            });
        }
        let power_w = gpus.iter().map(|g| g.power_w).sum::<Option<f64>>();
        Ok(Reading {
            energy_j,
            power_w,
            instant_power_w: instant_sum_w,
            gpus,
        })
    }
}

fn device(nvml: &Nvml, index: u32) -> Result<Device<'_>, MeterError> {
    nvml.device_by_index(index)
        .map_err(|e| read_error(index, "handle", e))
}

/// Instant power (field 186), watts; `None` where the driver does not have the field.
fn instant_power_w(d: &Device<'_>) -> Option<f64> {
    let values = d.field_values_for(&[FieldId(FIELD_POWER_INSTANT)]).ok()?;
    let FieldValueSample { value, .. } = values.into_iter().next()?.ok()?;
    let mw = match value.ok()? {
        SampleValue::F64(v) => v,
        SampleValue::U32(v) => v as f64,
        SampleValue::U64(v) => v as f64,
        SampleValue::I64(v) => v as f64,
    };
    Some(mw / 1e3)
}

fn read_error(index: u32, what: &str, e: NvmlError) -> MeterError {
    MeterError::Read {
        reader: "nvml",
        reason: format!("GPU {index}: {what}: {e}"),
    }
}

/// The plain reason NVML could not start.
fn init_reason(lib: Option<&std::path::Path>, e: &NvmlError) -> String {
    match (e, lib) {
        (NvmlError::LibloadingError(_), None) => {
            "libnvidia-ml.so.1 not found (no NVIDIA driver)".to_string()
        }
        (NvmlError::LibloadingError(le), Some(path)) => {
            format!("cannot load {} (from {NVML_LIB_ENV}): {le}", path.display())
        }
        (NvmlError::DriverNotLoaded, _) => {
            "NVML found but the NVIDIA driver is not loaded".to_string()
        }
        (NvmlError::NoPermission, _) => "permission denied initialising NVML".to_string(),
        (other, _) => format!("initialising NVML failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_decrease_is_a_reset_and_adds_nothing() {
        assert_eq!(counter_delta_mj(1_000, 1_500), 500);
        assert_eq!(counter_delta_mj(1_000_000, 20), 0);
    }

    #[test]
    fn a_missing_library_gives_the_plain_reason() {
        let err = NvmlSensor::open(Some(std::path::Path::new("/nonexistent/libnvml.so")))
            .err()
            .expect("a missing library cannot open");
        let msg = err.to_string();
        assert!(
            msg.starts_with("nvml: cannot load /nonexistent/libnvml.so (from SPARSEWATT_NVML_LIB)"),
            "{msg}"
        );
    }
}
