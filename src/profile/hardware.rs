//! Hardware profiles (`hardware/*.toml`): one chip's peak FLOP/s, memory, interconnect and power,
//! with the scope of each power figure and the sources. Raw TOML as written, then the resolved form.
//!
//! Units in the TOML are the ones vendors publish (TFLOP/s, GB/s with GB = 10^9 bytes, bytes for
//! capacity, watts); the resolved profile holds SI units (FLOP/s, bytes/s, bytes, W).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ProfileError;

/// What kind of chip a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HardwareKind {
    Tpu,
    Gpu,
    Cpu,
}

impl HardwareKind {
    pub fn label(self) -> &'static str {
        match self {
            HardwareKind::Tpu => "tpu",
            HardwareKind::Gpu => "gpu",
            HardwareKind::Cpu => "cpu",
        }
    }
}

/// Number format of the matmuls; selects a peak and the bytes a weight or activation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp8,
    Bf16,
    Fp16,
    Fp32,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::Bf16,
        Precision::Fp16,
        Precision::Fp32,
        Precision::Fp8,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Precision::Fp8 => "fp8",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }

    /// Bytes of one number in this format.
    pub fn bytes(self) -> f64 {
        match self {
            Precision::Fp8 => 1.0,
            Precision::Bf16 | Precision::Fp16 => 2.0,
            Precision::Fp32 => 4.0,
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.label().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// `[peak_tflops]`: dense peak per chip (no structured sparsity), in TFLOP/s, per precision.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeak {
    #[serde(default)]
    pub bf16: Option<f64>,
    #[serde(default)]
    pub fp16: Option<f64>,
    #[serde(default)]
    pub fp32: Option<f64>,
    #[serde(default)]
    pub fp8: Option<f64>,
    /// The precision projections use unless told otherwise.
    pub default: Precision,
}

/// `[memory]`: on-chip-package memory (HBM, or DRAM for a CPU).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    pub capacity_bytes: f64,
    /// GB/s, GB = 10^9 bytes.
    pub bandwidth_gb_per_s: f64,
}

/// `[interconnect]`: the chip-to-chip network used for model and expert parallelism.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterconnect {
    /// Per chip, all links together, GB/s (10^9 bytes).
    pub bandwidth_gb_per_s: f64,
    pub topology: String,
    /// Chips one pod (or NVLink domain) joins with this interconnect.
    pub chips_per_pod: usize,
}

/// `[power]`: the figures published, each with its scope.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPower {
    /// Thermal design power of the chip (chip or board scope), W.
    #[serde(default)]
    pub tdp_w: Option<f64>,
    /// Measured mean power of the chip alone, W.
    #[serde(default)]
    pub chip_mean_w: Option<f64>,
    /// Measured average system power per chip (chip, host, network share; before PUE), W.
    #[serde(default)]
    pub system_w_per_chip: Option<f64>,
    /// Where `system_w_per_chip` was measured (paper and table).
    #[serde(default)]
    pub system_source: Option<String>,
}

/// `[defaults]`: what a projection uses when the command line does not say.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Model FLOPs utilisation: achieved / peak, in (0, 1].
    pub utilization: f64,
    pub utilization_source: String,
    /// Power usage effectiveness of the data centre, >= 1.
    pub pue: f64,
    pub pue_source: String,
}

/// `[cpu]`: the per-core power model of the local estimate (meter's `estimate` source).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuPower {
    pub cores: usize,
    /// W per busy core above idle.
    pub busy_w_per_core: f64,
    /// W of the whole machine (all cores) at idle.
    pub idle_w: f64,
}

/// A hardware profile exactly as written in TOML. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHardwareProfile {
    pub name: String,
    pub kind: HardwareKind,
    /// Where the figures come from; at least one.
    pub sources: Vec<String>,
    pub peak_tflops: RawPeak,
    pub memory: RawMemory,
    #[serde(default)]
    pub interconnect: Option<RawInterconnect>,
    pub power: RawPower,
    pub defaults: RawDefaults,
    #[serde(default)]
    pub cpu: Option<CpuPower>,
}

/// Which power a figure is: they differ by the host, network and cooling share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerScope {
    /// Measured average system power per chip (chip + host + network share), before PUE.
    SystemPerChip,
    /// Measured mean power of the chip alone.
    ChipMean,
    /// The chip's thermal design power: an upper bound of the chip alone, no host.
    ChipTdp,
    /// The local CPU estimate: idle + busy watts per core, all cores busy.
    CpuEstimate,
    /// Given on the command line (or by a caller); its scope is whatever the user meant.
    UserGiven,
    /// Carried from a measured run by calibration.
    Calibrated,
}

impl PowerScope {
    pub fn label(self) -> &'static str {
        match self {
            PowerScope::SystemPerChip => "system per chip (measured)",
            PowerScope::ChipMean => "chip mean (measured)",
            PowerScope::ChipTdp => "chip TDP",
            PowerScope::CpuEstimate => "cpu estimate (all cores busy)",
            PowerScope::UserGiven => "given",
            PowerScope::Calibrated => "calibrated from a run",
        }
    }
}

/// A power per chip and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerFigure {
    pub watts: f64,
    pub scope: PowerScope,
}

/// The interconnect, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interconnect {
    pub bytes_per_s: f64,
    pub topology: String,
    pub chips_per_pod: usize,
}

/// A validated hardware profile in SI units. Construct with [`RawHardwareProfile::resolve`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareProfile {
    pub name: String,
    pub kind: HardwareKind,
    /// Dense peak per chip, FLOP/s, for each precision published.
    pub peak_flops: BTreeMap<Precision, f64>,
    pub default_precision: Precision,
    pub memory_bytes: f64,
    pub memory_bytes_per_s: f64,
    /// Absent for a machine with no chip-to-chip network (the generic CPU).
    pub interconnect: Option<Interconnect>,
    pub tdp_w: Option<f64>,
    pub chip_mean_w: Option<f64>,
    pub system_w_per_chip: Option<f64>,
    pub system_source: Option<String>,
    pub default_utilization: f64,
    pub utilization_source: String,
    pub default_pue: f64,
    pub pue_source: String,
    pub cpu: Option<CpuPower>,
    pub sources: Vec<String>,
    /// The file (or `embedded:hardware/<name>.toml`) it was read from.
    pub origin: String,
}

impl RawHardwareProfile {
    /// Check the rules and convert to SI units. `origin` names the file in error messages.
    pub fn resolve(self, origin: &str) -> Result<HardwareProfile, ProfileError> {
        let c = Checks { origin };
        if self.name.trim().is_empty() {
            return Err(c.err("name", "must not be empty".into()));
        }
        if self.sources.iter().all(|s| s.trim().is_empty()) {
            return Err(c.err("sources", "give at least one source for the figures".into()));
        }
        let peak_flops = self.peak_flops(&c)?;
        let memory_bytes = c.positive("memory.capacity_bytes", self.memory.capacity_bytes)?;
        let memory_bytes_per_s =
            c.positive("memory.bandwidth_gb_per_s", self.memory.bandwidth_gb_per_s)? * 1e9;
        let interconnect = match &self.interconnect {
            None => None,
            Some(i) => Some(c.interconnect(i)?),
        };
        let opt = |key: &str, v: Option<f64>| v.map(|v| c.positive(key, v)).transpose();
        let tdp_w = opt("power.tdp_w", self.power.tdp_w)?;
        let chip_mean_w = opt("power.chip_mean_w", self.power.chip_mean_w)?;
        let system_w_per_chip = opt("power.system_w_per_chip", self.power.system_w_per_chip)?;
        if system_w_per_chip.is_some() && self.power.system_source.is_none() {
            return Err(c.err(
                "power.system_source",
                "missing: say where system_w_per_chip was measured".into(),
            ));
        }
        let (u, pue) = c.defaults(&self.defaults)?;
        c.cpu(self.cpu.as_ref(), self.kind)?;
        if tdp_w.is_none() && system_w_per_chip.is_none() && self.cpu.is_none() {
            return Err(c.err(
                "power",
                "give power.tdp_w or power.system_w_per_chip (no power figure to project with)"
                    .into(),
            ));
        }
        Ok(HardwareProfile {
            name: self.name,
            kind: self.kind,
            peak_flops,
            default_precision: self.peak_tflops.default,
            memory_bytes,
            memory_bytes_per_s,
            interconnect,
            tdp_w,
            chip_mean_w,
            system_w_per_chip,
            system_source: self.power.system_source,
            default_utilization: u,
            utilization_source: self.defaults.utilization_source,
            default_pue: pue,
            pue_source: self.defaults.pue_source,
            cpu: self.cpu,
            sources: self.sources,
            origin: origin.to_string(),
        })
    }

    /// FLOP/s by precision, with the default precision among them.
    fn peak_flops(&self, c: &Checks) -> Result<BTreeMap<Precision, f64>, ProfileError> {
        let p = &self.peak_tflops;
        let mut peak_flops = BTreeMap::new();
        for (prec, v) in [
            (Precision::Bf16, p.bf16),
            (Precision::Fp16, p.fp16),
            (Precision::Fp32, p.fp32),
            (Precision::Fp8, p.fp8),
        ] {
            if let Some(v) = v {
                let key = format!("peak_tflops.{}", prec.label());
                peak_flops.insert(prec, c.positive(&key, v)? * 1e12);
            }
        }
        if !peak_flops.contains_key(&p.default) {
            return Err(c.err(
                "peak_tflops.default",
                format!(
                    "is {} but no peak is given for {} (give peak_tflops.{})",
                    p.default, p.default, p.default
                ),
            ));
        }
        Ok(peak_flops)
    }
}

/// The checks of one hardware file, each error naming the file and the key.
struct Checks<'a> {
    origin: &'a str,
}

impl Checks<'_> {
    fn err(&self, key: &str, message: String) -> ProfileError {
        ProfileError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message,
        }
    }

    fn positive(&self, key: &str, v: f64) -> Result<f64, ProfileError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.err(key, format!("must be a finite number > 0, got {v}")))
        }
    }

    fn interconnect(&self, i: &RawInterconnect) -> Result<Interconnect, ProfileError> {
        let bytes_per_s =
            self.positive("interconnect.bandwidth_gb_per_s", i.bandwidth_gb_per_s)? * 1e9;
        if i.chips_per_pod == 0 {
            return Err(self.err(
                "interconnect.chips_per_pod",
                "must be at least 1, got 0".into(),
            ));
        }
        Ok(Interconnect {
            bytes_per_s,
            topology: i.topology.clone(),
            chips_per_pod: i.chips_per_pod,
        })
    }

    /// The default utilisation in (0, 1] and PUE of at least 1.
    fn defaults(&self, d: &RawDefaults) -> Result<(f64, f64), ProfileError> {
        let u = d.utilization;
        if !(u.is_finite() && u > 0.0 && u <= 1.0) {
            return Err(self.err(
                "defaults.utilization",
                format!("must be in (0, 1], got {u}"),
            ));
        }
        let pue = d.pue;
        if !(pue.is_finite() && pue >= 1.0) {
            return Err(self.err(
                "defaults.pue",
                format!("must be a finite number >= 1, got {pue}"),
            ));
        }
        Ok((u, pue))
    }

    /// A cpu profile needs its [cpu] table; where one is given, it must be sound.
    fn cpu(&self, cpu: Option<&CpuPower>, kind: HardwareKind) -> Result<(), ProfileError> {
        match (cpu, kind) {
            (None, HardwareKind::Cpu) => Err(self.err(
                "cpu",
                "missing: a cpu profile needs [cpu] cores, busy_w_per_core, idle_w".into(),
            )),
            (Some(c), _) => {
                if c.cores == 0 {
                    return Err(self.err("cpu.cores", "must be at least 1, got 0".into()));
                }
                self.positive("cpu.busy_w_per_core", c.busy_w_per_core)?;
                if !(c.idle_w.is_finite() && c.idle_w >= 0.0) {
                    return Err(self.err(
                        "cpu.idle_w",
                        format!("must be a finite number >= 0, got {}", c.idle_w),
                    ));
                }
                Ok(())
            }
            (None, _) => Ok(()),
        }
    }
}

impl HardwareProfile {
    /// Peak FLOP/s per chip at the default precision.
    pub fn peak(&self) -> f64 {
        self.peak_flops[&self.default_precision]
    }

    /// Peak FLOP/s per chip at `p`, if published.
    pub fn peak_at(&self, p: Precision) -> Option<f64> {
        self.peak_flops.get(&p).copied()
    }

    /// The power a projection uses when none is given: measured system power per chip where
    /// published (Patterson et al.'s method), else the CPU estimate for a CPU, else the chip's TDP.
    pub fn default_power(&self) -> PowerFigure {
        if let Some(w) = self.system_w_per_chip {
            return PowerFigure {
                watts: w,
                scope: PowerScope::SystemPerChip,
            };
        }
        if let Some(c) = &self.cpu {
            return PowerFigure {
                watts: c.idle_w + c.cores as f64 * c.busy_w_per_core,
                scope: PowerScope::CpuEstimate,
            };
        }
        PowerFigure {
            // resolve() refuses a profile with none of the three.
            watts: self.tdp_w.unwrap_or(f64::NAN),
            scope: PowerScope::ChipTdp,
        }
    }
}

/// Parse and resolve a hardware profile from its text.
pub fn parse_hardware(text: &str, origin: &str) -> Result<HardwareProfile, ProfileError> {
    super::parse_toml::<RawHardwareProfile>(text, origin)?.resolve(origin)
}

/// Load and resolve a hardware profile by name (`tpu-v4`) or path (`my/chip.toml`).
pub fn load_hardware(name_or_path: &str) -> Result<HardwareProfile, ProfileError> {
    let t = super::find(super::Kind::Hardware, name_or_path)?;
    parse_hardware(&t.text, &t.origin)
}

/// Names of every hardware profile (embedded, `./hardware/`, `$SPARSEWATT_HARDWARE`).
pub fn hardware_names() -> Vec<String> {
    super::names(super::Kind::Hardware)
}

/// Every hardware profile, in name order; the first that fails to load is the error.
pub fn load_all_hardware() -> Result<Vec<HardwareProfile>, ProfileError> {
    hardware_names().iter().map(|n| load_hardware(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> String {
        super::super::find(super::super::Kind::Hardware, "tpu-v4")
            .unwrap()
            .text
    }

    fn err_of(text: &str) -> String {
        parse_hardware(text, "bad.toml").unwrap_err().to_string()
    }

    #[test]
    fn every_shipped_profile_loads() {
        let names = hardware_names();
        for want in [
            "tpu-v2",
            "tpu-v3",
            "tpu-v4",
            "tpu-v5e",
            "tpu-v5p",
            "v100",
            "a100-80gb",
            "h100-sxm",
            "h200",
            "b200",
            "cpu-generic",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        for n in names {
            let h = load_hardware(&n).unwrap();
            assert_eq!(h.name, n, "file name and name field differ");
            assert!(h.default_power().watts > 0.0);
        }
    }

    #[test]
    fn tpu_v4_is_in_si_units_with_glam_system_power() {
        let h = load_hardware("tpu-v4").unwrap();
        assert_eq!(h.peak(), 275e12);
        assert_eq!(h.memory_bytes_per_s, 1200e9);
        let p = h.default_power();
        assert_eq!((p.watts, p.scope), (326.0, PowerScope::SystemPerChip));
    }

    #[test]
    fn cpu_generic_power_is_idle_plus_busy_cores() {
        let h = load_hardware("cpu-generic").unwrap();
        let c = h.cpu.clone().unwrap();
        let p = h.default_power();
        assert_eq!(p.scope, PowerScope::CpuEstimate);
        assert!((p.watts - (c.idle_w + c.cores as f64 * c.busy_w_per_core)).abs() < 1e-12);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = err_of(&format!("{}\nfrobnicate = 3\n", v4()));
        assert!(e.contains("bad.toml") && e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn missing_table_is_named() {
        let text: String = v4().replace("[memory]", "[memory_gone]");
        let e = err_of(&text);
        assert!(e.contains("bad.toml") && e.contains("memory"), "{e}");
    }

    #[test]
    fn default_precision_without_a_peak_is_named() {
        let e = err_of(&v4().replace("default = \"bf16\"", "default = \"fp8\""));
        assert!(
            e.contains("`peak_tflops.default`") && e.contains("fp8"),
            "{e}"
        );
    }

    #[test]
    fn utilization_above_one_is_named() {
        let text = v4().replace("utilization = ", "utilization = 1.5 #");
        let e = err_of(&text);
        assert!(
            e.contains("`defaults.utilization`") && e.contains("1.5"),
            "{e}"
        );
    }

    #[test]
    fn pue_below_one_is_named() {
        let e = err_of(&v4().replace("pue = ", "pue = 0.9 #"));
        assert!(e.contains("`defaults.pue`") && e.contains("0.9"), "{e}");
    }

    #[test]
    fn negative_bandwidth_is_named() {
        let text = v4().replacen("bandwidth_gb_per_s = ", "bandwidth_gb_per_s = -1 #", 1);
        let e = err_of(&text);
        assert!(e.contains("`memory.bandwidth_gb_per_s`"), "{e}");
    }

    #[test]
    fn cpu_kind_without_cpu_table_is_named() {
        let text = v4().replace("kind = \"tpu\"", "kind = \"cpu\"");
        let e = err_of(&text);
        assert!(e.contains("`cpu`") && e.contains("cores"), "{e}");
    }
}
