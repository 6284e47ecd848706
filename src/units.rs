//! How every number the tool prints is written: significant digits, SI prefixes, units, ratios,
//! percentages and durations, in one place. It imports nothing from the crate, so every layer can
//! use it (docs/architecture.md).
//!
//! The conventions, each with the function that applies it:
//! - **Three significant digits** ([`sig3`]): `14.8`, `0.0123`, `0.500`; the carry is taken into
//!   account (9.996 is `10.0`, not `10.00`); integer digits are never dropped (`1287`, not `1.29e3`);
//!   plain from 0.001 to 10^6, scientific outside (`3.14e23`, `4.20e-4`); zero is `0`. The
//!   reports' prose (`report::format::num`) switches sooner, to a count from 10,000 and to
//!   scientific below 0.01, so that a sentence never carries a seven-digit number.
//! - **Quantities with a unit** ([`si`], and the newtypes [`Joules`], [`Watts`], ...): an SI prefix
//!   from atto to exa leaves one to three integer digits, then three significant digits, a space
//!   and the prefixed unit: `1.23 mJ`, `96.6 GFLOP`, `180 GFLOP`, `0 W`. The prefix is chosen after
//!   rounding, so 999.5 W is `1.00 kW`. Beyond atto and exa: scientific (`1.00e-21 J`). Without a
//!   unit there is no trailing space: `1.23 k`.
//! - **Counts** ([`count`], [`count_unit`]: parameters, tokens, FLOPs and bytes in plain-text
//!   tables): whole numbers below 1000 exactly (`512`, `0 B`), then prefixes from kilo up
//!   (`1.20 T`, `4.50 GB`); never a sub-unit prefix (no milli-bytes); other values below 1000 as
//!   [`sig3`].
//! - **Ratios and ± half-widths** ([`ratio`], [`ratio_ascii`], [`si_pm`]): two decimals below 10
//!   (`0.48×`, `1.20×`, `±0.33`), so a column of ratios around 1 lines up, then three significant
//!   digits (`12.3×`); a non-zero value that would read `0.00` gets three significant digits
//!   (`0.00412×`), so nothing small reads as zero. The dashboard writes `×`, plain-text command
//!   output `x` (ASCII, greppable).
//! - **Intervals** ([`si_pm`], [`in_prefix_of`]): written in the prefix of the value they qualify,
//!   so `76.1 J [74.5, 77.8]` reads at a glance.
//! - **Percentages** ([`percent`], [`signed_percent`]) of a fraction, with the decimals the caller
//!   asks for: `33.1%`, `+3.2%`.
//! - **Durations** ([`duration`]): below a minute as seconds with a prefix (`42.0 s`, `350 ms`),
//!   below an hour as minutes and whole seconds (`12 min 5 s`), then hours, days and years with one
//!   decimal (`3.2 h`, `14.8 d`, `2.1 y`).
//! - **Losses** ([`loss`]) in nats per token with three decimals: `2.738`.
//! - **NaN and infinities** are shown as such (`NaN J`, `inf W`, `-inf`; a duration `∞`), never as a
//!   number.

use std::fmt;

/// SI prefixes from exa down to atto, largest first.
const PREFIXES: [(f64, &str); 13] = [
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
    (1e-15, "f"),
    (1e-18, "a"),
];

/// Index of the empty prefix in [`PREFIXES`]: counts take no prefix below it.
const UNIT: usize = 6;

/// Decimals that show `a` (finite, > 0) with three significant digits after rounding, integer
/// digits kept.
fn sig3_decimals(a: f64) -> usize {
    let mut e = a.log10().floor() as i32;
    // log10 can be off by one next to a power of ten.
    if 10f64.powi(e + 1) <= a {
        e += 1;
    } else if 10f64.powi(e) > a {
        e -= 1;
    }
    let d = (2 - e).max(0) as usize;
    // Rounding may carry into the next decade (9.996 -> 10.00): one decimal fewer.
    let rounded: f64 = format!("{a:.d$}").parse().unwrap_or(a);
    if d > 0 && rounded >= 10f64.powi(e + 1) {
        d - 1
    } else {
        d
    }
}

/// Three significant digits: plain from 0.001 to 10^6 ("1287", "14.8", "0.0123"), scientific
/// outside ("3.14e23"); "0"; NaN and infinities as Rust writes them.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return scientific(x);
    }
    let d = sig3_decimals(a);
    format!("{x:.d$}")
}

/// Three significant digits in scientific notation: "3.14e23", "-4.20e-4".
pub fn scientific(x: f64) -> String {
    format!("{x:.2e}")
}

/// The mantissa of `x` and the index of its prefix in [`PREFIXES`], among the prefixes up to
/// `PREFIXES[last]`, chosen after rounding the mantissa to three significant digits; `None` when
/// `x` is zero, not finite or beyond the prefixes at either end.
fn prefixed(x: f64, last: usize) -> Option<(String, usize)> {
    let a = x.abs();
    if a == 0.0 || !a.is_finite() {
        return None;
    }
    let i = PREFIXES[..=last].iter().position(|(s, _)| a >= *s)?;
    let m = sig3(x / PREFIXES[i].0);
    if magnitude(&m) < 1000.0 {
        return Some((m, i));
    }
    // 999.5 rounds to 1000: the next prefix up, where it reads 1.00.
    let up = i.checked_sub(1)?;
    let m = sig3(x / PREFIXES[up].0);
    let m = if magnitude(&m) < 1.0 {
        if x < 0.0 { "-1.00" } else { "1.00" }.to_string()
    } else {
        m
    };
    Some((m, up))
}

/// The absolute value of a number as [`sig3`] wrote it.
fn magnitude(shown: &str) -> f64 {
    shown.trim_start_matches('-').parse().unwrap_or(0.0)
}

/// "{number} {prefix}{unit}", without a trailing space when both are empty.
fn join(number: &str, prefix: &str, unit: &str) -> String {
    if prefix.is_empty() && unit.is_empty() {
        number.to_string()
    } else {
        format!("{number} {prefix}{unit}")
    }
}

/// `x` with an SI prefix and three significant digits, then `unit`: "1.23 mJ", "96.6 GFLOP",
/// "0 W", "NaN J"; without a unit, "1.23 k".
pub fn si(x: f64, unit: &str) -> String {
    if !x.is_finite() || x == 0.0 {
        let n = if x == 0.0 { "0".into() } else { format!("{x}") };
        return join(&n, "", unit);
    }
    match prefixed(x, PREFIXES.len() - 1) {
        Some((m, i)) => join(&m, PREFIXES[i].1, unit),
        None => join(&scientific(x), "", unit),
    }
}

/// The scale of the prefix [`si`] gives `x` (1 for zero, non-finite and out-of-range values).
fn prefix_scale(x: f64) -> f64 {
    prefixed(x, PREFIXES.len() - 1).map_or(1.0, |(_, i)| PREFIXES[i].0)
}

/// `x` written in the prefix [`si`] gives `like`, three significant digits, without prefix or
/// unit: the bounds of an interval beside its mean (`in_prefix_of(74.5e-3, 76.1e-3)` is "74.5").
pub fn in_prefix_of(x: f64, like: f64) -> String {
    sig3(x / prefix_scale(like))
}

/// A mean and the half-width of its interval, both in the mean's prefix: "12.8 mJ ±0.33"; the
/// bare mean when there is no interval.
pub fn si_pm(mean: f64, half_width: Option<f64>, unit: &str) -> String {
    let m = si(mean, unit);
    match half_width {
        Some(h) => format!("{m} ±{}", two_decimals(h / prefix_scale(mean))),
        None => m,
    }
}

/// A count: whole numbers below 1000 exactly ("512", "0"), then prefixes from kilo up ("1.20 T",
/// "-2.50 M"); other values below 1000 as [`sig3`] ("0.250").
pub fn count(x: f64) -> String {
    count_unit(x, "")
}

/// [`count`] with a unit: "4.50 GB", "512 B", "0 B".
pub fn count_unit(x: f64, unit: &str) -> String {
    if !x.is_finite() {
        return join(&format!("{x}"), "", unit);
    }
    if x.abs() < 999.5 {
        let n = if x == x.trunc() {
            format!("{}", x as i64)
        } else {
            sig3(x)
        };
        return join(&n, "", unit);
    }
    match prefixed(x, UNIT) {
        Some((m, i)) => join(&m, PREFIXES[i].1, unit),
        None => join(&scientific(x), "", unit),
    }
}

/// Two decimals below 10, three significant digits from 10 up; a non-zero value that would read
/// 0.00 gets three significant digits.
fn two_decimals(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a >= 9.995 || (a > 0.0 && a < 0.005) {
        sig3(x)
    } else {
        format!("{x:.2}")
    }
}

/// A ratio such as sparse / dense, for the dashboard: "0.48×", "1.20×", "12.3×".
pub fn ratio(x: f64) -> String {
    format!("{}×", two_decimals(x))
}

/// [`ratio`] for plain-text output, with an ASCII x: "0.48x".
pub fn ratio_ascii(x: f64) -> String {
    format!("{}x", two_decimals(x))
}

/// A fraction as a percentage with `decimals` decimals: `percent(0.331, 1)` is "33.1%".
pub fn percent(fraction: f64, decimals: usize) -> String {
    format!("{:.decimals$}%", 100.0 * fraction)
}

/// A relative change as a signed percentage: `signed_percent(0.032, 1)` is "+3.2%".
pub fn signed_percent(fraction: f64, decimals: usize) -> String {
    format!("{:+.decimals$}%", 100.0 * fraction)
}

/// A loss in nats per token with three decimals ("2.738"): losses are compared by differences
/// far smaller than the loss itself, so decimals, not significant digits, are what matter.
pub fn loss(nats: f64) -> String {
    format!("{nats:.3}")
}

/// Seconds as "42.0 s", "350 ms", "12 min 5 s", "3.2 h", "14.8 d", "2.1 y"; "∞" when infinite.
pub fn duration(seconds: f64) -> String {
    const HOUR: f64 = 3600.0;
    const DAY: f64 = 24.0 * HOUR;
    const YEAR: f64 = 365.0 * DAY;
    if seconds.is_nan() {
        return "NaN s".into();
    }
    if seconds.is_infinite() {
        return if seconds > 0.0 { "∞" } else { "-∞" }.into();
    }
    match seconds {
        s if s.abs() < 59.95 => si(s, "s"),
        // Whole seconds first, so that 119.6 s is "2 min 0 s", not "1 min 60 s".
        s if s.round() < HOUR => {
            let whole = s.round();
            format!("{} min {} s", (whole / 60.0).floor(), whole % 60.0)
        }
        s if s < DAY => format!("{:.1} h", s / HOUR),
        s if s < YEAR => format!("{:.1} d", s / DAY),
        s => format!("{:.1} y", s / YEAR),
    }
}

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $unit:literal, $show:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
        pub struct $name(pub f64);

        impl $name {
            /// The unit it is written in, after the SI prefix.
            pub const UNIT: &'static str = $unit;
        }

        /// Written by [`si`] or [`count_unit`]; a width pads it (`{:>9}`).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&$show(self.0, $unit))
            }
        }
    };
}

quantity!(
    /// Energy in joules: "12.8 mJ".
    Joules,
    "J",
    si
);
quantity!(
    /// Power in watts: "25.8 W".
    Watts,
    "W",
    si
);
quantity!(
    /// Time in seconds, as a measured interval: "12.3 ms" ([`duration`] for spans of days).
    Seconds,
    "s",
    si
);
quantity!(
    /// Floating-point operations (a multiply-add is 2): "27.4 MFLOP".
    Flop,
    "FLOP",
    si
);
quantity!(
    /// Floating-point operations per second: "140 GFLOP/s".
    FlopPerSecond,
    "FLOP/s",
    si
);
quantity!(
    /// Bytes, a count: "4.50 GB", "512 B".
    Bytes,
    "B",
    count_unit
);
quantity!(
    /// Bytes per second: "12.3 GB/s".
    BytesPerSecond,
    "B/s",
    si
);
quantity!(
    /// Tokens per second: "1.69 ktokens/s".
    TokensPerSecond,
    "tokens/s",
    si
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spread over 40 decades, both signs (a linear congruential generator,
    /// so a failure is reproducible).
    fn values() -> Vec<f64> {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..4000)
            .map(|i| {
                let x = (1.0 + 9.0 * next()) * 10f64.powi((next() * 40.0) as i32 - 20);
                if i % 2 == 0 {
                    x
                } else {
                    -x
                }
            })
            .collect()
    }

    /// The decimals a plain or scientific number was written with, and its value.
    fn read(shown: &str) -> (f64, i32) {
        let v: f64 = shown.parse().unwrap_or_else(|_| panic!("{shown:?}"));
        let (mantissa, exp) = match shown.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().unwrap()),
            None => (shown, 0),
        };
        let decimals = mantissa.split_once('.').map_or(0, |(_, d)| d.len() as i32);
        (v, decimals - exp)
    }

    /// Significant digits of a number as written (leading zeros are not significant).
    fn significant(shown: &str) -> usize {
        let mantissa = shown.split('e').next().unwrap();
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        digits.trim_start_matches('0').len()
    }

    fn within_half_a_unit_of_the_last_digit(x: f64, shown: f64, decimals: i32) -> bool {
        (shown - x).abs() <= 0.5 * 10f64.powi(-decimals) * (1.0 + 1e-9)
    }

    #[test]
    fn sig3_reads_back_within_half_a_unit_of_its_last_digit() {
        for x in values() {
            let s = sig3(x);
            let (v, decimals) = read(&s);
            assert!(
                within_half_a_unit_of_the_last_digit(x, v, decimals),
                "{x} -> {s}"
            );
            // Three significant digits, or more where integer digits are kept.
            assert!(significant(&s) >= 3, "{x} -> {s}");
            assert!(
                significant(&s) == 3 || (1e3..1e6).contains(&x.abs()),
                "{x} -> {s}"
            );
        }
    }

    #[test]
    fn sig3_takes_the_carry_into_account() {
        assert_eq!(sig3(9.996), "10.0");
        assert_eq!(sig3(99.96), "100");
        assert_eq!(sig3(0.09996), "0.100");
        assert_eq!(sig3(14.77), "14.8");
        assert_eq!(sig3(1287.04), "1287");
        assert_eq!(sig3(0.01234), "0.0123");
        assert_eq!(sig3(0.5), "0.500");
        assert_eq!(sig3(3.14e23), "3.14e23");
        assert_eq!(sig3(-4.2e-4), "-4.20e-4");
        assert_eq!(sig3(0.0), "0");
    }

    /// A quantity [`si`] wrote, read back in the base unit, with the decimals of its last digit.
    fn read_si(shown: &str, unit: &str) -> (f64, i32) {
        let (number, rest) = shown.split_once(' ').unwrap_or((shown, ""));
        let prefix = rest
            .strip_suffix(unit)
            .unwrap_or_else(|| panic!("{shown:?}"));
        let (scale, _) = PREFIXES
            .iter()
            .find(|(_, p)| *p == prefix)
            .unwrap_or_else(|| panic!("prefix {prefix:?} in {shown:?}"));
        let (v, decimals) = read(number);
        (v * scale, decimals - scale.log10().round() as i32)
    }

    #[test]
    fn si_reads_back_within_half_a_unit_of_its_last_digit_with_one_to_three_integer_digits() {
        for x in values() {
            let s = si(x, "J");
            let (v, decimals) = read_si(&s, "J");
            assert!(
                within_half_a_unit_of_the_last_digit(x, v, decimals),
                "{x} -> {s}"
            );
            assert_eq!(significant(&s), 3, "{x} -> {s}");
            if (1e-18..1e21).contains(&x.abs()) {
                let number = s.split(' ').next().unwrap();
                assert!(!number.contains('e'), "{x} -> {s}");
                assert!((1.0..1000.0).contains(&magnitude(number)), "{x} -> {s}");
            }
        }
    }

    #[test]
    fn si_moves_to_the_next_prefix_when_rounding_reaches_1000() {
        assert_eq!(si(999.5, "W"), "1.00 kW");
        assert_eq!(si(999.4, "W"), "999 W");
        assert_eq!(si(999.96, "W"), "1.00 kW");
        assert_eq!(si(0.99996, "J"), "1.00 J");
        assert_eq!(si(-999.5e6, "B"), "-1.00 GB");
        assert_eq!(si(0.00123, "J"), "1.23 mJ");
        assert_eq!(si(96.6e9, "FLOP"), "96.6 GFLOP");
        assert_eq!(si(180e9, "FLOP"), "180 GFLOP");
        assert_eq!(si(2.5e-6, "J"), "2.50 µJ");
    }

    #[test]
    fn si_shows_zero_tiny_huge_and_non_finite_values_honestly() {
        assert_eq!(si(0.0, "W"), "0 W");
        assert_eq!(si(1e-12, "J"), "1.00 pJ");
        assert_eq!(si(4.2e-16, "J"), "420 aJ");
        assert_eq!(si(1e-21, "J"), "1.00e-21 J");
        assert_eq!(si(3.14e23, "FLOP"), "3.14e23 FLOP");
        assert_eq!(si(f64::NAN, "J"), "NaN J");
        assert_eq!(si(f64::INFINITY, "W"), "inf W");
        assert_eq!(si(f64::NEG_INFINITY, "W"), "-inf W");
        assert_eq!(si(1234.0, ""), "1.23 k");
        assert_eq!(si(512.0, ""), "512");
    }

    #[test]
    fn a_negative_value_is_its_positive_value_with_a_minus() {
        for x in values().into_iter().filter(|x| *x > 0.0) {
            assert_eq!(si(-x, "W"), format!("-{}", si(x, "W")));
            assert_eq!(sig3(-x), format!("-{}", sig3(x)));
            assert_eq!(count(-x), format!("-{}", count(x)));
        }
    }

    #[test]
    fn counts_are_exact_below_1000_and_never_take_a_sub_unit_prefix() {
        assert_eq!(count(512.0), "512");
        assert_eq!(count(0.0), "0");
        assert_eq!(count(5.0), "5");
        assert_eq!(count(0.25), "0.250");
        assert_eq!(count(999.5), "1.00 k");
        assert_eq!(count(1.2e12), "1.20 T");
        assert_eq!(count(96.6e9), "96.6 G");
        assert_eq!(count(180.4e9), "180 G");
        assert_eq!(count(999.99e9), "1.00 T");
        assert_eq!(count(-2.5e6), "-2.50 M");
        assert_eq!(count(2.5e21), "2.50e21");
        assert_eq!(count_unit(4.5e9, "B"), "4.50 GB");
        assert_eq!(count_unit(0.0, "B"), "0 B");
        assert_eq!(count_unit(512.0, "B"), "512 B");
        assert_eq!(count_unit(f64::NAN, "B"), "NaN B");
        for x in values() {
            let s = count(x);
            assert!(!s.contains(['m', 'µ', 'n', 'p', 'f', 'a']), "{x} -> {s}");
        }
    }

    #[test]
    fn ratios_and_half_widths_keep_two_decimals_below_ten_and_never_read_zero_when_not() {
        assert_eq!(ratio(0.48), "0.48×");
        assert_eq!(ratio(1.2), "1.20×");
        assert_eq!(ratio(9.996), "10.0×");
        assert_eq!(ratio(12.34), "12.3×");
        assert_eq!(ratio(0.0), "0.00×");
        assert_eq!(ratio(0.00412), "0.00412×");
        assert_eq!(ratio(f64::NAN), "NaN×");
        assert_eq!(ratio_ascii(0.551), "0.55x");
        for x in values() {
            let s = two_decimals(x);
            assert_ne!(magnitude(&s), 0.0, "{x} -> {s}");
            let (v, decimals) = read(&s);
            assert!(
                within_half_a_unit_of_the_last_digit(x, v, decimals),
                "{x} -> {s}"
            );
        }
    }

    #[test]
    fn an_interval_is_written_in_the_prefix_of_its_mean() {
        assert_eq!(si_pm(12.8e-3, Some(0.33e-3), "J"), "12.8 mJ ±0.33");
        assert_eq!(si_pm(1.23e-3, Some(0.04e-3), "J"), "1.23 mJ ±0.04");
        assert_eq!(si_pm(1.23e-3, None, "J"), "1.23 mJ");
        assert_eq!(in_prefix_of(74.5, 76.1), "74.5");
        // A bound across a prefix boundary stays in the mean's prefix.
        assert_eq!(in_prefix_of(990.0, 1.01e3), "0.990");
        assert_eq!(in_prefix_of(5.0, 0.0), "5.00");
    }

    #[test]
    fn percentages_and_durations() {
        assert_eq!(percent(0.331, 1), "33.1%");
        assert_eq!(percent(0.41, 0), "41%");
        assert_eq!(signed_percent(0.032, 1), "+3.2%");
        assert_eq!(signed_percent(-0.0013, 2), "-0.13%");
        assert_eq!(duration(42.0), "42.0 s");
        assert_eq!(duration(0.35), "350 ms");
        assert_eq!(duration(725.0), "12 min 5 s");
        assert_eq!(duration(119.6), "2 min 0 s");
        assert_eq!(duration(1.28e6), "14.8 d");
        assert_eq!(duration(3.0 * 365.0 * 86_400.0), "3.0 y");
        assert_eq!(duration(f64::INFINITY), "∞");
        assert_eq!(duration(f64::NAN), "NaN s");
        assert_eq!(loss(2.7381), "2.738");
    }

    #[test]
    fn a_quantity_writes_its_unit_and_pads_to_a_width() {
        assert_eq!(Joules(0.0128).to_string(), "12.8 mJ");
        assert_eq!(format!("{:>9}", Watts(25.8)), "   25.8 W");
        assert_eq!(Bytes(512.0).to_string(), "512 B");
        assert_eq!(FlopPerSecond(1.4e11).to_string(), "140 GFLOP/s");
        assert_eq!(Seconds(0.0123).to_string(), "12.3 ms");
    }
}
