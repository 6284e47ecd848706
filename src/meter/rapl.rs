//! RAPL through Linux powercap: the package and DRAM domains of every socket.
//!
//! Layout (`/sys/class/powercap`, or `$SPARSEWATT_POWERCAP_ROOT`): a top-level zone
//! `intel-rapl:N` per socket (`name` = `package-N`; AMD CPUs appear under the same name from
//! Linux 5.8, without DRAM), with subzones `intel-rapl:N:M` inside it (`core`, `uncore`, `dram`).
//! Core and uncore are contained in the package and never added; DRAM is outside it and is.
//! A `psys` top-level zone (platform, contains the packages) and the `intel-rapl-mmio` copies of
//! the package counter are skipped for the same reason.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::sensor::{Reading, Sensor};
use super::MeterError;
use crate::clock::Clock;
use crate::vocab::EnergySource;

pub const POWERCAP_ROOT_ENV: &str = "SPARSEWATT_POWERCAP_ROOT";
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

/// One counter: a package or a DRAM domain.
#[derive(Debug)]
struct Domain {
    energy_path: PathBuf,
    /// The counter counts from 0 up to this value and then starts again from 0.
    max_range_uj: u64,
    last_raw_uj: u64,
    total_uj: u128,
}

impl Domain {
    fn open(dir: &Path) -> Result<Domain, MeterError> {
        let energy_path = dir.join("energy_uj");
        let max_range_uj = read_u64(&dir.join("max_energy_range_uj"))?;
        let last_raw_uj = read_u64(&energy_path)?;
        Ok(Domain {
            energy_path,
            max_range_uj,
            last_raw_uj,
            total_uj: 0,
        })
    }

    fn advance(&mut self) -> Result<(), MeterError> {
        let raw = read_u64(&self.energy_path)?;
        self.total_uj += wrapped_delta_uj(self.last_raw_uj, raw, self.max_range_uj) as u128;
        self.last_raw_uj = raw;
        Ok(())
    }
}

/// Energy between two raw readings of a counter that wraps at `max_range_uj`. Assumes at most
/// one wrap between readings (the meter reads every 0.1 s; a package wraps after minutes).
pub fn wrapped_delta_uj(last_raw_uj: u64, raw_uj: u64, max_range_uj: u64) -> u64 {
    if raw_uj >= last_raw_uj {
        raw_uj - last_raw_uj
    } else {
        max_range_uj.saturating_sub(last_raw_uj) + raw_uj
    }
}

/// RAPL package (+ DRAM) energy of all sockets, summed.
#[derive(Debug)]
pub struct RaplSensor {
    domains: Vec<Domain>,
    sockets: usize,
    has_dram: bool,
    /// The clock of `power_w`'s time between reads.
    clock: Arc<dyn Clock>,
    last_read: Instant,
    last_total_uj: u128,
}

impl RaplSensor {
    /// Opens the powercap tree at `$SPARSEWATT_POWERCAP_ROOT`, else `/sys/class/powercap`.
    pub fn open_default() -> Result<RaplSensor, MeterError> {
        let root = std::env::var_os(POWERCAP_ROOT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POWERCAP_ROOT));
        RaplSensor::open(&root)
    }

    /// Opens the powercap tree at `root`, reading every counter once (so a permission error
    /// shows here, not at the first window).
    pub fn open(root: &Path) -> Result<RaplSensor, MeterError> {
        let entries = std::fs::read_dir(root).map_err(|e| unavailable(root, &e))?;
        let mut packages: Vec<(u32, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(index) = file_name.to_str().and_then(top_level_index) else {
                continue;
            };
            let dir = entry.path();
            if read_name(&dir)?.starts_with("package") {
                packages.push((index, dir));
            }
        }
        if packages.is_empty() {
            return Err(MeterError::Unavailable {
                reader: "rapl",
                reason: format!("no intel-rapl package domain under {}", root.display()),
            });
        }
        packages.sort();

        let mut domains = Vec::new();
        let mut has_dram = false;
        for (index, dir) in &packages {
            domains.push(Domain::open(dir)?);
            for sub in dram_subdomains(dir, *index)? {
                domains.push(Domain::open(&sub)?);
                has_dram = true;
            }
        }
        Ok(RaplSensor {
            domains,
            sockets: packages.len(),
            has_dram,
            clock: crate::clock::system(),
            last_read: Instant::now(),
            last_total_uj: 0,
        })
    }

    /// The sensor with its power timed on `clock` (from now on that clock's).
    pub fn on_clock(mut self, clock: Arc<dyn Clock>) -> RaplSensor {
        self.last_read = clock.now();
        self.clock = clock;
        self
    }

    fn total_uj(&self) -> u128 {
        self.domains.iter().map(|d| d.total_uj).sum()
    }
}

impl Sensor for RaplSensor {
    fn source(&self) -> EnergySource {
        EnergySource::Rapl
    }

    fn scope(&self) -> String {
        let what = if self.has_dram {
            "cpu package+dram"
        } else {
            "cpu package"
        };
        let s = if self.sockets == 1 { "" } else { "s" };
        format!("{what}, {} socket{s} (rapl)", self.sockets)
    }

    fn read(&mut self) -> Result<Reading, MeterError> {
        for d in &mut self.domains {
            d.advance()?;
        }
        let now = self.clock.now();
        let total_uj = self.total_uj();
        let dt_s = now.duration_since(self.last_read).as_secs_f64();
        let power_w = (dt_s > 0.0).then(|| (total_uj - self.last_total_uj) as f64 / 1e6 / dt_s);
        self.last_read = now;
        self.last_total_uj = total_uj;
        Ok(Reading {
            energy_j: Some(total_uj as f64 / 1e6),
            power_w,
            instant_power_w: None,
            gpus: Vec::new(),
        })
    }
}

/// `N` for a top-level zone named `intel-rapl:N` (not `intel-rapl:N:M`, not `intel-rapl-mmio:N`).
fn top_level_index(name: &str) -> Option<u32> {
    name.strip_prefix("intel-rapl:")?.parse().ok()
}

/// The `intel-rapl:N:M` subzones of a package whose `name` is `dram`.
fn dram_subdomains(package: &Path, index: u32) -> Result<Vec<PathBuf>, MeterError> {
    let prefix = format!("intel-rapl:{index}:");
    let entries = std::fs::read_dir(package).map_err(|e| unavailable(package, &e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_sub = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|m| m.parse::<u32>().is_ok());
        if is_sub && read_name(&entry.path())? == "dram" {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn read_name(dir: &Path) -> Result<String, MeterError> {
    let path = dir.join("name");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| unavailable(&path, &e))
}

fn read_u64(path: &Path) -> Result<u64, MeterError> {
    let text = std::fs::read_to_string(path).map_err(|e| unavailable(path, &e))?;
    text.trim().parse().map_err(|_| MeterError::BadValue {
        path: path.to_path_buf(),
        expected: "a non-negative integer (microjoules)",
        found: text.trim().to_string(),
    })
}

/// The plain reason a powercap file cannot be used.
fn unavailable(path: &Path, e: &std::io::Error) -> MeterError {
    let reason = match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "{}: permission denied (energy_uj is readable by root only since 2020, CVE-2020-8694)",
            path.display()
        ),
        ErrorKind::NotFound => format!("{} not found (no powercap RAPL here)", path.display()),
        _ => format!("{}: {e}", path.display()),
    };
    MeterError::Unavailable {
        reader: "rapl",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake powercap tree in a fresh temp dir.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "sparsewatt-rapl-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn zone(&self, rel: &str, name: &str, energy_uj: u64, max_uj: u64) {
            let d = self.0.join(rel);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
            fs::write(d.join("max_energy_range_uj"), format!("{max_uj}\n")).unwrap();
            self.set(rel, energy_uj);
        }

        fn set(&self, rel: &str, energy_uj: u64) {
            fs::write(self.0.join(rel).join("energy_uj"), format!("{energy_uj}\n")).unwrap();
        }

        /// Two sockets, each with core, uncore and dram subzones; a psys zone and an mmio
        /// copy of package 0 that must be ignored.
        fn two_sockets(tag: &str) -> Tree {
            let t = Tree::new(tag);
            const MAX: u64 = 262_143_328_850;
            for n in 0..2 {
                t.zone(
                    &format!("intel-rapl:{n}"),
                    &format!("package-{n}"),
                    1_000_000,
                    MAX,
                );
                let p = format!("intel-rapl:{n}/intel-rapl:{n}");
                t.zone(&format!("{p}:0"), "core", 500_000, MAX);
                t.zone(&format!("{p}:1"), "uncore", 100_000, MAX);
                t.zone(&format!("{p}:2"), "dram", 2_000_000, 65_532_610_987);
            }
            t.zone("intel-rapl:2", "psys", 9_000_000, MAX);
            t.zone("intel-rapl-mmio:0", "package-0", 1_000_000, MAX);
            // sysfs also lists every subzone at the root (as a link); not a package.
            t.zone("intel-rapl:0:2", "dram", 2_000_000, MAX);
            t
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sums_package_and_dram_of_every_socket_and_ignores_nested_and_platform_domains() {
        let t = Tree::two_sockets("sum");
        let clock = crate::clock::FakeClock::new();
        let mut s = RaplSensor::open(&t.0).unwrap().on_clock(clock.clone());
        assert_eq!(s.scope(), "cpu package+dram, 2 sockets (rapl)");
        // Package 0 +3 J, package 1 +5 J, dram 0 +0.25 J, dram 1 +0.75 J; core, uncore, psys
        // and mmio also move and must not count.
        t.set("intel-rapl:0", 4_000_000);
        t.set("intel-rapl:1", 6_000_000);
        t.set("intel-rapl:0/intel-rapl:0:2", 2_250_000);
        t.set("intel-rapl:1/intel-rapl:1:2", 2_750_000);
        t.set("intel-rapl:0/intel-rapl:0:0", 99_000_000);
        t.set("intel-rapl:1/intel-rapl:1:1", 99_000_000);
        t.set("intel-rapl:2", 99_000_000);
        t.set("intel-rapl-mmio:0", 99_000_000);
        t.set("intel-rapl:0:2", 99_000_000);
        clock.advance(std::time::Duration::from_millis(500));
        let r = s.read().unwrap();
        assert!((r.energy_j.unwrap() - 9.0).abs() < 1e-9, "{r:?}");
        // Power: the energy since the last read (here the open) over the time since it.
        assert!((r.power_w.unwrap() - 18.0).abs() < 1e-9, "{r:?}");
        t.set("intel-rapl:0", 5_000_000);
        clock.advance(std::time::Duration::from_millis(250));
        assert!((s.read().unwrap().power_w.unwrap() - 4.0).abs() < 1e-9);
        // No time between two reads: no power, rather than a division by zero.
        assert_eq!(s.read().unwrap().power_w, None);
        assert_eq!(r.instant_power_w, None);
    }

    #[test]
    fn a_counter_that_wraps_between_reads_gives_the_energy_across_the_wrap() {
        let t = Tree::new("wrap");
        t.zone("intel-rapl:0", "package-0", 999_000_000, 1_000_000_000);
        let mut s = RaplSensor::open(&t.0).unwrap();
        assert_eq!(s.scope(), "cpu package, 1 socket (rapl)");
        t.set("intel-rapl:0", 2_000_000); // 1 J to the top, then 2 J past zero
        assert!((s.read().unwrap().energy_j.unwrap() - 3.0).abs() < 1e-9);
        t.set("intel-rapl:0", 7_000_000);
        assert!((s.read().unwrap().energy_j.unwrap() - 8.0).abs() < 1e-9);
    }

    #[test]
    fn wrapped_delta_matches_hand_computation() {
        assert_eq!(wrapped_delta_uj(10, 25, 100), 15);
        assert_eq!(wrapped_delta_uj(90, 5, 100), 15);
        assert_eq!(wrapped_delta_uj(7, 7, 100), 0);
    }

    #[test]
    fn a_missing_root_says_so() {
        let err = RaplSensor::open(Path::new("/nonexistent/powercap")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("rapl: /nonexistent/powercap not found"),
            "{msg}"
        );
        assert!(matches!(err, MeterError::Unavailable { .. }));
    }

    #[test]
    fn a_tree_without_packages_says_so() {
        let t = Tree::new("empty");
        t.zone("intel-rapl:0", "psys", 1, 100);
        let msg = RaplSensor::open(&t.0).unwrap_err().to_string();
        assert!(msg.contains("no intel-rapl package domain"), "{msg}");
    }

    #[test]
    fn garbage_in_a_counter_names_the_file() {
        let t = Tree::new("garbage");
        t.zone("intel-rapl:0", "package-0", 1, 100);
        fs::write(t.0.join("intel-rapl:0/energy_uj"), "lots\n").unwrap();
        let msg = RaplSensor::open(&t.0).unwrap_err().to_string();
        assert!(
            msg.contains("intel-rapl:0/energy_uj") && msg.contains("\"lots\""),
            "{msg}"
        );
    }

    #[test]
    fn a_permission_error_is_reported_plainly() {
        let e = std::io::Error::from(ErrorKind::PermissionDenied);
        let msg =
            unavailable(Path::new("/sys/class/powercap/intel-rapl:0/energy_uj"), &e).to_string();
        assert_eq!(
            msg,
            "rapl: /sys/class/powercap/intel-rapl:0/energy_uj: permission denied \
             (energy_uj is readable by root only since 2020, CVE-2020-8694)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_energy_file_is_a_permission_error() {
        use std::os::unix::fs::PermissionsExt;
        let t = Tree::new("perm");
        t.zone("intel-rapl:0", "package-0", 1, 100);
        let f = t.0.join("intel-rapl:0/energy_uj");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::read(&f).is_ok() {
            eprintln!("running as root: chmod 000 does not stop reads, check skipped");
            return;
        }
        let msg = RaplSensor::open(&t.0).unwrap_err().to_string();
        assert!(msg.contains("energy_uj: permission denied"), "{msg}");
    }
}
