//! The dashboard's application state: the run as known so far ([`RunState`]), which view is shown,
//! the what-if settings of the Projections view, the replay cursor, and the key bindings.
//! Rendering reads an `&App` and never changes it.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::RunState;
use super::whatif::{ProjectionInputs, WhatIf};
use crate::runlog::{Record, RunData};
use crate::workload::RunEvent;

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Experts,
    Training,
    Projections,
    Log,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Overview,
        View::Experts,
        View::Training,
        View::Projections,
        View::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Experts => "Experts",
            View::Training => "Training",
            View::Projections => "Projections",
            View::Log => "Log",
        }
    }

    pub fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    fn previous(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// Where the run stands, as the dashboard sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Live, before the run's header arrived.
    Waiting,
    Running,
    /// The user asked to stop; waiting for the workload to finish its step and write the summary.
    Stopping,
    Finished,
    Failed(String),
    /// The run's channel closed without a final event.
    Disconnected,
    /// Showing a run folder.
    Replay,
}

/// A run folder's records and the cursor: the views show the records up to `cursor_s`.
#[derive(Debug, Clone)]
pub struct ReplayCursor {
    run: RunData,
    /// Each record's time, made non-decreasing (idle records take their predecessor's).
    times: Vec<f64>,
    pub end_s: f64,
    pub cursor_s: f64,
    /// Records up to the cursor.
    pub shown: usize,
}

impl ReplayCursor {
    pub fn total(&self) -> usize {
        self.run.records.len()
    }

    pub fn unreadable_lines(&self) -> usize {
        self.run.unreadable_lines
    }

    pub fn complete(&self) -> bool {
        self.run.complete()
    }
}

/// The peak of the machine the run is on, for "utilisation of the machine's peak".
#[derive(Debug, Clone, PartialEq)]
pub struct MachinePeak {
    /// The hardware profile the peak comes from.
    pub hardware: String,
    pub flops_per_s: f64,
    /// The precision of that peak ("fp32", "bf16").
    pub precision: String,
}

/// How long a live summary may lag the records (summarising is linear in the steps so far).
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

pub struct App {
    pub state: RunState,
    pub view: View,
    pub help: bool,
    pub status: Status,
    pub what_if: WhatIf,
    /// Lines scrolled up from the newest in the Log view.
    pub log_scroll: usize,
    /// Absent when the run names no hardware profile (utilisation is then not shown).
    pub machine_peak: Option<MachinePeak>,
    /// Hardware and full-size model profiles for the Projections view.
    pub projection: ProjectionInputs,
    replay: Option<ReplayCursor>,
    stop_requested: bool,
    exit: bool,
    last_summary: Option<Instant>,
}

impl App {
    /// A dashboard for a live run: the state fills from [`App::on_event`].
    pub fn live() -> App {
        let mut app = App::with_state(RunState::new(None), Status::Waiting, None);
        app.note_projection_errors();
        app
    }

    /// A dashboard over a run folder, with the cursor at its end.
    pub fn replay(run: RunData) -> App {
        let mut t = 0.0f64;
        let times = run
            .records
            .iter()
            .map(|r| {
                t = t.max(r.t_s().unwrap_or(t));
                t
            })
            .collect::<Vec<f64>>();
        let end_s = times.last().copied().unwrap_or(0.0);
        let cursor = ReplayCursor {
            shown: run.records.len(),
            times,
            end_s,
            cursor_s: end_s,
            run,
        };
        let mut app = App::with_state(RunState::new(None), Status::Replay, Some(cursor));
        app.rebuild_to_cursor();
        app
    }

    fn with_state(state: RunState, status: Status, replay: Option<ReplayCursor>) -> App {
        App {
            state,
            view: View::Overview,
            help: false,
            status,
            what_if: WhatIf::default(),
            log_scroll: 0,
            machine_peak: None,
            projection: ProjectionInputs::load(),
            replay,
            stop_requested: false,
            exit: false,
            last_summary: None,
        }
    }

    pub fn replay_cursor(&self) -> Option<&ReplayCursor> {
        self.replay.as_ref()
    }

    /// True once the user asked the workload to stop (`q` or Ctrl-C while it runs).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// True when the dashboard should restore the terminal and return.
    pub fn should_exit(&self) -> bool {
        self.exit
    }

    /// Take one event of the live run.
    pub fn on_event(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Started(h) => {
                self.machine_peak = self.peak_of(&h);
                self.state.set_header(*h);
                if self.status == Status::Waiting {
                    self.status = Status::Running;
                }
            }
            RunEvent::Record(r) => self.state.apply(&r),
            RunEvent::Finished(s) => {
                self.state.set_summary(*s);
                self.end(Status::Finished);
            }
            RunEvent::Failed(m) => {
                self.state.log.push(super::state::LogLine {
                    t_s: Some(self.state.t_s),
                    level: "error".into(),
                    message: format!("run failed: {m}"),
                });
                self.end(Status::Failed(m));
            }
        }
    }

    /// The peak FLOP/s of the machine a run was on, from its hardware profile.
    fn peak_of(&self, h: &crate::runlog::RunHeader) -> Option<MachinePeak> {
        let hw = self.projection.machine(h)?;
        Some(MachinePeak {
            hardware: hw.name.clone(),
            flops_per_s: hw.peak(),
            precision: hw.default_precision.label().to_string(),
        })
    }

    fn note_projection_errors(&mut self) {
        for e in &self.projection.errors {
            self.state.log.push(super::state::LogLine {
                t_s: None,
                level: "warn".into(),
                message: e.clone(),
            });
        }
    }

    /// The run's channel closed.
    pub fn on_disconnect(&mut self) {
        if !matches!(self.status, Status::Finished | Status::Failed(_)) {
            self.end(Status::Disconnected);
        }
    }

    fn end(&mut self, status: Status) {
        // A user who asked to quit has waited for this; one who did not reads the final state.
        if self.status == Status::Stopping {
            self.exit = true;
        }
        self.status = status;
    }

    /// Recompute the live summary when records arrived and the last one is over a second old.
    pub fn tick(&mut self, now: Instant) {
        let due = self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY);
        if self.state.summary_stale() && due {
            self.state.refresh_summary();
            self.last_summary = Some(now);
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if ctrl_c || key.code == KeyCode::Char('q') {
            return self.quit();
        }
        if self.help {
            // Any other key closes the overlay.
            self.help = false;
            return;
        }
        match key.code {
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.view = self.view.next(),
            KeyCode::BackTab => self.view = self.view.previous(),
            KeyCode::Char(c @ '1'..='5') => {
                self.view = View::ALL[c as usize - '1' as usize];
            }
            _ => {
                if self.replay.is_some() && self.cursor_key(key.code) {
                    return;
                }
                match self.view {
                    View::Projections => {
                        self.what_if.on_key(key.code, &self.projection.hardware);
                    }
                    View::Log => self.log_key(key.code),
                    _ => {}
                }
            }
        }
    }

    /// `q`: stop a live run (the dashboard closes when it has ended), or close.
    pub fn quit(&mut self) {
        match self.status {
            Status::Waiting | Status::Running => {
                self.stop_requested = true;
                self.status = Status::Stopping;
            }
            Status::Stopping => {}
            Status::Finished | Status::Failed(_) | Status::Disconnected | Status::Replay => {
                self.exit = true
            }
        }
    }

    fn log_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Up => self.log_scroll += 1,
            KeyCode::Down => self.log_scroll = self.log_scroll.saturating_sub(1),
            KeyCode::End => self.log_scroll = 0,
            _ => {}
        }
    }

    /// Replay cursor keys: ←/→ move 1% of the run, PgUp/PgDn 10%, Home/End to either end.
    /// Returns whether the key was one of them.
    fn cursor_key(&mut self, code: KeyCode) -> bool {
        let Some(c) = &self.replay else {
            return false;
        };
        let step = c.end_s / 100.0;
        let target = match code {
            KeyCode::Left => c.cursor_s - step,
            KeyCode::Right => c.cursor_s + step,
            KeyCode::PageUp => c.cursor_s - 10.0 * step,
            KeyCode::PageDown => c.cursor_s + 10.0 * step,
            KeyCode::Home => 0.0,
            KeyCode::End => c.end_s,
            _ => return false,
        };
        self.set_cursor(target);
        true
    }

    /// Move the replay cursor to `t_s` seconds (clamped to the run) and rebuild the state.
    pub fn set_cursor(&mut self, t_s: f64) {
        if let Some(c) = &mut self.replay {
            c.cursor_s = t_s.clamp(0.0, c.end_s);
            // At the end every record shows, idle and header-less ones included.
            c.shown = if c.cursor_s >= c.end_s {
                c.times.len()
            } else {
                c.times.partition_point(|&t| t <= c.cursor_s)
            };
        }
        self.rebuild_to_cursor();
    }

    fn rebuild_to_cursor(&mut self) {
        let Some(c) = &self.replay else {
            return;
        };
        let mut state = RunState::new(Some(c.run.header.clone()));
        for r in &c.run.records[..c.shown] {
            state.apply(r);
        }
        if c.run.unreadable_lines > 0 && c.shown == c.run.records.len() {
            state.log.push(super::state::LogLine {
                t_s: None,
                level: "warn".into(),
                message: format!(
                    "{} line(s) of records.jsonl could not be read (a run cut off mid-write)",
                    c.run.unreadable_lines
                ),
            });
        }
        state.refresh_summary();
        self.machine_peak = self.peak_of(&c.run.header);
        self.state = state;
        self.note_projection_errors();
    }

    /// The records of the run folder being replayed (all of them, not only those up to the cursor).
    pub fn replay_records(&self) -> Option<&[Record]> {
        self.replay.as_ref().map(|c| c.run.records.as_slice())
    }
}
