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
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
