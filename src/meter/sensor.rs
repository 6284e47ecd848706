//! The sensor trait, its reading, and the choice of reader (`--sensor`).

use std::str::FromStr;

use super::estimate::EstimateSensor;
use super::nvml::NvmlSensor;
use super::rapl::RaplSensor;
use super::MeterError;
use crate::vocab::EnergySource;
use crate::vocab::GpuSample;

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
    /// The energy counter alone (joules since the sensor opened), for the fast polling of the
    /// update-period detection; `None` for a sensor without a counter. Sensors whose full read
    /// is slow (NVML: power, clocks, temperature per GPU) read only the counter here.
    fn read_energy_j(&mut self) -> Result<Option<f64>, MeterError> {
        self.read().map(|r| r.energy_j)
    }
}

/// One GPU named to the meter: NVML's index, or a UUID ("GPU-...") as `CUDA_VISIBLE_DEVICES`
/// may give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelector {
    Index(u32),
    Uuid(String),
}

impl FromStr for GpuSelector {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        let s = s.trim();
        if let Ok(i) = s.parse::<u32>() {
            return Ok(GpuSelector::Index(i));
        }
        if s.starts_with("GPU-") {
            return Ok(GpuSelector::Uuid(s.to_string()));
        }
        Err(MeterError::Unavailable {
            reader: "nvml",
            reason: format!("{s:?} names no GPU: expected an NVML index or a GPU-... UUID"),
        })
    }
}

/// Where the model does its work, which `--sensor auto` meters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workplace {
    /// The CPU: RAPL, else the estimate; never NVML (idle GPUs are not the work).
    Cpu,
    /// These GPUs: NVML on them alone.
    Gpus(Vec<GpuSelector>),
}

impl Workplace {
    /// The NVML GPU behind candle's device name ("cpu", "cuda:N"). CUDA ordinal N is the N-th
    /// entry of `cuda_visible_devices` when that is set (an index or a UUID), else NVML index N.
    /// Assumes CUDA enumerates GPUs in NVML's order (PCI bus id): true with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`, and on machines whose GPUs are all of one model (CUDA's
    /// default "fastest first" then keeps the bus order). `None` for a name it cannot map.
    pub fn of_device(device: &str, cuda_visible_devices: Option<&str>) -> Option<Workplace> {
        if device == "cpu" {
            return Some(Workplace::Cpu);
        }
        // "cuda:0" or "cuda:0 NVIDIA H200": the ordinal is the first word's.
        let first = device.split_whitespace().next()?;
        let ordinal: usize = first.strip_prefix("cuda:")?.parse().ok()?;
        let gpu = match cuda_visible_devices
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            Some(list) => list.split(',').nth(ordinal)?.parse().ok()?,
            None => GpuSelector::Index(ordinal as u32),
        };
        Some(Workplace::Gpus(vec![gpu]))
    }
}

/// Which reader to use: `Auto` meters the device doing the work (NVML on the model's GPU for a
/// GPU run; RAPL, then the estimate, for a CPU run).
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

/// Opens the chosen reader for a model working at `workplace`. With `Auto`, the second value
/// lists the readers passed over before the one returned, each with the reason ("nvml: not
/// used: the model runs on the CPU", "rapl: ... permission denied"). `Nvml` forces NVML: on the
/// GPUs in `named`, or on every GPU when it is empty. An explicit choice that cannot open is an
/// error saying why.
pub fn open_sensor(
    choice: SensorChoice,
    est: &EstimateParams,
    workplace: &Workplace,
    named: &[GpuSelector],
) -> Result<(Box<dyn Sensor>, Vec<String>), MeterError> {
    let estimate = || -> Result<Box<dyn Sensor>, MeterError> {
        Ok(Box::new(EstimateSensor::open(est.clone())?))
    };
    let named = (!named.is_empty()).then_some(named);
    match choice {
        SensorChoice::Nvml => Ok((Box::new(NvmlSensor::open_default(named)?), Vec::new())),
        SensorChoice::Rapl => Ok((Box::new(RaplSensor::open_default()?), Vec::new())),
        SensorChoice::Estimate => Ok((estimate()?, Vec::new())),
        SensorChoice::Auto => {
            let mut tried = Vec::new();
            match workplace {
                Workplace::Cpu => {
                    tried.push("nvml: not used: the model runs on the CPU".to_string());
                }
                Workplace::Gpus(gpus) => match NvmlSensor::open_default(Some(gpus)) {
                    Ok(s) => return Ok((Box::new(s), tried)),
                    Err(e) => tried.push(e.to_string()),
                },
            }
            match RaplSensor::open_default() {
                Ok(s) => return Ok((Box::new(s), tried)),
                Err(e) => tried.push(e.to_string()),
            }
            Ok((estimate()?, tried))
        }
    }
}

/// The host CPU beside a GPU run, metered as a separate component: under `auto`, when the main
/// sensor is NVML on the model's GPUs, RAPL where it is readable. `None` where no second meter
/// applies (a CPU run, an explicit `--sensor`, a GPU run that fell back from NVML); `Some(Err)`
/// says why RAPL could not be read.
pub fn open_host_sensor(
    choice: SensorChoice,
    main: EnergySource,
    workplace: &Workplace,
) -> Option<Result<Box<dyn Sensor>, MeterError>> {
    let gpu_run = matches!(workplace, Workplace::Gpus(g) if !g.is_empty());
    if choice != SensorChoice::Auto || main != EnergySource::Nvml || !gpu_run {
        return None;
    }
    Some(RaplSensor::open_default().map(|s| Box::new(s) as Box<dyn Sensor>))
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
    fn the_model_device_maps_to_its_nvml_gpu() {
        assert_eq!(Workplace::of_device("cpu", Some("3")), Some(Workplace::Cpu));
        assert_eq!(
            Workplace::of_device("cuda:0", None),
            Some(Workplace::Gpus(vec![GpuSelector::Index(0)]))
        );
        assert_eq!(
            Workplace::of_device("cuda:1", Some("")),
            Some(Workplace::Gpus(vec![GpuSelector::Index(1)]))
        );
        // CUDA ordinal 0 is the first visible GPU: NVML index 2 here.
        assert_eq!(
            Workplace::of_device("cuda:0", Some("2,3")),
            Some(Workplace::Gpus(vec![GpuSelector::Index(2)]))
        );
        assert_eq!(
            Workplace::of_device("cuda:1", Some("GPU-aa,GPU-bb-cc")),
            Some(Workplace::Gpus(vec![GpuSelector::Uuid("GPU-bb-cc".into())]))
        );
        assert_eq!(Workplace::of_device("cuda:2", Some("0,1")), None);
        assert_eq!(Workplace::of_device("cuda:0", Some("MIG-x")), None);
        assert_eq!(Workplace::of_device("metal:0", None), None);
        // The device name with the GPU's name after the ordinal, as `pick_device` gives it.
        assert_eq!(
            Workplace::of_device("cuda:1 NVIDIA H200", None),
            Some(Workplace::Gpus(vec![GpuSelector::Index(1)]))
        );
    }

    #[test]
    fn cpu_generic_figures_follow_cloud_carbon_footprint() {
        let p = EstimateParams::cpu_generic_for_cores(2);
        assert!((p.busy_w_per_core - 2.76).abs() < 1e-12);
        assert!((p.idle_w - 1.48).abs() < 1e-12);
        assert_eq!(p.profile, "cpu-generic");
    }
    #[test]
    fn only_an_auto_gpu_run_metered_by_nvml_gets_the_host_meter() {
        let gpu = Workplace::Gpus(vec![GpuSelector::Index(0)]);
        let none = |c, m, w: &Workplace| open_host_sensor(c, m, w).is_none();
        assert!(none(
            SensorChoice::Auto,
            EnergySource::Nvml,
            &Workplace::Cpu
        ));
        assert!(none(SensorChoice::Auto, EnergySource::Rapl, &gpu));
        assert!(none(SensorChoice::Auto, EnergySource::Estimate, &gpu));
        assert!(none(SensorChoice::Nvml, EnergySource::Nvml, &gpu));
        assert!(none(
            SensorChoice::Auto,
            EnergySource::Nvml,
            &Workplace::Gpus(vec![])
        ));
        // Where it applies, RAPL is tried: opened, or an error saying why not.
        match open_host_sensor(SensorChoice::Auto, EnergySource::Nvml, &gpu) {
            Some(Ok(s)) => assert_eq!(s.source(), EnergySource::Rapl),
            Some(Err(e)) => assert!(e.to_string().contains("rapl"), "{e}"),
            None => panic!("an auto GPU run metered by NVML tries RAPL for its host"),
        }
    }
}
