//! The idle baseline: power with nothing running, measured before the workload and again after
//! it, with its spread and the drift between the two.
//!
//! Each idle window is read in equal sub-windows; the baseline is the mean over all of them, before
//! and after pooled, with a Student-t interval. Drift (a machine that warms up, a neighbour that
//! starts) widens that interval by itself, and is reported as after minus before.

use serde::{Deserialize, Serialize};

use super::record::{IdleRecord, IdleWhen};
use crate::stats::{estimate, Estimate};

/// Above this share of the earlier baseline, a drift between before and after is worth a warning.
pub const DRIFT_WARN_FRACTION: f64 = 0.10;

/// The baseline a summary subtracts, and how steady it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleBaseline {
    /// Power over the sub-windows before the workload, W.
    pub before_w: Estimate,
    /// Power over the sub-windows after it, W; absent when the run stopped before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_w: Option<Estimate>,
    /// The baseline: every sub-window, before and after pooled, W.
    pub power_w: Estimate,
    /// After minus before, W, and that over before (absent without the window after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_fraction: Option<f64>,
}

/// The sub-window powers of a record; an older record without them counts as one window.
fn powers(r: &IdleRecord) -> Vec<f64> {
    if r.window_power_w.is_empty() {
        vec![r.power_w]
    } else {
        r.window_power_w.clone()
    }
}

impl IdleBaseline {
    /// The baseline of a run's idle records (the first before and the last after the workload);
    /// `None` without a window before.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a IdleRecord>) -> Option<Self> {
        let (mut before, mut after) = (None, None);
        for r in records {
            match r.when {
                IdleWhen::Before => before = before.or(Some(r)),
                IdleWhen::After => after = Some(r),
            }
        }
        let before = before?;
        let b = powers(before);
        let a = after.map(powers);
        let pooled: Vec<f64> = b.iter().chain(a.iter().flatten()).copied().collect();
        let before_w = estimate(&b)?;
        let after_w = a.as_deref().and_then(estimate);
        let drift_w = after_w.map(|a| a.mean - before_w.mean);
        Some(IdleBaseline {
            before_w,
            after_w,
            power_w: estimate(&pooled)?,
            drift_w,
            drift_fraction: drift_w
                .filter(|_| before_w.mean > 0.0)
                .map(|d| d / before_w.mean),
        })
    }

    /// True when the baseline moved by more than [`DRIFT_WARN_FRACTION`] of itself.
    pub fn drifted(&self) -> bool {
        self.drift_fraction
            .is_some_and(|f| f.abs() > DRIFT_WARN_FRACTION)
    }
}

/// `e` (idle-subtracted J/token over windows) with the baseline's uncertainty added: the two
/// half-widths in quadrature (independent errors), the baseline's scaled by the phase's seconds
/// per token. An `e` without an interval (one window) gets the baseline's alone.
pub fn with_baseline_spread(e: Estimate, baseline: &Estimate, seconds_per_token: f64) -> Estimate {
    let Some(hp) = baseline.half_width() else {
        return e;
    };
    let hb = hp * seconds_per_token;
    let h = e.half_width().unwrap_or(0.0).hypot(hb);
    Estimate {
        ci95: Some([e.mean - h, e.mean + h]),
        ..e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::EnergySource;

    fn idle(when: IdleWhen, w: &[f64]) -> IdleRecord {
        let power_w = w.iter().sum::<f64>() / w.len() as f64;
        IdleRecord {
            when,
            seconds: 2.0,
            joules: power_w * 2.0,
            power_w,
            window_power_w: w.to_vec(),
            source: EnergySource::Rapl,
            scope: "test".into(),
        }
    }

    #[test]
    fn before_and_after_pool_into_the_baseline_and_their_difference_is_the_drift() {
        let b = idle(IdleWhen::Before, &[10.0, 11.0, 9.0, 10.0]);
        let a = idle(IdleWhen::After, &[12.0, 13.0, 11.0, 12.0]);
        let base = IdleBaseline::from_records([&b, &a]).unwrap();
        assert_eq!(base.before_w.mean, 10.0);
        assert_eq!(base.after_w.unwrap().mean, 12.0);
        assert_eq!(base.power_w.n, 8);
        assert!((base.power_w.mean - 11.0).abs() < 1e-12);
        assert!((base.drift_w.unwrap() - 2.0).abs() < 1e-12);
        assert!((base.drift_fraction.unwrap() - 0.2).abs() < 1e-12);
        assert!(base.drifted());
        // Drift shows in the pooled spread: its standard deviation exceeds either side's.
        let sd = |e: Estimate| e.std_dev.unwrap();
        assert!(sd(base.power_w) > sd(base.before_w).max(sd(base.after_w.unwrap())));
    }

    #[test]
    fn an_old_record_is_one_window_and_a_run_without_the_window_after_has_no_drift() {
        let mut b = idle(IdleWhen::Before, &[10.0]);
        b.window_power_w.clear();
        let base = IdleBaseline::from_records([&b]).unwrap();
        assert_eq!(base.power_w.n, 1);
        assert_eq!(base.drift_w, None);
        assert!(!base.drifted());
        // Only an after window: no baseline (the steps' idle shares used the before window).
        let a = idle(IdleWhen::After, &[10.0, 10.0]);
        assert!(IdleBaseline::from_records([&a]).is_none());
    }

    #[test]
    fn the_baselines_half_width_adds_in_quadrature_scaled_to_a_token() {
        let e = Estimate {
            mean: 1.0,
            ci95: Some([0.97, 1.03]),
            std_dev: Some(0.05),
            n: 10,
        };
        // Baseline 10 W ± 2 W over 0.02 s per token: ± 0.04 J/token from the baseline.
        let p = Estimate {
            mean: 10.0,
            ci95: Some([8.0, 12.0]),
            std_dev: Some(1.0),
            n: 8,
        };
        let c = with_baseline_spread(e, &p, 0.02);
        let h = c.half_width().unwrap();
        assert!((h - 0.05).abs() < 1e-12, "{h}"); // hypot(0.03, 0.04)
        assert_eq!((c.mean, c.n, c.std_dev), (1.0, 10, Some(0.05)));
        // A baseline of one window has no spread to add.
        let one = Estimate {
            ci95: None,
            std_dev: None,
            n: 1,
            ..p
        };
        assert_eq!(with_baseline_spread(e, &one, 0.02), e);
    }
}
