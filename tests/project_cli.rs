//! `sparsewatt project`, `hardware` and `profiles` driven as a user does.

use std::process::Command;

use serde_json::Value;

fn sw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(args)
        .output()
        .expect("run sparsewatt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (code, out, err) = sw(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number `{k}` in {v}"))
}

#[test]
fn gpt3_row_as_json_has_hours_energy_and_carbon() {
    let v = json(&[
        "project",
        "--flops",
        "3.14e23",
        "--hardware",
        "v100",
        "--chips",
        "10000",
        "--achieved-tflops",
        "24.6",
        "--power-w",
        "330",
        "--pue",
        "1.10",
        "--grid-kg-per-kwh",
        "0.429",
        "--json",
    ]);
    assert!(v.is_object());
    assert!((f(&v, "hours") / 24.0 - 14.8).abs() / 14.8 < 0.03);
    assert!((f(&v, "energy_mwh") - 1287.0).abs() / 1287.0 < 0.03);
    assert!((f(&v, "co2e_tonnes") - 552.1).abs() / 552.1 < 0.03);
}

#[test]
fn several_hardware_profiles_give_an_array_one_object_each() {
    let v = json(&[
        "project",
        "--flops",
        "1e22",
        "--hardware",
        "tpu-v4",
        "--hardware",
        "h100-sxm",
        "--chips",
        "64",
        "--json",
    ]);
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["hardware"], "tpu-v4");
    assert_eq!(a[1]["hardware"], "h100-sxm");
    for p in a {
        for k in ["hours", "energy_mwh", "co2e_tonnes"] {
            assert!(p[k].is_number(), "{k} in {p}");
        }
    }
}

#[test]
fn all_projects_onto_every_profile() {
    let v = json(&["project", "--flops", "1e20", "--hardware", "all", "--json"]);
    let (_, list, _) = sw(&["hardware", "--json"]);
    let hw: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), hw.as_array().unwrap().len());
}

#[test]
fn sparse_model_is_compared_with_its_dense_baseline() {
    let args = [
        "project",
        "--model",
        "glam-64b-64e",
        "--tokens",
        "280e9",
        "--hardware",
        "tpu-v4",
        "--chips",
        "1024",
    ];
    let v = json(&[&args[..], &["--json"]].concat());
    assert_eq!(v["compare"]["model"], "glam-64b-dense");
    let ratio = f(&v["compare"]["ratio"], "energy");
    let want = f(&v, "energy_mwh") / f(&v["compare"]["projection"], "energy_mwh");
    assert!((ratio - want).abs() < 1e-9);
    let (code, table, err) = sw(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("glam-64b-64e") && table.contains("glam-64b-dense") && table.contains("MWh")
    );
}

#[test]
fn inference_shows_the_roofline_bound() {
    let v = json(&[
        "project",
        "--model",
        "gpt3-175b",
        "--inference",
        "--batch",
        "1",
        "--context",
        "128",
        "--hardware",
        "h100-sxm",
        "--chips",
        "8",
        "--json",
    ]);
    assert_eq!(v["decode"]["bound"], "memory");
    let (code, out, err) = sw(&[
        "project",
        "--model",
        "glam-64b-64e",
        "--compare",
        "gpt3-175b",
        "--inference",
        "--hardware",
        "tpu-v4",
        "--chips",
        "64",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("decode") && out.contains("memory") && out.contains("gpt3-175b"),
        "{out}"
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let (code, _, err) = sw(&["project", "--flops", "1e20", "--hardware", "tpu-v9"]);
    assert_eq!(code, 2);
    assert!(err.contains("tpu-v9") && err.contains("tpu-v4"), "{err}");
    let (code, _, err) = sw(&[
        "project",
        "--flops",
        "1e20",
        "--hardware",
        "v100",
        "--mfu",
        "1.5",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--mfu"), "{err}");
    let (code, _, err) = sw(&["project", "--hardware", "v100"]);
    assert_eq!(code, 2);
    assert!(err.contains("--flops"), "{err}");
}

#[test]
fn a_bad_hardware_file_is_named_with_its_field() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("sw-hw-");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chip.toml");
    std::fs::write(
        &path,
        "name = \"chip\"\nkind = \"gpu\"\nsources = [\"x\"]\n[peak_tflops]\nbf16 = 100\ndefault = \"bf16\"\n\
         [memory]\ncapacity_bytes = 1e9\nbandwidth_gb_per_s = 100\n[power]\ntdp_w = 100\n",
    )
    .unwrap();
    let p = path.to_string_lossy().to_string();
    let (code, _, err) = sw(&["project", "--flops", "1e20", "--hardware", &p]);
    assert_eq!(code, 2);
    assert!(
        err.contains("chip.toml") && err.contains("defaults"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hardware_and_profiles_list_key_figures() {
    let (code, out, err) = sw(&["hardware"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tpu-v4") && out.contains("275") && out.contains("cpu-generic"),
        "{out}"
    );
    let (code, out, err) = sw(&["profiles"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("glam-64b-64e") && out.contains("gpt3-175b"),
        "{out}"
    );
}

/// A run header on a 2-CPU machine without a measured peak: `models`, `source`, and a run of
/// `batch` sequences of 8 tokens whose prefill serves `infer_batch` prompts of `prompt_len`.
fn header(
    models: Vec<sparsewatt::runlog::RunModel>,
    source: sparsewatt::vocab::EnergySource,
    batch: usize,
    prompt_len: usize,
    infer_batch: Option<usize>,
) -> sparsewatt::runlog::RunHeader {
    use sparsewatt::runlog::*;
    RunHeader {
        format_version: FORMAT_VERSION,
        id: "test".into(),
        started_unix_s: 0.0,
        command: "test".into(),
        sparsewatt_version: "0".into(),
        machine: MachineInfo {
            hostname: "h".into(),
            cpu_model: "c".into(),
            logical_cpus: 2,
            os: "linux".into(),
            device: "cpu".into(),
            hardware_profile: None,
            peak: None,
        },
        sensor: SensorInfo {
            source,
            scope: "test".into(),
            fallbacks: vec![],
            sample_hz: 10.0,
            update_period_s: None,
            update_energy_j: None,
            host_scope: None,
        },
        models,
        config: RunConfig {
            train_steps: 2,
            warmup_steps: 0,
            batch,
            seq_len: 8,
            prefill_steps: 0,
            prompt_len,
            decode_steps: 0,
            infer_batch,
            decode_tokens_per_step: None,
            idle_seconds: 0.0,
            data: "embedded".into(),
            seed: 0,
            eval_every: None,
            until_loss: None,
            target_loss: None,
        },
    }
}

/// A measured step of `tokens` in `seconds`, executing `flops` and drawing `joules` by `source`.
#[allow(clippy::too_many_arguments)]
fn step(
    model: &str,
    role: sparsewatt::vocab::Role,
    phase: sparsewatt::vocab::Phase,
    step: u64,
    tokens: u64,
    seconds: f64,
    flops: f64,
    (joules, source): (f64, sparsewatt::vocab::EnergySource),
) -> sparsewatt::runlog::Record {
    use sparsewatt::runlog::*;
    Record::Step(StepRecord {
        t_s: step as f64,
        model: model.into(),
        role,
        phase,
        step,
        warmup: false,
        tokens,
        seconds,
        flops,
        flops_by_component: Default::default(),
        energy: Some(Energy {
            joules,
            idle_joules: None,
            source,
            scope: "test".into(),
            window: None,
            host: None,
        }),
        loss: None,
        aux_loss: None,
        expert_tokens: vec![],
        dropped: 0,
        domain_expert_tokens: Default::default(),
    })
}

/// A run folder with two measured training steps of the sparse model on this machine (estimate).
fn write_run(dir: &std::path::Path) {
    use sparsewatt::profile::load_model;
    use sparsewatt::runlog::*;
    use sparsewatt::vocab::{EnergySource, Phase, Role};
    let models = vec![RunModel {
        role: Role::Sparse,
        profile: load_model("glam-tiny").unwrap(),
    }];
    let header = header(models, EnergySource::Estimate, 1, 4, None);
    let mut w = RunWriter::create(dir, &header).unwrap();
    for i in 0..2 {
        // 28 GFLOP/s (half of cpu-generic's 0.4 x 140 GFLOP/s) at 3.5 W (half its 7 W).
        let energy = (3.5, EnergySource::Estimate);
        let r = step(
            "glam-tiny",
            Role::Sparse,
            Phase::Train,
            i,
            100,
            1.0,
            28e9,
            energy,
        );
        w.append(&r).unwrap();
    }
    w.flush().unwrap();
}

#[test]
fn calibration_reports_this_machine_and_carries_on_request() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("sw-calib-");
    let _ = std::fs::remove_dir_all(&dir);
    write_run(&dir);
    let d = dir.to_string_lossy().to_string();
    let c = json(&["project", "--calibrate", &d, "--json"]);
    assert_eq!(c["hardware"], "cpu-generic");
    let t = &c["phases"][0];
    assert!((f(t, "utilization_ratio") - 0.5).abs() < 1e-9, "{t}");
    assert!((f(t, "power_ratio") - 0.5).abs() < 1e-9, "{t}");
    let plain = json(&[
        "project",
        "--flops",
        "1e21",
        "--hardware",
        "tpu-v4",
        "--json",
    ]);
    let carried = json(&[
        "project",
        "--flops",
        "1e21",
        "--hardware",
        "tpu-v4",
        "--calibrate",
        &d,
        "--carry",
        "--json",
    ]);
    assert!((f(&carried, "mfu") - 0.5 * f(&plain, "mfu")).abs() < 1e-9);
    assert_eq!(carried["power_scope"], "calibrated");
    // Half the utilisation and half the power: twice the time, the same energy.
    assert!((f(&carried, "hours") / f(&plain, "hours") - 2.0).abs() < 1e-9);
    assert!((f(&carried, "energy_mwh") / f(&plain, "energy_mwh") - 1.0).abs() < 1e-9);
    std::fs::remove_dir_all(&dir).ok();
}

/// A run of glam-tiny against dense-tiny whose step times come from a machine with known rates:
/// training 50 GFLOP/s, prefill 80 GFLOP/s, 20 GB/s of memory (probed at the start, in the
/// header), drawing 4 W.
fn write_roofline_run(dir: &std::path::Path) {
    use sparsewatt::profile::load_model;
    use sparsewatt::project::{prefill_traffic, train_traffic};
    use sparsewatt::runlog::*;
    use sparsewatt::vocab::{EnergySource, Phase, Role};
    let (sparse, dense) = (
        load_model("glam-tiny").unwrap(),
        load_model("dense-tiny").unwrap(),
    );
    let measurement = PeakMeasurement {
        peak_flops_per_s: 100e9,
        dtype: "f32".into(),
        device: "cpu".into(),
        n: 1024,
        warmup: 1,
        repetitions: 1,
        best_s: 1.0,
        median_s: 1.0,
        threads: 2,
        measured_unix_s: 0.0,
        memory_bytes_per_s: Some(20e9),
    };
    let models = [(Role::Sparse, &sparse), (Role::Dense, &dense)]
        .map(|(role, p)| RunModel {
            role,
            profile: p.clone(),
        })
        .to_vec();
    let mut header = header(models, EnergySource::Rapl, 8, 64, Some(4));
    // Not this machine: the bandwidth must come from the header, not from a probe now.
    header.machine.hostname = "elsewhere".into();
    header.machine.cpu_model = "not this machine's".into();
    header.machine.logical_cpus = 999;
    header.machine.peak = Some(RunPeak {
        flops_per_s: 100e9,
        dtype: "f32".into(),
        from: FROM_PROBE.into(),
        measurement: Some(measurement),
    });
    header.config.seq_len = 128;
    let mut w = RunWriter::create(dir, &header).unwrap();
    let mut i = 0;
    for (role, p) in [(Role::Sparse, &sparse), (Role::Dense, &dense)] {
        let phases = [
            (Phase::Train, 8 * 128, train_traffic(p, 8, 4.0), 50e9),
            (Phase::Prefill, 4 * 64, prefill_traffic(p, 4, 64, 4.0), 80e9),
        ];
        for (phase, tokens, t, rate) in phases {
            let seconds = (t.flops_per_token / rate + t.bytes_per_token / 20e9) * tokens as f64;
            for _ in 0..3 {
                let flops = t.flops_per_token * tokens as f64;
                let energy = (4.0 * seconds, EnergySource::Rapl);
                let r = step(&p.name, role, phase, i, tokens, seconds, flops, energy);
                w.append(&r).unwrap();
                i += 1;
            }
        }
    }
    w.flush().unwrap();
}

#[test]
fn a_run_predicts_another_models_training_on_its_machine_from_its_roofline() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("sw-roofline-");
    let _ = std::fs::remove_dir_all(&dir);
    write_roofline_run(&dir);
    let d = dir.to_string_lossy().to_string();
    let p = json(&[
        "project",
        "--calibrate",
        &d,
        "--model",
        "glam-tiny",
        "--experts",
        "64",
        "--json",
    ]);
    let fit = &p["fit"];
    assert_eq!(fit["bandwidth_from"], "run");
    assert!(
        (f(fit, "train_flops_per_s") / 50e9 - 1.0).abs() < 1e-6,
        "{fit}"
    );
    assert!(
        (f(fit, "prefill_flops_per_s") / 80e9 - 1.0).abs() < 1e-6,
        "{fit}"
    );
    // By hand: glam-tiny at 64 experts, the same traffic formula, the machine's rates.
    let e64 = sparsewatt::profile::load_model("glam-tiny")
        .unwrap()
        .with_overrides(Some(64), None)
        .unwrap();
    let t = sparsewatt::project::train_traffic(&e64, 8, 4.0);
    let s = t.flops_per_token / 50e9 + t.bytes_per_token / 20e9;
    assert!((f(&p, "tokens_per_s") * s - 1.0).abs() < 1e-6, "{p}");
    assert!(
        (f(&p, "joules_per_token") / (4.0 * s) - 1.0).abs() < 1e-6,
        "{p}"
    );
    assert_eq!(p["model"], "glam-tiny-e64");
    // The text names the terms and the energy source.
    let (code, out, err) = sw(&["project", "--calibrate", &d, "--model", "dense-tiny"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("measured at the run's start") && out.contains("rapl"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reader that stops early (`| head`, `| true`) ends the process quietly, as the pipe's writer
/// in any command-line tool: killed by SIGPIPE, not a panic with exit code 101.
#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(["project", "--seed", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first write
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "SIGPIPE; {:?} {stderr}",
        out.status
    );
}
