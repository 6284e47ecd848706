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
use crate::meter::{EstimateParams, GpuSelector, Meter, MeterError, SensorChoice};
use crate::model::pick_device;
use crate::profile::ModelProfile;
use crate::runlog::{
    detect_machine, unique_run_id, unix_now, RunFolderError, RunHeader, RunSummary, RunWriter,
    SensorInfo,
};
use crate::vocab::Role;

mod setup;
use setup::{build_workload, choose_sensors, header, plan, this_machines_peak};

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

/// What the run's thread owns.
struct Parts {
    plan: RunPlan,
    sparse: ModelWorkload,
    dense: ModelWorkload,
    meter: Meter,
    host: Option<Meter>,
    epoch: Instant,
    writer: RunWriter,
    observers: Vec<Box<dyn RunObserver>>,
    progress: Box<dyn Progress + Send>,
}

/// Run the measured loop on its own thread; the meters stop and the records are made durable
/// when it ends, then the observers hear the outcome.
fn spawn_worker(
    mut p: Parts,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<anyhow::Result<RunSummary>>, SessionError> {
    std::thread::Builder::new()
        .name("workload".into())
        .spawn(move || {
            let r = execute(
                &p.plan,
                &mut p.sparse,
                &mut p.dense,
                Meters {
                    main: &p.meter,
                    host: p.host.as_ref(),
                    epoch: p.epoch,
                },
                Outputs {
                    writer: &mut p.writer,
                    observers: &mut p.observers,
                    progress: p.progress.as_mut(),
                },
                &stop,
            );
            p.meter.stop();
            if let Some(h) = p.host {
                h.stop();
            }
            let finished = p.writer.finish().map_err(anyhow::Error::from);
            let r = r.and_then(|s| finished.map(|()| s));
            let failed = r.as_ref().err().map(|e| format!("{e:#}"));
            for o in p.observers.iter_mut() {
                o.ended(match (&r, &failed) {
                    (Ok(s), _) => Ok(s),
                    (Err(_), Some(m)) => Err(m.as_str()),
                    (Err(_), None) => Err("failed"),
                });
            }
            r
        })
        .map_err(SessionError::Thread)
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
        let sparse = build_workload(&cfg, &cfg.sparse, Role::Sparse, &corpus, &device)?;
        let dense = build_workload(&cfg, &cfg.dense, Role::Dense, &corpus, &device)?;

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
        let writer = RunWriter::create(&dir, &header).map_err(|source| SessionError::Folder {
            path: dir.clone(),
            source,
        })?;
        let plan = plan(&cfg, &header, sensors.update_period);
        let events = hooks.events.then(|| {
            let (tx, rx) = mpsc::channel::<RunEvent>();
            hooks.observers.push(Box::new(tx));
            rx
        });
        let mut observers = hooks.observers;
        let progress = hooks.progress.unwrap_or_else(|| Box::new(Quiet));
        for o in observers.iter_mut() {
            o.started(&header);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let parts = Parts {
            plan,
            sparse,
            dense,
            meter,
            host,
            epoch,
            writer,
            observers,
            progress,
        };
        let worker = spawn_worker(parts, stop.clone())?;
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
