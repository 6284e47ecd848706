//! What the dashboard adds to `units`: an estimate with its number of observations, and the em dash
//! for a figure not known yet. Every number is written by `crate::units`.

use crate::stats::Estimate;
use crate::units::si_pm;

/// Mean ± half of the 95% CI in the mean's prefix, then the number of observations:
/// "1.23 mJ ±0.04 (n 12)"; n = 1 has no interval.
pub fn estimate(e: &Estimate, unit: &str) -> String {
    format!("{} (n {})", si_pm(e.mean, e.half_width(), unit), e.n)
}

/// An optional figure, or an em dash when absent.
pub fn or_dash(x: Option<String>) -> String {
    x.unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_shows_its_interval_in_the_means_prefix() {
        let e = Estimate {
            mean: 0.00123,
            ci95: Some([0.00119, 0.00127]),
            std_dev: Some(1e-4),
            n: 12,
        };
        assert_eq!(estimate(&e, "J"), "1.23 mJ ±0.04 (n 12)");
        let one = Estimate {
            ci95: None,
            n: 1,
            ..e
        };
        assert_eq!(estimate(&one, "J"), "1.23 mJ (n 1)");
    }
}
