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
    v[k].as_f64().unwrap_or_else(|| panic!("no number `{k}` in {v}"))
}

#[test]
fn gpt3_row_as_json_has_hours_energy_and_carbon() {
    let v = json(&[
        "project", "--flops", "3.14e23", "--hardware", "v100", "--chips", "10000",
        "--achieved-tflops", "24.6", "--power-w", "330", "--pue", "1.10",
        "--grid-kg-per-kwh", "0.429", "--json",
    ]);
    assert!(v.is_object());
    assert!((f(&v, "hours") / 24.0 - 14.8).abs() / 14.8 < 0.03);
    assert!((f(&v, "energy_mwh") - 1287.0).abs() / 1287.0 < 0.03);
    assert!((f(&v, "co2e_tonnes") - 552.1).abs() / 552.1 < 0.03);
}

#[test]
fn several_hardware_profiles_give_an_array_one_object_each() {
    let v = json(&[
        "project", "--flops", "1e22", "--hardware", "tpu-v4", "--hardware", "h100-sxm",
        "--chips", "64", "--json",
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
    let v = json(&[
        "project", "--model", "glam-64b-64e", "--tokens", "280e9", "--hardware", "tpu-v4",
        "--chips", "1024", "--json",
    ]);
    assert_eq!(v["compare"]["model"], "glam-64b-dense");
    let ratio = f(&v["compare"]["ratio"], "energy");
    let want = f(&v, "energy_mwh") / f(&v["compare"]["projection"], "energy_mwh");
    assert!((ratio - want).abs() < 1e-9);
    let (code, table, err) = sw(&[
        "project", "--model", "glam-64b-64e", "--tokens", "280e9", "--hardware", "tpu-v4",
        "--chips", "1024",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("glam-64b-64e") && table.contains("glam-64b-dense") && table.contains("MWh"));
}

#[test]
fn inference_shows_the_roofline_bound() {
    let v = json(&[
        "project", "--model", "gpt3-175b", "--inference", "--batch", "1", "--context", "128",
        "--hardware", "h100-sxm", "--chips", "8", "--json",
    ]);
    assert_eq!(v["decode"]["bound"], "memory");
    let (code, out, err) = sw(&[
        "project", "--model", "glam-64b-64e", "--compare", "gpt3-175b", "--inference",
        "--hardware", "tpu-v4", "--chips", "64",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("decode") && out.contains("memory") && out.contains("gpt3-175b"), "{out}");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let (code, _, err) = sw(&["project", "--flops", "1e20", "--hardware", "tpu-v9"]);
    assert_eq!(code, 2);
    assert!(err.contains("tpu-v9") && err.contains("tpu-v4"), "{err}");
    let (code, _, err) = sw(&["project", "--flops", "1e20", "--hardware", "v100", "--mfu", "1.5"]);
    assert_eq!(code, 2);
    assert!(err.contains("--mfu"), "{err}");
    let (code, _, err) = sw(&["project", "--hardware", "v100"]);
    assert_eq!(code, 2);
    assert!(err.contains("--flops"), "{err}");
}

#[test]
fn a_bad_hardware_file_is_named_with_its_field() {
    let dir = std::env::temp_dir().join(format!("sw-hw-{}", std::process::id()));
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
    assert!(err.contains("chip.toml") && err.contains("defaults"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hardware_and_profiles_list_key_figures() {
    let (code, out, err) = sw(&["hardware"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tpu-v4") && out.contains("275") && out.contains("cpu-generic"), "{out}");
    let (code, out, err) = sw(&["profiles"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("glam-64b-64e") && out.contains("gpt3-175b"), "{out}");
}
