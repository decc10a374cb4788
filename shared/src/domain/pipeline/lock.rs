//! One run per pipeline at a time (`pipelines/{pipeline}/lock.json`).
//!
//! Two runs of one pipeline at once would race for the same model: both
//! gate against the same deployed version and the slower one's deploy wins,
//! whatever its metrics (the seeds' problem). So a pipeline has one active
//! run; a trigger that arrives meanwhile waits in a queue of one. The queue
//! keeps the newest trigger: it runs the latest commit, which is the one
//! that should end up deployed, and the trigger it replaces is reported as
//! skipped. A trigger for the run already active or queued (a redelivered
//! push, two ticks for one instant) is skipped as a duplicate.
//!
//! The lock is written with if-generation-match like a run's state, so two
//! triggers racing for it are decided one after the other.

use serde::{Deserialize, Serialize};

use super::run::{RunId, RunTrigger};

/// The active run of a pipeline and the trigger waiting behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineLock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<RunTrigger>,
}

/// Why a trigger starts no run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its run is the active one.
    AlreadyActive,
    /// Its run is the one queued.
    AlreadyQueued,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyActive => "its run is already running",
            Self::AlreadyQueued => "its run is already queued",
        }
    }
}

/// What the lock says to a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Nothing runs: write `lock` and create the run now.
    Start { lock: PipelineLock },
    /// A run is active: write `lock`; the trigger runs when the active run
    /// ends. `skipped` is the older trigger it replaced in the queue, if any.
    Queued {
        lock: PipelineLock,
        skipped: Option<RunTrigger>,
    },
    /// The trigger is a duplicate: nothing to write.
    Skipped { reason: SkipReason },
}

impl PipelineLock {
    /// What to do with `trigger`.
    pub fn admit(&self, trigger: RunTrigger) -> Admission {
        if self.active.as_ref() == Some(&trigger.run_id) {
            return Admission::Skipped {
                reason: SkipReason::AlreadyActive,
            };
        }
        if self.queued.as_ref().map(|q| &q.run_id) == Some(&trigger.run_id) {
            return Admission::Skipped {
                reason: SkipReason::AlreadyQueued,
            };
        }
        if self.active.is_none() {
            return Admission::Start {
                lock: Self {
                    active: Some(trigger.run_id),
                    queued: None,
                },
            };
        }
        Admission::Queued {
            lock: Self {
                active: self.active.clone(),
                queued: Some(trigger),
            },
            skipped: self.queued.clone(),
        }
    }

    /// Run `run_id` is over: the next lock, and the queued trigger to start
    /// now (already made active in that lock). `None` when `run_id` is not
    /// the active run (a repeated release).
    pub fn finished(&self, run_id: &RunId) -> Option<(Self, Option<RunTrigger>)> {
        if self.active.as_ref() != Some(run_id) {
            return None;
        }
        let next = Self {
            active: self.queued.as_ref().map(|q| q.run_id.clone()),
            queued: None,
        };
        Some((next, self.queued.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::run::RunCause;

    fn trigger(time: &str, sha: &str) -> RunTrigger {
        RunTrigger::new(time.parse().expect("time"), sha, RunCause::Manual).expect("trigger")
    }

    #[test]
    fn a_free_pipeline_starts_the_run() {
        let a = trigger("2026-11-30T03:00:00Z", "aaaaaaa");
        let Admission::Start { lock } = PipelineLock::default().admit(a.clone()) else {
            panic!("should start");
        };
        assert_eq!(lock.active, Some(a.run_id));
        assert_eq!(lock.queued, None);
    }

    #[test]
    fn a_second_trigger_is_queued_and_a_third_replaces_it() {
        let a = trigger("2026-11-30T03:00:00Z", "aaaaaaa");
        let b = trigger("2026-11-30T03:05:00Z", "bbbbbbb");
        let c = trigger("2026-11-30T03:06:00Z", "ccccccc");
        let lock = PipelineLock {
            active: Some(a.run_id.clone()),
            queued: None,
        };
        let Admission::Queued { lock, skipped } = lock.admit(b.clone()) else {
            panic!("should queue");
        };
        assert_eq!(skipped, None);
        assert_eq!(lock.queued.as_ref(), Some(&b));
        let Admission::Queued { lock, skipped } = lock.admit(c.clone()) else {
            panic!("should queue");
        };
        assert_eq!(skipped, Some(b), "the older waiting trigger is skipped");
        assert_eq!(lock.queued.as_ref(), Some(&c));
        let (lock, start) = lock.finished(&a.run_id).expect("a was active");
        assert_eq!(start.as_ref(), Some(&c));
        assert_eq!(lock.active, Some(c.run_id.clone()));
        assert!(lock.finished(&a.run_id).is_none(), "released twice");
        let (lock, start) = lock.finished(&c.run_id).expect("c was active");
        assert_eq!((lock, start), (PipelineLock::default(), None));
    }

    #[test]
    fn duplicates_are_skipped_and_say_why() {
        let a = trigger("2026-11-30T03:00:00Z", "aaaaaaa");
        let b = trigger("2026-11-30T03:05:00Z", "bbbbbbb");
        let lock = PipelineLock {
            active: Some(a.run_id.clone()),
            queued: Some(b.clone()),
        };
        assert_eq!(
            lock.admit(a),
            Admission::Skipped {
                reason: SkipReason::AlreadyActive
            }
        );
        assert_eq!(
            lock.admit(b),
            Admission::Skipped {
                reason: SkipReason::AlreadyQueued
            }
        );
        let text = serde_json::to_string(&lock).expect("json");
        assert_eq!(
            serde_json::from_str::<PipelineLock>(&text).expect("back"),
            lock
        );
    }
}
