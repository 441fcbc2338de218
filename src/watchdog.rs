//! The systemd watchdog's evidence: heartbeats. The thread that must stay
//! alive (the UI thread in a window; the rotation task headless) stamps a
//! [`Heartbeat`]; `app::run` sends `WATCHDOG=1` only while the heartbeat is
//! fresh, so a frozen UI stops the pings and systemd restarts the screen.
//! Pure apart from the clock read in [`Heartbeat::beat`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since `start` of the last beat, shared between threads.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The watched thread is alive now.
    pub fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last beat, as of `now`.
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// How often the watched thread beats.
pub const BEAT: Duration = Duration::from_secs(1);

/// Whether to ping the watchdog: the heartbeat is younger than half the
/// watchdog's timeout, so two missed pings still leave systemd a margin.
pub fn should_ping(age: Duration, timeout: Duration) -> bool {
    age <= timeout / 2
}

/// How often to consider pinging: a third of the timeout, at most every
/// second beat.
pub fn ping_interval(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_stop_once_the_heartbeat_is_stale() {
        let timeout = Duration::from_secs(30);
        let h = Heartbeat::new();
        h.beat();
        let now = Instant::now();
        assert!(should_ping(h.age(now), timeout));
        // The watched thread blocks: fifteen seconds on, the pings stop.
        assert!(should_ping(h.age(now + Duration::from_secs(14)), timeout));
        assert!(!should_ping(h.age(now + Duration::from_secs(16)), timeout));
        assert_eq!(ping_interval(timeout), Duration::from_secs(10));
    }
}
