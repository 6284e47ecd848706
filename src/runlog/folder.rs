//! The run folder on disk:
//! - `run.json`: the header (format version, machine, sensor, resolved profiles), written first;
//! - `records.jsonl`: one [`Record`] per line, appended as the run goes (super::writer);
//! - `summary.json`: written at the end (or later, by `report`, for a cut-off run).
//!
//! What survives a kill, a power loss or a full disk is in docs/run-folder.md.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::record::{Record, StepRecord, FORMAT_VERSION, OLDEST_READABLE_VERSION};
use crate::profile::ModelProfile;
use crate::vocab::EnergySource;
use crate::vocab::Role;

pub const HEADER_FILE: &str = "run.json";
pub const RECORDS_FILE: &str = "records.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, thiserror::Error)]
pub enum RunFolderError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a sparsewatt run header: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("{path}: run folder format {found}, this sparsewatt reads formats {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    /// `--out` named a folder that already holds files. A run does not resume: the folder keeps
    /// measurements, not the models' weights and optimiser state, so a second run there would
    /// start from step 0 and mix its records with the first run's.
    #[error(
        "{path}: the run folder is not empty; name a new or empty folder (a run cannot resume \
         in it: the folder keeps measurements, not the models' weights and optimiser state)"
    )]
    NotEmpty { path: PathBuf },
}

impl RunFolderError {
    /// True when the error is the user's input being wrong (a folder that is not a run, or not
    /// empty where a new run must go), not a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RunFolderError::Io { .. } => false,
            RunFolderError::BadHeader { .. }
            | RunFolderError::Version { .. }
            | RunFolderError::NotEmpty { .. } => true,
        }
    }
}

/// What the machine is, for the report and for calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub hostname: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub os: String,
    /// The device the model ran on ("cpu", "cuda:0 NVIDIA H100 ...").
    pub device: String,
    /// Name of the hardware profile used for the estimate and for "this machine" projections.
    pub hardware_profile: Option<String>,
    /// The peak FLOP/s the run's utilisation divides by (absent in folders written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<super::RunPeak>,
}

/// The sensor the run used and why others were not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorInfo {
    pub source: EnergySource,
    pub scope: String,
    /// Readers tried before this one, each with the reason it could not be used.
    pub fallbacks: Vec<String>,
    pub sample_hz: f64,
    /// The sensor's counter update period found at the start (smallest time between two
    /// changes of its energy counter), seconds, and its smallest step, joules; absent for the
    /// estimate, a sensor without a counter, and folders written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_period_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_energy_j: Option<f64>,
    /// What the second meter covers, where one ran beside the main sensor (RAPL on the host CPU
    /// of a GPU run); steps then carry `energy.host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunModel {
    pub role: Role,
    pub profile: ModelProfile,
}

/// How the workload was set up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub train_steps: u64,
    pub warmup_steps: u64,
    pub batch: usize,
    pub seq_len: usize,
    pub prefill_steps: u64,
    pub prompt_len: usize,
    pub decode_steps: u64,
    /// Sequences served together in prefill and decode, and new tokens per sequence in one decode
    /// step (absent in folders written before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_step: Option<usize>,
    pub idle_seconds: f64,
    /// The corpus trained on: "embedded" or a path.
    pub data: String,
    pub seed: u64,
    /// Training steps between two evals, the stop rule's loss (`--until-loss`) and the
    /// to-target loss (`--target-loss`); absent in older folders and when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_loss: Option<f64>,
}

impl RunConfig {
    /// The to-target loss the run asked for (`--target-loss`, else `--until-loss`) and how it
    /// was chosen; `None`: the lowest loss all models reached.
    pub fn target(&self) -> Option<(f64, &'static str)> {
        super::target::chosen_target(self.target_loss, self.until_loss)
    }
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub format_version: u32,
    pub id: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: f64,
    pub command: String,
    pub sparsewatt_version: String,
    pub machine: MachineInfo,
    pub sensor: SensorInfo,
    pub models: Vec<RunModel>,
    pub config: RunConfig,
}

impl RunHeader {
    pub fn model(&self, role: Role) -> Option<&ModelProfile> {
        self.models
            .iter()
            .find(|m| m.role == role)
            .map(|m| &m.profile)
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunFolderError + '_ {
    move |source| RunFolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run folder as read back: header, the records up to the last complete line, and whether the
/// records ended cleanly.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub header: RunHeader,
    pub records: Vec<Record>,
    /// Lines that could not be read (a half-written last line of a killed run).
    pub unreadable_lines: usize,
}

impl RunData {
    /// The step records, in the order they were written.
    pub fn steps(&self) -> impl Iterator<Item = &StepRecord> {
        self.records.iter().filter_map(|r| match r {
            Record::Step(s) => Some(s),
            _ => None,
        })
    }

    /// True when the last record is the run's end record (a folder whose records go on after
    /// an `end` holds a second, unfinished run).
    pub fn complete(&self) -> bool {
        matches!(self.records.last(), Some(Record::End { .. }))
    }
}

/// Read a run folder. A missing or half-written `records.jsonl` tail is tolerated; a missing or
/// malformed header is an error naming the file.
pub fn read_run(dir: &Path) -> Result<RunData, RunFolderError> {
    let hp = dir.join(HEADER_FILE);
    let text = std::fs::read_to_string(&hp).map_err(io_err(&hp))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| RunFolderError::BadHeader {
            path: hp.clone(),
            message: e.to_string(),
        })?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&found) {
        return Err(RunFolderError::Version { path: hp, found });
    }
    let header: RunHeader =
        serde_json::from_value(value).map_err(|e| RunFolderError::BadHeader {
            path: hp.clone(),
            message: e.to_string(),
        })?;
    let rp = dir.join(RECORDS_FILE);
    let mut records = Vec::new();
    let mut unreadable_lines = 0;
    match File::open(&rp) {
        Ok(f) => {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io_err(&rp))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Record>(&line) {
                    Ok(r) => records.push(r),
                    Err(_) => unreadable_lines += 1,
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&rp)(e)),
    }
    Ok(RunData {
        dir: dir.to_path_buf(),
        header,
        records,
        unreadable_lines,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::load_model;
    use crate::runlog::RunWriter;
    use std::fs::OpenOptions;
    use std::io::Write;

    pub(crate) fn header() -> RunHeader {
        RunHeader {
            format_version: FORMAT_VERSION,
            id: "test".into(),
            started_unix_s: 0.0,
            command: "test".into(),
            sparsewatt_version: env!("CARGO_PKG_VERSION").into(),
            machine: MachineInfo {
                hostname: "h".into(),
                cpu_model: "c".into(),
                logical_cpus: 2,
                os: "linux".into(),
                device: "cpu".into(),
                hardware_profile: None,
                peak: None,
            },
            sensor: SensorInfo {
                source: EnergySource::Estimate,
                scope: "process cpu time".into(),
                fallbacks: vec![],
                sample_hz: 10.0,
                update_period_s: None,
                update_energy_j: None,
                host_scope: None,
            },
            models: vec![RunModel {
                role: Role::Sparse,
                profile: load_model("glam-tiny").unwrap(),
            }],
            config: RunConfig {
                train_steps: 1,
                warmup_steps: 0,
                batch: 1,
                seq_len: 8,
                prefill_steps: 0,
                prompt_len: 4,
                decode_steps: 0,
                infer_batch: None,
                decode_tokens_per_step: None,
                idle_seconds: 0.0,
                data: "embedded".into(),
                seed: 0,
                eval_every: None,
                until_loss: None,
                target_loss: None,
            },
        }
    }

    #[test]
    fn a_half_written_last_line_is_skipped_and_counted() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("sw-folder-");
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = RunWriter::create(&dir, &header()).unwrap();
        w.append(&Record::Log {
            t_s: 1.0,
            level: "info".into(),
            message: "hello".into(),
        })
        .unwrap();
        drop(w);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(RECORDS_FILE))
            .unwrap();
        write!(f, "{{\"kind\":\"step\",\"t_s\":").unwrap();
        let run = read_run(&dir).unwrap();
        assert_eq!((run.records.len(), run.unreadable_lines), (1, 1));
        assert!(!run.complete());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_format_1_folder_is_still_read() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("sw-folder-v1-");
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = serde_json::to_value(header()).unwrap();
        h["format_version"] = 1.into();
        // Format 1 headers have none of the fields added since.
        for k in ["eval_every", "until_loss", "target_loss"] {
            h["config"].as_object_mut().unwrap().remove(k);
        }
        std::fs::write(dir.join(HEADER_FILE), h.to_string()).unwrap();
        std::fs::write(
            dir.join(RECORDS_FILE),
            "{\"kind\":\"eval\",\"t_s\":1.0,\"model\":\"m\",\"role\":\"dense\",\"train_steps\":0,\"train_tokens\":0,\"train_flops\":0.0,\"train_joules\":null,\"val_loss\":2.0}\n",
        )
        .unwrap();
        let run = read_run(&dir).unwrap();
        assert_eq!((run.header.format_version, run.records.len()), (1, 1));
        assert_eq!(run.header.config.target(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_format_version_is_refused_with_the_file_named() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("sw-folder-v-");
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = serde_json::to_value(header()).unwrap();
        h["format_version"] = 99.into();
        std::fs::write(dir.join(HEADER_FILE), h.to_string()).unwrap();
        let e = read_run(&dir).unwrap_err().to_string();
        assert!(e.contains("run.json") && e.contains("99"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
