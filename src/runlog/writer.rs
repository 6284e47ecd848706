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
    /// Create the run folder `dir` (its parents as needed) whole: the header and an empty
    /// records file are written into a new hidden folder beside it (made with `create_dir`, so
    /// no other run has it), then renamed to `dir`. The folder therefore appears with its
    /// header or not at all, and two runs given the same `dir` cannot share it: the rename
    /// onto a folder that holds files fails ([`RunFolderError::NotEmpty`]); an absent or empty
    /// `dir` is taken.
    pub fn create(dir: &Path, header: &RunHeader) -> Result<RunWriter, RunFolderError> {
        check_new_folder(dir)?;
        let staging = staging_folder(dir)?;
        let opened = (|| {
            write_header(&staging, header)?;
            let rp = staging.join(RECORDS_FILE);
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&rp)
                .map_err(io_err(&rp))
        })();
        let f = match opened {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&staging, dir) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(match e.kind() {
                std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
                    RunFolderError::NotEmpty {
                        path: dir.to_path_buf(),
                    }
                }
                _ => io_err(dir)(e),
            });
        }
        sync_folder(dir.parent());
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

/// A new hidden folder beside `dir` (its parents created as needed), claimed with `create_dir`.
fn staging_folder(dir: &Path) -> Result<PathBuf, RunFolderError> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy());
    let mut n = 0;
    loop {
        let staging = parent.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match std::fs::create_dir(&staging) {
            Ok(()) => return Ok(staging),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(io_err(&staging)(e)),
        }
    }
}

/// Make a rename inside `dir` durable (best effort where a folder cannot be opened for sync).
fn sync_folder(dir: Option<&Path>) {
    let dir = dir
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
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
        // The rename lives in the folder: make it durable too.
        sync_folder(Some(dir));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runlog::test_header;

    /// A run folder path inside a scratch folder that goes when the test ends.
    pub(crate) fn fresh(name: &str) -> (tempfile::TempDir, PathBuf) {
        // Not created: a run makes its own folder. The scratch folder around it goes when
        // the test ends, passed or failed.
        let scratch = tempfile::Builder::new()
            .prefix(&format!("sw-{name}-"))
            .tempdir()
            .unwrap();
        let path = scratch.path().join(name);
        (scratch, path)
    }

    fn log(message: &str) -> Record {
        Record::Log {
            t_s: 0.0,
            level: "info".into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_folder_that_holds_files_is_refused_and_an_empty_one_taken() {
        let (_scratch, dir) = fresh("sw-writer-out");
        drop(RunWriter::create(&dir, &test_header()).unwrap());
        let e = RunWriter::create(&dir, &test_header()).err().unwrap();
        assert!(matches!(e, RunFolderError::NotEmpty { .. }) && e.is_bad_input());
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        drop(RunWriter::create(&dir, &test_header()).unwrap());
        assert!(dir.join(HEADER_FILE).exists());
        // No staging folder is left beside it.
        let parent = dir.parent().unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(!std::fs::read_dir(parent).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&format!(".{name}"))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_runs_given_one_folder_at_once_cannot_share_it() {
        let (_scratch, dir) = fresh("sw-writer-race");
        let results: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| RunWriter::create(&dir, &test_header()).is_ok()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|&&ok| ok).count(), 1, "{results:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_are_on_disk_after_each_append_without_a_flush() {
        let (_scratch, dir) = fresh("sw-writer-append");
        let mut w = RunWriter::create(&dir, &test_header()).unwrap();
        w.append(&log("one")).unwrap();
        w.append(&log("two")).unwrap();
        // Read while the writer is alive: nothing waits in a buffer a kill would lose.
        assert_eq!(read_run(&dir).unwrap().records.len(), 2);
        w.finish().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_summary_that_does_not_parse_is_rebuilt_and_a_good_one_kept() {
        let (_scratch, dir) = fresh("sw-writer-summary");
        let mut w = RunWriter::create(&dir, &test_header()).unwrap();
        w.append(&log("x")).unwrap();
        drop(w);
        // A half-written summary (as a crash during a plain write leaves).
        std::fs::write(dir.join(SUMMARY_FILE), "{\"format_version\": 2, \"compl").unwrap();
        let rebuild = |run: &RunData| super::super::summarize(&run.records);
        let r = read_summary_or_rebuild(&dir, rebuild).unwrap();
        assert!(r
            .rebuilt
            .as_deref()
            .is_some_and(|w| w.contains("does not parse")));
        assert!(!r.summary.complete);
        let again =
            read_summary_or_rebuild(&dir, |_| panic!("a good summary is not rebuilt")).unwrap();
        assert_eq!((again.rebuilt, again.summary), (None, r.summary));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
