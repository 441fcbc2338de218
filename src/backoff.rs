//! Exponential backoff with full jitter, for every retry loop: the MQTT
//! connection, the feedback sync, media downloads and store commits. Pure
//! but for the random draw, which callers may pass in.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: the n-th retry waits a uniformly
/// random time between zero and `first`·2ⁿ⁻¹, capped at `cap`. The jitter
/// keeps a fleet of screens that lost the same server from coming back in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(2),
            cap: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The longest wait before retry number `attempt` (1 is the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The wait before retry number `attempt`, drawn from `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        rng.gen_range(Duration::ZERO..=ceiling)
    }
}

/// The retries of one loop: each failure waits longer, a success starts over.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    attempt: u32,
}

impl Retry {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            backoff: Backoff { first, cap },
            attempt: 0,
        }
    }

    /// The wait before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt, &mut rand::thread_rng())
    }

    /// A success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The longest wait before the next attempt, should it fail.
    pub fn ceiling(&self) -> Duration {
        self.backoff.ceiling(self.attempt.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_ceiling_doubles_from_first_up_to_cap() {
        let backoff = Backoff::default();
        let ceilings: Vec<u64> = (1..=11).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600],
            "first retry within 2 s, doubling, capped at 10 min"
        );
        assert_eq!(backoff.ceiling(0), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(600));
    }
    #[test]
    fn backoff_delay_is_full_jitter_within_the_ceiling() {
        let backoff = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=20 {
            let ceiling = backoff.ceiling(attempt);
            let delays: Vec<Duration> =
                (0..200).map(|_| backoff.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter spreads over the whole range, not just its top.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }
    #[test]
    fn backoff_with_zero_first_never_waits() {
        let backoff = Backoff {
            first: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(backoff.delay(5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_grows_with_each_failure_and_starts_over_after_a_success() {
        let mut retry = Retry::new(Duration::from_millis(100), Duration::from_millis(800));
        for ceiling in [100u64, 200, 400, 800, 800] {
            assert!(retry.next_delay() <= Duration::from_millis(ceiling));
        }
        assert_eq!(retry.attempts(), 5);
        retry.reset();
        assert_eq!(retry.attempts(), 0);
        assert_eq!(retry.ceiling(), Duration::from_millis(100));
        assert!(retry.next_delay() <= Duration::from_millis(100));
    }
}
