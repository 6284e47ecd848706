//! This machine's peak, measured: square matmuls through candle's `Tensor::matmul`, the path every
//! matmul of the model takes (the `gemm` crate on all of rayon's threads for f32 on the CPU, cuBLAS
//! for bf16 on a GPU). Warm-up products first, then the best of several timed ones: the best is the
//! rate the hardware can reach, the median says how much the machine swings.
//!
//! A run takes its peak from a per-machine cache (`peaks.json` under the user's cache directory),
//! keyed by the CPU's vendor, family, model, stepping, flags and core count plus the device and
//! dtype, or probes briefly at its start and fills the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::runlog::{unix_now, PeakMeasurement, RunPeak, FROM_CACHE, FROM_PROBE};

/// Overrides where the peak cache lives (a directory); tests point it at a temporary one.
pub const CACHE_DIR_ENV: &str = "SPARSEWATT_CACHE_DIR";
pub const CACHE_FILE: &str = "peaks.json";

/// Size and repetitions of a probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    /// The product is (n x n) x (n x n).
    pub n: usize,
    pub warmup: usize,
    pub repetitions: usize,
}

impl ProbeConfig {
    /// `hardware --probe` on the CPU: about a second on 2 cores at 450 GFLOP/s.
    pub const CPU: ProbeConfig = ProbeConfig {
        n: 2048,
        warmup: 2,
        repetitions: 10,
    };
    /// At a run's start, on the CPU, when the cache has no entry: a fraction of a second.
    pub const CPU_QUICK: ProbeConfig = ProbeConfig {
        n: 1024,
        warmup: 2,
        repetitions: 8,
    };
    /// bf16 on a GPU: 1.1 TFLOP a product, about 1.5 ms on an H100/H200 at full speed.
    pub const GPU: ProbeConfig = ProbeConfig {
        n: 8192,
        warmup: 5,
        repetitions: 30,
    };

    /// The configuration for a device, quick (at a run's start) or not.
    pub fn for_device(device: &Device, quick: bool) -> ProbeConfig {
        match (device.is_cpu(), quick) {
            (true, true) => ProbeConfig::CPU_QUICK,
            (true, false) => ProbeConfig::CPU,
            (false, _) => ProbeConfig::GPU,
        }
    }
}

/// The dtype the model computes in on a device: f32 on the CPU (candle widens bf16 there), bf16
/// on a GPU.
pub fn model_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// "f32" or "bf16" (candle's names).
pub fn dtype_label(d: DType) -> &'static str {
    d.as_str()
}

/// FLOPs of one (n x n) x (n x n) product: a multiply-add is 2 FLOPs.
pub fn matmul_flops(n: usize) -> f64 {
    2.0 * (n as f64).powi(3)
}

/// Threads of a CPU matmul: candle's count (`RAYON_NUM_THREADS`, else the cores).
pub fn matmul_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Measure the matmul peak of `device` in `dtype`. `device_name` is recorded as given.
pub fn probe(
    device: &Device,
    device_name: &str,
    dtype: DType,
    cfg: ProbeConfig,
) -> candle_core::Result<PeakMeasurement> {
    if cfg.n == 0 || cfg.repetitions == 0 {
        candle_core::bail!("a probe needs n >= 1 and at least one repetition");
    }
    let n = cfg.n;
    // Values in [-1, 1): no denormals, no overflow in bf16 over a long inner dimension.
    let a = Tensor::rand(-1f32, 1f32, (n, n), device)?.to_dtype(dtype)?;
    let b = Tensor::rand(-1f32, 1f32, (n, n), device)?.to_dtype(dtype)?;
    device.synchronize()?;
    let mut secs = Vec::with_capacity(cfg.repetitions);
    for i in 0..cfg.warmup + cfg.repetitions {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        // A GPU's kernels run asynchronously: the clock is read once the product is done.
        device.synchronize()?;
        let s = t.elapsed().as_secs_f64();
        drop(c);
        if i >= cfg.warmup {
            secs.push(s);
        }
    }
    secs.sort_by(f64::total_cmp);
    let best_s = secs[0].max(f64::MIN_POSITIVE);
    let median_s = if secs.len() % 2 == 1 {
        secs[secs.len() / 2]
    } else {
        0.5 * (secs[secs.len() / 2 - 1] + secs[secs.len() / 2])
    };
    Ok(PeakMeasurement {
        peak_flops_per_s: matmul_flops(n) / best_s,
        dtype: dtype_label(dtype).into(),
        device: device_name.into(),
        n,
        warmup: cfg.warmup,
        repetitions: cfg.repetitions,
        best_s,
        median_s,
        threads: matmul_threads(),
        measured_unix_s: unix_now(),
        memory_bytes_per_s: device
            .is_cpu()
            .then(|| probe_bandwidth(BANDWIDTH_ELEMENTS, cfg.warmup.max(1), cfg.repetitions)),
    })
}

/// Elements of each of the probe's two f32 arrays: 2 x 64 MiB, far beyond any CPU's caches.
pub const BANDWIDTH_ELEMENTS: usize = 1 << 24;

/// Memory bandwidth on all of rayon's threads, bytes/s: the best of `repetitions` passes (after
/// `warmup`) of the in-place update `a += s b` over arrays of `n` f32, 12 bytes an element (two
/// arrays read, one written back). In place, like the optimiser's update, so no write-allocate
/// read goes uncounted (STREAM's triad into a third array moves 16 bytes and counts 12).
pub fn probe_bandwidth(n: usize, warmup: usize, repetitions: usize) -> f64 {
    use rayon::prelude::*;
    let b = vec![2.0f32; n];
    let mut a = vec![1.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
    let mut best = f64::INFINITY;
    for i in 0..warmup + repetitions.max(1) {
        let t = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .for_each(|(a, b)| {
                for (a, b) in a.iter_mut().zip(b) {
                    // Stays finite and normal for any number of passes: 1 + 2k x 1e-7.
                    *a += 1e-7 * b;
                }
            });
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(&a);
        if i >= warmup {
            best = best.min(s);
        }
    }
    3.0 * 4.0 * n as f64 / best.max(f64::MIN_POSITIVE)
}

/// What identifies a CPU for the cache: `/proc/cpuinfo`'s first processor and the cores usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuIdentity {
    pub vendor: String,
    pub family: String,
    pub model: String,
    pub stepping: String,
    pub flags: String,
    pub cores: usize,
}

impl CpuIdentity {
    /// Parse the text of `/proc/cpuinfo` (the first processor's fields).
    pub fn from_cpuinfo(text: &str, cores: usize) -> CpuIdentity {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        CpuIdentity {
            vendor: field("vendor_id"),
            family: field("cpu family"),
            model: field("model"),
            stepping: field("stepping"),
            // The order of flags is the kernel's; sorted so a reordering is the same machine.
            flags: {
                let f = field("flags");
                let mut v: Vec<&str> = f.split_whitespace().collect();
                v.sort_unstable();
                v.join(" ")
            },
            cores,
        }
    }

    /// This machine's CPU.
    pub fn detect() -> CpuIdentity {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut id = CpuIdentity::from_cpuinfo(&text, cores);
        if id.vendor.is_empty() {
            id.vendor = std::env::consts::ARCH.into();
        }
        id
    }

    /// The cache key: readable fields, the flags as a 64-bit FNV-1a hash (they run to 1,000+ bytes).
    pub fn key(&self) -> String {
        format!(
            "{}/family {}/model {}/stepping {}/flags {:016x}/cores {}",
            self.vendor,
            self.family,
            self.model,
            self.stepping,
            fnv1a64(self.flags.as_bytes()),
            self.cores
        )
    }
}

/// FNV-1a, 64 bits: a stable hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The cache entry's key for a device and dtype on this CPU with `threads` matmul threads.
pub fn cache_key(cpu: &CpuIdentity, device_name: &str, dtype: &str, threads: usize) -> String {
    format!(
        "{}/threads {threads}/device {device_name}/{dtype}",
        cpu.key()
    )
}

/// `$SPARSEWATT_CACHE_DIR`, else `$XDG_CACHE_HOME/sparsewatt`, else `~/.cache/sparsewatt`.
pub fn cache_dir() -> Option<PathBuf> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    non_empty(CACHE_DIR_ENV)
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("sparsewatt")))
        .or_else(|| non_empty("HOME").map(|d| d.join(".cache").join("sparsewatt")))
}

fn read_cache(path: &std::path::Path) -> BTreeMap<String, PeakMeasurement> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The peak cached under `key` in the cache directory `dir`, if any.
pub fn cached(dir: &Path, key: &str) -> Option<PeakMeasurement> {
    read_cache(&dir.join(CACHE_FILE)).remove(key)
}

/// Store a measurement under `key` in the cache directory `dir` (replacing an older one; other
/// keys are kept). Returns the file written.
pub fn store(dir: &Path, key: &str, m: &PeakMeasurement) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(CACHE_FILE);
    let mut all = read_cache(&path);
    all.insert(key.to_string(), m.clone());
    let tmp = dir.join(format!("{CACHE_FILE}.{}.tmp", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&all).expect("peaks serialise"),
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// This machine's cache key for a probe of `device` in `dtype`.
pub fn this_machine_key(device_name: &str, dtype: DType) -> String {
    cache_key(
        &CpuIdentity::detect(),
        device_name,
        dtype_label(dtype),
        matmul_threads(),
    )
}

/// The peak a run on `device` uses: the cached one for this machine, else a quick probe (stored in
/// the cache for the next run). A cache that cannot be written is reported in the returned note.
pub fn run_peak(device: &Device, device_name: &str) -> candle_core::Result<(RunPeak, Vec<String>)> {
    let dtype = model_dtype(device);
    let key = this_machine_key(device_name, dtype);
    let dir = cache_dir();
    let mut notes = Vec::new();
    if let Some(m) = dir.as_deref().and_then(|d| cached(d, &key)) {
        // An entry from before the bandwidth was measured is measured again on the CPU.
        let complete = !device.is_cpu() || m.memory_bytes_per_s.is_some();
        if m.peak_flops_per_s.is_finite() && m.peak_flops_per_s > 0.0 && complete {
            return Ok((peak_of(m, FROM_CACHE), notes));
        }
    }
    let m = probe(
        device,
        device_name,
        dtype,
        ProbeConfig::for_device(device, true),
    )?;
    match &dir {
        Some(d) => {
            if let Err(e) = store(d, &key, &m) {
                notes.push(format!(
                    "the measured peak was not cached in {}: {e}",
                    d.display()
                ));
            }
        }
        None => notes.push(format!(
            "the measured peak was not cached: no cache directory (set {CACHE_DIR_ENV})"
        )),
    }
    Ok((peak_of(m, FROM_PROBE), notes))
}

/// A measurement as a run's peak, with where it came from.
pub fn peak_of(m: PeakMeasurement, from: &str) -> RunPeak {
    RunPeak {
        flops_per_s: m.peak_flops_per_s,
        dtype: m.dtype.clone(),
        from: from.into(),
        measurement: Some(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n\
        model\t\t: 2\nmodel name\t: AMD EPYC 9R45\nstepping\t: 1\nflags\t\t: fpu sse avx512f avx2\n\n\
        processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n";

    #[test]
    fn the_cpu_is_identified_by_vendor_family_model_stepping_flags_and_cores() {
        let id = CpuIdentity::from_cpuinfo(CPUINFO, 2);
        assert_eq!(
            (
                id.vendor.as_str(),
                id.family.as_str(),
                id.model.as_str(),
                id.stepping.as_str(),
                id.cores
            ),
            ("AuthenticAMD", "26", "2", "1", 2)
        );
        assert_eq!(id.flags, "avx2 avx512f fpu sse");
        // Another flag, another core count or another stepping is another machine; the flags'
        // order is not.
        let reordered = CpuIdentity::from_cpuinfo(&CPUINFO.replace("fpu sse", "sse fpu"), 2);
        assert_eq!(reordered.key(), id.key());
        for other in [
            CpuIdentity::from_cpuinfo(&CPUINFO.replace("avx2", "avx2 amx"), 2),
            CpuIdentity::from_cpuinfo(CPUINFO, 4),
            CpuIdentity::from_cpuinfo(&CPUINFO.replace("stepping\t: 1", "stepping\t: 0"), 2),
        ] {
            assert_ne!(other.key(), id.key());
        }
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (isthe.com/chongo/tech/comp/fnv): "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn a_probe_times_the_product_it_counts() {
        let cfg = ProbeConfig {
            n: 96,
            warmup: 1,
            repetitions: 5,
        };
        let m = probe(&Device::Cpu, "cpu", DType::F32, cfg).unwrap();
        assert_eq!((m.n, m.repetitions, m.dtype.as_str()), (96, 5, "f32"));
        assert!(m.best_s > 0.0 && m.best_s <= m.median_s);
        // Independent of the probe's arithmetic: 2 n^3 multiply-adds' FLOPs over the best time.
        assert!((m.peak_flops_per_s * m.best_s - 2.0 * 96f64.powi(3)).abs() < 1.0);
        // The bandwidth beside it, in bytes/s: above any DRAM of this century's 1 GB/s, below
        // the 10 TB/s no CPU socket reaches (a figure in GB/s or bits would fall outside).
        let bw = m.memory_bytes_per_s.unwrap();
        assert!((1e9..1e13).contains(&bw), "{bw}");
        let bf = probe(&Device::Cpu, "cpu", DType::BF16, cfg).unwrap();
        assert_eq!(bf.dtype, "bf16");
        assert!(probe(
            &Device::Cpu,
            "cpu",
            DType::F32,
            ProbeConfig {
                repetitions: 0,
                ..cfg
            }
        )
        .is_err());
    }

    #[test]
    fn the_cache_keeps_one_entry_per_key_and_survives_a_garbled_file() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("sw-peak-cache-");
        let _ = std::fs::remove_dir_all(&dir);
        let m = |peak: f64| PeakMeasurement {
            peak_flops_per_s: peak,
            dtype: "f32".into(),
            device: "cpu".into(),
            n: 8,
            warmup: 0,
            repetitions: 1,
            best_s: 1.0,
            median_s: 1.0,
            threads: 2,
            measured_unix_s: 0.0,
            memory_bytes_per_s: None,
        };
        assert_eq!(cached(&dir, "a"), None);
        store(&dir, "a", &m(1.0)).unwrap();
        store(&dir, "b", &m(2.0)).unwrap();
        store(&dir, "a", &m(3.0)).unwrap();
        assert_eq!(cached(&dir, "a"), Some(m(3.0)));
        assert_eq!(cached(&dir, "b"), Some(m(2.0)));
        std::fs::write(dir.join(CACHE_FILE), "{not json").unwrap();
        assert_eq!(cached(&dir, "a"), None);
        store(&dir, "a", &m(4.0)).unwrap();
        assert_eq!(cached(&dir, "a"), Some(m(4.0)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
