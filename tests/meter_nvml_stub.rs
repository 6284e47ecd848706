//! The NVML reader against a stub libnvidia-ml (tests/nvml_stub/nvml_stub.c, built here with the
//! system's cc): two GPUs at 150 W and 250 W, an energy counter that follows the clock or steps
//! a known amount per read, and can restart (driver reset).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sparsewatt::meter::{
    open_sensor, EnergySource, EstimateParams, Meter, NvmlSensor, Sensor, SensorChoice,
    NVML_LIB_ENV, POWERCAP_ROOT_ENV,
};
use sparsewatt::runlog::GpuSample;

/// Tests here change environment variables that `dlopen` reads: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const TOTAL_POWER_W: f64 = 400.0;

/// Compiles the stub with `defines` into its own file (its own state) and returns its path.
fn build_stub(tag: &str, defines: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparsewatt-nvml-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("libnvidia-ml-stub-{tag}.so"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml_stub/nvml_stub.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(&src)
        .status()
        .expect("the system C compiler `cc` is needed to build the NVML stub");
    assert!(status.success(), "cc failed on {}", src.display());
    out
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn the_reader_sums_both_gpus_and_reports_each() {
    let _g = serial();
    let lib = build_stub("step", &["STEP_MODE"]);
    let mut s = NvmlSensor::open(Some(&lib)).unwrap();
    assert_eq!(s.source(), EnergySource::Nvml);
    assert_eq!(s.scope(), "2 GPUs, board power (nvml)");
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
fn auto_picks_nvml_when_it_loads() {
    let _g = serial();
    let lib = build_stub("auto", &[]);
    std::env::set_var(NVML_LIB_ENV, &lib);
    let opened = open_sensor(
        SensorChoice::Auto,
        &EstimateParams::cpu_generic_for_cores(2),
    );
    std::env::remove_var(NVML_LIB_ENV);
    let (sensor, tried) = opened.unwrap();
    assert_eq!(sensor.source(), EnergySource::Nvml);
    assert!(tried.is_empty(), "{tried:?}");
}

#[test]
fn auto_falls_back_to_rapl_then_the_estimate_saying_why() {
    let _g = serial();
    let tree = std::env::temp_dir().join(format!("sparsewatt-auto-rapl-{}", std::process::id()));
    let pkg = tree.join("intel-rapl:0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("name"), "package-0\n").unwrap();
    std::fs::write(pkg.join("energy_uj"), "12345\n").unwrap();
    std::fs::write(pkg.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let est = EstimateParams::cpu_generic_for_cores(2);

    std::env::set_var(NVML_LIB_ENV, "/nonexistent/libnvidia-ml.so.1");
    std::env::set_var(POWERCAP_ROOT_ENV, &tree);
    let rapl = open_sensor(SensorChoice::Auto, &est);
    std::env::set_var(POWERCAP_ROOT_ENV, "/nonexistent/powercap");
    let estimate = open_sensor(SensorChoice::Auto, &est);
    let explicit_rapl = open_sensor(SensorChoice::Rapl, &est);
    let explicit_nvml = open_sensor(SensorChoice::Nvml, &est);
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
