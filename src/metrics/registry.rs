//! The run's metrics, updated record by record: what the Prometheus text format exposes.
//!
//! Counters count every step, warm-up included: they say what the machine did, so the sums
//! across instances a fleet's queries take are sums of work done. Summaries (report, J/token
//! intervals) leave the warm-up out; the two answer different questions.

use std::sync::Mutex;

use prometheus::{
    exponential_buckets, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry,
    TextEncoder,
};

use crate::runlog::{Record, RunHeader, StepRecord};
use crate::vocab::{Phase, Sample};

/// Upper bounds of the step-duration histogram, seconds: 1 ms doubling to about 65 s, which
/// covers a tiny CPU decode step and a large model's training step alike.
pub const STEP_SECONDS_BUCKETS: (f64, f64, usize) = (0.001, 2.0, 17);

/// The labels of every per-step counter: which model, which side, which phase, and where the
/// energy figure comes from.
const STEP_LABELS: [&str; 4] = ["model", "role", "phase", "source"];

/// A run's registry. Every method takes `&self`: the metrics are atomics, shared with the HTTP
/// thread that renders them.
pub struct RunMetrics {
    registry: Registry,
    tokens: CounterVec,
    measured_tokens: CounterVec,
    joules: CounterVec,
    idle_joules: CounterVec,
    host_joules: CounterVec,
    flops: CounterVec,
    steps: CounterVec,
    unmeasured_steps: CounterVec,
    step_seconds: HistogramVec,
    power: GaugeVec,
    gpu_power: GaugeVec,
    sensor_joules: CounterVec,
    train_loss: GaugeVec,
    validation_loss: GaugeVec,
    idle_power: GaugeVec,
    elapsed: Gauge,
    finished: Gauge,
    /// The last sample's running energy total (its `energy_j`), which the sensor counter grows by.
    last_sample_j: Mutex<Option<f64>>,
    default_source: String,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn plain_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("a valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl RunMetrics {
    /// The registry of the run `header` describes, every per-step series of its models at 0 (so a
    /// `rate()` starts from the run's start, not from the first step of each phase).
    pub fn new(header: &RunHeader) -> RunMetrics {
        let r = Registry::new();
        let l = &STEP_LABELS;
        let m = RunMetrics {
            tokens: counter(&r, "sparsewatt_tokens_total",
                "Tokens processed, every step (warm-up included): trained (train), prompt (prefill) or generated (decode).", l),
            measured_tokens: counter(&r, "sparsewatt_measured_tokens_total",
                "Tokens of the steps that carry an energy figure: the denominator of joules per token.", l),
            joules: counter(&r, "sparsewatt_energy_joules_total",
                "Energy of the steps, joules, from the sensor named by `source` (an estimate is labelled source=\"estimate\"), idle baseline included.", l),
            idle_joules: counter(&r, "sparsewatt_idle_baseline_joules_total",
                "The idle baseline's share of sparsewatt_energy_joules_total (idle watts x step seconds), joules.", l),
            host_joules: counter(&r, "sparsewatt_host_energy_joules_total",
                "Energy of the host CPU beside a GPU run over the same steps (RAPL), joules; not part of sparsewatt_energy_joules_total.", l),
            flops: counter(&r, "sparsewatt_flops_total",
                "Floating-point operations the model executed (training: forward and backward).", l),
            steps: counter(&r, "sparsewatt_steps_total", "Steps run, warm-up included.", l),
            unmeasured_steps: counter(&r, "sparsewatt_unmeasured_steps_total",
                "Steps whose measurement window could not be read (the sensor failed): no energy figure.", l),
            step_seconds: {
                let (start, factor, count) = STEP_SECONDS_BUCKETS;
                let opts = HistogramOpts::new("sparsewatt_step_duration_seconds",
                    "Wall-clock duration of a step, seconds.")
                    .buckets(exponential_buckets(start, factor, count).expect("valid buckets"));
                let h = HistogramVec::new(opts, &["model", "role", "phase"]).expect("a valid histogram");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            power: gauge(&r, "sparsewatt_power_watts",
                "The sensor's average power at its last sample, watts.", &["source"]),
            gpu_power: gauge(&r, "sparsewatt_gpu_power_watts",
                "Board power of each GPU at the last sample (NVML), watts.", &["gpu"]),
            sensor_joules: counter(&r, "sparsewatt_sensor_energy_joules_total",
                "Energy the sensor counted since the run started, between steps too (idle windows, evaluation), joules.", &["source"]),
            train_loss: gauge(&r, "sparsewatt_train_loss_nats",
                "Training loss of the last train step, nats per token.", &["model", "role"]),
            validation_loss: gauge(&r, "sparsewatt_validation_loss_nats",
                "Validation loss at the last evaluation, nats per token.", &["model", "role"]),
            idle_power: gauge(&r, "sparsewatt_idle_power_watts",
                "Power with nothing but the sampler running, before (the baseline) and after the workload, watts.", &["when", "source"]),
            elapsed: plain_gauge(&r, "sparsewatt_run_elapsed_seconds",
                "Seconds from the run's start to its last record."),
            finished: plain_gauge(&r, "sparsewatt_run_finished",
                "1 once the run wrote its end record, else 0."),
            last_sample_j: Mutex::new(None),
            default_source: header.sensor.source.label().to_string(),
            registry: r,
        };
        m.describe_run(header);
        m
    }

    /// The run's constant facts: its identity and sensor as labels of a gauge of 1, its start,
    /// and every model's per-step series at 0.
    fn describe_run(&self, h: &RunHeader) {
        let info = gauge(
            &self.registry,
            "sparsewatt_build_info",
            "1, labelled with this sparsewatt's version, the run's id and its sensor: source and what it covers (scope, host_scope).",
            &["version", "run_id", "source", "scope", "host_scope"],
        );
        let host = h.sensor.host_scope.as_deref().unwrap_or("");
        info.with_label_values(&[
            h.sparsewatt_version.as_str(),
            h.id.as_str(),
            h.sensor.source.label(),
            h.sensor.scope.as_str(),
            host,
        ])
        .set(1.0);
        plain_gauge(
            &self.registry,
            "sparsewatt_run_start_time_seconds",
            "When the run started, seconds since the Unix epoch.",
        )
        .set(h.started_unix_s);
        for m in &h.models {
            for phase in [Phase::Train, Phase::Prefill, Phase::Decode] {
                let labels = [
                    m.profile.name.as_str(),
                    m.role.label(),
                    phase.label(),
                    self.default_source.as_str(),
                ];
                for c in [&self.tokens, &self.joules, &self.flops, &self.steps] {
                    c.with_label_values(&labels);
                }
            }
        }
    }

    /// Takes one record into the metrics, as the run appends it.
    pub fn observe(&self, r: &Record) {
        if let Some(t) = r.t_s() {
            if t > self.elapsed.get() {
                self.elapsed.set(t);
            }
        }
        match r {
            Record::Step(s) => self.observe_step(s),
            Record::Sample(s) => self.observe_sample(s),
            Record::Eval(e) => self
                .validation_loss
                .with_label_values(&[e.model.as_str(), e.role.label()])
                .set(e.val_loss),
            Record::Idle(i) => {
                let when = match i.when {
                    crate::runlog::IdleWhen::Before => "before",
                    crate::runlog::IdleWhen::After => "after",
                };
                self.idle_power
                    .with_label_values(&[when, i.source.label()])
                    .set(i.power_w);
            }
            Record::End { .. } => self.finished.set(1.0),
            Record::Log { .. } => {}
        }
    }

    fn observe_step(&self, s: &StepRecord) {
        let source = s
            .energy
            .as_ref()
            .map_or(self.default_source.as_str(), |e| e.source.label());
        let labels = [s.model.as_str(), s.role.label(), s.phase.label(), source];
        let tokens = s.tokens as f64;
        self.tokens.with_label_values(&labels).inc_by(tokens);
        self.steps.with_label_values(&labels).inc();
        if s.flops.is_finite() && s.flops >= 0.0 {
            self.flops.with_label_values(&labels).inc_by(s.flops);
        }
        self.step_seconds
            .with_label_values(&labels[..3])
            .observe(s.seconds);
        match &s.energy {
            // A counter only grows: a negative window (which no sensor should give) is left out.
            Some(e) if e.joules.is_finite() && e.joules >= 0.0 => {
                self.joules.with_label_values(&labels).inc_by(e.joules);
                self.measured_tokens
                    .with_label_values(&labels)
                    .inc_by(tokens);
                if let Some(idle) = e.idle_joules.filter(|j| j.is_finite() && *j >= 0.0) {
                    self.idle_joules.with_label_values(&labels).inc_by(idle);
                }
                if let Some(h) = e.host.as_ref().filter(|h| h.joules >= 0.0) {
                    let host_labels = [labels[0], labels[1], labels[2], h.source.label()];
                    self.host_joules
                        .with_label_values(&host_labels)
                        .inc_by(h.joules);
                }
            }
            _ => self.unmeasured_steps.with_label_values(&labels).inc(),
        }
        if let (Phase::Train, Some(loss)) = (s.phase, s.loss) {
            self.train_loss
                .with_label_values(&[s.model.as_str(), s.role.label()])
                .set(loss);
        }
    }

    fn observe_sample(&self, s: &Sample) {
        let source = s.source.label();
        if let Some(w) = s.power_w {
            self.power.with_label_values(&[source]).set(w);
        }
        for g in &s.gpus {
            if let Some(w) = g.power_w {
                self.gpu_power
                    .with_label_values(&[g.index.to_string().as_str()])
                    .set(w);
            }
        }
        if let Some(j) = s.energy_j {
            let mut last = self.last_sample_j.lock().unwrap_or_else(|p| p.into_inner());
            let delta = j - last.unwrap_or(0.0);
            if delta > 0.0 && delta.is_finite() {
                self.sensor_joules
                    .with_label_values(&[source])
                    .inc_by(delta);
            }
            *last = Some(j);
        }
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text encoder writes to a String")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{
        test_energy, test_header, test_step, HostEnergy, IdleRecord, IdleWhen, StepRecord,
    };
    use crate::vocab::{EnergySource, Role};
    use std::collections::BTreeSet;

    /// The value of the one series of `name` whose labels include every `key="value"` given.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        let found: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|kv| l.contains(kv)))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().copied()
    }

    fn step(phase: Phase, tokens: u64, joules: Option<f64>, warmup: bool) -> Record {
        Record::Step(StepRecord {
            tokens,
            warmup,
            seconds: 0.25,
            flops: 1000.0 * tokens as f64,
            energy: joules.map(test_energy),
            loss: (phase == Phase::Train).then_some(3.5),
            ..test_step(Role::Sparse, phase)
        })
    }

    #[test]
    fn counters_are_the_sums_of_every_step_warm_up_included() {
        let m = RunMetrics::new(&test_header());
        // Train: a warm-up step (64 tokens, 2 J), two measured ones (64 + 32 tokens, 3 + 1.5 J)
        // and one whose window was unmeasured (16 tokens). Decode: 4 tokens, 0.5 J.
        for r in [
            step(Phase::Train, 64, Some(2.0), true),
            step(Phase::Train, 64, Some(3.0), false),
            step(Phase::Train, 32, Some(1.5), false),
            step(Phase::Train, 16, None, false),
            step(Phase::Decode, 4, Some(0.5), false),
        ] {
            m.observe(&r);
        }
        let t = m.render();
        let train = ["model=\"Sparse\"", "phase=\"train\"", "role=\"sparse\""];
        let decode = ["model=\"Sparse\"", "phase=\"decode\""];
        assert_eq!(value(&t, "sparsewatt_tokens_total", &train), Some(176.0));
        assert_eq!(
            value(&t, "sparsewatt_measured_tokens_total", &train),
            Some(160.0)
        );
        assert_eq!(
            value(&t, "sparsewatt_energy_joules_total", &train),
            Some(6.5)
        );
        assert_eq!(value(&t, "sparsewatt_steps_total", &train), Some(4.0));
        assert_eq!(
            value(&t, "sparsewatt_unmeasured_steps_total", &train),
            Some(1.0)
        );
        assert_eq!(value(&t, "sparsewatt_flops_total", &train), Some(176_000.0));
        assert_eq!(value(&t, "sparsewatt_tokens_total", &decode), Some(4.0));
        assert_eq!(
            value(&t, "sparsewatt_energy_joules_total", &decode),
            Some(0.5)
        );
        // Every series says where its energy comes from.
        assert!(t
            .lines()
            .filter(|l| l.starts_with("sparsewatt_energy_joules_total{"))
            .all(|l| l.contains("source=\"estimate\"")));
        assert_eq!(
            value(&t, "sparsewatt_train_loss_nats", &["model=\"Sparse\""]),
            Some(3.5)
        );
        // Four train steps of 0.25 s: all in the 0.256 s bucket, none in the 0.128 s one.
        let h = "sparsewatt_step_duration_seconds";
        assert_eq!(value(&t, &format!("{h}_count"), &train), Some(4.0));
        assert_eq!(value(&t, &format!("{h}_sum"), &train), Some(1.0));
        assert_eq!(
            value(&t, &format!("{h}_bucket"), &[train[1], "le=\"0.256\""]),
            Some(4.0)
        );
        assert_eq!(
            value(&t, &format!("{h}_bucket"), &[train[1], "le=\"0.128\""]),
            Some(0.0)
        );
    }

    #[test]
    fn the_header_names_the_run_and_its_sensor_and_zeroes_every_phase() {
        let mut h = test_header();
        h.sensor.host_scope = Some("cpu package, 1 socket (rapl)".into());
        let t = RunMetrics::new(&h).render();
        let info = t
            .lines()
            .find(|l| l.starts_with("sparsewatt_build_info{"))
            .unwrap();
        for kv in [
            "run_id=\"test\"",
            "source=\"estimate\"",
            "scope=\"process cpu time\"",
            "host_scope=\"cpu package, 1 socket (rapl)\"",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(info.contains(kv), "{kv} missing from {info}");
        }
        assert!(info.ends_with(" 1"), "{info}");
        for phase in ["train", "prefill", "decode"] {
            let labels = ["model=\"glam-tiny\"", &format!("phase=\"{phase}\"")];
            assert_eq!(value(&t, "sparsewatt_tokens_total", &labels), Some(0.0));
        }
        assert_eq!(value(&t, "sparsewatt_run_finished", &[]), Some(0.0));
    }

    #[test]
    fn samples_idle_evals_host_energy_and_the_end_are_taken_in() {
        let m = RunMetrics::new(&test_header());
        let sample = |t_s: f64, w: f64, j: f64| {
            Record::Sample(Sample {
                t_s,
                power_w: Some(w),
                instant_power_w: None,
                energy_j: Some(j),
                source: EnergySource::Rapl,
                gpus: vec![],
            })
        };
        let mut s = test_step(Role::Dense, Phase::Prefill);
        let mut e = test_energy(4.0);
        e.idle_joules = Some(1.0);
        e.host = Some(Box::new(HostEnergy {
            joules: 2.0,
            source: EnergySource::Rapl,
            scope: "cpu".into(),
        }));
        s.energy = Some(e);
        for r in [
            sample(0.0, 10.0, 0.0),
            sample(1.0, 30.0, 20.0),
            sample(2.0, 50.0, 60.0),
            Record::Step(s),
            Record::Idle(IdleRecord {
                when: IdleWhen::Before,
                seconds: 2.0,
                joules: 24.0,
                power_w: 12.0,
                window_power_w: vec![],
                source: EnergySource::Rapl,
                scope: "cpu".into(),
            }),
            Record::End {
                t_s: 7.5,
                reason: "finished".into(),
            },
        ] {
            m.observe(&r);
        }
        let t = m.render();
        let rapl = ["source=\"rapl\""];
        assert_eq!(value(&t, "sparsewatt_power_watts", &rapl), Some(50.0));
        assert_eq!(
            value(&t, "sparsewatt_sensor_energy_joules_total", &rapl),
            Some(60.0)
        );
        let dense = ["role=\"dense\"", "phase=\"prefill\""];
        assert_eq!(
            value(&t, "sparsewatt_idle_baseline_joules_total", &dense),
            Some(1.0)
        );
        assert_eq!(
            value(
                &t,
                "sparsewatt_host_energy_joules_total",
                &[dense[0], rapl[0]]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&t, "sparsewatt_idle_power_watts", &["when=\"before\""]),
            Some(12.0)
        );
        assert_eq!(value(&t, "sparsewatt_run_finished", &[]), Some(1.0));
        assert_eq!(value(&t, "sparsewatt_run_elapsed_seconds", &[]), Some(7.5));
    }

    /// The metric names a text mentions.
    fn names_in(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("sparsewatt_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            out.insert(name);
        }
        out
    }

    #[test]
    fn the_docs_list_every_metric_served_and_the_grafana_dashboard_names_only_those() {
        let m = RunMetrics::new(&test_header());
        // One record of every kind, so that every family has a series to render.
        let mut s = test_step(Role::Sparse, Phase::Train);
        s.loss = Some(3.0);
        let mut e = test_energy(1.0);
        e.idle_joules = Some(0.5);
        e.host = Some(Box::new(HostEnergy {
            joules: 1.0,
            source: EnergySource::Rapl,
            scope: "cpu".into(),
        }));
        s.energy = Some(e);
        let unmeasured = StepRecord {
            energy: None,
            ..s.clone()
        };
        let mut sample = Sample {
            t_s: 1.0,
            power_w: Some(300.0),
            instant_power_w: None,
            energy_j: Some(3.0),
            source: EnergySource::Nvml,
            gpus: vec![],
        };
        sample.gpus.push(crate::vocab::GpuSample {
            index: 0,
            power_w: Some(300.0),
            utilization_pct: None,
            sm_clock_mhz: None,
            temperature_c: None,
            memory_used_bytes: None,
        });
        for r in [
            Record::Step(s),
            Record::Step(unmeasured),
            Record::Sample(sample),
            Record::Eval(crate::runlog::EvalRecord {
                t_s: 2.0,
                model: "Sparse".into(),
                role: Role::Sparse,
                train_steps: 1,
                train_tokens: 10,
                train_flops: 1.0,
                train_joules: None,
                val_loss: 3.1,
                val_losses: vec![],
            }),
            Record::Idle(IdleRecord {
                when: IdleWhen::After,
                seconds: 1.0,
                joules: 1.0,
                power_w: 1.0,
                window_power_w: vec![],
                source: EnergySource::Nvml,
                scope: "gpu".into(),
            }),
        ] {
            m.observe(&r);
        }
        let served: BTreeSet<String> = m
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
        let table: String = doc
            .lines()
            .filter(|l| l.starts_with("| `sparsewatt_"))
            .map(|l| l.split('|').nth(1).unwrap())
            .collect();
        assert_eq!(names_in(&table), served, "docs/metrics.md's table");
        assert!(
            names_in(&doc).is_subset(&served),
            "docs/metrics.md names a metric not served"
        );

        let text = std::fs::read_to_string(root.join("docs/grafana-sparsewatt.json")).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let exprs: Vec<&str> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap())
            .map(|t| t["expr"].as_str().unwrap())
            .collect();
        assert!(exprs.len() >= 5, "{exprs:?}");
        let used = names_in(&exprs.join(" "));
        assert!(used.is_subset(&served), "{:?}", used.difference(&served));
        for panel in ["J/token", "Tokens per second", "Power", "Loss"] {
            assert!(text.contains(panel), "the dashboard has a {panel} panel");
        }
    }
}
