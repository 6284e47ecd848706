//! `run --metrics`: the Prometheus exporter as an observer of the run. The address is bound before
//! the session starts (a bad address or a port in use fails before anything is measured); it
//! serves from the header on and counts every record as the run appends it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::RunObserver;
use crate::metrics::{bind, Exporter, Listener, MetricsError};
use crate::runlog::{Record, RunHeader};

/// Clones share one exporter: one goes to the session as an observer, one stays with the caller
/// for [`MetricsFeed::linger`] after the run.
#[derive(Clone)]
pub struct MetricsFeed {
    state: Arc<Mutex<State>>,
}

enum State {
    Bound(Listener),
    Serving(Exporter),
    /// The server's thread could not start: the run goes on without metrics.
    Off,
}

impl MetricsFeed {
    /// Binds `addr` (HOST:PORT) now; serving starts with the run's header.
    pub fn bind(addr: &str) -> Result<MetricsFeed, MetricsError> {
        Ok(MetricsFeed {
            state: Arc::new(Mutex::new(State::Bound(bind(addr)?))),
        })
    }

    /// After the run: serve until `scrapers` scrapes have read the final values, `max` at most.
    pub fn linger(&self, max: Duration, scrapers: u64) {
        let exporter = match &*self.lock() {
            State::Serving(x) => Some(x.clone()),
            _ => None,
        };
        if let Some(x) = exporter {
            x.linger(max, scrapers);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RunObserver for MetricsFeed {
    fn started(&mut self, header: &RunHeader) {
        let mut state = self.lock();
        *state = match std::mem::replace(&mut *state, State::Off) {
            State::Bound(listener) => match listener.serve(header) {
                Ok(x) => {
                    eprintln!("metrics: serving on http://{}/metrics", x.addr());
                    State::Serving(x)
                }
                Err(e) => {
                    eprintln!("warning: no metrics: {e}");
                    State::Off
                }
            },
            other => other,
        };
    }

    fn record(&mut self, record: &Record) {
        if let State::Serving(x) = &*self.lock() {
            x.observe(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{test_header, test_step};
    use crate::vocab::{Phase, Role};

    #[test]
    fn the_feed_serves_from_the_header_on_and_counts_every_record() {
        let mut feed = MetricsFeed::bind("127.0.0.1:0").unwrap();
        let kept = feed.clone();
        // Before the header nothing is served: a record then is dropped, without a panic.
        feed.record(&Record::Step(test_step(Role::Sparse, Phase::Train)));
        feed.started(&test_header());
        for _ in 0..2 {
            feed.record(&Record::Step(test_step(Role::Sparse, Phase::Train)));
        }
        let page = match &*kept.lock() {
            State::Serving(x) => x.render(),
            _ => panic!("not serving after the header"),
        };
        // test_step: 10 tokens each; the record before the header was not counted.
        assert!(page.contains(
            "sparsewatt_tokens_total{model=\"Sparse\",phase=\"train\",role=\"sparse\",source=\"estimate\"} 20"
        ), "{page}");
    }

    #[test]
    fn a_bad_address_fails_at_bind_time() {
        let e = MetricsFeed::bind("no-port-here").err().expect("refused");
        assert!(matches!(e, MetricsError::BadAddr { .. }), "{e}");
    }
}
