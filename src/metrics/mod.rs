//! Prometheus exposition of a run (`run --metrics ADDR`, `replay RUN --metrics ADDR`): counters
//! of what the machine did (tokens, joules, FLOPs, steps: every step, warm-up included), gauges of
//! power and loss, a histogram of step durations, kept up to date from the run's records as they
//! are appended and served over HTTP in Prometheus' text format. docs/metrics.md lists every
//! metric.
//!
//! [`RunMetrics`] is the registry and knows nothing of HTTP; [`Exporter`] serves one.

mod registry;
mod server;

pub use registry::{RunMetrics, STEP_SECONDS_BUCKETS};
pub use server::{bind, serve, serve_run, Exporter, Listener, LINGER};

/// Why the metrics could not be served. Both are the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// ADDR is not HOST:PORT.
    #[error("{addr:?} is not an address to listen on ({reason}): expected HOST:PORT, e.g. 127.0.0.1:9464")]
    BadAddr { addr: String, reason: String },
    /// The address is taken, or not this machine's.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}
