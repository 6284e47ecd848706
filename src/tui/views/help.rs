//! The `?` overlay: every key, by view.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use crate::tui::app::App;
use crate::tui::theme;

const KEYS: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous view"),
    ("1 … 5", "Overview, Experts, Training, Projections, Log"),
    ("?", "this help (any key closes it)"),
    (
        "q, Ctrl-C",
        "stop the run cleanly (summary written), then quit",
    ),
    ("", ""),
    ("Replay", ""),
    ("← / →", "move the time cursor by 1% of the run"),
    ("PgUp / PgDn", "move it by 10%"),
    ("Home / End", "start / end of the run"),
    ("", ""),
    ("Projections", ""),
    ("↑ / ↓", "select a chip (the detail line follows it)"),
    ("c / C", "halve / double the chips of the full-size run"),
    ("u / U", "utilisation −/+ 5 points (all chips)"),
    ("p / P", "PUE −/+ 0.05"),
    ("g / G", "grid intensity −/+ 0.05 kg CO2e/kWh"),
    ("m", "next full-size comparison: GLaM, Mixtral, DeepSeek"),
    ("r", "back to the profiles' defaults"),
    ("", ""),
    ("Log", ""),
    ("↑ / ↓ / End", "scroll"),
];

pub fn draw(_app: &App, area: Rect, buf: &mut Buffer) {
    let w = 76.min(area.width);
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    Clear.render(r, buf);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            if what.is_empty() {
                Line::styled(k.to_string(), theme::header())
            } else {
                Line::from(vec![
                    Span::styled(format!("  {k:<16}"), theme::key()),
                    Span::raw(what.to_string()),
                ])
            }
        })
        .collect();
    Paragraph::new(lines)
        .block(Block::bordered().title(" keys (any key closes) "))
        .render(r, buf);
}
