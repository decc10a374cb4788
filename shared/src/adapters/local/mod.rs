//! The local adapters: everything `nbci` needs on one machine.
//!
//! # Layout
//! - [`store`]: the directory bucket (ObjectStore with atomic conditional writes).
//! - [`engine`]: papermill in a Python virtual environment: runs, outcomes, limits.
//! - `driver`: the warm driver processes (the embedded Python driver), one
//!   per slot, taking notebook after notebook.
//! - [`process`]: a run's processes, found by a token in their environment
//!   and killed when the run ends.
//! - [`runner`]: one job: stage in, execute, stage out, result last.
//! - [`executor`]: the NotebookExecutor running jobs here, N at a time.
//! - [`bus`]: the EventBus as an in-process queue kept in the bucket.
//! - [`journal`]: the bus's append-only record of claimed webhook deliveries.
//! - [`git`]: the notebooks a commit changed, and a clean copy of a commit.
//! - [`reports`]: a terminal table, JUnit XML and Markdown of many outcomes.
//! - [`registry`]: the Deployer as a model registry folder, whose `CURRENT`
//!   pointer names the version that serves.

pub mod bus;
mod driver;
pub mod engine;
pub mod executor;
pub mod git;
pub mod journal;
pub mod process;
pub mod registry;
pub mod reports;
pub mod runner;
pub mod store;
