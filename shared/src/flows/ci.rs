//! The CI flow: a trigger becomes one check run per changed notebook, each
//! carried to completion by its state machine (`domain::check`).
//!
//! - [`Ci::dispatch`] (a bus message, past the webhook's answer): list the
//!   changed notebooks, stage the commit's tarball in the bucket, read each
//!   notebook's metadata, and record one check per notebook (`check.json`
//!   plus an `active/` marker); then drive each on its own.
//! - [`Ci::drive`] performs a check's due steps under a lease: find or create
//!   the check run, write `job.json` and mark it in progress, submit the job,
//!   complete the check run. A step that fails transiently is tried again
//!   later (backoff, or the server's `Retry-After`) for as long as the check lives.
//! - [`Ci::on_result`] (a finalize event of a `result.json`): record the
//!   outcome in the check and complete it.
//! - [`Ci::sweep`] (Scheduler's tick, a server's start, a timer): drives every
//!   active check, and asks the executor about jobs still running, so that a
//!   job that died without a result, or outlived its timeout, is completed.
//!
//! At-least-once everywhere: a delivery may come twice, the check suite and
//! the push of one commit ask for the same work, events come out of order,
//! and any process may die between two lines. Each check is created once per
//! (repository, commit, notebook) with a create-only write; every transition
//! is a generation-conditional write; every side effect is safe to repeat,
//! and a check run's completion is sent once (after a try that may have sent
//! it, GitHub is asked first).
//! Only explicit re-runs run a notebook again, in a folder of their own.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::check::{CheckState, MAX_RESUBMISSIONS, Phase, Step, Superseded};
use crate::domain::job::{Job, JobOrigin, JobRecord, JobState, Machine};
use crate::domain::layout;
use crate::domain::lease::Leased;
use crate::domain::notebook::{Notebook, is_notebook_path};
use crate::domain::outcome::{Outcome, Status};
use crate::domain::repo::{CheckRunId, CommitRef};
use crate::domain::trigger::Trigger;
use crate::ports::RemoteError;
use crate::ports::check_runs::{CheckRunUpdate, CheckRuns};
use crate::ports::executor::{ExecutorError, NotebookExecutor};
use crate::ports::sources::Sources;
use crate::ports::store::{
    Change, JsonObjectError, ObjectStore, Precondition, StoreError, get_json, put_json, update_json,
};
use crate::util::retry::Backoff;
use crate::util::secret::Secret;
use crate::util::time::epoch_seconds;

/// The largest notebook whose metadata is read at dispatch; larger ones run
/// with the defaults and the runner reads their metadata.
const MAX_METADATA_READ: u64 = 64 << 20;

/// Most steps one [`Ci::drive`] call performs before yielding (a check has
/// seven at most; conflicts with other workers add a few).
const MAX_STEPS_PER_DRIVE: usize = 32;

/// Settings of the CI flow.
#[derive(Debug, Clone)]
pub struct CiSettings {
    /// Base URL under which executed notebooks are served (`NBCI_PUBLIC_URL`);
    /// without it check runs carry no details link.
    pub public_url: Option<String>,
    /// Key that signs details links (`?token=`), so that a public URL shows a
    /// private repository's executed notebooks only to those GitHub linked.
    pub link_key: Option<Secret>,
    /// At most this many notebooks per commit; a note check names the cap.
    pub max_notebooks: usize,
    /// The image jobs run in, unless a notebook's metadata names another.
    pub image: String,
    /// The machine jobs run on, unless a notebook's metadata says otherwise.
    pub machine: Machine,
    /// The whole-notebook limit of jobs whose notebook sets none.
    pub default_timeout: Option<Duration>,
    /// How long past its timeout a job may still be running before it is
    /// cancelled and its check completed as timed out.
    pub lost_job_grace: Duration,
    /// How long a worker holds a check while it performs a step.
    pub lease_ttl: Duration,
    /// Waits between attempts of a step that failed transiently.
    pub backoff: Backoff,
    /// This process's name in leases: different for every process (a
    /// restarted container has the same pid), so that leases of a dead
    /// process are recognised. Each drive holds `{worker}/{n}`.
    pub worker: String,
    /// Where dispatch downloads tarballs (`None`: the system's temporary directory).
    pub scratch_dir: Option<PathBuf>,
}

impl Default for CiSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            link_key: None,
            max_notebooks: 50,
            image: "local".into(),
            machine: Machine::default(),
            default_timeout: Some(Duration::from_secs(3600)),
            lost_job_grace: Duration::from_secs(600),
            lease_ttl: Duration::from_secs(300),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            worker: "nbci".into(),
            scratch_dir: None,
        }
    }
}

/// The token that opens the executed notebooks under `prefix`: the first 32 hex
/// digits of HMAC-SHA256(`key`, "view:" + prefix).
pub fn view_token(key: &Secret, prefix: &str) -> String {
    let mut token = crate::util::hmac::hmac_sha256_hex(
        key.expose().as_bytes(),
        format!("view:{prefix}").as_bytes(),
    );
    token.truncate(32);
    token
}

/// Why the flow failed; transient causes are worth a retry (the bus
/// redelivers, the platform gets a 503).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CiError {
    /// Occurs when the bucket fails, or holds an object nbci did not write.
    #[error(transparent)]
    Bucket(#[from] JsonObjectError),
    /// Occurs when the code host fails while dispatching.
    #[error("code host: {0}")]
    Remote(#[from] RemoteError),
    /// Occurs when the commit's archive cannot be read.
    #[error("the commit's archive: {0}")]
    Archive(String),
}

impl From<StoreError> for CiError {
    fn from(error: StoreError) -> Self {
        Self::Bucket(error.into())
    }
}

impl CiError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CiError::Bucket(error) => error.is_transient(),
            CiError::Remote(error) => error.is_transient(),
            CiError::Archive(_) => true,
        }
    }
}

/// What [`Ci::dispatch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchSummary {
    /// Notebooks that got a new check (or a new attempt of one).
    pub accepted: Vec<String>,
    /// Notebooks already checked or being checked for this commit.
    pub already_running: Vec<String>,
    /// Notebook paths that cannot be checked (too long for the bucket); a
    /// note check names them.
    pub unstorable: Vec<String>,
    /// Whether the changed files passed the cap (a note check says so).
    pub capped: bool,
}

/// What [`Ci::on_result`] did with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultHandling {
    /// The outcome was recorded; the check is being completed.
    Recorded,
    /// Nothing changed: the result was handled before, or belongs to an
    /// attempt that a re-run superseded.
    Unchanged,
    /// No CI job is recorded for this result (someone else's object).
    NotACiJob,
}

/// What [`Ci::sweep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Active checks looked at.
    pub checks: usize,
    /// Jobs that ended without a result, or past their deadline, whose
    /// checks were completed.
    pub lost_jobs: usize,
    /// Jobs the executor no longer knew, submitted again.
    pub resubmitted: usize,
}

/// The CI flow over its ports.
#[derive(Debug, Clone)]
pub struct Ci {
    store: Arc<dyn ObjectStore>,
    executor: Arc<dyn NotebookExecutor>,
    checks: Arc<dyn CheckRuns>,
    sources: Arc<dyn Sources>,
    settings: Arc<CiSettings>,
    /// Drives and timers spawned past a caller's answer, drained at shutdown.
    tracker: TaskTracker,
    /// Cancelled at shutdown: timers stop waiting.
    shutdown: CancellationToken,
    /// Numbers the drives of this process, so that two concurrent drives of
    /// one check in one process exclude each other too.
    drives: Arc<std::sync::atomic::AtomicU64>,
}

fn now() -> f64 {
    epoch_seconds(SystemTime::now())
}

impl Ci {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        executor: Arc<dyn NotebookExecutor>,
        checks: Arc<dyn CheckRuns>,
        sources: Arc<dyn Sources>,
        settings: CiSettings,
    ) -> Self {
        Self {
            store,
            executor,
            checks,
            sources,
            settings: Arc::new(settings),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            drives: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// The flow's background work, for a server to drain at shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Stops timers and refuses new background work; then wait on [`Ci::tracker`].
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
    }

    /// The link a person follows from the check run: the executed notebook as HTML.
    pub fn details_url(&self, job_prefix: &str) -> Option<String> {
        let base = self.settings.public_url.as_deref()?;
        let mut url =
            crate::util::uri::join_path(base, &format!("runs/{job_prefix}/{}", layout::HTML_FILE))?;
        if let Some(key) = &self.settings.link_key {
            url.query_pairs_mut()
                .append_pair("token", &view_token(key, job_prefix));
        }
        Some(url.to_string())
    }

    /// Records a check for every notebook `trigger` asks for, then drives each.
    pub async fn dispatch(&self, trigger: &Trigger) -> Result<DispatchSummary, CiError> {
        let commit = trigger.commit();
        let mut summary = DispatchSummary::default();
        let mut notebooks: Vec<String> = match (&trigger.only, &trigger.base) {
            (Some(only), _) => vec![only.clone()],
            (None, Some(base)) => {
                let changed = self.sources.changed_paths(&commit, base).await?;
                summary.capped = changed.capped;
                changed.paths
            }
            (None, None) => Vec::new(),
        };
        let mut seen = HashSet::new();
        notebooks.retain(|path| is_notebook_path(path) && seen.insert(path.clone()));
        if notebooks.len() > self.settings.max_notebooks {
            notebooks.truncate(self.settings.max_notebooks);
            summary.capped = true;
        }

        // Which notebooks need a new check (or a new attempt)?
        let mut fresh: Vec<(String, String)> = Vec::new();
        for notebook in notebooks {
            let prefix = match layout::check_prefix(&trigger.repo, &trigger.head_sha, &notebook) {
                Ok(prefix) => prefix,
                Err(error) => {
                    tracing::warn!(%notebook, %error, "a notebook path the bucket cannot store");
                    summary.unstorable.push(notebook);
                    continue;
                }
            };
            let existing: Option<(CheckState, i64)> =
                get_json(self.store.as_ref(), &layout::check_state_key(&prefix)).await?;
            match existing {
                Some((state, _)) if !trigger.rerun || state.caused_by(&trigger.delivery) => {
                    summary.already_running.push(notebook);
                    self.spawn_drive(prefix);
                }
                _ => fresh.push((notebook, prefix)),
            }
        }

        if !fresh.is_empty() {
            let metadata = self.stage_source(&commit, &fresh).await?;
            for (notebook, prefix) in &fresh {
                let spec = metadata.get(notebook.as_str());
                if self.record_check(trigger, notebook, prefix, spec).await? {
                    summary.accepted.push(notebook.clone());
                } else {
                    summary.already_running.push(notebook.clone());
                }
                self.spawn_drive(prefix.clone());
            }
        }

        if summary.capped {
            self.note_once(
                &commit,
                &format!("nbci-cap/{}", trigger.head_sha),
                format!(
                    "Only the first {} changed notebooks were checked",
                    self.settings.max_notebooks
                ),
                format!(
                    "This commit changes more notebooks than nbci checks at once (the cap is {}, \
                     or GitHub's compare API listed only part of the files). Run `nbci check` \
                     locally to check them all.",
                    self.settings.max_notebooks
                ),
            )
            .await?;
        }
        if !summary.unstorable.is_empty() {
            let list: Vec<String> = summary
                .unstorable
                .iter()
                .map(|path| format!("- `{}`", path.replace('`', "'")))
                .collect();
            self.note_once(
                &commit,
                &format!("nbci-unstorable/{}", trigger.head_sha),
                format!(
                    "{} notebook path(s) cannot be checked",
                    summary.unstorable.len()
                ),
                format!(
                    "These paths are too long to name objects in the bucket (at most 1024 \
                     bytes, 255 per folder or file name), so nbci cannot run them:\n\n{}",
                    list.join("\n")
                ),
            )
            .await?;
        }
        tracing::info!(
            delivery = %trigger.delivery,
            repo = %trigger.repo,
            sha = %trigger.head_sha,
            accepted = summary.accepted.len(),
            already_running = summary.already_running.len(),
            unstorable = summary.unstorable.len(),
            "dispatched notebook checks"
        );
        Ok(summary)
    }

    /// Makes sure the commit's tarball is in the bucket, and reads the
    /// metadata of `notebooks` from it: for each, the environment it asks for,
    /// or why its metadata is unusable. Notebooks that cannot be read here
    /// (missing, not JSON) are left to the runner, which says why.
    async fn stage_source(
        &self,
        commit: &CommitRef,
        notebooks: &[(String, String)],
    ) -> Result<
        std::collections::HashMap<String, Result<crate::domain::notebook::EnvironmentSpec, String>>,
        CiError,
    > {
        let key = layout::source_key(&commit.repo, &commit.sha);
        let scratch =
            crate::util::fs::private_tempdir("nbci-src-", self.settings.scratch_dir.as_deref())
                .map_err(|error| CiError::Archive(format!("no scratch directory: {error}")))?;
        let archive = scratch.path().join("source.tar.gz");
        if !self.store.get_to_file(&key, &archive).await? {
            self.sources.download_archive(commit, &archive).await?;
            match self
                .store
                .put_file(
                    &key,
                    &archive,
                    "application/gzip",
                    Precondition::DoesNotExist,
                )
                .await
            {
                Ok(_) | Err(StoreError::PreconditionFailed(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let wanted: HashSet<String> = notebooks.iter().map(|(path, _)| path.clone()).collect();
        let files = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&archive)?;
            crate::util::archive::read_files(
                std::io::BufReader::new(file),
                &wanted,
                MAX_METADATA_READ,
            )
            .map_err(std::io::Error::other)
        })
        .await
        .map_err(|error| CiError::Archive(error.to_string()))?
        .map_err(|error| CiError::Archive(error.to_string()))?;
        Ok(files
            .into_iter()
            .filter_map(|(path, bytes)| {
                let notebook = Notebook::parse(std::path::Path::new(&path), &bytes).ok()?;
                let spec = notebook
                    .environment()
                    .map_err(|reason| format!("{path}: {reason}"));
                Some((path, spec))
            })
            .collect())
    }

    /// The job of attempt `attempt` of a notebook, or the outcome that says
    /// why it cannot run (unusable metadata).
    fn prepare_job(
        &self,
        commit: &CommitRef,
        notebook: &str,
        prefix: &str,
        attempt: u32,
        spec: Option<&Result<crate::domain::notebook::EnvironmentSpec, String>>,
    ) -> crate::domain::check::Prepared {
        let mut job = Job {
            prefix: layout::attempt_prefix(prefix, attempt),
            source: layout::source_key(&commit.repo, &commit.sha),
            notebook: notebook.to_owned(),
            parameters: Default::default(),
            timeout_s: None,
            image: self.settings.image.clone(),
            machine: self.settings.machine.clone(),
        };
        match spec {
            Some(Err(reason)) => Err(Box::new(Outcome::invalid_notebook(
                notebook,
                reason,
                self.store.uri(&job.input_key()),
                Default::default(),
                &job.image,
                crate::util::time::now_rfc3339(),
            ))),
            Some(Ok(spec)) => {
                job.apply_environment(spec, self.settings.default_timeout);
                Ok(job)
            }
            None => {
                if let Some(timeout) = self.settings.default_timeout {
                    job.timeout_s = Some(timeout.as_secs_f64());
                }
                Ok(job)
            }
        }
    }

    /// Records a new check (or a new attempt for a re-run); false when the
    /// check exists already and this trigger adds nothing.
    async fn record_check(
        &self,
        trigger: &Trigger,
        notebook: &str,
        prefix: &str,
        spec: Option<&Result<crate::domain::notebook::EnvironmentSpec, String>>,
    ) -> Result<bool, CiError> {
        let commit = trigger.commit();
        let key = layout::check_state_key(prefix);
        // The marker first: a check without one would never be swept.
        self.store
            .put(
                &layout::active_key(prefix),
                Vec::new(),
                "text/plain",
                Precondition::None,
            )
            .await?;
        let state = CheckState::accept(
            commit.clone(),
            notebook,
            prefix,
            self.prepare_job(&commit, notebook, prefix, 1, spec),
            &trigger.delivery,
            now(),
        );
        match put_json(
            self.store.as_ref(),
            &key,
            &state,
            Precondition::DoesNotExist,
        )
        .await
        {
            Ok(_) => return Ok(true),
            Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => {}
            Err(error) => return Err(error.into()),
        }
        if !trigger.rerun {
            return Ok(false);
        }
        let rerun = update_json(
            self.store.as_ref(),
            &key,
            MAX_STEPS_PER_DRIVE,
            |current: Option<CheckState>| {
                let Some(current) = current else {
                    return Change::ReadAgain;
                };
                match current.rerun(&trigger.delivery, now(), |attempt| {
                    self.prepare_job(&commit, notebook, prefix, attempt, spec)
                }) {
                    Some(next) => {
                        let attempt = next.attempt;
                        Change::Write(next, Some(attempt))
                    }
                    None => Change::Keep(None),
                }
            },
        )
        .await;
        match rerun {
            Ok(Some(attempt)) => {
                tracing::info!(%notebook, attempt, "re-running a notebook");
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(JsonObjectError::KeepsChanging { .. }) => {
                Err(StoreError::Unavailable(format!("{key} keeps changing under a re-run")).into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A neutral note check on the commit, created once (found by its
    /// external id before one is created).
    async fn note_once(
        &self,
        commit: &CommitRef,
        external_id: &str,
        title: String,
        summary: String,
    ) -> Result<(), CiError> {
        let name = "nbci";
        if !self
            .checks
            .find(commit, name, external_id)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let id = self.checks.create(commit, name, external_id).await?;
        self.checks
            .update(commit, id, &CheckRunUpdate::Note { title, summary })
            .await?;
        Ok(())
    }

    fn spawn_drive(&self, prefix: String) {
        let ci = self.clone();
        let trace = crate::http::current_trace();
        self.tracker.spawn(crate::http::keep_trace(trace, async move {
            if let Err(error) = ci.drive(&prefix).await {
                tracing::warn!(check = %prefix, %error, "a check step failed; the next sweep tries again");
            }
        }));
    }

    /// Wakes the check at `prefix` at `at` (seconds since the epoch).
    fn wake_at(&self, prefix: String, at: f64) {
        let ci = self.clone();
        let wait = Duration::try_from_secs_f64((at - now()).max(0.0)).unwrap_or(Duration::MAX);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(24 * 3600))) => {
                    if let Err(error) = ci.drive(&prefix).await {
                        tracing::warn!(check = %prefix, %error, "a check step failed; the next sweep tries again");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Performs the due steps of the check at `prefix` until it waits for
    /// something (a job, a backoff, another worker's lease) or is done.
    pub async fn drive(&self, prefix: &str) -> Result<(), CiError> {
        let key = layout::check_state_key(prefix);
        let holder = format!(
            "{}/{}",
            self.settings.worker,
            self.drives
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for _ in 0..MAX_STEPS_PER_DRIVE {
            let Some((state, generation)) =
                get_json::<CheckState>(self.store.as_ref(), &key).await?
            else {
                return Ok(());
            };
            let now = now();
            let step = state.next_step(now);
            match step {
                Step::Done => {
                    self.store.delete(&layout::active_key(prefix)).await?;
                    return Ok(());
                }
                Step::WaitUntil(at) => {
                    if !self.shutdown.is_cancelled() {
                        self.wake_at(prefix.to_owned(), at);
                    }
                    return Ok(());
                }
                Step::Watch => return Ok(()),
                _ => {}
            }
            if state.leased_by_other(&holder, now) {
                return Ok(());
            }
            let leased = state.leased_for(&step, &holder, now, self.settings.lease_ttl);
            let generation = match put_json(
                self.store.as_ref(),
                &key,
                &leased,
                Precondition::Generation(generation),
            )
            .await
            {
                Ok(generation) => generation,
                Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(error) => return Err(error.into()),
            };
            // A panic in an adapter is a bug, but it must cost only this
            // check a retry: the step runs in its own task.
            let performed = tokio::spawn({
                let ci = self.clone();
                let leased = leased.clone();
                async move { ci.perform(&leased, step).await }
            })
            .await;
            let next = match performed {
                Ok(Ok(next)) => next,
                Ok(Err(error)) => {
                    // The bucket failed inside the step (a write whose answer
                    // was lost, an outage): give the lease back, so that the
                    // redelivery or the next sweep tries again now rather
                    // than after NBCI_LEASE_TTL. Best effort: if this write
                    // fails too, the lease expires.
                    let _ = put_json(
                        self.store.as_ref(),
                        &key,
                        &leased.released(),
                        Precondition::Generation(generation),
                    )
                    .await;
                    return Err(error);
                }
                Err(panic) => {
                    tracing::error!(check = %prefix, error = %panic, "a check step panicked; trying again later");
                    let wait = self.settings.backoff.delay(leased.retry.failures.saturating_add(1));
                    leased.failed_transiently(&format!("a step panicked: {panic}"), now, wait)
                }
            }
            .released();
            match put_json(
                self.store.as_ref(),
                &key,
                &next,
                Precondition::Generation(generation),
            )
            .await
            {
                // Someone wrote in between (a result was recorded): read again.
                Ok(_) | Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// One step's side effect, and the state it leads to. Failures of the
    /// outside world become states (backoff, abandoned); only the bucket's
    /// own failures are errors.
    async fn perform(&self, state: &CheckState, step: Step) -> Result<CheckState, CiError> {
        let commit = &state.commit;
        let retry_later = |error: &RemoteError| {
            let wait = self
                .settings
                .backoff
                .delay_with_hint(state.retry.failures.saturating_add(1), error.retry_after());
            tracing::warn!(check = %state.prefix, %error, wait_s = wait.as_secs(), "a check step failed; trying again later");
            state.failed_transiently(&error.to_string(), now(), wait)
        };
        match step {
            Step::CloseSuperseded(superseded) => Ok(self
                .close_superseded(state, &superseded)
                .await
                .map_or_else(|error| retry_later(&error), |()| state.superseded_closed())),
            Step::EnsureCheckRun => {
                let name = self.checks.check_name(&state.notebook);
                let external_id = state.external_id();
                let found = match self.checks.find(commit, &name, &external_id).await {
                    Ok(found) => found,
                    Err(error) if error.is_transient() => return Ok(retry_later(&error)),
                    Err(error) => return Ok(self.abandon(state, &error)),
                };
                if let Some((first, extra)) = found.split_first() {
                    for duplicate in extra {
                        // Left by an earlier version that retried creations blindly.
                        let _ = self
                            .checks
                            .update(
                                commit,
                                *duplicate,
                                &CheckRunUpdate::Cancelled {
                                    title: "Duplicate".into(),
                                    summary: "Another check run reports this notebook.".into(),
                                },
                            )
                            .await;
                    }
                    return Ok(state.check_run_ensured(*first));
                }
                match self.checks.create(commit, &name, &external_id).await {
                    Ok(id) => Ok(state.check_run_ensured(id)),
                    Err(error) if error.is_transient() => Ok(retry_later(&error)),
                    Err(error) => Ok(self.abandon(state, &error)),
                }
            }
            Step::Start => {
                let Some(job) = &state.job else {
                    return Ok(state.started(None));
                };
                let record = JobRecord {
                    job: job.clone(),
                    origin: JobOrigin::Check {
                        check: state.prefix.clone(),
                        attempt: state.attempt,
                    },
                    handle: None,
                };
                put_json(
                    self.store.as_ref(),
                    &job.record_key(),
                    &record,
                    Precondition::None,
                )
                .await?;
                let details_url = self.details_url(&job.prefix);
                let Some(id) = state.check_run else {
                    return Ok(state.started(details_url));
                };
                let update = CheckRunUpdate::InProgress {
                    details_url: details_url.clone(),
                };
                match self.checks.update(commit, id, &update).await {
                    Ok(()) => Ok(state.started(details_url)),
                    Err(error) if error.is_transient() => Ok(retry_later(&error)),
                    Err(error) => {
                        // Not worth stopping for: the completion says it all.
                        tracing::warn!(check = %state.prefix, %error, "GitHub refused the in-progress update");
                        Ok(state.started(details_url))
                    }
                }
            }
            Step::Submit => {
                let Some(job) = &state.job else {
                    return Ok(state.started(None));
                };
                match self.executor.submit(job).await {
                    Ok(handle) => {
                        let record = JobRecord {
                            job: job.clone(),
                            origin: JobOrigin::Check {
                                check: state.prefix.clone(),
                                attempt: state.attempt,
                            },
                            handle: Some(handle.clone()),
                        };
                        if let Err(error) = put_json(
                            self.store.as_ref(),
                            &job.record_key(),
                            &record,
                            Precondition::None,
                        )
                        .await
                        {
                            tracing::warn!(check = %state.prefix, %error, "cannot record the job's handle in job.json");
                        }
                        tracing::info!(check = %state.prefix, %handle, "submitted the notebook's job");
                        Ok(state.submitted(handle, now()))
                    }
                    Err(ExecutorError::Unavailable(reason)) => {
                        Ok(retry_later(&RemoteError::transient(reason)))
                    }
                    Err(error) => {
                        let outcome = self.without_result(job, Status::Error, &error.to_string());
                        Ok(state
                            .outcome_known(state.attempt, outcome)
                            .unwrap_or_else(|| state.clone()))
                    }
                }
            }
            Step::Complete { verify_first } => {
                let Some(outcome) = &state.outcome else {
                    // Cannot happen (Finishing always has an outcome); finish anyway.
                    return Ok(state.completed());
                };
                let Some(id) = state.check_run else {
                    return Ok(state.completed());
                };
                if verify_first {
                    match self.closed_already(state, id).await {
                        Ok(true) => return Ok(state.completed()),
                        Ok(false) => {}
                        Err(error) => return Ok(retry_later(&error)),
                    }
                }
                let committed = match self
                    .store
                    .get(&layout::job_file(
                        &state.attempt_prefix(),
                        layout::INPUT_FILE,
                    ))
                    .await?
                {
                    Some(object) => String::from_utf8_lossy(&object.bytes).into_owned(),
                    None => String::new(),
                };
                let update = CheckRunUpdate::Completed {
                    notebook: state.notebook.clone(),
                    outcome: Box::new(outcome.clone()),
                    committed,
                    details_url: state.details_url.clone(),
                };
                match self.checks.update(commit, id, &update).await {
                    Ok(()) => {
                        tracing::info!(check = %state.prefix, status = %outcome.status, check_run = %id, "completed the check run");
                        Ok(state.completed())
                    }
                    Err(error) if error.is_transient() => Ok(retry_later(&error)),
                    Err(error) => {
                        // GitHub refused the body: send the verdict alone.
                        tracing::warn!(check = %state.prefix, %error, "GitHub refused the completion; sending a plain one");
                        let mut plain = outcome.clone();
                        plain.failed_cell = None;
                        plain.parameters.clear();
                        let update = CheckRunUpdate::Completed {
                            notebook: state.notebook.clone(),
                            outcome: Box::new(plain),
                            committed: String::new(),
                            details_url: None,
                        };
                        match self.checks.update(commit, id, &update).await {
                            Ok(()) => Ok(state.completed()),
                            Err(error) if error.is_transient() => Ok(retry_later(&error)),
                            Err(error) => Ok(self.abandon(state, &error)),
                        }
                    }
                }
            }
            Step::Watch | Step::WaitUntil(_) | Step::Done => Ok(state.clone()),
        }
    }

    fn abandon(&self, state: &CheckState, error: &RemoteError) -> CheckState {
        tracing::error!(check = %state.prefix, %error, "the code host refused for good; abandoning the check");
        state.abandon(&error.to_string())
    }

    async fn close_superseded(
        &self,
        state: &CheckState,
        superseded: &Superseded,
    ) -> Result<(), RemoteError> {
        if let Some(handle) = &superseded.handle
            && let Err(error) = self.executor.cancel(handle).await
        {
            tracing::warn!(check = %state.prefix, %handle, %error, "cannot cancel a superseded job");
        }
        if let Some(id) = superseded.check_run {
            // Its own verdict may have landed as the re-run came, or an
            // earlier try of this step (whose process died) closed it.
            if self.closed_already(state, id).await? {
                return Ok(());
            }
            let update = CheckRunUpdate::Cancelled {
                title: "Superseded by a re-run".into(),
                summary: format!(
                    "This run (attempt {}) was still going when the notebook was run again; \
                     attempt {} reports its verdict.",
                    superseded.attempt, state.attempt
                ),
            };
            match self.checks.update(&state.commit, id, &update).await {
                Ok(()) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::warn!(check = %state.prefix, %error, "GitHub refused to close a superseded run");
                }
            }
        }
        Ok(())
    }

    /// Whether check run `id` is closed (completed) on GitHub already: asked
    /// before a closing that may have been sent before, so that a run is
    /// closed once. When GitHub refuses for good to say, closing is what is
    /// left to do: `false` (logged). A transient failure is returned.
    async fn closed_already(
        &self,
        state: &CheckState,
        id: CheckRunId,
    ) -> Result<bool, RemoteError> {
        match self.checks.is_completed(&state.commit, id).await {
            Ok(true) => {
                tracing::info!(check = %state.prefix, check_run = %id, "the check run is completed already (on GitHub); not completing it again");
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                tracing::warn!(check = %state.prefix, %error, "cannot ask GitHub whether the check run is completed; completing it");
                Ok(false)
            }
        }
    }

    fn without_result(&self, job: &Job, status: Status, reason: &str) -> Outcome {
        Outcome::without_result(
            job,
            status,
            reason,
            self.store.uri(&job.output_key()),
            crate::util::time::now_rfc3339(),
        )
    }

    /// Handles a `result.json` that landed in the job folder `job_prefix`.
    pub async fn on_result(&self, job_prefix: &str) -> Result<ResultHandling, CiError> {
        let record_key = layout::job_file(job_prefix, layout::JOB_FILE);
        let Some((record, _)) = get_json::<JobRecord>(self.store.as_ref(), &record_key).await?
        else {
            return Ok(ResultHandling::NotACiJob);
        };
        let JobOrigin::Check { check, attempt } = &record.origin else {
            return Ok(ResultHandling::NotACiJob);
        };
        let result_key = record.job.result_key();
        let Some(result) = self.store.get(&result_key).await? else {
            return Ok(ResultHandling::Unchanged);
        };
        let outcome = Outcome::from_json(&result.bytes).unwrap_or_else(|reason| {
            self.without_result(
                &record.job,
                Status::Error,
                &format!("the job's result.json is unreadable: {reason}"),
            )
        });
        let handling = self.record_outcome(check, *attempt, outcome).await?;
        if handling == ResultHandling::Recorded {
            self.spawn_drive(check.clone());
        }
        Ok(handling)
    }

    /// Records `outcome` for `attempt` of the check at `prefix`, once.
    async fn record_outcome(
        &self,
        prefix: &str,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<ResultHandling, CiError> {
        let handling = update_json(
            self.store.as_ref(),
            &layout::check_state_key(prefix),
            MAX_STEPS_PER_DRIVE,
            |state: Option<CheckState>| {
                let Some(state) = state else {
                    return Change::Keep(ResultHandling::NotACiJob);
                };
                match state.outcome_known(attempt, outcome.clone()) {
                    Some(next) => Change::Write(next, ResultHandling::Recorded),
                    None => Change::Keep(ResultHandling::Unchanged),
                }
            },
        )
        .await?;
        Ok(handling)
    }

    /// Looks at every active check: completes those whose job ended without
    /// a result or outlived its deadline, submits again jobs the executor
    /// lost, and performs every step that is due. With `void_leases`, leases
    /// of other workers are ignored (a server that owns its bucket alone,
    /// starting after a crash).
    pub async fn sweep(&self, void_leases: bool) -> Result<SweepSummary, CiError> {
        let mut summary = SweepSummary::default();
        for marker in self.store.list(&layout::active_checks_prefix()).await? {
            let Some(prefix) = layout::check_of_active_key(&marker) else {
                continue;
            };
            summary.checks += 1;
            match self.sweep_one(prefix, void_leases).await {
                Ok(SweepResult::Lost) => summary.lost_jobs += 1,
                Ok(SweepResult::Resubmitted) => summary.resubmitted += 1,
                Ok(SweepResult::Nothing) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => tracing::error!(check = %prefix, %error, "cannot sweep a check"),
            }
            if let Err(error) = self.drive(prefix).await {
                tracing::warn!(check = %prefix, %error, "a check step failed; the next sweep tries again");
            }
        }
        if summary.lost_jobs > 0 || summary.resubmitted > 0 {
            tracing::info!(
                checks = summary.checks,
                lost = summary.lost_jobs,
                resubmitted = summary.resubmitted,
                "swept active checks"
            );
        }
        Ok(summary)
    }

    async fn sweep_one(&self, prefix: &str, void_leases: bool) -> Result<SweepResult, CiError> {
        let key = layout::check_state_key(prefix);
        let Some((mut state, mut generation)) =
            get_json::<CheckState>(self.store.as_ref(), &key).await?
        else {
            return Ok(SweepResult::Nothing);
        };
        let now = now();
        let mine = format!("{}/", self.settings.worker);
        let held = |state: &CheckState| state.lease.as_ref().is_some_and(|lease| lease.until > now);
        let of_a_dead_process = state
            .lease
            .as_ref()
            .is_some_and(|lease| !lease.holder.starts_with(&mine));
        if void_leases && held(&state) && of_a_dead_process {
            generation = put_json(
                self.store.as_ref(),
                &key,
                &state.released(),
                Precondition::Generation(generation),
            )
            .await?;
            state = state.released();
        }
        if state.phase != Phase::Running || held(&state) {
            return Ok(SweepResult::Nothing);
        }
        let (Some(job), Some(handle)) = (&state.job, &state.handle) else {
            return Ok(SweepResult::Nothing);
        };
        if self.store.generation(&job.result_key()).await?.is_some() {
            // The finalize event was missed (a crash): handle it now.
            self.on_result(&job.prefix).await?;
            return Ok(SweepResult::Nothing);
        }
        let job_state = match self.executor.status(handle).await {
            Ok(job_state) => job_state,
            Err(error) => {
                tracing::warn!(check = %prefix, %error, "cannot ask the executor about a job");
                return Ok(SweepResult::Nothing);
            }
        };
        let lost = match job_state {
            JobState::Pending | JobState::Running => {
                let grace = self.settings.lost_job_grace;
                match state.overdue_at(grace) {
                    Some(at) if now > at => {
                        if let Err(error) = self.executor.cancel(handle).await {
                            tracing::warn!(check = %prefix, %error, "cannot cancel an overdue job");
                        }
                        let limit = job.timeout().map_or(0, |t| t.as_secs());
                        Some((
                            Status::TimedOut,
                            format!(
                                "the job ran past its timeout of {limit} s plus {} s of grace and was cancelled",
                                grace.as_secs()
                            ),
                        ))
                    }
                    _ => None,
                }
            }
            JobState::Unknown if state.resubmissions < MAX_RESUBMISSIONS => {
                match put_json(
                    self.store.as_ref(),
                    &key,
                    &state.resubmit(),
                    Precondition::Generation(generation),
                )
                .await
                {
                    Ok(_) | Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => {}
                    Err(error) => return Err(error.into()),
                }
                tracing::warn!(check = %prefix, %handle, "the executor lost the job; submitting it again");
                return Ok(SweepResult::Resubmitted);
            }
            JobState::Unknown => Some((
                Status::Error,
                format!(
                    "the executor lost the job {} times",
                    state.resubmissions + 1
                ),
            )),
            JobState::Succeeded => Some((
                Status::Error,
                "the job ended without writing result.json".into(),
            )),
            JobState::Failed { message } => {
                Some((Status::Error, format!("the job failed: {message}")))
            }
            JobState::Cancelled { message } => {
                Some((Status::Error, format!("the job was cancelled: {message}")))
            }
        };
        let Some((status, reason)) = lost else {
            return Ok(SweepResult::Nothing);
        };
        // The result may have landed while the executor was asked.
        if self.store.generation(&job.result_key()).await?.is_some() {
            self.on_result(&job.prefix).await?;
            return Ok(SweepResult::Nothing);
        }
        tracing::warn!(check = %prefix, %reason, "completing the check of a lost job");
        let outcome = self.without_result(job, status, &reason);
        self.record_outcome(prefix, state.attempt, outcome).await?;
        Ok(SweepResult::Lost)
    }
}

/// What sweeping one check did.
enum SweepResult {
    Nothing,
    Lost,
    Resubmitted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::store::LocalDirStore;
    use crate::domain::job::JobHandle;
    use crate::domain::repo::{CommitSha, InstallationId, RepoRef};
    use crate::testing::{CallFault, FakeCheckRuns, FakeExecutor, FakeSources};

    #[test]
    fn links_are_signed_per_folder() {
        let key = Secret::new("k");
        assert_eq!(view_token(&key, "ci/x").len(), 32);
        assert_ne!(view_token(&key, "ci/x"), view_token(&key, "ci/y"));
    }

    const SHA: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";

    fn notebook(metadata: &str) -> Vec<u8> {
        format!(
            r#"{{"nbformat": 4, "nbformat_minor": 5, "metadata": {metadata},
               "cells": [{{"cell_type": "code", "source": "1", "metadata": {{}}, "outputs": [], "execution_count": null}}]}}"#
        )
        .into_bytes()
    }

    struct World {
        _dir: tempfile::TempDir,
        store: Arc<LocalDirStore>,
        checks: Arc<FakeCheckRuns>,
        executor: Arc<FakeExecutor>,
        ci: Ci,
    }

    fn world(changed: &[&str], files: &[(&str, &[u8])]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        let checks = Arc::new(FakeCheckRuns::default());
        let executor = Arc::new(FakeExecutor::default());
        let sources = Arc::new(FakeSources::new(changed, files));
        let ci = Ci::new(
            store.clone(),
            executor.clone(),
            checks.clone(),
            sources,
            CiSettings {
                public_url: Some("http://nbci.test".into()),
                link_key: Some(Secret::new("k")),
                backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
                lost_job_grace: Duration::from_secs(1),
                scratch_dir: Some(dir.path().join("scratch")),
                ..CiSettings::default()
            },
        );
        World {
            _dir: dir,
            store,
            checks,
            executor,
            ci,
        }
    }

    fn trigger(delivery: &str, rerun: bool, only: Option<&str>) -> Trigger {
        Trigger {
            delivery: delivery.into(),
            installation: InstallationId(1),
            repo: RepoRef::parse("o/r").expect("repo"),
            head_sha: CommitSha::try_from(SHA.to_owned()).expect("sha"),
            base: Some("main".into()),
            only: only.map(str::to_owned),
            rerun,
            git_ref: None,
        }
    }

    impl World {
        /// Writes the result a job would write, and delivers its finalize event.
        async fn finish(&self, job: &Job, status: Status) {
            let outcome = Outcome::without_result(
                job,
                status,
                "done",
                "file:///o".into(),
                crate::util::time::now_rfc3339(),
            );
            self.store
                .put(
                    &job.result_key(),
                    outcome.to_json(),
                    "application/json",
                    Precondition::None,
                )
                .await
                .expect("result");
            self.ci.on_result(&job.prefix).await.expect("on_result");
        }

        /// Waits until `done` holds for the fake GitHub (drives run in the background).
        async fn until(&self, what: &str, done: impl Fn(&FakeCheckRuns) -> bool) {
            for _ in 0..500 {
                if done(&self.checks) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("timed out waiting for {what}: {:#?}", self.checks.runs());
        }

        async fn state(&self, notebook: &str) -> CheckState {
            let prefix = layout::check_prefix(
                &RepoRef::parse("o/r").expect("repo"),
                &CommitSha::try_from(SHA.to_owned()).expect("sha"),
                notebook,
            )
            .expect("prefix");
            get_json::<CheckState>(self.store.as_ref(), &layout::check_state_key(&prefix))
                .await
                .expect("read")
                .expect("state")
                .0
        }
    }

    fn submitted_once(world: &World, notebook: &str) -> bool {
        world.executor.submissions_of(notebook).len() == 1
    }

    #[tokio::test]
    async fn each_notebook_gets_one_check_that_ends_completed() {
        let good = notebook("{}");
        let world = world(
            &["a.ipynb", "b.ipynb", "README.md"],
            &[("a.ipynb", &good), ("b.ipynb", &good)],
        );
        let summary = world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        assert_eq!(summary.accepted, vec!["a.ipynb", "b.ipynb"]);
        world
            .until("in progress", |c| {
                c.runs()
                    .values()
                    .filter(|r| r.status == "in_progress")
                    .count()
                    == 2
            })
            .await;
        assert!(submitted_once(&world, "a.ipynb") && submitted_once(&world, "b.ipynb"));
        let a = world.executor.submissions_of("a.ipynb").remove(0);
        assert_eq!(
            a.timeout(),
            Some(Duration::from_secs(3600)),
            "the default timeout applies"
        );
        let details = world.checks.runs_of("a.ipynb")[0]
            .details_url
            .clone()
            .expect("link");
        assert!(
            details.starts_with("http://nbci.test/runs/ci/o/r/") && details.contains("token="),
            "{details}"
        );

        // The same commit again (the push after the check suite): nothing new.
        let again = world
            .ci
            .dispatch(&trigger("d2", false, None))
            .await
            .expect("dispatch");
        assert_eq!(again.already_running.len(), 2);

        world.finish(&a, Status::Succeeded).await;
        world
            .finish(&world.executor.submissions_of("b.ipynb")[0], Status::Failed)
            .await;
        world
            .until("completed", |c| {
                c.runs().values().all(|r| r.status == "completed")
            })
            .await;
        assert_eq!(
            world.checks.runs_of("a.ipynb")[0].conclusion.as_deref(),
            Some("success")
        );
        assert_eq!(
            world.checks.runs_of("b.ipynb")[0].conclusion.as_deref(),
            Some("failure")
        );
        // A duplicate finalize event changes nothing.
        assert_eq!(
            world.ci.on_result(&a.prefix).await.expect("again"),
            ResultHandling::Unchanged
        );
        assert_eq!(world.checks.runs().len(), 2, "one run per notebook");
        assert!(
            world
                .checks
                .runs()
                .values()
                .all(|r| r.completions == 1 && r.status_reads == 0),
            "completed once, without asking GitHub first: {:#?}",
            world.checks.runs()
        );
        world.until("markers removed", |_| true).await;
        let _ = world.ci.sweep(false).await.expect("sweep");
        assert!(world.store.list("active/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_lost_creation_answer_leaves_no_second_run() {
        let good = notebook("{}");
        let world = world(&["a.ipynb"], &[("a.ipynb", &good)]);
        world
            .checks
            .inject("create", None, vec![CallFault::LoseAnswer]);
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("in progress", |c| {
                c.runs().values().any(|r| r.status == "in_progress")
            })
            .await;
        assert_eq!(
            world.checks.runs().len(),
            1,
            "found by external id, not created twice"
        );
    }

    #[tokio::test]
    async fn github_outages_are_retried_until_it_takes_the_update() {
        let good = notebook("{}");
        let world = world(&["a.ipynb"], &[("a.ipynb", &good)]);
        let outage = |n| vec![CallFault::Fail(RemoteError::transient("502")); n];
        world.checks.inject("update", None, outage(3));
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("in progress", |c| {
                c.runs().values().any(|r| r.status == "in_progress")
            })
            .await;
        world.checks.inject("update", None, outage(4));
        world
            .finish(
                &world.executor.submissions_of("a.ipynb")[0],
                Status::Succeeded,
            )
            .await;
        world
            .until("completed", |c| {
                c.runs().values().all(|r| r.status == "completed")
            })
            .await;
        assert_eq!(world.checks.runs().len(), 1);
        assert_eq!(world.state("a.ipynb").await.phase, Phase::Completed);
    }

    /// A commit changing `a.ipynb` (which passes), dispatched, its check
    /// run in progress.
    async fn one_notebook_in_progress() -> World {
        let good = notebook("{}");
        let world = world(&["a.ipynb"], &[("a.ipynb", &good)]);
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("in progress", |c| {
                c.runs().values().any(|r| r.status == "in_progress")
            })
            .await;
        world
    }

    /// Runs `a.ipynb` until it is in progress, arms `faults` (operation and
    /// its faults), finishes the job, and waits until its check is completed
    /// on GitHub and in the bucket.
    async fn complete_with_faults(faults: &[(&str, Vec<CallFault>)]) -> World {
        let world = one_notebook_in_progress().await;
        for (operation, faults) in faults {
            world.checks.inject(operation, None, faults.clone());
        }
        world
            .finish(
                &world.executor.submissions_of("a.ipynb")[0],
                Status::Succeeded,
            )
            .await;
        for _ in 0..500 {
            if world.state("a.ipynb").await.phase == Phase::Completed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(world.state("a.ipynb").await.phase, Phase::Completed);
        world
    }

    #[tokio::test]
    async fn a_completion_whose_answer_was_lost_is_not_sent_again() {
        // GitHub completes the run but its answer is lost; the first ask
        // whether it is completed fails too (transiently).
        let world = complete_with_faults(&[
            ("update", vec![CallFault::LoseAnswer]),
            (
                "is_completed",
                vec![CallFault::Fail(RemoteError::transient("503"))],
            ),
        ])
        .await;
        let run = &world.checks.runs_of("a.ipynb")[0];
        assert_eq!(
            (run.status, run.conclusion.as_deref()),
            ("completed", Some("success"))
        );
        assert_eq!(run.completions, 1, "completed once: {run:#?}");
        assert_eq!(run.status_reads, 1, "{run:#?}");
    }

    #[tokio::test]
    async fn a_completion_that_did_not_land_is_sent_again_even_if_github_cannot_say() {
        // The completion fails before GitHub takes it; asking GitHub then
        // fails for good: completing is what is left to do.
        let world = complete_with_faults(&[
            (
                "update",
                vec![CallFault::Fail(RemoteError::transient("502"))],
            ),
            (
                "is_completed",
                vec![CallFault::Fail(RemoteError::Permanent(
                    "404 Not Found".into(),
                ))],
            ),
        ])
        .await;
        let run = &world.checks.runs_of("a.ipynb")[0];
        assert_eq!(
            (run.status, run.conclusion.as_deref()),
            ("completed", Some("success"))
        );
        assert_eq!(run.completions, 1, "{run:#?}");
    }

    #[tokio::test]
    async fn a_rerun_cancels_the_running_attempt_and_runs_in_its_own_folder() {
        let world = one_notebook_in_progress().await;
        let first = world.executor.submissions_of("a.ipynb").remove(0);
        world
            .ci
            .dispatch(&trigger("d2", true, Some("a.ipynb")))
            .await
            .expect("rerun");
        world
            .ci
            .dispatch(&trigger("d2", true, Some("a.ipynb")))
            .await
            .expect("the same rerun again");
        world
            .until("two runs", |c| {
                c.runs().len() == 2 && c.runs().values().any(|r| r.status == "in_progress")
            })
            .await;
        let runs = world.checks.runs_of("a.ipynb");
        assert_eq!(
            runs[0].conclusion.as_deref(),
            Some("cancelled"),
            "{runs:#?}"
        );
        assert_eq!(world.executor.cancelled.lock().expect("lock").len(), 1);
        let second = world.executor.submissions_of("a.ipynb").remove(1);
        assert!(second.prefix.ends_with("/attempts/2"), "{}", second.prefix);
        assert_eq!(
            world.executor.submissions_of("a.ipynb").len(),
            2,
            "the repeated rerun added nothing"
        );
        // The first attempt's result arrives late: it completes nothing.
        world.finish(&first, Status::Succeeded).await;
        assert_eq!(world.checks.runs_of("a.ipynb")[1].status, "in_progress");
        world.finish(&second, Status::Failed).await;
        world
            .until("second completed", |c| {
                c.runs_of("a.ipynb")[1].status == "completed"
            })
            .await;
        assert_eq!(
            world.checks.runs_of("a.ipynb")[1].conclusion.as_deref(),
            Some("failure")
        );
    }

    #[tokio::test]
    async fn a_rerun_leaves_a_superseded_run_that_is_closed_already_as_it_is() {
        let world = one_notebook_in_progress().await;
        // The first attempt's verdict lands on GitHub just as the re-run
        // comes (or an earlier try closed it and died before recording so).
        let first = world.checks.runs_of("a.ipynb");
        world
            .checks
            .close_on_github(&first[0].external_id, "success");
        world
            .ci
            .dispatch(&trigger("d2", true, Some("a.ipynb")))
            .await
            .expect("rerun");
        world
            .until("two runs", |c| {
                c.runs().len() == 2 && c.runs().values().any(|r| r.status == "in_progress")
            })
            .await;
        let runs = world.checks.runs_of("a.ipynb");
        assert_eq!(runs[0].conclusion.as_deref(), Some("success"), "{runs:#?}");
        assert_eq!(runs[0].completions, 1, "closed once: {runs:#?}");
        assert_eq!(runs[0].status_reads, 1, "{runs:#?}");
    }

    #[tokio::test]
    async fn bad_metadata_fails_the_check_with_its_reason_and_runs_nothing() {
        let bad = notebook(r#"{"nbci": {"timeout": "soon"}}"#);
        let huge = notebook(r#"{"nbci": {"timeout": 1e30}}"#);
        let world = world(
            &["bad.ipynb", "huge.ipynb"],
            &[("bad.ipynb", &bad), ("huge.ipynb", &huge)],
        );
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("completed", |c| {
                c.runs().len() == 2 && c.runs().values().all(|r| r.status == "completed")
            })
            .await;
        for name in ["bad.ipynb", "huge.ipynb"] {
            let run = &world.checks.runs_of(name)[0];
            assert_eq!(run.conclusion.as_deref(), Some("failure"), "{run:?}");
            assert!(world.executor.submissions_of(name).is_empty());
            let state = world.state(name).await;
            let message = state.outcome.and_then(|o| o.message).unwrap_or_default();
            assert!(message.contains("metadata.nbci.timeout"), "{message}");
        }
    }

    #[tokio::test]
    async fn an_unstorable_path_gets_a_note_and_holds_up_no_other_notebook() {
        let good = notebook("{}");
        let long = format!("{}.ipynb", "n".repeat(300));
        let world = world(&[long.as_str(), "a.ipynb"], &[("a.ipynb", &good)]);
        let summary = world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        assert_eq!(summary.unstorable, vec![long]);
        world.until("note and check", |c| c.runs().len() == 2).await;
        let note = world
            .checks
            .runs()
            .into_values()
            .find(|r| r.name == "nbci")
            .expect("note");
        assert_eq!(note.conclusion.as_deref(), Some("neutral"));
        assert!(submitted_once(&world, "a.ipynb"));
    }

    #[tokio::test]
    async fn a_panicking_adapter_affects_only_its_own_check() {
        let good = notebook("{}");
        let world = world(
            &["a.ipynb", "b.ipynb"],
            &[("a.ipynb", &good), ("b.ipynb", &good)],
        );
        world
            .checks
            .inject("create", Some("nbci / a.ipynb"), vec![CallFault::Panic]);
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("b in progress", |c| {
                c.runs_of("b.ipynb")
                    .first()
                    .is_some_and(|r| r.status == "in_progress")
            })
            .await;
        world
            .finish(
                &world.executor.submissions_of("b.ipynb")[0],
                Status::Succeeded,
            )
            .await;
        world
            .until("b completed", |c| {
                c.runs_of("b.ipynb")[0].status == "completed"
            })
            .await;
        // The panicked step is done again by the next sweep (its lease expires,
        // or the server that owns the bucket voids it at start).
        world.ci.sweep(true).await.expect("sweep");
        world
            .until("a in progress", |c| {
                c.runs_of("a.ipynb")
                    .first()
                    .is_some_and(|r| r.status == "in_progress")
            })
            .await;
        assert_eq!(world.checks.runs_of("a.ipynb").len(), 1);
    }

    #[tokio::test]
    async fn sweeps_complete_lost_and_overdue_jobs_and_resubmit_unknown_ones() {
        let good = notebook("{}");
        let quick = notebook(r#"{"nbci": {"timeout": 0.05}}"#);
        let world = world(
            &["failed.ipynb", "unknown.ipynb", "overdue.ipynb"],
            &[
                ("failed.ipynb", &good),
                ("unknown.ipynb", &good),
                ("overdue.ipynb", &quick),
            ],
        );
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        world
            .until("running", |c| {
                c.runs()
                    .values()
                    .filter(|r| r.status == "in_progress")
                    .count()
                    == 3
            })
            .await;
        for _ in 0..100 {
            if world.state("overdue.ipynb").await.phase == Phase::Running
                && world.state("failed.ipynb").await.phase == Phase::Running
                && world.state("unknown.ipynb").await.phase == Phase::Running
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let failed = world.state("failed.ipynb").await.handle.expect("handle");
        world.executor.set_state(
            &failed,
            JobState::Failed {
                message: "image pull failed".into(),
            },
        );
        let unknown = world.state("unknown.ipynb").await.handle.expect("handle");
        world
            .executor
            .states
            .lock()
            .expect("lock")
            .remove(&unknown.0);
        tokio::time::sleep(Duration::from_millis(1200)).await; // past the overdue job's timeout + grace
        let summary = world.ci.sweep(false).await.expect("sweep");
        assert_eq!(
            (summary.lost_jobs, summary.resubmitted),
            (2, 1),
            "{summary:?}"
        );
        world
            .until("lost ones completed", |c| {
                c.runs_of("failed.ipynb")[0].status == "completed"
                    && c.runs_of("overdue.ipynb")[0].status == "completed"
            })
            .await;
        assert_eq!(
            world.checks.runs_of("overdue.ipynb")[0]
                .conclusion
                .as_deref(),
            Some("timed_out")
        );
        let title = world.checks.runs_of("failed.ipynb")[0]
            .title
            .clone()
            .unwrap_or_default();
        assert!(title.contains("image pull failed"), "{title}");
        assert!(
            world
                .executor
                .cancelled
                .lock()
                .expect("lock")
                .iter()
                .any(|h| *h != JobHandle(String::new()))
        );
        world
            .until("resubmitted", |_| {
                world.executor.submissions_of("unknown.ipynb").len() == 2
            })
            .await;
    }

    #[tokio::test]
    async fn a_permanent_refusal_abandons_the_check() {
        let good = notebook("{}");
        let world = world(&["a.ipynb"], &[("a.ipynb", &good)]);
        world.checks.inject(
            "create",
            None,
            vec![CallFault::Fail(RemoteError::Permanent(
                "404 Not Found".into(),
            ))],
        );
        world
            .ci
            .dispatch(&trigger("d1", false, None))
            .await
            .expect("dispatch");
        for _ in 0..200 {
            if world.state("a.ipynb").await.phase == Phase::Abandoned {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(world.state("a.ipynb").await.phase, Phase::Abandoned);
        assert!(world.executor.submitted.lock().expect("lock").is_empty());
    }
}
