//! Drawing: the frame around every view (tabs, status, keys), the views, the help overlay and the
//! too-small message. Nothing here changes the app.

mod charts;
mod experts;
mod help;
mod log;
mod overview;
pub(crate) mod projections;
mod training;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs, Widget, Wrap};
use ratatui::Frame;

use super::app::{App, Status, View};
use super::theme;
use crate::units::Seconds;
use crate::vocab::EnergySource;

/// The smallest terminal the views are laid out for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Draw the whole dashboard into the frame.
pub fn render(app: &App, frame: &mut Frame) {
    draw(app, frame.area(), frame.buffer_mut());
}

/// Draw the whole dashboard into `area` of `buf` (what [`render`] does; usable without a terminal).
pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return too_small(area, buf);
    }
    let [tabs, status, body, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    tab_bar(app, tabs, buf);
    status_line(app, status, buf);
    match app.view {
        View::Overview => overview::draw(app, body, buf),
        View::Experts => experts::draw(&app.state, body, buf),
        View::Training => training::draw(&app.state, body, buf),
        View::Projections => projections::draw(app, body, buf),
        View::Log => log::draw(app, body, buf),
    }
    key_line(app, keys, buf);
    if app.help {
        help::draw(app, area, buf);
    }
}

fn too_small(area: Rect, buf: &mut Buffer) {
    let text = vec![
        Line::styled("Terminal too small", theme::header()),
        Line::from(format!(
            "{}×{} here; the dashboard needs at least {MIN_WIDTH}×{MIN_HEIGHT}.",
            area.width, area.height
        )),
        Line::from("Enlarge the window, or press q to quit."),
    ];
    let h = (text.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    Paragraph::new(text)
        .centered()
        .wrap(Wrap { trim: true })
        .render(Rect::new(area.x, y, area.width, h), buf);
}

fn tab_bar(app: &App, area: Rect, buf: &mut Buffer) {
    let titles: Vec<String> = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()))
        .collect();
    let tabs_w: usize = titles.iter().map(|t| t.chars().count() + 3).sum();
    let run = app.state.header.as_ref().map_or_else(
        || "waiting for the run…".to_string(),
        |h| format!("run {}", h.id),
    );
    let right = format!(" sparsewatt · {run} ");
    // The run's name gives way to the tabs on a narrow terminal.
    let right_w = if tabs_w + right.chars().count() <= area.width as usize {
        right.chars().count() as u16
    } else {
        0
    };
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right_w)]).areas(area);
    Tabs::new(titles)
        .select(app.view.index())
        .highlight_style(theme::selected())
        .render(left_area, buf);
    Span::styled(right, theme::dim()).render(right_area, buf);
}

fn status_line(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = match &app.status {
        Status::Waiting => vec![Span::styled("… starting", theme::dim())],
        Status::Running => vec![Span::styled("● running", theme::title())],
        Status::Stopping => vec![Span::styled(
            "■ stopping… (finishing the step)",
            theme::warn(),
        )],
        Status::Finished => vec![Span::styled("✓ finished", theme::title())],
        Status::Failed(m) => vec![Span::styled(format!("✗ failed: {m}"), theme::error())],
        Status::Disconnected => vec![Span::styled("✗ the run stopped sending", theme::error())],
        Status::Replay => vec![Span::styled("▶ replay", theme::title())],
    };
    match app.replay_cursor() {
        Some(c) => spans.push(Span::raw(format!(
            " {} of {}",
            Seconds(c.cursor_s),
            Seconds(c.end_s)
        ))),
        None => spans.push(Span::raw(format!(" {}", Seconds(app.state.t_s)))),
    }
    spans.push(Span::raw("  energy "));
    spans.extend(source_spans(app));
    if let Some(c) = app.replay_cursor() {
        let cut = if c.complete() { "" } else { ", cut off" };
        spans.push(Span::styled(
            format!("  records {}/{}{cut}", c.shown, c.total()),
            theme::dim(),
        ));
    }
    Line::from(spans).render(area, buf);
}

/// The sensor source, plainly: an estimate is flagged as one.
fn source_spans(app: &App) -> Vec<Span<'static>> {
    let scope = app
        .state
        .header
        .as_ref()
        .map(|h| format!(" ({})", h.sensor.scope))
        .unwrap_or_default();
    match app.state.source() {
        Some(EnergySource::Estimate) => vec![
            Span::styled(" ESTIMATE ", theme::estimate_badge()),
            Span::styled(format!(" not measured{scope}"), theme::warn()),
        ],
        Some(s) => vec![
            Span::styled(
                format!(" measured: {} ", s.label()),
                theme::measured_badge(),
            ),
            Span::raw(scope),
        ],
        None => vec![Span::styled("no sensor yet", theme::dim())],
    }
}

fn key_line(app: &App, area: Rect, buf: &mut Buffer) {
    let mut keys: Vec<(&str, &str)> = vec![("Tab/1-5", "views"), ("?", "help")];
    if app.replay_cursor().is_some() {
        keys.extend([
            ("←/→", "cursor 1%"),
            ("PgUp/PgDn", "10%"),
            ("Home/End", "ends"),
        ]);
    }
    match app.view {
        View::Projections => keys.extend([
            ("↑/↓", "chip"),
            ("c/C", "chips"),
            ("u/U", "util"),
            ("p/P", "PUE"),
            ("g/G", "grid"),
            ("r", "reset"),
        ]),
        View::Log => keys.push(("↑/↓", "scroll")),
        _ => {}
    }
    let quit = match app.status {
        Status::Running | Status::Waiting => "stop the run",
        Status::Stopping => "stopping…",
        _ => "quit",
    };
    keys.push(("q", quit));
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(format!(" {k}"), theme::key()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans).render(area, buf);
}

/// The text of a buffer, one line per row, trailing spaces trimmed (for snapshots and tests).
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
