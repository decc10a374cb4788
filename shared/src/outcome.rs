//! The result object (`result.json`) every execution ends with, local or cloud.
//!
//! It is written *last* and atomically, so its presence is a positive marker:
//! a run without a result is never taken for a success.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::notebook::CellError;

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
    /// Writes the object to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomically(path, &text)
    }

    /// Reads a result object.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)?;
        Ok(serde_json::from_slice(&bytes)?)
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
    ) -> Self {
        Self {
            notebook: notebook.into(),
            status: Status::Failed,
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
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

/// Writes `bytes` to `path` through a temporary file in the same directory, so
/// that readers see the old file or the whole new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, bytes, true)
}

/// [`write_atomically`], with the flush to disk optional: readers never see a
/// partial file either way; `sync` adds durability across a power cut.
pub fn write_atomically_with(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    if sync {
        file.as_file().sync_all()?;
    }
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}
