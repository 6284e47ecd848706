//! `report.html`: a [`Page`] as one self-contained file (inline CSS and SVG, no script, nothing
//! fetched). Every piece of text is escaped here, by [`esc`], once.

use std::fmt::Write;

use super::page::{Block, Inline, Page, Table, Tone};
use super::svg;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}.cutoff{background:#fde2e1;border:1px solid #c33;padding:0.6em 1em}
.done{background:#e6f2e6;border:1px solid #6a6;padding:0.6em 1em}.estimate{background:#fff4d6;border:1px solid #d9a400;padding:0.4em 1em}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg.chart{border:1px solid #ddd;max-width:100%;height:auto}svg.third{width:32%}code{background:#f4f4f4;padding:0 3px}footer{color:#666;font-size:0.85em;margin-top:2em}";

/// Text as HTML (and SVG) character data or a quoted attribute value.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(page: &Page) -> String {
    let mut body = String::new();
    for b in &page.blocks {
        block(&mut body, b);
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        esc(&page.title)
    )
}

fn class(tone: Tone) -> &'static str {
    match tone {
        Tone::Plain => "",
        Tone::Done => " class=\"done\"",
        Tone::CutOff => " class=\"cutoff\"",
        Tone::Warning => " class=\"estimate\"",
    }
}

fn block(o: &mut String, b: &Block) {
    match b {
        Block::Heading(level, s) => {
            let _ = writeln!(o, "<h{level}>{}</h{level}>", esc(s));
        }
        Block::Paragraph(tone, line) => {
            let _ = writeln!(o, "<p{}>{}</p>", class(*tone), inlines(line));
        }
        Block::List(tone, items) => {
            let _ = write!(o, "<ul{}>", class(*tone));
            for i in items {
                let _ = write!(o, "<li>{}</li>", inlines(i));
            }
            o.push_str("</ul>\n");
        }
        Block::Table(t) => table(o, t),
        Block::Figure { charts, .. } => {
            if !charts.is_empty() {
                o.push_str("<div class=\"charts\">");
                for c in charts {
                    o.push_str(&svg::render(c));
                }
                o.push_str("</div>\n");
            }
        }
        Block::Footer(line) => {
            let _ = writeln!(o, "<footer>{}</footer>", inlines(line));
        }
    }
}

fn inlines(line: &[Inline]) -> String {
    line.iter()
        .map(|i| match i {
            Inline::Text(s) => esc(s),
            Inline::Strong(s) => format!("<strong>{}</strong>", esc(s)),
            Inline::Code(s) => format!("<code>{}</code>", esc(s)),
        })
        .collect()
}

fn table(o: &mut String, t: &Table) {
    o.push_str("<table><thead><tr>");
    for h in &t.header {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        o.push_str("<tr>");
        for c in r {
            let _ = write!(o, "<td>{}</td>", esc(c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::super::page::*;
    use super::*;

    #[test]
    fn text_is_escaped_once_and_emphasis_is_markup() {
        let mut p = Page {
            title: "a<b".into(),
            blocks: Vec::new(),
        };
        p.blocks.push(Block::Paragraph(
            Tone::Warning,
            vec![
                Inline::Text("x & y ".into()),
                Inline::Strong("**not markdown**".into()),
                Inline::Code("<c>".into()),
            ],
        ));
        let html = render(&p);
        assert!(html.contains("<title>a&lt;b</title>"));
        assert!(html.contains(
            "<p class=\"estimate\">x &amp; y <strong>**not markdown**</strong><code>&lt;c&gt;</code></p>"
        ));
    }

    #[test]
    fn a_figure_without_charts_leaves_nothing() {
        let mut p = Page::default();
        p.charts(vec![]);
        assert!(!render(&p).contains("<div class=\"charts\">"));
    }
}
