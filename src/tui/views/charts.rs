//! Chart helpers shared by the views: thinning long series and axis bounds with labels.

use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::Axis;

use crate::units::si;

/// A chart series: (x, y) points.
pub type Series = Vec<(f64, f64)>;

/// At most `max` points of `points`, evenly strided, always keeping the last one (drawing cost
/// stays bounded however long the run).
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(max - 1);
    let mut out: Vec<(f64, f64)> = points.iter().step_by(stride).copied().collect();
    if out.last() != points.last() {
        out.extend(points.last());
    }
    out
}

/// [min, max] of the values `f` picks, padded so a flat series still has a height; `None` when empty.
pub fn bounds<'a>(
    series: impl IntoIterator<Item = &'a [(f64, f64)]>,
    f: impl Fn(&(f64, f64)) -> f64,
) -> Option<[f64; 2]> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        for p in s {
            let v = f(p);
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if lo > hi {
        return None;
    }
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        let pad = (hi.abs() * 0.05).max(1e-9);
        return Some([lo - pad, hi + pad]);
    }
    Some([lo, hi])
}

/// An axis over `b` with three labels in `unit` (SI prefixes); a unitless label keeps a space
/// before the axis line.
pub fn axis(title: &str, b: [f64; 2], unit: &str) -> Axis<'static> {
    let mid = (b[0] + b[1]) / 2.0;
    let label = |v: f64| match unit {
        "" => format!("{} ", si(v, "")),
        _ => si(v, unit),
    };
    Axis::default()
        .title(Line::styled(title.to_string(), Style::new()))
        .bounds(b)
        .labels([b[0], mid, b[1]].map(|v| Line::from(label(v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_at_most_max_points() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 0.0)).collect();
        let t = thin(&pts, 100);
        assert!(t.len() <= 100, "{}", t.len());
        assert_eq!(t.first(), pts.first());
        assert_eq!(t.last(), pts.last());
        assert_eq!(thin(&pts[..10], 100).len(), 10);
    }

    #[test]
    fn a_flat_series_gets_a_height() {
        let s = [(0.0, 5.0), (1.0, 5.0)];
        let b = bounds([&s[..]], |p| p.1).unwrap();
        assert!(b[0] < 5.0 && b[1] > 5.0);
        assert_eq!(bounds([&[][..]], |p| p.1), None);
    }
}
