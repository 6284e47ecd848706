//! The meter: a sampler thread that reads the sensor at a set rate into a time series, and
//! measurement windows around steps or phases.
//!
//! The sensor sits behind a mutex shared by the sampler thread and the windows; every read
//! holds it only for the read itself. Reads are serialised by that mutex, so they form one
//! time-ordered series; for a sensor without an energy counter the meter keeps a running
//! trapezoid integral of the power of every read (samples and window ends alike), and a
//! window's joules are the difference of that integral at its end and its begin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sensor::{Reading, Sensor};
use super::window::{trapezoid_step_j, Position, Window, WindowEnergy};
use super::MeterError;
use crate::clock::{self, Clock};
use crate::vocab::EnergySource;
use crate::vocab::Sample;

/// The sampling rate when none is given, Hz.
pub const DEFAULT_SAMPLE_HZ: f64 = 10.0;
/// Samples kept for [`Meter::take_samples`] before the oldest are dropped (a day at 10 Hz).
const MAX_PENDING_SAMPLES: usize = 864_000;

struct SensorState {
    sensor: Box<dyn Sensor>,
    /// Counter value of the first successful read: samples' `energy_j` start from 0 there.
    counter_origin_j: Option<f64>,
    /// Last read with power, `(t_s, power_w)`, and the trapezoid integral up to it.
    last_power: Option<(f64, f64)>,
    integral_j: f64,
}

struct Shared {
    state: Mutex<SensorState>,
    pending: Mutex<Vec<Sample>>,
    last_error: Mutex<Option<String>>,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    started: Instant,
    source: EnergySource,
    scope: String,
    /// Nanoseconds spent inside sensor reads (sampler and windows).
    read_ns: AtomicU64,
    read_errors: AtomicU64,
}

/// Owns the sampler thread; stops and joins it on [`Meter::stop`] or drop.
pub struct Meter {
    shared: Arc<Shared>,
    sample_hz: f64,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Reads the sensor once; returns the reading, its time (seconds since the epoch) and the
    /// meter's energy position after it.
    fn read(&self) -> Result<(Reading, f64, Position), MeterError> {
        let mut st = lock(&self.state);
        let before = self.clock.now();
        let result = st.sensor.read();
        let after = self.clock.now();
        self.read_ns
            .fetch_add((after - before).as_nanos() as u64, Ordering::Relaxed);
        let reading = result.inspect_err(|e| {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_error) = Some(e.to_string());
        })?;
        // The reading's time: the middle of the read call.
        let t_s = (before + (after - before) / 2)
            .saturating_duration_since(self.epoch)
            .as_secs_f64();
        if let Some(p) = reading.power_w {
            if let Some(last) = st.last_power {
                st.integral_j += trapezoid_step_j(last, (t_s, p));
            }
            st.last_power = Some((t_s, p));
        }
        let position = match reading.energy_j {
            Some(j) => {
                st.counter_origin_j.get_or_insert(j);
                Position::Counter(j)
            }
            None if st.last_power.is_some() => Position::Integral(st.integral_j),
            None => {
                return Err(MeterError::Window(
                    "the sensor gave neither energy nor power".to_string(),
                ))
            }
        };
        Ok((reading, t_s, position))
    }

    /// [`Shared::read`], tried a second time when the first fails (a window boundary should
    /// not be lost to one transient failure).
    fn read_retried(&self) -> Result<(Reading, f64, Position), MeterError> {
        self.read().or_else(|_| self.read())
    }

    fn sample_once(&self) {
        let Ok((reading, t_s, position)) = self.read() else {
            return;
        };
        let origin = lock(&self.state).counter_origin_j.unwrap_or(0.0);
        let energy_j = match position {
            Position::Counter(j) => j - origin,
            Position::Integral(j) => j,
        };
        let sample = Sample {
            t_s,
            power_w: reading.power_w,
            instant_power_w: reading.instant_power_w,
            energy_j: Some(energy_j),
            source: self.source,
            gpus: reading.gpus,
        };
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING_SAMPLES {
            pending.drain(..MAX_PENDING_SAMPLES / 2);
        }
        pending.push(sample);
    }
}

impl Meter {
    /// Starts sampling `sensor` at `sample_hz` (no sampler thread when it is not positive;
    /// windows still work). Sample times are seconds since `epoch`.
    pub fn start(sensor: Box<dyn Sensor>, sample_hz: f64, epoch: Instant) -> Meter {
        Meter::start_on(clock::system(), sensor, sample_hz, epoch)
    }

    /// [`Meter::start`] on `clock`: samples, windows and `epoch` are on its time.
    pub fn start_on(
        clock: Arc<dyn Clock>,
        sensor: Box<dyn Sensor>,
        sample_hz: f64,
        epoch: Instant,
    ) -> Meter {
        let started = clock.now();
        let shared = Arc::new(Shared {
            source: sensor.source(),
            scope: sensor.scope(),
            state: Mutex::new(SensorState {
                sensor,
                counter_origin_j: None,
                last_power: None,
                integral_j: 0.0,
            }),
            pending: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            clock,
            epoch,
            started,
            read_ns: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
        });
        // The first sample, at the start, so a window or a series never lacks its origin.
        shared.sample_once();
        let (stop_tx, thread) = if sample_hz.is_finite() && sample_hz > 0.0 {
            let (tx, rx) = mpsc::channel::<()>();
            let period = Duration::from_secs_f64(1.0 / sample_hz);
            // The first tick is fixed before the thread runs: one period after the start.
            let first = shared.clock.now() + period;
            let worker = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name("sparsewatt-sampler".to_string())
                .spawn(move || sampler_loop(&worker, first, period, &rx))
                .ok();
            (Some(tx), thread)
        } else {
            (None, None)
        };
        Meter {
            shared,
            sample_hz,
            stop_tx,
            thread,
        }
    }

    pub fn source(&self) -> EnergySource {
        self.shared.source
    }

    pub fn scope(&self) -> String {
        self.shared.scope.clone()
    }

    pub fn sample_hz(&self) -> f64 {
        self.sample_hz
    }

    /// The clock the meter reads time from; a run times its steps on the same one.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// Opens a window: reads the sensor now (twice if the first read fails).
    pub fn begin(&self) -> Window {
        let start = self.shared.clock.now();
        let start_j = self
            .shared
            .read_retried()
            .map(|(_, _, p)| p)
            .map_err(|e| e.to_string());
        Window { start, start_j }
    }

    /// Closes a window: joules between its begin and now, from the sensor's counter, or from
    /// the trapezoid integral of the power readings in between where it has none. The read at
    /// the end is tried twice; an error means the window is unmeasured, not that the meter is
    /// broken: the next window may well read.
    pub fn end(&self, w: Window) -> Result<WindowEnergy, MeterError> {
        let start_j = w.start_j.map_err(|e| {
            MeterError::Window(format!("the read at the window's begin failed: {e}"))
        })?;
        let (_, _, end_j) = self.shared.read_retried()?;
        Ok(WindowEnergy {
            joules: start_j.joules_to(end_j)?,
            seconds: self.shared.clock.since(w.start).as_secs_f64(),
            source: self.shared.source,
            scope: self.shared.scope.clone(),
        })
    }

    /// Samples taken since the last call, in time order; `t_s` is seconds since the epoch,
    /// `energy_j` the energy since the meter started.
    pub fn take_samples(&self) -> Vec<Sample> {
        std::mem::take(&mut *lock(&self.shared.pending))
    }

    /// Time spent reading the sensor (sampler thread and windows) over the wall time since the
    /// meter started: the meter's own cost, an upper bound on its share of a step.
    pub fn overhead_fraction(&self) -> f64 {
        let wall_s = self.shared.clock.since(self.shared.started).as_secs_f64();
        if wall_s <= 0.0 {
            return 0.0;
        }
        self.shared.read_ns.load(Ordering::Relaxed) as f64 * 1e-9 / wall_s
    }

    /// Failed sensor reads so far and the last failure's message (failed samples are skipped).
    pub fn read_errors(&self) -> (u64, Option<String>) {
        (
            self.shared.read_errors.load(Ordering::Relaxed),
            lock(&self.shared.last_error).clone(),
        )
    }

    /// Stops the sampler thread and waits for it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // Dropping the sender wakes the sampler at once.
        self.stop_tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads at a fixed schedule (ticks missed while a read ran long are skipped, not bunched).
fn sampler_loop(shared: &Shared, first: Instant, period: Duration, stop: &mpsc::Receiver<()>) {
    let mut next = first;
    loop {
        if shared.clock.wait_until(next, stop) {
            return;
        }
        shared.sample_once();
        next = next_tick(next, period, shared.clock.now());
    }
}

/// The tick after `tick`: one `period` later, or one period after `now` where the read ran past
/// that (the missed ticks are skipped, not taken in a burst).
fn next_tick(tick: Instant, period: Duration, now: Instant) -> Instant {
    let next = tick + period;
    if next < now {
        now + period
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const MS: Duration = Duration::from_millis(1);

    /// A sensor whose counter advances a fixed amount per read, at a fixed power; each read
    /// takes `read_cost` of the fake clock's time.
    struct CounterSensor {
        reads: u64,
        j_per_read: f64,
        clock: Arc<FakeClock>,
        read_cost: Duration,
    }

    impl CounterSensor {
        fn new(clock: &Arc<FakeClock>, j_per_read: f64) -> CounterSensor {
            CounterSensor {
                reads: 0,
                j_per_read,
                clock: Arc::clone(clock),
                read_cost: Duration::ZERO,
            }
        }
    }

    impl Sensor for CounterSensor {
        fn source(&self) -> EnergySource {
            EnergySource::Rapl
        }
        fn scope(&self) -> String {
            "fake counter".to_string()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            self.clock.sleep(self.read_cost);
            self.reads += 1;
            Ok(Reading {
                energy_j: Some(1000.0 + self.reads as f64 * self.j_per_read),
                power_w: Some(50.0),
                ..Reading::default()
            })
        }
    }

    /// A power-only sensor whose power is a known function of the fake clock's time.
    struct RampSensor {
        clock: Arc<FakeClock>,
    }

    impl RampSensor {
        fn power_w(t_s: f64) -> f64 {
            100.0 + 1000.0 * t_s
        }
    }

    impl Sensor for RampSensor {
        fn source(&self) -> EnergySource {
            EnergySource::Nvml
        }
        fn scope(&self) -> String {
            "fake ramp".to_string()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            let t_s = self.clock.elapsed().as_secs_f64();
            Ok(Reading {
                energy_j: None,
                power_w: Some(RampSensor::power_w(t_s)),
                ..Reading::default()
            })
        }
    }

    /// A meter on `clock` from its origin.
    fn meter_on(clock: &Arc<FakeClock>, sensor: impl Sensor + 'static, hz: f64) -> Meter {
        Meter::start_on(clock.clone(), Box::new(sensor), hz, clock.origin())
    }

    /// Moves `clock` on by `step`, `times` times, each time waiting (real time, 10 s at most)
    /// until the sampler has taken one more sample: every tick is sampled, however loaded the
    /// machine.
    fn tick(clock: &FakeClock, m: &Meter, step: Duration, times: usize) {
        for _ in 0..times {
            let before = lock(&m.shared.pending).len();
            clock.advance(step);
            let deadline = Instant::now() + Duration::from_secs(10);
            while lock(&m.shared.pending).len() == before {
                assert!(Instant::now() < deadline, "the sampler took no sample");
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    #[test]
    fn window_joules_are_the_counter_difference_and_seconds_its_length() {
        // No sampler thread: exactly one read at start, one at begin, one at end.
        let clock = FakeClock::new();
        let m = meter_on(&clock, CounterSensor::new(&clock, 2.5), 0.0);
        let w = m.begin();
        clock.advance(500 * MS);
        let e = m.end(w).unwrap();
        assert_eq!(e.joules, 2.5);
        assert_eq!(e.seconds, 0.5);
        assert_eq!(e.source, EnergySource::Rapl);
        assert_eq!(e.scope, "fake counter");
        let w = m.begin();
        let _ = m.begin(); // a read inside the window advances the counter too
        assert_eq!(m.end(w).unwrap().joules, 5.0);
    }

    #[test]
    fn window_joules_of_a_power_only_sensor_are_its_integral() {
        let clock = FakeClock::new();
        let m = meter_on(
            &clock,
            RampSensor {
                clock: clock.clone(),
            },
            200.0,
        );
        tick(&clock, &m, 5 * MS, 1);
        let w = m.begin();
        tick(&clock, &m, 5 * MS, 20);
        let e = m.end(w).unwrap();
        // The ramp is linear, so the trapezoid over the reads is exact: the window from 5 ms to
        // 105 ms holds the mean of its end powers x its length.
        assert_eq!(e.seconds, 0.1);
        let expect_j = (RampSensor::power_w(0.005) + RampSensor::power_w(0.105)) / 2.0 * 0.1;
        assert!(
            (e.joules - expect_j).abs() < 1e-9 * expect_j,
            "{} J vs {expect_j} J",
            e.joules
        );
        // The start sample and one per tick; the window's own reads are not samples.
        assert_eq!(m.take_samples().len(), 22);
    }

    #[test]
    fn samples_come_in_time_order_at_the_set_rate_and_skip_ticks_a_slow_read_missed() {
        let clock = FakeClock::new();
        let m = meter_on(&clock, CounterSensor::new(&clock, 1.0), 100.0);
        tick(&clock, &m, 10 * MS, 20);
        let s = m.take_samples();
        // The start sample and one every 10 ms, each at its tick.
        assert_eq!(s.len(), 21);
        for (i, x) in s.iter().enumerate() {
            assert!(
                (x.t_s - 0.01 * i as f64).abs() < 1e-9,
                "sample {i}: {}",
                x.t_s
            );
            assert_eq!(
                x.energy_j,
                Some(i as f64),
                "energy counts from the meter's start"
            );
            assert_eq!(x.source, EnergySource::Rapl);
        }
        // 55 ms pass at once (the sampler was held up): one sample, then the ticks go on one
        // period after it, not in a burst for the ones missed.
        tick(&clock, &m, 55 * MS, 1);
        tick(&clock, &m, 10 * MS, 1);
        let later: Vec<f64> = m.take_samples().iter().map(|x| x.t_s).collect();
        assert_eq!(later.len(), 2, "{later:?}");
        assert!((later[0] - 0.255).abs() < 1e-9 && (later[1] - 0.265).abs() < 1e-9);
        m.stop();
    }

    #[test]
    fn the_next_tick_skips_the_ones_a_late_read_missed() {
        let t0 = Instant::now();
        let p = 10 * MS;
        assert_eq!(next_tick(t0, p, t0 + 3 * MS), t0 + p);
        assert_eq!(next_tick(t0, p, t0 + p), t0 + p);
        assert_eq!(next_tick(t0, p, t0 + 35 * MS), t0 + 45 * MS);
    }

    #[test]
    fn overhead_is_the_time_in_reads_over_the_meters_wall_time() {
        // Reads of 2 ms each: the start sample, a window's begin and end; 96 ms between.
        let clock = FakeClock::new();
        let sensor = CounterSensor {
            read_cost: 2 * MS,
            ..CounterSensor::new(&clock, 1.0)
        };
        let m = meter_on(&clock, sensor, 0.0);
        let w = m.begin();
        clock.advance(96 * MS);
        let e = m.end(w).unwrap();
        assert!((e.seconds - 0.1).abs() < 1e-12, "{}", e.seconds);
        let expect = 0.006 / 0.102;
        assert!((m.overhead_fraction() - expect).abs() < 1e-12);
    }

    #[test]
    fn a_failed_begin_makes_the_window_an_error() {
        struct Broken;
        impl Sensor for Broken {
            fn source(&self) -> EnergySource {
                EnergySource::Rapl
            }
            fn scope(&self) -> String {
                "broken".to_string()
            }
            fn read(&mut self) -> Result<Reading, MeterError> {
                Err(MeterError::Read {
                    reader: "rapl",
                    reason: "gone".to_string(),
                })
            }
        }
        let m = Meter::start(Box::new(Broken), 0.0, Instant::now());
        let msg = m.end(m.begin()).unwrap_err().to_string();
        assert!(msg.contains("begin") && msg.contains("gone"), "{msg}");
        assert!(m.take_samples().is_empty());
        // The start sample failed, and the begin twice (once retried); `end` does not read
        // after a failed begin.
        assert_eq!(m.read_errors().0, 3);
    }

    /// A counter sensor whose reads fail at the given read numbers (from 1).
    struct Flaky {
        reads: u64,
        fail_at: Vec<u64>,
    }

    impl Sensor for Flaky {
        fn source(&self) -> EnergySource {
            EnergySource::Nvml
        }
        fn scope(&self) -> String {
            "flaky".to_string()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            self.reads += 1;
            if self.fail_at.contains(&self.reads) {
                return Err(MeterError::Read {
                    reader: "nvml",
                    reason: format!("read {} failed", self.reads),
                });
            }
            Ok(Reading {
                energy_j: Some(self.reads as f64),
                ..Reading::default()
            })
        }
    }

    #[test]
    fn a_read_that_fails_once_at_a_window_boundary_is_retried() {
        // Read 1: the start sample. Read 2 (begin) fails, read 3 retries it; read 4 (end) fails,
        // read 5 retries it.
        let m = Meter::start(
            Box::new(Flaky {
                reads: 0,
                fail_at: vec![2, 4],
            }),
            0.0,
            Instant::now(),
        );
        let e = m.end(m.begin()).unwrap();
        assert_eq!(e.joules, 2.0, "counter 3 at begin, 5 at end");
        assert_eq!(m.read_errors().0, 2);
        // Two failures in a row at the end: that window is unmeasured, the next one reads.
        let m = Meter::start(
            Box::new(Flaky {
                reads: 0,
                fail_at: vec![3, 4],
            }),
            0.0,
            Instant::now(),
        );
        let msg = m.end(m.begin()).unwrap_err().to_string();
        assert!(msg.contains("read 4 failed"), "{msg}");
        let e = m.end(m.begin()).unwrap();
        assert_eq!(e.joules, 1.0, "reads 5 and 6");
    }
}
