//! How often a sensor's energy counter updates, and how long a window must be to resolve it.
//!
//! An energy counter does not advance continuously: NVML boards update theirs every 10-100 ms,
//! RAPL about every millisecond. A window reads the counter at its two ends, so its joules are
//! off by at most one update's energy (the update in progress at either end is either wholly in
//! or wholly out). A window spanning [`SAFE_UPDATES_PER_WINDOW`] updates is therefore within
//! 1/20 = 5% of the truth even in the worst case, and the error of many such windows averages
//! out further. Steps shorter than that are measured in blocks of `k` steps per window.

use std::time::Duration;

use super::sensor::Sensor;
use crate::clock::Clock;
use crate::vocab::EnergySource;

/// Counter updates a window must span to be trusted: the worst-case quantisation error of one
/// window is one update, so 20 updates bound it at 5%.
pub const SAFE_UPDATES_PER_WINDOW: f64 = 20.0;

/// Headroom on the block size: steps vary in length, so a block is sized for this many times
/// the safe window, keeping nearly every window above it.
pub const BLOCK_MARGIN: f64 = 1.25;

/// The most steps one window may hold (a sensor updating once a minute would otherwise ask for
/// absurd blocks).
pub const MAX_BLOCK_STEPS: u64 = 10_000;

/// How long the update-period detection polls at most.
pub const DETECT_FOR: Duration = Duration::from_millis(1000);

/// Distinct update intervals after which the detection stops early.
const DETECT_INTERVALS: usize = 10;

/// The smallest step of a counter seen by polling it: in time and in energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdatePeriod {
    /// Smallest time between two observed changes of the counter, seconds.
    pub period_s: f64,
    /// Smallest positive change of the counter, joules.
    pub energy_j: f64,
    /// Changes observed (the first one included).
    pub updates: usize,
}

impl UpdatePeriod {
    /// The shortest window this counter resolves: [`SAFE_UPDATES_PER_WINDOW`] updates.
    pub fn min_window_s(&self) -> f64 {
        SAFE_UPDATES_PER_WINDOW * self.period_s
    }
}

/// Finds the update period from a series of `(t_s, counter_j)` readings in time order: the
/// smallest time between consecutive changes (the first change is only a start: the time of the
/// update before it is unknown) and the smallest positive change. `None` without two changes.
pub fn period_from_readings(readings: &[(f64, f64)]) -> Option<UpdatePeriod> {
    let mut change_times = Vec::new();
    let mut min_step_j = f64::INFINITY;
    for w in readings.windows(2) {
        let ((_, a), (t, b)) = (w[0], w[1]);
        if b > a {
            change_times.push(t);
            min_step_j = min_step_j.min(b - a);
        }
    }
    let period_s = change_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    (period_s.is_finite() && period_s > 0.0).then_some(UpdatePeriod {
        period_s,
        energy_j: min_step_j,
        updates: change_times.len(),
    })
}

/// How long the detection waits between two reads of the counter.
const DETECT_POLL: Duration = Duration::from_micros(200);

/// Polls `sensor`'s energy counter back to back for up to `max` of `clock`'s time (stopping once
/// enough distinct updates are seen) and returns its update period. `None` for the estimate (it has no counter),
/// a sensor without an energy counter, one whose reads fail, or a counter that did not change
/// at least twice in that time.
pub fn detect_update_period(
    sensor: &mut dyn Sensor,
    max: Duration,
    clock: &dyn Clock,
) -> Option<UpdatePeriod> {
    if sensor.source() == EnergySource::Estimate {
        return None;
    }
    let start = clock.now();
    let mut readings: Vec<(f64, f64)> = Vec::new();
    let mut changes = 0usize;
    while clock.since(start) < max {
        let before = clock.now();
        let j = sensor.read_energy_j().ok()??;
        // The reading's time: the middle of the read.
        let t = (before - start).as_secs_f64() + clock.since(before).as_secs_f64() / 2.0;
        if readings.last().is_some_and(|&(_, last)| j > last) {
            changes += 1;
            if changes > DETECT_INTERVALS {
                readings.push((t, j));
                break;
            }
        }
        readings.push((t, j));
        clock.sleep(DETECT_POLL);
    }
    period_from_readings(&readings)
}

/// Steps per window for steps of `step_s` seconds on a counter with `period`: 1 where one step
/// already spans the safe window (or the sensor has no counter period, like the estimate), else
/// enough steps to span [`BLOCK_MARGIN`] x the safe window, at most [`MAX_BLOCK_STEPS`].
pub fn block_steps(step_s: f64, period: Option<&UpdatePeriod>) -> u64 {
    let Some(p) = period else { return 1 };
    let need_s = p.min_window_s();
    if step_s.is_nan() || step_s <= 0.0 || step_s.is_infinite() || step_s >= need_s {
        return 1;
    }
    ((BLOCK_MARGIN * need_s / step_s).ceil() as u64).clamp(1, MAX_BLOCK_STEPS)
}

/// Splits a window's `joules` among its steps in proportion to their `seconds`, so the shares
/// sum to `joules` (the last share takes the rounding remainder). Steps of no time share equally.
pub fn attribute_by_duration(joules: f64, seconds: &[f64]) -> Vec<f64> {
    let n = seconds.len();
    if n == 0 {
        return Vec::new();
    }
    let total: f64 = seconds.iter().sum();
    let mut shares: Vec<f64> = if total > 0.0 {
        seconds.iter().map(|s| joules * s / total).collect()
    } else {
        vec![joules / n as f64; n]
    };
    let head: f64 = shares[..n - 1].iter().sum();
    shares[n - 1] = joules - head;
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::meter::{MeterError, Reading};

    fn p(period_s: f64) -> UpdatePeriod {
        UpdatePeriod {
            period_s,
            energy_j: 1.0,
            updates: 10,
        }
    }

    #[test]
    fn block_size_spans_the_safe_window_with_margin() {
        let nvml = p(0.1); // safe window 2 s, blocks sized for 2.5 s
        assert_eq!(block_steps(0.005, Some(&nvml)), 500);
        assert_eq!(block_steps(0.15, Some(&nvml)), 17); // 2.5 / 0.15 = 16.7
        assert_eq!(block_steps(0.3, Some(&nvml)), 9);
        // Every block of steps this long spans at least the safe window.
        for step_s in [0.001, 0.0042, 0.013, 0.05, 0.099, 0.7, 1.9] {
            let k = block_steps(step_s, Some(&nvml));
            assert!(k as f64 * step_s >= nvml.min_window_s(), "{step_s} s x {k}");
        }
        // A step longer than the safe window is its own window.
        assert_eq!(block_steps(2.0, Some(&nvml)), 1);
        assert_eq!(block_steps(5.0, Some(&nvml)), 1);
        // RAPL's ~1 ms counter: 20 ms steps or longer keep per-step windows.
        let rapl = p(0.001);
        assert_eq!(block_steps(0.02, Some(&rapl)), 1);
        assert_eq!(block_steps(0.15, Some(&rapl)), 1);
        assert_eq!(block_steps(0.005, Some(&rapl)), 5);
        // No counter period (the estimate) or no timing: per-step windows.
        assert_eq!(block_steps(0.001, None), 1);
        assert_eq!(block_steps(0.0, Some(&nvml)), 1);
        assert_eq!(block_steps(f64::NAN, Some(&nvml)), 1);
        // A very coarse counter is capped.
        assert_eq!(block_steps(1e-6, Some(&p(60.0))), MAX_BLOCK_STEPS);
    }

    #[test]
    fn attribution_follows_durations_and_preserves_the_sum() {
        let shares = attribute_by_duration(10.0, &[0.1, 0.3, 0.1]);
        assert!((shares[0] - 2.0).abs() < 1e-12);
        assert!((shares[1] - 6.0).abs() < 1e-12);
        assert!((shares[2] - 2.0).abs() < 1e-12);
        // Awkward numbers still sum exactly to the window's joules.
        let secs = [0.013, 0.0071, 0.029, 0.0113, 0.017, 0.023, 0.0031];
        let j = 123.456_789;
        let shares = attribute_by_duration(j, &secs);
        assert_eq!(shares.len(), secs.len());
        assert_eq!(shares.iter().sum::<f64>(), j);
        // Steps of no time share equally; no steps, no shares.
        assert_eq!(attribute_by_duration(3.0, &[0.0, 0.0, 0.0]), vec![1.0; 3]);
        assert!(attribute_by_duration(3.0, &[]).is_empty());
    }

    #[test]
    fn the_period_is_the_smallest_gap_between_changes() {
        // A counter stepping 25 J every 0.1 s, read every 0.01 s from t = 0.043.
        let readings: Vec<(f64, f64)> = (0..60)
            .map(|i| {
                let t = 0.043 + i as f64 * 0.01;
                (t, 25.0 * (t / 0.1).floor())
            })
            .collect();
        let up = period_from_readings(&readings).unwrap();
        assert!((up.period_s - 0.1).abs() < 1e-9, "{}", up.period_s);
        assert_eq!(up.energy_j, 25.0);
        assert_eq!(up.updates, 6);
        assert!((up.min_window_s() - 2.0).abs() < 1e-9);
        // One change only, or none: no period.
        assert!(period_from_readings(&[(0.0, 1.0), (0.1, 2.0), (0.2, 2.0)]).is_none());
        assert!(period_from_readings(&[(0.0, 1.0), (0.1, 1.0)]).is_none());
    }

    /// A counter of 0.5 J steps every `period_s` of a fake clock's time; a read takes 50 µs.
    struct Stepping {
        clock: std::sync::Arc<FakeClock>,
        period_s: f64,
    }

    impl Sensor for Stepping {
        fn source(&self) -> EnergySource {
            EnergySource::Rapl
        }
        fn scope(&self) -> String {
            "stepping".into()
        }
        fn read(&mut self) -> Result<Reading, MeterError> {
            self.clock.sleep(Duration::from_micros(50));
            let n = (self.clock.elapsed().as_secs_f64() / self.period_s).floor();
            Ok(Reading {
                energy_j: Some(n * 0.5),
                ..Reading::default()
            })
        }
    }

    fn stepping(period_s: f64) -> Stepping {
        Stepping {
            clock: FakeClock::new(),
            period_s,
        }
    }

    #[test]
    fn detection_finds_a_20_ms_counter_and_stops_after_ten_intervals() {
        let mut s = stepping(0.02);
        let clock = s.clock.clone();
        let up = detect_update_period(&mut s, Duration::from_secs(2), &*clock).unwrap();
        // Each change is seen within one poll (200 µs plus a 50 µs read) of when it happened.
        assert!((up.period_s - 0.02).abs() <= 250e-6, "{}", up.period_s);
        assert_eq!(up.energy_j, 0.5);
        // Eleven changes seen (the first only starts the count): about 11 x 20 ms, far under
        // the 2 s allowed.
        assert_eq!(up.updates, 11);
        let spent = clock.elapsed().as_secs_f64();
        assert!((0.22..0.221).contains(&spent), "{spent} s");
    }

    #[test]
    fn detection_of_a_100_ms_counter_uses_its_whole_second() {
        // NVML's coarse counters: ten updates in the second allowed, not eleven.
        let mut s = stepping(0.1);
        let clock = s.clock.clone();
        let up = detect_update_period(&mut s, DETECT_FOR, &*clock).unwrap();
        assert!((up.period_s - 0.1).abs() <= 250e-6, "{}", up.period_s);
        assert_eq!(up.updates, 9, "changes at 0.1, 0.2, ... 0.9 s");
        assert!(clock.elapsed() >= DETECT_FOR);
        assert!(clock.elapsed() < DETECT_FOR + Duration::from_micros(300));
        // A counter that never moves: no period, after the whole time allowed.
        let mut s = stepping(f64::INFINITY);
        let clock = s.clock.clone();
        assert!(detect_update_period(&mut s, DETECT_FOR, &*clock).is_none());
        assert!(clock.elapsed() >= DETECT_FOR);
    }
}
