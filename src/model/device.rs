//! Which device the model runs on, what the driver calls it, and the CPU runtime's settings.

use candle_core::{Device, Result};

/// The device to run on: the first CUDA GPU when built with `cuda` and one is present, else the
/// CPU; with a description and, on fallback, the reason.
pub fn pick_device(want_gpu: bool) -> (Device, String, Option<String>) {
    if want_gpu && cfg!(feature = "cuda") {
        match open_cuda(0) {
            Ok(d) => {
                let name = describe_device(&d);
                return (d, name, None);
            }
            Err(e) => {
                return (
                    Device::Cpu,
                    "cpu".into(),
                    Some(format!("no usable CUDA GPU ({e}); running on the CPU")),
                )
            }
        }
    }
    (Device::Cpu, "cpu".into(), None)
}

/// A CUDA device set up for a training loop that candle drives from more than one thread:
/// - one dedicated stream (`new_cuda_with_stream`): every op of the device is queued on it
///   whichever thread submits it. candle's default, the per-thread stream, would put the work
///   of different threads (the model's forward runs on the CPU kernels' rayon pool) on different
///   streams that do not wait for each other.
/// - no event tracking: with a single stream the queue orders every use of every buffer, and the
///   two CUDA events cudarc otherwise creates and destroys for each allocation cost host time
///   on each of the thousands of ops of a step.
/// - a memory pool that keeps what it was given: cudarc allocates from CUDA's default stream-
///   ordered pool, which by default returns freed memory to the system at each synchronisation
///   (a step has several), so the next step maps it again.
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let device = Device::new_cuda_with_stream(ordinal)?;
    if let Device::Cuda(d) = &device {
        // SAFETY: the device has one stream, and every buffer is created, used and freed in
        // that stream's order (the contract `disable_event_tracking` asks for); no buffer
        // exists yet that was made with tracking.
        unsafe { d.disable_event_tracking() };
        let stream = d.cuda_stream();
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut keep: u64 = u64::MAX;
        // SAFETY: plain driver calls on a valid device handle, with pointers to locals.
        let rc = unsafe {
            match sys::cuDeviceGetDefaultMemPool(&mut pool, stream.context().cu_device()) {
                sys::CUresult::CUDA_SUCCESS => sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut keep as *mut u64).cast(),
                ),
                other => other,
            }
        };
        if rc != sys::CUresult::CUDA_SUCCESS {
            eprintln!("warning: the CUDA memory pool keeps releasing memory ({rc:?})");
        }
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
}

/// What the CUDA driver says of the GPU a device runs on: its name ("NVIDIA H200") and UUID in
/// NVML's spelling ("GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"), by which NVML finds the same
/// board whatever the ordinals. `None` on the CPU or where the driver does not answer.
pub fn gpu_identity(device: &Device) -> Option<GpuIdentity> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let stream = d.cuda_stream();
        let ctx = stream.context();
        let name = ctx.name().ok()?;
        let b: Vec<u8> = ctx.uuid().ok()?.bytes.iter().map(|&x| x as u8).collect();
        return Some(GpuIdentity {
            name,
            uuid: nvml_uuid(&b),
            ordinal: ctx.ordinal(),
        });
    }
    let _ = device;
    None
}

/// How the run header and `bench` name a device: "cpu", or "cuda:N" and the GPU's name
/// ("cuda:0 NVIDIA H200"), by which calibration finds the GPU's hardware profile.
pub fn describe_device(device: &Device) -> String {
    match gpu_identity(device) {
        Some(g) => format!("cuda:{} {}", g.ordinal, g.name),
        None if device.is_cuda() => "cuda:0".into(),
        None => "cpu".into(),
    }
}

/// A GPU as [`gpu_identity`] gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuIdentity {
    pub name: String,
    pub uuid: String,
    /// The CUDA ordinal (which is NVML's index only when CUDA_VISIBLE_DEVICES does not reorder).
    pub ordinal: usize,
}

/// NVML's spelling of a 16-byte device UUID: "GPU-" and the bytes in hex, grouped 8-4-4-4-12.
pub fn nvml_uuid(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = String::from("GPU-");
    let mut at = 0;
    for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(hex.get(at..at + len).unwrap_or(""));
        at += len;
    }
    out
}

/// Spin budget of candle's CPU worker threads before they park, unless the user set
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT`. candle's default (25,000 spins) keeps a worker busy between
/// elementwise ops, where on a 2-core machine it competes with the matmul threads; a short spin
/// measured 1.3x faster training here (docs/performance.md). Call before the first tensor op.
///
/// Also fixes `RAYON_NUM_THREADS`, unless the user set it, to the count rayon uses by default:
/// without it candle works its thread count out afresh on every CPU matmul by reading
/// `/proc/cpuinfo`, which made batch-1 decoding 2-3x slower here (docs/performance.md).
///
/// Also tells mimalloc (the binary's allocator) never to return freed memory to the OS: candle
/// allocates every op's output afresh, and pages handed back are zeroed by the kernel when touched
/// again, which cost a model with 64 experts a fifth of its training step here.
pub fn tune_cpu_runtime() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, "200");
    }
    const THREADS: &str = "RAYON_NUM_THREADS";
    if std::env::var_os(THREADS).is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var(THREADS, n.to_string());
    }
    keep_freed_memory();
}

fn keep_freed_memory() {
    extern "C" {
        fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
    }
    // `mi_option_purge_delay` in the mimalloc sources that libmimalloc-sys builds (mimalloc.h, the
    // same index in v2 and v3);
    // -1 means never purge.
    const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
    // SAFETY: mi_option_set only stores an integer option; it is safe to call at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
