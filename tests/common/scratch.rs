//! Where a test's run folder goes: a path inside a scratch folder that is removed when the test
//! ends, passed or failed.

use std::path::PathBuf;

/// `<scratch>/<name>`, not created (a run makes its own folder); keep the `TempDir` alive as long
/// as the path is used.
pub fn run_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("sw-{name}-"))
        .tempdir()
        .unwrap();
    let path = scratch.path().join(name);
    (scratch, path)
}
