//! The dashboard drawn off-screen (ratatui's TestBackend) from the recorded fixture run: each view
//! as an `insta` snapshot (tests/snapshots/tui_render__*.snap; a changed render fails, and
//! `cargo insta review` shows the diff and accepts it: docs/dashboard.md), key handling, the replay
//! cursor, and the too-small message.

#[path = "common/tui_fixture.rs"]
mod tui_fixture;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use sparsewatt::project::summarize_run;
use sparsewatt::runlog::{read_run, summarize, Record, RunData};
use sparsewatt::tui::{buffer_text, render, App, Status, View};
use sparsewatt::vocab::{Phase, Role};
use sparsewatt::workload::RunEvent;

/// `UPDATE_FIXTURE=1` regenerates the fixture run folder from its generator.
fn updating_fixture() -> bool {
    std::env::var_os("UPDATE_FIXTURE").is_some_and(|v| v == "1")
}

fn run() -> RunData {
    read_run(&tui_fixture::fixture_dir()).expect("fixture run folder")
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(app, f)).unwrap();
    buffer_text(t.backend().buffer())
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn the_fixture_is_what_its_generator_writes() {
    let (header, records) = tui_fixture::files();
    let dir = tui_fixture::fixture_dir();
    if updating_fixture() {
        // Other tests read the fixture meanwhile: replace each file in one rename.
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [("run.json", &header), ("records.jsonl", &records)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }
    let on_disk = std::fs::read_to_string(dir.join("records.jsonl")).unwrap();
    assert!(
        on_disk == records,
        "tests/data/run-small is stale (UPDATE_FIXTURE=1 regenerates it)"
    );
    let run = run();
    assert!(run.complete() && run.unreadable_lines == 0);
}

#[test]
fn every_view_matches_its_snapshot_at_140_by_45() {
    let mut app = App::replay(run());
    for v in View::ALL {
        app.view = v;
        let name = format!("{}-140x45", v.title().to_lowercase());
        insta::assert_snapshot!(name, screen(&app, 140, 45));
    }
    app.view = View::Overview;
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help-140x45", screen(&app, 140, 45));
}

#[test]
fn the_overview_at_the_smallest_size_matches_its_snapshot() {
    let app = App::replay(run());
    insta::assert_snapshot!("overview-80x24", screen(&app, 80, 24));
}

#[test]
fn the_overview_shows_both_models_energy_per_token_and_the_source() {
    let app = App::replay(run());
    let s = screen(&app, 140, 45);
    for want in [
        "sparse",
        "dense",
        "glam-tiny",
        "dense-tiny",
        "J/tok",
        "measured: rapl",
    ] {
        assert!(s.contains(want), "{want:?} not on the Overview:\n{s}");
    }
    // The J/tok of the sparse train row is the summary's, formatted (an independent summarize).
    let sum = summarize(&run().records);
    let j = sum
        .model(Role::Sparse)
        .unwrap()
        .phase(Phase::Train)
        .unwrap();
    let mean = j.joules_per_token.as_ref().unwrap().total.mean;
    let shown = sparsewatt::units::si(mean, "J");
    assert!(s.contains(&shown), "{shown} not on screen");
}

#[test]
fn a_terminal_too_small_says_so_and_a_resize_draws_again() {
    let app = App::replay(run());
    let mut t = Terminal::new(TestBackend::new(60, 20)).unwrap();
    t.draw(|f| render(&app, f)).unwrap();
    let small = buffer_text(t.backend().buffer());
    assert!(
        small.contains("Terminal too small") && small.contains("60×20"),
        "{small}"
    );
    assert!(small.contains("80×24"), "{small}");
    t.backend_mut().resize(140, 45);
    t.resize(ratatui::layout::Rect::new(0, 0, 140, 45)).unwrap();
    t.draw(|f| render(&app, f)).unwrap();
    let big = buffer_text(t.backend().buffer());
    assert!(
        !big.contains("too small") && big.contains("Overview"),
        "{big}"
    );
}

#[test]
fn tab_cycles_through_every_view_and_digits_jump() {
    let mut app = App::replay(run());
    let mut seen = vec![app.view];
    for _ in 0..View::ALL.len() {
        key(&mut app, KeyCode::Tab);
        seen.push(app.view);
    }
    assert_eq!(&seen[..5], &View::ALL[..]);
    assert_eq!(seen[5], View::Overview, "Tab wraps around");
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Log);
    key(&mut app, KeyCode::Char('3'));
    assert_eq!(app.view, View::Training);
    // The help overlay swallows the next key instead of acting on it.
    key(&mut app, KeyCode::Char('?'));
    assert!(app.help);
    key(&mut app, KeyCode::Tab);
    assert!(!app.help);
    assert_eq!(app.view, View::Training);
}

#[test]
fn q_in_replay_quits_at_once() {
    let mut app = App::replay(run());
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_exit());
}

fn live_events() -> Vec<RunEvent> {
    let run = run();
    let mut ev = vec![RunEvent::Started(Box::new(run.header.clone()))];
    ev.extend(
        run.records
            .iter()
            .cloned()
            .map(|r| RunEvent::Record(Box::new(r))),
    );
    ev
}

#[test]
fn q_while_running_asks_the_workload_to_stop_and_waits_for_its_summary() {
    let mut app = App::live();
    let events = live_events();
    let mut it = events.into_iter();
    for e in it.by_ref().take(40) {
        app.on_event(e);
    }
    assert_eq!(app.status, Status::Running);
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.stop_requested() && !app.should_exit());
    assert_eq!(app.status, Status::Stopping);
    assert!(screen(&app, 140, 45).contains("stopping"));
    for e in it {
        app.on_event(e);
    }
    assert!(!app.should_exit(), "records alone do not end the wait");
    app.on_event(RunEvent::Finished(Box::new(summarize(&run().records))));
    assert!(app.should_exit());
}

#[test]
fn a_run_that_finishes_on_its_own_stays_on_screen_until_q() {
    let mut app = App::live();
    for e in live_events() {
        app.on_event(e);
    }
    app.on_event(RunEvent::Finished(Box::new(summarize(&run().records))));
    assert!(!app.should_exit() && !app.stop_requested());
    assert!(screen(&app, 140, 45).contains("finished"));
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_exit() && !app.stop_requested());
}

#[test]
fn a_closed_channel_ends_the_wait_after_q() {
    let mut app = App::live();
    app.on_event(live_events().remove(0));
    key(&mut app, KeyCode::Char('q'));
    app.on_disconnect();
    assert!(app.should_exit());
}

#[test]
fn the_live_summary_equals_summarize_of_the_records_received() {
    let mut app = App::live();
    let events = live_events();
    let n = 120;
    for e in events.into_iter().take(n) {
        app.on_event(e);
    }
    app.tick(std::time::Instant::now());
    let records: Vec<Record> = run().records[..n - 1].to_vec();
    // The summary a report would build from the same header and records (utilisation included).
    assert_eq!(
        app.state.summary(),
        Some(&summarize_run(&run().header, &records))
    );
}

#[test]
fn the_replay_cursor_shows_only_the_records_up_to_it() {
    let run = run();
    let mut app = App::replay(run.clone());
    key(&mut app, KeyCode::Home);
    assert!(app.state.steps.is_empty());
    let at = 5.0;
    app.set_cursor(at);
    let upto: Vec<Record> = run
        .records
        .iter()
        .take_while(|r| r.t_s().is_none_or(|t| t <= at))
        .cloned()
        .collect();
    assert!(upto.len() < run.records.len());
    assert_eq!(
        app.state.summary(),
        Some(&summarize_run(&run.header, &upto))
    );
    let c = app.replay_cursor().unwrap();
    assert_eq!(c.shown, upto.len());
    // → moves forward by 1% of the run, ← back, End to the whole run.
    let before = c.cursor_s;
    key(&mut app, KeyCode::Right);
    let c = app.replay_cursor().unwrap();
    assert!((c.cursor_s - before - c.end_s / 100.0).abs() < 1e-9);
    key(&mut app, KeyCode::End);
    assert_eq!(
        app.state.summary(),
        Some(&summarize_run(&run.header, &run.records))
    );
    let mut app = App::replay(run);
    app.set_cursor(at);
    insta::assert_snapshot!("overview-replay-at-5s-140x45", screen(&app, 140, 45));
}

/// The figures of one chip's row in the full-size table, as drawn.
fn glam_row(screen: &str, chip: &str) -> String {
    screen
        .lines()
        .find(|l| l.starts_with(&format!("│{chip} ")))
        .unwrap_or_else(|| panic!("no {chip} row:\n{screen}"))
        .to_string()
}

#[test]
fn what_if_keys_change_the_projection_table_at_once() {
    let mut app = App::replay(run());
    key(&mut app, KeyCode::Char('4'));
    let before = screen(&app, 140, 45);
    assert!(before.contains("tpu-v4"), "{before}");
    let row0 = glam_row(&before, "tpu-v4");
    // Doubling the chips halves the time; the energy stays.
    key(&mut app, KeyCode::Char('C'));
    let s = screen(&app, 140, 45);
    assert!(s.contains("2048 (full-size run)"), "{s}");
    let row1 = glam_row(&s, "tpu-v4");
    assert_ne!(row0, row1);
    let w = app.what_if.clone();
    let rows = sparsewatt::tui::glam_rows(&app.projection, &w);
    let v4 = rows.iter().find(|r| r.hardware == "tpu-v4").unwrap();
    let p = v4.sparse.as_ref().unwrap();
    assert!(
        row1.contains(&sparsewatt::units::duration(p.seconds)),
        "{row1}"
    );
    assert!(
        row1.contains(&sparsewatt::units::si(p.energy_j / 3600.0, "Wh")),
        "{row1}"
    );
    // PUE, utilisation and grid each change the row.
    for k in ['P', 'U', 'G'] {
        let before = glam_row(&screen(&app, 140, 45), "tpu-v4");
        key(&mut app, KeyCode::Char(k));
        assert_ne!(
            before,
            glam_row(&screen(&app, 140, 45), "tpu-v4"),
            "key {k}"
        );
    }
    // ↓ moves the highlighted chip; r restores the defaults on it.
    key(&mut app, KeyCode::Down);
    assert_eq!(app.what_if.selected, 1);
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(glam_row(&screen(&app, 140, 45), "tpu-v4"), row0);
    // The keys act only in the Projections view.
    key(&mut app, KeyCode::Char('1'));
    key(&mut app, KeyCode::Char('C'));
    assert_eq!(app.what_if.chips, sparsewatt::tui::GLAM_CHIPS);
}
