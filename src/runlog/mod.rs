//! The run folder: an append-only record of a run, written as it goes and readable after a crash.

mod folder;
/// A run header for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use folder::tests::header as test_header;
/// Step records and their energy for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use record::{test_energy, test_step};
/// A run folder path in a scratch folder, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use writer::tests::fresh as scratch_run_path;
mod idle;
mod machine;
mod peak;
mod record;
mod summary;
mod target;
mod writer;

pub use folder::{
    read_run, MachineInfo, RunConfig, RunData, RunFolderError, RunHeader, RunModel, SensorInfo,
    HEADER_FILE, RECORDS_FILE, SUMMARY_FILE,
};
pub use idle::{IdleBaseline, DRIFT_WARN_FRACTION};
pub use machine::{detect_machine, run_id, unique_run_id, unix_now};
pub use peak::{
    effective_peak, PeakMeasurement, ReplacedPeak, RunPeak, SummaryPeak, FROM_ACHIEVED, FROM_CACHE,
    FROM_PROBE,
};
pub use record::{
    unmeasured_window_model, unmeasured_window_warning, Energy, EvalRecord, HostEnergy, IdleRecord,
    IdleWhen, Record, StepRecord, WindowInfo, FORMAT_VERSION, OLDEST_READABLE_VERSION,
};
pub use summary::{summarize, JoulesPerToken, ModelSummary, PhaseSummary, Ratio, RunSummary};
pub use target::{
    at as interpolate_at, chosen_target, first_reach, to_target, Interval, LeadChange,
    ModelToTarget, TargetRatio, ToTarget, REPLICATES, TARGET_GIVEN, TARGET_LOWEST_REACHED,
    TARGET_UNTIL,
};
pub use writer::{
    check_new_folder, read_summary_or_rebuild, write_atomically, write_summary, RecordSink,
    RunWriter, SummaryRead, SYNC_EVERY,
};
