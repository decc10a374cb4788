//! The state machine of one notebook's check on one commit (`check.json`).
//!
//! Every event may arrive twice or out of order and any process may die at
//! any line, so the check's progress lives in the bucket, not in memory. Each
//! step below is one side effect (a GitHub call, a job submission) followed
//! by one generation-conditional write of the next state; a step interrupted
//! before its write is simply done again, and every side effect is made safe
//! to repeat (a check run is looked up by its external id before one is
//! created; a job is submitted once per folder; a check run that an earlier
//! try may have completed is asked about before it is completed).
//!
//! ```text
//! Accepted --check run found or created--> Queued --job.json, in_progress--> Started
//!   --job submitted--> Running --result.json landed (or the job was lost)--> Finishing
//!   --completed on GitHub--> Completed
//! ```
//! A permanent refusal (the App was uninstalled) ends in `Abandoned`. A
//! transient failure leaves the phase as it is and sets a time before which
//! the step is not tried again (exponential backoff, or the server's
//! `Retry-After`), for as long as the check lives. A re-run starts attempt
//! n+1 in its own folder; the earlier attempt's check run, if still open, is
//! closed as cancelled and its job cancelled.
//!
//! Only the holder of a lease performs a step, so two workers (a webhook
//! instance and a scheduler tick, say) never both create a check run; a lease
//! whose holder died expires.
//!
//! Everything here is pure: times are passed in, side effects are the caller's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::{Job, JobHandle};
use super::lease::{Lease, Leased, Retry};
use super::outcome::{Outcome, Status};
use super::repo::{CheckRunId, CommitRef};

/// Where a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded; its check run may or may not exist on GitHub yet.
    Accepted,
    /// The check run exists (queued).
    Queued,
    /// `job.json` is written and the check run is in progress.
    Started,
    /// The job is submitted; its handle is known.
    Running,
    /// The outcome is known; GitHub has not taken the completion yet.
    Finishing,
    /// GitHub took the completion.
    Completed,
    /// GitHub refused for good (uninstalled App, deleted repository).
    Abandoned,
}

/// A check run of an earlier attempt, still to be closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run: Option<CheckRunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
}

/// `check.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckState {
    pub commit: CommitRef,
    pub notebook: String,
    /// The check's folder (`ci/{owner}/{repo}/{sha}/{notebook}`).
    pub prefix: String,
    /// 1 for the first run, n for the (n-1)th re-run.
    pub attempt: u32,
    /// The delivery that started this attempt: the same delivery asking again
    /// (a redelivered bus message) does not start another.
    pub cause: String,
    /// The deliveries that started the earlier attempts (the latest
    /// [`MAX_EARLIER_CAUSES`]): a re-run request redelivered after a newer
    /// one started its attempt must not start yet another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_causes: Vec<String>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run: Option<CheckRunId>,
    /// What runs; `None` when the notebook could not be prepared (then
    /// `outcome` says why from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    pub accepted_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<f64>,
    /// Times a lost job was submitted again.
    #[serde(default)]
    pub resubmissions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// A completion of this attempt's check run may have reached GitHub: set
    /// by the lease taken before completing. Whoever completes next asks
    /// GitHub first, so that a completion that landed but was not recorded
    /// (the process died, the bucket's write failed, GitHub's answer was
    /// lost) is not sent a second time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completion_sent: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Why the check was abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
}

/// The next step of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Close an earlier attempt's check run (and cancel its job).
    CloseSuperseded(Superseded),
    /// Find the check run by its external id, or create it queued.
    EnsureCheckRun,
    /// Write `job.json` and mark the check run in progress.
    Start,
    /// Submit the job.
    Submit,
    /// Ask the executor about the job (sweeps only: results normally arrive as events).
    Watch,
    /// Complete the check run with the outcome. With `verify_first`, a
    /// completion may have reached GitHub before: ask whether the run is
    /// completed already, and complete it only if not.
    Complete { verify_first: bool },
    /// Nothing until this time (seconds since the epoch): a backoff.
    WaitUntil(f64),
    /// The check is over.
    Done,
}

/// A notebook prepared for a check: the job that runs it, or the outcome
/// that says why nothing can run (unusable metadata).
pub type Prepared = Result<Job, Box<Outcome>>;

/// How many earlier attempts' causes a check remembers (re-runs are asked
/// by people, so a check rarely has more; a request redelivered after this
/// many newer ones would start an attempt again).
pub const MAX_EARLIER_CAUSES: usize = 64;

/// How many times a job the executor lost is submitted again before its
/// check is completed as an infrastructure error.
pub const MAX_RESUBMISSIONS: u32 = 2;

/// The longest traceback and message kept in the state: GitHub shows at most
/// 65535 characters of a check's text anyway.
const MAX_KEPT_TEXT: usize = 64 * 1024;

impl Leased for CheckState {
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

impl CheckState {
    /// A new check, attempt 1. `job` is what runs, or the outcome that says
    /// why nothing can (bad metadata): then the check completes with it.
    pub fn accept(
        commit: CommitRef,
        notebook: &str,
        prefix: &str,
        prepared: Prepared,
        cause: &str,
        now: f64,
    ) -> Self {
        let (job, outcome) = match prepared {
            Ok(job) => (Some(job), None),
            Err(outcome) => (None, Some(trim_outcome(*outcome))),
        };
        Self {
            commit,
            notebook: notebook.to_owned(),
            prefix: prefix.to_owned(),
            attempt: 1,
            cause: cause.to_owned(),
            earlier_causes: Vec::new(),
            phase: Phase::Accepted,
            check_run: None,
            job,
            handle: None,
            details_url: None,
            accepted_at: now,
            submitted_at: None,
            resubmissions: 0,
            outcome,
            completion_sent: false,
            superseded: Vec::new(),
            retry: Retry::default(),
            lease: None,
            abandoned: None,
        }
    }

    /// The state after a re-run asked by `cause`, or `None` when this cause
    /// already started the current attempt (a repeated request). `prepare`
    /// gives the job for the new attempt's folder.
    pub fn rerun(
        &self,
        cause: &str,
        now: f64,
        prepare: impl FnOnce(u32) -> Prepared,
    ) -> Option<Self> {
        if self.caused_by(cause) {
            return None;
        }
        let attempt = self.attempt.saturating_add(1);
        // Every attempt's cause, not only the current one's: the bus
        // delivers at least once and in any order, so re-run A redelivered
        // after re-run B started its attempt would otherwise start a third.
        let mut earlier_causes = self.earlier_causes.clone();
        earlier_causes.push(self.cause.clone());
        let excess = earlier_causes.len().saturating_sub(MAX_EARLIER_CAUSES);
        earlier_causes.drain(..excess);
        let mut superseded = self.superseded.clone();
        if !matches!(self.phase, Phase::Completed | Phase::Abandoned) {
            superseded.push(Superseded {
                attempt: self.attempt,
                check_run: self.check_run,
                handle: self.handle.clone(),
            });
        }
        let mut next = Self::accept(
            self.commit.clone(),
            &self.notebook,
            &self.prefix,
            prepare(attempt),
            cause,
            now,
        );
        next.attempt = attempt;
        next.earlier_causes = earlier_causes;
        next.superseded = superseded;
        next.lease = self.lease.clone();
        Some(next)
    }

    /// Whether delivery `cause` started this attempt or an earlier one.
    pub fn caused_by(&self, cause: &str) -> bool {
        self.cause == cause || self.earlier_causes.iter().any(|earlier| earlier == cause)
    }

    /// What to do next at time `now`.
    pub fn next_step(&self, now: f64) -> Step {
        if matches!(self.phase, Phase::Completed | Phase::Abandoned) {
            return Step::Done;
        }
        if self.retry.not_before > now {
            return Step::WaitUntil(self.retry.not_before);
        }
        if let Some(first) = self.superseded.first() {
            return Step::CloseSuperseded(first.clone());
        }
        match self.phase {
            Phase::Accepted => Step::EnsureCheckRun,
            Phase::Queued => Step::Start,
            Phase::Started => Step::Submit,
            Phase::Running => Step::Watch,
            Phase::Finishing => Step::Complete {
                verify_first: self.completion_sent,
            },
            Phase::Completed | Phase::Abandoned => Step::Done,
        }
    }

    /// The state with `holder`'s lease until `now + ttl`, taken to perform
    /// `step`. Before a completion it also records that a completion may
    /// reach GitHub: this write lands before the completion is sent, so no
    /// completion reaches GitHub without the state saying it may have.
    pub fn leased_for(&self, step: &Step, holder: &str, now: f64, ttl: Duration) -> Self {
        let mut next = self.leased(holder, now, ttl);
        if matches!(step, Step::Complete { .. }) {
            next.completion_sent = true;
        }
        next
    }

    fn succeeded(&self) -> Self {
        let mut next = self.clone();
        next.retry = Retry::default();
        next
    }

    /// The first superseded run was closed.
    pub fn superseded_closed(&self) -> Self {
        let mut next = self.succeeded();
        if !next.superseded.is_empty() {
            next.superseded.remove(0);
        }
        next
    }

    /// The check run exists. A check prepared with an outcome goes straight
    /// to finishing.
    pub fn check_run_ensured(&self, id: CheckRunId) -> Self {
        let mut next = self.succeeded();
        next.check_run = Some(id);
        if next.phase == Phase::Accepted {
            next.phase = if next.outcome.is_some() {
                Phase::Finishing
            } else {
                Phase::Queued
            };
        }
        next
    }

    /// `job.json` is written and the check run is in progress.
    pub fn started(&self, details_url: Option<String>) -> Self {
        let mut next = self.succeeded();
        next.details_url = details_url;
        if next.phase == Phase::Queued {
            next.phase = Phase::Started;
        }
        next
    }

    /// The executor took the job.
    pub fn submitted(&self, handle: JobHandle, now: f64) -> Self {
        let mut next = self.succeeded();
        next.handle = Some(handle);
        next.submitted_at = Some(now);
        if next.phase == Phase::Started {
            next.phase = Phase::Running;
        }
        next
    }

    /// The executor lost the job: submit it again (in the same folder).
    pub fn resubmit(&self) -> Self {
        let mut next = self.succeeded();
        next.resubmissions = next.resubmissions.saturating_add(1);
        next.handle = None;
        if next.phase == Phase::Running {
            next.phase = Phase::Started;
        }
        next
    }

    /// An outcome for `attempt` is known, or `None` when it changes nothing
    /// (an earlier attempt's result, or one already recorded).
    pub fn outcome_known(&self, attempt: u32, outcome: Outcome) -> Option<Self> {
        if attempt != self.attempt || self.phase >= Phase::Finishing {
            return None;
        }
        let mut next = self.succeeded();
        next.outcome = Some(trim_outcome(outcome));
        next.phase = if next.check_run.is_some() {
            Phase::Finishing
        } else {
            // No check run yet: it is created first, then completed.
            Phase::Accepted
        };
        Some(next)
    }

    /// GitHub took the completion.
    pub fn completed(&self) -> Self {
        let mut next = self.succeeded();
        next.phase = Phase::Completed;
        next.lease = None;
        next
    }

    /// GitHub refused for good.
    pub fn abandon(&self, reason: &str) -> Self {
        let mut next = self.succeeded();
        next.phase = Phase::Abandoned;
        next.abandoned = Some(reason.to_owned());
        next.lease = None;
        next
    }

    /// When a running job is overdue: its timeout plus `grace` after it was
    /// submitted. `None` without a timeout or before submission.
    pub fn overdue_at(&self, grace: Duration) -> Option<f64> {
        let timeout = self.job.as_ref()?.timeout()?;
        Some(self.submitted_at? + timeout.as_secs_f64() + grace.as_secs_f64())
    }

    /// The folder of the current attempt's files.
    pub fn attempt_prefix(&self) -> String {
        super::layout::attempt_prefix(&self.prefix, self.attempt)
    }

    /// The external id of the current attempt's check run: its folder, which
    /// is unique per attempt and tells a person where the files are.
    pub fn external_id(&self) -> String {
        self.attempt_prefix()
    }

    /// Whether the notebook's verdict is known to have been bad.
    pub fn failed(&self) -> bool {
        self.outcome
            .as_ref()
            .is_some_and(|outcome| outcome.status != Status::Succeeded)
    }
}

/// An outcome with its traceback and message cut to what a check can show,
/// so that a state object stays small whatever a notebook printed.
fn trim_outcome(mut outcome: Outcome) -> Outcome {
    if let Some(cell) = outcome.failed_cell.as_mut() {
        cut(&mut cell.evalue, MAX_KEPT_TEXT);
        let mut budget = MAX_KEPT_TEXT;
        cell.traceback.retain_mut(|line| {
            if budget == 0 {
                return false;
            }
            cut(line, budget);
            budget = budget.saturating_sub(line.len());
            true
        });
    }
    if let Some(message) = outcome.message.as_mut() {
        cut(message, MAX_KEPT_TEXT);
    }
    outcome
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::Machine;
    use crate::domain::outcome::Runtime;
    use crate::domain::repo::{CommitSha, InstallationId, RepoRef};

    fn commit() -> CommitRef {
        CommitRef {
            installation: InstallationId(1),
            repo: RepoRef::parse("o/r").expect("repo"),
            sha: CommitSha::try_from("a".repeat(40)).expect("sha"),
        }
    }

    fn job(prefix: &str) -> Job {
        Job {
            prefix: prefix.into(),
            source: "src/o/r/a.tar.gz".into(),
            notebook: "nb.ipynb".into(),
            parameters: Default::default(),
            timeout_s: Some(60.0),
            image: "local".into(),
            machine: Machine::default(),
        }
    }

    fn outcome(status: Status) -> Outcome {
        Outcome {
            notebook: "nb.ipynb".into(),
            status,
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_s: 1.0,
            output: "file:///x".into(),
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

    fn new_check() -> CheckState {
        CheckState::accept(
            commit(),
            "nb.ipynb",
            "ci/o/r/a/nb.ipynb",
            Ok(job("ci/o/r/a/nb.ipynb")),
            "d1",
            100.0,
        )
    }

    #[test]
    fn a_check_walks_every_phase_in_order() {
        let check = new_check();
        assert_eq!(check.next_step(100.0), Step::EnsureCheckRun);
        let check = check.check_run_ensured(CheckRunId(7));
        assert_eq!(check.next_step(100.0), Step::Start);
        let check = check.started(Some("http://x".into()));
        assert_eq!(check.next_step(100.0), Step::Submit);
        let check = check.submitted(JobHandle("h".into()), 101.0);
        assert_eq!(check.next_step(100.0), Step::Watch);
        let check = check
            .outcome_known(1, outcome(Status::Succeeded))
            .expect("recorded");
        assert_eq!(
            check.next_step(100.0),
            Step::Complete {
                verify_first: false
            }
        );
        assert!(
            check.outcome_known(1, outcome(Status::Failed)).is_none(),
            "a duplicate changes nothing"
        );
        let check = check.completed();
        assert_eq!(check.next_step(100.0), Step::Done);
        assert!(check.outcome_known(1, outcome(Status::Failed)).is_none());
    }

    #[test]
    fn an_unprepared_notebook_completes_with_its_reason() {
        let check = CheckState::accept(
            commit(),
            "nb.ipynb",
            "p",
            Err(Box::new(outcome(Status::Failed))),
            "d1",
            0.0,
        );
        let check = check.check_run_ensured(CheckRunId(1));
        assert_eq!(
            check.next_step(0.0),
            Step::Complete {
                verify_first: false
            }
        );
    }

    #[test]
    fn a_result_before_the_check_run_waits_for_it() {
        let check = new_check()
            .outcome_known(1, outcome(Status::Failed))
            .expect("recorded");
        assert_eq!(check.next_step(0.0), Step::EnsureCheckRun);
        assert_eq!(
            check.check_run_ensured(CheckRunId(3)).next_step(0.0),
            Step::Complete {
                verify_first: false
            }
        );
    }

    fn finishing() -> CheckState {
        new_check()
            .check_run_ensured(CheckRunId(7))
            .started(None)
            .submitted(JobHandle("h".into()), 1.0)
            .outcome_known(1, outcome(Status::Succeeded))
            .expect("recorded")
    }

    #[test]
    fn a_completion_that_may_have_been_sent_is_verified_before_it_is_sent_again() {
        let check = finishing();
        let first = check.next_step(100.0);
        assert_eq!(
            first,
            Step::Complete {
                verify_first: false
            },
            "nothing sent yet: complete directly"
        );
        // The lease before completing records that a completion may reach
        // GitHub; the step being performed still completes directly.
        let leased = check.leased_for(&first, "a", 100.0, Duration::from_secs(30));
        assert!(leased.completion_sent);
        assert!(!check.completion_sent, "the state read is unchanged");
        // Whoever completes after that try (it died, or its answer was lost)
        // asks GitHub first.
        assert_eq!(
            leased.released().next_step(200.0),
            Step::Complete { verify_first: true }
        );
        let retried = leased.failed_transiently("502", 100.0, Duration::from_secs(5));
        assert_eq!(
            retried.next_step(105.0),
            Step::Complete { verify_first: true }
        );
        // Other steps' leases change nothing.
        let started =
            new_check().leased_for(&Step::EnsureCheckRun, "a", 0.0, Duration::from_secs(30));
        assert!(!started.completion_sent);
    }

    /// A finishing check with the lease taken to complete it.
    fn leased_to_complete() -> CheckState {
        finishing().leased_for(
            &Step::Complete {
                verify_first: false,
            },
            "a",
            100.0,
            Duration::from_secs(30),
        )
    }

    #[test]
    fn a_new_attempt_completes_its_own_run_directly() {
        let sent = leased_to_complete();
        let again = sent
            .rerun("d2", 5.0, |attempt| {
                Ok(job(&format!("p/attempts/{attempt}")))
            })
            .expect("a new attempt")
            .superseded_closed()
            .check_run_ensured(CheckRunId(8))
            .started(None)
            .submitted(JobHandle("h2".into()), 6.0)
            .outcome_known(2, outcome(Status::Failed))
            .expect("recorded");
        assert!(!again.completion_sent);
        assert_eq!(
            again.next_step(7.0),
            Step::Complete {
                verify_first: false
            }
        );
    }

    #[test]
    fn the_flag_is_kept_only_when_set() {
        let json = serde_json::to_value(finishing()).expect("json");
        assert!(json.get("completion_sent").is_none(), "{json}");
        let sent = leased_to_complete();
        let json = serde_json::to_value(&sent).expect("json");
        assert_eq!(json["completion_sent"], true);
        let read: CheckState = serde_json::from_value(json).expect("read back");
        assert_eq!(read, sent);
    }

    #[test]
    fn transient_failures_back_off_and_success_resets() {
        let check = new_check().failed_transiently("502", 100.0, Duration::from_secs(30));
        assert_eq!(check.next_step(110.0), Step::WaitUntil(130.0));
        assert_eq!(check.next_step(130.0), Step::EnsureCheckRun);
        let check = check.failed_transiently("502", 130.0, Duration::from_secs(60));
        assert_eq!(check.retry.failures, 2);
        let check = check.check_run_ensured(CheckRunId(1));
        assert_eq!(check.retry, Retry::default());
    }

    #[test]
    fn a_rerun_supersedes_an_open_attempt_once() {
        let check = new_check()
            .check_run_ensured(CheckRunId(7))
            .started(None)
            .submitted(JobHandle("h1".into()), 1.0);
        let again = check
            .rerun("d2", 5.0, |attempt| {
                Ok(job(&format!("p/attempts/{attempt}")))
            })
            .expect("a new attempt");
        assert_eq!(again.attempt, 2);
        assert_eq!(again.phase, Phase::Accepted);
        assert_eq!(
            again.next_step(5.0),
            Step::CloseSuperseded(Superseded {
                attempt: 1,
                check_run: Some(CheckRunId(7)),
                handle: Some(JobHandle("h1".into())),
            })
        );
        assert!(
            again.rerun("d2", 6.0, |_| Ok(job("x"))).is_none(),
            "the same delivery again"
        );
        let closed = again.superseded_closed();
        assert_eq!(closed.next_step(5.0), Step::EnsureCheckRun);
        assert_eq!(closed.external_id(), "ci/o/r/a/nb.ipynb/attempts/2");
        // The first attempt's result arrives late: it changes nothing.
        assert!(
            closed
                .outcome_known(1, outcome(Status::Succeeded))
                .is_none()
        );
        // A completed check re-run supersedes nothing.
        let done = new_check().check_run_ensured(CheckRunId(1)).completed();
        let again = done
            .rerun("d3", 1.0, |_| Ok(job("y")))
            .expect("new attempt");
        assert!(again.superseded.is_empty());
    }

    #[test]
    fn a_rerun_redelivered_after_a_newer_one_starts_nothing() {
        let prepare = |attempt: u32| Ok(job(&format!("p/attempts/{attempt}")));
        let second = new_check().rerun("d2", 1.0, prepare).expect("attempt 2");
        let third = second.rerun("d3", 2.0, prepare).expect("attempt 3");
        assert_eq!(third.attempt, 3);
        for cause in ["d1", "d2", "d3"] {
            assert!(third.caused_by(cause), "{cause}");
            assert!(third.rerun(cause, 3.0, prepare).is_none(), "{cause} again");
        }
        // Only the latest causes are kept.
        let mut check = third;
        for n in 0..MAX_EARLIER_CAUSES + 5 {
            check = check
                .rerun(&format!("r{n}"), 4.0, prepare)
                .expect("a new attempt");
        }
        assert_eq!(check.earlier_causes.len(), MAX_EARLIER_CAUSES);
        assert!(check.caused_by(&format!("r{}", MAX_EARLIER_CAUSES)));
    }

    #[test]
    fn leases_exclude_others_until_they_expire() {
        let check = new_check().leased("a", 100.0, Duration::from_secs(30));
        assert!(check.leased_by_other("b", 120.0));
        assert!(!check.leased_by_other("a", 120.0));
        assert!(!check.leased_by_other("b", 131.0));
        assert!(!check.released().leased_by_other("b", 120.0));
    }

    #[test]
    fn lost_jobs_are_resubmitted_then_overdue_ones_found() {
        let check = new_check()
            .check_run_ensured(CheckRunId(1))
            .started(None)
            .submitted(JobHandle("h".into()), 1000.0);
        assert_eq!(check.overdue_at(Duration::from_secs(600)), Some(1660.0));
        let again = check.resubmit();
        assert_eq!(
            (again.phase, again.resubmissions, again.handle.clone()),
            (Phase::Started, 1, None)
        );
    }

    #[test]
    fn huge_tracebacks_are_cut_for_the_state() {
        let mut big = outcome(Status::Failed);
        big.failed_cell = Some(crate::domain::outcome::FailedCell {
            index: Some(1),
            execution_count: Some(1),
            ename: "E".into(),
            evalue: "é".repeat(100_000),
            traceback: vec!["x".repeat(50_000); 10],
        });
        let check = new_check().outcome_known(1, big).expect("recorded");
        let cell = check.outcome.and_then(|o| o.failed_cell).expect("kept");
        assert!(cell.evalue.len() <= MAX_KEPT_TEXT);
        assert!(cell.traceback.iter().map(String::len).sum::<usize>() <= MAX_KEPT_TEXT);
    }
}
