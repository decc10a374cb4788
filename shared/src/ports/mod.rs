//! Ports: the traits through which flows reach the outside world, and their
//! errors. Nothing here knows an SDK, a wire format or an adapter; ports use
//! only domain types. Adapters implement them; `wiring` picks which.
//!
//! # Layout
//! - [`store`]: ObjectStore, one bucket with generation preconditions.
//! - [`bus`]: EventBus, the hand-off of work past a webhook's answer, and the
//!   handler a bus delivers to.
//! - [`executor`]: NotebookExecutor, where jobs run (submit, status, cancel).
//! - [`check_runs`]: CheckRuns, the checks people see on a commit.
//! - [`sources`]: Sources, the changed files and the archive of a commit.
//! - [`deployer`]: Deployer, where a model version goes live.
//!
//! Every port's errors say whether trying again may help: only transient
//! errors make a platform redeliver or a flow retry.

pub mod bus;
pub mod check_runs;
pub mod deployer;
pub mod executor;
pub mod sources;
pub mod store;

use std::time::Duration;

/// Why a call to an outside service (GitHub, a cloud API) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// Occurs when the service is unreachable, answers 5xx or rate-limits:
    /// try again, not before `retry_after` when the service said so.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Occurs when the service refuses for good (not found, forbidden,
    /// invalid): trying again cannot help.
    #[error("{0}")]
    Permanent(String),
}

impl RemoteError {
    /// A transient error with no hint of when to retry.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// How long the service asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Permanent(_) => None,
        }
    }
}
