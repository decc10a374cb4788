//! Fakes of the outside world for flow tests: no Python, no HTTP. Each keeps
//! what a real service would hold (GitHub's check runs, an executor's jobs)
//! so that tests assert on the world's final state, and can inject faults.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::job::{Job, JobHandle, JobState};
use crate::domain::repo::{CheckRunId, CommitRef};
use crate::ports::RemoteError;
use crate::ports::check_runs::{CheckRunUpdate, CheckRuns};
use crate::ports::executor::{ExecutorError, NotebookExecutor};
use crate::ports::sources::{ChangedPaths, Sources};

/// The bus message of a check_suite delivery `delivery` of `o/r`.
pub fn dispatch(delivery: &str) -> crate::ports::bus::Message {
    crate::ports::bus::Message::Dispatch(crate::domain::trigger::Trigger {
        delivery: delivery.into(),
        installation: crate::domain::repo::InstallationId(7),
        repo: crate::domain::repo::RepoRef::parse("o/r").expect("repo"),
        head_sha: crate::domain::repo::CommitSha::try_from("a".repeat(40)).expect("sha"),
        base: Some("main".into()),
        only: None,
        rerun: false,
        git_ref: None,
    })
}

/// One check run as the fake GitHub holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRun {
    pub name: String,
    pub sha: String,
    pub external_id: String,
    /// queued, in_progress or completed.
    pub status: &'static str,
    /// success, failure, timed_out, cancelled, neutral.
    pub conclusion: Option<String>,
    pub title: Option<String>,
    pub details_url: Option<String>,
    /// Updates it received after creation.
    pub updates: usize,
    /// Updates that closed it (completed, cancelled, a note): GitHub shows
    /// the last, so a run closed twice may show a verdict that is not its own.
    pub completions: usize,
    /// What each of those closings said (`conclusion: title`): a closing
    /// repeated after a crash must say the same.
    pub closings: Vec<String>,
    /// Times its status was asked (`is_completed`).
    pub status_reads: usize,
}

/// What a faulty call does.
#[derive(Debug, Clone)]
pub enum CallFault {
    /// Fails before doing anything.
    Fail(RemoteError),
    /// Does the work, then fails as if the answer were lost.
    LoseAnswer,
    /// Panics (a bug in an adapter).
    Panic,
}

#[derive(Debug, Default)]
struct GitHubState {
    runs: BTreeMap<u64, FakeRun>,
    next: u64,
    /// Faults for the next calls of an operation ("find", "create", "update",
    /// "is_completed"),
    /// optionally only for one notebook's check (its name).
    faults: Vec<(String, Option<String>, VecDeque<CallFault>)>,
}

/// The check runs GitHub would hold.
#[derive(Debug, Default)]
pub struct FakeCheckRuns {
    state: Mutex<GitHubState>,
}

impl FakeCheckRuns {
    /// Arms `faults` for the next calls of `operation` (on `name` only, if given).
    pub fn inject(&self, operation: &str, name: Option<&str>, faults: Vec<CallFault>) {
        self.lock()
            .faults
            .push((operation.into(), name.map(str::to_owned), faults.into()));
    }

    pub fn runs(&self) -> BTreeMap<u64, FakeRun> {
        self.lock().runs.clone()
    }

    /// The runs of the check named `nbci / {notebook}`.
    pub fn runs_of(&self, notebook: &str) -> Vec<FakeRun> {
        let name = format!("nbci / {notebook}");
        self.runs()
            .into_values()
            .filter(|run| run.name == name)
            .collect()
    }

    /// Completes the run with `external_id` as a PATCH the flow did not see
    /// land would (`conclusion`: success, failure, ...).
    pub fn close_on_github(&self, external_id: &str, conclusion: &str) {
        let mut state = self.lock();
        for run in state.runs.values_mut() {
            if run.external_id == external_id {
                run.status = "completed";
                run.conclusion = Some(conclusion.to_owned());
                run.updates += 1;
                run.completions += 1;
                run.closings
                    .push(format!("{conclusion}: (closed on GitHub)"));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GitHubState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The name of run `id` (empty for an unknown run), which faults match.
    fn name_of(&self, id: CheckRunId) -> String {
        self.lock()
            .runs
            .get(&id.0)
            .map(|run| run.name.clone())
            .unwrap_or_default()
    }

    fn fault(&self, operation: &str, name: &str) -> Option<CallFault> {
        let mut state = self.lock();
        let entry = state.faults.iter_mut().find(|(op, only, queue)| {
            op == operation && only.as_deref().is_none_or(|n| n == name) && !queue.is_empty()
        })?;
        entry.2.pop_front()
    }
}

#[async_trait]
impl CheckRuns for FakeCheckRuns {
    async fn find(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<Vec<CheckRunId>, RemoteError> {
        match self.fault("find", name) {
            Some(CallFault::Fail(error)) => return Err(error),
            Some(CallFault::Panic) => panic!("injected panic in find"),
            _ => {}
        }
        Ok(self
            .lock()
            .runs
            .iter()
            .filter(|(_, run)| {
                run.name == name && run.external_id == external_id && run.sha == commit.sha.as_str()
            })
            .map(|(id, _)| CheckRunId(*id))
            .collect())
    }

    async fn create(
        &self,
        commit: &CommitRef,
        name: &str,
        external_id: &str,
    ) -> Result<CheckRunId, RemoteError> {
        let fault = self.fault("create", name);
        match &fault {
            Some(CallFault::Fail(error)) => return Err(error.clone()),
            Some(CallFault::Panic) => panic!("injected panic in create"),
            _ => {}
        }
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        state.runs.insert(
            id,
            FakeRun {
                name: name.into(),
                sha: commit.sha.as_str().into(),
                external_id: external_id.into(),
                status: "queued",
                conclusion: None,
                title: None,
                details_url: None,
                updates: 0,
                completions: 0,
                closings: Vec::new(),
                status_reads: 0,
            },
        );
        match fault {
            Some(CallFault::LoseAnswer) => {
                Err(RemoteError::transient("502 Bad Gateway (answer lost)"))
            }
            _ => Ok(CheckRunId(id)),
        }
    }

    async fn update(
        &self,
        _commit: &CommitRef,
        id: CheckRunId,
        update: &CheckRunUpdate,
    ) -> Result<(), RemoteError> {
        let fault = self.fault("update", &self.name_of(id));
        match &fault {
            Some(CallFault::Fail(error)) => return Err(error.clone()),
            Some(CallFault::Panic) => panic!("injected panic in update"),
            _ => {}
        }
        let mut state = self.lock();
        let Some(run) = state.runs.get_mut(&id.0) else {
            return Err(RemoteError::Permanent(format!("no check run {id}")));
        };
        run.updates += 1;
        if !matches!(update, CheckRunUpdate::InProgress { .. }) {
            run.completions += 1;
        }
        match update {
            CheckRunUpdate::InProgress { details_url } => {
                run.status = "in_progress";
                run.details_url = details_url.clone();
            }
            CheckRunUpdate::Completed { outcome, .. } => {
                run.status = "completed";
                run.conclusion = Some(
                    match outcome.status {
                        crate::domain::outcome::Status::Succeeded => "success",
                        crate::domain::outcome::Status::TimedOut => "timed_out",
                        _ => "failure",
                    }
                    .into(),
                );
                run.title = Some(outcome.headline());
            }
            CheckRunUpdate::Cancelled { title, .. } => {
                run.status = "completed";
                run.conclusion = Some("cancelled".into());
                run.title = Some(title.clone());
            }
            CheckRunUpdate::Note { title, .. } => {
                run.status = "completed";
                run.conclusion = Some("neutral".into());
                run.title = Some(title.clone());
            }
        }
        if run.status == "completed" {
            let closing = format!(
                "{}: {}",
                run.conclusion.as_deref().unwrap_or(""),
                run.title.as_deref().unwrap_or("")
            );
            run.closings.push(closing);
        }
        match fault {
            Some(CallFault::LoseAnswer) => {
                Err(RemoteError::transient("502 Bad Gateway (answer lost)"))
            }
            _ => Ok(()),
        }
    }

    async fn is_completed(&self, _commit: &CommitRef, id: CheckRunId) -> Result<bool, RemoteError> {
        match self.fault("is_completed", &self.name_of(id)) {
            Some(CallFault::Fail(error)) => return Err(error),
            Some(CallFault::Panic) => panic!("injected panic in is_completed"),
            Some(CallFault::LoseAnswer) => {
                return Err(RemoteError::transient("502 Bad Gateway (answer lost)"));
            }
            None => {}
        }
        let mut state = self.lock();
        let Some(run) = state.runs.get_mut(&id.0) else {
            return Err(RemoteError::Permanent(format!("no check run {id}")));
        };
        run.status_reads += 1;
        Ok(run.status == "completed")
    }

    fn check_name(&self, notebook: &str) -> String {
        format!("nbci / {notebook}")
    }
}

/// A repository whose every commit changes `paths` and holds `files`.
#[derive(Debug)]
pub struct FakeSources {
    pub paths: Vec<String>,
    pub archive: Vec<u8>,
    pub downloads: Mutex<usize>,
}

impl FakeSources {
    /// `files` as GitHub's tarball lays them out (one top-level directory).
    pub fn new(changed: &[&str], files: &[(&str, &[u8])]) -> Self {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("o-r-abc/{name}"), *bytes)
                .expect("append");
        }
        let archive = builder.into_inner().expect("tar").finish().expect("gzip");
        Self {
            paths: changed.iter().map(|p| (*p).to_owned()).collect(),
            archive,
            downloads: Mutex::new(0),
        }
    }
}

#[async_trait]
impl Sources for FakeSources {
    async fn changed_paths(
        &self,
        _commit: &CommitRef,
        _base: &str,
    ) -> Result<ChangedPaths, RemoteError> {
        Ok(ChangedPaths {
            paths: self.paths.clone(),
            capped: false,
        })
    }

    async fn branch_head(
        &self,
        repo: &crate::domain::repo::RepoRef,
        branch: Option<&str>,
    ) -> Result<(CommitRef, String), RemoteError> {
        Ok((
            CommitRef {
                installation: crate::domain::repo::InstallationId(1),
                repo: repo.clone(),
                sha: crate::domain::repo::CommitSha::try_from("b".repeat(40))
                    .map_err(RemoteError::Permanent)?,
            },
            branch.unwrap_or("main").to_owned(),
        ))
    }

    async fn download_archive(&self, _commit: &CommitRef, dest: &Path) -> Result<(), RemoteError> {
        *self.downloads.lock().expect("lock") += 1;
        std::fs::write(dest, &self.archive).map_err(|e| RemoteError::Permanent(e.to_string()))
    }
}

/// An executor that runs nothing: tests write results themselves.
#[derive(Debug, Default)]
pub struct FakeExecutor {
    pub submitted: Mutex<Vec<Job>>,
    pub cancelled: Mutex<Vec<JobHandle>>,
    pub states: Mutex<BTreeMap<String, JobState>>,
    pub faults: Mutex<VecDeque<ExecutorError>>,
}

impl FakeExecutor {
    pub fn submissions_of(&self, notebook: &str) -> Vec<Job> {
        self.submitted
            .lock()
            .expect("lock")
            .iter()
            .filter(|job| job.notebook == notebook)
            .cloned()
            .collect()
    }

    pub fn set_state(&self, handle: &JobHandle, state: JobState) {
        self.states
            .lock()
            .expect("lock")
            .insert(handle.0.clone(), state);
    }
}

#[async_trait]
impl NotebookExecutor for FakeExecutor {
    async fn submit(&self, job: &Job) -> Result<JobHandle, ExecutorError> {
        if let Some(error) = self.faults.lock().expect("lock").pop_front() {
            return Err(error);
        }
        let mut submitted = self.submitted.lock().expect("lock");
        submitted.push(job.clone());
        let handle = JobHandle(format!("fake:{}", submitted.len()));
        self.states
            .lock()
            .expect("lock")
            .insert(handle.0.clone(), JobState::Running);
        Ok(handle)
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobState, ExecutorError> {
        Ok(self
            .states
            .lock()
            .expect("lock")
            .get(&handle.0)
            .cloned()
            .unwrap_or(JobState::Unknown))
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ExecutorError> {
        self.cancelled.lock().expect("lock").push(handle.clone());
        self.states.lock().expect("lock").insert(
            handle.0.clone(),
            JobState::Cancelled {
                message: "cancelled".into(),
            },
        );
        Ok(())
    }
}

/// A deployer whose operations end after a few polls. Like the real ones,
/// it deploys a version once: a deploy repeated after a crash or a lost
/// answer (the same version) creates nothing and answers the same operation.
#[derive(Debug, Default)]
pub struct FakeDeployer {
    /// One request per version deployed.
    pub deployed: Mutex<Vec<crate::domain::deploy::DeployRequest>>,
    /// Every deploy call, repeats included.
    pub deploy_calls: Mutex<usize>,
    pub polls: Mutex<usize>,
    /// Polls answered pending before an operation is done.
    pub pending_polls: usize,
    pub serving: Mutex<Vec<String>>,
}

#[async_trait]
impl crate::ports::deployer::Deployer for FakeDeployer {
    async fn deploy(
        &self,
        request: &crate::domain::deploy::DeployRequest,
    ) -> Result<crate::domain::deploy::DeployOperation, RemoteError> {
        *self.deploy_calls.lock().expect("lock") += 1;
        let mut deployed = self.deployed.lock().expect("lock");
        if !deployed.iter().any(|d| d.version == request.version) {
            deployed.push(request.clone());
        }
        Ok(crate::domain::deploy::DeployOperation(format!(
            "op-{}",
            request.version
        )))
    }

    async fn poll(
        &self,
        request: &crate::domain::deploy::DeployRequest,
        _operation: &crate::domain::deploy::DeployOperation,
    ) -> Result<crate::domain::deploy::DeployStatus, RemoteError> {
        let mut polls = self.polls.lock().expect("lock");
        *polls += 1;
        if *polls <= self.pending_polls {
            return Ok(crate::domain::deploy::DeployStatus::Pending);
        }
        self.serving
            .lock()
            .expect("lock")
            .push(request.version.clone());
        Ok(crate::domain::deploy::DeployStatus::Deployed {
            version: request.version.clone(),
        })
    }

    async fn set_serving(&self, _model: &str, version: &str) -> Result<(), RemoteError> {
        self.serving.lock().expect("lock").push(version.to_owned());
        Ok(())
    }

    async fn serving(&self, _model: &str) -> Result<Option<String>, RemoteError> {
        Ok(self.serving.lock().expect("lock").last().cloned())
    }

    fn plan(
        &self,
        _request: &crate::domain::deploy::DeployRequest,
    ) -> Result<Vec<crate::domain::deploy::PlannedRequest>, RemoteError> {
        Ok(Vec::new())
    }
}

/// `put_file` of a test store that holds objects whole: reads the file and
/// puts its bytes (through `store.put`, so a [`FaultyStore`] counts the call).
/// Not a default of the port: a real store must stream the file.
async fn put_file_whole(
    store: &dyn crate::ports::store::ObjectStore,
    key: &str,
    path: &Path,
    content_type: &str,
    precondition: crate::ports::store::Precondition,
) -> Result<i64, crate::ports::store::StoreError> {
    let bytes = std::fs::read(path).map_err(|error| local_file_error(path, &error))?;
    store.put(key, bytes, content_type, precondition).await
}

fn local_file_error(path: &Path, error: &std::io::Error) -> crate::ports::store::StoreError {
    crate::ports::store::StoreError::LocalFile {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// A bucket in memory, with the generation semantics of GCS: every write
/// gets a new generation, never reused for a key (not even after a delete).
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, crate::ports::store::Object>>,
    generations: std::sync::atomic::AtomicI64,
}

impl MemoryStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, crate::ports::store::Object>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl crate::ports::store::ObjectStore for MemoryStore {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<crate::ports::store::Object>, crate::ports::store::StoreError> {
        crate::domain::layout::validate_key(key)?;
        Ok(self.objects().get(key).cloned())
    }

    async fn generation(&self, key: &str) -> Result<Option<i64>, crate::ports::store::StoreError> {
        Ok(self.objects().get(key).map(|object| object.generation))
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        _content_type: &str,
        precondition: crate::ports::store::Precondition,
    ) -> Result<i64, crate::ports::store::StoreError> {
        use crate::ports::store::{Object, Precondition, StoreError};
        crate::domain::layout::validate_key(key)?;
        let mut objects = self.objects();
        let current = objects.get(key).map(|object| object.generation);
        let holds = match precondition {
            Precondition::None => true,
            Precondition::DoesNotExist => current.is_none(),
            Precondition::Generation(generation) => current == Some(generation),
        };
        if !holds {
            return Err(StoreError::PreconditionFailed(key.to_owned()));
        }
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        objects.insert(key.to_owned(), Object { bytes, generation });
        Ok(generation)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        precondition: crate::ports::store::Precondition,
    ) -> Result<i64, crate::ports::store::StoreError> {
        put_file_whole(self, key, path, content_type, precondition).await
    }

    async fn get_to_file(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<bool, crate::ports::store::StoreError> {
        let Some(object) = self.get(key).await? else {
            return Ok(false);
        };
        std::fs::write(path, object.bytes).map_err(|error| local_file_error(path, &error))?;
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), crate::ports::store::StoreError> {
        self.objects().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::ports::store::StoreError> {
        Ok(self
            .objects()
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn uri(&self, key: &str) -> String {
        format!("mem://bucket/{key}")
    }
}

/// What a [`FaultyStore`] does to the calls of one process.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Calls made so far (every method but `uri`).
    pub calls: std::sync::atomic::AtomicUsize,
    /// The process dies at this call: it and every later call never return,
    /// so nothing after it happens (its tasks hang until the test drops them).
    pub die_at: Option<usize>,
    /// Writes (by call number) whose answer is lost: the write lands, and a
    /// conditional one answers `PreconditionFailed` (GCS's client retries an
    /// idempotent write and meets its own), an unconditional one `Unavailable`.
    pub lose_answer_at: std::collections::BTreeSet<usize>,
    /// Calls (by number) that fail with `Unavailable` and do nothing (an
    /// outage longer than the client's retries).
    pub fail_at: std::collections::BTreeSet<usize>,
    /// The process was killed ([`StoreFaults::kill`]): every call from now
    /// on never returns.
    pub killed: std::sync::atomic::AtomicBool,
}

impl StoreFaults {
    /// The calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the process died.
    pub fn dead(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::SeqCst)
            || self.die_at.is_some_and(|at| self.calls() > at)
    }

    /// Kills the process now: nothing it does reaches the bucket any more.
    pub fn kill(&self) {
        self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Counts a call; what to do with it.
    async fn next(&self) -> Result<Fate, crate::ports::store::StoreError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.killed.load(std::sync::atomic::Ordering::SeqCst)
            || self.die_at.is_some_and(|at| call >= at)
        {
            std::future::pending::<()>().await;
        }
        if self.fail_at.contains(&call) {
            return Err(crate::ports::store::StoreError::Unavailable(format!(
                "injected outage at call {call}"
            )));
        }
        Ok(if self.lose_answer_at.contains(&call) {
            Fate::LoseAnswer
        } else {
            Fate::Answer
        })
    }
}

/// What happens to one call's answer.
enum Fate {
    Answer,
    LoseAnswer,
}

/// One process's view of a shared bucket, with [`StoreFaults`].
#[derive(Debug, Clone)]
pub struct FaultyStore {
    pub inner: std::sync::Arc<dyn crate::ports::store::ObjectStore>,
    pub faults: std::sync::Arc<StoreFaults>,
}

#[async_trait]
impl crate::ports::store::ObjectStore for FaultyStore {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<crate::ports::store::Object>, crate::ports::store::StoreError> {
        self.faults.next().await?;
        self.inner.get(key).await
    }

    async fn generation(&self, key: &str) -> Result<Option<i64>, crate::ports::store::StoreError> {
        self.faults.next().await?;
        self.inner.generation(key).await
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        precondition: crate::ports::store::Precondition,
    ) -> Result<i64, crate::ports::store::StoreError> {
        use crate::ports::store::{Precondition, StoreError};
        let fate = self.faults.next().await?;
        let written = self.inner.put(key, bytes, content_type, precondition).await;
        match (fate, written) {
            (Fate::LoseAnswer, Ok(_)) if precondition == Precondition::None => Err(
                StoreError::Unavailable(format!("{key}: the answer was lost")),
            ),
            (Fate::LoseAnswer, Ok(_)) => Err(StoreError::PreconditionFailed(key.to_owned())),
            (_, written) => written,
        }
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        precondition: crate::ports::store::Precondition,
    ) -> Result<i64, crate::ports::store::StoreError> {
        put_file_whole(self, key, path, content_type, precondition).await
    }

    async fn get_to_file(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<bool, crate::ports::store::StoreError> {
        self.faults.next().await?;
        self.inner.get_to_file(key, path).await
    }

    async fn delete(&self, key: &str) -> Result<(), crate::ports::store::StoreError> {
        self.faults.next().await?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::ports::store::StoreError> {
        self.faults.next().await?;
        self.inner.list(prefix).await
    }

    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }
}
