//! The one backoff schedule: exponential from a base, capped, and overridden
//! by a server's own hint (`Retry-After`, a rate-limit reset) when it gives one.
//! Used by the GitHub client between attempts of one call, and by the flows
//! between persisted attempts of one state change.

use std::time::Duration;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure; each later failure doubles it.
    pub base: Duration,
    /// The longest wait this schedule produces.
    pub max: Duration,
}

impl Backoff {
    /// A schedule from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait after `failures` failures in a row (1 = the first failure).
    /// Saturates instead of overflowing, whatever `failures` is.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait after `failures` failures, honouring `hint` (what the server
    /// asked for) when it is longer than the schedule's own.
    pub fn delay_with_hint(&self, failures: u32, hint: Option<Duration>) -> Duration {
        let own = self.delay(failures);
        hint.map_or(own, |hint| hint.max(own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps_without_overflow() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(backoff.delay(0), Duration::from_millis(500));
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_secs(1));
        assert_eq!(backoff.delay(4), Duration::from_secs(4));
        assert_eq!(backoff.delay(40), Duration::from_secs(60));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(
            backoff.delay_with_hint(1, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            backoff.delay_with_hint(3, Some(Duration::ZERO)),
            Duration::from_secs(2)
        );
    }
}
