//! `sparsewatt report` on run folders built here with known figures, checked against figures
//! computed independently in the test.

#[path = "common/report_fixture.rs"]
mod report_fixture;
use report_fixture::*;

use serde_json::Value;
use sparsewatt::runlog::*;
use sparsewatt::vocab::*;

#[test]
fn report_target_loss_sets_the_loss_of_the_first_answer() {
    let (_scratch_dir, dir) = fixture("target", &PLAIN);
    let v: Value = serde_json::from_str(&report(&[
        dir.to_str().unwrap(),
        "--format",
        "json",
        "--target-loss",
        "3.25",
    ]))
    .unwrap();
    let t = &v["to_target"];
    assert_eq!(t["target_loss"].as_f64(), Some(3.25));
    assert_eq!(t["target_from"], "given (--target-loss)");
    // By hand: sparse evals 4.0 and 3.0 at 2 and 4 steps: 3.25 is 3/4 of the way, at 3.5 steps;
    // dense evals 3.5, 2.5 at 4 and 6 steps: a quarter of the way, at 4.5 steps (2304 tokens).
    let tokens = |k: usize| t["models"][k]["tokens"]["mean"].as_f64().unwrap();
    assert!(
        close(tokens(0), 3.5 * 512.0) && close(tokens(1), 4.5 * 512.0),
        "{t}"
    );
    let bad = sparsewatt(&["report", dir.to_str().unwrap(), "--target-loss", "-1"]);
    assert_eq!(bad.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_per_token_figures_of_every_phase_are_those_computed_by_hand() {
    let (_scratch_dir, dir) = fixture("figures", &PLAIN);
    let v = json_of(&dir);
    assert_eq!(v["report_format_version"], 2);
    let train = &v["phases"][0];
    assert_eq!(train["phase"], "train");
    assert_eq!(train["denominator"], "tokens trained");
    let (ms, hs) = by_hand(&SPARSE_TRAIN_J[1..]);
    let (md, _) = by_hand(&DENSE_TRAIN_J[1..]);
    let j = &train["sparse"]["joules_per_token"];
    assert!(close(j["value"].as_f64().unwrap(), ms), "{j}");
    let ci = j["ci95"].as_array().unwrap();
    assert!(close(ci[0].as_f64().unwrap(), ms - hs) && close(ci[1].as_f64().unwrap(), ms + hs));
    assert_eq!(j["n"], 5);
    assert_eq!(
        (j["unit"].as_str(), j["source"].as_str()),
        (Some("J/token"), Some("rapl"))
    );
    assert_eq!(j["per"], "tokens trained");
    assert_eq!(train["sparse"]["warmup_steps_excluded"], 1);
    // Idle-subtracted: 10 W x 0.5 s off each step.
    let idle: Vec<f64> = SPARSE_TRAIN_J[1..]
        .iter()
        .map(|j| j - IDLE_W * SECONDS)
        .collect();
    let ji = train["sparse"]["joules_per_token_idle_subtracted"]["value"]
        .as_f64()
        .unwrap();
    assert!(close(ji, by_hand(&idle).0));
    let fpt = train["dense"]["flops_per_token"]["value"].as_f64().unwrap();
    assert!(close(fpt, DENSE_FLOPS / TOKENS as f64));
    let r = &train["ratio"];
    assert!(close(
        r["joules_per_token"]["value"].as_f64().unwrap(),
        ms / md
    ));
    assert!(close(
        r["flops_per_token"]["value"].as_f64().unwrap(),
        SPARSE_FLOPS / DENSE_FLOPS
    ));

    // Prefill and decode: per prompt token and per generated token, three steps each.
    assert_eq!(v["phases"][1]["denominator"], "prompt tokens");
    let dec = &v["phases"][2];
    assert_eq!(dec["phase"], "decode");
    assert_eq!(dec["sparse"]["joules_per_token"]["per"], "generated tokens");
    let x: Vec<f64> = DECODE_J.0.iter().map(|j| j / GENERATED as f64).collect();
    let mean = x.iter().sum::<f64>() / 3.0;
    let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let jd = &dec["sparse"]["joules_per_token"];
    assert!(close(jd["value"].as_f64().unwrap(), mean));
    assert!(close(
        jd["ci95"][1].as_f64().unwrap(),
        mean + T2 * sd / 3f64.sqrt()
    ));
    assert!(close(
        dec["sparse"]["flops_per_token"]["value"].as_f64().unwrap(),
        SPARSE_FLOPS / TOKENS as f64 / 3.0
    ));
    let dense_dec = DECODE_J.1.iter().sum::<f64>() / 3.0 / GENERATED as f64;
    assert!(close(
        dec["ratio"]["joules_per_token"]["value"].as_f64().unwrap(),
        mean / dense_dec
    ));
}

#[test]
fn parameters_and_expert_load_are_those_counted_by_hand() {
    let (_scratch_dir, dir) = fixture("figures", &PLAIN);
    let v = json_of(&dir);

    // Parameters by hand for glam-tiny (d 256, d_ff 1024, 4 blocks, MoE in blocks 1 and 3, 8 experts,
    // top-2, tied embeddings): embeddings (256 + 128) x 256, attention 4 x 256^2 a block, FFN
    // 2 x 256 x 1024, router 256 x 8, LayerNorms 2 x 2 x 256 a block plus the final 2 x 256.
    let ffn = 2.0 * 256.0 * 1024.0;
    let common =
        384.0 * 256.0 + 4.0 * (4.0 * 65536.0) + 4.0 * 1024.0 + 512.0 + 2.0 * ffn + 2.0 * 2048.0;
    let m = &v["models"][0];
    assert_eq!(m["role"], "sparse");
    assert_eq!(
        m["total_params"]["value"].as_f64().unwrap(),
        common + 2.0 * 8.0 * ffn
    );
    assert_eq!(
        m["active_params"]["value"].as_f64().unwrap(),
        common + 2.0 * 2.0 * ffn
    );

    // Expert load (train first): five measured steps of LOAD in each of the two MoE layers (blocks 1 and 3).
    let e = &v["expert_load"][0];
    assert_eq!(
        (e["model"].as_str(), e["steps"].as_u64()),
        (Some("glam-tiny"), Some(5))
    );
    let l1 = &e["layers"][1];
    assert_eq!(l1["block"], 3);
    let want: Vec<u64> = LOAD.iter().map(|c| 5 * c).collect();
    assert_eq!(
        serde_json::from_value::<Vec<u64>>(l1["tokens_per_expert"].clone()).unwrap(),
        want
    );
    assert!(close(l1["max_over_mean"].as_f64().unwrap(), 256.0 / 128.0));
    assert_eq!(e["dropped"]["value"].as_f64(), Some(15.0));
    // 5 steps x 512 tokens x top-2 x 2 MoE layers.
    assert_eq!(e["assignments"]["value"].as_f64(), Some(10240.0));
}

#[test]
fn energy_to_the_same_loss_and_to_the_target_is_that_summed_by_hand() {
    let (_scratch_dir, dir) = fixture("figures", &PLAIN);
    let v = json_of(&dir);

    // Same loss: target 2.5; sparse at 2560 tokens, dense at 3072.
    let s = &v["data_efficiency"]["same_loss"];
    assert_eq!(v["data_efficiency"]["basis"], "validation loss");
    assert_eq!(s["target_loss"]["value"].as_f64(), Some(2.5));
    assert!(close(
        s["reach"][0]["tokens"]["value"].as_f64().unwrap(),
        2560.0
    ));
    assert!(close(
        s["reach"][1]["tokens"]["value"].as_f64().unwrap(),
        3072.0
    ));
    assert!(close(
        s["ratio_joules"]["value"].as_f64().unwrap(),
        2560.0 * 0.02 / (3072.0 * 0.04)
    ));

    // To target (the first answer): the same crossing, with the steps' joules summed by hand
    // (warm-up included): sparse at 5 steps, halfway between the evals after 4 and 6 steps;
    // dense at 6.
    let t = &v["to_target"];
    assert_eq!(t["target_loss"].as_f64(), Some(2.5));
    let sum = |j: &[f64]| j.iter().sum::<f64>();
    let sj = sum(&SPARSE_TRAIN_J[..4]) + 0.5 * (SPARSE_TRAIN_J[4] + SPARSE_TRAIN_J[5]);
    let dj = sum(&DENSE_TRAIN_J);
    let tj = |k: usize| t["models"][k]["joules"]["mean"].as_f64().unwrap();
    assert_eq!(t["models"][0]["role"], "sparse");
    assert!(close(tj(0), sj) && close(tj(1), dj), "{t}");
    assert!(close(
        t["models"][0]["tokens"]["mean"].as_f64().unwrap(),
        2560.0
    ));
    let idle = t["models"][1]["joules_idle_subtracted"]["mean"]
        .as_f64()
        .unwrap();
    assert!(close(idle, dj - 6.0 * IDLE_W * SECONDS));
    assert!(close(
        t["ratio"]["joules"]["mean"].as_f64().unwrap(),
        sj / dj
    ));
    let q = v["answer"]["quality"][0].as_str().unwrap();
    assert!(
        q.starts_with(
            "To reach validation loss 2.5000 nats/token, the sparse model (glam-tiny) used"
        ) && q.contains("(rapl;"),
        "{q}"
    );

    assert!(close(
        v["idle"]["power_w"]["value"].as_f64().unwrap(),
        IDLE_W
    ));
    assert!(close(
        v["power"]["mean_power_w"]["value"].as_f64().unwrap(),
        32.0
    ));
    assert!(v["run"]["complete"].as_bool().unwrap());
    assert!(v["notes"][0].as_str().unwrap().contains("sensor read late"));
}

#[test]
fn the_markdown_gives_the_energy_to_the_target_first_then_per_token_cost() {
    let (_scratch_dir, dir) = fixture("figures", &PLAIN);
    // The Markdown says the same: energy to the target first (within its first 20 lines), then
    // per-token cost.
    let md = report(&[dir.to_str().unwrap()]);
    let head: Vec<&str> = md.lines().take(20).collect();
    assert!(
        head.iter()
            .any(|l| l.contains("To reach validation loss 2.5000")),
        "{}",
        head.join("\n")
    );
    let q = md.find("## Per-token cost").unwrap();
    assert!(
        md.find("## Energy to reach the same validation loss")
            .unwrap()
            < q
    );
    assert!(q < md.find("## Models").unwrap());
    let row = md
        .lines()
        .find(|l| l.starts_with("| train (per token trained)"))
        .unwrap();
    // 11 / 512 = 0.021484..., shown with three significant digits.
    assert!(row.contains("0.0215 ± "), "{row}");
    assert!(row.contains("5, 5"), "{row}");
}

#[test]
fn a_cut_off_run_is_reported_and_says_so() {
    let (_scratch_dir, dir) = fixture(
        "cutoff",
        &Fixture {
            complete: false,
            ..PLAIN
        },
    );
    // Killed mid-write: half a step record at the end.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(RECORDS_FILE))
        .unwrap();
    write!(f, "{{\"kind\":\"step\",\"t_s\":9.1,\"model\":\"glam").unwrap();
    drop(f);
    let md = report(&[dir.to_str().unwrap()]);
    assert!(
        md.contains("Run cut off: records end without an end record (killed or crashed); figures cover the 24 steps recorded (22 measured after warm-up)."),
        "{md}"
    );
    assert!(md.contains("half-written last line"));
    let v = json_of(&dir);
    assert_eq!(v["run"]["complete"], false);
    assert_eq!(v["run"]["unreadable_lines"], 1);
    // The figures are there all the same.
    assert_eq!(v["phases"][0]["sparse"]["joules_per_token"]["n"], 5);
    // write_all (what a run calls at its end) also leaves the summary a cut-off run never wrote.
    let written = sparsewatt::report::write_all(&dir).unwrap();
    for name in ["summary.json", "report.md", "report.html", "report.json"] {
        assert!(written.contains(&dir.join(name)), "{name}: {written:?}");
    }
    // A summary cut off mid-write is not trusted: the next report rebuilds it from the records.
    let whole = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    std::fs::write(dir.join("summary.json"), &whole[..whole.len() / 2]).unwrap();
    let written = sparsewatt::report::write_all(&dir).unwrap();
    assert!(written.contains(&dir.join("summary.json")), "{written:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.json")).unwrap(),
        whole
    );
    let written = sparsewatt::report::write_all(&dir).unwrap();
    assert!(
        !written.contains(&dir.join("summary.json")),
        "a good summary is kept"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("class=\"cutoff\"") && html.contains("Run cut off"));
    assert_well_formed(&html);
    // One layout, two renderings: the same sections in the same order.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let md_sections: Vec<&str> = md.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    let html_sections: Vec<&str> = html
        .split("<h2>")
        .skip(1)
        .filter_map(|s| s.split("</h2>").next())
        .collect();
    assert!(md_sections.len() >= 8, "{md_sections:?}");
    assert_eq!(md_sections, html_sections);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every object with a `value` also names its `unit` and `source`.
fn figures_carry_unit_and_source(v: &Value, path: &str) {
    match v {
        Value::Object(m) => {
            if m.contains_key("value") {
                assert!(
                    m["unit"].is_string() && m["source"].is_string(),
                    "{path}: {v}"
                );
            }
            for (k, x) in m {
                figures_carry_unit_and_source(x, &format!("{path}.{k}"));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                figures_carry_unit_and_source(x, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Equal JSON, floats equal to the last few bits (serde_json's default float parsing may round
/// the last bit differently).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn the_json_round_trips_and_every_figure_has_unit_and_source() {
    let (_scratch_dir, dir) = fixture("json", &PLAIN);
    let text = report(&[dir.to_str().unwrap(), "--format", "json"]);
    let r: sparsewatt::report::Report = serde_json::from_str(&text).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    let again = serde_json::to_value(&r).unwrap();
    assert!(same_json(&original, &again));
    figures_carry_unit_and_source(&original, "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_estimate_is_labelled_as_an_estimate() {
    let (_scratch_dir, dir) = fixture(
        "estimate",
        &Fixture {
            source: EnergySource::Estimate,
            ..PLAIN
        },
    );
    let md = report(&[dir.to_str().unwrap()]);
    assert!(md.contains("**estimate (not measured)**"), "{md}");
    assert!(md.contains("an estimate, not a measurement"));
    assert!(md.contains("Energy is an ESTIMATE, not a measurement"));
    let energy_line = md
        .lines()
        .find(|l| l.starts_with("Energy source:"))
        .unwrap();
    assert!(!energy_line.contains("(measured)"), "{energy_line}");
    assert!(!md.contains("(a measurement)"));
    let html = report(&[dir.to_str().unwrap(), "--format", "html"]);
    assert!(
        html.contains(
            "<p class=\"estimate\">Energy source: <strong>estimate (not measured)</strong>"
        ),
        "{html}"
    );
    assert_well_formed(&html);
    let v = json_of(&dir);
    assert_eq!(v["sensor"]["is_measurement"], false);
    assert_eq!(
        v["phases"][0]["sparse"]["joules_per_token"]["source"],
        "estimate"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn comparing_two_runs_gives_b_over_a_and_warns_of_different_sensors() {
    let (_scratch_a, a) = fixture("cmp-a", &PLAIN);
    let (_scratch_b, b) = fixture(
        "cmp-b",
        &Fixture {
            energy_scale: 2.0,
            source: EnergySource::Estimate,
            complete: true,
        },
    );
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let v: Value = serde_json::from_str(&report(&[sa, sb, "--format", "json"])).unwrap();
    let row = |role: &str, metric: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["phase"] == "train" && r["role"] == role && r["metric"] == metric)
            .unwrap()
            .clone()
    };
    assert!(close(
        row("sparse", "J/token")["b_over_a"].as_f64().unwrap(),
        2.0
    ));
    assert!(close(
        row("dense", "FLOP/token")["b_over_a"].as_f64().unwrap(),
        1.0
    ));
    // Both energies doubled: the sparse / dense ratio is unchanged.
    assert!(close(
        row("sparse/dense", "J/token ratio")["b_over_a"]
            .as_f64()
            .unwrap(),
        1.0
    ));
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("different sources") && warnings.contains("B's energy is an estimate")
    );
    let md = report(&[sa, sb]);
    assert!(
        md.contains("| train | sparse | J/token |") && md.contains("| B / A |"),
        "{md}"
    );
    let html = report(&[sa, sb, "--format", "html"]);
    assert!(html.contains("<svg") && html.contains("A against B"));
    assert_well_formed(&html);
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn a_missing_run_folder_is_bad_input_naming_the_file() {
    let out = sparsewatt(&["report", "/nonexistent/sw-run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/sw-run/run.json"), "{err}");
}

#[test]
fn out_picks_the_format_from_the_extension() {
    let (_scratch_dir, dir) = fixture("out", &PLAIN);
    let file = dir.join("r.html");
    report(&[dir.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_well_formed(&html);
    std::fs::remove_dir_all(&dir).unwrap();
}
