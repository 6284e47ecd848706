//! Projections: the measured workload and its full-size GLaM counterpart on every hardware profile.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget};

use crate::tui::app::App;
use crate::tui::theme;

pub fn draw(_app: &App, area: Rect, buf: &mut Buffer) {
    Paragraph::new(Line::styled("Projections: not built yet.", theme::dim())).render(area, buf);
}
