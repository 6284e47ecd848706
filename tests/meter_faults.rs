//! Sensor faults: the sensor vanishing mid-run (the NVML stub's GPUs lost, a RAPL file gone), an
//! NVML counter reset and a RAPL counter wrap inside a window. The run goes on, the windows the
//! sensor could not read are recorded as unmeasured, and the report says so.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sparsewatt::meter::{Meter, NvmlSensor, NVML_LIB_ENV, POWERCAP_ROOT_ENV};
use sparsewatt::runlog::{read_run, Record};
use sparsewatt::vocab::Phase;

#[path = "common/nvml_stub.rs"]
mod nvml_stub;
#[path = "common/small_run.rs"]
mod small_run;
use nvml_stub::build_stub;
use small_run::SMALL_SHAPES;

/// Tests here set environment variables of the runs they start and share the machine's two
/// cores with them: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_gpu_lost_mid_run_leaves_its_windows_unmeasured_and_the_meter_going() {
    let _g = serial();
    // 2 energy reads per `read` (one per GPU): open, the start sample, and one window's begin
    // and end make 8; the next begin reads both counters (9, 10), then the GPUs are lost.
    let lib = build_stub("lost10", &["STEP_MODE", "FAIL_AFTER_READS=10"]);
    let sensor = NvmlSensor::open(Some(&lib)).unwrap();
    let m = Meter::start(Box::new(sensor), 0.0, Instant::now());
    let e = m
        .end(m.begin())
        .expect("the window before the loss is measured");
    assert_eq!(e.joules, 3.0, "1 J + 2 J per read");
    for _ in 0..3 {
        let err = m.end(m.begin()).unwrap_err().to_string();
        assert!(err.contains("nvml: read failed"), "{err}");
    }
    let (errors, last) = m.read_errors();
    assert_eq!(
        errors, 6,
        "each begin read twice (retried), no end read after a failed begin"
    );
    assert!(last.unwrap().contains("GPU 0"));
}

#[test]
fn a_driver_reset_mid_window_loses_one_read_interval_and_never_goes_negative() {
    let _g = serial();
    // GPU 0's energy reads: open, start sample, begin, a sample inside the window (its 4th:
    // the counter restarts from 0 there), end.
    let lib = build_stub("reset-window", &["STEP_MODE", "RESET_AT_READ=4"]);
    let sensor = NvmlSensor::open(Some(&lib)).unwrap();
    let m = Meter::start(Box::new(sensor), 0.0, Instant::now());
    let w = m.begin();
    let _inside = m.begin(); // a read inside the window, as the sampler's would be
    let e = m.end(w).unwrap();
    // GPU 1: +2 J at each of the 2 reads after the begin; GPU 0: +0 across the reset (the
    // interval from the read before it is lost, not counted negative), then +1 J.
    assert_eq!(e.joules, 5.0);
}

#[test]
fn a_rapl_counter_wrapping_mid_window_gives_the_energy_across_the_wrap() {
    use sparsewatt::meter::RaplSensor;
    let tree = tempfile::tempdir().unwrap();
    let pkg = tree.path().join("intel-rapl:0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("name"), "package-0\n").unwrap();
    std::fs::write(pkg.join("max_energy_range_uj"), "1000000000\n").unwrap();
    let set = |uj: u64| std::fs::write(pkg.join("energy_uj"), format!("{uj}\n")).unwrap();
    set(998_000_000);
    let m = Meter::start(
        Box::new(RaplSensor::open(tree.path()).unwrap()),
        0.0,
        Instant::now(),
    );
    // Begin 1 J below the top; a read inside the window 0.5 J below; the end 2.5 J past zero.
    set(999_000_000);
    let w = m.begin();
    set(999_500_000);
    let _inside = m.begin();
    set(2_500_000);
    assert!((m.end(w).unwrap().joules - 3.5).abs() < 1e-9);
    // The same wrap with no read between begin and end: one wrap between reads is resolved.
    set(999_000_000);
    let w = m.begin();
    set(1_000_000);
    assert!((m.end(w).unwrap().joules - 2.0).abs() < 1e-9);
}

/// Starts a small run with `sensor` and `env`, waits until its records hold a measured train
/// step, calls `vanish`, and returns the finished run's folder and standard error.
fn run_while_the_sensor_vanishes(
    sensor: &str,
    env: &[(&str, &std::ffi::OsStr)],
    vanish: impl FnOnce(),
) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparsewatt"));
    cmd.args(SMALL_SHAPES)
        .args(["--steps", "12", "--warmup", "1", "--eval-every", "1000"])
        .args(["--prefill-steps", "4", "--decode-steps", "4"])
        .args(["--sensor", sensor, "--idle-seconds", "0.2"])
        // Short phases are not lengthened to fill the sensor's windows for long: a fast test.
        .args(["--max-lengthen-s", "0.5"])
        .arg("--out")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let records = dir.join("records.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let measured = text.lines().any(|l| {
            l.contains("\"kind\":\"step\"")
                && l.contains("\"phase\":\"train\"")
                && l.contains("\"joules\"")
        });
        if measured {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a measured train step was seen"
        );
        assert!(Instant::now() < deadline, "no measured train step in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    vanish();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the run goes on and ends cleanly: {stderr}"
    );
    (tmp, stderr)
}

/// What a run whose sensor vanished must show: measured steps before, unmeasured after, the run
/// complete, and the report saying which windows were unmeasured.
fn assert_vanished_mid_run(dir: &Path, stderr: &str) {
    let run = read_run(dir).unwrap();
    assert!(run.complete(), "{stderr}");
    let steps: Vec<_> = run.steps().collect();
    let first_unmeasured = steps
        .iter()
        .position(|s| s.energy.is_none())
        .unwrap_or_else(|| panic!("no unmeasured step\n{stderr}"));
    assert!(first_unmeasured > 0, "the first steps were measured");
    // Once gone, gone: every later step is unmeasured, and every phase still ran.
    assert!(steps[first_unmeasured..].iter().all(|s| s.energy.is_none()));
    for phase in [Phase::Prefill, Phase::Decode] {
        assert!(steps.iter().any(|s| s.phase == phase), "{phase:?} ran");
    }
    let warnings: Vec<&str> = run
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Log { level, message, .. } if level == "warn" => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        warnings.iter().any(|m| m.contains("unmeasured")),
        "{warnings:?}"
    );
    let report = std::fs::read_to_string(dir.join("report.md")).expect("the report was written");
    // Per model and phase, how many steps went unmeasured; of the windows' warnings, the first
    // of each model's only.
    assert!(
        report.contains("energy unmeasured: ") && report.contains("measured steps have no energy"),
        "the report says which steps were unmeasured:\n{report}"
    );
    for model in ["glam-tiny", "dense-tiny-matched"] {
        let listed = report
            .lines()
            .filter(|l| l.contains(&format!("warn: {model}: window ")))
            .count();
        assert!(
            listed <= 1,
            "{model}: {listed} window warnings listed\n{report}"
        );
    }
}

#[test]
fn a_run_whose_gpu_is_lost_goes_on_with_its_windows_unmeasured() {
    let _g = serial();
    let lib = build_stub("lostfile", &[]);
    let flag = tempfile::tempdir().unwrap();
    let lost = flag.path().join("lost");
    let (tmp, stderr) = run_while_the_sensor_vanishes(
        "nvml",
        &[
            (NVML_LIB_ENV, lib.as_os_str()),
            ("NVML_STUB_LOST_FILE", lost.as_os_str()),
        ],
        || std::fs::write(&lost, "").unwrap(),
    );
    assert_vanished_mid_run(&tmp.path().join("run"), &stderr);
}

#[test]
fn a_run_whose_rapl_file_becomes_unreadable_goes_on_with_its_windows_unmeasured() {
    let _g = serial();
    let tree = tempfile::tempdir().unwrap();
    let pkg = tree.path().join("intel-rapl:0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("name"), "package-0\n").unwrap();
    std::fs::write(pkg.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let energy = pkg.join("energy_uj");
    std::fs::write(&energy, "0\n").unwrap();
    // The counter advances 50 mJ every 5 ms (10 W), each value written whole (a rename), until
    // the file goes away.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (pkg, stop) = (pkg.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut uj = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                uj += 50_000;
                let tmp = pkg.join("energy_uj.new");
                std::fs::write(&tmp, format!("{uj}\n")).unwrap();
                std::fs::rename(&tmp, pkg.join("energy_uj")).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (tmp, stderr) = run_while_the_sensor_vanishes(
        "rapl",
        &[(POWERCAP_ROOT_ENV, tree.path().as_os_str())],
        || {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            while !ticker.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::fs::remove_file(&energy).unwrap();
        },
    );
    assert_vanished_mid_run(&tmp.path().join("run"), &stderr);
}
