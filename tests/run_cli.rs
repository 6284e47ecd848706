//! `sparsewatt run --headless` end to end: the run folder, the summary, a clean stop on SIGINT and
//! a readable folder after SIGKILL.

#[path = "common/scratch.rs"]
mod scratch;
use scratch::run_path;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sparsewatt::accounting::{
    decode_flops_per_token_avg, even_expert_tokens, executed_forward_flops_with,
    prefill_flops_per_token, AttentionRun, TRAIN_FORWARD_MULTIPLE,
};
use sparsewatt::model::CAUSAL_BLOCK;
use sparsewatt::profile::load_model;
use sparsewatt::runlog::{read_run, summarize, IdleWhen, Record, RunData};
use sparsewatt::vocab::{Phase, Role};

#[path = "common/small_run.rs"]
mod small_run;
use small_run::SMALL_SHAPES;

/// What these tests add to the smallest shapes: the estimate, and frequent evaluation.
const SMALL: &[&str] = &[
    "--idle-seconds",
    "0.3",
    "--sensor",
    "estimate",
    "--eval-every",
    "2",
];

fn spawn(out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(SMALL_SHAPES)
        .args(SMALL)
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_steps(dir: &Path, n: usize) {
    let start = Instant::now();
    loop {
        let steps = std::fs::read_to_string(dir.join("records.jsonl"))
            .map(|t| t.matches("\"kind\":\"step\"").count())
            .unwrap_or(0);
        if steps >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {n} steps in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_short_run_leaves_a_folder_with_a_summary_of_both_models() {
    let (_scratch, dir) = run_path("short");
    let out = spawn(
        &dir,
        &[
            "--steps",
            "3",
            "--warmup",
            "1",
            "--prefill-steps",
            "2",
            "--decode-steps",
            "2",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = read_run(&dir).unwrap();
    assert!(run.complete());
    check_records(&run);
    check_summary_file(&dir, &run);
    check_phases_and_flops(&run);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The short run's records: the A B schedule, every step measured, the idle windows around
/// the workload, samples and evaluations.
fn check_records(run: &RunData) {
    let steps: Vec<_> = run.steps().collect();
    // A B A B: training alternates sparse and dense.
    let train: Vec<Role> = steps
        .iter()
        .filter(|s| s.phase == Phase::Train)
        .map(|s| s.role)
        .collect();
    assert_eq!(
        train,
        [
            Role::Sparse,
            Role::Dense,
            Role::Sparse,
            Role::Dense,
            Role::Sparse,
            Role::Dense
        ]
    );
    // Every step is measured, with its source; executed FLOPs are recorded.
    assert!(steps
        .iter()
        .all(|s| s.energy.as_ref().is_some_and(|e| e.joules > 0.0)));
    assert!(steps.iter().all(|s| s.flops > 0.0 && s.tokens > 0));
    // The idle baseline before the workload and after it, the last record before the end.
    let idle: Vec<IdleWhen> = run
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Idle(i) => Some(i.when),
            _ => None,
        })
        .collect();
    assert_eq!(idle, [IdleWhen::Before, IdleWhen::After]);
    assert!(!run
        .records
        .iter()
        .skip_while(|r| !matches!(r, Record::Idle(i) if i.when == IdleWhen::After))
        .any(|r| matches!(r, Record::Step(_))));
    assert!(run.records.iter().any(|r| matches!(r, Record::Sample(_))));
    let evals = run
        .records
        .iter()
        .filter(|r| matches!(r, Record::Eval(_)))
        .count();
    // At 0, 2 and 3 steps, both models.
    assert_eq!(evals, 2 * 3);
}

/// summary.json equals the summary recomputed from the folder (the records, and the header's
/// peak for utilisation), and gives the first answer.
fn check_summary_file(dir: &Path, run: &RunData) {
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let again = serde_json::to_value(sparsewatt::project::summarize_run(
        &run.header,
        &run.records,
    ))
    .unwrap();
    assert_close(&written, &again, "");
    // The first answer: both models' cost to the lowest validation loss both reached, each eval
    // with its sequences' losses behind the intervals.
    let t = &written["to_target"];
    assert_eq!(t["models"].as_array().unwrap().len(), 2);
    for m in t["models"].as_array().unwrap() {
        assert_eq!(m["reached"], true, "{m}");
        let j = &m["joules"];
        let (lo, mean, hi) = (
            j["ci95"][0].as_f64().unwrap(),
            j["mean"].as_f64().unwrap(),
            j["ci95"][1].as_f64().unwrap(),
        );
        assert!(lo <= mean && mean <= hi && mean > 0.0, "{j}");
    }
    assert!(t["val_sequences"].as_u64().unwrap() >= 2);
}

/// Steps per phase, and per-token FLOPs equal to the accounting's.
fn check_phases_and_flops(run: &RunData) {
    let s = summarize(&run.records);
    for role in [Role::Sparse, Role::Dense] {
        let m = s.model(role).unwrap();
        let t = m.phase(Phase::Train).unwrap();
        assert_eq!((t.steps, t.warmup_steps_excluded), (2, 1));
        assert_eq!(t.tokens, 2 * 2 * 128);
        for p in [Phase::Prefill, Phase::Decode] {
            let ph = m.phase(p).unwrap();
            assert_eq!(ph.steps, 2, "{role:?} {p:?}");
            assert!(ph.joules_per_token.is_some());
        }
    }
    // Per-token FLOPs equal the accounting's: without capacity every token reaches exactly top-k
    // experts, so the executed count matches the analytic one however the load falls. Training
    // runs the fused CPU attention, in causal blocks; prefill and decode (KV cache) run the
    // full rectangle the analytic counts assume.
    // The default baseline is glam-tiny's compute-matched dense model (shipped as a profile too).
    for (role, name) in [
        (Role::Sparse, "glam-tiny"),
        (Role::Dense, "dense-tiny-matched"),
    ] {
        assert_eq!(run.header.model(role).unwrap().name, name);
        let p = load_model(name).unwrap();
        let m = s.model(role).unwrap();
        let tokens = 2 * p.seq_len;
        let blocks = AttentionRun::CausalBlocks(CAUSAL_BLOCK);
        let loads = even_expert_tokens(&p, tokens);
        let train = executed_forward_flops_with(&p, 2, p.seq_len, &loads, blocks).total()
            * TRAIN_FORWARD_MULTIPLE
            / tokens as f64;
        let want = [
            (Phase::Train, train),
            (Phase::Prefill, prefill_flops_per_token(&p, 16).total()),
            (Phase::Decode, decode_flops_per_token_avg(&p, 16, 4).total()),
        ];
        for (phase, w) in want {
            let got = m.phase(phase).unwrap().flops_per_token;
            assert!(
                (got - w).abs() <= 1e-9 * w,
                "{name} {phase:?}: {got} vs {w}"
            );
        }
    }
    // Against the compute-matched baseline the FLOPs per token of every phase agree within 3%.
    for r in &s.ratios {
        let f = r.flops_per_token.unwrap();
        assert!((f - 1.0).abs() < 0.03, "{r:?}");
    }
}

/// Equal JSON, numbers within 1e-12 relative (JSON's decimal text parses back to the nearest
/// double, or one ulp away with serde_json's fast float parser).
fn assert_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{path}: {x} vs {y}"
            );
        }
        (Object(x), Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{path}/{k}"));
            }
        }
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_close(v, w, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[cfg(unix)]
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[cfg(unix)]
#[test]
fn sigint_stops_cleanly_with_a_summary_and_sigkill_leaves_a_readable_folder() {
    let (_scratch, dir) = run_path("int");
    let child = spawn(&dir, &["--steps", "10000"]);
    wait_for_steps(&dir, 3);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = read_run(&dir).unwrap();
    assert!(run.complete());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["end_reason"], "stopped by the user");

    let (_scratch, dir2) = run_path("kill");
    let mut child = spawn(&dir2, &["--steps", "10000"]);
    wait_for_steps(&dir2, 3);
    std::thread::sleep(Duration::from_millis(1200)); // past one flush
    signal(&child, "-KILL");
    let _ = child.wait();
    let run = read_run(&dir2).unwrap();
    assert!(!run.complete());
    assert!(!dir2.join("summary.json").exists());
    let s = summarize(&run.records);
    assert!(s.end_reason.contains("cut off"));
    assert!(s.model(Role::Sparse).is_some());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dir2).unwrap();
}

/// Seconds since the Unix epoch now.
#[cfg(unix)]
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// kill -9 at 20 moments drawn from a fixed seed, from before the folder exists to well into
/// training: every folder that exists is read by `report`, which says the run was cut off, and
/// holds every step the run had reported on standard error before the kill (a record is
/// written before it is reported, one write per line, so a kill loses at most the line being
/// written). A kill before the folder exists leaves nothing to lose.
#[cfg(unix)]
#[test]
fn kill_9_at_random_moments_leaves_folders_that_report_reads_with_every_reported_step() {
    let (_scratch, root) = run_path("kill9");
    std::fs::create_dir_all(&root).unwrap();
    let mut state: u64 = 0x5EED_0009;
    let mut next = move || {
        // SplitMix64: the moments are the same on every run of the test.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let mut folders = 0;
    for i in 0..20 {
        let dir = root.join(format!("run{i}"));
        let delay = Duration::from_secs_f64(0.2 + 3.3 * next());
        let child = spawn(&dir, &["--steps", "100000"]);
        std::thread::sleep(delay);
        signal(&child, "-KILL");
        let killed_at = unix_now();
        let out = child.wait_with_output().unwrap();
        let reported = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains(" step ") && l.contains(" tokens "))
            .count();
        if !dir.exists() {
            continue;
        }
        folders += 1;
        let run = read_run(&dir).unwrap_or_else(|e| panic!("kill {i} after {delay:?}: {e}"));
        assert!(!run.complete() && run.unreadable_lines <= 1, "kill {i}");
        // Every step reported before the kill is on disk; its records' times are within the
        // run's life.
        let ran_s = killed_at - run.header.started_unix_s;
        let last_t = run.records.iter().map(record_t).fold(0.0, f64::max);
        assert!(
            run.steps().count() >= reported,
            "kill {i} after {delay:?}: {reported} steps reported, {} on disk",
            run.steps().count()
        );
        assert!(
            last_t <= ran_s + 0.5,
            "kill {i}: a record at {last_t} s of {ran_s} s"
        );
        let json = dir.join("r.json");
        let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .args(["report", dir.to_str().unwrap(), "--format", "json", "--out"])
            .arg(&json)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kill {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(
            text.contains("cut off"),
            "kill {i}: the report does not say so"
        );
    }
    // The moments reach past the set-up: most kills find a folder.
    assert!(folders >= 10, "only {folders} of 20 kills found a folder");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The record's seconds since the run's start.
#[cfg(unix)]
fn record_t(r: &Record) -> f64 {
    match r {
        Record::Step(s) => s.t_s,
        Record::Eval(e) => e.t_s,
        Record::Sample(s) => s.t_s,
        Record::Log { t_s, .. } | Record::End { t_s, .. } => *t_s,
        Record::Idle(_) => 0.0,
    }
}
