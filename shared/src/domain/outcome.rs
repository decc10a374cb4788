//! The result object (`result.json`) every execution ends with, local or cloud.
//!
//! It is written *last* and atomically, so its presence is a positive marker:
//! a run without a result is never taken for a success.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::notebook::CellError;

/// How an execution ended. The order is by severity, for aggregating many runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    TimedOut,
    /// The infrastructure failed (kernel died, missing interpreter, storage): not the notebook's verdict.
    Error,
}

impl Status {
    /// The `nbci` exit code for this status (contract: 0, 1, 3, 4).
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Succeeded => 0,
            Status::Failed => 1,
            Status::TimedOut => 3,
            Status::Error => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The cell that failed, timed out or was running when the kernel died.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedCell {
    /// 0-based position in the notebook as committed (injected-parameter and
    /// error-marker cells not counted), so it matches the repository's file.
    pub index: Option<usize>,
    pub execution_count: Option<i64>,
    pub ename: String,
    pub evalue: String,
    /// Traceback lines, ANSI colour codes removed.
    pub traceback: Vec<String>,
}

impl From<CellError> for FailedCell {
    fn from(error: CellError) -> Self {
        Self {
            index: error.index,
            execution_count: error.execution_count,
            ename: error.ename,
            evalue: error.evalue,
            traceback: error.traceback,
        }
    }
}

/// Where it ran: the image (or `local`) and the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    pub image: String,
    pub kernel: String,
    /// Versions of the executing stack (python, papermill), when known.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub versions: Map<String, Value>,
}

/// The result object of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Path of the notebook in its repository (or as given on the command line).
    pub notebook: String,
    pub status: Status,
    /// RFC 3339 time the execution started.
    pub started_at: String,
    pub duration_s: f64,
    /// URI of the executed notebook.
    pub output: String,
    pub failed_cell: Option<FailedCell>,
    pub parameters: Map<String, Value>,
    pub runtime: Runtime,
    /// Cells in the committed notebook, for "cell 4 of 12".
    #[serde(default)]
    pub total_cells: usize,
    /// Why the run ended, in one line, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Outcome {
    /// The object as `result.json` holds it: pretty JSON and a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // An Outcome is strings, numbers and JSON values: it always serializes.
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// Reads a result object, naming what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|error| format!("not a result object: {error}"))
    }

    /// The outcome of a notebook that could not be run because the committed
    /// file is not a valid notebook: a failure of that notebook (the commit is
    /// wrong), with the parse error as its message.
    pub fn invalid_notebook(
        notebook: &str,
        reason: &str,
        output: String,
        parameters: Map<String, Value>,
        image: &str,
        started_at: String,
    ) -> Self {
        Self {
            notebook: notebook.into(),
            status: Status::Failed,
            started_at,
            duration_s: 0.0,
            output,
            failed_cell: Some(FailedCell {
                index: None,
                execution_count: None,
                ename: "InvalidNotebook".into(),
                evalue: reason.into(),
                traceback: Vec::new(),
            }),
            parameters,
            runtime: Runtime {
                image: image.into(),
                kernel: String::new(),
                versions: Map::new(),
            },
            total_cells: 0,
            message: Some(reason.into()),
        }
    }

    /// The outcome of a job that ended without a result of its own: the
    /// executor lost it, it outlived its deadline, or it could not be
    /// submitted. `status` is [`Status::Error`] or [`Status::TimedOut`].
    pub fn without_result(
        job: &super::job::Job,
        status: Status,
        reason: &str,
        output: String,
        started_at: String,
    ) -> Self {
        Self {
            notebook: job.notebook.clone(),
            status,
            started_at,
            duration_s: 0.0,
            output,
            failed_cell: None,
            parameters: job.parameters.clone(),
            runtime: Runtime {
                image: job.image.clone(),
                kernel: String::new(),
                versions: Map::new(),
            },
            total_cells: 0,
            message: Some(reason.into()),
        }
    }

    /// "Failed at cell 5 of 12: AssertionError" and friends, for people.
    pub fn headline(&self) -> String {
        let cell = self
            .failed_cell
            .as_ref()
            .and_then(|cell| cell.index.map(|index| (index, cell)));
        match (self.status, cell) {
            (Status::Succeeded, _) => format!("Passed in {:.1} s", self.duration_s),
            (Status::Failed, Some((index, cell))) => format!(
                "Failed at cell {} of {}: {}",
                index + 1,
                self.total_cells,
                cell.ename
            ),
            (Status::TimedOut, Some((index, _))) => {
                format!("Timed out at cell {} of {}", index + 1, self.total_cells)
            }
            (Status::Error, Some((index, cell))) => format!(
                "Infrastructure error at cell {} of {}: {}",
                index + 1,
                self.total_cells,
                cell.ename
            ),
            (Status::Failed, None) => "Failed".into(),
            (Status::TimedOut, None) => "Timed out".into(),
            (Status::Error, None) => format!(
                "Infrastructure error: {}",
                self.message
                    .as_deref()
                    .unwrap_or("the run did not complete")
            ),
        }
    }
}
