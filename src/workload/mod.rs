//! One training step, one prefill, one decode step of a model; the A/B schedule of sparse and dense.

mod bench;
mod metrics_feed;
mod model_workload;
pub mod run;
pub mod session;

pub use bench::{bench, cpu_threads, BenchConfig, BenchResult};
pub use metrics_feed::MetricsFeed;
pub use model_workload::{InferenceShape, ModelWorkload};
pub use session::{RunSession, SessionConfig, SessionError, SessionHooks};

use std::collections::BTreeMap;

use crate::accounting::FlopCount;
use crate::runlog::{Record, RunHeader, RunSummary};
use crate::vocab::{Phase, Role};

/// What one step did, as the run records it (timing and energy are added by the caller).
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    /// The phase's denominator: tokens trained, prompt tokens, or generated tokens.
    pub tokens: u64,
    /// Executed FLOPs by component (training: forward + backward).
    pub flops: FlopCount,
    pub loss: Option<f64>,
    pub aux_loss: Option<f64>,
    /// Tokens routed to each expert, per MoE layer.
    pub expert_tokens: Vec<Vec<u64>>,
    pub dropped: u64,
    /// Corpus domain -> per MoE layer -> tokens sent to each expert (train steps only).
    pub domain_expert_tokens: BTreeMap<String, Vec<Vec<u64>>>,
}

/// A model the measured run can drive step by step. Implemented by the candle model's workload;
/// tests may use a fake.
pub trait Workload: Send {
    fn name(&self) -> &str;
    fn role(&self) -> Role;
    /// Run one step of `phase`. Decode steps continue the sequence the last prefill started.
    fn step(&mut self, phase: Phase) -> anyhow::Result<StepOutcome>;
    /// Validation loss on the held-out split, one figure per eval sequence (nats per token; the
    /// same sequences every time): their mean is the validation loss.
    fn validate(&mut self) -> anyhow::Result<Vec<f64>>;
    /// Whether a decode step can continue the current sequences (else a prefill must come first).
    fn can_decode(&self) -> bool;
    /// Waits until the work issued so far has finished (a GPU runs its kernels asynchronously).
    /// The run calls it after every step, so a step's seconds and the window around it end
    /// when the work does. A CPU workload is already finished when `step` returns.
    fn synchronize(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What the measured run sends to a live viewer (the dashboard), in this order: `Started` once,
/// then every `Record` as it is written, then `Finished` or `Failed`.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Started(Box<RunHeader>),
    Record(Box<Record>),
    Finished(Box<RunSummary>),
    Failed(String),
}

/// Whoever follows a run as it goes (the dashboard's channel, a metrics exporter). Called on the
/// run's thread, in the order things happen: `started` once, `record` for every record right
/// after it is appended to `records.jsonl`, then `ended`. It must return quickly: the run waits
/// for it (outside the energy windows, but a slow observer lengthens the run).
pub trait RunObserver: Send {
    fn started(&mut self, _header: &RunHeader) {}
    fn record(&mut self, record: &Record);
    /// The run's summary, or why it failed.
    fn ended(&mut self, _outcome: Result<&RunSummary, &str>) {}
}

/// The dashboard's feed: every call becomes a [`RunEvent`]. A receiver that has gone away does
/// not stop the measurement.
impl RunObserver for std::sync::mpsc::Sender<RunEvent> {
    fn started(&mut self, header: &RunHeader) {
        let _ = self.send(RunEvent::Started(Box::new(header.clone())));
    }

    fn record(&mut self, record: &Record) {
        let _ = self.send(RunEvent::Record(Box::new(record.clone())));
    }

    fn ended(&mut self, outcome: Result<&RunSummary, &str>) {
        let _ = self.send(match outcome {
            Ok(s) => RunEvent::Finished(Box::new(s.clone())),
            Err(e) => RunEvent::Failed(e.to_string()),
        });
    }
}

/// A closure called with every record (the start and the end ignored):
/// `OnRecord(|r: &Record| ...)`.
pub struct OnRecord<F>(pub F);

impl<F: FnMut(&Record) + Send> RunObserver for OnRecord<F> {
    fn record(&mut self, record: &Record) {
        (self.0)(record)
    }
}
