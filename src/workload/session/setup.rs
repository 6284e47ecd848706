//! Setting a run up: the sensors, the machine's peak, the two models, the header and the plan.

use super::{SessionConfig, SessionError};
use crate::clock::SystemClock;
use crate::data::Corpus;
use crate::meter::{
    detect_update_period, open_host_sensor, open_sensor, GpuSelector, Sensor, SensorChoice,
    UpdatePeriod, Workplace, DETECT_FOR,
};
use crate::model::{gpu_identity, Model, TrainConfig};
use crate::profile::ModelProfile;
use crate::runlog::{
    RunConfig, RunHeader, RunModel, RunPeak, SensorInfo, FORMAT_VERSION, FROM_CACHE,
};
use crate::vocab::Role;
use crate::workload::run::RunPlan;
use crate::workload::ModelWorkload;

/// The sensors chosen for a run, before the meters start.
pub(super) struct Sensors {
    pub(super) main: Box<dyn Sensor>,
    pub(super) host: Option<Box<dyn Sensor>>,
    pub(super) fallbacks: Vec<String>,
    pub(super) update_period: Option<UpdatePeriod>,
}

/// The sensor follows the device: `auto` meters the GPU the model runs on (named by the
/// driver's UUID, else its ordinal), the host CPU beside it by RAPL where readable.
pub(super) fn choose_sensors(
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
    let update_period = detect_update_period(main.as_mut(), DETECT_FOR, &SystemClock);
    Ok(Sensors {
        main,
        host,
        fallbacks,
        update_period,
    })
}

/// The measured peak of the device (cached per machine, else a short probe now), with notes for
/// the user; `None` when it cannot be measured: utilisation then uses the profile's peak.
pub(super) fn this_machines_peak(
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

pub(super) fn build_workload(
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

pub(super) fn header(
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

/// The measured run's plan from the configuration and the header's peak.
pub(super) fn plan(
    cfg: &SessionConfig,
    header: &RunHeader,
    update_period: Option<UpdatePeriod>,
) -> RunPlan {
    RunPlan {
        train_steps: cfg.train_steps,
        warmup_steps: cfg.warmup(),
        prefill_steps: cfg.prefill_steps,
        decode_steps: cfg.decode_steps,
        idle_seconds: cfg.idle_seconds,
        eval_every: cfg.eval_every.max(1),
        until_loss: cfg.until_loss,
        target_loss: cfg.target_loss,
        peak: crate::project::peak_of_run(header),
        update_period,
        min_windows: cfg.min_windows.max(1),
        max_lengthen_s: cfg.max_lengthen_s,
    }
}
