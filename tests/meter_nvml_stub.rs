//! The NVML reader against a stub libnvidia-ml (tests/nvml_stub/nvml_stub.c, built here with the
//! system's cc): two GPUs at 150 W and 250 W, an energy counter that follows the clock or steps
//! a known amount per read, or only every so many milliseconds like a real board's, and can
//! restart (driver reset).

#[path = "common/scratch.rs"]
mod scratch;
use scratch::run_path;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sparsewatt::clock::SystemClock;
use sparsewatt::meter::{
    detect_update_period, open_sensor, EstimateParams, GpuSelector, Meter, NvmlSensor, Sensor,
    SensorChoice, Workplace, DETECT_FOR, NVML_LIB_ENV, POWERCAP_ROOT_ENV, SAFE_UPDATES_PER_WINDOW,
};
use sparsewatt::runlog::{read_run, summarize, Record};
use sparsewatt::vocab::EnergySource;
use sparsewatt::vocab::{GpuSample, Phase, Role};

#[path = "common/nvml_stub.rs"]
mod nvml_stub;
#[path = "common/small_run.rs"]
mod small_run;
use nvml_stub::build_stub;
use small_run::SMALL_SHAPES;

/// The stub's run-time option: its counter advances every this many ms.
const UPDATE_MS_ENV: &str = "NVML_STUB_UPDATE_MS";

/// Tests here change environment variables that `dlopen` reads: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const TOTAL_POWER_W: f64 = 400.0;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn the_reader_sums_both_gpus_and_reports_each() {
    let _g = serial();
    let lib = build_stub("step", &["STEP_MODE"]);
    let mut s = NvmlSensor::open(Some(&lib)).unwrap();
    assert_eq!(s.source(), EnergySource::Nvml);
    assert_eq!(
        s.scope(),
        "gpus 0, 1 (Stub GPU 0, Stub GPU 1), board power (nvml)"
    );
    // Each read advances GPU 0 by 1 J and GPU 1 by 2 J.
    let r = s.read().unwrap();
    assert_eq!(r.energy_j, Some(3.0));
    assert_eq!(r.power_w, Some(TOTAL_POWER_W));
    assert_eq!(r.instant_power_w, Some(402.0));
    assert_eq!(
        r.gpus,
        vec![
            GpuSample {
                index: 0,
                power_w: Some(150.0),
                utilization_pct: Some(90),
                sm_clock_mhz: Some(1980),
                temperature_c: Some(60),
                memory_used_bytes: Some(1 << 30),
            },
            GpuSample {
                index: 1,
                power_w: Some(250.0),
                utilization_pct: Some(91),
                sm_clock_mhz: Some(1980),
                temperature_c: Some(61),
                memory_used_bytes: Some(2 << 30),
            },
        ]
    );
    assert_eq!(s.read().unwrap().energy_j, Some(6.0));
}

#[test]
fn a_driver_reset_continues_from_the_new_value() {
    let _g = serial();
    // GPU 0's third energy read (the second `read`) comes back at 0.
    let lib = build_stub("reset", &["STEP_MODE", "RESET_AT_READ=3"]);
    let mut s = NvmlSensor::open(Some(&lib)).unwrap();
    let energies: Vec<f64> = (0..3)
        .map(|_| s.read().unwrap().energy_j.unwrap())
        .collect();
    // GPU 0: +1, +0 (reset), +1; GPU 1: +2 each time.
    assert_eq!(energies, vec![3.0, 5.0, 8.0]);
}

#[test]
fn a_window_at_constant_power_gives_power_times_time_within_2_percent() {
    let _g = serial();
    let lib = build_stub("clock", &[]);
    let sensor = NvmlSensor::open(Some(&lib)).unwrap();
    let m = Meter::start(Box::new(sensor), 20.0, Instant::now());
    let w = m.begin();
    std::thread::sleep(Duration::from_millis(150));
    let e = m.end(w).unwrap();
    let expect_j = TOTAL_POWER_W * e.seconds;
    assert!(
        (e.joules - expect_j).abs() <= 0.02 * expect_j,
        "{} J over {} s, expected {expect_j} J",
        e.joules,
        e.seconds
    );
    assert_eq!(e.source, EnergySource::Nvml);
    let samples = m.take_samples();
    assert!(samples.len() >= 2);
    assert!(samples.iter().all(|s| s.gpus.len() == 2));
}

#[test]
fn without_an_energy_counter_the_meter_integrates_power() {
    let _g = serial();
    let lib = build_stub("noenergy", &["NO_ENERGY", "NO_INSTANT"]);
    let mut sensor = NvmlSensor::open(Some(&lib)).unwrap();
    assert!(
        sensor.scope().contains("no energy counter"),
        "{}",
        sensor.scope()
    );
    let r = sensor.read().unwrap();
    assert_eq!(r.energy_j, None);
    assert_eq!(r.instant_power_w, None);
    assert_eq!(r.power_w, Some(TOTAL_POWER_W));
    let m = Meter::start(Box::new(sensor), 20.0, Instant::now());
    let w = m.begin();
    std::thread::sleep(Duration::from_millis(120));
    let e = m.end(w).unwrap();
    let expect_j = TOTAL_POWER_W * e.seconds;
    assert!(
        (e.joules - expect_j).abs() <= 0.02 * expect_j,
        "{} J, expected {expect_j} J",
        e.joules
    );
}

#[test]
fn auto_meters_the_gpu_the_model_runs_on_and_nvml_forced_meters_all_or_those_named() {
    let _g = serial();
    let lib = build_stub("auto", &["STEP_MODE"]);
    let est = EstimateParams::cpu_generic_for_cores(2);
    std::env::set_var(NVML_LIB_ENV, &lib);
    let gpu1 = Workplace::Gpus(vec![GpuSelector::Index(1)]);
    let (mut auto, tried) = open_sensor(SensorChoice::Auto, &est, &gpu1, &[]).unwrap();
    // GPU 1 alone: 250 W, 2 J per read, one GPU sample.
    let r = auto.read().unwrap();
    let forced_all = open_sensor(SensorChoice::Nvml, &est, &Workplace::Cpu, &[]);
    let forced_named = open_sensor(
        SensorChoice::Nvml,
        &est,
        &Workplace::Cpu,
        &[GpuSelector::Index(0)],
    );
    let missing = open_sensor(SensorChoice::Nvml, &est, &gpu1, &[GpuSelector::Index(7)]);
    std::env::remove_var(NVML_LIB_ENV);

    assert_eq!(auto.source(), EnergySource::Nvml);
    assert!(tried.is_empty(), "{tried:?}");
    assert_eq!(auto.scope(), "gpu 1 (Stub GPU 1), board power (nvml)");
    assert_eq!((r.energy_j, r.power_w), (Some(2.0), Some(250.0)));
    assert_eq!(r.gpus.len(), 1);
    assert_eq!(r.gpus[0].index, 1);

    let (mut sensor, _) = forced_all.unwrap();
    assert_eq!(sensor.read().unwrap().power_w, Some(400.0));
    let (mut sensor, _) = forced_named.unwrap();
    assert_eq!(sensor.scope(), "gpu 0 (Stub GPU 0), board power (nvml)");
    assert_eq!(sensor.read().unwrap().power_w, Some(150.0));
    let msg = missing.err().expect("no GPU 7").to_string();
    assert!(msg.contains("no GPU 7: NVML sees 2"), "{msg}");
}

#[test]
fn auto_never_meters_nvml_for_a_model_on_the_cpu() {
    let _g = serial();
    let lib = build_stub("cpu", &[]);
    std::env::set_var(NVML_LIB_ENV, &lib);
    std::env::set_var(POWERCAP_ROOT_ENV, "/nonexistent/powercap");
    let opened = open_sensor(
        SensorChoice::Auto,
        &EstimateParams::cpu_generic_for_cores(2),
        &Workplace::Cpu,
        &[],
    );
    std::env::remove_var(NVML_LIB_ENV);
    std::env::remove_var(POWERCAP_ROOT_ENV);
    let (sensor, tried) = opened.unwrap();
    assert_eq!(sensor.source(), EnergySource::Estimate);
    assert_eq!(tried[0], "nvml: not used: the model runs on the CPU");
}

#[test]
fn the_update_period_of_a_100_ms_counter_is_found() {
    let _g = serial();
    let lib = build_stub("period", &[]);
    std::env::set_var(UPDATE_MS_ENV, "100");
    let opened = NvmlSensor::open(Some(&lib));
    std::env::remove_var(UPDATE_MS_ENV);
    let mut sensor = opened.unwrap();
    let up = detect_update_period(&mut sensor, DETECT_FOR, &SystemClock).expect("a period");
    // Polled every ~0.2 ms: each change is seen within a fraction of a millisecond, later on a
    // loaded machine.
    assert!(
        up.period_s > 0.09 && up.period_s <= 0.101,
        "{} s",
        up.period_s
    );
    // Both GPUs step together: 0.1 s x 400 W.
    assert!((up.energy_j - 40.0).abs() < 0.01, "{} J", up.energy_j);
    assert!(up.updates >= 5, "{}", up.updates);
    // The continuous counter updates at every poll: a period far below a millisecond (a fresh
    // NVML: the stub's state starts again at its first init).
    drop(sensor);
    let mut sensor = NvmlSensor::open(Some(&lib)).unwrap();
    let up = detect_update_period(&mut sensor, DETECT_FOR, &SystemClock).expect("a period");
    assert!(up.period_s < 0.005, "{} s", up.period_s);
}

/// What these tests add to the smallest shapes: few steps of each phase, one evaluation.
const SMALL: &[&str] = &[
    "--eval-every",
    "1000",
    "--steps",
    "3",
    "--warmup",
    "1",
    "--prefill-steps",
    "2",
    "--decode-steps",
    "2",
];

#[test]
fn blocks_resolve_a_100_ms_counter_in_every_phase_within_10_percent() {
    let _g = serial();
    let lib = build_stub("run100", &[]);
    let (_scratch, dir) = run_path("blocks");
    let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(SMALL_SHAPES)
        .args(SMALL)
        .args([
            "--sensor",
            "nvml",
            "--idle-seconds",
            "0.3",
            "--min-windows",
            "1",
            // Lengthening is allowed whatever the machine's load: the test is about the windows,
            // and a loaded machine's slower steps would otherwise price it over the default.
            "--max-lengthen-s",
            "120",
        ])
        .args(["--out", dir.to_str().unwrap()])
        .env(NVML_LIB_ENV, &lib)
        .env(UPDATE_MS_ENV, "100")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run = read_run(&dir).unwrap();
    let p = run.header.sensor.update_period_s.expect("update period");
    assert!(p > 0.09 && p <= 0.101, "{p}");
    assert!((run.header.sensor.update_energy_j.unwrap() - 40.0).abs() < 0.01);
    // Every measured step shares a window of at least 20 counter updates.
    for s in run.steps().filter(|s| !s.warmup) {
        let w = s.energy.as_ref().unwrap().window.as_ref().unwrap();
        assert!(
            w.updates.unwrap() >= SAFE_UPDATES_PER_WINDOW && w.steps > 1,
            "{:?} {:?} step {}: {w:?}",
            s.role,
            s.phase,
            s.step
        );
    }
    // Each measured window's joules (its steps' shares summed) over its length: the stub's
    // 400 W within 10% (one 40 J update in 20 is 5%). Per window, not J/token x tokens/s of a
    // phase: a mean of ratios times a mean of ratios is not the power where windows' steps differ
    // in speed (a decode window's refill prefills ran 2.5x slower than the prefill window's on CI).
    let mut windows: BTreeMap<(String, u64), (f64, f64)> = BTreeMap::new();
    for s in run.steps().filter(|s| !s.warmup) {
        let e = s.energy.as_ref().unwrap();
        let w = e.window.as_ref().unwrap();
        let acc = windows.entry((s.model.clone(), w.index)).or_default();
        *acc = (acc.0 + e.joules, w.seconds);
    }
    assert!(windows.len() >= 6, "{windows:?}");
    for ((model, index), (joules, seconds)) in &windows {
        let watts = joules / seconds;
        assert!(
            (watts - TOTAL_POWER_W).abs() <= 0.1 * TOTAL_POWER_W,
            "{model} window {index}: {watts} W\n{stderr}"
        );
    }
    let s = summarize(&run.records);
    for role in [Role::Sparse, Role::Dense] {
        for phase in [Phase::Train, Phase::Prefill, Phase::Decode] {
            let ph = s.model(role).unwrap().phase(phase).unwrap();
            assert!(ph.joules_per_token.is_some(), "{role:?} {phase:?}");
            assert_eq!(ph.short_windows, 0, "{role:?} {phase:?}");
        }
    }
    let logs: Vec<&str> = run
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        logs.iter()
            .any(|m| m.contains("measured steps per model instead of")),
        "the short phases were lengthened: {logs:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cpu_run_with_nvml_present_does_not_use_it_under_auto() {
    let _g = serial();
    let lib = build_stub("cpurun", &[]);
    let (_scratch, dir) = run_path("cpu");
    let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(SMALL_SHAPES)
        .args(SMALL)
        .args(["--sensor", "auto", "--idle-seconds", "0"])
        .args(["--out", dir.to_str().unwrap()])
        .env(NVML_LIB_ENV, &lib)
        .env(POWERCAP_ROOT_ENV, "/nonexistent/powercap")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = read_run(&dir).unwrap();
    assert_eq!(run.header.machine.device, "cpu");
    assert_eq!(run.header.sensor.source, EnergySource::Estimate);
    assert!(run.header.sensor.fallbacks[0].contains("runs on the CPU"));
    assert!(run
        .steps()
        .all(|s| s.energy.as_ref().unwrap().source == EnergySource::Estimate));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auto_falls_back_to_rapl_then_the_estimate_saying_why() {
    let _g = serial();
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("sparsewatt-auto-rapl-");
    let pkg = tree.join("intel-rapl:0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("name"), "package-0\n").unwrap();
    std::fs::write(pkg.join("energy_uj"), "12345\n").unwrap();
    std::fs::write(pkg.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let est = EstimateParams::cpu_generic_for_cores(2);

    std::env::set_var(NVML_LIB_ENV, "/nonexistent/libnvidia-ml.so.1");
    std::env::set_var(POWERCAP_ROOT_ENV, &tree);
    let gpu0 = Workplace::Gpus(vec![GpuSelector::Index(0)]);
    let rapl = open_sensor(SensorChoice::Auto, &est, &gpu0, &[]);
    std::env::set_var(POWERCAP_ROOT_ENV, "/nonexistent/powercap");
    let estimate = open_sensor(SensorChoice::Auto, &est, &gpu0, &[]);
    let explicit_rapl = open_sensor(SensorChoice::Rapl, &est, &gpu0, &[]);
    let explicit_nvml = open_sensor(SensorChoice::Nvml, &est, &gpu0, &[]);
    std::env::remove_var(NVML_LIB_ENV);
    std::env::remove_var(POWERCAP_ROOT_ENV);
    let _ = std::fs::remove_dir_all(&tree);

    let (sensor, tried) = rapl.unwrap();
    assert_eq!(sensor.source(), EnergySource::Rapl);
    assert_eq!(sensor.scope(), "cpu package, 1 socket (rapl)");
    assert_eq!(tried.len(), 1);
    assert!(
        tried[0].starts_with("nvml: cannot load /nonexistent/libnvidia-ml.so.1"),
        "{tried:?}"
    );

    let (sensor, tried) = estimate.unwrap();
    assert_eq!(sensor.source(), EnergySource::Estimate);
    assert!(
        sensor.scope().starts_with("estimate: "),
        "{}",
        sensor.scope()
    );
    assert_eq!(tried.len(), 2);
    assert!(tried[0].starts_with("nvml: "), "{tried:?}");
    assert!(
        tried[1].starts_with("rapl: /nonexistent/powercap not found"),
        "{tried:?}"
    );

    // An explicit choice that cannot open is an error naming why.
    let msg = explicit_rapl.err().expect("no powercap").to_string();
    assert!(
        msg.starts_with("rapl: /nonexistent/powercap not found"),
        "{msg}"
    );
    let msg = explicit_nvml.err().expect("no NVML").to_string();
    assert!(msg.starts_with("nvml: cannot load"), "{msg}");
}
