//! This machine's peak: `hardware --probe`, the per-machine cache a run reads it from, and
//! utilisation that never exceeds 100% in summary.json, the reports or the dashboard, even when a
//! run goes faster than the peak it was given.

#[path = "common/tui_fixture.rs"]
#[allow(dead_code)]
mod tui_fixture;

use std::path::Path;
use std::process::{Command, Output};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::Value;
use sparsewatt::runlog::{read_run, Record, HEADER_FILE, RECORDS_FILE};
use sparsewatt::tui::{buffer_text, render, App, View};

#[path = "common/small_run.rs"]
mod small_run;
use small_run::SMALL_SHAPES;

fn temp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sw-peak-{name}-"))
        .tempdir()
        .unwrap()
}

fn sparsewatt(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(args)
        .env("SPARSEWATT_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every number written just before a '%' in `text`.
fn percentages(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if c != '%' {
            continue;
        }
        let mut j = i;
        while j > 0 && (chars[j - 1].is_ascii_digit() || chars[j - 1] == '.') {
            j -= 1;
        }
        let s: String = chars[j..i].iter().collect();
        if let Ok(v) = s.trim_start_matches('.').parse::<f64>() {
            out.push(v);
        }
    }
    out
}

/// Every `utilization` number anywhere in a JSON value.
fn utilizations(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "utilization" {
                    if let Some(f) = x.as_f64() {
                        out.push(f);
                    } else if let Some(f) = x.get("value").and_then(Value::as_f64) {
                        out.push(f); // a report Figure
                    }
                }
                utilizations(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| utilizations(x, out)),
        _ => {}
    }
}

#[test]
fn the_probe_prints_its_measurement_as_json_and_caches_the_default_size() {
    let cache_dir = temp("probe-cache");
    let cache = cache_dir.path();
    // A small product: measured and printed, not cached (it does not reach the peak).
    let v = json_of(&sparsewatt(
        cache,
        &[
            "hardware",
            "--probe",
            "--json",
            "--size",
            "256",
            "--repetitions",
            "3",
        ],
    ));
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["device"], "cpu");
    assert_eq!(
        (v["n"].as_u64(), v["repetitions"].as_u64()),
        (Some(256), Some(3))
    );
    assert!(v["threads"].as_u64().unwrap() >= 1);
    let (peak, best, median) = (
        v["peak_flops_per_s"].as_f64().unwrap(),
        v["best_s"].as_f64().unwrap(),
        v["median_s"].as_f64().unwrap(),
    );
    // 2 n^3 FLOPs over the best time, computed here.
    assert!((peak * best / (2.0 * 256f64.powi(3)) - 1.0).abs() < 1e-9);
    assert!(best <= median);
    assert!(v["cache_file"].is_null());
    assert!(!cache.join("peaks.json").exists());
    // The default size is what a run would use: cached, under one key, with the same figure.
    let v = json_of(&sparsewatt(
        cache,
        &["hardware", "--probe", "--json", "--repetitions", "2"],
    ));
    assert_eq!(v["n"], 2048);
    let cached: Value =
        serde_json::from_str(&std::fs::read_to_string(cache.join("peaks.json")).unwrap()).unwrap();
    let entries = cached.as_object().unwrap();
    assert_eq!(entries.len(), 1);
    let (key, entry) = entries.iter().next().unwrap();
    assert!(key.contains("device cpu") && key.contains("f32"), "{key}");
    assert_eq!(entry["peak_flops_per_s"], v["peak_flops_per_s"]);
}

#[test]
fn probing_a_gpu_that_is_not_there_fails_clearly() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may have a GPU; this checks the default build
    }
    let cache_dir = temp("gpu-cache");
    let cache = cache_dir.path();
    let o = sparsewatt(cache, &["hardware", "--probe", "--gpu", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("GPU") && err.contains("cuda"), "{err}");
    assert!(o.stdout.is_empty());
}

/// The fixture run (no peak in its header) as if it ran on `device` (the fixture's own where
/// `None`), with every step's FLOPs times `scale`, so its throughput is `scale` times the
/// fixture's.
fn write_scaled_run(dir: &Path, device: Option<&str>, scale: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut header = tui_fixture::header();
    assert!(header.machine.peak.is_none());
    if let Some(device) = device {
        header.machine.device = device.into();
    }
    std::fs::write(
        dir.join(HEADER_FILE),
        serde_json::to_string_pretty(&header).unwrap(),
    )
    .unwrap();
    let mut lines = String::new();
    for mut r in tui_fixture::records() {
        if let Record::Step(s) = &mut r {
            s.flops *= scale;
        }
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    std::fs::write(dir.join(RECORDS_FILE), lines).unwrap();
}

#[test]
fn a_run_faster_than_its_profiles_peak_shows_no_utilisation_above_100_percent() {
    let dir_dir = temp("fast-run");
    let dir = dir_dir.path();
    // About 460 GFLOP/s of training against cpu-generic's static 140 GFLOP/s.
    write_scaled_run(dir, None, 10.0);
    let run = read_run(dir).unwrap();
    // Independently of the summary: the fastest phase's FLOP/s, from the records.
    let mut by_phase: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for s in run.steps().filter(|s| !s.warmup) {
        let e = by_phase
            .entry(format!("{:?}{:?}", s.role, s.phase))
            .or_default();
        e.0 += s.flops;
        e.1 += s.seconds;
    }
    let fastest = by_phase.values().map(|(f, s)| f / s).fold(0.0, f64::max);
    assert!(fastest > 140e9 * 2.0, "{fastest}");

    sparsewatt::report::write_all(dir).unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["peak"]["from"], "achieved");
    assert_eq!(summary["peak"]["replaced"]["from"], "cpu-generic");
    assert_eq!(summary["peak"]["replaced"]["flops_per_s"], 140e9);
    assert!((summary["peak"]["flops_per_s"].as_f64().unwrap() / fastest - 1.0).abs() < 1e-9);
    let mut u = Vec::new();
    utilizations(&summary, &mut u);
    assert!(u.len() >= 3, "{u:?}");
    assert!(u.iter().all(|&x| x > 0.0 && x <= 1.0), "{u:?}");
    assert!(u.contains(&1.0));
    for m in summary["models"].as_array().unwrap() {
        for p in m["phases"].as_array().unwrap() {
            assert_eq!(p["peak_from"], "achieved");
            let want = p["flops_per_s"].as_f64().unwrap() / fastest;
            assert!((p["utilization"].as_f64().unwrap() - want).abs() < 1e-9);
        }
    }

    // The reports: no percentage above 100, the utilisation column present, the peak explained.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("utilisation of peak") && md.contains("100.0%"));
    assert!(md.contains("highest achieved rate") && md.contains("cpu-generic"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for (name, text) in [("report.md", &md), ("report.html", &html)] {
        let over: Vec<f64> = percentages(text)
            .into_iter()
            .filter(|&p| p > 100.0)
            .collect();
        assert!(over.is_empty(), "{name}: {over:?}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let mut u = Vec::new();
    utilizations(&report, &mut u);
    assert!(!u.is_empty() && u.iter().all(|&x| x <= 1.0), "{u:?}");

    // The dashboard: its state and every view.
    let mut app = App::replay(run);
    let s = app.state.summary().unwrap();
    for m in &s.models {
        for p in &m.phases {
            assert!(p.utilization.unwrap() <= 1.0);
        }
    }
    let mut screens = String::new();
    for v in View::ALL {
        app.view = v;
        let mut t = Terminal::new(TestBackend::new(140, 45)).unwrap();
        t.draw(|f| render(&app, f)).unwrap();
        screens.push_str(&buffer_text(t.backend().buffer()));
    }
    assert!(screens.contains("100.0%"), "the fastest phase shows 100.0%");
    assert!(screens.contains("this run's best"));
    let over: Vec<f64> = percentages(&screens)
        .into_iter()
        .filter(|&p| p > 100.0)
        .collect();
    assert!(over.is_empty(), "{over:?}\n{screens}");

    // Calibration against the machine's profile: MFU at most 1 as well.
    let c = json_of(&sparsewatt(
        dir,
        &["project", "--calibrate", dir.to_str().unwrap(), "--json"],
    ));
    assert_eq!(c["hardware"], "cpu-generic");
    assert_eq!(c["peak"]["from"], "achieved");
    for p in c["phases"].as_array().unwrap() {
        assert!(p["achieved_mfu"].as_f64().unwrap() <= 1.0);
        assert!(p["run_utilization"].as_f64().unwrap() <= 1.0);
    }
}

/// What these tests add to the smallest shapes: the estimate and few steps of each phase.
const SMALL_RUN: &[&str] = &[
    "--idle-seconds",
    "0.2",
    "--sensor",
    "estimate",
    "--steps",
    "4",
    "--prefill-steps",
    "2",
    "--decode-steps",
    "2",
];

fn run_into(cache: &Path, out: &Path) -> Output {
    let mut args = [SMALL_SHAPES, SMALL_RUN].concat();
    args.extend(["--out", out.to_str().unwrap()]);
    let o = sparsewatt(cache, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn a_run_probes_once_then_reads_the_cache_and_an_understated_peak_gives_way_to_the_achieved_rate() {
    let cache_dir = temp("run-cache");
    let cache = cache_dir.path();
    // No cache yet: the run probes, says so, stores the peak in run.json and the cache.
    let first_dir = temp("run-first");
    let first = first_dir.path();
    run_into(cache, first);
    let header = read_json(&first.join("run.json"));
    let peak = &header["machine"]["peak"];
    assert_eq!(peak["from"], "probe");
    assert_eq!(peak["dtype"], "f32");
    assert_eq!(peak["measurement"]["n"], 1024);
    let summary = read_json(&first.join("summary.json"));
    let mut u = Vec::new();
    utilizations(&summary, &mut u);
    assert!(
        !u.is_empty() && u.iter().all(|&x| x > 0.0 && x <= 1.0),
        "{u:?}"
    );
    let peaks = read_json(&cache.join("peaks.json"));
    let (_, entry) = peaks.as_object().unwrap().iter().next().unwrap();
    assert_eq!(entry["peak_flops_per_s"], peak["flops_per_s"]);

    // The cached peak, understated 1,000-fold: the next run reads it (from = cache) and its
    // achieved rate becomes the peak.
    let mut understated = peaks.clone();
    for (_, e) in understated.as_object_mut().unwrap() {
        e["peak_flops_per_s"] = Value::from(1e8);
    }
    std::fs::write(cache.join("peaks.json"), understated.to_string()).unwrap();
    let second_dir = temp("run-second");
    let second = second_dir.path();
    let o = run_into(cache, second);
    assert!(String::from_utf8_lossy(&o.stderr).contains("from this machine's cache"));
    let header = read_json(&second.join("run.json"));
    assert_eq!(header["machine"]["peak"]["from"], "cache");
    assert_eq!(header["machine"]["peak"]["flops_per_s"], 1e8);
    let summary = read_json(&second.join("summary.json"));
    assert_eq!(summary["peak"]["from"], "achieved");
    assert_eq!(summary["peak"]["replaced"]["from"], "cache");
    let mut u = Vec::new();
    utilizations(&summary, &mut u);
    assert!(
        u.iter().all(|&x| x > 0.0 && x <= 1.0) && u.contains(&1.0),
        "{u:?}"
    );
    // The summary rebuilt from the folder (as `report` does) has the same peak and utilisation
    // (other figures may differ in the last digit after their round trip through JSON).
    let run = read_run(second).unwrap();
    let rebuilt = serde_json::to_value(sparsewatt::project::summarize_run(
        &run.header,
        &run.records,
    ))
    .unwrap();
    assert_eq!(rebuilt["peak"], summary["peak"]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    utilizations(&rebuilt, &mut a);
    utilizations(&summary, &mut b);
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12),
        "{a:?} {b:?}"
    );
}

#[test]
fn a_gpu_run_is_calibrated_against_its_gpus_profile_in_bf16() {
    // The fixture's ~46 GFLOP/s times 5,000: about 230 TFLOP/s of training on an "H200".
    let dir_dir = temp("gpu-run");
    let dir = dir_dir.path();
    write_scaled_run(dir, Some("cuda:0 NVIDIA H200"), 5000.0);
    let run = read_run(dir).unwrap();
    let train: Vec<_> = run
        .steps()
        .filter(|s| !s.warmup && s.phase == sparsewatt::vocab::Phase::Train)
        .filter(|s| s.role == sparsewatt::vocab::Role::Sparse)
        .collect();
    let achieved =
        train.iter().map(|s| s.flops).sum::<f64>() / train.iter().map(|s| s.seconds).sum::<f64>();
    let dir_s = dir.to_str().unwrap();
    // `--hardware h100-sxm` picks the projection targets; the calibration is the run's own GPU's.
    let c = json_of(&sparsewatt(
        dir,
        &[
            "project",
            "--calibrate",
            dir_s,
            "--hardware",
            "h100-sxm",
            "--json",
        ],
    ));
    assert_eq!(c["hardware"], "h200");
    assert_eq!(c["peak"]["dtype"], "bf16");
    assert_eq!(c["peak"]["flops_per_s"], 989e12);
    let t = c["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "sparse" && p["phase"] == "train")
        .unwrap();
    assert!((t["achieved_mfu"].as_f64().unwrap() - achieved / 989e12).abs() < 1e-9);
    // No probe in the header: the summary's utilisation is against the same profile peak.
    assert_eq!(t["run_peak_from"], "h200");
    // And a projection from it runs.
    let o = sparsewatt(
        dir,
        &[
            "project",
            "--calibrate",
            dir_s,
            "--carry",
            "--hardware",
            "h100-sxm",
            "--model",
            "glam-tiny",
            "--tokens",
            "1e9",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Calibration against `h200`"));

    // A GPU no profile describes: calibration refuses, naming the device and the way out.
    let other_dir = temp("gpu-unknown");
    let other = other_dir.path();
    write_scaled_run(other, Some("cuda:0 NVIDIA GeForce RTX 4090"), 100.0);
    let o = sparsewatt(other, &["project", "--calibrate", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("RTX 4090") && err.contains("--hardware"),
        "{err}"
    );
}
