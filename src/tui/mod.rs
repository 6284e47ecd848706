//! The live dashboard: state, views and key handling (the only module that knows ratatui).
//!
//! The UI thread owns the [`App`]; the workload sends [`RunEvent`]s over a channel and never waits
//! for the dashboard: the loop drains the channel without blocking, polls keys with a short
//! timeout, and redraws at least [`MIN_FPS`] times a second.

mod app;
pub mod format;
mod state;
mod theme;
mod views;
mod whatif;

pub use app::{App, MachinePeak, ReplayCursor, Status, View};
pub use state::{imbalance, ExpertLoad, LogLine, LossPoint, RunState, TrainingCurve};
pub use views::{buffer_text, draw, render, MIN_HEIGHT, MIN_WIDTH};
pub use whatif::{
    glam_inference, glam_rows, machine_calibration, measured_rows, ProjectionInputs, ProjectionRow,
    WhatIf, GLAM_CHIPS, GLAM_TOKENS,
};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event};
use ratatui::DefaultTerminal;

use crate::runlog::RunData;
use crate::workload::RunEvent;

/// The dashboard redraws at least this often while nothing happens.
pub const MIN_FPS: u32 = 5;
const FRAME: Duration = Duration::from_millis(1000 / MIN_FPS as u64);

/// Show a live run until it ends and the user quits. `q` or Ctrl-C sets `stop` (the workload
/// finishes its step and sends `Finished`); the dashboard keeps drawing "stopping…" until it
/// arrives or the channel closes, then restores the terminal and returns.
pub fn dashboard(rx: Receiver<RunEvent>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut app = App::live();
    let mut terminal = init_terminal()?;
    let result = run_loop(&mut terminal, &mut app, |app| {
        drain(&rx, app);
        if app.stop_requested() {
            stop.store(true, Ordering::SeqCst);
        } else if stop.load(Ordering::SeqCst) {
            // Stopped from outside (SIGTERM, SIGHUP): as if the user pressed `q`.
            app.quit();
        }
    });
    ratatui::restore();
    result
}

/// Leave raw mode and the alternate screen (for a process about to exit from elsewhere).
pub fn restore_terminal() {
    ratatui::restore();
}

/// Raw mode, the alternate screen and a panic hook that restores the terminal; restored at once
/// if setting up fails halfway.
fn init_terminal() -> anyhow::Result<DefaultTerminal> {
    ratatui::try_init().map_err(|e| {
        ratatui::restore();
        anyhow::Error::new(e).context("setting up the terminal for the dashboard")
    })
}

/// Take every event waiting on the channel, without blocking.
fn drain(rx: &Receiver<RunEvent>, app: &mut App) {
    loop {
        match rx.try_recv() {
            Ok(ev) => app.on_event(ev),
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => return app.on_disconnect(),
        }
    }
}

/// Show a run folder with a time cursor until the user quits.
pub fn replay(run: RunData) -> anyhow::Result<()> {
    replay_app(App::replay(run))
}

/// Show an app made with [`App::replay`] (its cursor possibly moved) until the user quits.
pub fn replay_app(mut app: App) -> anyhow::Result<()> {
    let mut terminal = init_terminal()?;
    let result = run_loop(&mut terminal, &mut app, |_| {});
    ratatui::restore();
    result
}

/// Receive, update, draw, until the app says to exit. `feed` brings in what happened outside.
fn run_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    mut feed: impl FnMut(&mut App),
) -> anyhow::Result<()> {
    loop {
        feed(app);
        app.tick(Instant::now());
        if app.should_exit() {
            return Ok(());
        }
        terminal.draw(|f| render(app, f))?;
        // Keys are answered at once; otherwise wake up for the next frame.
        if event::poll(FRAME)? {
            match event::read()? {
                Event::Key(k) => app.on_key(k),
                Event::Resize(..) => terminal.autoresize()?,
                _ => {}
            }
            // Take every key already typed before drawing again.
            while event::poll(Duration::ZERO)? {
                if let Event::Key(k) = event::read()? {
                    app.on_key(k);
                }
            }
        }
    }
}

/// The CPU time one frame of the app costs at `width`×`height`: draws `frames` frames through a
/// ratatui terminal on an off-screen backend (widgets, layout and the diff against the previous
/// frame; not the bytes a real terminal would be sent) and returns seconds per frame, measured
/// with the thread's CPU clock where the platform has one, wall clock otherwise.
pub fn draw_cost(app: &App, width: u16, height: u16, frames: u32) -> anyhow::Result<f64> {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))?;
    let frames = frames.max(1);
    let start = cpu_time_s();
    let wall = Instant::now();
    for _ in 0..frames {
        terminal.draw(|f| render(app, f))?;
    }
    let spent = match (start, cpu_time_s()) {
        (Some(a), Some(b)) => b - a,
        _ => wall.elapsed().as_secs_f64(),
    };
    Ok(spent / frames as f64)
}

/// CPU time of the calling thread in seconds, from /proc/thread-self/schedstat (Linux, in
/// nanoseconds); `None` elsewhere.
fn cpu_time_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}
