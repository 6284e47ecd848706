//! The peak FLOP/s a run measures its utilisation against: measured on this machine (a matmul
//! probe, now or from the per-machine cache) or, failing that, a hardware profile's figure. Stored
//! in the run header (`machine.peak`) so a summary can be rebuilt from the folder alone.
//!
//! Utilisation is achieved FLOP/s over that peak and is never above 1: where a run achieves more
//! than the peak (a VM whose speed swings, a profile that undersells the machine), the highest
//! achieved rate becomes the peak and `peak_from` says `achieved`.

use serde::{Deserialize, Serialize};

use super::summary::RunSummary;

/// `peak_from` when a run's own achieved rate replaced the peak.
pub const FROM_ACHIEVED: &str = "achieved";
/// `from` of a peak measured at the run's start.
pub const FROM_PROBE: &str = "probe";
/// `from` of a peak read from the per-machine cache.
pub const FROM_CACHE: &str = "cache";

/// One matmul probe: the best rate of several timed square products after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakMeasurement {
    /// 2 n^3 / best_s.
    pub peak_flops_per_s: f64,
    /// "f32" or "bf16".
    pub dtype: String,
    /// "cpu" or "cuda:N <name>".
    pub device: String,
    /// The product is (n x n) x (n x n).
    pub n: usize,
    pub warmup: usize,
    /// Timed repetitions.
    pub repetitions: usize,
    pub best_s: f64,
    pub median_s: f64,
    /// Threads of candle's CPU matmul when it was measured (on a GPU, recorded all the same).
    pub threads: usize,
    /// Seconds since the Unix epoch when it was measured.
    pub measured_unix_s: f64,
    /// The memory bandwidth measured beside it (a STREAM-style triad on all threads; CPU only,
    /// bytes/s); absent on a GPU and in older measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes_per_s: Option<f64>,
}

/// The peak a run used, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPeak {
    pub flops_per_s: f64,
    /// "f32" or "bf16" (the precision the model computes in).
    pub dtype: String,
    /// "probe", "cache", or a hardware profile's name.
    pub from: String,
    /// The probe behind it (absent for a profile's figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<PeakMeasurement>,
}

/// `summary.json`'s `peak`: the peak the summary's `utilization` figures divide by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryPeak {
    pub flops_per_s: f64,
    pub dtype: String,
    /// "probe", "cache", a profile's name, or "achieved".
    pub from: String,
    /// When the run's achieved rate replaced it: the peak it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ReplacedPeak>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedPeak {
    pub flops_per_s: f64,
    pub from: String,
}

impl SummaryPeak {
    /// One sentence for reports and the dashboard.
    pub fn describe(&self) -> String {
        let g = |x: f64| format!("{:.1} GFLOP/s", x / 1e9);
        match &self.replaced {
            Some(r) => format!(
                "peak {} {} = this run's highest achieved rate, above the {} peak of {} it replaced",
                g(self.flops_per_s),
                self.dtype,
                r.from,
                g(r.flops_per_s)
            ),
            None => format!(
                "peak {} {} from {}",
                g(self.flops_per_s),
                self.dtype,
                self.from
            ),
        }
    }
}

/// The peak a set of phases is measured against: `peak`, or the highest achieved rate where that
/// is higher (with `from` = "achieved" and the replaced figure kept).
pub fn effective_peak(peak: &RunPeak, achieved: impl IntoIterator<Item = f64>) -> SummaryPeak {
    let best = achieved
        .into_iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    if best > peak.flops_per_s {
        SummaryPeak {
            flops_per_s: best,
            dtype: peak.dtype.clone(),
            from: FROM_ACHIEVED.into(),
            replaced: Some(ReplacedPeak {
                flops_per_s: peak.flops_per_s,
                from: peak.from.clone(),
            }),
        }
    } else {
        SummaryPeak {
            flops_per_s: peak.flops_per_s,
            dtype: peak.dtype.clone(),
            from: peak.from.clone(),
            replaced: None,
        }
    }
}

impl RunSummary {
    /// Fill `peak` and each phase's `utilization` and `peak_from` from the run's peak.
    pub fn apply_peak(&mut self, peak: &RunPeak) {
        let achieved = self
            .models
            .iter()
            .flat_map(|m| m.phases.iter().map(|p| p.flops_per_s));
        let used = effective_peak(peak, achieved);
        for m in &mut self.models {
            for p in &mut m.phases {
                if p.flops_per_s > 0.0 && used.flops_per_s > 0.0 {
                    p.utilization = Some((p.flops_per_s / used.flops_per_s).min(1.0));
                    p.peak_from = Some(used.from.clone());
                }
            }
        }
        self.peak = Some(used);
    }

    /// This summary with [`RunSummary::apply_peak`] applied when a peak is known.
    pub fn with_peak(mut self, peak: Option<&RunPeak>) -> RunSummary {
        if let Some(p) = peak {
            self.apply_peak(p);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{summarize, test_step, Record, StepRecord};
    use crate::vocab::{Phase, Role};

    fn step(role: Role, phase: Phase, seconds: f64, flops: f64) -> Record {
        Record::Step(StepRecord {
            seconds,
            flops,
            ..test_step(role, phase)
        })
    }

    fn peak(flops_per_s: f64) -> RunPeak {
        RunPeak {
            flops_per_s,
            dtype: "f32".into(),
            from: FROM_PROBE.into(),
            measurement: None,
        }
    }

    #[test]
    fn utilisation_divides_by_the_probed_peak_when_nothing_exceeds_it() {
        // 30 and 10 GFLOP/s against a 100 GFLOP/s probe.
        let recs = vec![
            step(Role::Sparse, Phase::Train, 1.0, 30e9),
            step(Role::Dense, Phase::Decode, 2.0, 20e9),
        ];
        let s = summarize(&recs).with_peak(Some(&peak(100e9)));
        let sp = s.model(Role::Sparse).unwrap().phase(Phase::Train).unwrap();
        let de = s.model(Role::Dense).unwrap().phase(Phase::Decode).unwrap();
        assert!((sp.utilization.unwrap() - 0.3).abs() < 1e-12);
        assert!((de.utilization.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(sp.peak_from.as_deref(), Some("probe"));
        let p = s.peak.unwrap();
        assert_eq!((p.flops_per_s, p.from.as_str()), (100e9, "probe"));
        assert!(p.replaced.is_none());
    }

    #[test]
    fn an_achieved_rate_above_the_peak_becomes_the_peak() {
        // 300 GFLOP/s achieved against a 140 GFLOP/s profile: the peak is 300, the other phase is
        // 75 / 300 = 0.25 of it.
        let recs = vec![
            step(Role::Sparse, Phase::Train, 1.0, 300e9),
            step(Role::Dense, Phase::Train, 2.0, 150e9),
        ];
        let mut profile = peak(140e9);
        profile.from = "cpu-generic".into();
        let s = summarize(&recs).with_peak(Some(&profile));
        let sp = s.model(Role::Sparse).unwrap().phase(Phase::Train).unwrap();
        let de = s.model(Role::Dense).unwrap().phase(Phase::Train).unwrap();
        assert_eq!(sp.utilization, Some(1.0));
        assert!((de.utilization.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(de.peak_from.as_deref(), Some("achieved"));
        let p = s.peak.as_ref().unwrap();
        assert_eq!(p.flops_per_s, 300e9);
        assert_eq!(
            p.replaced,
            Some(ReplacedPeak {
                flops_per_s: 140e9,
                from: "cpu-generic".into()
            })
        );
        assert!(p.describe().contains("achieved") && p.describe().contains("cpu-generic"));
    }

    #[test]
    fn a_summary_without_a_peak_has_no_utilisation_and_serialises_without_it() {
        let s = summarize(&[step(Role::Sparse, Phase::Train, 1.0, 1e9)]);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("peak").is_none());
        assert!(v["models"][0]["phases"][0].get("utilization").is_none());
    }
}
