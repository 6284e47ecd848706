//! What machine a run ran on, read from the OS, and the run's identifier.

use std::time::{SystemTime, UNIX_EPOCH};

use super::MachineInfo;

fn first_line(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .filter(|s| !s.is_empty())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    let kernel = first_line("/proc/sys/kernel/osrelease");
    match (pretty, kernel) {
        (Some(p), Some(k)) => format!("{p}, Linux {k}"),
        (Some(p), None) => p,
        (None, Some(k)) => format!("Linux {k}"),
        (None, None) => std::env::consts::OS.to_string(),
    }
}

/// The machine this process runs on; `device` is what the model runs on ("cpu", "cuda:0").
pub fn detect_machine(device: &str, hardware_profile: Option<String>) -> MachineInfo {
    MachineInfo {
        hostname: first_line("/etc/hostname")
            .or_else(|| first_line("/proc/sys/kernel/hostname"))
            .unwrap_or_else(|| "unknown".into()),
        cpu_model: cpu_model(),
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: os_name(),
        device: device.to_string(),
        hardware_profile,
        peak: None,
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A sortable run identifier from a Unix time: `YYYYMMDD-HHMMSS` (UTC).
pub fn run_id(unix_s: f64) -> String {
    let secs = unix_s.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A run identifier unique under concurrency: [`run_id`]'s UTC second, its milliseconds, and a
/// short suffix from this process's id and a per-process counter, hashed with a random key
/// (`20261204-171530.123-3f9a`). Two runs started in the same millisecond, in two processes or
/// one, get different ids; the run folder is also created with `create_dir`, so a collision
/// would be refused rather than shared.
pub fn unique_run_id(unix_s: f64) -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = ((unix_s.max(0.0).fract()) * 1000.0).floor() as u32 % 1000;
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // Random per process, offset by a counter: ids of one process never collide (up to 65,536
    // in one millisecond), those of two processes rarely, and then `create_dir` refuses.
    let base = *BASE.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), unix_s.to_bits()))
    });
    let h = base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{}.{ms:03}-{:04x}", run_id(unix_s), h & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_calendar_times() {
        assert_eq!(run_id(0.0), "19700101-000000");
        // 2026-11-29 02:15:30 UTC = 1_795_918_530 s (date -d @1795918530 -u).
        assert_eq!(run_id(1_795_918_530.0), "20261129-021530");
        assert_eq!(run_id(951_782_400.0), "20000229-000000"); // a leap day
    }

    #[test]
    fn unique_run_ids_keep_the_second_and_differ_within_one_millisecond() {
        let t = 1_795_918_530.25;
        let ids: std::collections::BTreeSet<String> = (0..200).map(|_| unique_run_id(t)).collect();
        assert_eq!(ids.len(), 200);
        assert!(
            ids.iter().all(|id| id.starts_with("20261129-021530.250-")),
            "{ids:?}"
        );
    }

    #[test]
    fn this_machine_is_described() {
        let m = detect_machine("cpu", None);
        assert!(m.logical_cpus >= 1 && !m.cpu_model.is_empty() && !m.os.is_empty());
    }
}
