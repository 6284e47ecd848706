//! `run --metrics` scraped by a real Prometheus (Debian's package; scripts/install-test-tools):
//! the train-phase tokens and joules it stores equal the totals of the run's records, every step
//! counted, warm-up included. `promtool check metrics` accepts the output. Also `replay
//! --metrics`, and the errors of a bad address or a taken port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sparsewatt::runlog::{read_run, Record};

#[path = "common/small_run.rs"]
mod small_run;
use small_run::SMALL_SHAPES;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The body of an HTTP/1.0 GET, or `None` when nothing answers with 200.
fn get(port: u16, path_and_query: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sum of the values of an instant query's result; `None` while it holds no series.
fn query_sum(prom_port: u16, promql: &str) -> Option<f64> {
    let body = get(
        prom_port,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    result
        .iter()
        .map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .sum()
}

/// Whether a `/metrics` page counts train tokens yet.
fn counts_train_tokens(page: &str) -> bool {
    page.lines().any(|l| {
        l.starts_with("sparsewatt_tokens_total{")
            && l.contains("phase=\"train\"")
            && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
    })
}

/// The train-phase tokens and joules of a run's step records, warm-up included.
fn train_totals(dir: &Path) -> (f64, f64) {
    let run = read_run(dir).unwrap();
    let train = run
        .steps()
        .filter(|s| s.phase == sparsewatt::vocab::Phase::Train);
    train.fold((0.0, 0.0), |(t, j), s| {
        (
            t + s.tokens as f64,
            j + s.energy.as_ref().map_or(0.0, |e| e.joules),
        )
    })
}

/// A short run: 6 train steps (2 of them warm-up), 2 prefill and 2 decode steps per model.
fn short_run(dir: &Path, metrics_addr: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparsewatt"));
    c.args(SMALL_SHAPES)
        .args(["--steps", "6", "--warmup", "2", "--eval-every", "1000"])
        .args(["--prefill-steps", "2", "--decode-steps", "2"])
        .args(["--idle-seconds", "0", "--sensor", "estimate"])
        .args(["--metrics", metrics_addr, "--out"])
        .arg(dir);
    c
}

/// Prometheus scraping `127.0.0.1:{scrape_port}` every 500 ms, its files in `dir`, ready to
/// answer queries: the process (killed when dropped) and its port.
fn start_prometheus(dir: &Path, scrape_port: u16) -> (Killed, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let pp = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}\n\
             scrape_configs:\n  - job_name: sparsewatt\n    \
             static_configs: [{{targets: [\"127.0.0.1:{scrape_port}\"]}}]\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pp}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("prometheus starts"),
    );

    // Prometheus ready before the run starts, so its scrapes are not raced by its start-up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(pp, "/-/ready").is_none() {
        assert!(Instant::now() < deadline, "prometheus not ready after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (prometheus, pp)
}

#[test]
fn prometheus_scrapes_the_train_tokens_and_joules_of_the_records() {
    if !on_path("prometheus") || !on_path("promtool") {
        println!(
            "SKIPPED: no `prometheus`/`promtool` on PATH (scripts/install-test-tools installs \
             Debian's prometheus package)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mp = free_port();
    // An HA pair: two Prometheus servers scrape the run, which serves until both have read its
    // final values (`--metrics-scrapers 2`).
    let (_first, pp) = start_prometheus(&tmp.path().join("prometheus-a"), mp);
    let (_second, pp2) = start_prometheus(&tmp.path().join("prometheus-b"), mp);

    let dir = tmp.path().join("run");
    let mut run = Killed(
        short_run(&dir, &format!("127.0.0.1:{mp}"))
            .args(["--metrics-scrapers", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // One scrape of our own, once train steps are counted, to lint. Then only Prometheus
    // scrapes: the run lingers until one scrape has read its final values, and a scrape of ours
    // would end that wait before Prometheus' next one (CI saw Prometheus miss the last step).
    let mut page = None;
    let status = loop {
        if page.is_none() {
            page = get(mp, "/metrics").filter(|p| counts_train_tokens(p));
        }
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let page = page.expect("/metrics answered while the run lived");

    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let (tokens, joules) = train_totals(&dir);
    assert!(tokens > 0.0 && joules > 0.0, "{tokens} tokens, {joules} J");
    // The run lingered until both had scraped its final values; Prometheus stores a scrape a
    // moment after it answered.
    let q = |name: &str| format!("sum(max_over_time({name}{{phase=\"train\"}}[10m]))");
    for port in [pp, pp2] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut got_t, mut got_j) = (None, None);
        while Instant::now() < deadline {
            got_t = query_sum(port, &q("sparsewatt_tokens_total"));
            got_j = query_sum(port, &q("sparsewatt_energy_joules_total"));
            if got_t == Some(tokens) && got_j.is_some_and(|j| (j - joules).abs() <= 1e-9 * joules) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            got_t == Some(tokens) && got_j.is_some_and(|j| (j - joules).abs() <= 1e-9 * joules),
            "Prometheus on {port} holds {got_t:?} train tokens and {got_j:?} J; the records \
             {tokens} and {joules} J\n{stderr}"
        );
    }
}

#[test]
fn replay_serves_a_finished_runs_totals_and_bad_addresses_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // Nothing but this test scrapes the run, until it exits (it lingers until a scrape has read
    // its final values).
    let mp = free_port();
    let mut run = Killed(
        short_run(&dir, &format!("127.0.0.1:{mp}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut last = None;
    while run.0.try_wait().unwrap().is_none() {
        last = get(mp, "/metrics").or(last);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last.is_some());
    let (tokens, joules) = train_totals(&dir);

    // Replay on another port: the same train totals, summed over both models.
    let rp = free_port();
    let _replay = Killed(
        Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .arg("replay")
            .arg(&dir)
            .args(["--metrics", &format!("127.0.0.1:{rp}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Some(p) = get(rp, "/metrics") {
            break p;
        }
        assert!(Instant::now() < deadline, "replay --metrics never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let sum = |name: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("phase=\"train\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(sum("sparsewatt_tokens_total"), tokens);
    assert!((sum("sparsewatt_energy_joules_total") - joules).abs() <= 1e-9 * joules);
    assert!(page.contains("sparsewatt_run_finished 1"), "{page}");
    let records = read_run(&dir).unwrap().records;
    assert!(matches!(records.last(), Some(Record::End { .. })));

    // --metrics-scrapers needs --metrics, and at least one scraper: exit code 2 and the reason.
    for (args, says) in [
        (&["--metrics-scrapers", "2"][..], "--metrics <ADDR>"),
        (
            &["--metrics", "127.0.0.1:0", "--metrics-scrapers", "0"][..],
            "0 is not in 1..=64",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .args(["run", "--headless"])
            .args(args)
            .arg("--out")
            .arg(tmp.path().join("refused"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // A bad address and a port in use: exit code 2 and the reason, before any run folder.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (addr, says) in [("9464", "HOST:PORT"), (taken.as_str(), "cannot listen")] {
        let out = short_run(&tmp.path().join("refused"), addr)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(
            stderr.contains("--metrics") && stderr.contains(says),
            "{stderr}"
        );
        assert!(!tmp.path().join("refused").exists());
        let out = Command::new(env!("CARGO_BIN_EXE_sparsewatt"))
            .arg("replay")
            .arg(&dir)
            .args(["--metrics", addr])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "replay {addr}");
    }
}
