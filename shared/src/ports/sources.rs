//! The Sources port: what a commit changed, and the repository at a commit.

use std::path::Path;

use async_trait::async_trait;

use super::RemoteError;
use crate::domain::repo::{CommitRef, RepoRef};

/// The paths a commit added or modified (removed files are not listed;
/// renamed ones at their new path), in the code host's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedPaths {
    pub paths: Vec<String>,
    /// The list may be incomplete (the host's or nbci's cap was reached).
    pub capped: bool,
}

/// Commits of repositories on the code host.
#[async_trait]
pub trait Sources: Send + Sync + std::fmt::Debug {
    /// The paths changed between `base` (a commit or branch) and the commit.
    async fn changed_paths(
        &self,
        commit: &CommitRef,
        base: &str,
    ) -> Result<ChangedPaths, RemoteError>;
    /// The commit at the head of `branch` of `repo` (its default branch when
    /// `None`), with the installation to act as, and the branch's name.
    async fn branch_head(
        &self,
        repo: &RepoRef,
        branch: Option<&str>,
    ) -> Result<(CommitRef, String), RemoteError>;
    /// Downloads the repository at the commit, as a gzip tarball, into a new
    /// file at `dest`, streaming it.
    async fn download_archive(&self, commit: &CommitRef, dest: &Path) -> Result<(), RemoteError>;
}
