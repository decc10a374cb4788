//! The CI flow: a GitHub trigger becomes one check run per changed notebook.
//!
//! [`Ci::dispatch`] runs when a webhook asks for checks: it lists the changed
//! notebooks (compare API), stages the commit's tarball in the bucket, creates
//! each check run `queued`, records the job, submits it to the
//! [`NotebookExecutor`] and marks the check `in_progress` with its details link.
//! [`Ci::complete`] runs when a job's `result.json` lands (a GCS finalize
//! event in the cloud, the local executor's queue in `nbci serve`) and
//! completes the check run. Both modes share this code up to the executor port.
//!
//! At-least-once: a delivery may come twice, and the check_suite and the push
//! of one commit ask for the same work. Each (repository, commit, notebook) is
//! claimed once in the bucket with a does-not-exist write; only explicit
//! re-runs (`rerequested`, the Re-run button) run a notebook again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::changes::is_notebook_path;
use crate::executor::NotebookExecutor;
use crate::github::checks::{self, CheckOutput, CheckStatus, Conclusion, CreateCheckRun};
use crate::github::events::Event;
use crate::github::{
    CheckRunId, ClientError, FileStatus, GitHubClient, InstallationId, InstallationTokens, RepoRef,
    Secret,
};
use crate::outcome::Outcome;
use crate::runner::Job;
use crate::store::{ObjectStore, Precondition, StoreError};

/// Settings of the CI flow.
#[derive(Debug, Clone)]
pub struct CiConfig {
    /// Base URL under which executed notebooks are served (`NBCI_PUBLIC_URL`);
    /// without it check runs carry no details link.
    pub public_url: Option<String>,
    /// At most this many notebooks per commit; the rest are named in a note check.
    pub max_notebooks: usize,
    /// What jobs record as their image (`local` for `nbci serve`).
    pub image: String,
    /// Key that signs details links (`?token=`), so that a public URL shows a
    /// private repository's executed notebooks only to those GitHub linked.
    pub link_key: Option<Secret>,
}

impl Default for CiConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            max_notebooks: 50,
            image: "local".into(),
            link_key: None,
        }
    }
}

/// The token that opens the executed notebooks under `prefix`: the first 32 hex
/// digits of HMAC-SHA256(`key`, "view:" + prefix).
pub fn view_token(key: &Secret, prefix: &str) -> String {
    let signature =
        crate::github::sign(key.expose().as_bytes(), format!("view:{prefix}").as_bytes());
    signature
        .trim_start_matches("sha256=")
        .chars()
        .take(32)
        .collect()
}

/// What a webhook delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `X-GitHub-Delivery`, for logs.
    pub delivery: String,
    pub installation: InstallationId,
    pub repo: RepoRef,
    pub head_sha: String,
    /// What to compare against; `None` when only `only` runs.
    pub base: Option<String>,
    /// Run just this notebook (a re-run of one check).
    pub only: Option<String>,
    /// An explicit re-run: skip the once-per-commit claim.
    pub rerun: bool,
}

impl Trigger {
    /// The trigger for an actionable event, or `None` for the others.
    pub fn from_event(event: &Event, delivery: &str) -> Option<Self> {
        use crate::github::events::{CheckRunAction, CheckSuiteAction};
        let (installation, repository, head, base, only, rerun) = match event {
            Event::CheckSuite(e) => (
                e.installation.id,
                &e.repository,
                e.check_suite.head_sha.as_str().to_owned(),
                e.check_suite
                    .base_sha()
                    .map(|sha| sha.as_str().to_owned())
                    .or_else(|| e.repository.default_branch.clone()),
                None,
                e.action == CheckSuiteAction::Rerequested,
            ),
            Event::PullRequest(e) => (
                e.installation.id,
                &e.repository,
                e.pull_request.head.sha.as_str().to_owned(),
                Some(e.pull_request.base.sha.as_str().to_owned()),
                None,
                false,
            ),
            Event::Push(e) => (
                e.installation.id,
                &e.repository,
                e.after.as_str().to_owned(),
                e.base_sha()
                    .map(|sha| sha.as_str().to_owned())
                    .or_else(|| e.repository.default_branch.clone()),
                None,
                false,
            ),
            Event::CheckRun(e) => {
                let rerun = match e.action {
                    CheckRunAction::Rerequested => true,
                    CheckRunAction::RequestedAction => e
                        .requested_action
                        .as_ref()
                        .is_some_and(|a| a.identifier == checks::RERUN_ACTION),
                };
                let path = e.notebook_path()?;
                if !rerun {
                    return None;
                }
                (
                    e.installation.id,
                    &e.repository,
                    e.check_run.head_sha.as_str().to_owned(),
                    None,
                    Some(path.to_owned()),
                    true,
                )
            }
            _ => return None,
        };
        Some(Self {
            delivery: delivery.to_owned(),
            installation,
            repo: repository.repo.clone(),
            head_sha: head,
            base,
            only,
            rerun,
        })
    }
}

/// What a job needs to be completed, kept beside it in the bucket (`job.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    pub installation: InstallationId,
    pub repo: String,
    pub head_sha: String,
    pub check_run_id: CheckRunId,
    pub details_url: Option<String>,
    /// Seconds since the epoch when the job was dispatched: results that
    /// started before it belong to an earlier attempt and are ignored.
    pub dispatched_at: f64,
}

/// Why the flow failed; transient causes are worth a retry (503 to the platform).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CiError {
    #[error("GitHub: {0}")]
    GitHub(#[from] ClientError),
    #[error("GitHub App authentication: {0}")]
    Auth(#[from] crate::github::AuthError),
    #[error("bucket: {0}")]
    Store(#[from] StoreError),
    #[error("executor: {0}")]
    Executor(#[from] crate::executor::ExecutorError),
    /// Occurs when an object in the bucket is not what nbci wrote.
    #[error("{0}")]
    Corrupt(String),
}

impl CiError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CiError::GitHub(error) => error.is_transient(),
            CiError::Store(StoreError::Unavailable(_)) | CiError::Executor(_) => true,
            CiError::Auth(_) => true,
            CiError::Store(_) | CiError::Corrupt(_) => false,
        }
    }
}

/// What [`Ci::dispatch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Notebooks submitted, with their check runs.
    pub submitted: Vec<(String, CheckRunId)>,
    /// Notebooks already claimed for this commit by an earlier delivery.
    pub already_running: Vec<String>,
    /// Whether the changed files passed the cap (a note check says so).
    pub capped: bool,
}

/// What [`Ci::complete`] did with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The check run was completed.
    Completed(CheckRunId),
    /// This result was handled before (a duplicate event).
    Duplicate,
    /// No CI job is recorded for this result (a pipeline step, say).
    NotACiJob,
    /// The result belongs to an earlier attempt than the recorded job.
    Stale,
}

/// The CI flow with its adapters.
#[derive(Debug, Clone)]
pub struct Ci {
    github: GitHubClient,
    tokens: Arc<InstallationTokens>,
    store: Arc<dyn ObjectStore>,
    executor: Arc<dyn NotebookExecutor>,
    config: Arc<CiConfig>,
}

/// `ci/{owner}/{repo}/{sha}/{notebook}`: the bucket prefix of one CI run.
pub fn run_prefix(repo: &RepoRef, sha: &str, notebook: &str) -> String {
    format!("ci/{}/{}/{sha}/{notebook}", repo.owner(), repo.name())
}

/// `src/{owner}/{repo}/{sha}.tar.gz`: the staged source of a commit.
pub fn source_key(repo: &RepoRef, sha: &str) -> String {
    format!("src/{}/{}/{sha}.tar.gz", repo.owner(), repo.name())
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Ci {
    pub fn new(
        github: GitHubClient,
        tokens: Arc<InstallationTokens>,
        store: Arc<dyn ObjectStore>,
        executor: Arc<dyn NotebookExecutor>,
        config: CiConfig,
    ) -> Self {
        Self {
            github,
            tokens,
            store,
            executor,
            config: Arc::new(config),
        }
    }

    /// The link a person follows from the check run: the executed notebook as HTML.
    pub fn details_url(&self, prefix: &str) -> Option<String> {
        let base = self.config.public_url.as_deref()?;
        let mut url = format!(
            "{}/runs/{}/output.html",
            base.trim_end_matches('/'),
            crate::engine::encode_path(prefix)
        );
        if let Some(key) = &self.config.link_key {
            url.push_str("?token=");
            url.push_str(&view_token(key, prefix));
        }
        Some(url)
    }

    /// Creates the check runs of `trigger` and submits their jobs.
    pub async fn dispatch(&self, trigger: &Trigger) -> Result<DispatchReport, CiError> {
        let token = self.tokens.token(trigger.installation).await?;
        let mut report = DispatchReport::default();
        let notebooks = match (&trigger.only, &trigger.base) {
            (Some(only), _) => vec![only.clone()],
            (None, Some(base)) => {
                let changed = self
                    .github
                    .compare_changed_files(&trigger.repo, &token, base, &trigger.head_sha)
                    .await?;
                report.capped = changed.capped;
                changed
                    .files
                    .into_iter()
                    .filter(|file| file.status != FileStatus::Removed)
                    .map(|file| file.filename)
                    .filter(|path| is_notebook_path(path))
                    .collect()
            }
            (None, None) => Vec::new(),
        };
        let mut notebooks: Vec<String> = notebooks
            .into_iter()
            .filter(|path| crate::store::validate_key(path).is_ok())
            .collect();
        if notebooks.len() > self.config.max_notebooks {
            notebooks.truncate(self.config.max_notebooks);
            report.capped = true;
        }
        if notebooks.is_empty() {
            tracing::info!(delivery = %trigger.delivery, repo = %trigger.repo, sha = %trigger.head_sha, "no notebooks changed");
            return Ok(report);
        }
        self.stage_source(trigger, &token).await?;
        for notebook in notebooks {
            let prefix = run_prefix(&trigger.repo, &trigger.head_sha, &notebook);
            let claim_key = format!("{prefix}/claim");
            if !trigger.rerun && !crate::store::claim(self.store.as_ref(), &claim_key).await? {
                report.already_running.push(notebook);
                continue;
            }
            match self.submit(trigger, &token, &notebook, &prefix).await {
                Ok(id) => report.submitted.push((notebook, id)),
                Err(error) => {
                    // Give the notebook back so that a redelivery runs it.
                    if !trigger.rerun {
                        crate::store::release(self.store.as_ref(), &claim_key).await?;
                    }
                    return Err(error);
                }
            }
        }
        if report.capped {
            self.note_cap(trigger, &token).await?;
        }
        tracing::info!(
            delivery = %trigger.delivery,
            repo = %trigger.repo,
            sha = %trigger.head_sha,
            submitted = report.submitted.len(),
            already_running = report.already_running.len(),
            "dispatched notebook checks"
        );
        Ok(report)
    }

    async fn stage_source(&self, trigger: &Trigger, token: &Secret) -> Result<(), CiError> {
        let key = source_key(&trigger.repo, &trigger.head_sha);
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        let tarball = self
            .github
            .download_tarball(&trigger.repo, token, &trigger.head_sha)
            .await?;
        match self
            .store
            .put(
                &key,
                tarball.to_vec(),
                "application/gzip",
                Precondition::DoesNotExist,
            )
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn submit(
        &self,
        trigger: &Trigger,
        token: &Secret,
        notebook: &str,
        prefix: &str,
    ) -> Result<CheckRunId, CiError> {
        let name = checks::check_run_name(notebook);
        let id = self
            .github
            .create_check_run(
                &trigger.repo,
                token,
                &checks::queued(&name, &trigger.head_sha, prefix),
            )
            .await?;
        let job = Job {
            prefix: prefix.to_owned(),
            source: source_key(&trigger.repo, &trigger.head_sha),
            notebook: notebook.to_owned(),
            parameters: Default::default(),
            timeout_s: None,
            image: self.config.image.clone(),
        };
        let details_url = self.details_url(prefix);
        let record = JobRecord {
            job: job.clone(),
            installation: trigger.installation,
            repo: trigger.repo.to_string(),
            head_sha: trigger.head_sha.clone(),
            check_run_id: id,
            details_url: details_url.clone(),
            dispatched_at: now_seconds(),
        };
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| CiError::Corrupt(format!("cannot encode the job record: {e}")))?;
        self.store
            .put(
                &format!("{prefix}/job.json"),
                body,
                "application/json",
                Precondition::None,
            )
            .await?;
        // In progress before the job is submitted: a fast job's completion must
        // never be overtaken by this update.
        self.github
            .update_check_run(
                &trigger.repo,
                token,
                id,
                &checks::in_progress(details_url.as_deref()),
            )
            .await?;
        if let Err(error) = self.executor.submit(job.clone()).await {
            let outcome = crate::executor::infrastructure_failure(
                &job,
                &format!("the job could not be submitted: {error}"),
                self.store.as_ref(),
            );
            let body = checks::completed(&outcome, "", notebook, details_url.as_deref());
            self.github
                .update_check_run(&trigger.repo, token, id, &body)
                .await?;
            return Err(error.into());
        }
        Ok(id)
    }

    /// A neutral check saying that only the first notebooks were checked.
    async fn note_cap(&self, trigger: &Trigger, token: &Secret) -> Result<(), CiError> {
        let mut body = CreateCheckRun {
            name: "nbci".into(),
            head_sha: trigger.head_sha.clone(),
            details_url: None,
            external_id: None,
            status: Some(CheckStatus::Completed),
            started_at: None,
            conclusion: Some(Conclusion::Neutral),
            completed_at: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
            output: Some(CheckOutput {
                title: format!(
                    "Only the first {} changed notebooks were checked",
                    self.config.max_notebooks
                ),
                summary: format!(
                    "This commit changes more notebooks than nbci checks at once (the cap is {}, \
                     or GitHub's compare API listed only part of the files). Run `nbci check` \
                     locally to check them all.",
                    self.config.max_notebooks
                ),
                text: None,
                annotations: Vec::new(),
            }),
            actions: Vec::new(),
        };
        body.enforce_limits();
        self.github
            .create_check_run(&trigger.repo, token, &body)
            .await?;
        Ok(())
    }

    /// Completes the check run of the job whose result is at `result_key`.
    pub async fn complete(&self, result_key: &str) -> Result<Completion, CiError> {
        let Some(prefix) = result_key.strip_suffix("/result.json") else {
            return Ok(Completion::NotACiJob);
        };
        if !prefix.starts_with("ci/") {
            return Ok(Completion::NotACiJob);
        }
        let Some(record) = self.store.get(&format!("{prefix}/job.json")).await? else {
            return Ok(Completion::NotACiJob);
        };
        let record: JobRecord = serde_json::from_slice(&record.bytes)
            .map_err(|e| CiError::Corrupt(format!("{prefix}/job.json: {e}")))?;
        let done_key = format!("{prefix}/completed-{}", record.check_run_id);
        if self.store.get(&done_key).await?.is_some() {
            return Ok(Completion::Duplicate);
        }
        let Some(result) = self.store.get(result_key).await? else {
            return Err(CiError::Corrupt(format!(
                "{result_key} is announced but missing"
            )));
        };
        let outcome: Outcome = serde_json::from_slice(&result.bytes)
            .map_err(|e| CiError::Corrupt(format!("{result_key}: {e}")))?;
        if started_before(&outcome.started_at, record.dispatched_at) {
            return Ok(Completion::Stale);
        }
        let raw = match self.store.get(&record.job.input_key()).await? {
            Some(object) => String::from_utf8_lossy(&object.bytes).into_owned(),
            None => String::new(),
        };
        let repo = RepoRef::parse(&record.repo)
            .ok_or_else(|| CiError::Corrupt(format!("bad repository {:?}", record.repo)))?;
        let token = self.tokens.token(record.installation).await?;
        let body = checks::completed(
            &outcome,
            &raw,
            &record.job.notebook,
            record.details_url.as_deref(),
        );
        self.github
            .update_check_run(&repo, &token, record.check_run_id, &body)
            .await?;
        // Marked only after GitHub took it: a retry after a failure sends it again.
        crate::store::claim_once(self.store.as_ref(), &done_key).await?;
        tracing::info!(
            notebook = %record.job.notebook,
            status = %outcome.status,
            check_run = %record.check_run_id,
            "completed check run"
        );
        Ok(Completion::Completed(record.check_run_id))
    }

    /// Completes every result announced on `finalized` (the local stand-in for
    /// GCS finalize events), retrying transient failures a few times.
    pub async fn complete_from_queue(
        self,
        mut finalized: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        while let Some(key) = finalized.recv().await {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=5 {
                match self.complete(&key).await {
                    Ok(_) => break,
                    Err(error) if error.is_transient() && attempt < 5 => {
                        tracing::warn!(%key, %error, attempt, "completing a check failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(error) => {
                        tracing::error!(%key, %error, "cannot complete the check run");
                        break;
                    }
                }
            }
        }
    }
}

/// Whether an RFC 3339 time is more than a little before `epoch_seconds`
/// (a minute of slack for clocks of different machines).
fn started_before(started_at: &str, epoch_seconds: f64) -> bool {
    let Ok(started) = humantime::parse_rfc3339_weak(started_at) else {
        return false;
    };
    let started = started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    started + 60.0 < epoch_seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::events::parse_event;

    fn trigger(event: &str, file: &str) -> Option<Trigger> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/github")
            .join(file);
        let body = std::fs::read(path).expect("fixture");
        let event = parse_event(event, &body).expect("parses");
        Trigger::from_event(&event, "delivery")
    }

    const HEAD: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
    const BEFORE: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    #[test]
    fn each_event_names_its_commit_and_base() {
        let suite = trigger("check_suite", "check_suite.requested.json").expect("runs");
        assert_eq!(
            (suite.head_sha.as_str(), suite.base.as_deref()),
            (HEAD, Some(BEFORE))
        );
        assert!(!suite.rerun && suite.only.is_none());
        assert_eq!(suite.repo.to_string(), "Codertocat/Hello-World");

        let again = trigger("check_suite", "check_suite.rerequested.json").expect("runs");
        assert!(again.rerun, "a re-requested suite runs its notebooks again");

        let pr = trigger("pull_request", "pull_request.opened.json").expect("runs");
        assert_eq!(pr.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
        assert_eq!(pr.base.as_deref(), Some(HEAD));

        let push = trigger("push", "push.branch.json").expect("runs");
        assert_eq!(
            (push.head_sha.as_str(), push.base.as_deref()),
            (HEAD, Some(BEFORE))
        );

        let new_branch = trigger("push", "push.new-branch.json").expect("runs");
        assert_eq!(
            new_branch.base.as_deref(),
            Some("master"),
            "compared with the default branch"
        );
    }

    #[test]
    fn a_rerun_runs_only_its_notebook() {
        for file in [
            "check_run.rerequested.json",
            "check_run.requested_action.json",
        ] {
            let rerun = trigger("check_run", file).expect("runs");
            assert_eq!(
                rerun.only.as_deref(),
                Some("notebooks/broken.ipynb"),
                "{file}"
            );
            assert!(rerun.rerun && rerun.base.is_none(), "{file}");
        }
    }

    #[test]
    fn prefixes_and_links_are_stable() {
        let repo = RepoRef::parse("o/r").expect("repo");
        assert_eq!(
            run_prefix(&repo, "abc", "nb/x.ipynb"),
            "ci/o/r/abc/nb/x.ipynb"
        );
        assert_eq!(source_key(&repo, "abc"), "src/o/r/abc.tar.gz");
        assert_eq!(
            crate::engine::encode_path("ci/o/r/a b/ü.ipynb"),
            "ci/o/r/a%20b/%C3%BC.ipynb"
        );
        let key = Secret::new("k");
        assert_eq!(view_token(&key, "ci/x").len(), 32);
        assert_ne!(view_token(&key, "ci/x"), view_token(&key, "ci/y"));
    }

    #[test]
    fn results_from_before_the_dispatch_are_stale() {
        assert!(started_before("2020-01-01T00:00:00Z", 1_700_000_000.0));
        assert!(!started_before("2030-01-01T00:00:00Z", 1_700_000_000.0));
        assert!(!started_before("not a time", 1_700_000_000.0));
    }
}
