//! The local notebook engine: papermill in a Python virtual environment.
//!
//! Each notebook runs in its own Python process (the driver, embedded from
//! `python/nbci_driver.py`), which starts one kernel over IPC sockets. The
//! driver reports progress as JSON lines; this module turns them into
//! [`Progress`] calls, enforces a hard deadline as a backstop, reads the
//! executed notebook and writes the result object last.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::domain::notebook::{
    CellShape, CellType, ERROR_MARKER_TAG, INJECTED_PARAMETERS_TAG, Notebook, align_cells,
    describe_io_error,
};
use crate::domain::outcome::{FailedCell, Outcome, Runtime, Status};
use crate::domain::params::Parameters;
use crate::util::uri::{absolute, file_uri};

/// The driver script, run with `python -c`.
const DRIVER: &str = include_str!("../../../python/nbci_driver.py");
/// The pinned requirements, shown in the fix-it message and used by the images.
pub const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");
/// What the driver prints before each event line.
const EVENT_PREFIX: &str = "@nbci ";
/// The driver's exit status when papermill or a dependency is not importable.
const MISSING_MODULE_EXIT: i32 = 90;
/// How long past the notebook's deadline the driver gets to stop its kernel and
/// save, before its whole process group is killed.
const DEADLINE_GRACE: Duration = Duration::from_secs(20);
/// How much of the driver's stderr to keep for an error message.
const STDERR_TAIL: usize = 4000;

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

/// Events the driver prints (see `nbci_driver.py`).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum DriverEvent {
    Start {
        kernel: String,
        python: String,
        papermill: String,
        cells: Vec<DriverCell>,
    },
    Warning {
        message: String,
    },
    CellStart {
        #[allow(dead_code)]
        index: usize,
    },
    CellDone {
        index: usize,
        outcome: String,
        seconds: f64,
    },
    End {
        reason: EndReason,
        detail: Option<String>,
        running: Option<usize>,
    },
    Missing {
        module: String,
        python: String,
    },
}

/// Why the driver stopped (its `end` event); the Python side writes exactly
/// these names, and anything else reads as an engine error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EndReason {
    /// Every cell ran (some may have raised: the executed notebook says).
    Completed,
    /// One cell ran past `--cell-timeout`.
    CellTimeout,
    /// The notebook ran past `--timeout`.
    NotebookTimeout,
    /// The kernel process died.
    DeadKernel,
    /// papermill or nbclient failed on its own.
    #[serde(other)]
    EngineError,
}

#[derive(Debug, Deserialize)]
struct DriverCell {
    cell_type: String,
    #[serde(default)]
    tags: Vec<String>,
}

impl DriverCell {
    fn shape(&self) -> CellShape {
        CellShape {
            is_error_marker: self.tags.iter().any(|t| t == ERROR_MARKER_TAG),
            is_injected_parameters: self.tags.iter().any(|t| t == INJECTED_PARAMETERS_TAG),
        }
    }
}

/// Everything learned from the driver while it ran.
#[derive(Debug, Default)]
struct DriverReport {
    kernel: Option<String>,
    versions: Map<String, Value>,
    positions: Vec<Option<usize>>,
    end: Option<(EndReason, Option<String>, Option<usize>)>,
    missing: Option<(String, String)>,
}

/// The local engine: runs notebooks with papermill in `python`.
#[derive(Debug, Clone)]
pub struct PapermillEngine {
    pub python: Python,
}

impl PapermillEngine {
    pub fn new(python: Python) -> Self {
        Self { python }
    }

    /// Executes `request.input`, writes the executed notebook and then the result
    /// object, and returns the outcome. The input must already be validated
    /// (see [`Notebook::read`]); `committed` is that parsed notebook.
    pub async fn run(
        &self,
        request: &RunRequest,
        committed: &Notebook,
        progress: &ProgressSink,
    ) -> Result<Outcome, EngineError> {
        let started_at = crate::util::time::now_rfc3339();
        let clock = Instant::now();
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

        let (report, exit, stderr, killed) = self.drive(request, committed, progress).await?;

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
                    EndReason::EngineError => (Status::Error, None, Some(detail_text)),
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

    /// Runs the driver to its end; returns its report, exit status, stderr and
    /// whether the backstop had to kill it.
    async fn drive(
        &self,
        request: &RunRequest,
        committed: &Notebook,
        progress: &ProgressSink,
    ) -> Result<(DriverReport, Option<i32>, String, bool), EngineError> {
        let input = absolute(&request.input);
        let cwd = input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let body = serde_json::json!({
            "input": input,
            "output": absolute(&request.output),
            "cwd": cwd,
            "parameters": request.parameters,
            "kernel": request.kernel,
            "cell_timeout": request.cell_timeout.map(|d| d.as_secs_f64()),
            "timeout": request.timeout.map(|d| d.as_secs_f64()),
        });
        let spawn_error = |error: std::io::Error| EngineError::Spawn {
            python: self.python.interpreter.clone(),
            reason: describe_io_error(&error),
        };
        let mut child = Command::new(&self.python.interpreter)
            .arg("-c")
            .arg(DRIVER)
            .current_dir(&cwd)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYDEVD_DISABLE_FILE_VALIDATION", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            // A driver that dies at once closes the pipe; its exit status tells why.
            let _ = stdin.write_all(body.to_string().as_bytes()).await;
        }
        let stdout = child.stdout.take();
        let mut stderr_pipe = child.stderr.take();
        let stderr_task = tokio::spawn(async move {
            let mut buffer = Vec::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut buffer).await;
            }
            let text = String::from_utf8_lossy(&buffer).into_owned();
            let cut = text.len().saturating_sub(STDERR_TAIL);
            let cut = (cut..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text[cut..].to_owned()
        });

        let committed_shapes: Vec<CellShape> =
            committed.cells.iter().map(CellShape::from).collect();
        let code_cells = committed
            .cells
            .iter()
            .filter(|c| c.cell_type == CellType::Code)
            .count();
        let mut report = DriverReport::default();
        let mut executed_types: Vec<String> = Vec::new();
        let mut ordinal = 0;
        let read_events = async {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(json) = line.strip_prefix(EVENT_PREFIX) else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<DriverEvent>(json) else {
                    continue;
                };
                match event {
                    DriverEvent::Start {
                        kernel,
                        python,
                        papermill,
                        cells,
                    } => {
                        let shapes: Vec<CellShape> = cells.iter().map(DriverCell::shape).collect();
                        report.positions = align_cells(&committed_shapes, &shapes);
                        executed_types = cells.into_iter().map(|c| c.cell_type).collect();
                        report.versions.insert("python".into(), python.into());
                        report.versions.insert("papermill".into(), papermill.into());
                        progress(
                            &request.name,
                            &Progress::Started {
                                kernel: kernel.clone(),
                                code_cells,
                            },
                        );
                        report.kernel = Some(kernel);
                    }
                    DriverEvent::Warning { message } => {
                        progress(&request.name, &Progress::Warning(message));
                    }
                    DriverEvent::CellStart { .. } => {}
                    DriverEvent::CellDone {
                        index,
                        outcome,
                        seconds,
                    } => {
                        let position = report.positions.get(index).copied().flatten();
                        let is_code = executed_types.get(index).is_some_and(|t| t == "code");
                        if is_code && position.is_some() {
                            ordinal += 1;
                            progress(
                                &request.name,
                                &Progress::CellDone {
                                    position: position.map(|p| p + 1),
                                    total: committed.cells.len(),
                                    ordinal,
                                    code_cells,
                                    seconds,
                                    outcome,
                                },
                            );
                        }
                    }
                    DriverEvent::End {
                        reason,
                        detail,
                        running,
                    } => report.end = Some((reason, detail, running)),
                    DriverEvent::Missing { module, python } => {
                        report.missing = Some((module, python));
                    }
                }
            }
        };

        let hard_deadline = request.timeout.map(|t| t + DEADLINE_GRACE);
        let mut killed = false;
        let status = match hard_deadline {
            Some(limit) => {
                let run = async {
                    read_events.await;
                    child.wait().await
                };
                match tokio::time::timeout(limit, run).await {
                    Ok(status) => status,
                    Err(_) => {
                        killed = true;
                        kill_group(pid);
                        child.wait().await
                    }
                }
            }
            None => {
                read_events.await;
                child.wait().await
            }
        };
        let exit = status.ok().and_then(|s| s.code());
        let stderr = stderr_task.await.unwrap_or_default();
        Ok((report, exit, stderr, killed))
    }
}

/// Kills the driver's process group (the driver and anything in its group).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
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
    /// exporter), for the check run's details link.
    pub async fn render_html(&self, notebook: &Path) -> Result<Vec<u8>, String> {
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
