//! `sparsewatt run`: the measured run, sparse against dense. The dashboard when standard output
//! is a terminal, headless (progress on standard error, summary at the end) otherwise or with
//! `--headless`. This file parses and prints; the run itself is
//! [`sparsewatt::workload::RunSession`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sparsewatt::accounting::Baseline;
use sparsewatt::meter::{GpuSelector, SensorChoice};
use sparsewatt::profile::load_model;
use sparsewatt::runlog::{RunSummary, StepRecord};
use sparsewatt::vocab::Phase;
use sparsewatt::workload::run::{Preset, Progress, DEFAULT_MAX_LENGTHEN_S, DEFAULT_MIN_WINDOWS};
use sparsewatt::workload::session::stop_on_signals;
use sparsewatt::workload::{InferenceShape, MetricsFeed, RunSession, SessionConfig, SessionHooks};

use super::{at_least_one, bad_input, loss, nonnegative_seconds, sample_hz};

#[derive(clap::Args)]
pub struct Args {
    /// The sparse model (a profile name or a .toml path).
    #[arg(long, default_value = "glam-tiny")]
    model: String,
    /// The dense baseline: `matched` (the dense model with the sparse model's training FLOPs per
    /// token, by a wider FFN: GLaM's comparison), `same-shape` (the profile's `dense_baseline`:
    /// one expert's width, fewer FLOPs per token), or a profile name or path.
    #[arg(long, default_value = "matched", value_parser = baseline)]
    baseline: Baseline,
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
    #[arg(long, value_name = "L", value_parser = loss)]
    until_loss: Option<f64>,
    /// The validation loss the energy-to-target figures use [default: --until-loss, else the
    /// lowest loss both models reached].
    #[arg(long, value_name = "L", value_parser = loss)]
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
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    batch: usize,
    /// Sequences served together in prefill and decode.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    infer_batch: usize,
    /// Prompt tokens per sequence in prefill.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    prompt_len: usize,
    /// New tokens per sequence in one decode step.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    decode_tokens: usize,
    /// Seconds of idle measurement before the workload and again after it (the baseline power).
    #[arg(long, default_value_t = 2.0, value_parser = nonnegative_seconds)]
    idle_seconds: f64,
    /// Validate both models every N training steps (and after the last) [default: the preset's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: Option<u64>,
    /// The run folder, new or empty [default: runs/<UTC time>.<ms>-<suffix>]. A folder that
    /// holds files is refused: a run does not resume (the folder keeps measurements, not the
    /// models' weights and optimiser state).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Energy sensor: auto (the device doing the work: NVML on the model's GPU for a GPU run;
    /// RAPL, then the estimate, for a CPU run), nvml (forced, on every GPU or those of
    /// --nvml-gpu), rapl or estimate.
    #[arg(long, value_enum, default_value_t = SensorArg::Auto)]
    sensor: SensorArg,
    /// GPUs `--sensor nvml` meters: NVML indices or GPU-... UUIDs, comma-separated [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    nvml_gpu: Vec<GpuSelector>,
    /// Windows per model a phase is lengthened to fill when its steps are too short for the
    /// sensor's counter (each window spans at least 20 counter updates).
    #[arg(long, default_value_t = DEFAULT_MIN_WINDOWS)]
    min_windows: u64,
    /// The most seconds that lengthening may add to one phase; a phase that needs more keeps its
    /// steps and its energy figure is reported as unresolved.
    #[arg(long, default_value_t = DEFAULT_MAX_LENGTHEN_S, value_parser = nonnegative_seconds)]
    max_lengthen_s: f64,
    /// CPU hardware profile whose watts the estimate uses (see `sparsewatt hardware`).
    #[arg(long, default_value = "cpu-generic")]
    hardware: String,
    /// Sensor readings per second, in (0, 1000].
    #[arg(long, default_value_t = 10.0, value_parser = sample_hz)]
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
    /// How many Prometheus servers scrape the run (an HA pair: 2): after it ends, the metrics are
    /// served until that many scrapes have read the final values, 15 s at most.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "metrics",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    metrics_scrapers: u64,
}

fn baseline(s: &str) -> Result<Baseline, std::convert::Infallible> {
    Ok(Baseline::parse(s))
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

/// `--sensor`: clap lists the values in `--help` and refuses others before anything runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SensorArg {
    Auto,
    Nvml,
    Rapl,
    Estimate,
}

impl From<SensorArg> for SensorChoice {
    fn from(s: SensorArg) -> SensorChoice {
        match s {
            SensorArg::Auto => SensorChoice::Auto,
            SensorArg::Nvml => SensorChoice::Nvml,
            SensorArg::Rapl => SensorChoice::Rapl,
            SensorArg::Estimate => SensorChoice::Estimate,
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

/// The session's configuration from the flags.
fn config(a: Args) -> anyhow::Result<SessionConfig> {
    let preset = Preset::from(a.preset);
    let sparse = load_model(&a.model)?;
    let dense = a.baseline.profile(&sparse)?;
    let mut c = SessionConfig::new(sparse, dense, super::estimate_params(&a.hardware)?);
    c.train_steps = a.steps.unwrap_or(preset.steps());
    c.warmup_steps = a.warmup;
    c.eval_every = a.eval_every.unwrap_or(preset.eval_every());
    (c.prefill_steps, c.decode_steps, c.batch) = (a.prefill_steps, a.decode_steps, a.batch);
    c.inference = InferenceShape {
        batch: a.infer_batch,
        prompt_len: a.prompt_len,
        decode_tokens_per_step: a.decode_tokens,
    };
    (c.idle_seconds, c.until_loss, c.target_loss) = (a.idle_seconds, a.until_loss, a.target_loss);
    (c.out, c.sensor, c.nvml_gpus) = (a.out, a.sensor.into(), a.nvml_gpu);
    (c.min_windows, c.max_lengthen_s, c.sample_hz) = (a.min_windows, a.max_lengthen_s, a.sample_hz);
    (c.data, c.seed, c.gpu) = (a.data, a.seed, a.gpu);
    c.command = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(c)
}

/// One line on where the run goes and what measures it.
fn announce(session: &RunSession) {
    for n in session.notes() {
        eprintln!("{n}");
    }
    let h = session.header();
    let s = &h.sensor;
    eprintln!(
        "run folder {}; energy source {} ({}){}{}",
        session.dir().display(),
        s.source,
        s.scope,
        match s.update_period_s {
            Some(p) => format!(
                "; counter updates every {:.1} ms: windows of at least {:.2} s",
                p * 1e3,
                p * sparsewatt::meter::SAFE_UPDATES_PER_WINDOW
            ),
            None => String::new(),
        },
        if s.fallbacks.is_empty() {
            String::new()
        } else {
            format!("; not used: {}", s.fallbacks.join("; "))
        }
    );
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dashboard = !a.headless && std::io::stdout().is_terminal();
    // Bound before the run starts: a bad address or a port in use fails before anything runs.
    let metrics = (a.metrics.as_deref())
        .map(MetricsFeed::bind)
        .transpose()
        .map_err(|e| bad_input("--metrics", e))?;
    let scrapers = a.metrics_scrapers;
    let cfg = config(a)?;
    let mut hooks = SessionHooks {
        progress: (!dashboard).then(|| {
            Box::new(StderrProgress {
                start: Instant::now(),
            }) as Box<dyn Progress + Send>
        }),
        events: dashboard,
        ..SessionHooks::default()
    };
    if let Some(m) = &metrics {
        hooks.observers.push(Box::new(m.clone()));
    }
    let mut session = RunSession::start(cfg, hooks)?;
    announce(&session);
    let dir = session.dir().to_path_buf();
    let stop = session.stop_flag();
    // SIGINT, SIGTERM and SIGHUP end the run cleanly between two steps, with its summary; the
    // dashboard then closes and restores the terminal. A second signal aborts (exit 130).
    let _ = stop_on_signals(stop.clone(), move |again| {
        if again {
            if dashboard {
                sparsewatt::tui::restore_terminal();
            }
            std::process::exit(130);
        }
        if !dashboard {
            eprintln!("stopping after the current step (a second signal aborts)");
        }
    });
    let summary = match session.events() {
        Some(rx) => {
            let ui = sparsewatt::tui::dashboard(rx, stop.clone());
            stop.store(true, Ordering::SeqCst);
            let r = session.wait();
            ui?;
            r?
        }
        None => session.wait()?,
    };
    let done = finish(&dir, &summary);
    if let Some(m) = metrics {
        m.linger(sparsewatt::metrics::LINGER, scrapers);
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
