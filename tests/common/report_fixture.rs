//! Run folders with known figures for the report tests, the commands that report on them, and
//! the checks the tests share (figures computed by hand, well-formed HTML).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sparsewatt::profile::load_model;
use sparsewatt::runlog::*;
use sparsewatt::vocab::*;

#[path = "scratch.rs"]
mod scratch;
pub use scratch::run_path;

pub const TOKENS: u64 = 512;
pub const SECONDS: f64 = 0.5;
pub const IDLE_W: f64 = 10.0;
pub const SPARSE_TRAIN_J: [f64; 6] = [999.0, 10.0, 12.0, 11.0, 13.0, 9.0];
pub const DENSE_TRAIN_J: [f64; 6] = [999.0, 20.0, 22.0, 21.0, 25.0, 19.0];
pub const SPARSE_FLOPS: f64 = 1.0e9;
pub const DENSE_FLOPS: f64 = 1.5e9;
pub const LOAD: [u64; 8] = [256, 128, 128, 128, 128, 128, 64, 64];
pub const PROMPT: u64 = 64;
pub const GENERATED: u64 = 8;
pub const PREFILL_J: ([f64; 3], [f64; 3]) = ([1.0, 1.2, 1.1], [2.0, 2.2, 2.4]);
pub const DECODE_J: ([f64; 3], [f64; 3]) = ([0.5, 0.6, 0.55], [0.9, 1.0, 0.95]);
/// Two-sided 95% Student t quantiles with 2 and 4 degrees of freedom (from a t table).
pub const T2: f64 = 4.302_652_729_749_464;
/// Two-sided 95% Student t quantile with 4 degrees of freedom (from a t table).
pub const T4: f64 = 2.776_445_105_197_798_7;

pub struct Fixture {
    pub energy_scale: f64,
    pub source: EnergySource,
    pub complete: bool,
}

pub const PLAIN: Fixture = Fixture {
    energy_scale: 1.0,
    source: EnergySource::Rapl,
    complete: true,
};

pub fn header(f: &Fixture) -> RunHeader {
    RunHeader {
        format_version: FORMAT_VERSION,
        id: "fixture".into(),
        started_unix_s: 1.7e9,
        command: "sparsewatt run --headless".into(),
        sparsewatt_version: "test".into(),
        machine: MachineInfo {
            hostname: "bench".into(),
            cpu_model: "Test CPU".into(),
            logical_cpus: 2,
            os: "linux".into(),
            device: "cpu".into(),
            hardware_profile: None,
            peak: None,
        },
        sensor: SensorInfo {
            source: f.source,
            scope: "cpu package+dram".into(),
            fallbacks: vec!["nvml: no NVIDIA driver".into()],
            sample_hz: 2.0,
            update_period_s: None,
            update_energy_j: None,
            host_scope: None,
        },
        models: vec![
            RunModel {
                role: Role::Sparse,
                profile: load_model("glam-tiny").unwrap(),
            },
            RunModel {
                role: Role::Dense,
                profile: load_model("dense-tiny").unwrap(),
            },
        ],
        config: RunConfig {
            train_steps: 6,
            warmup_steps: 1,
            batch: 4,
            seq_len: 128,
            prefill_steps: 0,
            prompt_len: 16,
            decode_steps: 0,
            infer_batch: None,
            decode_tokens_per_step: None,
            idle_seconds: 2.0,
            data: "embedded".into(),
            seed: 1,
            eval_every: None,
            until_loss: None,
            target_loss: None,
        },
    }
}

pub fn step(f: &Fixture, role: Role, i: usize, joules: f64, t_s: f64) -> Record {
    phase_step(f, role, Phase::Train, i, TOKENS, joules, t_s)
}

/// A step of `tokens` tokens; the first train step is a warm-up. Inference steps execute a third
/// of a train step's FLOPs per token (forward only).
pub fn phase_step(
    f: &Fixture,
    role: Role,
    phase: Phase,
    i: usize,
    tokens: u64,
    joules: f64,
    t_s: f64,
) -> Record {
    let sparse = role == Role::Sparse;
    let train = phase == Phase::Train;
    let per_token = if sparse { SPARSE_FLOPS } else { DENSE_FLOPS } / TOKENS as f64;
    // LOAD routes 512 tokens x top-2; scale it to this step's tokens.
    let load: Vec<u64> = LOAD.iter().map(|c| c * tokens / TOKENS).collect();
    Record::Step(StepRecord {
        t_s,
        model: if sparse { "glam-tiny" } else { "dense-tiny" }.into(),
        role,
        phase,
        step: i as u64,
        warmup: train && i == 0,
        tokens,
        seconds: SECONDS,
        flops: per_token * tokens as f64 / if train { 1.0 } else { 3.0 },
        flops_by_component: Default::default(),
        energy: Some(Energy {
            joules: joules * f.energy_scale,
            idle_joules: Some(IDLE_W * SECONDS),
            source: f.source,
            scope: "cpu package+dram".into(),
            window: None,
            host: None,
        }),
        loss: train.then_some(5.0 - i as f64 * 0.3),
        aux_loss: (sparse && train).then_some(0.01),
        expert_tokens: if sparse {
            vec![load.clone(), load]
        } else {
            vec![]
        },
        dropped: if sparse && train { 3 } else { 0 },
        domain_expert_tokens: Default::default(),
    })
}

pub fn eval(role: Role, tokens: u64, loss: f64) -> Record {
    let sparse = role == Role::Sparse;
    let per = if sparse { SPARSE_FLOPS } else { DENSE_FLOPS } / TOKENS as f64;
    Record::Eval(EvalRecord {
        t_s: 1.0,
        model: if sparse { "glam-tiny" } else { "dense-tiny" }.into(),
        role,
        train_steps: tokens / TOKENS,
        train_tokens: tokens,
        train_flops: tokens as f64 * per,
        train_joules: Some(tokens as f64 * if sparse { 0.02 } else { 0.04 }),
        val_loss: loss,
        val_losses: Vec::new(),
    })
}

/// A run folder of six train steps per model (the first a warm-up), samples, an idle window and
/// evals; returns its path and the scratch folder around it (gone when dropped).
pub fn fixture(name: &str, f: &Fixture) -> (tempfile::TempDir, PathBuf) {
    let (scratch, dir) = run_path(name);
    let mut w = RunWriter::create(&dir, &header(f)).unwrap();
    w.append(&Record::Idle(IdleRecord {
        when: IdleWhen::Before,
        seconds: 2.0,
        joules: 2.0 * IDLE_W,
        power_w: IDLE_W,
        window_power_w: vec![IDLE_W - 1.0, IDLE_W + 1.0],
        source: f.source,
        scope: "cpu package+dram".into(),
    }))
    .unwrap();
    for i in 0..40 {
        w.append(&Record::Sample(Sample {
            t_s: i as f64 * 0.5,
            power_w: Some(30.0 + (i % 5) as f64),
            instant_power_w: None,
            energy_j: Some(i as f64 * 16.0),
            source: f.source,
            gpus: vec![],
        }))
        .unwrap();
    }
    for i in 0..6 {
        let t = 2.0 + i as f64;
        w.append(&step(f, Role::Sparse, i, SPARSE_TRAIN_J[i], t))
            .unwrap();
        w.append(&step(f, Role::Dense, i, DENSE_TRAIN_J[i], t + 0.5))
            .unwrap();
    }
    for (phase, tokens, js, jd) in [
        (Phase::Prefill, PROMPT, PREFILL_J.0, PREFILL_J.1),
        (Phase::Decode, GENERATED, DECODE_J.0, DECODE_J.1),
    ] {
        for i in 0..3 {
            let t = 8.0 + i as f64;
            w.append(&phase_step(f, Role::Sparse, phase, i, tokens, js[i], t))
                .unwrap();
            w.append(&phase_step(
                f,
                Role::Dense,
                phase,
                i,
                tokens,
                jd[i],
                t + 0.5,
            ))
            .unwrap();
        }
    }
    // Sparse reaches 2.5 halfway from 2048 to 3072 tokens; dense reaches it at 3072.
    for (k, (ls, ld)) in [(4.0, 4.5), (3.0, 3.5), (2.0, 2.5)].into_iter().enumerate() {
        let tokens = (k as u64 + 1) * 2 * TOKENS;
        w.append(&eval(Role::Sparse, tokens, ls)).unwrap();
        w.append(&eval(Role::Dense, tokens, ld)).unwrap();
    }
    w.append(&Record::Log {
        t_s: 3.0,
        level: "warn".into(),
        message: "sensor read late".into(),
    })
    .unwrap();
    if f.complete {
        w.append(&Record::End {
            t_s: 9.0,
            reason: "finished".into(),
        })
        .unwrap();
    }
    drop(w);
    (scratch, dir)
}

pub fn sparsewatt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
        .args(args)
        .output()
        .unwrap()
}

pub fn report(args: &[&str]) -> String {
    let mut a = vec!["report"];
    a.extend_from_slice(args);
    let out = sparsewatt(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn json_of(dir: &Path) -> Value {
    serde_json::from_str(&report(&[dir.to_str().unwrap(), "--format", "json"])).unwrap()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-300)
}

/// Mean and CI half-width of the five measured steps' joules per token, by hand.
pub fn by_hand(joules: &[f64]) -> (f64, f64) {
    let x: Vec<f64> = joules.iter().map(|j| j / TOKENS as f64).collect();
    let mean = x.iter().sum::<f64>() / 5.0;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
    (mean, T4 * var.sqrt() / 5f64.sqrt())
}

/// Panics unless `html` is well-formed as the report writes it: every element closed in order, no
/// `<`, `>` or `&` outside markup and entities, no Markdown bold left in the text.
pub fn assert_well_formed(html: &str) {
    const VOID: [&str; 2] = ["!DOCTYPE", "meta"];
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(['<', '>', '&']) {
        let at = &rest[i..];
        let context: String = at.chars().take(60).collect();
        match at.as_bytes()[0] {
            b'>' => panic!("stray '>' at {context:?}"),
            b'&' => {
                let end = at.find(';').filter(|&e| e > 1 && e < 8);
                let entity = end.map(|e| &at[1..e]);
                assert!(
                    entity
                        .is_some_and(|e| e.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')),
                    "stray '&' at {context:?}"
                );
                rest = &at[1..];
            }
            _ => {
                let end = at.find('>').expect("a '<' never closed");
                let tag = &at[1..end];
                assert!(!tag.contains('<'), "'<' inside a tag at {context:?}");
                let name = tag
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or("");
                if tag.starts_with('/') {
                    assert_eq!(open.pop(), Some(name), "</{name}> closes the wrong element");
                } else if !tag.ends_with('/') && !VOID.contains(&name) {
                    open.push(name);
                }
                rest = &at[end + 1..];
            }
        }
    }
    assert!(open.is_empty(), "never closed: {open:?}");
    assert!(!html.contains("**"), "Markdown bold in the HTML");
}
