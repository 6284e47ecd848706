//! End to end: the real binary in a real terminal (tmux, 140×45). `sparsewatt replay` of the
//! fixture run shows the Overview, switches views with keys, quits on `q`, and leaves the terminal
//! as it found it (main screen, cooked mode). Skipped, with a message, where tmux is not installed.

#[path = "common/tools.rs"]
mod tools;
#[path = "common/tui_fixture.rs"]
#[allow(dead_code)]
mod tui_fixture;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Session {
    name: String,
    dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Session {
    /// Start `command` in a detached 140×45 tmux session; afterwards the pane records the exit
    /// status and the terminal modes in files of a scratch folder.
    fn start(tag: &str, command: &str) -> Option<Session> {
        if !tools::available("tmux", &["-V"], "the end-to-end dashboard test") {
            return None;
        }
        let scratch = tempfile::Builder::new()
            .prefix(&format!("sw-tui-{tag}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        // The scratch folder's unique name is the tmux session's too.
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let d = dir.display();
        let script = format!(
            "{command}; echo EXIT=$? > {d}/done.tmp; stty -a > {d}/stty; \
             mv {d}/done.tmp {d}/done; sleep 60"
        );
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-x", "140", "-y", "45", "-s", &name])
            .arg(script)
            .env("TERM", "xterm-256color")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Some(Session {
            name,
            dir,
            _scratch: scratch,
        })
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys failed");
    }

    /// Wait until the pane shows every one of `want` (10 s at most); returns the screen.
    fn wait_for(&self, want: &[&str]) -> String {
        self.wait_until(&format!("{want:?}"), 10, |s| {
            want.iter().all(|w| s.contains(w))
        })
    }

    /// Wait until `ok(screen)` (`secs` seconds at most); returns the screen.
    fn wait_until(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "waited {secs} s for {what}; the screen shows:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_done(&self, secs: u64) -> String {
        let start = Instant::now();
        let done = self.dir.join("done");
        while !done.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "did not exit within {secs} s; the screen shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(done).unwrap()
    }

    /// Terminal modes after the command: echo and canonical input back on.
    fn assert_restored(&self) {
        assert!(!self.alternate_screen_on(), "still on the alternate screen");
        let stty = std::fs::read_to_string(self.dir.join("stty")).unwrap();
        let words: Vec<&str> = stty.split_whitespace().collect();
        assert!(
            words.contains(&"icanon") && words.contains(&"echo"),
            "terminal left in raw mode: {stty}"
        );
    }

    fn alternate_screen_on(&self) -> bool {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sparsewatt")
}

fn fixture() -> PathBuf {
    tui_fixture::fixture_dir()
}

#[test]
fn replay_in_a_terminal_switches_views_quits_and_restores_the_terminal() {
    let cmd = format!("{} replay {}", bin(), fixture().display());
    let Some(s) = Session::start("replay", &cmd) else {
        return;
    };
    let overview = s.wait_for(&["1 Overview", "sparse", "dense", "J/tok", "measured: rapl"]);
    assert!(overview.contains("replay"), "{overview}");
    s.keys(&["Tab"]);
    s.wait_for(&["imbalance max/mean", "which experts each corpus domain"]);
    s.keys(&["3"]);
    s.wait_for(&["loss (nats/token) vs tokens trained"]);
    s.keys(&["4"]);
    s.wait_for(&["tpu-v4", "full size: glam-64b-64e vs glam-64b-dense"]);
    s.keys(&["C"]);
    s.wait_for(&["chips 2048 (full-size run)"]);
    s.keys(&["5"]);
    s.wait_for(&["sensor fell back"]);
    // The cursor moves back to the start: nothing recorded yet at 0 s.
    s.keys(&["1", "Home"]);
    s.wait_for(&["records 2/139"]);
    s.keys(&["?"]);
    s.wait_for(&["keys (any key closes)"]);
    s.keys(&["q"]);
    let done = s.wait_done(10);
    assert_eq!(done.trim(), "EXIT=0", "{}", s.screen());
    // Back on the main screen in cooked mode (echo and canonical input on).
    s.assert_restored();
}

/// Training steps the Overview reports for the sparse model ("steps: train N ...").
fn sparse_train_steps(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains("steps: train"))?;
    let after = line.split("steps: train").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn run_opens_the_dashboard_and_q_stops_the_run_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("run");
    // Enough steps that the run is still going when q arrives.
    let cmd = format!(
        "{} run --steps 400 --prefill-steps 1 --decode-steps 1 --idle-seconds 0.5 --batch 2 \
         --eval-every 2 --out {}",
        bin(),
        out.display()
    );
    let Some(s) = Session::start("run", &cmd) else {
        return;
    };
    let screen = s.wait_until("two sparse training steps on the Overview", 60, |sc| {
        sparse_train_steps(sc).is_some_and(|n| n >= 2)
    });
    for want in ["sparse", "dense", "J/tok", "running"] {
        assert!(
            screen.contains(want),
            "{want:?} not on the Overview:\n{screen}"
        );
    }
    assert!(
        ["ESTIMATE", "measured: rapl", "measured: nvml"]
            .iter()
            .any(|w| screen.contains(w)),
        "no energy source on screen:\n{screen}"
    );
    assert!(
        screen.contains("tpu-v4"),
        "no TPU projection row:\n{screen}"
    );
    s.keys(&["Tab"]);
    s.wait_for(&["imbalance max/mean"]);
    s.keys(&["4"]);
    s.wait_for(&[
        "full size: glam-64b-64e",
        "measured here: glam-tiny vs dense-tiny-matched",
    ]);
    s.keys(&["q"]);
    let done = s.wait_done(60);
    assert_eq!(done.trim(), "EXIT=0", "{}", s.screen());
    s.assert_restored();
    // The run stopped between steps, wrote its end record and its summary.
    let run = sparsewatt::runlog::read_run(&out).expect("a readable run folder");
    assert!(run.complete(), "no end record");
    let steps = run
        .records
        .iter()
        .filter(|r| matches!(r, sparsewatt::runlog::Record::Step(_)))
        .count();
    assert!(
        steps < 2 * 400,
        "the run was not stopped early ({steps} steps)"
    );
    assert!(out.join("summary.json").exists(), "no summary.json");
}

#[test]
fn replay_of_a_folder_that_is_not_a_run_fails_with_exit_2_naming_the_file() {
    let out = Command::new(bin())
        .args(["replay", "/nonexistent/run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/run/run.json"), "{err}");
}

#[test]
fn replay_without_a_terminal_says_it_needs_one() {
    let out = Command::new(bin())
        .args(["replay"])
        .arg(fixture())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
}

#[test]
fn bench_draw_reports_every_view() {
    let out = Command::new(bin())
        .args(["bench", "--frames", "20", "--draw"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for v in ["Overview", "Experts", "Training", "Projections", "Log"] {
        assert!(text.contains(v), "{v} missing:\n{text}");
    }
}
