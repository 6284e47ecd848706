//! The recorded run the dashboard tests replay (tests/data/run-small): a small A/B run of glam-tiny
//! against dense-tiny, written by this generator so that its records follow the current format.
//! Figures are made up but shaped like a real 2-core CPU run: RAPL power around 20 W over a 6 W idle
//! baseline, FLOPs from the accounting module, losses falling from 5.5 nats towards 2.5.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sparsewatt::accounting::{
    decode_flops_per_token, prefill_flops_per_token, train_flops_per_token, Component,
};
use sparsewatt::profile::{load_model, ModelProfile};
use sparsewatt::runlog::{
    Energy, EvalRecord, IdleRecord, IdleWhen, MachineInfo, Record, RunConfig, RunHeader, RunModel,
    SensorInfo, StepRecord, FORMAT_VERSION,
};
use sparsewatt::vocab::EnergySource;
use sparsewatt::vocab::{Phase, Role, Sample};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/run-small")
}

/// A deterministic pseudo-random stream (PCG-style LCG), uniform in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const TRAIN_STEPS: u64 = 12;
const WARMUP: u64 = 2;
const BATCH: usize = 4;
const SEQ: usize = 128;
const PROMPT: usize = 32;
const PREFILL_STEPS: u64 = 3;
const DECODE_STEPS: u64 = 6;
const IDLE_W: f64 = 6.0;
const SAMPLE_HZ: f64 = 10.0;
const DOMAINS: [&str; 4] = ["prose", "arithmetic", "code", "records"];

pub fn header() -> RunHeader {
    let model = |role, name: &str| RunModel {
        role,
        profile: load_model(name).expect("embedded profile"),
    };
    RunHeader {
        format_version: FORMAT_VERSION,
        id: "20250101-120000-fixture".into(),
        started_unix_s: 1_735_732_800.0,
        command: "sparsewatt run --steps 12".into(),
        sparsewatt_version: "fixture".into(),
        machine: MachineInfo {
            hostname: "fixture".into(),
            cpu_model: "2-core x86-64".into(),
            logical_cpus: 2,
            os: "linux".into(),
            device: "cpu".into(),
            hardware_profile: Some("cpu-generic".into()),
            peak: None,
        },
        sensor: SensorInfo {
            source: EnergySource::Rapl,
            scope: "cpu package+dram".into(),
            fallbacks: vec!["nvml: no NVIDIA driver (libnvidia-ml.so not found)".into()],
            sample_hz: SAMPLE_HZ,
            update_period_s: None,
            update_energy_j: None,
            host_scope: None,
        },
        models: vec![
            model(Role::Sparse, "glam-tiny"),
            model(Role::Dense, "dense-tiny"),
        ],
        config: RunConfig {
            train_steps: TRAIN_STEPS,
            warmup_steps: WARMUP,
            batch: BATCH,
            seq_len: SEQ,
            prefill_steps: PREFILL_STEPS,
            prompt_len: PROMPT,
            decode_steps: DECODE_STEPS,
            infer_batch: None,
            decode_tokens_per_step: None,
            idle_seconds: 1.0,
            data: "embedded".into(),
            seed: 7,
            eval_every: None,
            until_loss: None,
            target_loss: None,
        },
    }
}

struct Gen {
    rng: Lcg,
    t: f64,
    records: Vec<Record>,
    /// (start, end, watts) of each busy window, for the samples.
    busy: Vec<(f64, f64, f64)>,
    train_tokens: BTreeMap<Role, (u64, f64)>,
}

impl Gen {
    fn step(&mut self, p: &ModelProfile, role: Role, phase: Phase, step: u64) {
        let (tokens, fpt, base_s, watts) = match (phase, role) {
            (Phase::Train, Role::Sparse) => (BATCH * SEQ, train_flops_per_token(p), 0.30, 21.0),
            (Phase::Train, Role::Dense) => (BATCH * SEQ, train_flops_per_token(p), 0.24, 22.0),
            (Phase::Prefill, _) => (PROMPT, prefill_flops_per_token(p, PROMPT), 0.020, 19.0),
            (Phase::Decode, _) => (
                1,
                decode_flops_per_token(p, PROMPT + step as usize),
                0.004,
                16.0,
            ),
        };
        let warmup = phase == Phase::Train && step < WARMUP;
        let seconds = base_s * (if warmup { 1.6 } else { 1.0 }) * (0.95 + 0.1 * self.rng.next());
        let watts = watts + 1.5 * self.rng.next();
        let start = self.t;
        self.t += seconds;
        self.busy.push((start, self.t, watts));
        let flops = fpt.total() * tokens as f64;
        let moe = p.moe_layers();
        let expert_tokens: Vec<Vec<u64>> = (0..moe)
            .map(|l| self.routing(p.experts, (tokens * p.top_k) as u64, l))
            .collect();
        let mut domain_expert_tokens = BTreeMap::new();
        if phase == Phase::Train && moe > 0 {
            for (d, name) in DOMAINS.iter().enumerate() {
                let per_layer = (0..moe)
                    .map(|l| {
                        // Each domain leans on two experts of its own: routing specialises.
                        let mut v = vec![4u64; p.experts];
                        v[(2 * d + l) % p.experts] += 60;
                        v[(2 * d + l + 3) % p.experts] += 30;
                        v
                    })
                    .collect();
                domain_expert_tokens.insert(name.to_string(), per_layer);
            }
        }
        let loss = (phase == Phase::Train).then(|| {
            let e = self.train_tokens.entry(role).or_default();
            e.0 += tokens as u64;
            e.1 += flops;
            let rate = if role == Role::Sparse { 0.22 } else { 0.17 };
            2.5 + 3.0 * (-rate * step as f64).exp() + 0.08 * (self.rng.next() - 0.5)
        });
        self.records.push(Record::Step(StepRecord {
            t_s: self.t,
            model: p.name.clone(),
            role,
            phase,
            step,
            warmup,
            tokens: tokens as u64,
            seconds,
            flops,
            flops_by_component: Component::ALL
                .iter()
                .map(|&c| (c, fpt.get(c) * tokens as f64))
                .filter(|(_, f)| *f > 0.0)
                .collect(),
            energy: Some(Energy {
                joules: watts * seconds,
                idle_joules: Some(IDLE_W * seconds),
                source: EnergySource::Rapl,
                scope: "cpu package+dram".into(),
                window: None,
                host: None,
            }),
            loss,
            aux_loss: (moe > 0 && phase == Phase::Train).then_some(0.0105 - 0.0001 * step as f64),
            expert_tokens,
            dropped: 0,
            domain_expert_tokens,
        }));
    }

    /// Top-k assignments of one layer over E experts, skewed towards low expert ids.
    fn routing(&mut self, experts: usize, assignments: u64, layer: usize) -> Vec<u64> {
        let w: Vec<f64> = (0..experts)
            .map(|e| {
                1.0 + 0.6 * (((e + layer) % experts) as f64 / experts as f64)
                    + 0.2 * self.rng.next()
            })
            .collect();
        let sum: f64 = w.iter().sum();
        let mut v: Vec<u64> = w
            .iter()
            .map(|x| (x / sum * assignments as f64) as u64)
            .collect();
        let short = assignments - v.iter().sum::<u64>();
        v[0] += short;
        v
    }

    fn eval(&mut self, p: &ModelProfile, role: Role, steps: u64) {
        self.t += 0.15;
        let (tokens, flops) = self.train_tokens.get(&role).copied().unwrap_or_default();
        let rate = if role == Role::Sparse { 0.22 } else { 0.17 };
        self.records.push(Record::Eval(EvalRecord {
            t_s: self.t,
            model: p.name.clone(),
            role,
            train_steps: steps,
            train_tokens: tokens,
            train_flops: flops,
            train_joules: None,
            val_loss: 2.6 + 3.0 * (-rate * (steps - 1) as f64).exp(),
            val_losses: Vec::new(),
        }));
    }
}

/// The records of the fixture run, in the order a run writes them (samples interleaved by time).
pub fn records() -> Vec<Record> {
    let h = header();
    let sparse = h.model(Role::Sparse).unwrap().clone();
    let dense = h.model(Role::Dense).unwrap().clone();
    let mut g = Gen {
        rng: Lcg(7),
        t: 0.0,
        records: Vec::new(),
        busy: Vec::new(),
        train_tokens: BTreeMap::new(),
    };
    g.records.push(Record::Log {
        t_s: 0.0,
        level: "info".into(),
        message: "sensor: rapl (cpu package+dram), sampling at 10 Hz".into(),
    });
    g.records.push(Record::Idle(IdleRecord {
        when: IdleWhen::Before,
        seconds: 1.0,
        joules: IDLE_W,
        power_w: IDLE_W,
        window_power_w: vec![IDLE_W - 0.5, IDLE_W + 0.5, IDLE_W],
        source: EnergySource::Rapl,
        scope: "cpu package+dram".into(),
    }));
    g.t = 1.0;
    for s in 0..TRAIN_STEPS {
        g.step(&sparse, Role::Sparse, Phase::Train, s);
        g.step(&dense, Role::Dense, Phase::Train, s);
        if s == 5 || s == TRAIN_STEPS - 1 {
            g.eval(&sparse, Role::Sparse, s + 1);
            g.eval(&dense, Role::Dense, s + 1);
        }
    }
    g.records.push(Record::Log {
        t_s: g.t,
        level: "warn".into(),
        message: "dense-tiny step 7 took 2.1× the median: another process was busy".into(),
    });
    for s in 0..PREFILL_STEPS {
        g.step(&sparse, Role::Sparse, Phase::Prefill, s);
        g.step(&dense, Role::Dense, Phase::Prefill, s);
    }
    for s in 0..DECODE_STEPS {
        g.step(&sparse, Role::Sparse, Phase::Decode, s);
        g.step(&dense, Role::Dense, Phase::Decode, s);
    }
    g.t += 0.05;
    g.records.push(Record::End {
        t_s: g.t,
        reason: "finished".into(),
    });
    // Samples every 100 ms: the busy window's power, or the idle baseline between windows.
    let mut samples = Vec::new();
    let mut k = 1;
    while k as f64 / SAMPLE_HZ <= g.t {
        let t = k as f64 / SAMPLE_HZ;
        let w = g
            .busy
            .iter()
            .find(|(a, b, _)| *a < t && t <= *b)
            .map_or(IDLE_W + 2.0, |b| b.2);
        samples.push(Record::Sample(Sample {
            t_s: t,
            power_w: Some((w * 10.0).round() / 10.0),
            instant_power_w: None,
            energy_j: None,
            source: EnergySource::Rapl,
            gpus: vec![],
        }));
        k += 1;
    }
    merge_by_time(g.records, samples)
}

fn time(r: &Record) -> f64 {
    r.t_s().unwrap_or(0.0)
}

/// Interleave samples into the other records by time (a sample at the same time goes first).
fn merge_by_time(records: Vec<Record>, samples: Vec<Record>) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len() + samples.len());
    let mut s = samples.into_iter().peekable();
    for r in records {
        while s.peek().is_some_and(|x| time(x) <= time(&r)) {
            out.extend(s.next());
        }
        out.push(r);
    }
    out.extend(s);
    out
}

/// The fixture's files as text: (run.json, records.jsonl).
pub fn files() -> (String, String) {
    let header = serde_json::to_string_pretty(&header()).unwrap();
    let mut lines = String::new();
    for r in records() {
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    (header, lines)
}
