//! The state machine of one pipeline run (`pipelines/{pipeline}/runs/{run_id}/state.json`).
//!
//! A run is driven by events that arrive at least once and in any order (a
//! step's `result.json` finalize event, Scheduler ticks, deploy polls) and by
//! processes that may die at any line, so, as for a CI check
//! ([`crate::domain::check`]), its progress lives in the bucket: each side
//! effect (submit a job, deploy) is followed by one generation-conditional
//! write of the next state, and every transition here is a pure function that
//! returns the next state, or `None` when the event changes nothing (a
//! duplicate, a stale result, a step that is not the current one). A writer
//! that loses the generation race reads again and asks again; the second
//! answer is `None`, so nothing happens twice.
//!
//! ```text
//! Created --submitted(0)--> StepSubmitted{0} --step_result(0, succeeded)--> StepSucceeded{0}
//!   --submitted(1)--> StepSubmitted{1} -- ... --step_result(last, succeeded)--> Gating
//!   --gate_decided(passed)--> Deploying --deploy_started(op)--> Deploying{op}
//!   --deploy_finished(deployed)--> Deployed
//! StepSubmitted{i} --step_result(i, failed | timed_out | error)--> Failed (the step's record says how)
//! Gating --gate_decided(rejected)--> GateRejected
//! Deploying --deploy_finished(failed)--> Failed
//! ```
//! Without a gate the last step goes straight to `Deploying`; without a
//! deploy a passed gate (or the last step) ends in `Completed`.
//!
//! A side effect is performed by whoever holds the run's lease (taken with a
//! conditional write first), so a webhook instance and a tick never both
//! submit a step; a lease whose holder died expires. A transient failure sets
//! a time before which the action is not tried again, persisted with the run.
//! A job the executor lost is submitted again in the same folder, at most
//! [`MAX_RESUBMISSIONS`] times.
//!
//! Everything here is pure: times are seconds since the epoch passed in, side
//! effects are the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gate::GateDecision;
use super::spec::Pipeline;
use crate::domain::check::MAX_RESUBMISSIONS;
use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus};
use crate::domain::job::{Job, JobHandle, JobOrigin, Machine};
use crate::domain::layout;
use crate::domain::lease::{Lease, Leased, Retry};
use crate::domain::notebook::EnvironmentSpec;
use crate::domain::outcome::{Outcome, Status};
use crate::domain::params::Parameters;

/// How many hex digits of the commit a run id keeps.
pub const SHORT_SHA: usize = 7;

/// The longest message kept in a run's record (a step's headline, a deploy
/// error): the state stays small whatever a platform answered.
const MAX_MESSAGE: usize = 4 * 1024;

/// Why a run id cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunIdError {
    /// Occurs when the commit is not a git sha (at least 7 hexadecimal digits).
    #[error("{sha:?} is not a commit sha (at least {SHORT_SHA} hexadecimal digits)")]
    BadSha { sha: String },
    /// Occurs when the time is outside years 1000 to 9999, where ids would
    /// no longer sort by time.
    #[error("{at} is outside the years 1000 to 9999")]
    BadTime { at: String },
    /// Occurs when a text is not `YYYYMMDDTHHMMSSZ-<short sha>`.
    #[error("{text:?} is not a run id (YYYYMMDDTHHMMSSZ-<short sha>)")]
    Malformed { text: String },
}

/// A run's id: `20261130T031500Z-abc1234`, the UTC time the run was asked
/// for and the commit it runs. Ids sort by time as text (bucket listings are
/// in order), are a valid key segment, and are the same for the same
/// scheduled instant and commit, so two ticks racing to start a run create
/// it once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// The id of a run asked for at `at` (to the second) on commit `sha`.
    pub fn new(at: Timestamp, sha: &str) -> Result<Self, RunIdError> {
        let sha = sha.trim().to_ascii_lowercase();
        if sha.len() < SHORT_SHA || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RunIdError::BadSha { sha });
        }
        let zoned = at.to_zoned(TimeZone::UTC);
        if !(1000..=9999).contains(&zoned.year()) {
            return Err(RunIdError::BadTime { at: at.to_string() });
        }
        let time = zoned.strftime("%Y%m%dT%H%M%SZ");
        Ok(Self(format!("{time}-{}", &sha[..SHORT_SHA])))
    }

    /// Reads an id back (from a key or a command line).
    pub fn parse(text: &str) -> Result<Self, RunIdError> {
        let malformed = || RunIdError::Malformed {
            text: text.chars().take(100).collect(),
        };
        let (time, sha) = text.split_once('-').ok_or_else(malformed)?;
        let shaped = time.len() == 16
            && time.as_bytes().get(8) == Some(&b'T')
            && time.ends_with('Z')
            && sha.len() >= SHORT_SHA
            && sha.len() <= 40
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !shaped {
            return Err(malformed());
        }
        jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", time).map_err(|_| malformed())?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The model version a run deploys: a letter first, then lowercase
    /// letters, digits and underscores (AI Platform's rule; Vertex AI's
    /// version aliases take no `_`, so its deployer spells them `-`),
    /// derived from the id so that a repeated deploy of the same run names
    /// the same version.
    pub fn version_name(&self) -> String {
        format!("v{}", self.0.to_ascii_lowercase().replace('-', "_"))
    }

    /// The id as a GCP label value (lowercase letters, digits, `-`, `_`).
    pub fn label(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RunId {
    type Error = RunIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> Self {
        id.0
    }
}

/// What asked for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunCause {
    /// A Scheduler tick found the schedule due; the scheduled instant (RFC 3339).
    Schedule { at: String },
    /// A push to the pipeline's branch; the ref and the webhook delivery.
    Push { git_ref: String, delivery: String },
    /// Someone ran it by hand (`nbci pipeline run`).
    Manual,
}

/// A request to run a pipeline at a commit: what the lock admits or queues,
/// and what a run is created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    pub run_id: RunId,
    /// The full sha of the commit the run executes.
    pub commit: String,
    pub cause: RunCause,
}

impl RunTrigger {
    /// A trigger asked at `at` for commit `sha`; the run id follows from both.
    pub fn new(at: Timestamp, sha: &str, cause: RunCause) -> Result<Self, RunIdError> {
        Ok(Self {
            run_id: RunId::new(at, sha)?,
            commit: sha.trim().to_ascii_lowercase(),
            cause,
        })
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum RunPhase {
    /// Recorded; no step submitted yet.
    Created,
    /// Step `step`'s job is with the executor; its result is awaited.
    StepSubmitted { step: usize },
    /// Step `step` succeeded and is not the last; the next is to be submitted.
    StepSucceeded { step: usize },
    /// Every step succeeded; the gate is to be decided.
    Gating,
    /// The gate passed; the model is being deployed.
    Deploying,
    /// The model was deployed.
    Deployed,
    /// Every step (and the gate) passed, and the pipeline deploys nothing.
    Completed,
    /// The gate refused the model; nothing was deployed.
    GateRejected,
    /// A step did not succeed, the deploy failed, or the run could not go on.
    Failed,
}

impl RunPhase {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Deployed | Self::Completed | Self::GateRejected | Self::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::StepSubmitted { .. } => "step_submitted",
            Self::StepSucceeded { .. } => "step_succeeded",
            Self::Gating => "gating",
            Self::Deploying => "deploying",
            Self::Deployed => "deployed",
            Self::Completed => "completed",
            Self::GateRejected => "gate_rejected",
            Self::Failed => "failed",
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// A step ended without success; its record has the result.
    Step {
        step: usize,
        status: Status,
        message: String,
    },
    /// The deployment failed (the operation's error).
    Deploy { message: String },
    /// The run could not go on (source missing, a permanent refusal).
    Run { message: String },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step {
                step,
                status,
                message,
            } => write!(f, "step {} {status}: {message}", step + 1),
            Self::Deploy { message } => write!(f, "deploy failed: {message}"),
            Self::Run { message } => f.write_str(message),
        }
    }
}

/// What a step's `result.json` said, kept small for the run's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub started_at: String,
    pub duration_s: f64,
    /// URI of the executed notebook.
    pub output: String,
    /// "Passed in 3.2 s", "Failed at cell 5 of 12: AssertionError".
    pub headline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StepResult {
    fn from_outcome(outcome: &Outcome) -> Self {
        Self {
            started_at: outcome.started_at.clone(),
            duration_s: outcome.duration_s,
            output: outcome.output.clone(),
            headline: cut(outcome.headline()),
            message: outcome.message.clone().map(cut),
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub notebook: String,
    /// The step's folder (`{run}/steps/{i}-{stem}`): its job.json, executed
    /// notebook, HTML and result.json. Also what tells its result events apart.
    pub prefix: String,
    /// What the notebook gets: the step's own parameters, `run_id` and `artifacts_dir`.
    pub parameters: Parameters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<f64>,
    /// Times a lost job was submitted again.
    #[serde(default)]
    pub resubmissions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// How the step ended; `None` while it has not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StepResult>,
}

/// The deployment of a run's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The version it creates (from the run id, so a repeated deploy asks for
    /// the same version and the Deployer's idempotence holds).
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<DeployOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Polls that found the operation pending.
    #[serde(default)]
    pub polls: u32,
    /// Seconds since the epoch before which the operation is not polled again.
    #[serde(default)]
    pub next_poll_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// The version that serves, as the platform reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_version: Option<String>,
}

/// What to do next for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAction {
    /// Write step i's job.json and submit its job.
    SubmitStep(usize),
    /// Step i runs; its result arrives as an event. Sweeps ask the executor
    /// and fail it past [`PipelineRun::overdue_at`].
    AwaitStep(usize),
    /// Read `metrics.json` and the deployed version's metrics, and decide.
    Gate,
    /// Start the deployment.
    Deploy,
    /// Ask where the deployment is.
    PollDeploy(DeployOperation),
    /// Nothing until this time (seconds since the epoch): a backoff or the next poll.
    WaitUntil(f64),
    /// The run is over.
    Done,
}

/// `state.json` of a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    pub pipeline: String,
    pub run_id: RunId,
    /// The full sha of the commit the run executes.
    pub commit: String,
    pub cause: RunCause,
    /// Key of the source tarball every step's job reads.
    pub source: String,
    /// The run's folder (`pipelines/{pipeline}/runs/{run_id}`).
    pub prefix: String,
    /// URI of the run's folder as the steps see it (`gs://...` or
    /// `file://...`): where each reads the previous step's outputs and writes
    /// its own, and where the last writes `metrics.json`.
    pub artifacts_dir: String,
    /// The pipeline as the spec said when the run was created: a run keeps
    /// the steps, gate and deploy of its own commit whatever later pushes change.
    pub spec: Pipeline,
    #[serde(flatten)]
    pub phase: RunPhase,
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

impl Leased for PipelineRun {
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

impl PipelineRun {
    /// A new run of `spec` for `trigger`. `source` is the key of the commit's
    /// tarball; `artifacts_dir` the URI of the run's folder
    /// ([`layout::pipeline_run_prefix`]) as the jobs reach it.
    pub fn create(
        spec: &Pipeline,
        trigger: RunTrigger,
        source: &str,
        artifacts_dir: &str,
        now: f64,
    ) -> Self {
        let prefix = layout::pipeline_run_prefix(&spec.name, trigger.run_id.as_str());
        let steps = spec
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let mut parameters = step.parameters.clone();
                parameters.insert("run_id".into(), Value::from(trigger.run_id.as_str()));
                parameters.insert("artifacts_dir".into(), Value::from(artifacts_dir));
                StepRecord {
                    notebook: step.notebook.clone(),
                    prefix: layout::pipeline_step_prefix(&prefix, index, &step.notebook),
                    parameters,
                    handle: None,
                    submitted_at: None,
                    resubmissions: 0,
                    finished_at: None,
                    outcome: None,
                    result: None,
                }
            })
            .collect();
        let run = Self {
            pipeline: spec.name.clone(),
            run_id: trigger.run_id,
            commit: trigger.commit,
            cause: trigger.cause,
            source: source.to_owned(),
            prefix,
            artifacts_dir: artifacts_dir.to_owned(),
            spec: spec.clone(),
            phase: RunPhase::Created,
            steps,
            gate: None,
            deploy: None,
            failure: None,
            created_at: now,
            finished_at: None,
            retry: Retry::default(),
            lease: None,
        };
        if run.steps.is_empty() {
            // Only a hand-made spec has no steps; the run goes on to what follows them.
            return run.after_steps(now);
        }
        run
    }

    /// The key of this run's `state.json`.
    pub fn state_key(&self) -> String {
        layout::pipeline_run_state_key(&self.prefix)
    }

    /// The key of the `metrics.json` the gate reads.
    pub fn metrics_key(&self) -> String {
        layout::pipeline_metrics_key(&self.prefix)
    }

    /// Whether the run is over.
    pub fn is_finished(&self) -> bool {
        self.phase.is_finished()
    }

    /// What to do next at time `now`.
    pub fn next_action(&self, now: f64) -> RunAction {
        if self.is_finished() {
            return RunAction::Done;
        }
        if self.retry.not_before > now {
            return RunAction::WaitUntil(self.retry.not_before);
        }
        match self.phase {
            RunPhase::Created => RunAction::SubmitStep(0),
            RunPhase::StepSubmitted { step } => RunAction::AwaitStep(step),
            RunPhase::StepSucceeded { step } => RunAction::SubmitStep(step + 1),
            RunPhase::Gating => RunAction::Gate,
            RunPhase::Deploying => match self.deploy.as_ref().and_then(|d| {
                d.operation
                    .as_ref()
                    .map(|operation| (operation, d.next_poll_at))
            }) {
                None => RunAction::Deploy,
                Some((_, at)) if at > now => RunAction::WaitUntil(at),
                Some((operation, _)) => RunAction::PollDeploy(operation.clone()),
            },
            RunPhase::Deployed
            | RunPhase::Completed
            | RunPhase::GateRejected
            | RunPhase::Failed => RunAction::Done,
        }
    }

    /// The step to submit next, if the run is waiting to submit one.
    pub fn step_to_submit(&self) -> Option<usize> {
        match self.phase {
            RunPhase::Created => Some(0),
            RunPhase::StepSucceeded { step } => Some(step + 1),
            _ => None,
        }
        .filter(|step| *step < self.steps.len())
    }

    /// The step whose job runs now, if any.
    pub fn step_running(&self) -> Option<usize> {
        match self.phase {
            RunPhase::StepSubmitted { step } => Some(step),
            _ => None,
        }
    }

    /// The job of step `step`: its folder, the run's source, the notebook,
    /// its parameters; then the image and machine: the step's own settings
    /// over the notebook's metadata (`notebook_env`) over `image`, the
    /// configured default.
    pub fn step_job(
        &self,
        step: usize,
        image: &str,
        notebook_env: Option<&EnvironmentSpec>,
    ) -> Option<Job> {
        let record = self.steps.get(step)?;
        let spec = self.spec.steps.get(step)?;
        let mut job = Job {
            prefix: record.prefix.clone(),
            source: self.source.clone(),
            notebook: record.notebook.clone(),
            parameters: record.parameters.clone(),
            timeout_s: None,
            image: image.to_owned(),
            machine: Machine::default(),
        };
        if let Some(env) = notebook_env {
            job.apply_environment(env, None);
        }
        if let Some(image) = &spec.image {
            job.image = image.clone();
        }
        if spec.machine_type.is_some() {
            job.machine.machine_type = spec.machine_type.clone();
        }
        if let Some(accelerator) = &spec.accelerator {
            job.machine.accelerator_type = Some(accelerator.kind.clone());
            job.machine.accelerator_count = Some(accelerator.count);
        }
        if spec.timeout_s.is_some() {
            job.timeout_s = spec.timeout_s;
        }
        Some(job)
    }

    /// Who step `step`'s job works for, for its `job.json`: what its result completes.
    pub fn job_origin(&self, step: usize) -> JobOrigin {
        JobOrigin::PipelineStep {
            pipeline: self.pipeline.clone(),
            run_id: self.run_id.to_string(),
            step,
        }
    }

    /// Where the model's files are: `artifacts_dir`, or its `model_dir`.
    pub fn model_uri(&self) -> String {
        let base = self.artifacts_dir.trim_end_matches('/');
        match self
            .spec
            .deploy
            .as_ref()
            .and_then(|d| d.model_dir.as_deref())
        {
            Some(dir) => format!("{base}/{dir}"),
            None => base.to_owned(),
        }
    }

    /// What the Deployer is asked for, when the pipeline deploys.
    pub fn deploy_request(&self) -> Option<DeployRequest> {
        let deploy = self.spec.deploy.as_ref()?;
        let labels = BTreeMap::from([
            ("nbci-pipeline".to_owned(), self.pipeline.clone()),
            ("nbci-run".to_owned(), self.run_id.label()),
        ]);
        Some(DeployRequest {
            model: deploy.model.clone(),
            version: self.run_id.version_name(),
            artifact_uri: self.model_uri(),
            framework: deploy
                .framework
                .map(|f| f.as_str().to_owned())
                .unwrap_or_default(),
            runtime_version: deploy.runtime_version.clone(),
            python_version: deploy.python_version.clone(),
            machine_type: deploy.machine_type.clone(),
            image: deploy.image.clone(),
            set_default: deploy.set_default,
            labels,
            metrics: self
                .gate
                .as_ref()
                .and_then(|gate| gate.metrics.as_ref())
                .map(|metrics| metrics.values.clone())
                .unwrap_or_default(),
        })
    }

    /// When the running step is overdue: its timeout (the step's, else
    /// `default_timeout`) plus `grace` after it was submitted. `None` when no
    /// step runs or it has no timeout.
    pub fn overdue_at(&self, grace: Duration, default_timeout: Option<Duration>) -> Option<f64> {
        let step = self.step_running()?;
        let timeout = self
            .spec
            .steps
            .get(step)
            .and_then(|spec| spec.timeout())
            .or(default_timeout)?;
        Some(self.steps.get(step)?.submitted_at? + timeout.as_secs_f64() + grace.as_secs_f64())
    }

    /// A copy with the backoff cleared: the action it was for succeeded.
    fn progressed(&self) -> Self {
        let mut next = self.clone();
        next.retry = Retry::default();
        next
    }

    /// A copy that has ended in `phase` at `now`.
    fn finish(mut self, phase: RunPhase, now: f64) -> Self {
        self.phase = phase;
        self.finished_at = Some(now);
        self.lease = None;
        self
    }

    /// What follows the last step: the gate, else the deploy, else the end.
    fn after_steps(self, now: f64) -> Self {
        if self.spec.gate.is_some() {
            let mut next = self;
            next.phase = RunPhase::Gating;
            next
        } else {
            self.after_gate(now)
        }
    }

    /// What follows a passed gate: the deploy, else the end.
    fn after_gate(mut self, now: f64) -> Self {
        if self.spec.deploy.is_some() {
            self.phase = RunPhase::Deploying;
            self.deploy = Some(DeployRecord {
                version: self.run_id.version_name(),
                operation: None,
                started_at: None,
                polls: 0,
                next_poll_at: 0.0,
                finished_at: None,
                deployed_version: None,
            });
            self
        } else {
            self.finish(RunPhase::Completed, now)
        }
    }

    /// The executor took step `step`'s job; `None` unless that step was the
    /// one to submit (a duplicate, or its result already came in).
    pub fn submitted(&self, step: usize, handle: JobHandle, now: f64) -> Option<Self> {
        if self.step_to_submit() != Some(step) {
            return None;
        }
        let mut next = self.progressed();
        let record = next.steps.get_mut(step)?;
        record.handle = Some(handle);
        record.submitted_at = Some(now);
        next.phase = RunPhase::StepSubmitted { step };
        Some(next)
    }

    /// Step `step`'s result landed in `job_prefix`. `None` when it changes
    /// nothing: another folder (a stale run, another step), a step that is
    /// not the current one, or a result already recorded. A result that
    /// arrives before its submission was recorded (a fast job, a slow writer)
    /// counts: the job ran, and the late `submitted` is then ignored.
    pub fn step_result(
        &self,
        step: usize,
        job_prefix: &str,
        outcome: &Outcome,
        now: f64,
    ) -> Option<Self> {
        let record = self.steps.get(step)?;
        if record.prefix != job_prefix.trim_end_matches('/') || record.outcome.is_some() {
            return None;
        }
        if self.step_running() != Some(step) && self.step_to_submit() != Some(step) {
            return None;
        }
        let mut next = self.progressed();
        let last = next.steps.len() - 1;
        let record = next.steps.get_mut(step)?;
        record.outcome = Some(outcome.status);
        record.result = Some(StepResult::from_outcome(outcome));
        record.finished_at = Some(now);
        if outcome.status != Status::Succeeded {
            next.failure = Some(Failure::Step {
                step,
                status: outcome.status,
                message: cut(outcome.headline()),
            });
            return Some(next.finish(RunPhase::Failed, now));
        }
        if step < last {
            next.phase = RunPhase::StepSucceeded { step };
            Some(next)
        } else {
            Some(next.after_steps(now))
        }
    }

    /// The executor lost step `step`'s job (it does not know the handle, or
    /// the job ended without a result): submit it again in the same folder,
    /// or, past [`MAX_RESUBMISSIONS`], fail the run. `None` unless that step runs.
    pub fn step_lost(&self, step: usize, reason: &str, now: f64) -> Option<Self> {
        if self.step_running() != Some(step) {
            return None;
        }
        let mut next = self.progressed();
        let record = next.steps.get_mut(step)?;
        if record.resubmissions >= MAX_RESUBMISSIONS {
            record.outcome = Some(Status::Error);
            record.finished_at = Some(now);
            next.failure = Some(Failure::Step {
                step,
                status: Status::Error,
                message: cut(format!(
                    "the job was lost {} times: {reason}",
                    record.resubmissions.saturating_add(1)
                )),
            });
            return Some(next.finish(RunPhase::Failed, now));
        }
        record.resubmissions = record.resubmissions.saturating_add(1);
        record.handle = None;
        record.submitted_at = None;
        next.phase = match step {
            0 => RunPhase::Created,
            _ => RunPhase::StepSucceeded { step: step - 1 },
        };
        Some(next)
    }

    /// The gate decided; `None` unless the run was gating.
    pub fn gate_decided(&self, decision: GateDecision, now: f64) -> Option<Self> {
        if self.phase != RunPhase::Gating {
            return None;
        }
        let mut next = self.progressed();
        let passed = decision.passed;
        next.gate = Some(decision);
        Some(if passed {
            next.after_gate(now)
        } else {
            next.finish(RunPhase::GateRejected, now)
        })
    }

    /// The deployment started as `operation`; `None` unless the run was
    /// deploying with no operation recorded yet.
    pub fn deploy_started(&self, operation: DeployOperation, now: f64) -> Option<Self> {
        if self.phase != RunPhase::Deploying
            || self.deploy.as_ref().is_none_or(|d| d.operation.is_some())
        {
            return None;
        }
        let mut next = self.progressed();
        let deploy = next.deploy.as_mut()?;
        deploy.operation = Some(operation);
        deploy.started_at = Some(now);
        deploy.next_poll_at = now;
        Some(next)
    }

    /// A poll found the deployment still pending: poll again after `wait`.
    /// `None` unless an operation is being followed.
    pub fn deploy_pending(&self, now: f64, wait: Duration) -> Option<Self> {
        if self.phase != RunPhase::Deploying
            || self.deploy.as_ref().is_none_or(|d| d.operation.is_none())
        {
            return None;
        }
        let mut next = self.progressed();
        let deploy = next.deploy.as_mut()?;
        deploy.polls = deploy.polls.saturating_add(1);
        deploy.next_poll_at = now + wait.as_secs_f64();
        Some(next)
    }

    /// The deployment ended (or a poll found it pending: `None`, see
    /// [`Self::deploy_pending`]); `None` unless the run was deploying.
    pub fn deploy_finished(&self, status: DeployStatus, now: f64) -> Option<Self> {
        if self.phase != RunPhase::Deploying {
            return None;
        }
        if status == DeployStatus::Pending {
            return None;
        }
        let mut next = self.progressed();
        let deploy = next.deploy.as_mut()?;
        deploy.finished_at = Some(now);
        match status {
            DeployStatus::Pending => None,
            DeployStatus::Deployed { version } => {
                deploy.deployed_version = Some(version);
                Some(next.finish(RunPhase::Deployed, now))
            }
            DeployStatus::Failed { message } => {
                next.failure = Some(Failure::Deploy {
                    message: cut(message),
                });
                Some(next.finish(RunPhase::Failed, now))
            }
        }
    }

    /// The run cannot go on (its source is gone, the executor refused the
    /// job for good); `None` when it is already over.
    pub fn fail(&self, reason: &str, now: f64) -> Option<Self> {
        if self.is_finished() {
            return None;
        }
        let mut next = self.progressed();
        next.failure = Some(Failure::Run {
            message: cut(reason.to_owned()),
        });
        Some(next.finish(RunPhase::Failed, now))
    }
}

/// `text` cut to [`MAX_MESSAGE`] bytes, at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::outcome::Runtime;
    use crate::domain::pipeline::gate::{GateCheck, Metrics};
    use crate::domain::pipeline::spec::PipelineSpec;

    pub(crate) const SHA: &str = "abc1234def5678abc1234def5678abc1234def56";

    /// A pipeline of `steps` notebooks, with a gate and a deploy when asked.
    pub(crate) fn pipeline(steps: usize, gate: bool, deploy: bool) -> Pipeline {
        let mut text = String::from("pipelines:\n  p:\n    steps:\n");
        for step in 0..steps {
            text.push_str(&format!(
                "      - notebook: nb/step{step}.ipynb\n        parameters: {{n: {step}}}\n        timeout: 10m\n"
            ));
        }
        if gate {
            text.push_str("    gate:\n      metrics: {accuracy: \">= 0.9\"}\n");
        }
        if deploy {
            text.push_str(
                "    deploy:\n      target: local\n      model: m\n      model_dir: model\n",
            );
        }
        let spec = PipelineSpec::parse(&text, |_| true).unwrap_or_else(|e| panic!("{e}"));
        spec.pipelines["p"].clone()
    }

    pub(crate) fn run_of(pipeline: &Pipeline) -> PipelineRun {
        let trigger = RunTrigger::new(
            "2026-11-30T03:15:00Z".parse().expect("time"),
            SHA,
            RunCause::Manual,
        )
        .expect("trigger");
        PipelineRun::create(
            pipeline,
            trigger,
            "src/o/r/sha.tar.gz",
            "gs://b/pipelines/p/runs/20261130T031500Z-abc1234",
            100.0,
        )
    }

    pub(crate) fn outcome(status: Status) -> Outcome {
        Outcome {
            notebook: "nb.ipynb".into(),
            status,
            started_at: "2026-11-30T03:15:01Z".into(),
            duration_s: 2.0,
            output: "gs://b/x/output.ipynb".into(),
            failed_cell: None,
            parameters: Default::default(),
            runtime: Runtime {
                image: "local".into(),
                kernel: "python3".into(),
                versions: Default::default(),
            },
            total_cells: 3,
            message: None,
        }
    }

    pub(crate) fn decision(passed: bool) -> GateDecision {
        GateDecision {
            passed,
            checks: vec![GateCheck {
                check: "accuracy >= 0.9".into(),
                passed,
                reason: "because".into(),
            }],
            metrics: Some(Metrics::default()),
        }
    }

    fn handle(step: usize) -> JobHandle {
        JobHandle(format!("job-{step}"))
    }

    /// The run with step `step` submitted and succeeded.
    fn through(run: &PipelineRun, step: usize) -> PipelineRun {
        let prefix = run.steps[step].prefix.clone();
        run.submitted(step, handle(step), 110.0)
            .expect("submitted")
            .step_result(step, &prefix, &outcome(Status::Succeeded), 120.0)
            .expect("result")
    }

    #[test]
    fn run_ids_sort_by_time_and_are_key_segments() {
        let at = |text: &str| text.parse::<Timestamp>().expect("time");
        let id = RunId::new(at("2026-11-30T03:15:00.9Z"), SHA).expect("id");
        assert_eq!(id.as_str(), "20261130T031500Z-abc1234");
        assert!(RunId::new(at("2026-11-30T03:15:01Z"), "0000000").expect("id") > id);
        assert!(RunId::new(at("2026-12-01T00:00:00Z"), "fffffff").expect("id") > id);
        assert!(layout::validate_key(&layout::pipeline_run_prefix("p", id.as_str())).is_ok());
        assert_eq!(id.version_name(), "v20261130t031500z_abc1234");
        assert_eq!(id.label(), "20261130t031500z-abc1234");
        assert_eq!(RunId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(
            RunId::new(at("2026-11-30T03:15:00Z"), &SHA.to_uppercase()),
            Ok(id.clone())
        );
        for bad in [
            "abc",
            "20261130T031500Z-xyz1234",
            "20261330T031500Z-abc1234",
            "20261130031500Z-abc1234",
            "20261130T031500Z-abc",
            "20261130T031500Z-abc1234/x",
        ] {
            assert!(RunId::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            RunId::new(at("2026-11-30T03:15:00Z"), "abc"),
            Err(RunIdError::BadSha { .. })
        ));
        assert!(matches!(
            RunId::new(at("0900-01-01T00:00:00Z"), SHA),
            Err(RunIdError::BadTime { .. })
        ));
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, "\"20261130T031500Z-abc1234\"");
        assert!(serde_json::from_str::<RunId>("\"../x\"").is_err());
    }

    #[test]
    fn a_run_gives_each_step_its_folder_and_parameters() {
        let run = run_of(&pipeline(3, true, true));
        assert_eq!(run.prefix, "pipelines/p/runs/20261130T031500Z-abc1234");
        assert_eq!(run.state_key(), format!("{}/state.json", run.prefix));
        assert_eq!(run.metrics_key(), format!("{}/metrics.json", run.prefix));
        assert_eq!(run.steps[1].prefix, format!("{}/steps/1-step1", run.prefix));
        let parameters = &run.steps[1].parameters;
        assert_eq!(parameters["n"], 1);
        assert_eq!(parameters["run_id"], "20261130T031500Z-abc1234");
        assert_eq!(parameters["artifacts_dir"], run.artifacts_dir.as_str());
        assert_eq!(run.next_action(100.0), RunAction::SubmitStep(0));
        let env = EnvironmentSpec {
            image: Some("gcr.io/nb".into()),
            machine_type: Some("n1-standard-4".into()),
            ..Default::default()
        };
        let job = run.step_job(1, "gcr.io/default", Some(&env)).expect("job");
        assert_eq!(job.prefix, run.steps[1].prefix);
        assert_eq!(job.source, "src/o/r/sha.tar.gz");
        assert_eq!(job.image, "gcr.io/nb");
        assert_eq!(job.machine.machine_type.as_deref(), Some("n1-standard-4"));
        assert_eq!(job.timeout(), Some(Duration::from_secs(600)));
        assert_eq!(job.parameters, run.steps[1].parameters);
        assert!(run.step_job(3, "x", None).is_none());
        assert_eq!(
            run.job_origin(1),
            JobOrigin::PipelineStep {
                pipeline: "p".into(),
                run_id: "20261130T031500Z-abc1234".into(),
                step: 1
            }
        );
    }

    #[test]
    fn a_run_in_progress_survives_its_state_file() {
        let run = through(&run_of(&pipeline(3, true, true)), 0)
            .submitted(1, handle(1), 130.0)
            .expect("submitted")
            .leased("w", 130.0, Duration::from_secs(60));
        let text = serde_json::to_string_pretty(&run).expect("json");
        assert!(
            text.contains("\"phase\": \"step_submitted\",\n  \"step\": 1"),
            "{text}"
        );
        let back: PipelineRun = serde_json::from_str(&text).expect("back");
        assert_eq!(back, run);
        assert_eq!(back.next_action(131.0), RunAction::AwaitStep(1));
    }

    #[test]
    fn a_run_walks_every_phase_in_order() {
        let run = run_of(&pipeline(2, true, true));
        let run = run.submitted(0, handle(0), 110.0).expect("submitted");
        assert_eq!(run.phase, RunPhase::StepSubmitted { step: 0 });
        assert_eq!(run.next_action(110.0), RunAction::AwaitStep(0));
        let prefix = run.steps[0].prefix.clone();
        let run = run
            .step_result(0, &prefix, &outcome(Status::Succeeded), 120.0)
            .expect("result");
        assert_eq!(run.phase, RunPhase::StepSucceeded { step: 0 });
        assert_eq!(run.next_action(120.0), RunAction::SubmitStep(1));
        assert_eq!(run.steps[0].outcome, Some(Status::Succeeded));
        assert_eq!(
            run.steps[0].result.as_ref().map(|r| r.headline.as_str()),
            Some("Passed in 2.0 s")
        );
        let run = through(&run, 1);
        assert_eq!(run.phase, RunPhase::Gating);
        assert_eq!(run.next_action(130.0), RunAction::Gate);
        let run = run.gate_decided(decision(true), 130.0).expect("gate");
        assert_eq!(run.phase, RunPhase::Deploying);
        assert_eq!(run.next_action(130.0), RunAction::Deploy);
        let request = run.deploy_request().expect("request");
        assert_eq!(request.version, "v20261130t031500z_abc1234");
        assert_eq!(request.artifact_uri, format!("{}/model", run.artifacts_dir));
        assert_eq!(request.labels["nbci-pipeline"], "p");
        let op = DeployOperation("op-1".into());
        let run = run.deploy_started(op.clone(), 140.0).expect("started");
        assert_eq!(run.next_action(140.0), RunAction::PollDeploy(op.clone()));
        let run = run
            .deploy_pending(141.0, Duration::from_secs(10))
            .expect("pending");
        assert_eq!(run.next_action(145.0), RunAction::WaitUntil(151.0));
        assert_eq!(run.next_action(151.0), RunAction::PollDeploy(op));
        assert!(run.deploy_finished(DeployStatus::Pending, 151.0).is_none());
        let run = run
            .deploy_finished(
                DeployStatus::Deployed {
                    version: "v1".into(),
                },
                160.0,
            )
            .expect("deployed");
        assert_eq!(run.phase, RunPhase::Deployed);
        assert_eq!(run.finished_at, Some(160.0));
        assert_eq!(run.next_action(160.0), RunAction::Done);
        assert_eq!(
            run.deploy
                .as_ref()
                .and_then(|d| d.deployed_version.as_deref()),
            Some("v1")
        );
        // Everything after the end changes nothing.
        assert!(run.gate_decided(decision(true), 170.0).is_none());
        assert!(
            run.deploy_started(DeployOperation("op-2".into()), 170.0)
                .is_none()
        );
        assert!(run.fail("late", 170.0).is_none());
        let text = serde_json::to_string(&run).expect("json");
        assert!(text.contains("\"phase\":\"deployed\""), "{text}");
        assert_eq!(
            serde_json::from_str::<PipelineRun>(&text).expect("back"),
            run
        );
    }

    #[test]
    fn duplicate_and_stale_events_change_nothing() {
        let run = run_of(&pipeline(3, true, true));
        let submitted = run.submitted(0, handle(0), 110.0).expect("submitted");
        assert!(
            submitted.submitted(0, handle(9), 111.0).is_none(),
            "submitted twice"
        );
        assert!(
            run.submitted(1, handle(1), 110.0).is_none(),
            "not the next step"
        );
        let prefix0 = run.steps[0].prefix.clone();
        let prefix1 = run.steps[1].prefix.clone();
        let ok = outcome(Status::Succeeded);
        assert!(
            submitted.step_result(1, &prefix1, &ok, 120.0).is_none(),
            "a later step"
        );
        assert!(
            submitted.step_result(0, &prefix1, &ok, 120.0).is_none(),
            "another folder"
        );
        assert!(
            submitted
                .step_result(0, "pipelines/p/runs/other/steps/0-step0", &ok, 120.0)
                .is_none(),
            "another run"
        );
        assert!(
            submitted.step_result(7, &prefix0, &ok, 120.0).is_none(),
            "no such step"
        );
        let done = submitted
            .step_result(0, &format!("{prefix0}/"), &ok, 120.0)
            .expect("result");
        assert!(
            done.step_result(0, &prefix0, &ok, 121.0).is_none(),
            "the same result again"
        );
        assert!(
            done.step_result(0, &prefix0, &outcome(Status::Failed), 121.0)
                .is_none()
        );
        assert!(
            done.submitted(0, handle(0), 121.0).is_none(),
            "a late submission of a finished step"
        );
        assert!(
            done.gate_decided(decision(true), 121.0).is_none(),
            "not gating"
        );
        assert!(
            done.deploy_started(DeployOperation("x".into()), 121.0)
                .is_none()
        );
        assert!(
            done.deploy_finished(
                DeployStatus::Deployed {
                    version: "v".into()
                },
                121.0
            )
            .is_none()
        );
        assert!(done.deploy_pending(121.0, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_result_before_its_submission_was_recorded_counts() {
        let run = run_of(&pipeline(2, false, false));
        let prefix = run.steps[0].prefix.clone();
        let early = run
            .step_result(0, &prefix, &outcome(Status::Succeeded), 105.0)
            .expect("result");
        assert_eq!(early.phase, RunPhase::StepSucceeded { step: 0 });
        assert!(
            early.submitted(0, handle(0), 106.0).is_none(),
            "the late write is ignored"
        );
        assert_eq!(early.next_action(106.0), RunAction::SubmitStep(1));
    }

    #[test]
    fn a_failed_or_timed_out_step_ends_the_run() {
        for status in [Status::Failed, Status::TimedOut, Status::Error] {
            let run = through(&run_of(&pipeline(3, true, true)), 0);
            let run = run.submitted(1, handle(1), 130.0).expect("submitted");
            let prefix = run.steps[1].prefix.clone();
            let mut result = outcome(status);
            result.message = Some("boom".into());
            let run = run.step_result(1, &prefix, &result, 140.0).expect("result");
            assert_eq!(run.phase, RunPhase::Failed);
            assert_eq!(run.steps[1].outcome, Some(status));
            assert_eq!(run.steps[2].outcome, None);
            assert!(
                matches!(run.failure, Some(Failure::Step { step: 1, status: s, .. }) if s == status)
            );
            assert!(
                run.failure
                    .as_ref()
                    .is_some_and(|f| f.to_string().starts_with(&format!("step 2 {status}")))
            );
            assert_eq!(run.next_action(140.0), RunAction::Done);
            assert!(run.deploy.is_none() && run.gate.is_none());
            assert!(run.lease.is_none());
        }
    }

    #[test]
    fn a_rejected_gate_never_deploys() {
        let run = through(&through(&run_of(&pipeline(2, true, true)), 0), 1);
        let run = run.gate_decided(decision(false), 130.0).expect("gate");
        assert_eq!(run.phase, RunPhase::GateRejected);
        assert_eq!(run.next_action(130.0), RunAction::Done);
        assert!(run.deploy.is_none());
        assert!(
            run.deploy_started(DeployOperation("op".into()), 131.0)
                .is_none()
        );
        assert!(
            run.gate
                .as_ref()
                .is_some_and(|g| g.checks[0].reason == "because")
        );
    }

    #[test]
    fn without_gate_or_deploy_the_run_ends_accordingly() {
        let run = through(&run_of(&pipeline(1, false, true)), 0);
        assert_eq!(
            run.phase,
            RunPhase::Deploying,
            "no gate: straight to the deploy"
        );
        let run = through(&run_of(&pipeline(1, false, false)), 0);
        assert_eq!(run.phase, RunPhase::Completed);
        assert_eq!(run.finished_at, Some(120.0));
        let run = through(&run_of(&pipeline(1, true, false)), 0);
        let run = run.gate_decided(decision(true), 130.0).expect("gate");
        assert_eq!(run.phase, RunPhase::Completed);
        assert!(run.deploy_request().is_none());
    }

    #[test]
    fn a_failed_deploy_fails_the_run_with_its_message() {
        let run = through(&run_of(&pipeline(1, false, true)), 0);
        let run = run
            .deploy_started(DeployOperation("op".into()), 130.0)
            .expect("started");
        assert!(
            run.deploy_started(DeployOperation("op2".into()), 131.0)
                .is_none(),
            "started twice"
        );
        let run = run
            .deploy_finished(
                DeployStatus::Failed {
                    message: "quota".into(),
                },
                140.0,
            )
            .expect("failed");
        assert_eq!(run.phase, RunPhase::Failed);
        assert_eq!(
            run.failure.as_ref().map(ToString::to_string).as_deref(),
            Some("deploy failed: quota")
        );
    }

    #[test]
    fn lost_jobs_are_resubmitted_then_fail_the_run() {
        let run = through(&run_of(&pipeline(2, false, false)), 0);
        let mut run = run.submitted(1, handle(1), 130.0).expect("submitted");
        assert!(
            run.step_lost(0, "gone", 131.0).is_none(),
            "not the running step"
        );
        for attempt in 1..=MAX_RESUBMISSIONS {
            run = run.step_lost(1, "gone", 131.0).expect("lost");
            assert_eq!(run.phase, RunPhase::StepSucceeded { step: 0 });
            assert_eq!(run.next_action(131.0), RunAction::SubmitStep(1));
            assert_eq!(run.steps[1].resubmissions, attempt);
            assert!(
                run.step_lost(1, "gone", 131.0).is_none(),
                "already resubmitting"
            );
            run = run.submitted(1, handle(1), 132.0).expect("again");
        }
        let run = run.step_lost(1, "gone", 133.0).expect("lost for good");
        assert_eq!(run.phase, RunPhase::Failed);
        assert_eq!(run.steps[1].outcome, Some(Status::Error));
        assert!(
            run.failure
                .as_ref()
                .is_some_and(|f| f.to_string().contains("lost 3 times: gone"))
        );
        let first = run_of(&pipeline(1, false, false))
            .submitted(0, handle(0), 1.0)
            .expect("s");
        assert_eq!(
            first.step_lost(0, "x", 2.0).map(|r| r.phase),
            Some(RunPhase::Created)
        );
    }

    #[test]
    fn overdue_steps_are_found_from_their_timeout() {
        let run = run_of(&pipeline(1, false, false));
        assert_eq!(
            run.overdue_at(Duration::from_secs(60), None),
            None,
            "not submitted"
        );
        let run = run.submitted(0, handle(0), 1000.0).expect("submitted");
        assert_eq!(run.overdue_at(Duration::from_secs(60), None), Some(1660.0));
        let mut untimed = run.clone();
        untimed.spec.steps[0].timeout_s = None;
        assert_eq!(untimed.overdue_at(Duration::ZERO, None), None);
        assert_eq!(
            untimed.overdue_at(Duration::ZERO, Some(Duration::from_secs(5))),
            Some(1005.0)
        );
    }

    #[test]
    fn backoffs_leases_and_failures_are_kept() {
        let run = run_of(&pipeline(1, false, false));
        let waiting = run.failed_transiently("503", 100.0, Duration::from_secs(30));
        assert_eq!(waiting.next_action(110.0), RunAction::WaitUntil(130.0));
        assert_eq!(waiting.next_action(130.0), RunAction::SubmitStep(0));
        let submitted = waiting.submitted(0, handle(0), 131.0).expect("submitted");
        assert_eq!(
            submitted.retry,
            Retry::default(),
            "progress clears the backoff"
        );
        let leased = run.leased("a", 100.0, Duration::from_secs(30));
        assert!(leased.leased_by_other("b", 120.0));
        assert!(!leased.leased_by_other("a", 120.0));
        assert!(!leased.leased_by_other("b", 131.0));
        assert!(!leased.released().leased_by_other("b", 120.0));
        let failed = leased
            .fail("source tarball missing", 140.0)
            .expect("failed");
        assert_eq!(failed.phase, RunPhase::Failed);
        assert!(failed.lease.is_none());
        assert_eq!(
            failed.failure.map(|f| f.to_string()).as_deref(),
            Some("source tarball missing")
        );
    }

    #[test]
    fn huge_messages_are_cut_for_the_state() {
        let run = run_of(&pipeline(1, false, false));
        let prefix = run.steps[0].prefix.clone();
        let mut result = outcome(Status::Error);
        result.message = Some("é".repeat(100_000));
        let run = run.step_result(0, &prefix, &result, 1.0).expect("result");
        let kept = run.steps[0]
            .result
            .as_ref()
            .and_then(|r| r.message.as_ref())
            .map(String::len);
        assert!(kept.is_some_and(|len| len <= MAX_MESSAGE));
    }
}
