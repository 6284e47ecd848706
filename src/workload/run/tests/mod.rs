//! The run loop against fake workloads and fake sensors, on a fake clock.

mod fakes;

use super::idle::{idle_subwindows, MAX_IDLE_SUBWINDOWS};
use super::*;
use crate::clock::FakeClock;
use crate::meter::SAFE_UPDATES_PER_WINDOW;
use crate::runlog::read_run;
use crate::runlog::IdleRecord;
use crate::vocab::EnergySource;
use crate::vocab::Phase;
use crate::vocab::Role;
use fakes::*;
use std::collections::BTreeMap;

#[test]
fn short_steps_are_measured_in_blocks_whose_joules_follow_durations() {
    let period = Coarse::PERIOD;
    let plan = RunPlan {
        train_steps: 8,
        prefill_steps: 2,
        decode_steps: 2,
        update_period: Some(period),
        max_lengthen_s: 5.0,
        ..test_plan()
    };
    let (_scratch, dir) = crate::runlog::scratch_run_path("blocks");
    let clock = FakeClock::new();
    // Read 1: the meter's start; 2 and 3: the first window. Its end fails twice (3, 4).
    let meter = meter_on(&clock, Coarse::new(&clock, vec![3, 4]));
    let (a, b, _, run) = run_fakes(&plan, &clock, &meter, None, &dir);
    // Every step synchronised before its time was taken.
    assert_eq!((a.synced, b.synced), (a.steps, b.steps));
    let steps: Vec<&StepRecord> = run.steps().collect();
    // The first window's end could not be read: unmeasured, and the run went on.
    assert!(steps[0].energy.is_none() && steps[0].warmup);
    assert!(run.records.iter().any(|r| matches!(r,
        Record::Log { level, message, .. } if level == "warn" && message.contains("unmeasured"))));
    assert!(steps[1..].iter().all(|s| s.energy.is_some()));
    // Windows: one model each, consecutive steps, joules split by duration.
    let mut windows: BTreeMap<u64, Vec<&StepRecord>> = BTreeMap::new();
    for s in &steps[1..] {
        let w = s.energy.as_ref().unwrap().window.as_ref().unwrap();
        windows.entry(w.index).or_default().push(s);
    }
    let mut blocks = 0;
    for (index, ss) in &windows {
        let e0 = ss[0].energy.as_ref().unwrap();
        let w = e0.window.as_ref().unwrap();
        assert_eq!(w.steps as usize, ss.len(), "window {index}");
        assert!(ss.iter().all(|s| s.model == ss[0].model));
        let joules: f64 = ss.iter().map(|s| s.energy.as_ref().unwrap().joules).sum();
        let rate = joules / ss.iter().map(|s| s.seconds).sum::<f64>();
        for s in ss {
            let j = s.energy.as_ref().unwrap().joules;
            assert!(
                (j / s.seconds - rate).abs() <= 1e-9 * rate,
                "window {index}"
            );
        }
        if ss.iter().all(|s| !s.warmup) {
            // Measured windows span the safe 20 updates, so the counter's 0.5 J steps put
            // them within 5% of the 100 W it counts.
            blocks += 1;
            assert!(ss.len() > 1 && !w.too_short(), "window {index}: {w:?}");
            let watts = joules / w.seconds;
            assert!((watts - 100.0).abs() <= 5.0, "window {index}: {watts} W");
        } else {
            assert_eq!(ss.len(), 1, "warm-up steps keep their own windows");
        }
    }
    // Train, prefill and decode: one window per model each (min_windows 1), lengthened; both
    // models run the same steps in each pair of windows.
    assert_eq!(blocks, 6, "{:?}", windows.keys().collect::<Vec<_>>());
    let train_blocks = |role: Role| -> Vec<u64> {
        windows
            .values()
            .filter(|ss| ss[0].role == role && ss[0].phase == Phase::Train && !ss[0].warmup)
            .map(|ss| ss.len() as u64)
            .collect()
    };
    // A's window runs by the clock until it spans 1.25 x the safe 20 updates of 5 ms: 63
    // steps of 2 ms (0.126 s). B runs as many.
    assert_eq!(train_blocks(Role::Sparse), vec![63]);
    assert_eq!(train_blocks(Role::Sparse), train_blocks(Role::Dense));
    // Decode windows refill the cache inside themselves: prefills sharing a decode window.
    assert!(windows.values().any(|ss| {
        ss.iter().any(|s| s.phase == Phase::Decode) && ss.iter().any(|s| s.phase == Phase::Prefill)
    }));
    let summary = summarize(&run.records);
    for m in &summary.models {
        for p in &m.phases {
            assert_eq!((p.windows, p.short_windows), (p.windows.max(1), 0), "{p:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
#[test]
fn a_window_shorter_than_the_sensor_resolves_is_flagged_in_the_summary_and_the_report() {
    // B's steps turn 4x faster after its 10th (the machine got less busy): blocks sized from the
    // steps timed so far then give B's windows too few updates of the 5 ms counter. The run
    // cannot know that in advance; it must say so rather than pass the figure off as resolved.
    let plan = RunPlan {
        train_steps: 300,
        update_period: Some(Coarse::PERIOD),
        max_lengthen_s: 0.0,
        ..test_plan()
    };
    let (_scratch, dir) = crate::runlog::scratch_run_path("short");
    let clock = FakeClock::new();
    let meter = meter_on(&clock, Coarse::new(&clock, vec![]));
    let (a, mut b) = Fake::pair(&clock);
    b.fast_after = Some(10);
    let (_, _, summary, run) = run_pair(&plan, &clock, &meter, None, &dir, (a, b));
    let train = |role| summary.model(role).unwrap().phase(Phase::Train).unwrap();
    // A's windows run by the clock: all resolved. B's first ones, of as many faster steps, not.
    assert_eq!(train(Role::Sparse).short_windows, 0);
    let dense = train(Role::Dense);
    assert!(dense.short_windows > 0, "{dense:?}");
    assert!(dense.min_window_updates.unwrap() < SAFE_UPDATES_PER_WINDOW);
    // Each short window is marked as such in its steps' records.
    let short = run
        .steps()
        .filter(|s| s.model == "b" && !s.warmup)
        .filter_map(|s| s.energy.as_ref()?.window.clone())
        .filter(|w| w.too_short())
        .map(|w| w.index)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(short.len(), dense.short_windows);
    let report =
        crate::report::render(&crate::report::build(&run), crate::report::Format::Markdown);
    assert!(
        report.contains("energy unresolved: dense b train"),
        "{report}"
    );
}

#[test]
fn the_idle_baseline_is_measured_before_and_after_in_sub_windows_and_drift_is_reported() {
    let plan = RunPlan {
        train_steps: 4,
        idle_seconds: 0.6,
        ..test_plan()
    };
    let (_scratch, dir) = crate::runlog::scratch_run_path("idle");
    let clock = FakeClock::new();
    // Power ramps up with time: 10 W + 40 W/s x t.
    let ramp = Continuous::new(&clock, EnergySource::Rapl, |t| 10.0 * t + 20.0 * t * t);
    let meter = meter_on(&clock, ramp);
    let (_, _, summary, run) = run_fakes(&plan, &clock, &meter, None, &dir);
    let idles: Vec<&IdleRecord> = run
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Idle(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(idles.len(), 2);
    assert_eq!(
        (idles[0].when, idles[1].when),
        (IdleWhen::Before, IdleWhen::After)
    );
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
    for i in &idles {
        // 0.6 s in sub-windows of 0.2 s. On the ramp a sub-window [t, t + 0.2] averages
        // 10 + 40 (t + 0.1) W: each reads 8 W more than the one before.
        assert_eq!(i.window_power_w.len(), 3, "{i:?}");
        assert!(close(i.seconds, 0.6), "{i:?}");
        assert!(
            i.window_power_w.windows(2).all(|w| close(w[1] - w[0], 8.0)),
            "{i:?}"
        );
        assert!(close(i.power_w * i.seconds, i.joules));
    }
    // The window before starts the run: 14, 22 and 30 W, 22 W on average.
    assert!(close(idles[0].window_power_w[0], 14.0), "{:?}", idles[0]);
    assert!(close(idles[0].power_w, 22.0), "{}", idles[0].power_w);
    let base = summary.idle.as_ref().unwrap();
    let drift = idles[1].power_w - idles[0].power_w;
    assert!(drift > 5.0 && (base.drift_w.unwrap() - drift).abs() < 0.05 * drift);
    assert!(run.records.iter().any(|r| matches!(r,
        Record::Log { level, message, .. } if level == "warn" && message.contains("drifted"))));
    // The after window follows every step.
    let last_step = run.steps().map(|s| s.t_s).fold(0.0, f64::max);
    let after_at = run
        .records
        .iter()
        .position(|r| matches!(r, Record::Idle(i) if i.when == IdleWhen::After))
        .unwrap();
    assert!(run.records[..after_at]
        .iter()
        .filter_map(Record::t_s)
        .any(|t| t >= last_step));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idle_sub_windows_are_as_long_as_the_sensor_resolves() {
    let coarse = UpdatePeriod {
        period_s: 0.1,
        energy_j: 25.0,
        updates: 5,
    };
    assert_eq!(idle_subwindows(2.0, None), 10);
    assert_eq!(idle_subwindows(0.5, None), 2);
    assert_eq!(idle_subwindows(0.1, None), 1);
    // 20 updates of 100 ms: one 2-second window, two of a 4-second idle.
    assert_eq!(idle_subwindows(2.0, Some(&coarse)), 1);
    assert_eq!(idle_subwindows(4.0, Some(&coarse)), 2);
    assert_eq!(idle_subwindows(100.0, None), MAX_IDLE_SUBWINDOWS);
}
#[test]
fn a_host_meter_beside_the_main_one_is_recorded_as_its_own_component() {
    let plan = RunPlan {
        train_steps: 6,
        prefill_steps: 2,
        ..test_plan()
    };
    let (_scratch, dir) = crate::runlog::scratch_run_path("host");
    let clock = FakeClock::new();
    let steady = |watts: f64, source| Continuous::new(&clock, source, move |t| watts * t);
    let meter = meter_on(&clock, steady(250.0, EnergySource::Nvml));
    let host = meter_on(&clock, steady(30.0, EnergySource::Rapl));
    let (_, _, summary, run) = run_fakes(&plan, &clock, &meter, Some(&host), &dir);
    for s in run.steps() {
        let e = s.energy.as_ref().unwrap();
        let h = e.host.as_ref().unwrap();
        assert_eq!(
            (e.source, h.source),
            (EnergySource::Nvml, EnergySource::Rapl)
        );
        // Each meter's own power, split by duration; the host's is not in `joules`.
        let (main_w, host_w) = (e.joules / s.seconds, h.joules / s.seconds);
        assert!((main_w - 250.0).abs() < 1e-9, "{main_w} W");
        assert!((host_w - 30.0).abs() < 1e-9, "{host_w} W");
    }
    for m in &summary.models {
        for p in &m.phases {
            // Over the same windows and tokens, host over main J/token is 30 W over 250 W.
            let main = p.joules_per_token.as_ref().unwrap().total.mean;
            let r = p.host_joules_per_token.unwrap().mean / main;
            assert!((r - 0.12).abs() < 1e-9, "{r}");
            assert_eq!(p.host_source, Some(EnergySource::Rapl));
        }
    }
    let report =
        crate::report::render(&crate::report::build(&run), crate::report::Format::Markdown);
    assert!(report.contains("Host CPU beside the GPU"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_stop_rule_ends_training_at_the_first_eval_where_both_models_reached_the_loss() {
    // Fake validation: 5 / (1 + steps so far), for both; <= 1.0 from 4 steps on.
    let plan = RunPlan {
        train_steps: 40,
        eval_every: 2,
        max_lengthen_s: 0.0,
        until_loss: Some(1.0),
        ..test_plan()
    };
    let (_scratch, dir) = crate::runlog::scratch_run_path("until");
    let clock = FakeClock::new();
    let meter = meter_on(&clock, Coarse::new(&clock, vec![]));
    let (_, _, summary, run) = run_fakes(&plan, &clock, &meter, None, &dir);
    for m in ["a", "b"] {
        let trained = run
            .steps()
            .filter(|s| s.model == m && s.phase == Phase::Train)
            .count();
        // Evals at 0, 2 and 4 steps: 5/3 > 1, then 5/5 = 1 <= 1.
        assert_eq!(trained, 4, "{m}");
    }
    assert!(run.records.iter().any(|r| matches!(r,
        Record::Log { message, .. } if message.contains("stop rule: both models reached"))));
    let t = summary.to_target.unwrap();
    assert_eq!(
        (t.target_loss, t.target_from.as_str()),
        (1.0, crate::runlog::TARGET_UNTIL)
    );
    assert!(t.models.iter().all(|m| m.reached && m.joules.is_some()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The records file on a disk with `room` bytes left: the part of a write that fits is written,
/// then every write fails with ENOSPC, as a full file system answers.
struct FullDisk {
    file: std::fs::File,
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = buf.len().min(self.room);
        self.file.write_all(&buf[..n])?;
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl crate::runlog::RecordSink for FullDisk {
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[test]
fn a_full_disk_fails_the_run_with_the_file_named_and_keeps_the_records_already_written() {
    use crate::runlog::{RECORDS_FILE, SUMMARY_FILE};
    let (_scratch, dir) = crate::runlog::scratch_run_path("full-disk");
    drop(RunWriter::create(&dir, &crate::runlog::test_header()).unwrap());
    let path = dir.join(RECORDS_FILE);
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let room = 4000;
    let mut writer = RunWriter::with_sink(&dir, Box::new(FullDisk { file, room }));
    let plan = RunPlan {
        train_steps: 100_000,
        ..test_plan()
    };
    let clock = FakeClock::new();
    let meter = meter_on(
        &clock,
        Continuous::new(&clock, EnergySource::Nvml, |t| 100.0 * t),
    );
    let (_, _, result) = execute_pair(
        &plan,
        &clock,
        (&meter, None),
        &mut writer,
        Fake::pair(&clock),
    );
    let err = result.unwrap_err();
    drop(writer);
    // A clear error: the file, and the system's reason.
    let message = format!("{err:#}");
    assert!(
        message.contains(&path.display().to_string()) && message.contains("No space left"),
        "{message}"
    );
    // The records up to the full disk are intact: every whole line reads back, at most the
    // last one is cut, and nothing pretends the run ended.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), room as u64);
    let run = read_run(&dir).unwrap();
    let whole_lines = std::fs::read_to_string(&path)
        .unwrap()
        .matches('\n')
        .count();
    assert_eq!(run.records.len(), whole_lines);
    assert!(
        run.records.len() > 3 && run.unreadable_lines <= 1,
        "{run:?}"
    );
    assert!(run.steps().count() >= 2 && !run.complete());
    assert!(!dir.join(SUMMARY_FILE).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
