//! Summaries of many windows with statrs: mean, spread, confidence intervals.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean with its 95% confidence interval (Student's t, two-sided) over `n` observations.
/// With n = 1 the interval is absent: one observation says nothing of the spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    /// [low, high] of the 95% confidence interval of the mean.
    pub ci95: Option<[f64; 2]>,
    /// Sample standard deviation (n - 1 in the denominator).
    pub std_dev: Option<f64>,
    pub n: usize,
}

impl Estimate {
    /// Half-width of the confidence interval, if there is one.
    pub fn half_width(&self) -> Option<f64> {
        self.ci95.map(|[lo, hi]| (hi - lo) / 2.0)
    }
}

/// Mean and 95% CI of `xs`; `None` when empty. Non-finite values are left out.
pub fn estimate(xs: &[f64]) -> Option<Estimate> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Estimate {
            mean,
            ci95: None,
            std_dev: None,
            n,
        });
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n >= 2 gives a valid t distribution")
        .inverse_cdf(0.975);
    let h = t * sd / (n as f64).sqrt();
    Some(Estimate {
        mean,
        ci95: Some([mean - h, mean + h]),
        std_dev: Some(sd),
        n,
    })
}

/// The ratio of means `mean(a) / mean(b)` of paired observations `(a_i, b_i)`, with a 95% interval
/// from the pairs: the linearised standard error `sd(a_i - R b_i) / (sqrt(n) mean(b))`, Student t
/// with n - 1 degrees of freedom. Paired windows share the machine's drift, which this interval
/// cancels and an unpaired one counts twice. `std_dev` is that of the residuals `a_i - R b_i`.
/// `None` with fewer than two finite pairs or a zero `mean(b)`.
pub fn paired_ratio_of_means(pairs: &[(f64, f64)]) -> Option<Estimate> {
    let v: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = |f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / n as f64;
    let (ma, mb) = (mean(|p| p.0), mean(|p| p.1));
    if mb == 0.0 {
        return None;
    }
    let r = ma / mb;
    // The residuals a_i - R b_i have mean zero by construction.
    let ss: f64 = v.iter().map(|(a, b)| (a - r * b).powi(2)).sum();
    let sd = (ss / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n >= 2 gives a valid t distribution")
        .inverse_cdf(0.975);
    let h = t * sd / ((n as f64).sqrt() * mb.abs());
    Some(Estimate {
        mean: r,
        ci95: Some([r - h, r + h]),
        std_dev: Some(sd),
        n,
    })
}

/// `[min, max]` of the finite values of `xs`; `None` when there are none.
pub fn range(xs: &[f64]) -> Option<[f64; 2]> {
    xs.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(None, |r, x| match r {
            None => Some([x, x]),
            Some([lo, hi]) => Some([lo.min(x), hi.max(x)]),
        })
}

/// Median of `xs` (the mean of the middle two for an even count); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_matches_a_hand_computation() {
        // xs = 1..=5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764451051977987 (t table).
        let e = estimate(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let h = 2.776_445_105_197_798_7 * 2.5f64.sqrt() / 5f64.sqrt();
        assert_eq!(e.n, 5);
        assert!((e.mean - 3.0).abs() < 1e-12);
        let [lo, hi] = e.ci95.unwrap();
        assert!((lo - (3.0 - h)).abs() < 1e-9 && (hi - (3.0 + h)).abs() < 1e-9);
    }

    #[test]
    fn one_observation_has_no_interval_and_none_has_no_estimate() {
        assert_eq!(estimate(&[2.0]).unwrap().ci95, None);
        assert!(estimate(&[]).is_none());
        assert!(estimate(&[f64::NAN]).is_none());
    }

    #[test]
    fn range_is_the_extremes_of_the_finite_values() {
        assert_eq!(range(&[3.0, f64::NAN, -1.5, 2.0]), Some([-1.5, 3.0]));
        assert_eq!(range(&[7.0]), Some([7.0, 7.0]));
        assert_eq!(range(&[f64::INFINITY]), None);
        assert_eq!(range(&[]), None);
    }

    #[test]
    fn the_paired_ratio_of_means_matches_a_hand_computation_and_cancels_shared_drift() {
        // a = (2, 4, 6), b = (1, 2, 4): R = 4 / (7/3) = 12/7; residuals a - R b = 2/7, 4/7, -6/7.
        let e = paired_ratio_of_means(&[(2.0, 1.0), (4.0, 2.0), (6.0, 4.0)]).unwrap();
        assert!((e.mean - 12.0 / 7.0).abs() < 1e-12);
        let sd = ((4.0 + 16.0 + 36.0) / 49.0 / 2.0f64).sqrt();
        let h = 4.302_652_729_749_464 * sd / (3f64.sqrt() * 7.0 / 3.0); // t(0.975, 2)
        let [lo, hi] = e.ci95.unwrap();
        assert!((hi - e.mean - h).abs() < 1e-9 && (e.mean - lo - h).abs() < 1e-9);
        // A drift both sides share (here a = 1.5 b whatever b does) leaves no doubt about the
        // ratio: a zero-width interval, where unpaired means would see all of the drift.
        let drift: Vec<(f64, f64)> = [1.0, 3.0, 2.0, 5.0].iter().map(|b| (1.5 * b, *b)).collect();
        let d = paired_ratio_of_means(&drift).unwrap();
        assert!((d.mean - 1.5).abs() < 1e-12 && d.half_width().unwrap() < 1e-12);
        assert!(paired_ratio_of_means(&[(1.0, 1.0)]).is_none());
        assert!(paired_ratio_of_means(&[(1.0, 0.0), (1.0, 0.0)]).is_none());
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
