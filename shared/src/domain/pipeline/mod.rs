//! Pipelines, the CD half: notebooks run in order on a schedule or a push,
//! then a metric gate, then a deploy. Pure, like the rest of the domain: the
//! flows read and write the bucket and call the executor and the Deployer.
//!
//! # Layout
//! - [`spec`]: `nbci.yaml` (**contract**) parsed and validated, every problem
//!   named by its YAML path; which pipelines a Scheduler tick or a push starts.
//! - [`run`]: the state machine of one run (`state.json`): its id, its steps'
//!   records, the transitions for every event, the next action.
//! - [`gate`]: `metrics.json` read, thresholds and `better_than_deployed`
//!   decided, with every reason kept for the run's record.
//! - [`lock`]: one run per pipeline at a time; a trigger meanwhile is queued
//!   (one waits, the newest) or skipped, and the decision says which.

pub mod gate;
pub mod lock;
pub mod run;
pub mod spec;

#[cfg(test)]
mod simulation;

pub use gate::{DeployedHistory, DeployedVersion, GateDecision, GateSpec, Metrics, Threshold};
pub use lock::{Admission, PipelineLock, SkipReason};
pub use run::{PipelineRun, RunAction, RunCause, RunId, RunPhase, RunTrigger};
pub use spec::{Pipeline, PipelineSpec, SpecError, SpecErrors};
