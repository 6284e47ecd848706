//! Writing the run folder so that what was measured survives: the records one line per write
//! (a killed process loses at most a line it was writing), made durable (fsync) at least once a
//! second and at the end; `run.json` and `summary.json` written whole to a temporary file in the
//! same folder and renamed over the old one, so a reader sees the old file or the new one, never
//! half of one. docs/run-folder.md states what survives what.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::folder::{io_err, read_run, RunData, RunFolderError, RunHeader};
use super::{Record, RunSummary, HEADER_FILE, RECORDS_FILE, SUMMARY_FILE};

/// The longest a written record waits before it is made durable (fsync).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Where the records go: a file, or in tests a sink that fails like a full disk.
pub trait RecordSink: Write + Send {
    /// Make everything written so far durable (`fsync` for a file).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl RecordSink for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

struct Shared {
    sink: Box<dyn RecordSink>,
    /// Written since the last sync.
    dirty: bool,
    /// A background sync that failed, reported by the next append.
    failed: Option<std::io::Error>,
}

/// Appends records to `records.jsonl`: each record is one write of one whole line (no buffer a
/// kill could lose), made durable by a background fsync at most [`SYNC_EVERY`] after it was
/// written, and at once by [`RunWriter::finish`] (and on drop).
pub struct RunWriter {
    dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
    syncer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves the sink as it was: keep using it.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunWriter {
    /// Create a new run folder `dir` (its parents as needed), write the header, open the records
    /// file. `dir` itself is created with `create_dir`, so two runs given the same folder cannot
    /// both have it; an existing empty folder is used, a non-empty one refused
    /// ([`RunFolderError::NotEmpty`]).
    pub fn create(dir: &Path, header: &RunHeader) -> Result<RunWriter, RunFolderError> {
        create_new_folder(dir)?;
        write_header(dir, header)?;
        let rp = dir.join(RECORDS_FILE);
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&rp)
            .map_err(io_err(&rp))?;
        Ok(RunWriter::with_sink(dir, Box::new(f)))
    }

    /// A writer for the run folder `dir` (which must already hold its header) whose records go
    /// to `sink`: tests inject failures here.
    pub fn with_sink(dir: &Path, sink: Box<dyn RecordSink>) -> RunWriter {
        let shared = Arc::new(Mutex::new(Shared {
            sink,
            dirty: false,
            failed: None,
        }));
        let (tx, rx) = mpsc::channel::<()>();
        let s = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("records-sync".into())
            .spawn(move || loop {
                match rx.recv_timeout(SYNC_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {
                        let mut g = lock(&s);
                        if g.dirty {
                            g.dirty = false;
                            if let Err(e) = g.sink.sync() {
                                g.failed.get_or_insert(e);
                            }
                        }
                    }
                    _ => return,
                }
            })
            .ok()
            .map(|h| (tx, h));
        RunWriter {
            dir: dir.to_path_buf(),
            shared,
            syncer,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn records_path(&self) -> PathBuf {
        self.dir.join(RECORDS_FILE)
    }

    /// Append one record as one line, in one write.
    pub fn append(&mut self, r: &Record) -> Result<(), RunFolderError> {
        let mut line = serde_json::to_string(r).expect("records serialise");
        line.push('\n');
        let path = self.records_path();
        let mut g = lock(&self.shared);
        if let Some(e) = g.failed.take() {
            return Err(io_err(&path)(e));
        }
        g.sink.write_all(line.as_bytes()).map_err(io_err(&path))?;
        g.dirty = true;
        Ok(())
    }

    /// Make every record written so far durable now.
    pub fn flush(&mut self) -> Result<(), RunFolderError> {
        let path = self.records_path();
        let mut g = lock(&self.shared);
        if let Some(e) = g.failed.take() {
            return Err(io_err(&path)(e));
        }
        g.sink.flush().map_err(io_err(&path))?;
        g.sink.sync().map_err(io_err(&path))?;
        g.dirty = false;
        Ok(())
    }

    /// The end of the run: records made durable, the background sync stopped.
    pub fn finish(mut self) -> Result<(), RunFolderError> {
        self.stop_syncer();
        self.flush()
    }

    fn stop_syncer(&mut self) {
        if let Some((tx, h)) = self.syncer.take() {
            drop(tx);
            let _ = h.join();
        }
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        self.stop_syncer();
        let mut g = lock(&self.shared);
        if g.dirty {
            let _ = g.sink.flush();
            let _ = g.sink.sync();
        }
    }
}

/// Refuse `dir` as a new run's folder when it already holds files (it may be absent or empty):
/// the check a run makes before its set-up, so a wrong `--out` fails at once.
pub fn check_new_folder(dir: &Path) -> Result<(), RunFolderError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => match entries.count() {
            0 => Ok(()),
            _ => Err(RunFolderError::NotEmpty {
                path: dir.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn create_new_folder(dir: &Path) -> Result<(), RunFolderError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
            if entries.next().is_some() {
                Err(RunFolderError::NotEmpty {
                    path: dir.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Write `bytes` to `path` so that a reader sees the old file or the new one whole: a temporary
/// file in the same folder, fsync'd, renamed over `path`, and the folder fsync'd so the rename
/// itself survives a power loss.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RunFolderError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename lives in the folder: make it durable too (best effort where a folder
        // cannot be opened for sync).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

fn write_header(dir: &Path, header: &RunHeader) -> Result<(), RunFolderError> {
    let text = serde_json::to_string_pretty(header).expect("header serialises");
    write_atomically(&dir.join(HEADER_FILE), text.as_bytes())
}

/// The one writer of `summary.json`: the run loop at the end of a run, and `report` for a run
/// that wrote none (or one that does not parse). Written atomically.
pub fn write_summary(dir: &Path, summary: &RunSummary) -> Result<PathBuf, RunFolderError> {
    let path = dir.join(SUMMARY_FILE);
    let mut text = serde_json::to_string_pretty(summary).expect("summaries serialise");
    text.push('\n');
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// What [`read_summary_or_rebuild`] found.
#[derive(Debug, Clone)]
pub struct SummaryRead {
    pub summary: RunSummary,
    /// `Some(why)` when `summary.json` was (re)written from the records: absent (a cut-off run)
    /// or not a readable summary (a half-written file from an older sparsewatt, a hand edit).
    pub rebuilt: Option<String>,
    pub path: PathBuf,
}

/// The run's `summary.json` when it parses; otherwise the summary `rebuild` computes from the
/// folder's records, written in its place. `rebuild` is the caller's (the report's) definition
/// of a run's summary, so this layer does not need the projections it may use.
pub fn read_summary_or_rebuild(
    dir: &Path,
    rebuild: impl FnOnce(&RunData) -> RunSummary,
) -> Result<SummaryRead, RunFolderError> {
    let path = dir.join(SUMMARY_FILE);
    let why = match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<RunSummary>(&text) {
            Ok(summary) => {
                return Ok(SummaryRead {
                    summary,
                    rebuilt: None,
                    path,
                })
            }
            Err(e) => format!("{} does not parse ({e})", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{} is absent", path.display())
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let run = read_run(dir)?;
    let summary = rebuild(&run);
    write_summary(dir, &summary)?;
    Ok(SummaryRead {
        summary,
        rebuilt: Some(why),
        path,
    })
}
