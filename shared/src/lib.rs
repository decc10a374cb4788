//! The engine of notebook-cicd, shared by the `nbci` CLI and the Cloud Run functions.
//!
//! # Layout
//! - [`notebook`]: the nbformat 4 document model: strict parsing with one-line
//!   errors, cell lookup, first-error extraction and the cloud-environment metadata.
//! - [`params`]: notebook parameters, typed the way papermill types `-p` values.
//! - [`outcome`]: the `result.json` contract written at the end of every execution.
//! - [`engine`]: the local executor: papermill in a Python virtual environment,
//!   with progress, timeouts and the `raises-exception`/`skip-execution` tags.
//! - [`changes`]: which notebooks a commit added or modified, read from git.
//! - [`report`]: JUnit XML and Markdown summaries of a set of outcomes.
//! - [`github`]: the GitHub App side: signatures, tokens, REST calls, check runs.
//! - [`server`]: serving an axum router with graceful shutdown, for every function.
//! - [`telemetry`]: logging set-up: JSON for Cloud Logging, readable text locally.

pub mod changes;
pub mod engine;
pub mod github;
pub mod notebook;
pub mod outcome;
pub mod params;
pub mod report;
pub mod server;
pub mod telemetry;
