//! A property test of the run state machine under the conditions it is
//! built for: several workers (webhook instances, ticks) driving one run
//! through generation-conditional writes, and result events delivered again
//! and again, late, early and out of order, with stale ones mixed in.
//!
//! Each worker goes the way a flow does: read the state and its generation,
//! take the lease with a conditional write (losing that race ends its turn),
//! perform the side effect, then write the transition's result (reading
//! again when the state moved, and releasing the lease when the transition
//! says nothing changed). A submission's side effect and its write are two
//! separate moves, so a step's result can land before its submission is
//! recorded. No process dies here: a death between a side effect and its
//! write repeats the effect once its lease expires, which the executor (one
//! job per folder) and the Deployer (idempotent per version) absorb.

use std::time::Duration;

use proptest::prelude::*;

use super::run::tests::{decision, outcome, pipeline, run_of};
use super::run::{PipelineRun, RunAction, RunPhase};
use crate::domain::deploy::{DeployOperation, DeployStatus};
use crate::domain::job::JobHandle;
use crate::domain::lease::Leased;
use crate::domain::outcome::Status;

const WORKERS: usize = 3;
const LEASE: Duration = Duration::from_secs(1_000_000);
const POLL_WAIT: Duration = Duration::from_secs(5);

/// How the outside world behaves in one case.
#[derive(Debug, Clone)]
struct World {
    steps: usize,
    gate: bool,
    deploy: bool,
    /// How each step's job ends.
    step_status: Vec<Status>,
    gate_passes: bool,
    /// Polls that find the deployment pending before it ends.
    pending_polls: u32,
    deploy_succeeds: bool,
}

/// One move of the interleaving.
#[derive(Debug, Clone)]
enum Op {
    /// Worker w takes its next move.
    Move(usize),
    /// A result event produced so far is delivered (again).
    Deliver(usize),
    /// A result for a folder that is not the step's (another run, another step).
    Stale(usize),
    /// Time passes.
    Sleep(u8),
}

/// Where a worker is in its turn.
#[derive(Debug, Clone)]
enum Stage {
    Idle,
    /// Read the state at this generation and chose this action.
    Read(RunAction, u64),
    /// Holds the lease for this action.
    Leased(RunAction),
    /// Submitted step i's job; the write is still to do.
    Submitted(usize),
}

struct Sim {
    world: World,
    state: PipelineRun,
    generation: u64,
    now: f64,
    workers: Vec<Stage>,
    /// Result events the executor produced: (step, folder, status).
    events: Vec<(usize, String, Status)>,
    /// Steps submitted to the executor, in order.
    submissions: Vec<usize>,
    deploys: u32,
    polls: u32,
}

fn holder(worker: usize) -> String {
    format!("w{worker}")
}

impl Sim {
    fn new(world: World) -> Self {
        let state = run_of(&pipeline(world.steps, world.gate, world.deploy));
        Self {
            world,
            state,
            generation: 1,
            now: 100.0,
            workers: vec![Stage::Idle; WORKERS],
            events: Vec::new(),
            submissions: Vec::new(),
            deploys: 0,
            polls: 0,
        }
    }

    /// A write with if-generation-match.
    fn write_if(&mut self, next: PipelineRun, generation: u64) -> bool {
        if generation != self.generation {
            return false;
        }
        self.state = next;
        self.generation += 1;
        true
    }

    /// Reads the latest state and writes what `transition` makes of it; when
    /// it changes nothing, releases `worker`'s lease if it still holds it.
    fn apply(&mut self, worker: usize, transition: impl Fn(&PipelineRun) -> Option<PipelineRun>) {
        let (current, generation) = (self.state.clone(), self.generation);
        let next = match transition(&current) {
            Some(next) => next.released(),
            None if current
                .lease
                .as_ref()
                .is_some_and(|l| l.holder == holder(worker)) =>
            {
                current.released()
            }
            None => return,
        };
        assert!(
            self.write_if(next, generation),
            "read and written in one move"
        );
    }

    fn step(&mut self, op: &Op) {
        self.now += 1.0;
        match op {
            Op::Move(worker) => self.move_worker(*worker % WORKERS),
            Op::Deliver(index) => self.deliver(*index),
            Op::Stale(index) => self.stale(*index),
            Op::Sleep(seconds) => self.now += f64::from(*seconds),
        }
        self.check_invariants();
    }

    fn move_worker(&mut self, worker: usize) {
        let stage = std::mem::replace(&mut self.workers[worker], Stage::Idle);
        let now = self.now;
        match stage {
            Stage::Idle => {
                if self.state.leased_by_other(&holder(worker), now) {
                    return;
                }
                let action = self.state.next_action(now);
                if matches!(
                    action,
                    RunAction::SubmitStep(_)
                        | RunAction::Gate
                        | RunAction::Deploy
                        | RunAction::PollDeploy(_)
                ) {
                    self.workers[worker] = Stage::Read(action, self.generation);
                }
            }
            Stage::Read(action, generation) => {
                // The lease is taken on the state as it was read: if the
                // state moved since, the write fails and the turn ends.
                let leased = self.state.leased(&holder(worker), now, LEASE);
                if self.state.leased_by_other(&holder(worker), now) {
                    return;
                }
                if self.write_if(leased, generation) {
                    self.workers[worker] = Stage::Leased(action);
                }
            }
            Stage::Leased(action) => self.act(worker, action),
            Stage::Submitted(step) => {
                let handle = JobHandle(format!("job-{step}"));
                self.apply(worker, |run| run.submitted(step, handle.clone(), now));
            }
        }
    }

    /// The side effect of `action`, performed by the lease holder.
    fn act(&mut self, worker: usize, action: RunAction) {
        let now = self.now;
        match action {
            RunAction::SubmitStep(step) => {
                assert!(
                    !self.submissions.contains(&step),
                    "step {step} submitted twice: {:?}",
                    self.submissions
                );
                for earlier in 0..step {
                    assert_eq!(
                        self.state.steps[earlier].outcome,
                        Some(Status::Succeeded),
                        "step {step} submitted before step {earlier} succeeded"
                    );
                }
                self.submissions.push(step);
                let prefix = self.state.steps[step].prefix.clone();
                self.events
                    .push((step, prefix, self.world.step_status[step]));
                self.workers[worker] = Stage::Submitted(step);
            }
            RunAction::Gate => {
                assert!(
                    self.state
                        .steps
                        .iter()
                        .all(|s| s.outcome == Some(Status::Succeeded)),
                    "gated before every step succeeded"
                );
                let passed = self.world.gate_passes;
                self.apply(worker, |run| run.gate_decided(decision(passed), now));
            }
            RunAction::Deploy => {
                assert!(
                    self.state
                        .steps
                        .iter()
                        .all(|s| s.outcome == Some(Status::Succeeded)),
                    "deployed before every step succeeded"
                );
                if self.world.gate {
                    assert!(
                        self.state.gate.as_ref().is_some_and(|g| g.passed),
                        "deployed without a passed gate"
                    );
                }
                self.deploys += 1;
                let operation = DeployOperation("op".into());
                self.apply(worker, |run| run.deploy_started(operation.clone(), now));
            }
            RunAction::PollDeploy(_) => {
                self.polls += 1;
                if self.polls <= self.world.pending_polls {
                    self.apply(worker, |run| run.deploy_pending(now, POLL_WAIT));
                } else {
                    let status = if self.world.deploy_succeeds {
                        DeployStatus::Deployed {
                            version: "v1".into(),
                        }
                    } else {
                        DeployStatus::Failed {
                            message: "quota".into(),
                        }
                    };
                    self.apply(worker, |run| run.deploy_finished(status.clone(), now));
                }
            }
            RunAction::AwaitStep(_) | RunAction::WaitUntil(_) | RunAction::Done => {
                self.apply(worker, |_| None);
            }
        }
    }

    fn deliver(&mut self, index: usize) {
        if self.events.is_empty() {
            return;
        }
        let (step, prefix, status) = self.events[index % self.events.len()].clone();
        let now = self.now;
        let (current, generation) = (self.state.clone(), self.generation);
        if let Some(next) = current.step_result(step, &prefix, &outcome(status), now) {
            assert!(self.write_if(next, generation));
        }
    }

    fn stale(&mut self, index: usize) {
        let steps = self.state.steps.len();
        let step = index % steps;
        let other_step = self.state.steps[(step + 1) % steps].prefix.clone();
        let other_run = self.state.steps[step]
            .prefix
            .replace(self.state.run_id.as_str(), "20261129T000000Z-0000000");
        for (index, prefix) in [(step, other_run)]
            .into_iter()
            .chain((steps > 1).then_some((step, other_step)))
        {
            assert!(
                self.state
                    .step_result(index, &prefix, &outcome(Status::Succeeded), self.now)
                    .is_none(),
                "a stale result changed the run"
            );
        }
    }

    fn check_invariants(&self) {
        let expected: Vec<usize> = (0..self.submissions.len()).collect();
        assert_eq!(self.submissions, expected, "steps submitted out of order");
        assert!(self.deploys <= 1, "deployed {} times", self.deploys);
        if self.state.gate.as_ref().is_some_and(|g| !g.passed) {
            assert_eq!(self.deploys, 0, "a rejected gate deployed");
            assert_eq!(self.state.phase, RunPhase::GateRejected);
        }
    }

    /// Lets everything settle: every worker finishes its turn, every event
    /// is delivered, time passes, until the run ends.
    fn drain(&mut self) {
        for _ in 0..200 {
            if self.state.is_finished() && self.workers.iter().all(|w| matches!(w, Stage::Idle)) {
                return;
            }
            for worker in 0..WORKERS {
                for _ in 0..4 {
                    self.step(&Op::Move(worker));
                }
            }
            for index in 0..self.events.len() {
                self.step(&Op::Deliver(index));
            }
            self.step(&Op::Sleep(10));
        }
        panic!("the run did not end: {:?}", self.state.phase);
    }

    fn check_end(&self) {
        let world = &self.world;
        let failed = world
            .step_status
            .iter()
            .position(|s| *s != Status::Succeeded);
        match failed {
            Some(failed) => {
                assert_eq!(self.state.phase, RunPhase::Failed);
                assert_eq!(self.submissions, (0..=failed).collect::<Vec<_>>());
                assert_eq!(self.deploys, 0);
                assert!(self.state.gate.is_none());
            }
            None => {
                assert_eq!(self.submissions, (0..world.steps).collect::<Vec<_>>());
                let gate_passed = !world.gate || world.gate_passes;
                let expected = match (gate_passed, world.deploy, world.deploy_succeeds) {
                    (false, _, _) => RunPhase::GateRejected,
                    (true, false, _) => RunPhase::Completed,
                    (true, true, true) => RunPhase::Deployed,
                    (true, true, false) => RunPhase::Failed,
                };
                assert_eq!(self.state.phase, expected);
                assert_eq!(self.deploys, u32::from(gate_passed && world.deploy));
            }
        }
    }
}

fn world() -> impl Strategy<Value = World> {
    (1usize..=4, any::<bool>(), any::<bool>()).prop_flat_map(|(steps, gate, deploy)| {
        let status = prop_oneof![
            8 => Just(Status::Succeeded),
            1 => Just(Status::Failed),
            1 => Just(Status::TimedOut),
        ];
        (
            proptest::collection::vec(status, steps),
            any::<bool>(),
            0u32..3,
            any::<bool>(),
        )
            .prop_map(
                move |(step_status, gate_passes, pending_polls, deploy_succeeds)| World {
                    steps,
                    gate,
                    deploy,
                    step_status,
                    gate_passes,
                    pending_polls,
                    deploy_succeeds,
                },
            )
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..WORKERS).prop_map(Op::Move),
        4 => (0usize..16).prop_map(Op::Deliver),
        1 => (0usize..8).prop_map(Op::Stale),
        1 => (1u8..20).prop_map(Op::Sleep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// However workers and duplicated, reordered and stale events
    /// interleave: each step is submitted once, in order, only after the
    /// previous one succeeded; a run deploys at most once, never after a
    /// rejected gate or a failed step; and every run ends as its world says.
    #[test]
    fn interleavings_submit_each_step_once_in_order_and_deploy_at_most_once(
        world in world(),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut sim = Sim::new(world);
        for op in &ops {
            sim.step(op);
        }
        sim.drain();
        sim.check_end();
    }
}
