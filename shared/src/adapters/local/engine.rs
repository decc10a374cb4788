//! The local notebook engine: papermill in a Python virtual environment.
//!
//! Notebooks run in warm driver processes (the embedded `python/nbci_driver.py`,
//! one per slot, see [`super::driver`]), each starting one fresh kernel per
//! notebook over IPC sockets. This module turns the driver's events into
//! [`Progress`] calls, maps how a run ended to an [`Outcome`] (reading the
//! executed notebook for the verdict) and writes the result object last.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::process::Command;

use super::driver::{Driven, EndReason, Pool, Submission};
use crate::domain::notebook::{CellShape, CellType, Notebook, describe_io_error};
use crate::domain::outcome::{FailedCell, Outcome, Runtime, Status};
use crate::domain::params::Parameters;
use crate::util::uri::{absolute, file_uri};

/// The pinned requirements, shown in the fix-it message and used by the images.
pub const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");
/// The driver's exit status when papermill or a dependency is not importable.
const MISSING_MODULE_EXIT: i32 = 90;

/// Problems with the execution environment itself (not with a notebook).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Occurs when no Python interpreter with papermill can be found.
    #[error("{0}")]
    PythonMissing(String),
    /// Occurs when the executed notebook or the result cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// Occurs when the driver process cannot be started at all.
    #[error("cannot start {python}: {reason}")]
    Spawn { python: PathBuf, reason: String },
    /// Occurs when the engine was stopped (SIGTERM, shutdown) before the
    /// notebook started.
    #[error("nbci was stopped (SIGTERM) before the notebook ran")]
    Stopped,
}

/// The command that creates the environment, for messages that must say how to fix it.
pub fn setup_hint() -> String {
    "run `make setup` in the notebook-cicd checkout (it creates .venv), or \
     `python3 -m venv .venv && .venv/bin/pip install papermill ipykernel nbclient`, \
     or point NBCI_PYTHON at a Python that has papermill"
        .into()
}

/// A Python interpreter that has papermill (checked when it first runs).
#[derive(Debug, Clone)]
pub struct Python {
    pub interpreter: PathBuf,
}

impl Python {
    /// `NBCI_PYTHON`, else a `.venv` in an ancestor of the `nbci` binary or of the
    /// working directory, else `python3` on `PATH`.
    ///
    /// `explicit` is `NBCI_PYTHON` as the configuration read it; `None` reads
    /// the variable here (the CLI's commands have no service configuration).
    pub fn discover(explicit: Option<PathBuf>) -> Result<Self, EngineError> {
        let explicit = explicit.or_else(|| {
            std::env::var_os("NBCI_PYTHON")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        if let Some(explicit) = explicit {
            let interpreter = explicit;
            if interpreter.is_file() {
                return Ok(Self { interpreter });
            }
            return Err(EngineError::PythonMissing(format!(
                "NBCI_PYTHON={} does not exist; {}",
                interpreter.display(),
                setup_hint()
            )));
        }
        let mut roots: Vec<PathBuf> = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
        }
        if let Ok(cwd) = std::env::current_dir() {
            roots.extend(cwd.ancestors().map(Path::to_path_buf));
        }
        for root in roots {
            let candidate = root.join(".venv").join("bin").join("python");
            if candidate.is_file() {
                return Ok(Self {
                    interpreter: candidate,
                });
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("python3");
                if candidate.is_file() {
                    return Ok(Self {
                        interpreter: candidate,
                    });
                }
            }
        }
        Err(EngineError::PythonMissing(format!(
            "no Python interpreter found; {}",
            setup_hint()
        )))
    }
}

/// Limits and sizes of the engine; [`Default`] is what `nbci` uses unless told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Notebooks run at once, each slot with a warm driver of its own.
    pub slots: usize,
    /// The most output (characters of text, images as their base64 text) one
    /// notebook may produce; past it the kernel is stopped and the notebook
    /// fails. `None`: no cap.
    pub max_output: Option<u64>,
    /// Executed notebooks larger than this (bytes) are not rendered as HTML;
    /// a short page says so instead.
    pub max_html: u64,
    /// While a notebook runs, its executed notebook is written at most this
    /// often (and always when it ends), so that a crash leaves a recent one.
    pub autosave: Duration,
    /// Whether the drivers fork Python kernels from a *zygote*, a process
    /// that imported what a kernel imports and nothing else (about 1 s of
    /// CPU saved per kernel on a small machine, for one more process per
    /// driver): worth it when a slot runs several notebooks.
    pub fork_kernels: bool,
}

/// Default of [`EngineSettings::max_output`]: 256 MB (`NBCI_MAX_OUTPUT`).
pub const DEFAULT_MAX_OUTPUT: u64 = 256_000_000;
/// Default of [`EngineSettings::max_html`]: 32 MB (`NBCI_MAX_HTML`).
pub const DEFAULT_MAX_HTML: u64 = 32_000_000;

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            slots: 1,
            max_output: Some(DEFAULT_MAX_OUTPUT),
            max_html: DEFAULT_MAX_HTML,
            autosave: Duration::from_secs(5),
            fork_kernels: false,
        }
    }
}

/// One notebook execution.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The notebook's name in results and messages (its path in the repository).
    pub name: String,
    /// The notebook to execute; it runs with its own directory as working directory.
    pub input: PathBuf,
    /// Where the executed notebook goes (always written, also after a failure).
    pub output: PathBuf,
    /// Where the result object goes (written last).
    pub result: PathBuf,
    pub parameters: Parameters,
    /// Kernel to use instead of the notebook's kernelspec.
    pub kernel: Option<String>,
    pub cell_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    /// What `runtime.image` says: `local` here, the image URI in the cloud runner.
    pub image: String,
    /// The URI recorded as `output` (default: a `file://` URI of `output`).
    pub output_uri: Option<String>,
}

/// What the engine reports while a notebook runs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The kernel is about to start.
    Started { kernel: String, code_cells: usize },
    /// A code cell finished; `position` is 1-based in the committed notebook.
    CellDone {
        position: Option<usize>,
        total: usize,
        ordinal: usize,
        code_cells: usize,
        seconds: f64,
        outcome: String,
    },
    /// Something the user should know (a fallback kernel, no parameters cell).
    Warning(String),
}

/// Receives progress of one notebook; shared by parallel runs.
pub type ProgressSink = Arc<dyn Fn(&str, &Progress) + Send + Sync>;

/// The local engine: runs notebooks with papermill in `python`, in
/// `settings.slots` warm drivers. Clones share the drivers; when the last
/// clone goes, the drivers stop their kernels and exit.
#[derive(Debug, Clone)]
pub struct PapermillEngine {
    pub python: Python,
    settings: EngineSettings,
    pool: Arc<PoolHandle>,
}

/// Closes the pool when the last engine clone is dropped.
#[derive(Debug)]
struct PoolHandle(Arc<Pool>);

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl PapermillEngine {
    /// An engine with the default settings (one slot).
    pub fn new(python: Python) -> Self {
        Self::with_settings(python, EngineSettings::default())
    }

    pub fn with_settings(python: Python, settings: EngineSettings) -> Self {
        let pool = Arc::new(Pool::new(
            python.clone(),
            settings.slots,
            settings.fork_kernels,
        ));
        Self {
            python,
            settings,
            pool: Arc::new(PoolHandle(pool)),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Starts the drivers now (Python and papermill's imports), so that the
    /// first notebooks do not wait for them. Needs a Tokio runtime.
    pub fn warm_up(&self) {
        self.pool.0.start();
    }

    /// Stops for SIGTERM: notebooks not started fail with
    /// [`EngineError::Stopped`]; running ones stop at once, their executed
    /// notebooks are written and their runs end with status `error`.
    pub fn terminate(&self) {
        self.pool.0.terminate();
    }

    /// Waits for the drivers to stop their kernels and exit (killing what is
    /// left after a grace period): no process a notebook started outlives it.
    pub async fn shutdown(&self) {
        self.pool.0.shutdown().await;
    }

    /// Executes `request.input`, writes the executed notebook and then the result
    /// object, and returns the outcome. The input must already be validated
    /// (see [`Notebook::read`]); `committed` is that parsed notebook.
    ///
    /// The notebook joins the engine's first-come queue at the future's first
    /// poll (nothing before that awaits): callers that want an order poll
    /// their runs once each in that order, as `nbci check` does.
    pub async fn run(
        &self,
        request: &RunRequest,
        committed: &Notebook,
        progress: &ProgressSink,
    ) -> Result<Outcome, EngineError> {
        // A stale result from an earlier run must never be read as this run's.
        let _ = std::fs::remove_file(&request.result);
        for path in [&request.output, &request.result] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|error| EngineError::Write {
                    path: parent.to_owned(),
                    reason: describe_io_error(&error),
                })?;
            }
        }
        if !request.parameters.is_empty() && !committed.has_parameters_cell() {
            progress(
                &request.name,
                &Progress::Warning(
                    "the notebook has no cell tagged `parameters`: the parameters are injected at the top"
                        .into(),
                ),
            );
        }

        let Driven {
            report,
            exit,
            stderr,
            killed,
            started: (started_at, clock),
        } = self
            .pool
            .0
            .submit(self.submission(request, committed, progress))
            .await?;

        if let Some((module, python)) = &report.missing {
            return Err(EngineError::PythonMissing(format!(
                "{python} cannot import {module}; {}",
                setup_hint()
            )));
        }
        if exit == Some(MISSING_MODULE_EXIT) {
            return Err(EngineError::PythonMissing(format!(
                "{} lacks papermill; {}",
                self.python.interpreter.display(),
                setup_hint()
            )));
        }

        // A notebook that could not be written is this run's failure to
        // write it, not a verdict; a file left at its name is not this run's
        // output (a previous run's, or the copy made before), so it goes.
        if let Some((EndReason::OutputUnwritable, detail, _)) = &report.end {
            let _ = std::fs::remove_file(&request.output);
            return Err(EngineError::Write {
                path: request.output.clone(),
                reason: detail.clone().unwrap_or_else(|| "the write failed".into()),
            });
        }
        // The executed notebook is always there afterwards, whatever happened.
        if !request.output.is_file() {
            std::fs::copy(&request.input, &request.output).map_err(|error| EngineError::Write {
                path: request.output.clone(),
                reason: describe_io_error(&error),
            })?;
        }

        let running_cell = |ename: &str, evalue: String, running: Option<usize>| FailedCell {
            index: running.and_then(|i| report.positions.get(i).copied().flatten()),
            execution_count: None,
            ename: ename.into(),
            evalue,
            traceback: Vec::new(),
        };
        let (status, failed_cell, message) = match &report.end {
            Some((reason, detail, running)) => {
                let detail_text = detail.clone().unwrap_or_default();
                match reason {
                    EndReason::Completed => match read_executed(&request.output) {
                        Ok(executed) => match executed.first_error(committed) {
                            Some(error) => (Status::Failed, Some(FailedCell::from(error)), None),
                            None => (Status::Succeeded, None, None),
                        },
                        Err(reason) => (Status::Error, None, Some(reason)),
                    },
                    EndReason::CellTimeout | EndReason::NotebookTimeout => (
                        Status::TimedOut,
                        Some(running_cell("TimeoutError", detail_text.clone(), *running)),
                        Some(detail_text),
                    ),
                    EndReason::DeadKernel => (
                        Status::Error,
                        Some(running_cell(
                            "DeadKernelError",
                            detail_text.clone(),
                            *running,
                        )),
                        Some(format!("the kernel died: {detail_text}")),
                    ),
                    // The notebook's own doing: a failure, not the infrastructure's.
                    EndReason::OutputLimit => (
                        Status::Failed,
                        Some(running_cell(
                            "OutputLimitExceeded",
                            detail_text.clone(),
                            *running,
                        )),
                        Some(detail_text),
                    ),
                    EndReason::Terminated => (
                        Status::Error,
                        Some(running_cell("Terminated", detail_text.clone(), *running)),
                        Some(detail_text),
                    ),
                    EndReason::EngineError | EndReason::OutputUnwritable => {
                        (Status::Error, None, Some(detail_text))
                    }
                }
            }
            None if killed => (
                Status::TimedOut,
                None,
                Some("the notebook did not stop at its timeout and was killed".into()),
            ),
            None => (
                Status::Error,
                None,
                Some(format!(
                    "the papermill driver stopped unexpectedly (exit {}): {}",
                    exit.map_or("by a signal".into(), |c| c.to_string()),
                    last_line(&stderr)
                )),
            ),
        };

        let outcome = Outcome {
            notebook: request.name.clone(),
            status,
            started_at,
            duration_s: (clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            output: request
                .output_uri
                .clone()
                .unwrap_or_else(|| file_uri(&request.output)),
            failed_cell,
            parameters: request.parameters.clone(),
            runtime: Runtime {
                image: request.image.clone(),
                kernel: report
                    .kernel
                    .clone()
                    .or_else(|| request.kernel.clone())
                    .unwrap_or_else(|| "python3".into()),
                versions: report.versions.clone(),
            },
            total_cells: committed.cells.len(),
            message,
        };
        crate::util::fs::write_atomically(&request.result, &outcome.to_json(), true).map_err(
            |error| EngineError::Write {
                path: request.result.clone(),
                reason: describe_io_error(&error),
            },
        )?;
        Ok(outcome)
    }

    /// What the driver needs to run `request`.
    fn submission(
        &self,
        request: &RunRequest,
        committed: &Notebook,
        progress: &ProgressSink,
    ) -> Submission {
        let input = absolute(&request.input);
        let cwd = input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut body = Map::new();
        body.insert(
            "input".into(),
            Value::from(input.to_string_lossy().into_owned()),
        );
        body.insert(
            "output".into(),
            Value::from(absolute(&request.output).to_string_lossy().into_owned()),
        );
        body.insert(
            "cwd".into(),
            Value::from(cwd.to_string_lossy().into_owned()),
        );
        body.insert(
            "parameters".into(),
            serde_json::to_value(&request.parameters).unwrap_or(Value::Null),
        );
        body.insert("kernel".into(), request.kernel.clone().into());
        body.insert(
            "cell_timeout".into(),
            request.cell_timeout.map(|d| d.as_secs_f64()).into(),
        );
        body.insert(
            "timeout".into(),
            request.timeout.map(|d| d.as_secs_f64()).into(),
        );
        body.insert("max_output".into(), self.settings.max_output.into());
        body.insert(
            "autosave".into(),
            self.settings.autosave.as_secs_f64().into(),
        );
        Submission {
            body,
            name: request.name.clone(),
            shapes: committed.cells.iter().map(CellShape::from).collect(),
            code_cells: committed
                .cells
                .iter()
                .filter(|c| c.cell_type == CellType::Code)
                .count(),
            total_cells: committed.cells.len(),
            timeout: request.timeout,
            progress: progress.clone(),
        }
    }
}

fn read_executed(path: &Path) -> Result<Notebook, String> {
    Notebook::read(path).map_err(|error| format!("the executed notebook is unreadable: {error}"))
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_owned()
}

impl PapermillEngine {
    /// The executed notebook as a standalone HTML page (nbconvert's `html`
    /// exporter), for the check run's details link. A notebook larger than
    /// [`EngineSettings::max_html`] is not rendered (nbconvert would hold it
    /// several times over in memory, and no browser shows it well): a short
    /// page says so instead.
    pub async fn render_html(&self, notebook: &Path) -> Result<Vec<u8>, String> {
        let size = std::fs::metadata(notebook)
            .map_err(|error| {
                format!(
                    "cannot read {}: {}",
                    notebook.display(),
                    describe_io_error(&error)
                )
            })?
            .len();
        if size > self.settings.max_html {
            return Ok(too_large_page(size, self.settings.max_html).into_bytes());
        }
        let output = Command::new(&self.python.interpreter)
            .args([
                "-m",
                "nbconvert",
                "--to",
                "html",
                "--stdout",
                "--log-level",
                "ERROR",
            ])
            .arg(absolute(notebook))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| format!("cannot run nbconvert: {error}"))?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(format!(
                "nbconvert failed: {}",
                last_line(&String::from_utf8_lossy(&output.stderr))
            ));
        }
        Ok(output.stdout)
    }
}

/// The page shown instead of a rendering past the cap.
fn too_large_page(size: u64, cap: u64) -> String {
    let shown = crate::util::size::show_size;
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Executed notebook not rendered</title></head>\n\
         <body><p>The executed notebook is {} ({size} bytes), more than the {} that are rendered as HTML \
         (NBCI_MAX_HTML); its outputs are not shown here. The executed notebook itself \
         (output.ipynb) is stored beside this page.</p></body></html>\n",
        shown(size),
        shown(cap),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notebook_past_the_html_cap_gets_a_short_page() {
        let dir = tempfile::tempdir().expect("tempdir");
        let notebook = dir.path().join("big.ipynb");
        std::fs::write(&notebook, vec![b' '; 2000]).expect("write");
        let engine = PapermillEngine::with_settings(
            Python {
                interpreter: PathBuf::from("/nonexistent/python"),
            },
            EngineSettings {
                max_html: 1000,
                ..EngineSettings::default()
            },
        );
        let page =
            String::from_utf8(engine.render_html(&notebook).await.expect("a page")).expect("utf-8");
        assert!(page.contains("2.0 kB (2000 bytes)"), "{page}");
        assert!(page.contains("NBCI_MAX_HTML"), "{page}");
    }
}
