//! `sparsewatt run`: the measured run, sparse against dense. The dashboard when standard output
//! is a terminal, headless (progress on standard error, summary at the end) otherwise or with
//! `--headless`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::Context;
use sparsewatt::accounting::Baseline;
use sparsewatt::data::Corpus;
use sparsewatt::meter::{
    detect_update_period, open_host_sensor, open_sensor, GpuSelector, Meter, SensorChoice,
    Workplace, DETECT_FOR,
};
use sparsewatt::model::{gpu_identity, pick_device, Model, TrainConfig};
use sparsewatt::profile::{load_model, ModelProfile};
use sparsewatt::project::peak_of_run;
use sparsewatt::runlog::{
    detect_machine, run_id, unix_now, MachineInfo, RunConfig, RunHeader, RunModel, RunPeak,
    RunSummary, RunWriter, SensorInfo, StepRecord, FORMAT_VERSION, FROM_CACHE,
};
use sparsewatt::vocab::{Phase, Role};
use sparsewatt::workload::run::{
    execute, Preset, Progress, RunPlan, DEFAULT_MAX_LENGTHEN_S, DEFAULT_MIN_WINDOWS,
};
use sparsewatt::workload::{InferenceShape, ModelWorkload, RunEvent};

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// The sparse model (a profile name or a .toml path).
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    /// The dense baseline: `matched` (the dense model with the sparse model's training FLOPs per
    /// token, by a wider FFN: GLaM's comparison), `same-shape` (the profile's `dense_baseline`:
    /// one expert's width, fewer FLOPs per token), or a profile name or path.
    #[arg(long, default_value = "matched")]
    baseline: String,
    /// Shape of the run: `default` (200 steps, an eval every 10) or `long` (800 steps, an eval
    /// every 20: where, or whether, the sparse model pulls ahead); durations in docs/report.md.
    #[arg(long, value_enum, default_value_t = PresetArg::Default)]
    preset: PresetArg,
    /// Training steps per model, the first --warmup left out of per-token figures [default: the
    /// preset's]. With --until-loss, the cap.
    #[arg(long)]
    steps: Option<u64>,
    /// Stop rule: train until both models' validation loss is at or below L (nats per token),
    /// --steps at most; both keep training, alternating, until both have reached it.
    #[arg(long, value_name = "L")]
    until_loss: Option<f64>,
    /// The validation loss the energy-to-target figures use [default: --until-loss, else the
    /// lowest loss both models reached].
    #[arg(long, value_name = "L")]
    target_loss: Option<f64>,
    /// Warm-up steps per model [default: 2, or fewer for very short runs].
    #[arg(long)]
    warmup: Option<u64>,
    /// Measured prefill steps per model (each: --infer-batch prompts of --prompt-len tokens).
    #[arg(long, default_value_t = 6)]
    prefill_steps: u64,
    /// Measured decode steps per model (each: --decode-tokens new tokens per sequence).
    #[arg(long, default_value_t = 12)]
    decode_steps: u64,
    /// Sequences per training batch (of the profile's seq_len tokens).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Sequences served together in prefill and decode.
    #[arg(long, default_value_t = 4)]
    infer_batch: usize,
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
    /// Seconds of idle measurement before the workload and again after it (the baseline power).
    #[arg(long, default_value_t = 2.0)]
    idle_seconds: f64,
    /// Validate both models every N training steps (and after the last) [default: the preset's].
    #[arg(long)]
    eval_every: Option<u64>,
    /// The run folder [default: runs/<UTC time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Energy sensor: auto (the device doing the work: NVML on the model's GPU for a GPU run;
    /// RAPL, then the estimate, for a CPU run), nvml (forced, on every GPU or those of
    /// --nvml-gpu), rapl or estimate.
    #[arg(long, default_value = "auto")]
    sensor: String,
    /// GPUs `--sensor nvml` meters: NVML indices or GPU-... UUIDs, comma-separated [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    nvml_gpu: Vec<String>,
    /// Windows per model a phase is lengthened to fill when its steps are too short for the
    /// sensor's counter (each window spans at least 20 counter updates).
    #[arg(long, default_value_t = DEFAULT_MIN_WINDOWS)]
    min_windows: u64,
    /// The most seconds that lengthening may add to one phase; a phase that needs more keeps its
    /// steps and its energy figure is reported as unresolved.
    #[arg(long, default_value_t = DEFAULT_MAX_LENGTHEN_S)]
    max_lengthen_s: f64,
    /// CPU hardware profile whose watts the estimate uses (see `sparsewatt hardware`).
    #[arg(long, default_value = "cpu-generic")]
    hardware: String,
    /// Sensor readings per second.
    #[arg(long, default_value_t = 10.0)]
    sample_hz: f64,
    /// Train on this file instead of the embedded corpus.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// No dashboard even on a terminal: progress on standard error, the summary on standard output.
    #[arg(long)]
    headless: bool,
    /// Run the models on the GPU when built with the `cuda` feature and one is present.
    #[arg(long)]
    gpu: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run lives (e.g. 127.0.0.1:9464;
    /// docs/metrics.md).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PresetArg {
    Default,
    Long,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Preset {
        match p {
            PresetArg::Default => Preset::Default,
            PresetArg::Long => Preset::Long,
        }
    }
}

struct StderrProgress {
    start: Instant,
}

impl Progress for StderrProgress {
    fn step(&mut self, r: &StepRecord) {
        let energy = r
            .energy
            .as_ref()
            .map(|e| format!("{:.2} J ({})", e.joules, e.source))
            .unwrap_or_default();
        let loss = r.loss.map(|l| format!(" loss {l:.4}")).unwrap_or_default();
        eprintln!(
            "[{:>6.1}s] {:<6} {:<7} {:<14} step {:>3}{} {:>5} tokens {:.3} s {}{}",
            self.start.elapsed().as_secs_f64(),
            r.role.to_string(),
            r.phase.label(),
            r.model,
            r.step,
            if r.warmup { " (warm-up)" } else { "" },
            r.tokens,
            r.seconds,
            energy,
            loss
        );
    }

    fn note(&mut self, message: &str) {
        eprintln!("[{:>6.1}s] {message}", self.start.elapsed().as_secs_f64());
    }
}

fn check(a: &Args) -> Result<(), BadInput> {
    let positive = [
        ("--batch", a.batch),
        ("--infer-batch", a.infer_batch),
        ("--prompt-len", a.prompt_len),
        ("--decode-tokens", a.decode_tokens),
    ];
    for (flag, v) in positive {
        if v == 0 {
            return Err(BadInput(format!("{flag} must be at least 1, got 0")));
        }
    }
    if !(a.sample_hz > 0.0 && a.sample_hz <= 1000.0) {
        return Err(BadInput(format!(
            "--sample-hz must be in (0, 1000], got {}",
            a.sample_hz
        )));
    }
    if !(a.max_lengthen_s >= 0.0 && a.max_lengthen_s.is_finite()) {
        return Err(BadInput(format!(
            "--max-lengthen-s must be >= 0, got {}",
            a.max_lengthen_s
        )));
    }
    for (flag, v) in [
        ("--until-loss", a.until_loss),
        ("--target-loss", a.target_loss),
    ] {
        if let Some(l) = v.filter(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(BadInput(format!(
                "{flag} must be a validation loss above 0 (nats per token), got {l}"
            )));
        }
    }
    if !(a.idle_seconds >= 0.0 && a.idle_seconds.is_finite()) {
        return Err(BadInput(format!(
            "--idle-seconds must be >= 0, got {}",
            a.idle_seconds
        )));
    }
    Ok(())
}

/// The measured peak of the device the run uses (cached per machine, else a short probe now);
/// `None`, with a warning, when it cannot be measured: utilisation then uses the profile's peak.
fn this_machines_peak(device: &candle_core::Device, device_name: &str) -> Option<RunPeak> {
    match sparsewatt::project::probe::run_peak(device, device_name) {
        Ok((p, notes)) => {
            for n in notes {
                eprintln!("warning: {n}");
            }
            eprintln!(
                "peak {:.1} GFLOP/s {} ({})",
                p.flops_per_s / 1e9,
                p.dtype,
                if p.from == FROM_CACHE {
                    "from this machine's cache; `sparsewatt hardware --probe` measures it afresh"
                } else {
                    "measured now"
                }
            );
            Some(p)
        }
        Err(e) => {
            eprintln!("warning: the peak probe failed ({e}); utilisation uses the hardware profile's peak");
            None
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    check(&a)?;
    let preset = Preset::from(a.preset);
    let steps = a.steps.unwrap_or(preset.steps());
    let eval_every = a.eval_every.unwrap_or(preset.eval_every()).max(1);
    let sparse_p = load_model(&a.model)?;
    let dense_p = Baseline::parse(&a.baseline).profile(&sparse_p)?;
    let choice: SensorChoice = a
        .sensor
        .parse()
        .map_err(|e| BadInput(format!("--sensor: {e}")))?;
    let corpus = Corpus::load(a.data.as_deref()).map_err(|e| BadInput(e.to_string()))?;
    let named: Vec<GpuSelector> = a
        .nvml_gpu
        .iter()
        .map(|g| g.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| BadInput(format!("--nvml-gpu: {e}")))?;
    let estimate = super::estimate_params(&a.hardware)?;
    // The sensor follows the device: chosen first.
    let (device, device_name, device_fallback) = pick_device(a.gpu);
    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    // Only `auto` needs to know which GPU that is; an explicit choice does not ask.
    // The driver's UUID names the GPU in NVML's terms whatever the ordinals; else the ordinal.
    let by_uuid = gpu_identity(&device).map(|g| Workplace::Gpus(vec![GpuSelector::Uuid(g.uuid)]));
    let workplace =
        match by_uuid.or_else(|| Workplace::of_device(&device_name, cuda_visible.as_deref())) {
            Some(w) => w,
            None if choice != SensorChoice::Auto => Workplace::Gpus(Vec::new()),
            None => {
                return Err(BadInput(format!(
                    "--sensor auto: cannot tell which NVML GPU {device_name} is \
                 (CUDA_VISIBLE_DEVICES={}); use --sensor nvml --nvml-gpu INDEX",
                    cuda_visible.as_deref().unwrap_or("")
                ))
                .into())
            }
        };
    let (mut sensor, mut fallbacks) = open_sensor(choice, &estimate, &workplace, &named)?;
    // A GPU run metered by NVML: the host CPU beside it, by RAPL where readable.
    let host_sensor = match open_host_sensor(choice, sensor.source(), &workplace) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            fallbacks.push(format!("host CPU beside the GPU not metered: {e}"));
            None
        }
        None => None,
    };
    // How often its counter updates: the shortest window it resolves.
    let update_period = detect_update_period(sensor.as_mut(), DETECT_FOR);

    let warmup = a.warmup.unwrap_or(if steps >= 6 { 2 } else { steps / 3 });
    let shape = InferenceShape {
        batch: a.infer_batch,
        prompt_len: a.prompt_len,
        decode_tokens_per_step: a.decode_tokens,
    };
    let workload = |p: &ModelProfile, role: Role| -> anyhow::Result<ModelWorkload> {
        let mut tc = TrainConfig::for_profile(p, steps.max(1));
        tc.batch = a.batch;
        tc.seed = a.seed;
        // Two fixed validation batches keep evaluation short beside the measured steps.
        tc.val_batches = 2;
        let model = Model::new(p, &device, a.seed)?;
        ModelWorkload::new(model, role, &corpus, tc, shape)
            .map_err(|e| BadInput(format!("{e:#}")).into())
    };
    let mut sparse = workload(&sparse_p, Role::Sparse)?;
    let mut dense = workload(&dense_p, Role::Dense)?;

    let started = unix_now();
    let id = run_id(started);
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&id));
    let peak = this_machines_peak(&device, &device_name);
    let epoch = Instant::now();
    let meter = Meter::start(sensor, a.sample_hz, epoch);
    // Windows only: the host's power series is not sampled.
    let host = host_sensor.map(|s| Meter::start(s, 0.0, epoch));
    let header = RunHeader {
        format_version: FORMAT_VERSION,
        id,
        started_unix_s: started,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        sparsewatt_version: env!("CARGO_PKG_VERSION").into(),
        machine: MachineInfo {
            peak,
            ..detect_machine(&device_name, Some(estimate.profile.clone()))
        },
        sensor: SensorInfo {
            source: meter.source(),
            scope: meter.scope(),
            fallbacks,
            sample_hz: a.sample_hz,
            update_period_s: update_period.map(|p| p.period_s),
            update_energy_j: update_period.map(|p| p.energy_j),
            host_scope: host.as_ref().map(Meter::scope),
        },
        models: vec![
            RunModel {
                role: Role::Sparse,
                profile: sparse_p.clone(),
            },
            RunModel {
                role: Role::Dense,
                profile: dense_p.clone(),
            },
        ],
        config: RunConfig {
            train_steps: steps,
            warmup_steps: warmup,
            batch: a.batch,
            seq_len: sparse_p.seq_len,
            prefill_steps: a.prefill_steps,
            prompt_len: a.prompt_len,
            decode_steps: a.decode_steps,
            infer_batch: Some(a.infer_batch),
            decode_tokens_per_step: Some(a.decode_tokens),
            idle_seconds: a.idle_seconds,
            data: corpus.name().to_string(),
            seed: a.seed,
            eval_every: Some(eval_every),
            until_loss: a.until_loss,
            target_loss: a.target_loss,
        },
    };
    // --metrics: served from here on; the records reach it through a tee of the run's events.
    let metrics = (a.metrics.as_deref())
        .map(|addr| sparsewatt::metrics::serve(addr, &header))
        .transpose()
        .map_err(|e| BadInput(format!("--metrics: {e}")))?;
    let observer = metrics.clone();
    let mut writer = RunWriter::create(&dir, &header)
        .with_context(|| format!("creating the run folder {}", dir.display()))?;
    let plan = RunPlan {
        train_steps: steps,
        warmup_steps: warmup,
        prefill_steps: a.prefill_steps,
        decode_steps: a.decode_steps,
        idle_seconds: a.idle_seconds,
        eval_every,
        until_loss: a.until_loss,
        target_loss: a.target_loss,
        peak: peak_of_run(&header),
        update_period,
        min_windows: a.min_windows.max(1),
        max_lengthen_s: a.max_lengthen_s,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let dashboard = !a.headless && std::io::stdout().is_terminal();
    if !dashboard {
        // Ctrl-C ends the run cleanly between two steps, with its summary. In the dashboard, raw
        // mode delivers Ctrl-C as a key instead.
        let s = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if s.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("stopping after the current step (Ctrl-C again to abort)");
        });
    }
    if let Some(f) = &device_fallback {
        eprintln!("warning: {f}");
    }
    eprintln!(
        "run folder {}; energy source {} ({}){}{}",
        dir.display(),
        meter.source(),
        meter.scope(),
        match update_period {
            Some(p) => format!(
                "; counter updates every {:.1} ms: windows of at least {:.2} s",
                p.period_s * 1e3,
                p.min_window_s()
            ),
            None => String::new(),
        },
        if header.sensor.fallbacks.is_empty() {
            String::new()
        } else {
            format!("; not used: {}", header.sensor.fallbacks.join("; "))
        }
    );

    // The measured run and the meter's end, wherever it runs: on this thread, or on its own
    // thread beside the dashboard. The writer is dropped (flushed) with the closure.
    let work = move |events: Option<&mpsc::Sender<RunEvent>>,
                     stop: &AtomicBool,
                     progress: &mut dyn Progress| {
        let tee = observer.as_ref().map(|m| {
            m.tee(events.cloned(), |e: &RunEvent| match e {
                RunEvent::Record(r) => Some(&**r),
                _ => None,
            })
        });
        let events = tee.as_ref().map(|t| t.sender()).or(events);
        let r = execute(
            &plan,
            &mut sparse,
            &mut dense,
            &meter,
            host.as_ref(),
            &mut writer,
            events,
            stop,
            progress,
            epoch,
        );
        meter.stop();
        if let Some(h) = host {
            h.stop();
        }
        r
    };
    let summary = if dashboard {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(RunEvent::Started(Box::new(header.clone())));
        let stop_w = stop.clone();
        let worker = std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || {
                let r = work(Some(&tx), &stop_w, &mut sparsewatt::workload::run::Quiet);
                let _ = tx.send(match &r {
                    Ok(s) => RunEvent::Finished(Box::new(s.clone())),
                    Err(e) => RunEvent::Failed(format!("{e:#}")),
                });
                r
            })?;
        let ui = sparsewatt::tui::dashboard(rx, stop.clone());
        stop.store(true, Ordering::SeqCst);
        let r = worker
            .join()
            .map_err(|_| anyhow::anyhow!("the workload thread panicked"))?;
        ui?;
        r?
    } else {
        let mut progress = StderrProgress { start: epoch };
        work(None, &stop, &mut progress)?
    };
    let done = finish(&dir, &summary);
    if let Some(m) = metrics {
        m.linger(sparsewatt::metrics::LINGER);
    }
    done
}

/// Reports beside the records, and the answer on standard output.
fn finish(dir: &std::path::Path, s: &RunSummary) -> anyhow::Result<()> {
    match sparsewatt::report::write_all(dir) {
        Ok(files) => {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
        Err(e) => eprintln!("warning: no report written: {e:#}"),
    }
    println!("run {} ({})", dir.display(), s.end_reason);
    // The first answer: energy to the same validation loss.
    if let Some(h) = s
        .to_target
        .as_ref()
        .and_then(sparsewatt::report::quality::headline)
    {
        println!("{h}");
    }
    println!(
        "{:<8} {:<8} {:>16} {:>22} {:>14} {:>12}",
        "phase", "role", "model", "J/token (95% CI)", "FLOPs/token", "tokens/s"
    );
    for phase in [Phase::Train, Phase::Prefill, Phase::Decode] {
        for m in &s.models {
            let Some(p) = m.phase(phase) else { continue };
            let j = p
                .joules_per_token
                .as_ref()
                .map(|j| match j.total.half_width() {
                    Some(h) => format!("{:.4} ± {:.4}", j.total.mean, h),
                    None => format!("{:.4}", j.total.mean),
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<8} {:<8} {:>16} {:>22} {:>14.3e} {:>12.0}",
                phase.label(),
                m.role.to_string(),
                m.model,
                j,
                p.flops_per_token,
                p.tokens_per_s.map_or(0.0, |t| t.mean)
            );
        }
    }
    for r in &s.ratios {
        println!(
            "sparse/dense {:<8} J/token {}  FLOPs/token {}",
            r.phase.label(),
            r.joules_per_token.map_or("-".into(), |x| format!("{x:.3}")),
            r.flops_per_token.map_or("-".into(), |x| format!("{x:.3}"))
        );
    }
    if let Some(src) = s.source {
        println!(
            "energy source: {src}{}",
            if src.label() == "estimate" {
                " (an estimate from CPU time and a hardware profile, not a measurement)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
