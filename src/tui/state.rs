//! What the dashboard knows about a run, built from its records one at a time (live from the
//! channel, or from a run folder's prefix up to the replay cursor). Nothing here knows ratatui.

use std::collections::BTreeMap;

use crate::accounting::add_expert_tokens;
use crate::runlog::{summarize, IdleWhen, Record, RunHeader, RunSummary, StepRecord};
use crate::vocab::EnergySource;
use crate::vocab::{Phase, Role};

/// A loss curve point, against what training had consumed when it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    pub tokens: f64,
    pub flops: f64,
    pub loss: f64,
}

/// One model's training progress: cumulative tokens and executed FLOPs (warm-up included, as the
/// model consumed them), training loss per step and validation loss per evaluation.
#[derive(Debug, Clone, Default)]
pub struct TrainingCurve {
    pub tokens: u64,
    pub flops: f64,
    pub train_loss: Vec<LossPoint>,
    pub val_loss: Vec<LossPoint>,
}

/// Expert routing of one sparse model over its training steps.
#[derive(Debug, Clone, Default)]
pub struct ExpertLoad {
    /// Tokens routed to each expert, one vector per MoE layer, summed over training steps.
    pub tokens: Vec<Vec<u64>>,
    /// The last training step's counts, for the current imbalance.
    pub last_step: Vec<Vec<u64>>,
    /// Expert assignments dropped by the capacity factor, over all steps of every phase.
    pub dropped: u64,
    pub steps_with_drops: u64,
    /// Auxiliary (load-balancing) loss of each training step that reported one.
    pub aux_loss: Vec<f64>,
    /// Corpus domain -> MoE layer -> tokens per expert, summed over training steps.
    pub domains: BTreeMap<String, Vec<Vec<u64>>>,
}

/// Max over mean of a layer's per-expert counts: 1 is perfectly balanced, E is everything on one
/// expert. `None` for an empty layer.
pub fn imbalance(counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return None;
    }
    let mean = total as f64 / counts.len() as f64;
    Some(*counts.iter().max()? as f64 / mean)
}

/// Append `p` to a time series, keeping it sorted by time when a point arrives late.
fn insert_by_time(v: &mut Vec<(f64, f64)>, p: (f64, f64)) {
    if v.last().is_none_or(|l| l.0 <= p.0) {
        v.push(p);
    } else {
        let i = v.partition_point(|x| x.0 <= p.0);
        v.insert(i, p);
    }
}

/// A line of the Log view.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub t_s: Option<f64>,
    /// "info", "warn", "error" as the run wrote it; "warn" for warnings the dashboard derives.
    pub level: String,
    pub message: String,
}

impl LogLine {
    pub fn is_warning(&self) -> bool {
        matches!(self.level.as_str(), "warn" | "warning" | "error")
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub header: Option<RunHeader>,
    /// The records `runlog::summarize` reads (steps, evaluations, idle, end); samples and logs are
    /// kept in their own series instead.
    summary_records: Vec<Record>,
    summary: Option<RunSummary>,
    /// The last measurement window warned about as too short for its sensor (one warning per
    /// window, not per step).
    warned_window: Option<u64>,
    summary_stale: bool,
    /// Every sensor reading with a power figure: (seconds since start, watts).
    pub machine_power: Vec<(f64, f64)>,
    /// The sensor readings taken while one model's step ran, per role: (seconds, watts).
    pub power: BTreeMap<Role, Vec<(f64, f64)>>,
    /// (start, end, role) of every step so far, in order: the windows readings are attributed to.
    step_windows: Vec<(f64, f64, Role)>,
    /// Each step's average power (its joules over its seconds), per role: (seconds, watts).
    pub step_power: BTreeMap<Role, Vec<(f64, f64)>>,
    pub training: BTreeMap<Role, TrainingCurve>,
    pub experts: BTreeMap<Role, ExpertLoad>,
    pub log: Vec<LogLine>,
    /// Steps recorded so far per role and phase (warm-up included).
    pub steps: BTreeMap<(Role, Phase), u64>,
    /// The sensor source as the records report it (the header's when no record has one yet).
    pub sample_source: Option<EnergySource>,
    /// Seconds since the start of the latest record with a time.
    pub t_s: f64,
    /// Why the run ended, from its end record.
    pub end_reason: Option<String>,
}

impl RunState {
    pub fn new(header: Option<RunHeader>) -> RunState {
        let mut s = RunState {
            summary_stale: true,
            ..RunState::default()
        };
        if let Some(h) = header {
            s.set_header(h);
        }
        s
    }

    pub fn set_header(&mut self, h: RunHeader) {
        for f in &h.sensor.fallbacks {
            self.log.push(LogLine {
                t_s: None,
                level: "warn".into(),
                message: format!("sensor fell back: {f}"),
            });
        }
        self.header = Some(h);
    }

    /// The model profile name of a role, from the header.
    pub fn model_name(&self, role: Role) -> Option<&str> {
        Some(self.header.as_ref()?.model(role)?.name.as_str())
    }

    /// The energy source of the run: the header's sensor, else what the records say.
    pub fn source(&self) -> Option<EnergySource> {
        self.header
            .as_ref()
            .map(|h| h.sensor.source)
            .or(self.sample_source)
    }

    /// Take one record into the state. Cheap: the summary is only marked stale.
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Step(s) => self.apply_step(s),
            Record::Sample(s) => {
                self.t_s = self.t_s.max(s.t_s);
                self.sample_source = Some(s.source);
                if let Some(w) = s.power_w.filter(|w| w.is_finite()) {
                    insert_by_time(&mut self.machine_power, (s.t_s, w));
                    // A run may write a step's readings after the step itself: attribute them to
                    // the step already recorded whose window holds them.
                    let i = self.step_windows.partition_point(|x| x.1 < s.t_s);
                    if let Some(&(start, _, role)) = self.step_windows.get(i) {
                        if start < s.t_s {
                            insert_by_time(self.power.entry(role).or_default(), (s.t_s, w));
                        }
                    }
                }
            }
            Record::Eval(e) => {
                self.t_s = self.t_s.max(e.t_s);
                self.training
                    .entry(e.role)
                    .or_default()
                    .val_loss
                    .push(LossPoint {
                        tokens: e.train_tokens as f64,
                        flops: e.train_flops,
                        loss: e.val_loss,
                    });
                self.summary_records.push(r.clone());
                self.summary_stale = true;
            }
            Record::Idle(i) => {
                self.log.push(LogLine {
                    t_s: None,
                    level: "info".into(),
                    message: format!(
                        "idle baseline {}: {:.1} W over {:.1} s ({}, {})",
                        match i.when {
                            IdleWhen::Before => "before the workload",
                            IdleWhen::After => "after the workload",
                        },
                        i.power_w,
                        i.seconds,
                        i.source,
                        i.scope
                    ),
                });
                self.summary_records.push(r.clone());
                self.summary_stale = true;
            }
            Record::Log {
                t_s,
                level,
                message,
            } => {
                self.t_s = self.t_s.max(*t_s);
                self.log.push(LogLine {
                    t_s: Some(*t_s),
                    level: level.clone(),
                    message: message.clone(),
                });
            }
            Record::End { t_s, reason } => {
                self.t_s = self.t_s.max(*t_s);
                self.end_reason = Some(reason.clone());
                self.log.push(LogLine {
                    t_s: Some(*t_s),
                    level: "info".into(),
                    message: format!("run ended: {reason}"),
                });
                self.summary_records.push(r.clone());
                self.summary_stale = true;
            }
        }
    }

    fn apply_step(&mut self, s: &StepRecord) {
        self.t_s = self.t_s.max(s.t_s);
        *self.steps.entry((s.role, s.phase)).or_default() += 1;
        // The readings taken while this step ran belong to its model (steps never overlap).
        let start = s.t_s - s.seconds;
        let from = self.machine_power.partition_point(|p| p.0 <= start);
        let to = self.machine_power.partition_point(|p| p.0 <= s.t_s);
        for i in from..to {
            let p = self.machine_power[i];
            insert_by_time(self.power.entry(s.role).or_default(), p);
        }
        self.step_windows.push((start, s.t_s, s.role));
        if let Some(w) = s.energy.as_ref().and_then(|e| e.window.as_ref()) {
            if !s.warmup && w.too_short() && self.warned_window != Some(w.index) {
                self.warned_window = Some(w.index);
                self.log.push(LogLine {
                    t_s: Some(s.t_s),
                    level: "warn".into(),
                    message: format!(
                        "{} {}: a window of {} step(s) spanned {:.1} counter updates, under the {} the sensor resolves: energy unresolved",
                        s.model,
                        s.phase.label(),
                        w.steps,
                        w.updates.unwrap_or(0.0),
                        crate::meter::SAFE_UPDATES_PER_WINDOW
                    ),
                });
            }
        }
        if let Some(e) = &s.energy {
            self.sample_source.get_or_insert(e.source);
            if s.seconds > 0.0 {
                self.step_power
                    .entry(s.role)
                    .or_default()
                    .push((s.t_s, e.joules / s.seconds));
            }
        }
        if s.phase == Phase::Train {
            let c = self.training.entry(s.role).or_default();
            c.tokens += s.tokens;
            c.flops += s.flops;
            match s.loss {
                Some(l) if l.is_finite() => c.train_loss.push(LossPoint {
                    tokens: c.tokens as f64,
                    flops: c.flops,
                    loss: l,
                }),
                Some(l) => self.log.push(LogLine {
                    t_s: Some(s.t_s),
                    level: "warn".into(),
                    message: format!("{} train step {}: loss is {l}", s.model, s.step),
                }),
                None => {}
            }
        }
        if !s.expert_tokens.is_empty() || s.dropped > 0 {
            let x = self.experts.entry(s.role).or_default();
            if s.phase == Phase::Train {
                add_expert_tokens(&mut x.tokens, &s.expert_tokens);
                x.last_step = s.expert_tokens.clone();
                for (d, counts) in &s.domain_expert_tokens {
                    add_expert_tokens(x.domains.entry(d.clone()).or_default(), counts);
                }
                if let Some(a) = s.aux_loss {
                    x.aux_loss.push(a);
                }
            }
            x.dropped += s.dropped;
            x.steps_with_drops += u64::from(s.dropped > 0);
        }
        self.summary_records.push(Record::Step(s.clone()));
        self.summary_stale = true;
    }

    /// The summary as of the last [`RunState::refresh_summary`] (or the one the run sent at its end).
    pub fn summary(&self) -> Option<&RunSummary> {
        self.summary.as_ref()
    }

    /// True when records arrived since the summary was computed.
    pub fn summary_stale(&self) -> bool {
        self.summary_stale
    }

    /// Recompute the summary from the records so far (linear in the number of steps).
    pub fn refresh_summary(&mut self) {
        if self.summary_stale {
            self.summary = Some(match &self.header {
                Some(h) => crate::project::summarize_run(h, &self.summary_records)
                    .with_target(&self.summary_records, h.config.target()),
                None => summarize(&self.summary_records),
            });
            self.summary_stale = false;
        }
    }

    /// Use the summary the run computed itself at its end.
    pub fn set_summary(&mut self, s: RunSummary) {
        self.summary = Some(s);
        self.summary_stale = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::Energy;
    use crate::vocab::Sample;

    fn sample(t: f64, w: f64) -> Record {
        Record::Sample(Sample {
            t_s: t,
            power_w: Some(w),
            instant_power_w: None,
            energy_j: None,
            source: EnergySource::Rapl,
            gpus: vec![],
        })
    }

    fn train_step(role: Role, t: f64, loss: f64, experts: Vec<Vec<u64>>) -> Record {
        Record::Step(StepRecord {
            t_s: t,
            model: format!("{role:?}"),
            role,
            phase: Phase::Train,
            step: 0,
            warmup: false,
            tokens: 100,
            seconds: 1.0,
            flops: 1e9,
            flops_by_component: Default::default(),
            energy: Some(Energy {
                joules: 30.0,
                idle_joules: None,
                source: EnergySource::Rapl,
                scope: "package".into(),
                window: None,
                host: None,
            }),
            loss: Some(loss),
            aux_loss: Some(0.01),
            expert_tokens: experts,
            dropped: 3,
            domain_expert_tokens: Default::default(),
        })
    }

    #[test]
    fn readings_during_a_step_go_to_that_steps_model() {
        let mut s = RunState::new(None);
        for (t, w) in [
            (0.5, 10.0),
            (1.2, 20.0),
            (1.8, 21.0),
            (2.5, 30.0),
            (2.9, 31.0),
        ] {
            s.apply(&sample(t, w));
        }
        s.apply(&train_step(Role::Sparse, 2.0, 3.0, vec![])); // ran (1.0, 2.0]
        s.apply(&train_step(Role::Dense, 3.0, 3.1, vec![])); // ran (2.0, 3.0]
        assert_eq!(s.power[&Role::Sparse], vec![(1.2, 20.0), (1.8, 21.0)]);
        assert_eq!(s.power[&Role::Dense], vec![(2.5, 30.0), (2.9, 31.0)]);
        assert_eq!(s.step_power[&Role::Sparse], vec![(2.0, 30.0)]);
        assert_eq!(s.machine_power.len(), 5);
    }

    #[test]
    fn readings_written_after_their_step_still_go_to_its_model() {
        let mut s = RunState::new(None);
        s.apply(&train_step(Role::Sparse, 2.0, 3.0, vec![])); // ran (1.0, 2.0]
        for (t, w) in [(1.2, 20.0), (1.8, 21.0), (2.5, 30.0)] {
            s.apply(&sample(t, w));
        }
        s.apply(&train_step(Role::Dense, 3.0, 3.1, vec![])); // ran (2.0, 3.0]
        s.apply(&sample(2.9, 31.0));
        s.apply(&sample(3.5, 5.0)); // after every step: the machine's only
        assert_eq!(s.power[&Role::Sparse], vec![(1.2, 20.0), (1.8, 21.0)]);
        assert_eq!(s.power[&Role::Dense], vec![(2.5, 30.0), (2.9, 31.0)]);
        assert_eq!(s.machine_power.len(), 5);
    }

    #[test]
    fn expert_counts_accumulate_and_a_nan_loss_becomes_a_warning() {
        let mut s = RunState::new(None);
        s.apply(&train_step(
            Role::Sparse,
            1.0,
            3.0,
            vec![vec![3, 1], vec![2, 2]],
        ));
        s.apply(&train_step(
            Role::Sparse,
            2.0,
            f64::NAN,
            vec![vec![1, 3], vec![4, 0]],
        ));
        let x = &s.experts[&Role::Sparse];
        assert_eq!(x.tokens, vec![vec![4, 4], vec![6, 2]]);
        assert_eq!(x.last_step, vec![vec![1, 3], vec![4, 0]]);
        assert_eq!((x.dropped, x.steps_with_drops), (6, 2));
        let c = &s.training[&Role::Sparse];
        assert_eq!((c.tokens, c.train_loss.len()), (200, 1));
        assert!(s
            .log
            .iter()
            .any(|l| l.is_warning() && l.message.contains("NaN")));
    }

    #[test]
    fn a_window_too_short_for_the_sensor_is_warned_once() {
        let in_window = |t: f64, index: u64, updates: f64| {
            let Record::Step(mut st) = train_step(Role::Dense, t, 3.0, vec![]) else {
                unreachable!()
            };
            st.energy.as_mut().unwrap().window = Some(crate::runlog::WindowInfo {
                index,
                steps: 2,
                seconds: updates * 0.1,
                updates: Some(updates),
            });
            Record::Step(st)
        };
        let mut s = RunState::new(None);
        s.apply(&in_window(1.0, 0, 25.0)); // long enough
        s.apply(&in_window(2.0, 1, 4.0)); // two steps of one short window
        s.apply(&in_window(3.0, 1, 4.0));
        let warned: Vec<_> = s
            .log
            .iter()
            .filter(|l| l.is_warning() && l.message.contains("energy unresolved"))
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].message.contains("4.0 counter updates"));
    }

    #[test]
    fn imbalance_is_max_over_mean() {
        assert_eq!(imbalance(&[4, 4]), Some(1.0));
        assert_eq!(imbalance(&[6, 2]), Some(1.5));
        assert_eq!(imbalance(&[8, 0, 0, 0]), Some(4.0));
        assert_eq!(imbalance(&[0, 0]), None);
    }

    #[test]
    fn the_summary_is_recomputed_only_when_refreshed() {
        let mut s = RunState::new(None);
        s.apply(&train_step(Role::Sparse, 1.0, 3.0, vec![]));
        assert!(s.summary().is_none() && s.summary_stale());
        s.refresh_summary();
        let sum = s.summary().unwrap();
        let p = sum
            .model(Role::Sparse)
            .unwrap()
            .phase(Phase::Train)
            .unwrap();
        assert_eq!(p.tokens, 100);
        s.apply(&train_step(Role::Sparse, 2.0, 3.0, vec![]));
        assert!(s.summary_stale());
    }
}
