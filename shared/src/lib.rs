//! The engine of notebook-cicd, shared by the `nbci` CLI and the Cloud Run functions.
//!
//! # Layout
//! - [`notebook`]: the nbformat 4 document model: strict parsing with one-line
//!   errors, cell lookup, first-error extraction and the cloud-environment metadata.
//! - [`params`]: notebook parameters, typed the way papermill types `-p` values.
//! - [`outcome`]: the `result.json` contract written at the end of every execution.
//! - [`engine`]: the local executor: papermill in a Python virtual environment,
//!   with progress, timeouts and the `raises-exception`/`skip-execution` tags.
//! - [`executor`]: the NotebookExecutor port and the local executor (papermill here).
//! - [`ci`]: the CI flow: trigger -> check runs -> jobs; result -> completed check.
//! - [`changes`]: which notebooks a commit added or modified, read from git.
//! - [`report`]: JUnit XML and Markdown summaries of a set of outcomes.
//! - [`github`]: the GitHub App side: signatures, tokens, REST calls, check runs.
//! - [`store`]: the ObjectStore port (conditional writes) and its directory adapter.
//! - [`runner`]: one job: stage the source in, execute, stage results out (result last).
//! - [`server`]: serving an axum router with graceful shutdown, for every function.
//! - [`telemetry`]: logging set-up: JSON for Cloud Logging, readable text locally.

pub mod changes;
pub mod ci;
pub mod engine;
pub mod executor;
pub mod github;
pub mod notebook;
pub mod outcome;
pub mod params;
pub mod report;
pub mod runner;
pub mod server;
pub mod store;
pub mod telemetry;
