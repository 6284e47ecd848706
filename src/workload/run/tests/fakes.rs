//! The fakes the run-loop tests drive: workloads whose steps take a fake clock's time, counters
//! that read it, and the plan and runner they share.

use super::super::*;
use crate::clock::FakeClock;
use crate::meter::{MeterError, Reading, Sensor};
use crate::runlog::read_run;
use crate::vocab::EnergySource;
use crate::vocab::Phase;
use crate::vocab::Role;
use crate::workload::StepOutcome;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A workload whose steps take a fixed time of a fake clock, the first of each phase 3x as long
/// (a slow warm-up); decode continues a prefill 3 times.
pub(super) struct Fake {
    pub(super) clock: Arc<FakeClock>,
    pub(super) name: &'static str,
    pub(super) role: Role,
    /// After this many steps, steps take a quarter of the time (the machine got less busy).
    pub(super) fast_after: Option<u64>,
    pub(super) room: u32,
    pub(super) synced: u64,
    pub(super) steps: u64,
    pub(super) seen: Vec<Phase>,
}

impl Fake {
    /// A fresh sparse "a" and dense "b", their steps taking `clock`'s time.
    pub(super) fn pair(clock: &Arc<FakeClock>) -> (Fake, Fake) {
        let fake = |name, role| Fake {
            clock: Arc::clone(clock),
            name,
            role,
            fast_after: None,
            room: 0,
            synced: 0,
            steps: 0,
            seen: Vec::new(),
        };
        (fake("a", Role::Sparse), fake("b", Role::Dense))
    }
}

impl Workload for Fake {
    fn name(&self) -> &str {
        self.name
    }
    fn role(&self) -> Role {
        self.role
    }
    fn step(&mut self, phase: Phase) -> anyhow::Result<StepOutcome> {
        self.steps += 1;
        let ms = match phase {
            Phase::Train => 2,
            Phase::Prefill => 1,
            Phase::Decode => {
                anyhow::ensure!(self.room > 0, "decode without room");
                self.room -= 1;
                1
            }
        };
        if phase == Phase::Prefill {
            self.room = 3;
        }
        let slow = if self.seen.contains(&phase) { 1 } else { 3 };
        let fast = if self.fast_after.is_some_and(|n| self.steps > n) {
            4
        } else {
            1
        };
        self.seen.push(phase);
        self.clock
            .sleep(Duration::from_micros(ms * 1000 * slow / fast));
        Ok(StepOutcome {
            tokens: 10,
            loss: (phase == Phase::Train).then_some(1.0),
            ..StepOutcome::default()
        })
    }
    fn validate(&mut self) -> anyhow::Result<Vec<f64>> {
        // Falls with the steps trained, the same for both models.
        let l = 5.0 / (1.0 + self.steps as f64);
        Ok(vec![l * 0.9, l * 1.1])
    }
    fn can_decode(&self) -> bool {
        self.room > 0
    }
    fn synchronize(&mut self) -> anyhow::Result<()> {
        self.synced += 1;
        Ok(())
    }
}

/// A plan of one warm-up step, no inference, no idle window and no evaluation but the first
/// and the last; tests set what they measure.
pub(super) fn test_plan() -> RunPlan {
    RunPlan {
        train_steps: 4,
        warmup_steps: 1,
        prefill_steps: 0,
        decode_steps: 0,
        idle_seconds: 0.0,
        eval_every: 1000,
        update_period: None,
        min_windows: 1,
        max_lengthen_s: 1.0,
        peak: None,
        until_loss: None,
        target_loss: None,
    }
}

/// A meter without a sampler thread on `clock`, from its origin.
pub(super) fn meter_on(clock: &Arc<FakeClock>, sensor: impl Sensor + 'static) -> Meter {
    Meter::start_on(clock.clone(), Box::new(sensor), 0.0, clock.origin())
}

/// `plan` run on two fakes (`a` sparse, `b` dense) on `clock`, metered by `meter` (and `host`),
/// written to `dir`: the fakes after the run, its summary and the folder read back.
pub(super) fn run_fakes(
    plan: &RunPlan,
    clock: &Arc<FakeClock>,
    meter: &Meter,
    host: Option<&Meter>,
    dir: &std::path::Path,
) -> (Fake, Fake, RunSummary, crate::runlog::RunData) {
    run_pair(plan, clock, meter, host, dir, Fake::pair(clock))
}

/// [`run_fakes`] with the fakes given.
pub(super) fn run_pair(
    plan: &RunPlan,
    clock: &Arc<FakeClock>,
    meter: &Meter,
    host: Option<&Meter>,
    dir: &std::path::Path,
    (a, b): (Fake, Fake),
) -> (Fake, Fake, RunSummary, crate::runlog::RunData) {
    let mut writer = RunWriter::create(dir, &crate::runlog::test_header()).unwrap();
    let (a, b, summary) = execute_pair(plan, clock, (meter, host), &mut writer, (a, b));
    drop(writer);
    (a, b, summary.unwrap(), read_run(dir).unwrap())
}

/// `plan` run on the fakes given, on `clock`, metered by `meters` (main, host), written by
/// `writer`: the fakes after the run and its outcome.
pub(super) fn execute_pair(
    plan: &RunPlan,
    clock: &Arc<FakeClock>,
    (main, host): (&Meter, Option<&Meter>),
    writer: &mut RunWriter,
    (mut a, mut b): (Fake, Fake),
) -> (Fake, Fake, anyhow::Result<RunSummary>) {
    let summary = execute(
        plan,
        &mut a,
        &mut b,
        Meters {
            main,
            host,
            epoch: clock.origin(),
        },
        Outputs {
            writer,
            observers: &mut [],
            progress: &mut Quiet,
        },
        &AtomicBool::new(false),
    );
    (a, b, summary)
}

/// A counter at 100 W that updates every 5 ms of a fake clock; reads numbered in `fail` fail.
pub(super) struct Coarse {
    pub(super) clock: Arc<FakeClock>,
    pub(super) reads: u64,
    pub(super) fail: Vec<u64>,
}

impl Coarse {
    /// Its update period, as the detection would find it: 5 ms, 0.5 J an update.
    pub(super) const PERIOD: UpdatePeriod = UpdatePeriod {
        period_s: 0.005,
        energy_j: 0.5,
        updates: 10,
    };

    /// The counter on `clock`, its reads numbered in `fail` failing.
    pub(super) fn new(clock: &Arc<FakeClock>, fail: Vec<u64>) -> Coarse {
        Coarse {
            clock: Arc::clone(clock),
            reads: 0,
            fail,
        }
    }
}

impl Sensor for Coarse {
    fn source(&self) -> EnergySource {
        EnergySource::Nvml
    }
    fn scope(&self) -> String {
        "coarse".into()
    }
    fn read(&mut self) -> Result<Reading, MeterError> {
        self.reads += 1;
        if self.fail.contains(&self.reads) {
            return Err(MeterError::Read {
                reader: "nvml",
                reason: "flaky".into(),
            });
        }
        let t = (self.clock.elapsed().as_secs_f64() / 0.005).floor() * 0.005;
        Ok(Reading {
            energy_j: Some(100.0 * t),
            ..Reading::default()
        })
    }
}

/// A continuous counter: `energy_j` of the seconds of a fake clock since its origin.
pub(super) struct Continuous {
    pub(super) clock: Arc<FakeClock>,
    pub(super) source: EnergySource,
    pub(super) energy_j: Box<dyn Fn(f64) -> f64 + Send>,
}

impl Continuous {
    pub(super) fn new(
        clock: &Arc<FakeClock>,
        source: EnergySource,
        f: impl Fn(f64) -> f64 + Send + 'static,
    ) -> Self {
        Continuous {
            clock: Arc::clone(clock),
            source,
            energy_j: Box::new(f),
        }
    }
}

impl Sensor for Continuous {
    fn source(&self) -> EnergySource {
        self.source
    }
    fn scope(&self) -> String {
        "test".into()
    }
    fn read(&mut self) -> Result<Reading, MeterError> {
        Ok(Reading {
            energy_j: Some((self.energy_j)(self.clock.elapsed().as_secs_f64())),
            ..Reading::default()
        })
    }
}
