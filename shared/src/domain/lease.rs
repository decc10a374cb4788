//! Leases and persisted retries: how a state object in the bucket (a check's
//! `check.json`, a pipeline run's `state.json`) is worked on by one process at
//! a time and retried after a transient failure, whatever process picks it up.
//!
//! A process takes the lease with a generation-conditional write before a
//! side effect and drops it with the write that records the effect; a lease
//! whose holder died expires at `until`. A transient failure records when to
//! try again, so that the wait survives the process that saw the failure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who may perform the next step, until when (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub until: f64,
}

/// Failures of the current step in a row, and when to try it again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub failures: u32,
    /// Seconds since the epoch before which the step is not tried again.
    pub not_before: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The longest error kept in a state object.
const MAX_ERROR_CHARS: usize = 500;

/// A state object with a lease and a retry: the transitions every such object
/// has, written once. Each returns the next state; nothing is changed in place.
pub trait Leased: Clone {
    fn lease(&self) -> Option<&Lease>;
    fn lease_mut(&mut self) -> &mut Option<Lease>;
    fn retry_mut(&mut self) -> &mut Retry;

    /// Whether someone other than `holder` holds a lease that has not expired.
    fn leased_by_other(&self, holder: &str, now: f64) -> bool {
        self.lease()
            .is_some_and(|lease| lease.holder != holder && lease.until > now)
    }

    /// The state with `holder`'s lease until `now + ttl`.
    fn leased(&self, holder: &str, now: f64, ttl: Duration) -> Self {
        let mut next = self.clone();
        *next.lease_mut() = Some(Lease {
            holder: holder.to_owned(),
            until: now + ttl.as_secs_f64(),
        });
        next
    }

    /// The state with no lease.
    fn released(&self) -> Self {
        let mut next = self.clone();
        *next.lease_mut() = None;
        next
    }

    /// The current step failed and may succeed later: try again after `wait`
    /// (the backoff's, or longer if the server asked for longer), by whoever
    /// takes the lease then.
    fn failed_transiently(&self, error: &str, now: f64, wait: Duration) -> Self {
        let mut next = self.clone();
        let retry = next.retry_mut();
        retry.failures = retry.failures.saturating_add(1);
        retry.not_before = now + wait.as_secs_f64();
        retry.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
        *next.lease_mut() = None;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default)]
    struct State {
        lease: Option<Lease>,
        retry: Retry,
    }

    impl Leased for State {
        fn lease(&self) -> Option<&Lease> {
            self.lease.as_ref()
        }
        fn lease_mut(&mut self) -> &mut Option<Lease> {
            &mut self.lease
        }
        fn retry_mut(&mut self) -> &mut Retry {
            &mut self.retry
        }
    }

    #[test]
    fn a_lease_excludes_others_until_it_expires_and_a_failure_drops_it() {
        let state = State::default().leased("a", 100.0, Duration::from_secs(30));
        assert!(state.leased_by_other("b", 129.0));
        assert!(!state.leased_by_other("a", 129.0));
        assert!(!state.leased_by_other("b", 130.0));
        let failed = state.failed_transiently(&"x".repeat(900), 100.0, Duration::from_secs(5));
        assert_eq!(failed.lease, None);
        assert_eq!(failed.retry.failures, 1);
        assert_eq!(failed.retry.not_before, 105.0);
        assert_eq!(
            failed.retry.last_error.map(|e| e.len()),
            Some(MAX_ERROR_CHARS)
        );
        assert!(state.released().lease.is_none());
    }
}
