//! The meter's one error type. An absent or unreadable sensor is its own variant: the caller
//! falls back to the next reader instead of failing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// The reader cannot be used on this machine; `reason` says why in plain words
    /// (no driver, no powercap, permission denied).
    #[error("{reader}: {reason}")]
    Unavailable {
        reader: &'static str,
        reason: String,
    },
    /// A sensor file held something other than what its format promises.
    #[error("{}: expected {expected}, found {found:?}", path.display())]
    BadValue {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    /// A sensor that opened failed on a later read.
    #[error("{reader}: read failed: {reason}")]
    Read {
        reader: &'static str,
        reason: String,
    },
    /// `--sensor` named no known reader.
    #[error("unknown sensor {0:?}: expected one of auto, nvml, rapl, estimate")]
    UnknownSensor(String),
    /// A window could not be measured (its begin read failed, or the sensor gave no energy
    /// and no power).
    #[error("measurement window: {0}")]
    Window(String),
}
