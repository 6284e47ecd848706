//! `sparsewatt hardware`: the hardware profiles with their key figures, or (`--probe`) this
//! machine's measured matmul peak.

use serde_json::json;
use sparsewatt::model::pick_device;
use sparsewatt::profile::load_all_hardware;
use sparsewatt::project::probe::{
    cache_dir, model_dtype, probe, store, this_machine_key, ProbeConfig,
};
use sparsewatt::project::table;
use sparsewatt::units::{BytesPerSecond, FlopPerSecond, Seconds};

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// Print every profile in full as JSON (SI units: FLOP/s, bytes, bytes/s, W); with --probe,
    /// the measurement as JSON.
    #[arg(long)]
    json: bool,
    /// Measure this machine's peak: f32 matmul on all cores (bf16 on the GPU with --gpu), through
    /// the model's own matmul path; the result is cached for runs on this machine.
    #[arg(long)]
    probe: bool,
    /// With --probe: measure the GPU (needs a build with the `cuda` feature and a GPU).
    #[arg(long, requires = "probe")]
    gpu: bool,
    /// With --probe: the size n of the (n x n) x (n x n) product [default: 2048 on the CPU, 8192
    /// on a GPU].
    #[arg(long, requires = "probe", value_name = "N")]
    size: Option<usize>,
    /// With --probe: timed repetitions (after the warm-up) [default: 10 on the CPU, 30 on a GPU].
    #[arg(long, requires = "probe", value_name = "R")]
    repetitions: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.probe {
        return run_probe(&args);
    }
    let all = load_all_hardware()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print!("{}", table::hardware_table(&all));
    println!(
        "\npeak: dense, per chip, default precision; link: interconnect per chip, each way; \
         power: what projections use unless --power-w is given. Sources: hardware/<name>.toml."
    );
    Ok(())
}

fn run_probe(args: &Args) -> anyhow::Result<()> {
    if matches!(args.size, Some(0)) || matches!(args.repetitions, Some(0)) {
        return Err(BadInput("--size and --repetitions must be at least 1".into()).into());
    }
    let (device, device_name, fallback) = pick_device(args.gpu);
    if args.gpu && device.is_cpu() {
        let why = if cfg!(feature = "cuda") {
            fallback.unwrap_or_else(|| "no CUDA GPU found".into())
        } else {
            "this sparsewatt was built without the `cuda` feature (scripts/build-cuda, or cargo build --release --features cuda)".into()
        };
        return Err(BadInput(format!("--probe --gpu: no GPU to measure: {why}")).into());
    }
    let mut cfg = ProbeConfig::for_device(&device, false);
    cfg.n = args.size.unwrap_or(cfg.n);
    cfg.repetitions = args.repetitions.unwrap_or(cfg.repetitions);
    let dtype = model_dtype(&device);
    let m = probe(&device, &device_name, dtype, cfg)?;
    // Only the default size is what a run would use: a smaller product does not reach the peak.
    let default_size =
        args.size.is_none() || args.size == Some(ProbeConfig::for_device(&device, false).n);
    let cached = match (default_size, cache_dir()) {
        (true, Some(dir)) => match store(&dir, &this_machine_key(&device_name, dtype), &m) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: not cached in {}: {e}", dir.display());
                None
            }
        },
        _ => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&m)?;
        v["flops"] = json!(sparsewatt::project::probe::matmul_flops(m.n));
        v["cache_file"] = json!(cached.as_ref().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "peak {} {} on {} ({} threads)",
        FlopPerSecond(m.peak_flops_per_s),
        m.dtype,
        m.device,
        m.threads
    );
    println!(
        "({n} x {n}) x ({n} x {n}) matmul, best of {} after {} warm-up: {} (median {}, {})",
        m.repetitions,
        m.warmup,
        Seconds(m.best_s),
        Seconds(m.median_s),
        FlopPerSecond(sparsewatt::project::probe::matmul_flops(m.n) / m.median_s),
        n = m.n,
    );
    if let Some(bw) = m.memory_bytes_per_s {
        println!(
            "memory bandwidth {} (a += s b in place over 2 x {} MiB of f32 on {} threads, best pass, 12 bytes an element)",
            BytesPerSecond(bw),
            (sparsewatt::project::probe::BANDWIDTH_ELEMENTS * 4) >> 20,
            m.threads
        );
    }
    if let Some(p) = cached {
        println!("cached in {} for runs on this machine", p.display());
    }
    Ok(())
}
