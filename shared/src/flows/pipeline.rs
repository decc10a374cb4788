//! The CD flow: a pipeline run carried from its first step to a deployed
//! model (or a clear refusal), one persisted transition at a time.
//!
//! - [`Pipelines::start`] admits a trigger through the pipeline's lock (one
//!   run at a time: a second trigger is queued, a third replaces the queued
//!   one, a repeat is skipped), records the run's `state.json`, and drives it.
//! - [`Pipelines::drive`] performs the run's due actions under a lease:
//!   submit the next step's job, decide the gate on `metrics.json`, start the
//!   deployment, poll it. A transient failure waits (backoff) and tries again.
//! - [`Pipelines::on_result`] (a step's `result.json` landed) records the
//!   step's outcome and drives on: the next step, the gate, or a failed run.
//! - [`Pipelines::sweep`] (a tick) finds steps whose job died without a
//!   result or outlived its timeout, and polls deployments.
//!
//! Every transition is a generation-conditional write of the run's state
//! (`domain::pipeline::run` decides which transitions an event allows), so
//! duplicated and reordered events submit each step once and deploy at most
//! once; a killed process leaves a state the next event or tick resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::check::MAX_RESUBMISSIONS;
use crate::domain::deploy::{DeployStatus, PlannedRequest};
use crate::domain::job::{JobRecord, JobState};
use crate::domain::layout;
use crate::domain::lease::Leased;
use crate::domain::outcome::{Outcome, Status};
use crate::domain::pipeline::PipelineSpec;
use crate::domain::pipeline::spec::DeployTarget;
use crate::domain::pipeline::{
    Admission, DeployedHistory, DeployedVersion, Pipeline, PipelineLock, PipelineRun, RunAction,
    RunId, RunTrigger,
};
use crate::domain::repo::{CommitRef, RepoRef};
use crate::domain::trigger::Trigger;
use crate::ports::RemoteError;
use crate::ports::deployer::Deployer;
use crate::ports::executor::{ExecutorError, NotebookExecutor};
use crate::ports::sources::Sources;
use crate::ports::store::{
    Change, JsonObjectError, ObjectStore, Precondition, StoreError, get_json, put_json, update_json,
};
use crate::util::retry::Backoff;
use crate::util::time::epoch_seconds;

/// Most actions one [`Pipelines::drive`] performs before yielding.
const MAX_ACTIONS_PER_DRIVE: usize = 64;

/// Settings of the CD flow.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// The image step jobs run in, unless the step or its notebook names another.
    pub image: String,
    /// Where the bucket's objects are as the steps see them: the directory
    /// bucket's `objects` folder, or `gs://BUCKET`. A run's `artifacts_dir`
    /// is this plus the run's folder.
    pub artifacts_root: String,
    /// The limit of steps that set none.
    pub default_timeout: Option<Duration>,
    /// How long past its timeout a step's job may run before it is cancelled.
    pub lost_job_grace: Duration,
    pub lease_ttl: Duration,
    /// Waits between attempts of an action that failed transiently.
    pub backoff: Backoff,
    /// Waits between polls of a deployment.
    pub deploy_poll: Backoff,
    /// This process's name in leases.
    pub worker: String,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            image: "local".into(),
            artifacts_root: String::new(),
            default_timeout: Some(Duration::from_secs(3600)),
            lost_job_grace: Duration::from_secs(600),
            lease_ttl: Duration::from_secs(300),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            deploy_poll: Backoff::new(Duration::from_secs(5), Duration::from_secs(60)),
            worker: "nbci".into(),
        }
    }
}

/// The deployers this process has, by target.
#[derive(Debug, Clone, Default)]
pub struct Deployers {
    by_target: Vec<(DeployTarget, Arc<dyn Deployer>)>,
}

impl Deployers {
    /// Adds (or replaces) the deployer of `target`.
    pub fn with(mut self, target: DeployTarget, deployer: Arc<dyn Deployer>) -> Self {
        self.by_target.retain(|(t, _)| *t != target);
        self.by_target.push((target, deployer));
        self
    }

    pub fn get(&self, target: DeployTarget) -> Option<&Arc<dyn Deployer>> {
        self.by_target
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, deployer)| deployer)
    }
}

/// Why the flow failed; transient causes are worth a retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Occurs when the bucket fails, or holds an object nbci did not write.
    #[error(transparent)]
    Bucket(#[from] JsonObjectError),
    /// Occurs when a deployer refuses or cannot be reached.
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// Occurs when the pipeline cannot do what was asked (no deployer for
    /// its target, no previous version to roll back to).
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for PipelineError {
    fn from(error: StoreError) -> Self {
        Self::Bucket(error.into())
    }
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Bucket(error) => error.is_transient(),
            Self::Remote(error) => error.is_transient(),
            Self::Refused(_) => false,
        }
    }
}

/// What [`Pipelines::start`] did with a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The run started.
    Running(RunId),
    /// Another run is active: this one waits; `replaced` was waiting and is dropped.
    Queued {
        run_id: RunId,
        replaced: Option<RunId>,
    },
    /// Nothing new: the same run is already active or queued.
    Skipped { reason: &'static str },
}

/// What [`Pipelines::on_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepHandling {
    Recorded,
    /// A duplicate, a stale result, or no pipeline step at all.
    Unchanged,
}

/// The CD flow over its ports.
#[derive(Debug, Clone)]
pub struct Pipelines {
    store: Arc<dyn ObjectStore>,
    executor: Arc<dyn NotebookExecutor>,
    /// The code host, for runs started by a push or a schedule (`None` on
    /// one machine, where `nbci pipeline run` stages the source itself).
    sources: Option<Arc<dyn Sources>>,
    deployers: Deployers,
    settings: Arc<PipelineSettings>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    drives: Arc<AtomicU64>,
}

fn now() -> f64 {
    epoch_seconds(SystemTime::now())
}

impl Pipelines {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        executor: Arc<dyn NotebookExecutor>,
        deployers: Deployers,
        settings: PipelineSettings,
    ) -> Self {
        Self {
            store,
            executor,
            sources: None,
            deployers,
            settings: Arc::new(settings),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            drives: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The flow with a code host: pushes and schedules can start runs.
    pub fn with_sources(mut self, sources: Arc<dyn Sources>) -> Self {
        self.sources = Some(sources);
        self
    }

    /// Stages the commit's tarball (once) and reads its `nbci.yaml`;
    /// `None` when the commit has none.
    async fn spec_at(
        &self,
        commit: &CommitRef,
    ) -> Result<Option<(PipelineSpec, String)>, PipelineError> {
        let Some(sources) = &self.sources else {
            return Err(PipelineError::Refused(
                "no code host is configured here".into(),
            ));
        };
        let key = layout::source_key(&commit.repo, &commit.sha);
        let scratch = tempfile::Builder::new()
            .prefix("nbci-spec-")
            .tempdir()
            .map_err(|error| PipelineError::from(StoreError::Unavailable(error.to_string())))?;
        let archive = scratch.path().join("source.tar.gz");
        if !self.store.get_to_file(&key, &archive).await? {
            sources.download_archive(commit, &archive).await?;
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
        let read = tokio::task::spawn_blocking(move || {
            let open = || std::fs::File::open(&archive).map(std::io::BufReader::new);
            let wanted = std::collections::HashSet::from([layout::PIPELINE_SPEC_FILE.to_owned()]);
            let spec = crate::util::archive::read_files(open()?, &wanted, 1 << 20)
                .map_err(std::io::Error::other)?;
            let names = crate::util::archive::file_names(open()?).map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>((spec, names))
        })
        .await
        .map_err(|error| PipelineError::from(StoreError::Unavailable(error.to_string())))?
        .map_err(|error| PipelineError::from(StoreError::Unavailable(error.to_string())))?;
        let (files, names) = read;
        let Some(text) = files.get(layout::PIPELINE_SPEC_FILE) else {
            return Ok(None);
        };
        let spec = PipelineSpec::parse(&String::from_utf8_lossy(text), |path| names.contains(path))
            .map_err(|errors| {
                PipelineError::Refused(format!(
                    "{}@{}: nbci.yaml is invalid:\n{errors}",
                    commit.repo,
                    commit.sha.as_str().get(..7).unwrap_or("")
                ))
            })?;
        Ok(Some((spec, key)))
    }

    /// A push moved a branch: the pipelines of that branch start a run at
    /// the pushed commit. Answers what each did.
    pub async fn on_push(
        &self,
        trigger: &Trigger,
    ) -> Result<Vec<(String, Started)>, PipelineError> {
        let Some(git_ref) = &trigger.git_ref else {
            return Ok(Vec::new());
        };
        let commit = trigger.commit();
        let Some((spec, source)) = self.spec_at(&commit).await? else {
            return Ok(Vec::new());
        };
        let mut started = Vec::new();
        for pipeline in spec.started_by_push(git_ref) {
            let run_trigger = RunTrigger::new(
                jiff::Timestamp::now(),
                commit.sha.as_str(),
                crate::domain::pipeline::RunCause::Push {
                    git_ref: git_ref.clone(),
                    delivery: trigger.delivery.clone(),
                },
            )
            .map_err(|error| PipelineError::Refused(error.to_string()))?;
            // A run's id is the time it was asked for: a push redelivered a
            // second later (the bus delivers at least once; a process killed
            // before acknowledging gets it again) would ask for another run
            // of the same push, which would deploy again. The first delivery
            // records its trigger; every later one reuses it.
            let key = layout::pipeline_push_key(&pipeline.name, &trigger.delivery);
            let run_trigger = match put_json(
                self.store.as_ref(),
                &key,
                &run_trigger,
                Precondition::DoesNotExist,
            )
            .await
            {
                Ok(_) => run_trigger,
                Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => {
                    get_json::<RunTrigger>(self.store.as_ref(), &key)
                        .await?
                        .map_or(run_trigger, |(recorded, _)| recorded)
                }
                Err(error) => return Err(error.into()),
            };
            let outcome = self.start(pipeline, run_trigger, &source).await?;
            started.push((pipeline.name.clone(), outcome));
        }
        Ok(started)
    }

    /// A Scheduler tick for `pipeline` of `repo`: a run starts at the head
    /// of the pipeline's branch (as the default branch's nbci.yaml names it).
    pub async fn on_schedule(
        &self,
        repo: &RepoRef,
        pipeline: &str,
    ) -> Result<Started, PipelineError> {
        let Some(sources) = &self.sources else {
            return Err(PipelineError::Refused(
                "no code host is configured here".into(),
            ));
        };
        let (default_head, _) = sources.branch_head(repo, None).await?;
        let Some((spec, _)) = self.spec_at(&default_head).await? else {
            return Err(PipelineError::Refused(format!("{repo} has no nbci.yaml")));
        };
        let Some(wanted) = spec.pipeline(pipeline) else {
            return Err(PipelineError::Refused(format!(
                "{repo}: no pipeline {pipeline:?} in nbci.yaml"
            )));
        };
        let (head, spec, source) = match wanted.branch.as_deref() {
            None => {
                let (spec, source) = self
                    .spec_at(&default_head)
                    .await?
                    .ok_or_else(|| PipelineError::Refused(format!("{repo} has no nbci.yaml")))?;
                (default_head, spec, source)
            }
            Some(branch) => {
                let (head, _) = sources.branch_head(repo, Some(branch)).await?;
                let (spec, source) = self.spec_at(&head).await?.ok_or_else(|| {
                    PipelineError::Refused(format!("{repo}@{branch} has no nbci.yaml"))
                })?;
                (head, spec, source)
            }
        };
        let Some(pipeline_spec) = spec.pipeline(pipeline) else {
            return Err(PipelineError::Refused(format!(
                "{repo}: the branch's nbci.yaml has no pipeline {pipeline:?}"
            )));
        };
        let at = jiff::Timestamp::now();
        let trigger = RunTrigger::new(
            at,
            head.sha.as_str(),
            crate::domain::pipeline::RunCause::Schedule { at: at.to_string() },
        )
        .map_err(|error| PipelineError::Refused(error.to_string()))?;
        self.start(pipeline_spec, trigger, &source).await
    }

    /// Background drives and timers, for a server to drain at shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Stops timers and refuses new background work.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
    }

    /// The run's folder as its steps see it.
    pub fn artifacts_dir(&self, run_prefix: &str) -> String {
        format!(
            "{}/{run_prefix}",
            self.settings.artifacts_root.trim_end_matches('/')
        )
    }

    /// Admits `trigger` for `pipeline` (whose commit's tarball is at
    /// `source`): starts its run, queues it, or skips it.
    pub async fn start(
        &self,
        pipeline: &Pipeline,
        trigger: RunTrigger,
        source: &str,
    ) -> Result<Started, PipelineError> {
        let run_prefix = layout::pipeline_run_prefix(&pipeline.name, trigger.run_id.as_str());
        let run = PipelineRun::create(
            pipeline,
            trigger.clone(),
            source,
            &self.artifacts_dir(&run_prefix),
            now(),
        );
        // The run exists before the lock names it, so whoever finds it in the
        // lock (this process, or the next after a crash) can drive it.
        match put_json(
            self.store.as_ref(),
            &run.state_key(),
            &run,
            Precondition::DoesNotExist,
        )
        .await
        {
            Ok(_) => {}
            Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => {
                // The same trigger again. A run that is over stays over: the
                // lock no longer names it, and admitting it again would run
                // it again, or queue it in place of a newer trigger.
                if let Some((existing, _)) =
                    get_json::<PipelineRun>(self.store.as_ref(), &run.state_key()).await?
                    && existing.is_finished()
                {
                    return Ok(Started::Skipped {
                        reason: "its run is over",
                    });
                }
            }
            Err(error) => return Err(error.into()),
        }
        let lock_key = layout::pipeline_lock_key(&pipeline.name);
        let admitted = update_json(
            self.store.as_ref(),
            &lock_key,
            MAX_ACTIONS_PER_DRIVE,
            |lock: Option<PipelineLock>| match lock.unwrap_or_default().admit(trigger.clone()) {
                Admission::Start { lock } => {
                    Change::Write(lock, Ok(Started::Running(trigger.run_id.clone())))
                }
                Admission::Queued { lock, skipped } => Change::Write(
                    lock,
                    Ok(Started::Queued {
                        run_id: trigger.run_id.clone(),
                        replaced: skipped.map(|t| t.run_id),
                    }),
                ),
                Admission::Skipped { reason } => Change::Keep(Err(reason)),
            },
        )
        .await?;
        let started = match admitted {
            Ok(started) => started,
            Err(reason) => {
                // The same trigger again while its run holds the lock:
                // the process that admitted it may have died between
                // the lock's write and the run's activation (that is why
                // its delivery came again), which would leave the lock
                // held by a run that nothing sweeps. Activating is safe
                // to repeat (a marker, and a drive under the run's lease).
                if matches!(reason, crate::domain::pipeline::SkipReason::AlreadyActive) {
                    self.activate(&run_prefix).await?;
                }
                return Ok(Started::Skipped {
                    reason: reason.as_str(),
                });
            }
        };
        match &started {
            Started::Running(_) => self.activate(&run_prefix).await?,
            Started::Queued {
                replaced: Some(replaced),
                ..
            } => {
                let replaced_prefix =
                    layout::pipeline_run_prefix(&pipeline.name, replaced.as_str());
                self.update(&replaced_prefix, |run| {
                    run.fail("skipped: a newer trigger replaced it in the queue", now())
                })
                .await?;
            }
            _ => {}
        }
        tracing::info!(pipeline = %pipeline.name, run = %trigger.run_id, ?started, "pipeline trigger admitted");
        Ok(started)
    }

    /// Marks the run at `run_prefix` active (swept) and drives it.
    async fn activate(&self, run_prefix: &str) -> Result<(), PipelineError> {
        self.store
            .put(
                &layout::active_key(run_prefix),
                Vec::new(),
                "text/plain",
                Precondition::None,
            )
            .await?;
        self.spawn_drive(run_prefix.to_owned());
        Ok(())
    }

    fn spawn_drive(&self, run_prefix: String) {
        let flow = self.clone();
        self.tracker.spawn(async move {
            if let Err(error) = flow.drive(&run_prefix).await {
                tracing::warn!(run = %run_prefix, %error, "a pipeline action failed; the next sweep tries again");
            }
        });
    }

    fn wake_at(&self, run_prefix: String, at: f64) {
        let flow = self.clone();
        let wait = Duration::try_from_secs_f64((at - now()).max(0.0)).unwrap_or(Duration::MAX);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(24 * 3600))) => {
                    if let Err(error) = flow.drive(&run_prefix).await {
                        tracing::warn!(run = %run_prefix, %error, "a pipeline action failed; the next sweep tries again");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Applies `change` to the run's state with a conditional write, retried
    /// on conflicts; `change` answering `None` changes nothing.
    async fn update(
        &self,
        run_prefix: &str,
        change: impl Fn(&PipelineRun) -> Option<PipelineRun>,
    ) -> Result<Option<PipelineRun>, PipelineError> {
        let key = layout::pipeline_run_state_key(run_prefix);
        let updated = update_json(
            self.store.as_ref(),
            &key,
            MAX_ACTIONS_PER_DRIVE,
            |run: Option<PipelineRun>| match run.as_ref().and_then(&change) {
                Some(next) => Change::Write(next.clone(), Some(next)),
                None => Change::Keep(None),
            },
        )
        .await?;
        Ok(updated)
    }

    /// Performs the due actions of the run at `run_prefix` until it waits
    /// for something (a step's job, a backoff, a deployment) or is over.
    pub async fn drive(&self, run_prefix: &str) -> Result<(), PipelineError> {
        let key = layout::pipeline_run_state_key(run_prefix);
        let holder = format!(
            "{}/p{}",
            self.settings.worker,
            self.drives.fetch_add(1, Ordering::Relaxed)
        );
        for _ in 0..MAX_ACTIONS_PER_DRIVE {
            let Some((run, generation)) =
                get_json::<PipelineRun>(self.store.as_ref(), &key).await?
            else {
                return Ok(());
            };
            let now = now();
            let action = run.next_action(now);
            match &action {
                RunAction::Done => return self.finished(&run).await,
                RunAction::WaitUntil(at) => {
                    if !self.shutdown.is_cancelled() {
                        self.wake_at(run_prefix.to_owned(), *at);
                    }
                    return Ok(());
                }
                RunAction::AwaitStep(_) => return Ok(()),
                _ => {}
            }
            if run.leased_by_other(&holder, now) {
                return Ok(());
            }
            let leased = run.leased(&holder, now, self.settings.lease_ttl);
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
            let next = match self.perform(&leased, action).await {
                Ok(next) => next.released(),
                Err(error) => {
                    // The bucket failed inside the action: give the lease
                    // back, so that the redelivery or the next sweep tries
                    // again now rather than after NBCI_LEASE_TTL (best
                    // effort: if this write fails too, the lease expires).
                    let _ = put_json(
                        self.store.as_ref(),
                        &key,
                        &leased.released(),
                        Precondition::Generation(generation),
                    )
                    .await;
                    return Err(error);
                }
            };
            match put_json(
                self.store.as_ref(),
                &key,
                &next,
                Precondition::Generation(generation),
            )
            .await
            {
                Ok(_) | Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// One action's side effect and the state it leads to; failures of the
    /// outside world become states (backoff, a failed run).
    async fn perform(
        &self,
        run: &PipelineRun,
        action: RunAction,
    ) -> Result<PipelineRun, PipelineError> {
        let now = now();
        let retry_later = |error: &dyn std::fmt::Display, hint: Option<Duration>| {
            let wait = self
                .settings
                .backoff
                .delay_with_hint(run.retry.failures.saturating_add(1), hint);
            tracing::warn!(run = %run.prefix, %error, wait_s = wait.as_secs(), "a pipeline action failed; trying again later");
            run.failed_transiently(&error.to_string(), now, wait)
        };
        let failed = |reason: &str| {
            tracing::error!(run = %run.prefix, %reason, "the pipeline run failed");
            run.fail(reason, now).unwrap_or_else(|| run.clone())
        };
        match action {
            RunAction::SubmitStep(step) => {
                let Some(mut job) = run.step_job(step, &self.settings.image, None) else {
                    return Ok(failed(&format!("step {} is not in the run", step + 1)));
                };
                if job.timeout_s.is_none() {
                    job.timeout_s = self.settings.default_timeout.map(|t| t.as_secs_f64());
                }
                let mut record = JobRecord {
                    job: job.clone(),
                    origin: run.job_origin(step),
                    handle: None,
                };
                put_json(
                    self.store.as_ref(),
                    &job.record_key(),
                    &record,
                    Precondition::None,
                )
                .await?;
                match self.executor.submit(&job).await {
                    Ok(handle) => {
                        record.handle = Some(handle.clone());
                        if let Err(error) = put_json(
                            self.store.as_ref(),
                            &job.record_key(),
                            &record,
                            Precondition::None,
                        )
                        .await
                        {
                            tracing::warn!(run = %run.prefix, %error, "cannot record the step's handle");
                        }
                        tracing::info!(run = %run.prefix, step = step + 1, notebook = %job.notebook, "submitted a pipeline step");
                        Ok(run
                            .submitted(step, handle, now)
                            .unwrap_or_else(|| run.clone()))
                    }
                    Err(ExecutorError::Unavailable(reason)) => Ok(retry_later(&reason, None)),
                    Err(error) => Ok(failed(&error.to_string())),
                }
            }
            RunAction::Gate => {
                let Some(gate) = &run.spec.gate else {
                    return Ok(failed("the run is gating, but its pipeline has no gate"));
                };
                let metrics = self.store.get(&run.metrics_key()).await?;
                let deployed = self.deployed(&run.pipeline).await?.current;
                let decision = gate.decide(
                    metrics.as_ref().map(|m| m.bytes.as_slice()),
                    deployed.as_ref(),
                );
                tracing::info!(run = %run.prefix, passed = decision.passed, "the gate decided");
                Ok(run
                    .gate_decided(decision, now)
                    .unwrap_or_else(|| run.clone()))
            }
            RunAction::Deploy => {
                let Some(request) = run.deploy_request() else {
                    return Ok(failed(
                        "the run is deploying, but its pipeline deploys nothing",
                    ));
                };
                let Some(target) = run.spec.deploy.as_ref().map(|d| d.target) else {
                    return Ok(failed("no deploy target"));
                };
                let Some(deployer) = self.deployers.get(target) else {
                    return Ok(failed(&format!(
                        "no deployer for target {} is configured here",
                        target.as_str()
                    )));
                };
                match deployer.deploy(&request).await {
                    Ok(operation) => {
                        tracing::info!(run = %run.prefix, version = %request.version, "deployment started");
                        Ok(run
                            .deploy_started(operation, now)
                            .unwrap_or_else(|| run.clone()))
                    }
                    Err(error) if error.is_transient() => {
                        Ok(retry_later(&error, error.retry_after()))
                    }
                    Err(error) => Ok(failed(&format!("deploy: {error}"))),
                }
            }
            RunAction::PollDeploy(operation) => {
                let (Some(request), Some(target)) = (
                    run.deploy_request(),
                    run.spec.deploy.as_ref().map(|d| d.target),
                ) else {
                    return Ok(failed("no deployment to poll"));
                };
                let Some(deployer) = self.deployers.get(target) else {
                    return Ok(failed(&format!(
                        "no deployer for target {} is configured here",
                        target.as_str()
                    )));
                };
                match deployer.poll(&request, &operation).await {
                    Ok(DeployStatus::Pending) => {
                        let polls = run.deploy.as_ref().map_or(0, |d| d.polls);
                        let wait = self.settings.deploy_poll.delay(polls.saturating_add(1));
                        Ok(run.deploy_pending(now, wait).unwrap_or_else(|| run.clone()))
                    }
                    Ok(status) => {
                        if let DeployStatus::Deployed { version } = &status {
                            self.record_deployed(run, version).await?;
                            tracing::info!(run = %run.prefix, %version, "deployed");
                        }
                        Ok(run
                            .deploy_finished(status, now)
                            .unwrap_or_else(|| run.clone()))
                    }
                    Err(error) if error.is_transient() => {
                        Ok(retry_later(&error, error.retry_after()))
                    }
                    Err(error) => Ok(failed(&format!("deploy: {error}"))),
                }
            }
            RunAction::AwaitStep(_) | RunAction::WaitUntil(_) | RunAction::Done => Ok(run.clone()),
        }
    }

    /// The deployment history of `pipeline`.
    pub async fn deployed(&self, pipeline: &str) -> Result<DeployedHistory, PipelineError> {
        Ok(get_json::<DeployedHistory>(
            self.store.as_ref(),
            &layout::pipeline_deployed_key(pipeline),
        )
        .await?
        .map(|(history, _)| history)
        .unwrap_or_default())
    }

    async fn record_deployed(&self, run: &PipelineRun, version: &str) -> Result<(), PipelineError> {
        let key = layout::pipeline_deployed_key(&run.pipeline);
        let deployed = DeployedVersion {
            version: version.to_owned(),
            run_id: Some(run.run_id.to_string()),
            metrics: run
                .gate
                .as_ref()
                .and_then(|gate| gate.metrics.clone())
                .unwrap_or_default(),
        };
        update_json(
            self.store.as_ref(),
            &key,
            MAX_ACTIONS_PER_DRIVE,
            |history: Option<DeployedHistory>| {
                Change::Write(history.unwrap_or_default().deployed(deployed.clone()), ())
            },
        )
        .await?;
        Ok(())
    }

    /// A run is over: the lock passes to the run queued behind it (if any),
    /// that run is activated, and only then does this run's marker go. In
    /// that order a process that dies at any line leaves a marker the sweep
    /// finds: this run's, whose drive comes back here (and activates the
    /// run the lock names by then), or the next run's.
    async fn finished(&self, run: &PipelineRun) -> Result<(), PipelineError> {
        let lock_key = layout::pipeline_lock_key(&run.pipeline);
        let released = update_json(
            self.store.as_ref(),
            &lock_key,
            MAX_ACTIONS_PER_DRIVE,
            |lock: Option<PipelineLock>| match lock.and_then(|lock| lock.finished(&run.run_id)) {
                Some((next, _)) => Change::Write(next, true),
                None => Change::Keep(false),
            },
        )
        .await?;
        if released {
            tracing::info!(pipeline = %run.pipeline, run = %run.run_id, phase = run.phase.as_str(), "pipeline run over");
        }
        // Released now or by an earlier try that died before activating
        // the next run: the run the lock names goes on (activating is safe
        // to repeat: a marker, and a drive under the run's lease).
        let next = get_json::<PipelineLock>(self.store.as_ref(), &lock_key)
            .await?
            .and_then(|(lock, _)| lock.active)
            .filter(|active| *active != run.run_id);
        if let Some(next) = next {
            self.activate(&layout::pipeline_run_prefix(&run.pipeline, next.as_str()))
                .await?;
        }
        self.store.delete(&layout::active_key(&run.prefix)).await?;
        Ok(())
    }

    /// Handles a `result.json` that landed in the step folder `job_prefix`.
    pub async fn on_result(&self, job_prefix: &str) -> Result<StepHandling, PipelineError> {
        let Some((record, _)) = get_json::<JobRecord>(
            self.store.as_ref(),
            &layout::job_file(job_prefix, layout::JOB_FILE),
        )
        .await?
        else {
            return Ok(StepHandling::Unchanged);
        };
        let crate::domain::job::JobOrigin::PipelineStep {
            pipeline,
            run_id,
            step,
        } = &record.origin
        else {
            return Ok(StepHandling::Unchanged);
        };
        let Some(result) = self.store.get(&record.job.result_key()).await? else {
            return Ok(StepHandling::Unchanged);
        };
        let outcome = Outcome::from_json(&result.bytes).unwrap_or_else(|reason| {
            Outcome::without_result(
                &record.job,
                Status::Error,
                &format!("the step's result.json is unreadable: {reason}"),
                self.store.uri(&record.job.output_key()),
                crate::util::time::now_rfc3339(),
            )
        });
        let run_prefix = layout::pipeline_run_prefix(pipeline, run_id);
        let recorded = self
            .update(&run_prefix, |run| {
                run.step_result(*step, job_prefix, &outcome, now())
            })
            .await?;
        if recorded.is_none() {
            return Ok(StepHandling::Unchanged);
        }
        tracing::info!(run = %run_prefix, step = step + 1, status = %outcome.status, "a pipeline step ended");
        self.spawn_drive(run_prefix);
        Ok(StepHandling::Recorded)
    }

    /// Looks at every active run: steps whose job ended without a result or
    /// outlived its deadline, steps the executor lost, due retries and polls.
    pub async fn sweep(&self) -> Result<usize, PipelineError> {
        self.sweep_with(false).await
    }

    /// [`Self::sweep`]; with `void_leases`, leases of other workers are
    /// ignored first, as [`super::ci::Ci::sweep`] does for checks: a server
    /// that owns its bucket alone, starting after a crash, would otherwise
    /// leave its dead predecessor's runs waiting for NBCI_LEASE_TTL.
    pub async fn sweep_with(&self, void_leases: bool) -> Result<usize, PipelineError> {
        let markers = self.store.list(&layout::active_runs_prefix()).await?;
        for marker in &markers {
            let Some(prefix) = layout::check_of_active_key(marker) else {
                continue;
            };
            if void_leases && let Err(error) = self.void_lease(prefix).await {
                tracing::warn!(run = %prefix, %error, "cannot void a dead process's lease");
            }
            if let Err(error) = self.sweep_one(prefix).await {
                tracing::warn!(run = %prefix, %error, "cannot sweep a pipeline run");
            }
            if let Err(error) = self.drive(prefix).await {
                tracing::warn!(run = %prefix, %error, "a pipeline action failed; the next sweep tries again");
            }
        }
        Ok(markers.len())
    }

    /// Releases the run's lease if another worker holds it.
    async fn void_lease(&self, run_prefix: &str) -> Result<(), PipelineError> {
        let key = layout::pipeline_run_state_key(run_prefix);
        let Some((run, generation)) = get_json::<PipelineRun>(self.store.as_ref(), &key).await?
        else {
            return Ok(());
        };
        let mine = format!("{}/", self.settings.worker);
        let of_another = run
            .lease
            .as_ref()
            .is_some_and(|lease| lease.until > now() && !lease.holder.starts_with(&mine));
        if of_another {
            match put_json(
                self.store.as_ref(),
                &key,
                &run.released(),
                Precondition::Generation(generation),
            )
            .await
            {
                Ok(_) | Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn sweep_one(&self, run_prefix: &str) -> Result<(), PipelineError> {
        let key = layout::pipeline_run_state_key(run_prefix);
        let Some((run, _)) = get_json::<PipelineRun>(self.store.as_ref(), &key).await? else {
            return Ok(());
        };
        let Some(step) = run.step_running() else {
            return Ok(());
        };
        let Some(record) = run.steps.get(step) else {
            return Ok(());
        };
        let result_key = layout::job_file(&record.prefix, layout::RESULT_FILE);
        if self.store.generation(&result_key).await?.is_some() {
            self.on_result(&record.prefix).await?;
            return Ok(());
        }
        let Some(handle) = &record.handle else {
            return Ok(());
        };
        let state = match self.executor.status(handle).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(run = %run_prefix, %error, "cannot ask the executor about a step");
                return Ok(());
            }
        };
        let now = now();
        let outcome = |status: Status, reason: String| {
            let job = run.step_job(step, &self.settings.image, None);
            job.map(|job| {
                Outcome::without_result(
                    &job,
                    status,
                    &reason,
                    self.store.uri(&job.output_key()),
                    crate::util::time::now_rfc3339(),
                )
            })
        };
        let ended = match state {
            JobState::Pending | JobState::Running => {
                match run.overdue_at(self.settings.lost_job_grace, self.settings.default_timeout) {
                    Some(at) if now > at => {
                        if let Err(error) = self.executor.cancel(handle).await {
                            tracing::warn!(run = %run_prefix, %error, "cannot cancel an overdue step");
                        }
                        outcome(
                            Status::TimedOut,
                            "the step's job ran past its timeout and was cancelled".into(),
                        )
                    }
                    _ => None,
                }
            }
            JobState::Unknown if record.resubmissions < MAX_RESUBMISSIONS => {
                self.update(run_prefix, |run| {
                    run.step_lost(step, "the executor lost the job", now)
                })
                .await?;
                return Ok(());
            }
            JobState::Unknown => outcome(Status::Error, "the executor lost the job".into()),
            JobState::Succeeded => outcome(
                Status::Error,
                "the job ended without writing result.json".into(),
            ),
            JobState::Failed { message } => {
                outcome(Status::Error, format!("the job failed: {message}"))
            }
            JobState::Cancelled { message } => {
                outcome(Status::Error, format!("the job was cancelled: {message}"))
            }
        };
        if let Some(outcome) = ended {
            if self.store.generation(&result_key).await?.is_some() {
                self.on_result(&record.prefix).await?;
                return Ok(());
            }
            let prefix = record.prefix.clone();
            self.update(run_prefix, |run| {
                run.step_result(step, &prefix, &outcome, now)
            })
            .await?;
        }
        Ok(())
    }

    /// The run at `run_prefix`, as recorded now.
    pub async fn run(&self, run_prefix: &str) -> Result<Option<PipelineRun>, PipelineError> {
        Ok(get_json::<PipelineRun>(
            self.store.as_ref(),
            &layout::pipeline_run_state_key(run_prefix),
        )
        .await?
        .map(|(run, _)| run))
    }

    /// Every recorded run of `pipeline`, oldest first.
    pub async fn runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>, PipelineError> {
        let mut runs = Vec::new();
        for key in self
            .store
            .list(&layout::pipeline_runs_prefix(pipeline))
            .await?
        {
            if !key.ends_with(&format!("/{}", layout::RUN_STATE_FILE)) {
                continue;
            }
            let run_prefix = &key[..key.len() - layout::RUN_STATE_FILE.len() - 1];
            // Step folders hold no state.json of their own; runs are one level down.
            if run_prefix.matches('/').count() != 3 {
                continue;
            }
            if let Some(run) = self.run(run_prefix).await? {
                runs.push(run);
            }
        }
        runs.sort_by(|a, b| a.run_id.as_str().cmp(b.run_id.as_str()));
        Ok(runs)
    }

    /// Puts the version deployed before the current one back into service.
    pub async fn rollback(&self, pipeline: &Pipeline) -> Result<DeployedVersion, PipelineError> {
        let Some(deploy) = &pipeline.deploy else {
            return Err(PipelineError::Refused(format!(
                "pipeline {} deploys nothing",
                pipeline.name
            )));
        };
        let Some(deployer) = self.deployers.get(deploy.target) else {
            return Err(PipelineError::Refused(format!(
                "no deployer for target {} is configured here",
                deploy.target.as_str()
            )));
        };
        let key = layout::pipeline_deployed_key(&pipeline.name);
        let Some((history, generation)) =
            get_json::<DeployedHistory>(self.store.as_ref(), &key).await?
        else {
            return Err(PipelineError::Refused(format!(
                "pipeline {} has deployed nothing yet",
                pipeline.name
            )));
        };
        let Some((next, back)) = history.rolled_back() else {
            return Err(PipelineError::Refused(format!(
                "pipeline {} has no earlier version to go back to",
                pipeline.name
            )));
        };
        deployer.set_serving(&deploy.model, &back.version).await?;
        put_json(
            self.store.as_ref(),
            &key,
            &next,
            Precondition::Generation(generation),
        )
        .await?;
        Ok(back)
    }

    /// The REST requests deploying a run of `pipeline` would send, without sending them.
    pub fn plan(
        &self,
        pipeline: &Pipeline,
        run: &PipelineRun,
    ) -> Result<Vec<PlannedRequest>, PipelineError> {
        let Some(deploy) = &pipeline.deploy else {
            return Ok(Vec::new());
        };
        let Some(deployer) = self.deployers.get(deploy.target) else {
            return Err(PipelineError::Refused(format!(
                "no deployer for target {} is configured here",
                deploy.target.as_str()
            )));
        };
        let Some(request) = run.deploy_request() else {
            return Ok(Vec::new());
        };
        Ok(deployer.plan(&request)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::store::LocalDirStore;
    use crate::domain::job::Job;
    use crate::domain::pipeline::{RunCause, RunPhase};
    use crate::testing::{FakeDeployer, FakeExecutor};

    const SPEC: &str = r#"
pipelines:
  train:
    branch: main
    steps:
      - notebook: prepare.ipynb
      - notebook: train.ipynb
      - notebook: evaluate.ipynb
    gate:
      metrics: {accuracy: ">= 0.9"}
      better_than_deployed: accuracy
    deploy:
      target: local
      model: m
"#;

    struct World {
        _dir: tempfile::TempDir,
        store: Arc<LocalDirStore>,
        executor: Arc<FakeExecutor>,
        deployer: Arc<FakeDeployer>,
        flow: Pipelines,
        pipeline: Pipeline,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        let executor = Arc::new(FakeExecutor::default());
        let deployer = Arc::new(FakeDeployer {
            pending_polls: 2,
            ..FakeDeployer::default()
        });
        let flow = Pipelines::new(
            store.clone(),
            executor.clone(),
            Deployers::default().with(DeployTarget::Local, deployer.clone()),
            PipelineSettings {
                artifacts_root: dir.path().join("objects").display().to_string(),
                backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
                deploy_poll: Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
                lost_job_grace: Duration::from_millis(10),
                ..PipelineSettings::default()
            },
        );
        let spec = crate::domain::pipeline::PipelineSpec::parse(SPEC, |_| true).expect("spec");
        let pipeline = spec.pipeline("train").expect("pipeline").clone();
        World {
            _dir: dir,
            store,
            executor,
            deployer,
            flow,
            pipeline,
        }
    }

    fn trigger(time: &str) -> RunTrigger {
        RunTrigger::new(
            time.parse().expect("time"),
            &"a".repeat(40),
            RunCause::Manual,
        )
        .expect("trigger")
    }

    impl World {
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
        }

        async fn write_metrics(&self, run: &PipelineRun, accuracy: f64) {
            self.store
                .put(
                    &run.metrics_key(),
                    format!("{{\"accuracy\": {accuracy}}}").into_bytes(),
                    "application/json",
                    Precondition::None,
                )
                .await
                .expect("metrics");
        }

        async fn until(
            &self,
            prefix: &str,
            what: &str,
            done: impl Fn(&PipelineRun) -> bool,
        ) -> PipelineRun {
            for _ in 0..500 {
                if let Some(run) = self.flow.run(prefix).await.expect("run")
                    && done(&run)
                {
                    return run;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "timed out waiting for {what}: {:#?}",
                self.flow.run(prefix).await
            );
        }

        /// Runs the run at `prefix` through its steps, delivering each
        /// result `times` times (duplicates).
        async fn run_steps(&self, prefix: &str, accuracy: f64, times: usize) -> PipelineRun {
            for step in 0..3 {
                let run = self
                    .until(prefix, "the step submitted", |run| {
                        run.step_running() == Some(step)
                    })
                    .await;
                let job = self
                    .executor
                    .submitted
                    .lock()
                    .expect("lock")
                    .iter()
                    .rfind(|job| job.prefix == run.steps[step].prefix)
                    .cloned()
                    .expect("job");
                assert!(
                    job.parameters.contains_key("artifacts_dir")
                        && job.parameters.contains_key("run_id")
                );
                if step == 2 {
                    self.write_metrics(&run, accuracy).await;
                }
                self.finish(&job, Status::Succeeded).await;
                for _ in 0..times {
                    self.flow.on_result(&job.prefix).await.expect("on_result");
                }
            }
            self.until(prefix, "the end", PipelineRun::is_finished)
                .await
        }
    }

    #[tokio::test]
    async fn a_run_goes_through_its_steps_the_gate_and_a_deploy_once() {
        let world = world();
        let trigger = trigger("2026-11-30T03:00:00Z");
        let prefix = layout::pipeline_run_prefix("train", trigger.run_id.as_str());
        let started = world
            .flow
            .start(&world.pipeline, trigger.clone(), "src/x.tar.gz")
            .await
            .expect("start");
        assert_eq!(started, Started::Running(trigger.run_id.clone()));
        let run = world.run_steps(&prefix, 0.95, 3).await;
        assert_eq!(run.phase, RunPhase::Deployed, "{run:#?}");
        assert_eq!(
            world.executor.submitted.lock().expect("lock").len(),
            3,
            "each step once"
        );
        assert_eq!(
            world.deployer.deployed.lock().expect("lock").len(),
            1,
            "one deploy"
        );
        let history = world.flow.deployed("train").await.expect("history");
        assert_eq!(
            history.current.as_ref().map(|v| v.version.clone()),
            Some(trigger.run_id.version_name())
        );
        assert!(world.store.list("active/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_worse_model_is_rejected_and_nothing_is_deployed() {
        let world = world();
        let first = trigger("2026-11-30T03:00:00Z");
        world
            .flow
            .start(&world.pipeline, first.clone(), "src/x.tar.gz")
            .await
            .expect("start");
        world
            .run_steps(
                &layout::pipeline_run_prefix("train", first.run_id.as_str()),
                0.97,
                1,
            )
            .await;
        let second = trigger("2026-11-30T04:00:00Z");
        world
            .flow
            .start(&world.pipeline, second.clone(), "src/x.tar.gz")
            .await
            .expect("start");
        let run = world
            .run_steps(
                &layout::pipeline_run_prefix("train", second.run_id.as_str()),
                0.93,
                1,
            )
            .await;
        assert_eq!(run.phase, RunPhase::GateRejected);
        let gate = run.gate.expect("gate");
        assert!(
            gate.checks
                .iter()
                .any(|c| !c.passed && c.check.contains("deployed")),
            "{gate:#?}"
        );
        assert_eq!(
            world.deployer.deployed.lock().expect("lock").len(),
            1,
            "only the first deployed"
        );
    }

    #[tokio::test]
    async fn a_second_trigger_waits_for_the_first_and_a_failed_step_ends_the_run() {
        let world = world();
        let first = trigger("2026-11-30T03:00:00Z");
        let second = trigger("2026-11-30T03:30:00Z");
        world
            .flow
            .start(&world.pipeline, first.clone(), "src/x.tar.gz")
            .await
            .expect("start");
        let queued = world
            .flow
            .start(&world.pipeline, second.clone(), "src/x.tar.gz")
            .await
            .expect("queue");
        assert_eq!(
            queued,
            Started::Queued {
                run_id: second.run_id.clone(),
                replaced: None
            }
        );
        let again = world
            .flow
            .start(&world.pipeline, second.clone(), "src/x.tar.gz")
            .await
            .expect("again");
        assert!(matches!(again, Started::Skipped { .. }));
        let first_prefix = layout::pipeline_run_prefix("train", first.run_id.as_str());
        let run = world
            .until(&first_prefix, "step 1", |run| run.step_running() == Some(0))
            .await;
        let job = world.executor.submissions_of("prepare.ipynb").remove(0);
        world.finish(&job, Status::Failed).await;
        world.flow.on_result(&job.prefix).await.expect("on_result");
        let run_after = world
            .until(&first_prefix, "failed", PipelineRun::is_finished)
            .await;
        assert_eq!(run_after.phase, RunPhase::Failed);
        assert_eq!(run.steps.len(), 3);
        // The queued run starts once the first is over.
        let second_prefix = layout::pipeline_run_prefix("train", second.run_id.as_str());
        world
            .until(&second_prefix, "the queued run started", |run| {
                run.step_running() == Some(0)
            })
            .await;
    }

    #[tokio::test]
    async fn a_process_dying_as_the_lock_passes_on_leaves_the_queued_run_to_the_sweep() {
        let world = world();
        let first = trigger("2026-11-30T03:00:00Z");
        let second = trigger("2026-11-30T03:30:00Z");
        for trigger in [&first, &second] {
            world
                .flow
                .start(&world.pipeline, trigger.clone(), "src/x.tar.gz")
                .await
                .expect("start");
        }
        let first_prefix = layout::pipeline_run_prefix("train", first.run_id.as_str());
        let second_prefix = layout::pipeline_run_prefix("train", second.run_id.as_str());
        world
            .until(&first_prefix, "step 1", |run| run.step_running() == Some(0))
            .await;
        // What a process left that died right after passing the lock on: the
        // first run over (its marker still there), the lock naming the
        // second, which was never activated.
        world
            .flow
            .update(&first_prefix, |run| run.fail("stopped", now()))
            .await
            .expect("fail")
            .expect("failed");
        put_json(
            world.store.as_ref(),
            &layout::pipeline_lock_key("train"),
            &PipelineLock {
                active: Some(second.run_id.clone()),
                queued: None,
            },
            Precondition::None,
        )
        .await
        .expect("lock");
        assert!(
            world
                .store
                .generation(&layout::active_key(&second_prefix))
                .await
                .expect("generation")
                .is_none()
        );
        world.flow.sweep().await.expect("sweep");
        world
            .until(&second_prefix, "the queued run started", |run| {
                run.step_running() == Some(0)
            })
            .await;
        let markers = world
            .store
            .list(&layout::active_runs_prefix())
            .await
            .expect("list");
        assert_eq!(markers, vec![layout::active_key(&second_prefix)]);
    }

    #[tokio::test]
    async fn a_lost_step_is_submitted_again() {
        let world = world();
        let first = trigger("2026-11-30T03:00:00Z");
        world
            .flow
            .start(&world.pipeline, first.clone(), "src/x.tar.gz")
            .await
            .expect("start");
        let prefix = layout::pipeline_run_prefix("train", first.run_id.as_str());
        let run = world
            .until(&prefix, "step 1", |run| run.step_running() == Some(0))
            .await;
        // The executor forgets the job (a restarted machine): submitted again.
        let handle = run.steps[0].handle.clone().expect("handle");
        world
            .executor
            .states
            .lock()
            .expect("lock")
            .remove(&handle.0);
        world.flow.sweep().await.expect("sweep");
        world
            .until(&prefix, "resubmitted", |run| {
                run.steps[0].resubmissions == 1 && run.step_running() == Some(0)
            })
            .await;
        assert_eq!(world.executor.submissions_of("prepare.ipynb").len(), 2);
    }
}
