//! Today's MoE and dense LLMs (issue 20): counted parameters against the published totals, the
//! architecture features against hand-worked counts, and serving projections whose weight traffic
//! follows the experts a batch touches.

use sparsewatt::accounting::{
    bytes_per_token, decode_flops_per_token, expert_params, forward_flops_per_token, params,
    Component,
};
use sparsewatt::profile::{load_hardware, load_model, parse_model, ModelProfile, Positions};
use sparsewatt::project::{project_inference, InferenceSettings};
use sparsewatt::vocab::Phase;

/// Every profile issue 20 asks for, with the published configuration complete enough that the count
/// must land within 3% of the published totals.
const LLMS: [&str; 10] = [
    "mixtral-8x7b",
    "mixtral-8x22b",
    "dbrx",
    "qwen1.5-moe-a2.7b",
    "olmoe-1b-7b",
    "deepseek-v2",
    "deepseek-v3",
    "llama3-8b",
    "llama3-70b",
    "llama3-405b",
];

fn rel(counted: f64, published: f64) -> f64 {
    (counted - published) / published
}

#[test]
fn every_llm_profile_counts_within_three_percent_of_its_published_totals() {
    for name in LLMS {
        let p = load_model(name).unwrap();
        assert!(p.source.is_some(), "{name} lacks a source");
        let c = params(&p);
        let total = p.published_params_total.expect("published total");
        let active = p.published_params_active.expect("published active");
        assert!(
            rel(c.total, total).abs() <= 0.03,
            "{name}: total {:.4e} vs published {total:.4e}",
            c.total
        );
        assert!(
            rel(c.active, active).abs() <= 0.03,
            "{name}: active {:.4e} vs published {active:.4e}",
            c.active
        );
        assert_eq!(p.is_sparse(), !name.starts_with("llama3"), "{name}");
        assert!(!p.features_the_model_lacks().is_empty(), "{name}");
    }
}

#[test]
fn the_original_profiles_need_nothing_the_model_lacks() {
    for name in ["glam-tiny", "dense-tiny", "glam-64b-64e", "gpt3-175b"] {
        let p = load_model(name).unwrap();
        assert!(p.features_the_model_lacks().is_empty(), "{name}");
        assert_eq!(p.kv_heads(), p.heads);
        assert_eq!(p.positions, Positions::Learned);
    }
}

/// Mixtral 8x7B by hand: the attention's K and V have 8 heads of 128, no position parameters,
/// every layer MoE with 8 SwiGLU experts, untied embeddings.
#[test]
fn mixtral_8x7b_matches_a_hand_count() {
    let p = load_model("mixtral-8x7b").unwrap();
    let (d, l, f) = (4096.0, 32.0, 14336.0);
    let attn = d * d * 2.0 + 2.0 * d * 1024.0;
    let expert = 3.0 * d * f;
    let c = params(&p);
    assert_eq!(c.get(Component::AttnProj).total, l * attn);
    assert_eq!(c.get(Component::Experts).total, l * 8.0 * expert);
    assert_eq!(c.get(Component::Experts).active, l * 2.0 * expert);
    assert_eq!(c.get(Component::Embedding).total, 32000.0 * d);
    assert_eq!(c.get(Component::Logits).total, 32000.0 * d);
    assert_eq!(c.get(Component::DenseFfn).total, 0.0);
    // GQA shrinks the KV cache 4x against 32 key/value heads, not the attention FLOPs' scores.
    let b = bytes_per_token(&p, Phase::Decode, 1, 1000, 2.0, 2.0);
    assert_eq!(b.kv_read, 1000.0 * l * 2.0 * 1024.0 * 2.0);
    let mha = ModelProfile {
        kv_heads: None,
        ..p.clone()
    };
    let s = |m: &ModelProfile| decode_flops_per_token(m, 999).get(Component::AttnScores);
    assert_eq!(s(&p), s(&mha));
}

/// DeepSeek-V3 by hand: MLA's projections, 3 dense layers, 58 MoE layers of 256 routed and 1
/// shared expert of 2048, and a KV cache of 512 + 64 elements a layer.
#[test]
fn deepseek_v3_matches_a_hand_count() {
    let p = load_model("deepseek-v3").unwrap();
    let d = 7168.0;
    let h = 128.0;
    let attn = d * 1536.0 + 1536.0 * h * 192.0 + d * 576.0 + 512.0 * h * 256.0 + h * 128.0 * d;
    let c = params(&p);
    assert_eq!(p.moe_layers(), 58);
    assert_eq!(c.get(Component::AttnProj).total, 61.0 * attn);
    let expert = 3.0 * d * 2048.0;
    assert_eq!(expert_params(&p), expert);
    assert_eq!(c.get(Component::Experts).total, 58.0 * 256.0 * expert);
    assert_eq!(c.get(Component::Experts).active, 58.0 * 8.0 * expert);
    // Dense layers' FFNs and the shared experts, always active.
    let dense = 3.0 * 3.0 * d * 18432.0 + 58.0 * expert;
    assert_eq!(c.get(Component::DenseFfn).total, dense);
    assert_eq!(c.get(Component::DenseFfn).active, dense);
    assert_eq!(p.kv_cache_elems_per_layer(), 576);
    let b = bytes_per_token(&p, Phase::Decode, 1, 4096, 2.0, 2.0);
    assert_eq!(b.kv_read, 4096.0 * 61.0 * 576.0 * 2.0);
    // Per key, scores over 192-wide queries and keys and 128-wide values for each head.
    let f = |pos| decode_flops_per_token(&p, pos).get(Component::AttnScores);
    assert_eq!(f(100) - f(99), 2.0 * h * (192.0 + 128.0) * 61.0);
}

#[test]
fn rotary_positions_have_no_parameters_and_learned_ones_do() {
    let p = load_model("llama3-8b").unwrap();
    let learned = ModelProfile {
        positions: Positions::Learned,
        ..p.clone()
    };
    let diff = params(&learned).total - params(&p).total;
    assert_eq!(diff, p.seq_len as f64 * p.d_model as f64);
    // Rotating queries and keys costs a few FLOPs an element, far below the matmuls.
    let (a, b) = (
        forward_flops_per_token(&p, 1024).get(Component::NormAct),
        forward_flops_per_token(&learned, 1024).get(Component::NormAct),
    );
    assert!(a > b && a - b < 1e-3 * forward_flops_per_token(&p, 1024).total());
}

#[test]
fn forward_flops_of_the_llms_are_about_twice_their_active_parameters() {
    // The matmuls dominate: 2 FLOPs an activated parameter outside the embedding lookup (Kaplan
    // et al. 2020's 2N), plus attention at a short context.
    for name in LLMS {
        let p = load_model(name).unwrap();
        let f = forward_flops_per_token(&p, 128).total();
        let c = params(&p);
        let two_n = 2.0 * (c.active - c.get(Component::Embedding).active);
        assert!(
            f > two_n && f < 1.05 * two_n,
            "{name}: {f:.3e} vs 2N {two_n:.3e}"
        );
    }
}

#[test]
fn the_new_keys_are_checked_with_the_field_named() {
    let base = sparsewatt::profile::find(sparsewatt::profile::Kind::Model, "mixtral-8x7b")
        .unwrap()
        .text;
    let err = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        parse_model(&base.replace(from, to), "x.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err("kv_heads = 8", "kv_heads = 5");
    assert!(e.contains("x.toml") && e.contains("`kv_heads`"), "{e}");
    let e = err("positions = \"rotary\"", "positions = \"alibi\"");
    assert!(e.contains("`positions`") && e.contains("alibi"), "{e}");
    let e = err("layers = 32", "layers = 32\nfirst_dense_layers = 33");
    assert!(e.contains("`first_dense_layers`"), "{e}");
    let e = err("top_k = 2", "top_k = 2\nd_ff_expert = 0");
    assert!(e.contains("`d_ff_expert`"), "{e}");
    let e = err(
        "published_params_active = 12.9e9",
        "published_params_active = 50e9",
    );
    assert!(e.contains("`published_params_active`"), "{e}");
    let e = err("seq_len = 32768", "seq_len = 99999999999");
    assert!(e.contains("`seq_len`") && e.contains("largest"), "{e}");
    let mla = "\n[mla]\nkv_lora_rank = 512\nqk_nope_head_dim = 128\nqk_rope_head_dim = 64\nv_head_dim = 128\n";
    let e = parse_model(&format!("{base}{mla}"), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`kv_heads`") && e.contains("[mla]"), "{e}");
    let v2 = sparsewatt::profile::find(sparsewatt::profile::Kind::Model, "deepseek-v2")
        .unwrap()
        .text;
    let e = parse_model(
        &v2.replace("kv_lora_rank = 512", "kv_lora_rank = 0"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`mla.kv_lora_rank`"), "{e}");
    let e = parse_model(&v2.replace("v_head_dim = 128", "v_dim = 128"), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml") && e.contains("v_dim"), "{e}");
}

fn decode_weights(name: &str, batch: usize) -> (f64, f64) {
    let p = load_model(name).unwrap();
    let hw = load_hardware("h100-sxm").unwrap();
    let r = project_inference(&p, &hw, &InferenceSettings::new(8, batch, 4096)).unwrap();
    (
        r.decode.weights_read_bytes_per_step,
        r.decode.experts_touched_per_layer,
    )
}

#[test]
fn decode_at_batch_one_reads_the_active_experts_and_a_large_batch_nearly_all() {
    for name in LLMS.iter().filter(|n| !n.starts_with("llama3")) {
        let p = load_model(name).unwrap();
        let c = params(&p);
        let bytes = 2.0; // bf16, the h100-sxm profile's default precision
        let (one, touched_one) = decode_weights(name, 1);
        // Batch 1: the non-expert weights (shared experts included) and top_k experts a layer.
        let active =
            (c.total - c.get(Component::Experts).total + c.get(Component::Experts).active) * bytes;
        assert!(
            (one - active).abs() <= 1e-9 * active,
            "{name}: {one} vs {active}"
        );
        assert!((touched_one - p.top_k as f64).abs() < 1e-9, "{name}");
        assert!(
            (one - c.active * bytes).abs() <= 1e-9 * one,
            "{name}: batch 1 reads the active parameters"
        );
        // Batch 4096: nearly every routed expert, nearly every weight.
        let (many, touched) = decode_weights(name, 4096);
        assert!(touched > 0.99 * p.experts as f64, "{name}: {touched}");
        assert!(
            many > 0.99 * c.total * bytes,
            "{name}: {many} of {}",
            c.total * bytes
        );
        // Between: E (1 - (1 - k/E)^64).
        let (_, t64) = decode_weights(name, 64);
        let (e, k) = (p.experts as f64, p.top_k as f64);
        assert!(
            (t64 - e * (1.0 - (1.0 - k / e).powi(64))).abs() < 1e-9,
            "{name}"
        );
    }
}

#[test]
fn every_llm_projects_prefill_and_decode_on_eight_h100s() {
    let hw = load_hardware("h100-sxm").unwrap();
    for name in LLMS {
        let p = load_model(name).unwrap();
        let r = project_inference(&p, &hw, &InferenceSettings::new(8, 64, 4096)).unwrap();
        for ph in [&r.prefill, &r.decode] {
            assert!(ph.tokens_per_s > 0.0 && ph.joules_per_token > 0.0, "{name}");
        }
        assert_eq!(r.expert_parallel, p.is_sparse(), "{name}");
        assert_eq!(r.decode.network_s > 0.0, p.is_sparse(), "{name}");
        // Per-token KV cache: kv_heads (or MLA's latent) x layers, at bf16.
        let per_pos = p.layers as f64 * p.kv_cache_elems_per_layer() as f64 * 2.0;
        assert!((r.kv_cache_bytes - 64.0 * 4097.0 * per_pos).abs() < 1e-6 * r.kv_cache_bytes);
    }
}

#[test]
fn mla_caches_far_less_than_the_same_heads_would() {
    let p = load_model("deepseek-v2").unwrap();
    // 128 heads of 128 keys and values against the 512 latent + 64 rope key.
    let mha = 2.0 * 128.0 * 128.0;
    assert!(mha / p.kv_cache_elems_per_layer() as f64 > 50.0);
}

#[test]
fn the_candle_model_refuses_what_it_does_not_build_and_names_the_features() {
    let p = load_model("deepseek-v3").unwrap();
    let e = sparsewatt::model::Model::new(&p, &candle_core::Device::Cpu, 0)
        .err()
        .expect("refused")
        .to_string();
    for f in [
        "multi-head latent attention",
        "shared experts",
        "dense first layers",
    ] {
        assert!(e.contains(f), "{e}");
    }
    // Through the command a user runs: refused before any training, the feature named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(["train", "--model", "mixtral-8x7b", "--steps", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("grouped-query attention (kv_heads)"), "{err}");
}

#[test]
fn account_prints_the_published_totals_beside_its_count() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .arg("account")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for name in LLMS {
        let v: serde_json::Value =
            serde_json::from_str(&run(&["--model", name, "--json"])).unwrap();
        let p = load_model(name).unwrap();
        let c = params(&p);
        assert_eq!(v["params_total"].as_f64(), Some(c.total), "{name}");
        assert_eq!(v["params_active"].as_f64(), Some(c.active), "{name}");
        assert_eq!(
            v["published_params_total"].as_f64(),
            p.published_params_total
        );
        assert_eq!(
            v["published_params_active"].as_f64(),
            p.published_params_active
        );
    }
    let t = run(&["--model", "mixtral-8x7b"]);
    let line = t
        .lines()
        .find(|l| l.starts_with("published params"))
        .unwrap();
    assert!(line.contains("total 46.7 G (counted 46.7 G, "), "{line}");
    assert!(line.contains("active 12.9 G (counted 12.9 G, "), "{line}");
    // A profile without published figures prints no such line.
    assert!(!run(&["--model", "glam-tiny"]).contains("published params"));
}

#[test]
fn project_serves_every_llm_in_text_and_json() {
    let run = |name: &str, json: bool| {
        let mut args = vec![
            "project",
            "--model",
            name,
            "--inference",
            "--hardware",
            "h100-sxm",
            "--chips",
            "8",
            "--batch",
            "64",
            "--context",
            "4096",
        ];
        if json {
            args.push("--json");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for name in LLMS {
        let v: serde_json::Value = serde_json::from_str(&run(name, true)).unwrap();
        // One object, or an array of one per hardware profile.
        let v = if v.is_array() { v[0].clone() } else { v };
        let v = if v.get("decode").is_some() {
            v
        } else {
            v["a"].clone()
        };
        for phase in ["prefill", "decode"] {
            let tps = v[phase]["tokens_per_s"].as_f64().unwrap_or(0.0);
            let j = v[phase]["joules_per_token"].as_f64().unwrap_or(0.0);
            assert!(tps > 0.0 && j > 0.0, "{name} {phase}: {v}");
        }
        let text = run(name, false);
        assert!(
            text.contains("decode") && text.contains("prefill"),
            "{name}: {text}"
        );
    }
}
