//! The local adapters: everything `nbci` needs on one machine.
//!
//! # Layout
//! - [`store`]: the directory bucket (ObjectStore with atomic conditional writes).
//! - [`engine`]: papermill in a Python virtual environment (the embedded driver).
//! - [`runner`]: one job: stage in, execute, stage out, result last.
//! - [`executor`]: the NotebookExecutor running jobs here, N at a time.
//! - [`bus`]: the EventBus as an in-process queue kept in the bucket.
//! - [`git`]: the notebooks a commit changed, and a clean copy of a commit.
//! - [`reports`]: a terminal table, JUnit XML and Markdown of many outcomes.
//! - [`registry`]: the Deployer as a model registry folder, whose `CURRENT`
//!   pointer names the version that serves.

pub mod bus;
pub mod engine;
pub mod executor;
pub mod git;
pub mod registry;
pub mod reports;
pub mod runner;
pub mod store;
