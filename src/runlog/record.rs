//! The records of a run folder's `records.jsonl`: one JSON object per line, tagged by `kind`.
//! Append-only; a cut-off run is readable up to its last complete line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::accounting::Component;
use crate::vocab::{EnergySource, Phase, Role, Sample};

/// Version of the run-folder format; bump on any incompatible change (docs/run-folder.md).
/// Version 2 added `to_target` to `summary.json` and `val_losses` to eval records; version 1
/// folders stay readable ([`OLDEST_READABLE_VERSION`]).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest run-folder format this version reads (every field added since has a default).
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Energy over one window, with where it comes from and what it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    pub joules: f64,
    /// The idle baseline's share of this window (idle watts x seconds); absent before the idle
    /// window was measured.
    pub idle_joules: Option<f64>,
    pub source: EnergySource,
    /// What the figure covers, e.g. "cpu package+dram, all sockets" or "gpu 0 board".
    pub scope: String,
    /// The measurement window the joules come from, when it held more than this step or when
    /// its length was recorded; absent in folders written before windows were recorded (each
    /// step was then its own window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowInfo>,
    /// The host CPU's energy over the same window (RAPL beside a GPU run's NVML), its share for
    /// this step: a separate component, not included in `joules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Box<HostEnergy>>,
}

/// A second component metered beside the main sensor: the host CPU of a GPU run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEnergy {
    pub joules: f64,
    pub source: EnergySource,
    pub scope: String,
}

/// A measurement window shared by one or more consecutive steps of one model. Its joules are
/// split among its steps in proportion to their seconds, so the steps' joules sum to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// Which window of the run, from 0 (steps with the same index share one window).
    pub index: u64,
    /// Steps in the window.
    pub steps: u64,
    /// Seconds from the window's begin to its end.
    pub seconds: f64,
    /// Counter updates the window spanned (its seconds over the sensor's update period); absent
    /// for a sensor without a counter period (the estimate). A window under
    /// `meter::SAFE_UPDATES_PER_WINDOW` updates is too short for its sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<f64>,
}

impl WindowInfo {
    /// Whether the window spanned too few counter updates to be resolved.
    pub fn too_short(&self) -> bool {
        self.updates
            .is_some_and(|u| u < crate::meter::SAFE_UPDATES_PER_WINDOW)
    }
}

/// The warning the run loop logs for a window whose sensor reads failed: its steps are recorded
/// without energy.
pub fn unmeasured_window_warning(
    model: &str,
    index: u64,
    steps: usize,
    phase: Phase,
    err: &dyn std::fmt::Display,
) -> String {
    format!(
        "{model}: window {index} ({steps} {} steps) unmeasured: {err}",
        phase.label()
    )
}

/// The model an [`unmeasured_window_warning`] names; `None` for any other message.
pub fn unmeasured_window_model(message: &str) -> Option<&str> {
    let (model, rest) = message.split_once(": window ")?;
    rest.contains(" steps) unmeasured: ").then_some(model)
}

/// A measured step for tests elsewhere in the crate: `role`'s model (named after the role) in
/// `phase`, 10 tokens in 0.5 s, 10,000 FLOPs, 1 J from the estimate; change fields with `..`.
#[cfg(test)]
pub(crate) fn test_step(role: Role, phase: Phase) -> StepRecord {
    StepRecord {
        t_s: 0.0,
        model: format!("{role:?}"),
        role,
        phase,
        step: 0,
        warmup: false,
        tokens: 10,
        seconds: 0.5,
        flops: 10_000.0,
        flops_by_component: Default::default(),
        energy: Some(test_energy(1.0)),
        loss: None,
        aux_loss: None,
        expert_tokens: vec![],
        dropped: 0,
        domain_expert_tokens: Default::default(),
    }
}

/// `joules` from the estimate, scope "test", without an idle share or a window, for tests.
#[cfg(test)]
pub(crate) fn test_energy(joules: f64) -> Energy {
    Energy {
        joules,
        idle_joules: None,
        source: crate::vocab::EnergySource::Estimate,
        scope: "test".into(),
        window: None,
        host: None,
    }
}

/// One measured step of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Seconds since the run started, at the end of the step.
    pub t_s: f64,
    pub model: String,
    pub role: Role,
    pub phase: Phase,
    /// Index of this step among this model's steps of this phase, from 0.
    pub step: u64,
    /// Warm-up steps are recorded but left out of summaries.
    pub warmup: bool,
    /// The phase's denominator (see [`Phase`]).
    pub tokens: u64,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
    /// FLOPs the model executed in this step (training: forward + backward).
    pub flops: f64,
    pub flops_by_component: BTreeMap<Component, f64>,
    pub energy: Option<Energy>,
    /// Training loss (cross-entropy, nats per token) for train steps.
    pub loss: Option<f64>,
    pub aux_loss: Option<f64>,
    /// Tokens routed to each expert, one vector per MoE layer (empty for dense models).
    pub expert_tokens: Vec<Vec<u64>>,
    /// Expert assignments dropped by the capacity factor in this step.
    pub dropped: u64,
    /// Corpus domain -> per MoE layer -> tokens sent to each expert (train steps on a corpus with
    /// domains; empty otherwise).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domain_expert_tokens: BTreeMap<String, Vec<Vec<u64>>>,
}

/// Validation loss of one model at a point of its training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub t_s: f64,
    pub model: String,
    pub role: Role,
    /// Train steps done so far and the tokens and FLOPs they consumed.
    pub train_steps: u64,
    pub train_tokens: u64,
    pub train_flops: f64,
    pub train_joules: Option<f64>,
    /// Mean over `val_losses`.
    pub val_loss: f64,
    /// Loss of each eval sequence (the same fixed sequences at every eval, nats per token), which
    /// the to-target intervals resample; empty in folders of format 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_losses: Vec<f64>,
}

/// When an idle window was measured: before the workload (its power is the baseline the steps'
/// `idle_joules` use) or after it (to check the baseline for drift).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleWhen {
    #[default]
    Before,
    After,
}

/// An idle window: nothing runs but the sampler. Its power is the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleRecord {
    /// Absent in runs before the window after the workload existed: before.
    #[serde(default)]
    pub when: IdleWhen,
    pub seconds: f64,
    pub joules: f64,
    pub power_w: f64,
    /// Power of each of the equal sub-windows the window was read in (W), for the baseline's
    /// spread; empty in older runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window_power_w: Vec<f64>,
    pub source: EnergySource,
    pub scope: String,
}

/// A line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Step(StepRecord),
    Sample(Sample),
    Eval(EvalRecord),
    Idle(IdleRecord),
    /// A human-readable event: a sensor fallback, a NaN loss, dropped tokens.
    Log {
        t_s: f64,
        level: String,
        message: String,
    },
    /// Written last by a run that finished (or was stopped with Ctrl-C) cleanly.
    End {
        t_s: f64,
        reason: String,
    },
}

impl Record {
    /// Seconds since the run started at which this record was written; the idle record has none.
    pub fn t_s(&self) -> Option<f64> {
        match self {
            Record::Step(s) => Some(s.t_s),
            Record::Sample(s) => Some(s.t_s),
            Record::Eval(e) => Some(e.t_s),
            Record::Log { t_s, .. } | Record::End { t_s, .. } => Some(*t_s),
            Record::Idle(_) => None,
        }
    }
}
