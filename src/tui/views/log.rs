//! Log: the run's events and warnings (sensor fallbacks, NaN losses, dropped tokens), newest last.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget};

use crate::tui::app::App;
use crate::tui::theme;

pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    let log = &app.state.log;
    let warnings = log.iter().filter(|l| l.is_warning()).count();
    let dropped: u64 = app.state.experts.values().map(|x| x.dropped).sum();
    let mut title = format!(" log · {} lines · {warnings} warnings", log.len());
    if dropped > 0 {
        title.push_str(&format!(
            " · {dropped} expert assignments dropped (see Experts)"
        ));
    }
    title.push(' ');
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    block.render(area, buf);
    let h = inner.height as usize;
    let end = log.len().saturating_sub(
        app.log_scroll
            .min(log.len().saturating_sub(h.min(log.len()))),
    );
    let start = end.saturating_sub(h);
    let lines: Vec<Line> = log[start..end]
        .iter()
        .map(|l| {
            let style = match l.level.as_str() {
                "error" => theme::error(),
                "warn" | "warning" => theme::warn(),
                _ => Style::new(),
            };
            let t = l
                .t_s
                .map_or("        ".to_string(), |t| format!("{t:>7.1}s"));
            Line::from(vec![
                Span::styled(t, theme::dim()),
                Span::styled(format!(" {:<5} ", l.level), style),
                Span::styled(l.message.clone(), style),
            ])
        })
        .collect();
    if lines.is_empty() {
        Paragraph::new(Line::styled("Nothing logged yet.", theme::dim())).render(inner, buf);
    } else {
        Paragraph::new(lines).render(inner, buf);
    }
}
