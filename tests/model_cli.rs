//! `sparsewatt bench`, `train` and `generate` driven as a user does.

use std::path::Path;
use std::process::{Command, Output};

fn sw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sw-cli-{name}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn a_bad_profile_is_refused_with_the_file_and_key_and_exit_code_2() {
    let d_dir = temp("bad");
    let d = d_dir.path();
    let text = std::fs::read_to_string("profiles/glam-tiny.toml").unwrap();
    for (from, to, key) in [
        ("top_k = 2", "top_k = 9", "top_k"),
        ("heads = 4", "heads = 3", "heads"),
        ("d_model = 256", "d_model = 0", "d_model"),
        ("layers = 4", "layers = \"four\"", "layers"),
        ("top_k = 2", "top_k = 2\nwidth = 1", "width"),
    ] {
        let path = d.join("bad.toml");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let out = sw(&["bench", "--model", path.to_str().unwrap(), "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains(key),
            "{key}: {err}"
        );
    }
}

#[test]
fn bench_json_reports_positive_throughputs_with_the_documented_keys() {
    let out = sw(&[
        "bench",
        "--model",
        "glam-tiny",
        "--experts",
        "4",
        "--batch",
        "2",
        "--seq-len",
        "32",
        "--steps",
        "3",
        "--repeats",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    for k in [
        "train_tokens_per_s",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}");
    }
    // Each median lies within the fastest and slowest of the repetitions behind it, and the
    // throughput is the median's inverse over the tokens it covers.
    for k in ["train_step_s", "prefill_s", "decode_token_s"] {
        let med = v[k].as_f64().unwrap();
        let r = &v[format!("{k}_range")];
        let (lo, hi) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        assert!(
            0.0 < lo && lo <= med && med <= hi,
            "{k}: {lo} <= {med} <= {hi}"
        );
    }
    let per_step = v["train_tokens_per_s"].as_f64().unwrap() * v["train_step_s"].as_f64().unwrap();
    assert!((per_step - 2.0 * 32.0).abs() < 1e-6, "{per_step}");
    assert_eq!(v["experts"], 4);
    assert_eq!(v["model"], "glam-tiny-e4");
}

#[test]
fn train_writes_a_checkpoint_that_resumes_and_generates() {
    let d_dir = temp("train");
    let d = d_dir.path();
    let ck = d.join("ck");
    let ck_s = ck.to_str().unwrap();
    let common = [
        "--model",
        "glam-tiny",
        "--seq-len",
        "32",
        "--batch",
        "2",
        "--eval-every",
        "2",
    ];
    let mut args = vec!["train", "--steps", "2", "--out", ck_s];
    args.extend(common);
    let text = ok(&sw(&args));
    assert!(text.contains("2 steps"), "{text}");
    assert!(ck.join("model.safetensors").exists() && ck.join("profile.toml").exists());
    let text = ok(&sw(&[
        "train", "--steps", "4", "--resume", ck_s, "--out", ck_s, "--batch", "2",
    ]));
    assert!(text.contains("4 steps"), "{text}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4);
    let text = ok(&sw(&[
        "generate",
        "--checkpoint",
        ck_s,
        "--prompt",
        "ab",
        "--tokens",
        "8",
        "--temperature",
        "0",
    ]));
    assert!(
        text.starts_with("ab") && text.trim_end().len() >= 2,
        "{text}"
    );
    // A folder that is not a checkpoint is bad input, named.
    let out = sw(&["generate", "--checkpoint", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile.toml"));
    assert!(Path::new(&d).exists());
}

#[test]
fn train_on_a_user_file() {
    let d_dir = temp("data");
    let d = d_dir.path();
    let f = d.join("notes.txt");
    std::fs::write(
        &f,
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let text = ok(&sw(&[
        "train",
        "--data",
        f.to_str().unwrap(),
        "--steps",
        "2",
        "--seq-len",
        "32",
        "--batch",
        "2",
    ]));
    assert!(text.contains("validation loss"), "{text}");
    let out = sw(&[
        "train",
        "--data",
        d.join("missing.txt").to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.txt"));
}
