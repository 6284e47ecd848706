//! The estimate, for machines without a readable sensor: this process's CPU time x watts per
//! busy core, plus the CPU's idle watts. Always labelled `estimate`, never a measurement.
//!
//! energy_j = idle_w x wall_s + busy_w_per_core x cpu_s, with cpu_s the CPU seconds (user +
//! system, all threads) this process used since the sensor opened.

use std::time::Instant;

use super::sensor::{EstimateParams, Reading, Sensor};
use super::MeterError;
use crate::vocab::EnergySource;

/// Where the process CPU time comes from; replaceable in tests.
type CpuClock = Box<dyn FnMut() -> Result<f64, MeterError> + Send>;

pub struct EstimateSensor {
    params: EstimateParams,
    cpu_clock: CpuClock,
    wall_clock: Box<dyn FnMut() -> f64 + Send>,
    start_wall_s: f64,
    start_cpu_s: f64,
    last_wall_s: f64,
    last_energy_j: f64,
}

impl EstimateSensor {
    /// Opens the estimate on this process's CPU clock.
    pub fn open(params: EstimateParams) -> Result<EstimateSensor, MeterError> {
        let t0 = Instant::now();
        EstimateSensor::with_clocks(
            params,
            Box::new(process_cpu_s),
            Box::new(move || t0.elapsed().as_secs_f64()),
        )
    }

    /// The estimate on given clocks (seconds, each from any fixed origin).
    pub fn with_clocks(
        params: EstimateParams,
        mut cpu_clock: CpuClock,
        mut wall_clock: Box<dyn FnMut() -> f64 + Send>,
    ) -> Result<EstimateSensor, MeterError> {
        let start_cpu_s = cpu_clock()?;
        let start_wall_s = wall_clock();
        Ok(EstimateSensor {
            params,
            cpu_clock,
            wall_clock,
            start_wall_s,
            start_cpu_s,
            last_wall_s: start_wall_s,
            last_energy_j: 0.0,
        })
    }

    /// Joules of `wall_s` seconds during which the process used `cpu_s` CPU seconds.
    pub fn energy_j(params: &EstimateParams, wall_s: f64, cpu_s: f64) -> f64 {
        params.idle_w * wall_s + params.busy_w_per_core * cpu_s
    }
}

impl Sensor for EstimateSensor {
    fn source(&self) -> EnergySource {
        EnergySource::Estimate
    }

    fn scope(&self) -> String {
        format!(
            "estimate: process CPU time x {:.2} W/busy core + {:.2} W idle (hardware profile {})",
            self.params.busy_w_per_core, self.params.idle_w, self.params.profile
        )
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        let cpu_s = (self.cpu_clock)()? - self.start_cpu_s;
        let wall_s = (self.wall_clock)();
        let energy_j = EstimateSensor::energy_j(&self.params, wall_s - self.start_wall_s, cpu_s);
        let dt_s = wall_s - self.last_wall_s;
        let power_w = (dt_s > 0.0).then(|| (energy_j - self.last_energy_j) / dt_s);
        self.last_wall_s = wall_s;
        self.last_energy_j = energy_j;
        Ok(Reading {
            energy_j: Some(energy_j),
            power_w,
            instant_power_w: None,
            gpus: Vec::new(),
        })
    }
}

/// CPU seconds (user + system, all threads) this process has used, with nanosecond
/// resolution from `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`; `/proc/self/stat` (10 ms
/// ticks) where that fails.
pub fn process_cpu_s() -> Result<f64, MeterError> {
    if let Some(s) = clock_process_cpu_s() {
        return Ok(s);
    }
    let text = std::fs::read_to_string("/proc/self/stat").map_err(|e| MeterError::Unavailable {
        reader: "estimate",
        reason: format!("no process CPU clock: /proc/self/stat: {e}"),
    })?;
    proc_stat_cpu_s(&text).ok_or_else(|| MeterError::BadValue {
        path: "/proc/self/stat".into(),
        expected: "utime and stime in fields 14 and 15",
        found: text,
    })
}

#[cfg(target_os = "linux")]
fn clock_process_cpu_s() -> Option<f64> {
    use std::os::raw::{c_int, c_long};
    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }
    extern "C" {
        fn clock_gettime(clock_id: c_int, tp: *mut Timespec) -> c_int;
    }
    // <linux/time.h>
    const CLOCK_PROCESS_CPUTIME_ID: c_int = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes nothing else.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn clock_process_cpu_s() -> Option<f64> {
    None
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds (USER_HZ = 100 on Linux).
pub fn proc_stat_cpu_s(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params() -> EstimateParams {
        EstimateParams::cpu_generic_for_cores(2)
    }

    #[test]
    fn energy_follows_the_formula_from_the_clock_deltas() {
        // Scripted clocks: CPU and wall seconds at open and at each read.
        let mut cpu = [10.0, 10.5, 12.5].into_iter();
        let mut wall = [100.0, 101.0, 102.0].into_iter();
        let mut s = EstimateSensor::with_clocks(
            params(),
            Box::new(move || Ok(cpu.next().unwrap())),
            Box::new(move || wall.next().unwrap()),
        )
        .unwrap();
        let r1 = s.read().unwrap();
        // 1 s wall, 0.5 CPU s: 1.48 x 1 + 2.76 x 0.5
        assert!((r1.energy_j.unwrap() - (1.48 + 1.38)).abs() < 1e-12);
        assert!((r1.power_w.unwrap() - 2.86).abs() < 1e-12);
        let r2 = s.read().unwrap();
        // 2 s wall, 2.5 CPU s in all; the second second both cores were busy.
        assert!((r2.energy_j.unwrap() - (1.48 * 2.0 + 2.76 * 2.5)).abs() < 1e-12);
        assert!((r2.power_w.unwrap() - (1.48 + 2.76 * 2.0)).abs() < 1e-12);
        assert_eq!(
            s.scope(),
            "estimate: process CPU time x 2.76 W/busy core + 1.48 W idle (hardware profile cpu-generic)"
        );
    }

    /// This thread's time on a CPU, from the scheduler (ns); independent of the estimate's reader.
    fn thread_cpu_s() -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse::<f64>().unwrap() * 1e-9
    }

    #[test]
    fn a_busy_window_costs_at_least_its_idle_share_plus_the_cpu_time_it_burned() {
        // Other tests run in this process at the same time, so a window's CPU time is at least
        // this thread's, never exactly it: the checks are lower bounds that hold under load.
        let mut s = EstimateSensor::open(params()).unwrap();
        let (e0, t0) = (s.read().unwrap().energy_j.unwrap(), Instant::now());
        std::thread::sleep(Duration::from_millis(60));
        let (e1, t1) = (s.read().unwrap().energy_j.unwrap(), Instant::now());
        let cpu0 = thread_cpu_s();
        let mut x = 0u64;
        // Burn 60 ms of this thread's CPU time, however long a loaded machine takes to give it.
        while thread_cpu_s() - cpu0 < 0.06 && t1.elapsed() < Duration::from_secs(10) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let burned = thread_cpu_s() - cpu0;
        let (e2, t2) = (s.read().unwrap().energy_j.unwrap(), Instant::now());
        let (idle_j, busy_j) = (e1 - e0, e2 - e1);
        let idle_share = |from: Instant, to: Instant| 1.48 * (to - from).as_secs_f64();
        assert!(idle_j >= idle_share(t0, t1) * 0.99, "{idle_j}");
        assert!(burned >= 0.06, "the loop got {burned} s of CPU");
        let floor = idle_share(t1, t2) * 0.99 + 2.76 * burned * 0.99;
        assert!(busy_j >= floor, "busy {busy_j} J < {floor} J");
    }

    #[test]
    fn process_cpu_clock_agrees_with_proc_stat() {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return; // not Linux
        };
        let a = proc_stat_cpu_s(&stat).unwrap();
        let b = process_cpu_s().unwrap();
        // proc ticks are 10 ms and truncated; the clock is at least as large.
        assert!(b >= a - 0.011 && b - a < 0.5, "clock {b} s, /proc {a} s");
    }

    #[test]
    fn proc_stat_parser_handles_a_command_with_spaces_and_parens() {
        let line = "1234 (my (odd) prog) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100";
        assert_eq!(proc_stat_cpu_s(line), Some(3.0));
        assert_eq!(proc_stat_cpu_s("garbage"), None);
    }
}
