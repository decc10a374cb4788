//! The GitHub App as the CheckRuns and Sources ports: installation tokens,
//! REST calls, and GitHub's errors turned into transient or permanent ones.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::app_auth::{AuthError, InstallationTokens};
use super::checks::{self, CheckOutput, CheckStatus, Conclusion, UpdateCheckRun};
use super::client::{ClientError, FileStatus, GitHubClient};
use crate::domain::repo::{CheckRunId, CommitRef, CommitSha, InstallationId, RepoRef};
use crate::ports::RemoteError;
use crate::ports::check_runs::{CheckRunUpdate, CheckRuns};
use crate::ports::sources::{ChangedPaths, Sources};
use crate::util::secret::Secret;

/// The App, acting as one of its installations per call.
#[derive(Debug, Clone)]
pub struct GitHubApp {
    client: GitHubClient,
    tokens: Arc<InstallationTokens>,
}

impl GitHubApp {
    pub fn new(client: GitHubClient, tokens: Arc<InstallationTokens>) -> Self {
        Self { client, tokens }
    }

    /// Runs `call` with the installation's token; when GitHub answers 401
    /// (the token was revoked), forgets it and tries once more with a new one.
    async fn as_installation<T, F, Fut>(
        &self,
        installation: InstallationId,
        call: F,
    ) -> Result<T, RemoteError>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let token = self.tokens.token(installation).await.map_err(auth_error)?;
        match call(token.clone()).await {
            Err(error) if error.status() == Some(401) => {
                tracing::warn!(%installation, "GitHub refused the installation token; fetching a new one");
                self.tokens.forget_refused(installation, &token).await;
                let token = self.tokens.token(installation).await.map_err(auth_error)?;
                call(token).await.map_err(client_error)
            }
            other => other.map_err(client_error),
        }
    }
}

/// A GitHub client error as a port error: transient when a retry may help,
/// with GitHub's requested wait.
pub fn client_error(error: ClientError) -> RemoteError {
    let retry_after = match &error {
        ClientError::RateLimited { wait, .. } => Some(*wait),
        _ => None,
    };
    if error.is_transient() {
        RemoteError::Transient {
            reason: error.to_string(),
            retry_after,
        }
    } else {
        RemoteError::Permanent(error.to_string())
    }
}

fn auth_error(error: AuthError) -> RemoteError {
    match error {
        AuthError::Exchange { source, .. } if source.is_transient() => client_error(source),
        AuthError::Lookup { source, .. } if source.is_transient() => client_error(*source),
        other => RemoteError::Permanent(other.to_string()),
    }
}

fn update_body(update: &CheckRunUpdate) -> UpdateCheckRun {
    match update {
        CheckRunUpdate::InProgress { details_url } => checks::in_progress(details_url.as_deref()),
        CheckRunUpdate::Completed {
            notebook,
            outcome,
            committed,
            details_url,
        } => checks::completed(outcome, committed, notebook, details_url.as_deref()),
        CheckRunUpdate::Cancelled { title, summary } => {
            closed(Conclusion::Cancelled, title, summary)
        }
        CheckRunUpdate::Note { title, summary } => closed(Conclusion::Neutral, title, summary),
    }
}

fn closed(conclusion: Conclusion, title: &str, summary: &str) -> UpdateCheckRun {
    let mut body = UpdateCheckRun {
        status: Some(CheckStatus::Completed),
        conclusion: Some(conclusion),
        completed_at: Some(crate::util::time::now_rfc3339()),
        output: Some(CheckOutput {
            title: title.to_owned(),
            summary: summary.to_owned(),
            text: None,
            annotations: Vec::new(),
        }),
        ..UpdateCheckRun::default()
    };
    body.enforce_limits();
    body
}

#[async_trait]
impl CheckRuns for GitHubApp {
    async fn find(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<Vec<CheckRunId>, RemoteError> {
        let runs = self
            .as_installation(commit.installation, |token| async move {
                self.client
                    .list_check_runs(&commit.repo, &token, commit.sha.as_str(), name)
                    .await
            })
            .await?;
        let mut ids: Vec<CheckRunId> = runs
            .into_iter()
            .filter(|run| run.external_id.as_deref() == Some(external_id))
            .map(|run| run.id)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn create(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<CheckRunId, RemoteError> {
        let body = checks::queued(name, commit.sha.as_str(), external_id);
        self.as_installation(commit.installation, |token| {
            let body = &body;
            async move {
                self.client
                    .create_check_run(&commit.repo, &token, body)
                    .await
            }
        })
        .await
    }

    async fn update(
        &self,
        commit: &CommitRef,
        id: CheckRunId,
        update: &CheckRunUpdate,
    ) -> Result<(), RemoteError> {
        let body = update_body(update);
        // A verdict is sent once (see `CheckRuns::update`); other updates
        // say the same when repeated, and are retried here.
        let verdict = matches!(update, CheckRunUpdate::Completed { .. });
        self.as_installation(commit.installation, |token| {
            let body = &body;
            async move {
                if verdict {
                    self.client
                        .update_check_run_once(&commit.repo, &token, id, body)
                        .await
                } else {
                    self.client
                        .update_check_run(&commit.repo, &token, id, body)
                        .await
                }
            }
        })
        .await
    }

    async fn is_completed(&self, commit: &CommitRef, id: CheckRunId) -> Result<bool, RemoteError> {
        let run = self
            .as_installation(commit.installation, |token| async move {
                self.client.get_check_run(&commit.repo, &token, id).await
            })
            .await?;
        Ok(run.is_completed())
    }

    fn check_name(&self, notebook: &str) -> String {
        checks::check_run_name(notebook)
    }
}

#[async_trait]
impl Sources for GitHubApp {
    async fn changed_paths(
        &self,
        commit: &CommitRef,
        base: &str,
    ) -> Result<ChangedPaths, RemoteError> {
        let changed = self
            .as_installation(commit.installation, |token| async move {
                self.client
                    .compare_changed_files(&commit.repo, &token, base, commit.sha.as_str())
                    .await
            })
            .await?;
        Ok(ChangedPaths {
            paths: changed
                .files
                .into_iter()
                .filter(|file| !matches!(file.status, FileStatus::Removed | FileStatus::Unchanged))
                .map(|file| file.filename)
                .collect(),
            capped: changed.capped,
        })
    }

    async fn branch_head(
        &self,
        repo: &RepoRef,
        branch: Option<&str>,
    ) -> Result<(CommitRef, String), RemoteError> {
        let installation = self
            .tokens
            .installation_of(repo)
            .await
            .map_err(auth_error)?;
        let (sha, branch) = self
            .as_installation(installation, |token| async move {
                let branch = match branch {
                    Some(branch) => branch.to_owned(),
                    None => self.client.default_branch(repo, &token).await?,
                };
                let sha = self.client.branch_head(repo, &token, &branch).await?;
                Ok((sha, branch))
            })
            .await?;
        let sha = CommitSha::try_from(sha).map_err(RemoteError::Permanent)?;
        Ok((
            CommitRef {
                installation,
                repo: repo.clone(),
                sha,
            },
            branch,
        ))
    }

    async fn download_archive(&self, commit: &CommitRef, dest: &Path) -> Result<(), RemoteError> {
        self.as_installation(commit.installation, |token| async move {
            // A retry after a broken download starts from an empty file.
            let _ = tokio::fs::remove_file(dest).await;
            self.client
                .download_tarball_to(&commit.repo, &token, commit.sha.as_str(), dest)
                .await
        })
        .await
        .map(|_| ())
    }
}
