//! The stub libnvidia-ml (tests/nvml_stub/nvml_stub.c), compiled by the tests that load it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles the stub with `defines` into its own file (its own state) and returns its path.
pub fn build_stub(tag: &str, defines: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparsewatt-nvml-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("libnvidia-ml-stub-{tag}.so"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml_stub/nvml_stub.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(&src)
        .arg("-lm")
        .status()
        .expect("the system C compiler `cc` is needed to build the NVML stub");
    assert!(status.success(), "cc failed on {}", src.display());
    out
}
