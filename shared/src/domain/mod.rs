//! The domain: what nbci reasons about, with no I/O and no outside types.
//! Nothing here imports another part of the crate.
//!
//! # Layout
//! - [`notebook`]: the nbformat 4 document model, cell positions, first error,
//!   the cloud-environment metadata, durations, and which paths are notebooks.
//! - [`params`]: notebook parameters, typed the way papermill types `-p` values.
//! - [`outcome`]: the `result.json` contract written at the end of every execution.
//! - [`repo`]: typed ids of the code host: repositories, installations, check runs.
//! - [`trigger`]: what a webhook delivery asks for (run these notebooks of this commit).
//! - [`job`]: one notebook execution as an executor sees it: the job record
//!   (`job.json`), the executor's handle and the states a job goes through.
//! - [`check`]: the state machine of one notebook's check on one commit
//!   (`check.json`), with leases and persisted retries.
//! - [`layout`]: the bucket's keys; the only place that spells them.
//! - [`lease`]: leases and persisted retries of the state objects above.
//! - [`deploy`]: what a deployment asks for and how it ends (the Deployer port's words).
//! - [`pipeline`]: continuous delivery: the `nbci.yaml` spec, the state machine
//!   of a pipeline run (`state.json`), the metric gate, one run per pipeline.

pub mod check;
pub mod deploy;
pub mod job;
pub mod layout;
pub mod lease;
pub mod notebook;
pub mod outcome;
pub mod params;
pub mod pipeline;
pub mod repo;
pub mod trigger;
