//! Time behind a trait: the meter, the update-period detection and the run loop read it from a
//! [`Clock`], so a test can drive them on a [`FakeClock`] whose time moves only when the test (or
//! the code under test, by sleeping) moves it. Timing then no longer depends on how loaded the
//! machine is, and a test of a 2-second window takes microseconds.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;

    /// Lets `d` pass on this clock: the thread sleeps, or a fake clock moves itself on (the
    /// sleeper is the one making time pass, as a step's work does).
    fn sleep(&self, d: Duration);

    /// Waits until `deadline` or until `stop` receives or disconnects, whichever comes first;
    /// true when stopped. Unlike [`Clock::sleep`], a fake clock does not move itself here: the
    /// waiter (a sampler thread) waits for someone else to move it.
    fn wait_until(&self, deadline: Instant, stop: &Receiver<()>) -> bool;

    /// Time since `earlier` on this clock (zero if `earlier` is later).
    fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

/// The real time of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn wait_until(&self, deadline: Instant, stop: &Receiver<()>) -> bool {
        let wait = deadline.saturating_duration_since(Instant::now());
        !matches!(
            stop.recv_timeout(wait),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told: by [`FakeClock::advance`], or by a [`Clock::sleep`] on it.
/// Its instants are real `Instant`s (an origin taken at creation plus the time moved), so code
/// that stores and subtracts instants works unchanged.
#[derive(Debug)]
pub struct FakeClock {
    origin: Instant,
    moved: Mutex<Duration>,
    moved_on: Condvar,
}

/// How long a waiter on a fake clock blocks before it looks at its stop channel again (real
/// time: a stop sent while nobody moves the clock is still seen promptly).
const FAKE_WAIT_POLL: Duration = Duration::from_millis(1);

impl FakeClock {
    /// A fake clock at its origin.
    pub fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            origin: Instant::now(),
            moved: Mutex::new(Duration::ZERO),
            moved_on: Condvar::new(),
        })
    }

    fn moved(&self) -> MutexGuard<'_, Duration> {
        self.moved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock on by `d` and wakes every waiter.
    pub fn advance(&self, d: Duration) {
        *self.moved() += d;
        self.moved_on.notify_all();
    }

    /// Time moved since the clock was made.
    pub fn elapsed(&self) -> Duration {
        *self.moved()
    }

    /// The clock's instant at its creation: what `now()` was before any time moved.
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.origin + *self.moved()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }

    fn wait_until(&self, deadline: Instant, stop: &Receiver<()>) -> bool {
        let mut moved = self.moved();
        loop {
            match stop.try_recv() {
                Ok(()) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => {}
            }
            if self.origin + *moved >= deadline {
                return false;
            }
            moved = self
                .moved_on
                .wait_timeout(moved, FAKE_WAIT_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_fake_clock_moves_only_when_told_or_slept_on() {
        let c = FakeClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0, "no time passes by itself");
        c.advance(Duration::from_millis(250));
        c.sleep(Duration::from_millis(750));
        assert_eq!(c.since(t0), Duration::from_secs(1));
        assert_eq!(c.elapsed(), Duration::from_secs(1));
        assert_eq!(c.now() - c.origin(), Duration::from_secs(1));
        assert_eq!(c.since(c.now() + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_waiter_on_a_fake_clock_wakes_when_another_thread_moves_it_past_the_deadline() {
        let c = FakeClock::new();
        let (_tx, rx) = mpsc::channel::<()>();
        let deadline = c.now() + Duration::from_millis(30);
        let waiter = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || (c.wait_until(deadline, &rx), c.now()))
        };
        // Short of the deadline the waiter keeps waiting; past it, it returns at that time.
        c.advance(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        c.advance(Duration::from_millis(20));
        let (stopped, woke_at) = waiter.join().unwrap();
        assert!(!stopped);
        assert_eq!(woke_at - c.origin(), Duration::from_millis(40));
    }

    #[test]
    fn a_waiter_stops_on_its_channel_on_both_clocks() {
        for clock in [FakeClock::new() as Arc<dyn Clock>, system()] {
            let (tx, rx) = mpsc::channel::<()>();
            let far = clock.now() + Duration::from_secs(3600);
            tx.send(()).unwrap();
            assert!(clock.wait_until(far, &rx), "a message stops it");
            drop(tx);
            assert!(clock.wait_until(far, &rx), "a hang-up stops it");
        }
        // The system clock returns at its deadline when nothing stops it.
        let (_tx, rx) = mpsc::channel::<()>();
        let s = SystemClock;
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(!s.wait_until(deadline, &rx));
        assert!(Instant::now() >= deadline);
    }
}
