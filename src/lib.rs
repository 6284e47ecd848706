//! sparsewatt: what a token costs, in FLOPs and joules, on a sparse mixture-of-experts model against
//! a dense one, measured here and projected onto hardware that is not on the desk.
//! The modules are layers, each importing only those below it: docs/architecture.md.

pub mod accounting;
pub mod clock;
pub mod data;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod project;
pub mod report;
pub mod runlog;
pub mod stats;
pub mod tui;
pub mod units;
pub mod vocab;
pub mod workload;

// `model::tune_cpu_runtime` sets an option of mimalloc's C library: link it into every binary
// that uses this crate (tests and benches included), not only those that make it the allocator.
extern crate mimalloc;
