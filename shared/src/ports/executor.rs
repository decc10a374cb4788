//! The NotebookExecutor port: where jobs run.
//!
//! Flows write a job's `job.json` and then submit it; whatever runs the job
//! writes `result.json` last, and the finalize event of that object completes
//! the flow. `status` and `cancel` let a sweep find jobs that died without a
//! result (preempted, image pull failures) and stop jobs past their deadline.

use async_trait::async_trait;

use crate::domain::job::{Job, JobHandle, JobState};

/// Why an executor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// Occurs when the job is invalid for this executor (a machine type it
    /// does not have, a malformed image): permanent, not retried.
    #[error("the job was rejected: {0}")]
    Rejected(String),
    /// Occurs when the executor cannot be reached or is overloaded: transient.
    #[error("the executor is unavailable: {0}")]
    Unavailable(String),
}

impl ExecutorError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Somewhere to run notebook jobs.
#[async_trait]
pub trait NotebookExecutor: Send + Sync + std::fmt::Debug {
    /// Starts `job`, whose record is already at `job.record_key()`; returns
    /// once it is accepted, not when it is done. Idempotent per job folder:
    /// submitting the same job again (a retried step) starts nothing new and
    /// answers the first job's handle when the executor can find it.
    async fn submit(&self, job: &Job) -> Result<JobHandle, ExecutorError>;
    /// Where the job is.
    async fn status(&self, handle: &JobHandle) -> Result<JobState, ExecutorError>;
    /// Asks the job to stop; stopping an ended job succeeds.
    async fn cancel(&self, handle: &JobHandle) -> Result<(), ExecutorError>;
}
