//! External programs some end-to-end tests drive (tmux, Chromium). Where one is missing the test
//! is skipped with a message, except where `SPARSEWATT_REQUIRE_TEST_TOOLS` is set (CI sets it,
//! after `scripts/install-test-tools`): there a missing tool fails the test instead of letting it
//! pass without having run.

use std::process::Command;

/// Whether `program args...` starts; `what` names the test for the skip message.
pub fn available(program: &str, args: &[&str], what: &str) -> bool {
    if Command::new(program).args(args).output().is_ok() {
        return true;
    }
    let required = std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{program} is not installed, and {REQUIRE_VAR} is set: {what} cannot run \
         (scripts/install-test-tools installs it)"
    );
    eprintln!(
        "SKIPPED: {program} is not installed: {what} (scripts/install-test-tools installs it)"
    );
    false
}

pub const REQUIRE_VAR: &str = "SPARSEWATT_REQUIRE_TEST_TOOLS";
