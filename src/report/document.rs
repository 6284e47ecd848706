//! The report as data: what `report.json` holds and what the Markdown and HTML renderings show.
//! Every number that is a figure is a [`Figure`]: value, unit and source, plus spread, scope and
//! denominator where they apply. Schema documented in docs/report.md; bump
//! [`REPORT_FORMAT_VERSION`] on any incompatible change.

use serde::{Deserialize, Serialize};

use crate::runlog::{MachineInfo, RunConfig};
use crate::vocab::{Phase, Role};

/// Version of the report's JSON schema (docs/report.md).
pub const REPORT_FORMAT_VERSION: u32 = 2;

/// Sources of figures that are not energy readings (energy figures carry `nvml`, `rapl` or
/// `estimate`).
pub mod source {
    /// FLOPs the model executed, counted from the shapes it ran (docs/accounting.md).
    pub const EXECUTED_FLOPS: &str = "executed FLOP count";
    /// Parameters counted analytically from the profile (docs/accounting.md).
    pub const ACCOUNTING: &str = "analytic accounting";
    pub const WALL_CLOCK: &str = "wall clock";
    /// Counts taken from the run's records (tokens, steps, router counts).
    pub const RECORDS: &str = "run records";
    pub const TRAINING_LOSS: &str = "training loss of the step";
    pub const INTERPOLATED: &str = "interpolated between evals";
}

/// One number with its unit and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    /// "J/token", "FLOP/token", "W", "J", "s", "parameters", "ratio", ...
    pub unit: String,
    /// `nvml`, `rapl`, `estimate` for energy; otherwise one of [`source`] or a projection's name.
    pub source: String,
    /// 95% confidence interval of the mean, [low, high].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_dev: Option<f64>,
    /// Observations behind a mean (measured steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// What an energy figure covers (the sensor's scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The denominator of a per-token figure: "tokens trained", "prompt tokens", "generated tokens".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

impl Figure {
    pub fn new(value: f64, unit: &str, source: &str) -> Figure {
        Figure {
            value,
            unit: unit.into(),
            source: source.into(),
            ci95: None,
            std_dev: None,
            n: None,
            scope: None,
            per: None,
        }
    }

    pub fn from_estimate(e: &crate::stats::Estimate, unit: &str, source: &str) -> Figure {
        Figure {
            ci95: e.ci95,
            std_dev: e.std_dev,
            n: Some(e.n),
            ..Figure::new(e.mean, unit, source)
        }
    }

    pub fn with_scope(mut self, scope: Option<&str>) -> Figure {
        self.scope = scope.map(str::to_string);
        self
    }

    pub fn per(mut self, denominator: &str) -> Figure {
        self.per = Some(denominator.into());
        self
    }

    /// [`Figure::per`] where there is a denominator.
    pub fn per_opt(mut self, denominator: Option<&str>) -> Figure {
        self.per = denominator.map(str::to_string);
        self
    }
}

/// The denominator of a phase's per-token figures.
pub fn denominator(phase: Phase) -> &'static str {
    match phase {
        Phase::Train => "tokens trained",
        Phase::Prefill => "prompt tokens",
        Phase::Decode => "generated tokens",
    }
}

/// One unit of the denominator, for "J per token trained".
pub fn per_one(phase: Phase) -> &'static str {
    match phase {
        Phase::Train => "token trained",
        Phase::Prefill => "prompt token",
        Phase::Decode => "generated token",
    }
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub report_format_version: u32,
    pub run: RunSection,
    pub answer: Answer,
    /// The first answer's figures: each model's cost to the target validation loss with 95%
    /// intervals (`summary.json`'s `to_target`; absent without evals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_target: Option<crate::runlog::ToTarget>,
    pub phases: Vec<PhaseRow>,
    pub models: Vec<ModelSection>,
    pub machine: MachineInfo,
    pub sensor: SensorSection,
    pub idle: Option<IdleSection>,
    pub data_efficiency: DataEfficiency,
    pub expert_load: Vec<ExpertLoad>,
    pub power: PowerSeries,
    pub projections: ProjectionSection,
    pub method: Method,
    /// Warnings and errors the run logged, and problems reading it.
    pub notes: Vec<String>,
    /// The peak the phases' utilisation divides by (`summary.json`'s `peak`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<crate::runlog::SummaryPeak>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSection {
    pub id: String,
    /// The run folder as given to `report`.
    pub dir: String,
    pub started_unix_s: f64,
    pub command: String,
    pub sparsewatt_version: String,
    pub config: RunConfig,
    /// True when the run wrote its end record.
    pub complete: bool,
    pub end_reason: String,
    /// One plain sentence on how the run ended and what the figures cover.
    pub status: String,
    pub step_records: usize,
    pub measured_steps: usize,
    /// Lines of records.jsonl that could not be read (a half-written last line).
    pub unreadable_lines: usize,
    /// Seconds from the start to the last record.
    pub duration_s: f64,
}

/// The question the run answers and the answer in sentences; the figures are in `phases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The first answer, quality per joule: the energy each model needed to reach the same
    /// validation loss (sentences over `Report::to_target`).
    #[serde(default)]
    pub quality: Vec<String>,
    /// The second answer, per-token cost: the question and its sentences.
    pub question: String,
    pub sentences: Vec<String>,
}

/// One phase, sparse against dense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRow {
    pub phase: Phase,
    pub denominator: String,
    pub sparse: Option<PhaseFigures>,
    pub dense: Option<PhaseFigures>,
    /// Sparse / dense; absent unless the run measured both.
    pub ratio: Option<RatioFigures>,
}

impl PhaseRow {
    pub fn side(&self, role: Role) -> Option<&PhaseFigures> {
        match role {
            Role::Sparse => self.sparse.as_ref(),
            Role::Dense => self.dense.as_ref(),
        }
    }
}

/// One model in one phase, over its measured (non-warm-up) steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseFigures {
    pub model: String,
    pub steps: usize,
    pub warmup_steps_excluded: usize,
    pub tokens: Figure,
    pub seconds: Figure,
    /// Mean over steps of the step's joules / tokens, with its 95% CI.
    pub joules_per_token: Option<Figure>,
    pub joules_per_token_idle_subtracted: Option<Figure>,
    pub flops_per_token: Figure,
    pub tokens_per_s: Option<Figure>,
    pub flops_per_s: Figure,
    /// Achieved FLOP/s over the run's peak, a fraction at most 1; its source is where the peak
    /// came from ("peak: probe", "peak: achieved", "peak: cpu-generic").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<Figure>,
    pub joules_per_flop: Option<Figure>,
    pub last_loss: Option<Figure>,
    /// The host CPU beside a GPU run (RAPL, a separate component, not in `joules_per_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_joules_per_token: Option<Figure>,
}

/// Sparse over dense; below 1 means the sparse model is cheaper (or slower, for tokens/s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioFigures {
    /// J/token: the ratio of means with its 95% CI from the paired windows (two or more pairs),
    /// else by the delta method on the two means; the others by the delta method.
    pub joules_per_token: Option<Figure>,
    pub joules_per_token_idle_subtracted: Option<Figure>,
    pub flops_per_token: Option<Figure>,
    pub tokens_per_s: Option<Figure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSection {
    pub role: Role,
    pub name: String,
    pub total_params: Figure,
    /// Parameters one token touches (GLaM's "activated parameters").
    pub active_params: Figure,
    pub layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub experts: usize,
    pub top_k: usize,
    pub moe_layers: usize,
    pub capacity_factor: Option<f64>,
    pub seq_len: usize,
    /// Where the profile's figures come from, if it says.
    pub profile_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSection {
    pub source: String,
    pub scope: String,
    /// False for `estimate`: such figures are modelled from CPU time, not read from a sensor.
    pub is_measurement: bool,
    /// Readers tried first, each with why it could not be used.
    pub fallbacks: Vec<String>,
    pub sample_hz: f64,
    /// The counter's update period measured at the start, seconds (absent for the estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_period_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleSection {
    /// The window before the workload: its length and energy.
    pub seconds: Figure,
    pub joules: Figure,
    /// The baseline subtracted: before and after pooled, with its interval over the sub-windows.
    pub power_w: Figure,
    /// Each side on its own; `after_w` is absent when the run stopped before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_w: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_w: Option<Figure>,
    /// After minus before, W, and over before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_w: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_fraction: Option<f64>,
}

/// GLaM's data-efficiency view: loss against tokens and FLOPs, and what each model needed to reach
/// the same loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataEfficiency {
    /// "validation loss" (eval records) or "training loss" (step records, when there was no eval).
    pub basis: String,
    pub curves: Vec<LossCurve>,
    pub same_loss: Option<SameLoss>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossCurve {
    pub role: Role,
    pub model: String,
    pub points: Vec<LossPoint>,
}

/// Loss in nats per token after training on `train_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    pub train_tokens: u64,
    pub train_flops: f64,
    pub train_joules: Option<f64>,
    pub loss_nats: f64,
}

/// The lowest loss both models reached, and what each spent to first reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameLoss {
    pub target_loss: Figure,
    pub reach: Vec<Reach>,
    /// Sparse / dense of tokens, FLOPs and joules needed.
    pub ratio_tokens: Option<Figure>,
    pub ratio_flops: Option<Figure>,
    pub ratio_joules: Option<Figure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    pub role: Role,
    pub model: String,
    pub tokens: Figure,
    pub flops: Figure,
    pub joules: Option<Figure>,
}

/// Tokens each expert received, per MoE layer, summed over a phase's measured steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertLoad {
    pub role: Role,
    pub model: String,
    pub phase: Phase,
    pub steps: usize,
    pub layers: Vec<LayerLoad>,
    /// Expert assignments dropped by the capacity factor.
    pub dropped: Figure,
    /// Assignments made: tokens x top_k x MoE layers.
    pub assignments: Figure,
    pub dropped_fraction: Option<Figure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerLoad {
    /// Index among the MoE layers, from 0.
    pub moe_layer: usize,
    /// Index of the transformer block, from 0, where the profile says.
    pub block: Option<usize>,
    pub tokens_per_expert: Vec<u64>,
    /// The busiest expert's tokens over the mean (1 = perfectly even).
    pub max_over_mean: f64,
    /// Coefficient of variation of tokens per expert (population standard deviation / mean).
    pub cv: f64,
    /// Experts that received no token.
    pub idle_experts: usize,
}

/// Power over time from the sampler, averaged into at most a few hundred points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSeries {
    pub source: Option<String>,
    pub scope: Option<String>,
    pub samples: usize,
    /// (seconds since start, watts), each the mean of consecutive samples.
    pub points: Vec<[f64; 2]>,
    pub mean_power_w: Option<Figure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionSection {
    /// The settings projected at, what the projection leaves out, and why any part is missing.
    pub notes: Vec<String>,
    pub rows: Vec<ProjectionRow>,
    /// This machine's projection against what the run measured.
    pub this_machine: Vec<ProjectionCheck>,
    /// The seed's full-size comparison: GLaM 64B/64E against its dense base and GPT-3 175B,
    /// with the published figures (absent when a profile does not load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_size: Option<crate::project::SeedComparison>,
}

/// One model and phase projected onto one chip of a hardware profile, at the profile's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionRow {
    pub hardware: String,
    pub role: Role,
    pub model: String,
    pub phase: Phase,
    /// Seconds per token on one chip (the phase's denominator).
    pub seconds_per_token: Figure,
    /// Facility energy per token: power per chip x PUE x seconds per token.
    pub joules_per_token: Figure,
    /// What bounds an inference step on this chip: "compute", "memory" or "network".
    pub bound: Option<String>,
    /// Which power the projection uses (system per chip, chip TDP, ...) and the PUE.
    pub power_scope: String,
    pub pue: f64,
}

/// A projection for the machine the run used, next to the measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionCheck {
    pub hardware: String,
    pub role: Role,
    pub phase: Phase,
    /// "FLOP/s", "power" or "J/FLOP".
    pub metric: String,
    pub projected: Figure,
    pub measured: Figure,
    pub measured_over_projected: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Method {
    pub points: Vec<String>,
    pub docs: Vec<DocLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocLink {
    pub title: String,
    pub path: String,
}

/// `report A B`: two runs side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub report_format_version: u32,
    pub a: RunRef,
    pub b: RunRef,
    pub rows: Vec<CompareRow>,
    /// Why some figures do not compare as like with like (different sensors, scopes, models).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    pub dir: String,
    pub id: String,
    pub device: String,
    pub cpu_model: String,
    pub source: String,
    pub scope: String,
    pub complete: bool,
    pub status: String,
}

/// One figure of both runs. `role` is "sparse", "dense" or "sparse/dense" (the ratio).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub phase: Phase,
    pub role: String,
    pub metric: String,
    pub a: Option<Figure>,
    pub b: Option<Figure>,
    /// B over A.
    pub b_over_a: Option<f64>,
}
