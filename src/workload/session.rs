//! A measured run as a library user drives it, without the command line:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use sparsewatt::workload::{RunSession, SessionConfig, SessionHooks};
//! let sparse = sparsewatt::profile::load_model("glam-tiny")?;
//! let dense = sparsewatt::accounting::Baseline::Matched.profile(&sparse)?;
//! let estimate = sparsewatt::meter::EstimateParams {
//!     profile: "cpu-generic".into(),
//!     cores: 2,
//!     busy_w_per_core: 10.0,
//!     idle_w: 5.0,
//! };
//! let mut cfg = SessionConfig::new(sparse, dense, estimate);
//! cfg.train_steps = 20;
//! let session = RunSession::start(cfg, SessionHooks::default())?;
//! let summary = session.wait()?;
//! println!("{}", summary.end_reason);
//! # Ok(()) }
//! ```
//!
//! [`RunSession::start`] picks the device and the energy sensor, builds both models, writes the
//! run folder's header and runs the measured loop ([`super::run::execute`]) on its own thread;
//! [`RunSession::stop`] ends it cleanly between two steps; [`RunSession::wait`] returns the
//! summary (also in the folder as `summary.json`). Observers ([`super::RunObserver`]) follow
//! every record as it is appended; [`SessionHooks::events`] gives the dashboard's channel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use super::run::{execute, Meters, Outputs, Preset, Progress, Quiet, RunPlan};
use super::run::{DEFAULT_MAX_LENGTHEN_S, DEFAULT_MIN_WINDOWS};
use super::{InferenceShape, ModelWorkload, RunEvent, RunObserver};
use crate::data::{Corpus, DataError};
use crate::meter::{
    detect_update_period, open_host_sensor, open_sensor, EstimateParams, GpuSelector, Meter,
    MeterError, Sensor, SensorChoice, UpdatePeriod, Workplace, DETECT_FOR,
};
use crate::model::{gpu_identity, pick_device, Model, TrainConfig};
use crate::profile::ModelProfile;
use crate::runlog::{
    detect_machine, unique_run_id, unix_now, RunConfig, RunFolderError, RunHeader, RunModel,
    RunPeak, RunSummary, RunWriter, SensorInfo, FORMAT_VERSION, FROM_CACHE,
};
use crate::vocab::Role;

/// What to run and where. [`SessionConfig::new`] fills in the defaults of `sparsewatt run`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub sparse: ModelProfile,
    pub dense: ModelProfile,
    /// Training steps per model, warm-up included (with `until_loss`, the cap).
    pub train_steps: u64,
    /// Warm-up steps per model [`None`: 2, or a third of a run of fewer than 6 steps].
    pub warmup_steps: Option<u64>,
    pub prefill_steps: u64,
    pub decode_steps: u64,
    /// Sequences per training batch (of the profile's `seq_len` tokens).
    pub batch: usize,
    pub inference: InferenceShape,
    /// Seconds of idle measurement before the workload and after it.
    pub idle_seconds: f64,
    pub eval_every: u64,
    pub until_loss: Option<f64>,
    pub target_loss: Option<f64>,
    /// The run folder, new or empty [`None`: `runs/<run id>`].
    pub out: Option<PathBuf>,
    pub sensor: SensorChoice,
    /// GPUs `SensorChoice::Nvml` meters (empty: all).
    pub nvml_gpus: Vec<GpuSelector>,
    /// The estimate's figures (used where it is the sensor, or the fallback).
    pub estimate: EstimateParams,
    pub min_windows: u64,
    pub max_lengthen_s: f64,
    /// Sensor readings per second (the power series).
    pub sample_hz: f64,
    /// Train on this file instead of the embedded corpus.
    pub data: Option<PathBuf>,
    pub seed: u64,
    /// Run the models on the GPU when built with `cuda` and one is present.
    pub gpu: bool,
    /// The command line recorded in `run.json` (a library user may name their program).
    pub command: String,
}

impl SessionConfig {
    /// The defaults of `sparsewatt run` (the default preset) for these two models.
    pub fn new(sparse: ModelProfile, dense: ModelProfile, estimate: EstimateParams) -> Self {
        SessionConfig {
            sparse,
            dense,
            train_steps: Preset::Default.steps(),
            warmup_steps: None,
            prefill_steps: 6,
            decode_steps: 12,
            batch: 8,
            inference: InferenceShape {
                batch: 4,
                prompt_len: 64,
                decode_tokens_per_step: 16,
            },
            idle_seconds: 2.0,
            eval_every: Preset::Default.eval_every(),
            until_loss: None,
            target_loss: None,
            out: None,
            sensor: SensorChoice::Auto,
            nvml_gpus: Vec::new(),
            estimate,
            min_windows: DEFAULT_MIN_WINDOWS,
            max_lengthen_s: DEFAULT_MAX_LENGTHEN_S,
            sample_hz: 10.0,
            data: None,
            seed: 42,
            gpu: false,
            command: "sparsewatt (library)".into(),
        }
    }

    fn warmup(&self) -> u64 {
        let steps = self.train_steps;
        self.warmup_steps
            .unwrap_or(if steps >= 6 { 2 } else { steps / 3 })
    }

    /// The rules on the figures (the command line checks them too, as it parses).
    pub fn check(&self) -> Result<(), SessionError> {
        let bad =
            |field: &'static str, message: String| Err(SessionError::Config { field, message });
        for (field, v) in [
            ("batch", self.batch),
            ("inference.batch", self.inference.batch),
            ("inference.prompt_len", self.inference.prompt_len),
            (
                "inference.decode_tokens_per_step",
                self.inference.decode_tokens_per_step,
            ),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1, got 0".into());
            }
        }
        if !(self.sample_hz > 0.0 && self.sample_hz <= 1000.0) {
            return bad(
                "sample_hz",
                format!("must be in (0, 1000], got {}", self.sample_hz),
            );
        }
        for (field, v) in [
            ("max_lengthen_s", self.max_lengthen_s),
            ("idle_seconds", self.idle_seconds),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("must be seconds, 0 or more, got {v}"));
            }
        }
        for (field, v) in [
            ("until_loss", self.until_loss),
            ("target_loss", self.target_loss),
        ] {
            if let Some(l) = v.filter(|l| !(l.is_finite() && *l > 0.0)) {
                return bad(
                    field,
                    format!("must be a validation loss above 0 (nats per token), got {l}"),
                );
            }
        }
        Ok(())
    }
}

/// Why a session could not start or did not finish. [`SessionError::is_bad_input`] tells the
/// user's mistakes (exit code 2 on the command line) from the machine's failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("reading the training data")]
    Data(#[source] DataError),
    #[error(
        "sensor auto: cannot tell which NVML GPU {device} is (CUDA_VISIBLE_DEVICES={cuda_visible}); \
         choose the nvml sensor and name the GPU (--sensor nvml --nvml-gpu INDEX)"
    )]
    UnknownGpu {
        device: String,
        cuda_visible: String,
    },
    #[error("opening the energy sensor")]
    Sensor(#[source] MeterError),
    /// A model that cannot be built or trained with this data and these shapes.
    #[error("setting up the {role} model {model}")]
    Workload {
        role: Role,
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("creating the run folder {}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: RunFolderError,
    },
    #[error("starting the run's thread")]
    Thread(#[source] std::io::Error),
    #[error("the run's thread panicked")]
    Panicked,
    /// The measured run itself failed (its folder holds what was recorded up to then).
    #[error("the run failed")]
    Run(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SessionError {
    /// True when the user's input is wrong (a figure, the data, the folder), not the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            SessionError::Config { .. }
            | SessionError::Data(_)
            | SessionError::UnknownGpu { .. }
            | SessionError::Workload { .. } => true,
            SessionError::Folder { source, .. } => source.is_bad_input(),
            SessionError::Sensor(_)
            | SessionError::Thread(_)
            | SessionError::Panicked
            | SessionError::Run(_) => false,
        }
    }
}

/// Who follows the run: progress lines, observers of every record, the dashboard's channel.
#[derive(Default)]
pub struct SessionHooks {
    /// Progress lines (each step, each note) on the run's thread [default: none].
    pub progress: Option<Box<dyn Progress + Send>>,
    /// Called with the header, every record as it is appended, and the outcome.
    pub observers: Vec<Box<dyn RunObserver>>,
    /// Also send every event over a channel: take it with [`RunSession::events`].
    pub events: bool,
}

/// A run under way on its own thread.
pub struct RunSession {
    header: RunHeader,
    dir: PathBuf,
    notes: Vec<String>,
    stop: Arc<AtomicBool>,
    events: Option<mpsc::Receiver<RunEvent>>,
    worker: Option<JoinHandle<anyhow::Result<RunSummary>>>,
}

/// The sensors chosen for a run, before the meters start.
struct Sensors {
    main: Box<dyn Sensor>,
    host: Option<Box<dyn Sensor>>,
    fallbacks: Vec<String>,
    update_period: Option<UpdatePeriod>,
}

/// The sensor follows the device: `auto` meters the GPU the model runs on (named by the
/// driver's UUID, else its ordinal), the host CPU beside it by RAPL where readable.
fn choose_sensors(
    cfg: &SessionConfig,
    device: &candle_core::Device,
    device_name: &str,
) -> Result<Sensors, SessionError> {
    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let by_uuid = gpu_identity(device).map(|g| Workplace::Gpus(vec![GpuSelector::Uuid(g.uuid)]));
    let workplace =
        match by_uuid.or_else(|| Workplace::of_device(device_name, cuda_visible.as_deref())) {
            Some(w) => w,
            // Only `auto` needs to know which GPU that is.
            None if cfg.sensor != SensorChoice::Auto => Workplace::Gpus(Vec::new()),
            None => {
                return Err(SessionError::UnknownGpu {
                    device: device_name.to_string(),
                    cuda_visible: cuda_visible.unwrap_or_default(),
                })
            }
        };
    let (mut main, mut fallbacks) =
        open_sensor(cfg.sensor, &cfg.estimate, &workplace, &cfg.nvml_gpus)
            .map_err(SessionError::Sensor)?;
    let host = match open_host_sensor(cfg.sensor, main.source(), &workplace) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            fallbacks.push(format!("host CPU beside the GPU not metered: {e}"));
            None
        }
        None => None,
    };
    // How often its counter updates: the shortest window it resolves.
    let update_period = detect_update_period(main.as_mut(), DETECT_FOR);
    Ok(Sensors {
        main,
        host,
        fallbacks,
        update_period,
    })
}

/// The measured peak of the device (cached per machine, else a short probe now), with notes for
/// the user; `None` when it cannot be measured: utilisation then uses the profile's peak.
fn this_machines_peak(
    device: &candle_core::Device,
    device_name: &str,
    notes: &mut Vec<String>,
) -> Option<RunPeak> {
    match crate::project::probe::run_peak(device, device_name) {
        Ok((p, warnings)) => {
            notes.extend(warnings.into_iter().map(|n| format!("warning: {n}")));
            notes.push(format!(
                "peak {:.1} GFLOP/s {} ({})",
                p.flops_per_s / 1e9,
                p.dtype,
                if p.from == FROM_CACHE {
                    "from this machine's cache; `sparsewatt hardware --probe` measures it afresh"
                } else {
                    "measured now"
                }
            ));
            Some(p)
        }
        Err(e) => {
            notes.push(format!(
                "warning: the peak probe failed ({e}); utilisation uses the hardware profile's peak"
            ));
            None
        }
    }
}

fn build_workload(
    cfg: &SessionConfig,
    p: &ModelProfile,
    role: Role,
    corpus: &Corpus,
    device: &candle_core::Device,
) -> Result<ModelWorkload, SessionError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| SessionError::Workload {
        role,
        model: p.name.clone(),
        source,
    };
    let mut tc = TrainConfig::for_profile(p, cfg.train_steps.max(1));
    tc.batch = cfg.batch;
    tc.seed = cfg.seed;
    // Two fixed validation batches keep evaluation short beside the measured steps.
    tc.val_batches = 2;
    let model = Model::new(p, device, cfg.seed).map_err(|e| err(e.into()))?;
    ModelWorkload::new(model, role, corpus, tc, cfg.inference).map_err(|e| err(e.into()))
}

fn header(
    cfg: &SessionConfig,
    id: String,
    started: f64,
    machine: crate::runlog::MachineInfo,
    sensor: SensorInfo,
    corpus: &Corpus,
) -> RunHeader {
    RunHeader {
        format_version: FORMAT_VERSION,
        id,
        started_unix_s: started,
        command: cfg.command.clone(),
        sparsewatt_version: env!("CARGO_PKG_VERSION").into(),
        machine,
        sensor,
        models: vec![
            RunModel {
                role: Role::Sparse,
                profile: cfg.sparse.clone(),
            },
            RunModel {
                role: Role::Dense,
                profile: cfg.dense.clone(),
            },
        ],
        config: RunConfig {
            train_steps: cfg.train_steps,
            warmup_steps: cfg.warmup(),
            batch: cfg.batch,
            seq_len: cfg.sparse.seq_len,
            prefill_steps: cfg.prefill_steps,
            prompt_len: cfg.inference.prompt_len,
            decode_steps: cfg.decode_steps,
            infer_batch: Some(cfg.inference.batch),
            decode_tokens_per_step: Some(cfg.inference.decode_tokens_per_step),
            idle_seconds: cfg.idle_seconds,
            data: corpus.name().to_string(),
            seed: cfg.seed,
            eval_every: Some(cfg.eval_every.max(1)),
            until_loss: cfg.until_loss,
            target_loss: cfg.target_loss,
        },
    }
}

impl RunSession {
    /// Set the run up (device, sensor, both models, the run folder and its header) and start it
    /// on its own thread. Errors before the folder exists leave nothing on disk.
    pub fn start(cfg: SessionConfig, mut hooks: SessionHooks) -> Result<RunSession, SessionError> {
        cfg.check()?;
        if let Some(dir) = &cfg.out {
            crate::runlog::check_new_folder(dir).map_err(|source| SessionError::Folder {
                path: dir.clone(),
                source,
            })?;
        }
        let corpus = Corpus::load(cfg.data.as_deref()).map_err(SessionError::Data)?;
        let (device, device_name, device_fallback) = pick_device(cfg.gpu);
        let mut notes: Vec<String> = device_fallback
            .map(|f| format!("warning: {f}"))
            .into_iter()
            .collect();
        let sensors = choose_sensors(&cfg, &device, &device_name)?;
        let mut sparse = build_workload(&cfg, &cfg.sparse, Role::Sparse, &corpus, &device)?;
        let mut dense = build_workload(&cfg, &cfg.dense, Role::Dense, &corpus, &device)?;

        let peak = this_machines_peak(&device, &device_name, &mut notes);
        // Records' `t_s` count from `epoch`; `started_unix_s` is the same moment.
        let epoch = Instant::now();
        let started = unix_now();
        let id = unique_run_id(started);
        let dir = cfg
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&id));
        let meter = Meter::start(sensors.main, cfg.sample_hz, epoch);
        // Windows only: the host's power series is not sampled.
        let host = sensors.host.map(|s| Meter::start(s, 0.0, epoch));
        let machine = crate::runlog::MachineInfo {
            peak,
            ..detect_machine(&device_name, Some(cfg.estimate.profile.clone()))
        };
        let sensor = SensorInfo {
            source: meter.source(),
            scope: meter.scope(),
            fallbacks: sensors.fallbacks,
            sample_hz: cfg.sample_hz,
            update_period_s: sensors.update_period.map(|p| p.period_s),
            update_energy_j: sensors.update_period.map(|p| p.energy_j),
            host_scope: host.as_ref().map(Meter::scope),
        };
        let header = header(&cfg, id, started, machine, sensor, &corpus);
        let mut writer =
            RunWriter::create(&dir, &header).map_err(|source| SessionError::Folder {
                path: dir.clone(),
                source,
            })?;
        let plan = RunPlan {
            train_steps: cfg.train_steps,
            warmup_steps: cfg.warmup(),
            prefill_steps: cfg.prefill_steps,
            decode_steps: cfg.decode_steps,
            idle_seconds: cfg.idle_seconds,
            eval_every: cfg.eval_every.max(1),
            until_loss: cfg.until_loss,
            target_loss: cfg.target_loss,
            peak: crate::project::peak_of_run(&header),
            update_period: sensors.update_period,
            min_windows: cfg.min_windows.max(1),
            max_lengthen_s: cfg.max_lengthen_s,
        };
        let events = hooks.events.then(|| {
            let (tx, rx) = mpsc::channel::<RunEvent>();
            hooks.observers.push(Box::new(tx));
            rx
        });
        let mut observers = hooks.observers;
        let mut progress = hooks.progress.unwrap_or_else(|| Box::new(Quiet));
        for o in observers.iter_mut() {
            o.started(&header);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop_w = stop.clone();
        let worker = std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || {
                let r = execute(
                    &plan,
                    &mut sparse,
                    &mut dense,
                    Meters {
                        main: &meter,
                        host: host.as_ref(),
                        epoch,
                    },
                    Outputs {
                        writer: &mut writer,
                        observers: &mut observers,
                        progress: progress.as_mut(),
                    },
                    &stop_w,
                );
                meter.stop();
                if let Some(h) = host {
                    h.stop();
                }
                let finished = writer.finish().map_err(anyhow::Error::from);
                let r = r.and_then(|s| finished.map(|()| s));
                let failed = r.as_ref().err().map(|e| format!("{e:#}"));
                for o in observers.iter_mut() {
                    o.ended(match (&r, &failed) {
                        (Ok(s), _) => Ok(s),
                        (Err(_), Some(m)) => Err(m.as_str()),
                        (Err(_), None) => Err("failed"),
                    });
                }
                r
            })
            .map_err(SessionError::Thread)?;
        Ok(RunSession {
            header,
            dir,
            notes,
            stop,
            events,
            worker: Some(worker),
        })
    }

    /// The run's header, as written to `run.json`.
    pub fn header(&self) -> &RunHeader {
        &self.header
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the user should know about the set-up: a device fallback, the peak and how it was
    /// found (each line prefixed `warning: ` where it is one).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The flag that ends the run between two steps (set it from a signal handler or a UI).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The events of [`SessionHooks::events`] (once; `None` without them or when taken).
    pub fn events(&mut self) -> Option<mpsc::Receiver<RunEvent>> {
        self.events.take()
    }

    /// Ask the run to end after its current step (with its summary), and wait for it.
    pub fn stop(self) -> Result<RunSummary, SessionError> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Wait for the run to end; its summary (also written as `summary.json`).
    pub fn wait(mut self) -> Result<RunSummary, SessionError> {
        let worker = self.worker.take().ok_or(SessionError::Panicked)?;
        match worker.join() {
            Ok(r) => r.map_err(|e| SessionError::Run(e.into())),
            Err(_) => Err(SessionError::Panicked),
        }
    }
}

/// Set `stop` on SIGINT, SIGTERM and SIGHUP (Ctrl-C, `kill`, a closed terminal), so the run ends
/// between two steps with its summary. `on_signal` is called on the handler's thread (not in
/// the signal's context) with whether the run was already stopping: a second signal is the
/// place to restore what must be restored and exit. One handler per process: a second call is
/// refused.
pub fn stop_on_signals(
    stop: Arc<AtomicBool>,
    on_signal: impl Fn(bool) + Send + 'static,
) -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(move || on_signal(stop.swap(true, Ordering::SeqCst)))
}
