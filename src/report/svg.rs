//! A [`Chart`] drawn as inline SVG for the HTML report: plain markup, no script, no external
//! reference.

use std::fmt::Write;

use super::format::num;
use super::html::esc;
use super::page::{Bar, Chart, HLine, Series};

const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 52.0;
const BOTTOM: f64 = 46.0;

/// The reference line's colour.
const MUTED: &str = "#777777";

/// The chart as one `<svg>` element.
pub fn render(c: &Chart) -> String {
    match c {
        Chart::Lines {
            title,
            x_label,
            y_label,
            series,
            hline,
        } => line_chart(title, x_label, y_label, series, hline.as_ref()),
        Chart::Bars {
            title,
            y_label,
            bars,
            narrow,
        } => bar_chart(title, y_label, bars, *narrow),
        Chart::Heatmap {
            title,
            row_labels,
            rows,
        } => heatmap(title, row_labels, rows),
    }
}

/// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Widen [lo, hi] so it is not empty and has a little room at the top.
fn padded(lo: f64, hi: f64, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = if from_zero {
        (lo.min(0.0), hi.max(0.0))
    } else {
        (lo, hi)
    };
    if hi > lo {
        (lo, hi + (hi - lo) * 0.05)
    } else if hi == 0.0 {
        (0.0, 1.0)
    } else {
        (lo - lo.abs() * 0.1, hi + hi.abs() * 0.1)
    }
}

struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (H - TOP - BOTTOM)
    }
}

fn open(out: &mut String, title: &str, class: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="{class}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title><rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold" fill="#222">{t}</text>"##,
        t = esc(title)
    );
}

fn axes(out: &mut String, f: &Frame, x_label: &str, y_label: &str, x_ticks: bool) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    for t in ticks(f.y.0, f.y.1) {
        let y = f.py(t);
        let _ = write!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#444">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            esc(&num(t))
        );
    }
    if x_ticks {
        for t in ticks(f.x.0, f.x.1) {
            let x = f.px(t);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{:.1}" stroke="#888"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#444">{}</text>"##,
                y1 + 4.0,
                y1 + 16.0,
                esc(&num(t))
            );
        }
    }
    let _ = write!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#888"/><line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#888"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#222">{}</text><text transform="translate(14 {:.1}) rotate(-90)" font-size="12" text-anchor="middle" fill="#222">{}</text>"##,
        (x0 + x1) / 2.0,
        H - 8.0,
        esc(x_label),
        (y0 + y1) / 2.0,
        esc(y_label)
    );
}

fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    let mut x = W - RIGHT - 8.0;
    for (name, color, dashed) in entries.iter().rev() {
        let w = 26.0 + 6.5 * name.chars().count() as f64;
        x -= w;
        let dash = if *dashed {
            r##" stroke-dasharray="5 3""##
        } else {
            ""
        };
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="36" x2="{:.1}" y2="36" stroke="{color}" stroke-width="2.5"{dash}/><text x="{:.1}" y="40" font-size="11" fill="#222">{}</text>"##,
            x + 18.0,
            x + 22.0,
            esc(name)
        );
    }
}

/// Lines through (x, y) points, one per series, with an optional dashed reference line.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<&HLine>,
) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        all().map(pick).fold(init, f)
    };
    let (mut ylo, mut yhi) = (
        fold(f64::min, f64::INFINITY, |p| p.1),
        fold(f64::max, f64::NEG_INFINITY, |p| p.1),
    );
    if let Some(h) = hline {
        ylo = ylo.min(h.y);
        yhi = yhi.max(h.y);
    }
    let (xlo, xhi) = (
        fold(f64::min, f64::INFINITY, |p| p.0),
        fold(f64::max, f64::NEG_INFINITY, |p| p.0),
    );
    let xr = if xhi > xlo {
        (xlo, xhi)
    } else {
        (xlo - 1.0, xlo + 1.0)
    };
    let f = Frame {
        x: xr,
        y: padded(ylo, yhi, false),
    };
    let mut out = String::new();
    open(&mut out, title, "chart");
    axes(&mut out, &f, x_label, y_label, true);
    if let Some(h) = hline {
        let y = f.py(h.y);
        let _ = write!(
            out,
            r##"<line class="baseline" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{MUTED}" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
            W - RIGHT
        );
    }
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
            .collect();
        let _ = write!(
            out,
            r##"<polyline class="series" fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            s.color,
            pts.join(" ")
        );
        if s.points.len() <= 60 {
            for &(x, y) in &s.points {
                let _ = write!(
                    out,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {} at {}</title></circle>"##,
                    f.px(x),
                    f.py(y),
                    s.color,
                    esc(&s.name),
                    esc(&num(y)),
                    esc(&num(x))
                );
            }
        }
    }
    let mut entries: Vec<(&str, &str, bool)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color, false))
        .collect();
    if let Some(h) = hline {
        entries.push((h.name.as_str(), MUTED, true));
    }
    legend(&mut out, &entries);
    out.push_str("</svg>");
    out
}

/// Vertical bars from zero with 95% error bars; a third of the page wide when `narrow`.
fn bar_chart(title: &str, y_label: &str, bars: &[Bar], narrow: bool) -> String {
    let hi = bars
        .iter()
        .map(|b| b.ci95.map_or(b.value, |c| c[1].max(b.value)))
        .fold(0.0, f64::max);
    let lo = bars
        .iter()
        .map(|b| b.ci95.map_or(b.value, |c| c[0].min(b.value)))
        .fold(0.0, f64::min);
    let f = Frame {
        x: (0.0, 1.0),
        y: padded(lo, hi, true),
    };
    let mut out = String::new();
    let class = if narrow { "chart third" } else { "chart" };
    open(&mut out, title, class);
    axes(&mut out, &f, "", y_label, false);
    let slot = (W - LEFT - RIGHT) / bars.len().max(1) as f64;
    let width = (slot * 0.5).min(90.0);
    for (i, b) in bars.iter().enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        let (y0, y1) = (f.py(0.0), f.py(b.value));
        let _ = write!(
            out,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect><text x="{cx:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#222">{}</text>"##,
            cx - width / 2.0,
            y0.min(y1),
            (y0 - y1).abs(),
            b.color,
            esc(&b.label),
            esc(&num(b.value)),
            H - BOTTOM + 16.0,
            esc(&b.label)
        );
        if let Some([lo, hi]) = b.ci95 {
            let (yl, yh) = (f.py(lo), f.py(hi));
            let _ = write!(
                out,
                r##"<g class="errorbar" stroke="#222" stroke-width="1.5"><line x1="{cx:.1}" y1="{yl:.1}" x2="{cx:.1}" y2="{yh:.1}"/><line x1="{:.1}" y1="{yl:.1}" x2="{:.1}" y2="{yl:.1}"/><line x1="{:.1}" y1="{yh:.1}" x2="{:.1}" y2="{yh:.1}"/></g>"##,
                cx - 8.0,
                cx + 8.0,
                cx - 8.0,
                cx + 8.0
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Colour of a load relative to the mean: blue below, near-white at the mean, red above (2x and up).
fn load_colour(r: f64) -> String {
    let lerp = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        let t = t.clamp(0.0, 1.0);
        (
            a.0 + (b.0 - a.0) * t,
            a.1 + (b.1 - a.1) * t,
            a.2 + (b.2 - a.2) * t,
        )
    };
    let (blue, white, red) = (
        (33.0, 102.0, 172.0),
        (247.0, 247.0, 247.0),
        (178.0, 24.0, 43.0),
    );
    let c = if r < 1.0 {
        lerp(blue, white, r)
    } else {
        lerp(white, red, r - 1.0)
    };
    format!("rgb({:.0},{:.0},{:.0})", c.0, c.1, c.2)
}

/// Rows of cells coloured by value / row mean (tokens per expert, one row per MoE layer).
fn heatmap(title: &str, row_labels: &[String], rows: &[Vec<u64>]) -> String {
    // Room on the left for "MoE 12 (block 25)".
    const LEFT: f64 = 124.0;
    const TOP: f64 = 34.0;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let cell_w = ((W - LEFT - RIGHT) / cols as f64).min(40.0);
    let cell_h = 22.0;
    let height = TOP + cell_h * rows.len() as f64 + 52.0;
    let mut out = String::new();
    let t = esc(title);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="{t}"><title>{t}</title><rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold" fill="#222">{t}</text>"##
    );
    for (i, (label, row)) in row_labels.iter().zip(rows).enumerate() {
        let y = TOP + cell_h * i as f64;
        let mean = row.iter().sum::<u64>() as f64 / row.len().max(1) as f64;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#222">{}</text>"##,
            LEFT - 6.0,
            y + 15.0,
            esc(label)
        );
        for (j, &c) in row.iter().enumerate() {
            let r = if mean > 0.0 { c as f64 / mean } else { 0.0 };
            let _ = write!(
                out,
                r##"<rect class="cell" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#ffffff"><title>{}, expert {j}: {c} tokens ({}x the mean)</title></rect>"##,
                LEFT + cell_w * j as f64,
                cell_w,
                cell_h,
                load_colour(r),
                esc(label),
                num(r)
            );
        }
    }
    let y = TOP + cell_h * rows.len() as f64 + 18.0;
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{y:.1}" font-size="11" fill="#444">expert 0 .. {}; colour: tokens over the layer's mean</text>"##,
        cols - 1
    );
    for (k, r) in [0.0, 0.5, 1.0, 1.5, 2.0].iter().enumerate() {
        let x = LEFT + 60.0 * k as f64;
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="16" height="12" fill="{}" stroke="#999"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#444">{}x</text>"##,
            y + 8.0,
            load_colour(*r),
            x + 20.0,
            y + 18.0,
            num(*r)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.013, 0.087);
        assert_eq!(t.len(), 4);
        assert!((t[0] - 0.02).abs() < 1e-12 && (t[3] - 0.08).abs() < 1e-12);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
        let svg = bar_chart("a<b", "J", &[], false);
        assert!(svg.contains("<title>a&lt;b</title>"));
    }

    #[test]
    fn an_error_bar_spans_its_interval_in_pixels() {
        let svg = bar_chart(
            "t",
            "J/token",
            &[Bar {
                label: "x".into(),
                color: "#000000",
                value: 1.0,
                ci95: Some([0.5, 1.5]),
            }],
            true,
        );
        assert!(svg.contains("class=\"chart third\""));
        assert!(svg.contains("class=\"errorbar\""));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 1);
    }
}
