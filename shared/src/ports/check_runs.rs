//! The CheckRuns port: the checks people see on a commit (GitHub check runs).
//!
//! Flows say what a check shows in domain terms; the GitHub adapter turns it
//! into check-run bodies within every limit GitHub sets.

use async_trait::async_trait;

use super::RemoteError;
use crate::domain::outcome::Outcome;
use crate::domain::repo::{CheckRunId, CommitRef};

/// What a check run should show.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckRunUpdate {
    /// Running, with a link to where the executed notebook will be.
    InProgress { details_url: Option<String> },
    /// Done: the notebook's verdict. `committed` is the notebook's JSON as
    /// committed (empty when unknown), for annotations on the failing cell's line.
    Completed {
        notebook: String,
        outcome: Box<Outcome>,
        committed: String,
        details_url: Option<String>,
    },
    /// Closed without a verdict (a re-run superseded it).
    Cancelled { title: String, summary: String },
    /// A note (neutral): the commit changes more notebooks than are checked,
    /// or a notebook path cannot be checked at all.
    Note { title: String, summary: String },
}

/// Check runs on commits.
#[async_trait]
pub trait CheckRuns: Send + Sync + std::fmt::Debug {
    /// The check runs named `name` on `commit` created with `external_id`,
    /// oldest first (normally one or none).
    async fn find(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<Vec<CheckRunId>, RemoteError>;
    /// Creates a check run, queued.
    async fn create(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<CheckRunId, RemoteError>;
    /// Updates a check run. A completion is sent once: when it fails
    /// transiently it may still have landed, so the caller asks
    /// [`CheckRuns::is_completed`] before sending it again.
    async fn update(
        &self,
        commit: &CommitRef,
        id: CheckRunId,
        update: &CheckRunUpdate,
    ) -> Result<(), RemoteError>;
    /// Whether a check run is completed. A completion whose answer was lost,
    /// or whose sender died before recording it, may have landed: asking
    /// before completing the run again keeps it completed once.
    async fn is_completed(&self, commit: &CommitRef, id: CheckRunId) -> Result<bool, RemoteError>;
    /// The name of a notebook's check run (`nbci / {path}`).
    fn check_name(&self, notebook: &str) -> String;
}
