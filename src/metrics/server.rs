//! `/metrics` over HTTP (tiny_http) while a run lives, or for a finished run until Ctrl-C.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Response, Server};

use super::{MetricsError, RunMetrics};
use crate::runlog::{Record, RunData, RunHeader};

/// How long a run that has ended keeps serving until a scrape has read its final values:
/// longer than the usual scrape intervals (Prometheus' default is a minute; monitoring setups
/// commonly use 10 to 15 s), short enough not to hold a finished run for long.
pub const LINGER: Duration = Duration::from_secs(15);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Shared {
    metrics: RunMetrics,
    /// Records observed so far.
    observed: AtomicU64,
    scrapes: Mutex<ScrapeTally>,
}

/// The most records any scrape has read, and how many scrapes read that many: after the run,
/// how many scrapers have its final values.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ScrapeTally {
    upto: u64,
    scrapes: u64,
}

impl ScrapeTally {
    /// A scrape that rendered the metrics when `upto` records had been observed. One that read
    /// fewer than the latest (it began before a record and answered after) changes nothing.
    fn scraped(&mut self, upto: u64) {
        if upto > self.upto {
            *self = ScrapeTally { upto, scrapes: 1 };
        } else if upto == self.upto {
            self.scrapes += 1;
        }
    }

    /// Whether `scrapers` scrapes have read all of `observed` records.
    fn read_by(&self, observed: u64, scrapers: u64) -> bool {
        observed == 0 || (self.upto >= observed && self.scrapes >= scrapers)
    }
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, ScrapeTally> {
        self.scrapes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A run's metrics served on an address; clones share them. The server stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

/// An address bound but not serving yet: binding before a run starts lets a bad address or a
/// port in use fail before anything is measured.
pub struct Listener {
    server: Server,
    addr: SocketAddr,
}

/// Binds `addr` (HOST:PORT; port 0 takes any free port).
pub fn bind(addr: &str) -> Result<Listener, MetricsError> {
    let socket = resolve(addr)?;
    let server = Server::http(socket).map_err(|e| MetricsError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    // Port 0 asks for any free port: the address actually bound is the one to scrape.
    let addr = server.server_addr().to_ip().unwrap_or(socket);
    Ok(Listener { server, addr })
}

impl Listener {
    /// The address bound (the port chosen where 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the metrics of the run `header` describes at `/metrics`, from now until the
    /// returned exporter is dropped. Feed it the run's records with [`Exporter::observe`].
    pub fn serve(self, header: &RunHeader) -> Result<Exporter, MetricsError> {
        let addr = self.addr;
        let server = Arc::new(self.server);
        let shared = Arc::new(Shared {
            metrics: RunMetrics::new(header),
            observed: AtomicU64::new(0),
            scrapes: Mutex::new(ScrapeTally::default()),
        });
        let (s, h) = (Arc::clone(&shared), Arc::clone(&server));
        let thread = std::thread::Builder::new()
            .name("sparsewatt-metrics".into())
            .spawn(move || answer(&h, &s))
            .map_err(|e| MetricsError::Listen {
                addr: addr.to_string(),
                reason: format!("cannot start the server's thread: {e}"),
            })?;
        Ok(Exporter {
            inner: Arc::new(Inner {
                shared,
                server,
                addr,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }
}

/// [`bind`] then [`Listener::serve`]: the metrics of the run `header` describes on `addr`.
pub fn serve(addr: &str, header: &RunHeader) -> Result<Exporter, MetricsError> {
    bind(addr)?.serve(header)
}

/// Serves a finished (or cut-off) run's final values on `addr` until the process is stopped.
pub fn serve_run(addr: &str, run: &RunData) -> Result<(), MetricsError> {
    let exporter = serve(addr, &run.header)?;
    for r in &run.records {
        exporter.observe(r);
    }
    eprintln!(
        "serving the final values of run {} ({} records) on http://{}/metrics until Ctrl-C",
        run.header.id,
        run.records.len(),
        exporter.addr()
    );
    let thread = exporter.inner.thread.lock().unwrap().take();
    if let Some(t) = thread {
        let _ = t.join();
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr, MetricsError> {
    let bad = |reason: String| MetricsError::BadAddr {
        addr: addr.to_string(),
        reason,
    };
    if !addr.contains(':') {
        return Err(bad("no port".into()));
    }
    let mut found = addr.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    found
        .next()
        .ok_or_else(|| bad("it resolves to nothing".into()))
}

/// The server's loop: `/metrics` in the text format, anything else a 404 naming it.
fn answer(server: &Server, shared: &Shared) {
    for request in server.incoming_requests() {
        let response = match request.url().split('?').next() {
            Some("/metrics") => {
                let upto = shared.observed.load(Ordering::SeqCst);
                let body = shared.metrics.render();
                shared.tally().scraped(upto);
                Response::from_string(body).with_header(header("Content-Type", TEXT_FORMAT))
            }
            Some("/") => Response::from_string("sparsewatt: the metrics are at /metrics\n"),
            Some(other) => Response::from_string(format!("no {other} here: try /metrics\n"))
                .with_status_code(404),
            None => Response::from_string("").with_status_code(400),
        };
        // A scraper that hung up is its own problem, not the run's.
        let _ = request.respond(response);
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("an ASCII header")
}

impl Exporter {
    /// The address served (the port chosen where ADDR asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Takes one record into the metrics, as the run appends it.
    pub fn observe(&self, r: &Record) {
        let s = &self.inner.shared;
        s.metrics.observe(r);
        s.observed.fetch_add(1, Ordering::SeqCst);
    }

    /// The metrics as a scrape would read them now.
    pub fn render(&self) -> String {
        self.inner.shared.metrics.render()
    }

    /// Keeps serving until `scrapers` scrapes have read every record observed so far, `max` at
    /// most: the counters' final values would otherwise be lost to a monitoring system that
    /// scrapes only every so often. An HA pair of Prometheus servers is 2 scrapers, each
    /// scraping once an interval. Returns whether they came.
    pub fn linger(&self, max: Duration, scrapers: u64) -> bool {
        let s = &self.inner.shared;
        let all = || {
            s.tally()
                .read_by(s.observed.load(Ordering::SeqCst), scrapers)
        };
        if all() {
            return true;
        }
        let which = match scrapers {
            1 => "the next scrape".to_string(),
            n => format!("{n} scrapes have read them"),
        };
        eprintln!(
            "metrics: serving the final values on http://{}/metrics until {which} ({} s at most)",
            self.addr(),
            max.as_secs()
        );
        let until = Instant::now() + max;
        while Instant::now() < until {
            if all() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{test_header, test_step};
    use crate::vocab::{Phase, Role};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn bad_addresses_and_a_taken_port_are_refused_with_the_reason() {
        let h = test_header();
        for bad in ["9464", "nohost-at-all.invalid:9464", "127.0.0.1:notaport"] {
            let e = serve(bad, &h).err().expect("refused");
            assert!(matches!(e, MetricsError::BadAddr { .. }), "{bad}: {e}");
            assert!(
                e.to_string().contains(bad) && e.to_string().contains("HOST:PORT"),
                "{e}"
            );
        }
        let first = serve("127.0.0.1:0", &h).unwrap();
        let taken = first.addr().to_string();
        let e = serve(&taken, &h).err().expect("the port is taken");
        assert!(matches!(e, MetricsError::Listen { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {taken}")),
            "{e}"
        );
    }

    #[test]
    fn a_bound_listener_serves_the_records_observed_once_it_has_the_header() {
        let listener = bind("127.0.0.1:0").unwrap();
        let addr = listener.addr();
        assert_ne!(addr.port(), 0, "port 0 resolves to the port bound");
        let x = listener.serve(&test_header()).unwrap();
        assert_eq!(x.addr(), addr);
        for _ in 0..3 {
            x.observe(&Record::Step(test_step(Role::Sparse, Phase::Train)));
        }
        let page = get(x.addr(), "/metrics");
        assert!(page.starts_with("HTTP/1.0 200"), "{page}");
        assert!(page.contains("text/plain; version=0.0.4"), "{page}");
        // test_step: 10 tokens and 1 J each.
        assert!(page.contains(
            "sparsewatt_tokens_total{model=\"Sparse\",phase=\"train\",role=\"sparse\",source=\"estimate\"} 30"
        ), "{page}");
        assert!(get(x.addr(), "/other").starts_with("HTTP/1.0 404"));
    }

    #[test]
    fn linger_returns_once_a_scrape_has_read_the_last_record() {
        let x = serve("127.0.0.1:0", &test_header()).unwrap();
        assert!(
            x.linger(Duration::ZERO, 1),
            "nothing observed: nothing to wait for"
        );
        x.observe(&Record::Step(test_step(Role::Dense, Phase::Decode)));
        assert!(!x.linger(Duration::from_millis(100), 1), "no scrape came");
        let addr = x.addr();
        let scraper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            get(addr, "/metrics")
        });
        let t = Instant::now();
        assert!(x.linger(Duration::from_secs(10), 1));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(scraper.join().unwrap().contains("role=\"dense\""));
        // Two scrapers (an HA pair): one scrape of the final values is not enough.
        assert!(!x.linger(Duration::from_millis(100), 2));
        get(addr, "/metrics");
        assert!(x.linger(Duration::ZERO, 2));
    }

    #[test]
    fn the_tally_counts_the_scrapes_of_the_latest_records_only() {
        let mut t = ScrapeTally::default();
        assert!(t.read_by(0, 2), "nothing observed: nothing to wait for");
        t.scraped(3);
        t.scraped(5);
        t.scraped(4); // began before record 5, answered after: stale
        assert_eq!(
            t,
            ScrapeTally {
                upto: 5,
                scrapes: 1
            }
        );
        assert!(t.read_by(5, 1) && !t.read_by(5, 2) && !t.read_by(6, 1));
        t.scraped(5);
        assert!(t.read_by(5, 2));
        t.scraped(6);
        assert_eq!(
            t,
            ScrapeTally {
                upto: 6,
                scrapes: 1
            }
        );
    }
}
