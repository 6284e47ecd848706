//! Numbers as people read them in the Markdown and HTML renderings (the JSON keeps full precision).

use super::document::Figure;
use crate::units::{count, scientific, sig3};
use crate::vocab::EnergySource;

/// Three significant digits ([`crate::units`]): SI suffixes from 10,000 up, scientific notation
/// below 0.01.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() || a == 0.0 || (0.01..1e4).contains(&a) {
        sig3(x)
    } else if a >= 1e4 {
        count(x)
    } else {
        scientific(x)
    }
}

/// "1.23 ± 0.05" (the half-width of the 95% interval), or the bare value.
pub fn with_ci(f: &Figure) -> String {
    match f.ci95 {
        Some([lo, hi]) => format!("{} ± {}", num(f.value), num((hi - lo) / 2.0)),
        None => num(f.value),
    }
}

/// "[1.18, 1.28]" or "n/a" (one observation has no interval).
pub fn interval(f: &Figure) -> String {
    match f.ci95 {
        Some([lo, hi]) => format!("[{}, {}]", num(lo), num(hi)),
        None => "n/a".into(),
    }
}

/// A figure or a dash, through `show`.
pub fn opt(f: Option<&Figure>, show: fn(&Figure) -> String) -> String {
    f.map_or("–".into(), show)
}

pub fn plain(f: &Figure) -> String {
    num(f.value)
}

/// The source, marked so an estimate cannot pass for a measurement.
pub fn source_label(source: &str) -> String {
    if source == EnergySource::Estimate.label() {
        "estimate (not measured)".into()
    } else {
        source.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(num(0.0012345), "1.23e-3");
        assert_eq!(num(0.5), "0.500");
        assert_eq!(num(0.021484), "0.0215");
        assert_eq!(num(2.3456), "2.35");
        assert_eq!(num(23.456), "23.5");
        assert_eq!(num(234.56), "235");
        assert_eq!(num(1.5e9), "1.50 G");
        assert_eq!(num(0.0), "0");
    }
}
