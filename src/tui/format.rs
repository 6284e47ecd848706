//! Number formatting for the dashboard: SI prefixes with three significant digits, estimates with
//! their confidence interval, durations.

use crate::accounting::three_significant;
use crate::stats::Estimate;

const PREFIXES: [(f64, &str); 11] = [
    (1e18, "E"),
    (1e15, "P"),
    (1e12, "T"),
    (1e9, "G"),
    (1e6, "M"),
    (1e3, "k"),
    (1.0, ""),
    (1e-3, "m"),
    (1e-6, "µ"),
    (1e-9, "n"),
    (1e-12, "p"),
];

/// `x` with an SI prefix and three significant digits, then `unit`: "1.23 mJ", "96.6 GFLOP", "0 W".
pub fn si(x: f64, unit: &str) -> String {
    if !x.is_finite() {
        return format!("{x} {unit}");
    }
    if x == 0.0 {
        return format!("0 {unit}");
    }
    let a = x.abs();
    let (scale, prefix) = PREFIXES
        .iter()
        .copied()
        .find(|(s, _)| a >= s * 0.9995)
        .unwrap_or(PREFIXES[PREFIXES.len() - 1]);
    let v = x / scale;
    format!("{} {prefix}{unit}", three_significant(v))
}

/// Mean ± half of the 95% CI, then the number of observations: "1.23 mJ ±0.04 (n 12)".
/// The interval is given in the mean's prefix, so it reads at a glance; n = 1 has no interval.
pub fn estimate(e: &Estimate, unit: &str) -> String {
    let mean = si(e.mean, unit);
    match e.half_width() {
        Some(h) => {
            let scale = prefix_scale(e.mean);
            format!("{mean} ±{} (n {})", three_significant(h / scale), e.n)
        }
        None => format!("{mean} (n {})", e.n),
    }
}

fn prefix_scale(x: f64) -> f64 {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        return 1.0;
    }
    PREFIXES
        .iter()
        .find(|(s, _)| a >= s * 0.9995)
        .map_or(1e-12, |(s, _)| *s)
}

/// Seconds as "42.0 s", "12 min 5 s", "3.2 h", "14.8 d", "2.1 y".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "∞".into();
    }
    match seconds {
        s if s < 60.0 => si(s, "s"),
        s if s < 3600.0 => format!("{} min {:.0} s", (s / 60.0).floor(), s % 60.0),
        s if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        s if s < 365.0 * 86_400.0 => format!("{:.1} d", s / 86_400.0),
        s => format!("{:.1} y", s / (365.0 * 86_400.0)),
    }
}

/// A ratio such as sparse/dense: "0.48×".
pub fn ratio(x: f64) -> String {
    format!("{}×", three_significant(x))
}

/// An optional figure, or an em dash when absent.
pub fn or_dash(x: Option<String>) -> String {
    x.unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_picks_the_prefix_that_leaves_one_to_three_integer_digits() {
        assert_eq!(si(0.00123, "J"), "1.23 mJ");
        assert_eq!(si(96.6e9, "FLOP"), "96.6 GFLOP");
        assert_eq!(si(180e9, "FLOP"), "180 GFLOP");
        assert_eq!(si(2.5e-6, "J"), "2.50 µJ");
        assert_eq!(si(0.0, "W"), "0 W");
        assert_eq!(si(999.96, "W"), "1.00 kW");
    }

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

    #[test]
    fn durations_switch_units_at_minutes_hours_days_and_years() {
        assert_eq!(duration(42.0), "42.0 s");
        assert_eq!(duration(725.0), "12 min 5 s");
        assert_eq!(duration(1.28e6), "14.8 d");
    }
}
