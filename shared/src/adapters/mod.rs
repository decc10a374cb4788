//! Adapters: the ports implemented against the outside world. One family
//! never imports another, and none imports a flow; only `wiring` picks them.
//!
//! # Layout
//! - [`local`]: one machine: the directory bucket, papermill jobs, the
//!   in-process bus, git, JUnit/Markdown reports.
//! - [`github`]: the GitHub App: signatures, events, tokens, REST, check runs.
//! - [`gcp`]: Google Cloud: credentials, the bucket on Cloud Storage, jobs on
//!   Vertex AI and AI Platform, Cloud Storage events and Pub/Sub pushes.

pub mod gcp;
pub mod github;
pub mod local;
