//! Warm drivers: one Python driver process per job slot (`python/nbci_driver.py`),
//! each taking one notebook after another.
//!
//! Why: a driver costs about half a second of CPU to start (Python, then
//! papermill's imports), more than the cells of many notebooks, and a kernel
//! needs about as long to boot. So each slot keeps its driver, and when its
//! notebook starts executing it takes the next notebook from the queue (its
//! *lookahead*) and has the driver launch that notebook's kernel while the
//! current one runs. A slot that falls idle with the queue empty takes
//! another slot's lookahead (the other driver's early kernel is then
//! cancelled), so that binding early never leaves a notebook waiting behind a
//! long one while a slot is free.
//!
//! Isolation is the driver's: a fresh kernel per notebook, in the notebook's
//! directory, over IPC sockets of its own; the driver runs no notebook code.
//!
//! Ending well: a run's processes (the kernel and anything it started) are
//! killed by the driver when the run ends. When nbci must stop a driver
//! itself (the run passed its hard deadline, the caller dropped the run, the
//! engine is dropped), the driver's process group and every process carrying
//! one of its tokens are killed ([`super::process`]); a driver whose stdin
//! closes (nbci gone) stops its kernels and exits by itself.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, mpsc, oneshot};

use super::engine::{EngineError, Progress, ProgressSink, Python};
use super::process;
use crate::domain::notebook::{
    CellShape, ERROR_MARKER_TAG, INJECTED_PARAMETERS_TAG, align_cells, describe_io_error,
};

/// The driver script, run with `python -c`.
const DRIVER: &str = include_str!("../../../python/nbci_driver.py");
/// What the driver prints before each event line.
const EVENT_PREFIX: &str = "@nbci ";
/// How long past the notebook's deadline the driver gets to stop its kernel and
/// save, before nbci kills it and everything of its runs.
const DEADLINE_GRACE: Duration = Duration::from_secs(20);
/// How much of the driver's stderr to keep for an error message.
const STDERR_TAIL: usize = 4000;
/// How long a driver whose stdin closed gets to stop its kernels (gracefully)
/// and exit, before it is killed.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Events the driver prints (see `nbci_driver.py`); `id` names the run.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum DriverEvent {
    Start {
        id: Option<u64>,
        kernel: String,
        python: String,
        papermill: String,
        cells: Vec<DriverCell>,
    },
    Warning {
        id: Option<u64>,
        message: String,
    },
    CellStart {
        id: Option<u64>,
    },
    CellDone {
        id: Option<u64>,
        index: usize,
        outcome: String,
        seconds: f64,
    },
    End {
        id: Option<u64>,
        reason: EndReason,
        detail: Option<String>,
        running: Option<usize>,
    },
    Missing {
        module: String,
        python: String,
    },
}

impl DriverEvent {
    /// The run the event is about (`None`: the driver's own, `missing`).
    fn run(&self) -> Option<u64> {
        match self {
            DriverEvent::Start { id, .. }
            | DriverEvent::Warning { id, .. }
            | DriverEvent::CellStart { id }
            | DriverEvent::CellDone { id, .. }
            | DriverEvent::End { id, .. } => *id,
            DriverEvent::Missing { .. } => None,
        }
    }
}

/// Why a run stopped (its `end` event); the Python side writes exactly these
/// names, and anything else reads as an engine error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum EndReason {
    /// Every cell ran (some may have raised: the executed notebook says).
    Completed,
    /// One cell ran past `--cell-timeout`.
    CellTimeout,
    /// The notebook ran past `--timeout`.
    NotebookTimeout,
    /// The kernel process died.
    DeadKernel,
    /// The notebook's outputs passed the cap; the kernel was stopped.
    OutputLimit,
    /// nbci was stopped (SIGTERM) while the notebook ran.
    Terminated,
    /// The executed notebook could not be written (a full disk): the detail
    /// says why; nothing of it is left.
    OutputUnwritable,
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

/// Everything learned from the driver while a run went.
#[derive(Debug, Default)]
pub(super) struct DriverReport {
    pub kernel: Option<String>,
    pub versions: Map<String, Value>,
    pub positions: Vec<Option<usize>>,
    pub end: Option<(EndReason, Option<String>, Option<usize>)>,
    pub missing: Option<(String, String)>,
}

/// How a run went, as far as the driver is concerned.
#[derive(Debug)]
pub(super) struct Driven {
    pub report: DriverReport,
    /// The driver's exit status, when it exited during the run.
    pub exit: Option<i32>,
    /// The end of the driver's stderr, when it exited during the run.
    pub stderr: String,
    /// Whether nbci had to kill the driver at the hard deadline.
    pub killed: bool,
    /// When a slot took the notebook (RFC 3339) and the clock of that
    /// moment: a notebook's duration is its own run, not its wait for a slot.
    pub started: (String, Instant),
}

/// One notebook waiting for, or bound to, a slot.
pub(super) struct Ticket {
    /// Unique in the pool: names the run to the driver.
    id: u64,
    /// The run's fields for the driver (input, output, cwd, limits...).
    body: Map<String, Value>,
    name: String,
    /// The committed notebook's cells, to line progress up with it.
    shapes: Vec<CellShape>,
    code_cells: usize,
    total_cells: usize,
    timeout: Option<Duration>,
    progress: ProgressSink,
    reply: oneshot::Sender<Result<Driven, EngineError>>,
}

/// What the caller knows about its notebook, for [`Pool::submit`].
pub(super) struct Submission {
    pub body: Map<String, Value>,
    pub name: String,
    pub shapes: Vec<CellShape>,
    pub code_cells: usize,
    pub total_cells: usize,
    pub timeout: Option<Duration>,
    pub progress: ProgressSink,
}

/// The slots, their queue and their drivers.
pub(super) struct Pool {
    python: Python,
    slots: usize,
    /// Whether drivers fork kernels from a zygote (`--fork-kernels`).
    fork_kernels: bool,
    state: Mutex<State>,
    /// Wakes idle workers: a ticket was queued, or the pool is closing.
    wake: Notify,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next_driver: AtomicU64,
    next_run: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("python", &self.python)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Ticket>,
    /// Each slot's next notebook, whose kernel its driver launched early.
    lookahead: Vec<Option<Ticket>>,
    /// Each slot's driver process, for [`Pool::terminate`] to signal.
    drivers: Vec<Option<u32>>,
    started: bool,
    /// No more work: idle workers close their drivers and end.
    closing: bool,
    /// SIGTERM: queued notebooks fail, running ones are stopped and saved.
    terminated: bool,
}

/// What a worker takes next.
enum Take {
    /// Its own lookahead: the kernel may be launched already.
    Own(Ticket),
    /// A queued ticket, or another slot's lookahead.
    Other(Ticket),
    Stop,
    Wait,
}

impl Pool {
    pub(super) fn new(python: Python, slots: usize, fork_kernels: bool) -> Self {
        let slots = slots.max(1);
        Self {
            python,
            slots,
            fork_kernels,
            state: Mutex::new(State {
                lookahead: (0..slots).map(|_| None).collect(),
                drivers: vec![None; slots],
                ..State::default()
            }),
            wake: Notify::new(),
            workers: Mutex::new(Vec::new()),
            next_driver: AtomicU64::new(1),
            next_run: AtomicU64::new(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked holding it; the queue is sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the workers (each spawns its driver at once), if not yet started.
    pub(super) fn start(self: &Arc<Self>) {
        {
            let mut state = self.state();
            if state.started || state.closing {
                return;
            }
            state.started = true;
        }
        let handles: Vec<_> = (0..self.slots)
            .map(|slot| tokio::spawn(work(self.clone(), slot)))
            .collect();
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(handles);
    }

    /// Queues a notebook and waits for its run.
    pub(super) async fn submit(
        self: &Arc<Self>,
        submission: Submission,
    ) -> Result<Driven, EngineError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.state();
            if state.terminated || state.closing {
                return Err(EngineError::Stopped);
            }
            state.queue.push_back(Ticket {
                id: self.next_run.fetch_add(1, Ordering::Relaxed),
                body: submission.body,
                name: submission.name,
                shapes: submission.shapes,
                code_cells: submission.code_cells,
                total_cells: submission.total_cells,
                timeout: submission.timeout,
                progress: submission.progress,
                reply,
            });
        }
        self.start();
        self.wake.notify_waiters();
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// SIGTERM: queued notebooks fail with [`EngineError::Stopped`], each
    /// driver stops its running notebook (saving it) and exits.
    pub(super) fn terminate(&self) {
        let (dropped, drivers) = {
            let mut state = self.state();
            state.terminated = true;
            state.closing = true;
            let mut dropped: Vec<Ticket> = state.queue.drain(..).collect();
            dropped.extend(state.lookahead.iter_mut().filter_map(Option::take));
            (dropped, state.drivers.clone())
        };
        for ticket in dropped {
            let _ = ticket.reply.send(Err(EngineError::Stopped));
        }
        for pid in drivers.into_iter().flatten() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        self.wake.notify_waiters();
    }

    /// No more notebooks: idle workers close their drivers (which stop their
    /// kernels) and end.
    pub(super) fn close(&self) {
        self.state().closing = true;
        self.wake.notify_waiters();
    }

    /// [`Pool::close`], then waits for the workers, so that no driver, kernel
    /// or process a notebook started is left when this returns.
    pub(super) async fn shutdown(&self) {
        self.close();
        let handles: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for handle in handles {
            let _ = handle.await;
        }
    }

    fn try_take(&self, slot: usize) -> Take {
        let mut state = self.state();
        if state.terminated {
            return Take::Stop;
        }
        if let Some(ticket) = state.lookahead.get_mut(slot).and_then(Option::take) {
            return Take::Own(ticket);
        }
        if let Some(ticket) = state.queue.pop_front() {
            return Take::Other(ticket);
        }
        if let Some(ticket) = state.lookahead.iter_mut().find_map(Option::take) {
            return Take::Other(ticket);
        }
        if state.closing {
            return Take::Stop;
        }
        Take::Wait
    }

    /// The next notebook for `slot` (and whether it is the slot's own
    /// lookahead); `None` when the pool stops.
    async fn take(&self, slot: usize) -> Option<(Ticket, bool)> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_take(slot) {
                Take::Own(ticket) => return Some((ticket, true)),
                Take::Other(ticket) => return Some((ticket, false)),
                Take::Stop => return None,
                Take::Wait => notified.await,
            }
        }
    }

    /// Binds the first queued notebook to `slot` as its lookahead; returns its
    /// id and fields for the driver's `prepare`.
    fn bind_lookahead(&self, slot: usize) -> Option<(u64, Map<String, Value>)> {
        let mut state = self.state();
        if state.terminated || state.lookahead.get(slot).is_none_or(Option::is_some) {
            return None;
        }
        while let Some(ticket) = state.queue.pop_front() {
            if ticket.reply.is_closed() {
                continue;
            }
            let bound = (ticket.id, ticket.body.clone());
            if let Some(place) = state.lookahead.get_mut(slot) {
                *place = Some(ticket);
            }
            return Some(bound);
        }
        None
    }

    fn set_driver(&self, slot: usize, pid: Option<u32>) {
        if let Some(place) = self.state().drivers.get_mut(slot) {
            *place = pid;
        }
    }
}

/// One slot: a warm driver running the slot's notebooks one after another.
async fn work(pool: Arc<Pool>, slot: usize) {
    let mut driver: Option<DriverProcess> = None;
    // The run this slot's driver has prepared (launched a kernel for), if any.
    let mut prepared: Option<u64> = None;
    loop {
        if driver.is_none() && !pool.state().closing {
            // Warm: Python and papermill's imports before the first notebook arrives.
            driver = spawn_driver(&pool, slot).await.ok();
        }
        let Some((ticket, own)) = pool.take(slot).await else {
            break;
        };
        if let (Some(id), Some(process)) = (prepared.take(), driver.as_mut())
            && !(own && id == ticket.id)
        {
            // Another slot took our lookahead: its early kernel goes.
            process.send(&command("cancel", id, None)).await;
        }
        if ticket.reply.is_closed() {
            if own && let Some(process) = driver.as_mut() {
                process.send(&command("cancel", ticket.id, None)).await;
            }
            continue;
        }
        if driver.as_mut().is_none_or(|process| !process.is_running()) {
            driver = None;
            match spawn_driver(&pool, slot).await {
                Ok(process) => driver = Some(process),
                Err(error) => {
                    let _ = ticket.reply.send(Err(error));
                    continue;
                }
            }
        }
        let Some(process) = driver.as_mut() else {
            continue;
        };
        let ran = run_on(&pool, slot, process, ticket).await;
        prepared = ran.prepared;
        if !ran.driver_alive {
            driver = None;
            pool.set_driver(slot, None);
            prepared = None;
        }
    }
    if let Some(process) = driver.take() {
        pool.set_driver(slot, None);
        process.close(CLOSE_GRACE).await;
    }
}

async fn spawn_driver(pool: &Pool, slot: usize) -> Result<DriverProcess, EngineError> {
    let number = pool.next_driver.fetch_add(1, Ordering::Relaxed);
    let process = DriverProcess::spawn(&pool.python, number, pool.fork_kernels).await?;
    pool.set_driver(slot, process.pid);
    Ok(process)
}

/// A request line for the driver.
fn command(op: &str, id: u64, fields: Option<(&Map<String, Value>, &str)>) -> Value {
    let mut message = Map::new();
    if let Some((fields, token)) = fields {
        message.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        message.insert("token".into(), token.into());
    }
    message.insert("op".into(), op.into());
    message.insert("id".into(), id.into());
    Value::Object(message)
}

/// What became of the driver after a run.
struct Ran {
    driver_alive: bool,
    /// The lookahead the driver prepared during the run.
    prepared: Option<u64>,
}

/// Runs `ticket` on `process` and answers it.
async fn run_on(pool: &Pool, slot: usize, process: &mut DriverProcess, mut ticket: Ticket) -> Ran {
    let started = (crate::util::time::now_rfc3339(), Instant::now());
    let token = process.run_token(ticket.id);
    if !process
        .send(&command("run", ticket.id, Some((&ticket.body, &token))))
        .await
    {
        // The driver is gone; what it left says why.
        let exit = process.exit_status().await;
        let _ = ticket.reply.send(Ok(Driven {
            report: DriverReport::default(),
            exit,
            stderr: process.stderr_tail(),
            killed: false,
            started,
        }));
        return Ran {
            driver_alive: false,
            prepared: None,
        };
    }
    let mut report = DriverReport::default();
    let mut executed_types: Vec<String> = Vec::new();
    let mut ordinal = 0;
    let mut prepared = None;
    let deadline = ticket
        .timeout
        .map(|timeout| Instant::now() + timeout.saturating_add(DEADLINE_GRACE));
    let name = ticket.name.clone();
    let progress = ticket.progress.clone();
    loop {
        let expiry = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            event = process.next_event() => Next::Event(event),
            () = ticket.reply.closed() => Next::Abandoned,
            () = expiry => Next::Expired,
        };
        let event = match next {
            Next::Event(Some(event)) => event,
            Next::Abandoned => {
                // The caller is gone (a cancelled job): so is this run.
                process.kill();
                return Ran {
                    driver_alive: false,
                    prepared: None,
                };
            }
            ended @ (Next::Expired | Next::Event(None)) => {
                // Past the hard deadline, or the driver is gone.
                let killed = matches!(ended, Next::Expired);
                if killed {
                    process.kill();
                }
                let exit = process.exit_status().await;
                let _ = ticket.reply.send(Ok(Driven {
                    report,
                    exit,
                    stderr: process.stderr_tail(),
                    killed,
                    started,
                }));
                return Ran {
                    driver_alive: false,
                    prepared: None,
                };
            }
        };
        if event.run().is_some_and(|id| id != ticket.id) {
            continue;
        }
        match event {
            DriverEvent::Start {
                kernel,
                python,
                papermill,
                cells,
                ..
            } => {
                let shapes: Vec<CellShape> = cells.iter().map(DriverCell::shape).collect();
                report.positions = align_cells(&ticket.shapes, &shapes);
                executed_types = cells.into_iter().map(|c| c.cell_type).collect();
                report.versions.insert("python".into(), python.into());
                report.versions.insert("papermill".into(), papermill.into());
                progress(
                    &name,
                    &Progress::Started {
                        kernel: kernel.clone(),
                        code_cells: ticket.code_cells,
                    },
                );
                report.kernel = Some(kernel);
            }
            DriverEvent::Warning { message, .. } => {
                progress(&name, &Progress::Warning(message));
            }
            DriverEvent::CellStart { .. } => {
                // The kernel is up and working: time to launch the next one.
                if prepared.is_none()
                    && let Some((id, body)) = pool.bind_lookahead(slot)
                {
                    let token = process.run_token(id);
                    process
                        .send(&command("prepare", id, Some((&body, &token))))
                        .await;
                    prepared = Some(id);
                }
            }
            DriverEvent::CellDone {
                index,
                outcome,
                seconds,
                ..
            } => {
                let position = report.positions.get(index).copied().flatten();
                let is_code = executed_types.get(index).is_some_and(|t| t == "code");
                if is_code && position.is_some() {
                    ordinal += 1;
                    progress(
                        &name,
                        &Progress::CellDone {
                            position: position.map(|p| p + 1),
                            total: ticket.total_cells,
                            ordinal,
                            code_cells: ticket.code_cells,
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
                ..
            } => {
                report.end = Some((reason, detail, running));
                let _ = ticket.reply.send(Ok(Driven {
                    report,
                    exit: None,
                    stderr: String::new(),
                    killed: false,
                    started,
                }));
                return Ran {
                    driver_alive: true,
                    prepared,
                };
            }
            DriverEvent::Missing { module, python } => {
                report.missing = Some((module, python));
            }
        }
    }
}

/// What ended a wait for the driver's next event.
enum Next {
    Event(Option<DriverEvent>),
    /// The caller dropped its run.
    Abandoned,
    /// The hard deadline passed.
    Expired,
}

/// One driver process and the pipes to it.
struct DriverProcess {
    child: Child,
    pid: Option<u32>,
    /// Every run token of this driver starts with `{token}.`: what to kill
    /// when the driver has to go.
    token: String,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl DriverProcess {
    async fn spawn(python: &Python, number: u64, fork_kernels: bool) -> Result<Self, EngineError> {
        let spawn_error = |error: std::io::Error| EngineError::Spawn {
            python: python.interpreter.clone(),
            reason: describe_io_error(&error),
        };
        let mut command = Command::new(&python.interpreter);
        command.arg("-c").arg(DRIVER);
        if fork_kernels {
            command.arg("--fork-kernels");
        }
        let mut child = command
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
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("{}-{number}-{started:x}", std::process::id());
        let (sender, events) = mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(json) = line.strip_prefix(EVENT_PREFIX)
                        && sender.send(json.to_owned()).is_err()
                    {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0_u8; 8192];
                while let Ok(read) = pipe.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    let chunk = String::from_utf8_lossy(buffer.get(..read).unwrap_or_default());
                    let mut text = tail.lock().unwrap_or_else(PoisonError::into_inner);
                    text.push_str(&chunk);
                    keep_tail(&mut text, STDERR_TAIL);
                }
            });
        }
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            pid,
            token,
            events,
            stderr,
        })
    }

    fn run_token(&self, id: u64) -> String {
        format!("{}.{id}", self.token)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Writes one request line; false when the driver no longer reads.
    async fn send(&mut self, message: &Value) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.is_ok() && stdin.flush().await.is_ok()
    }

    /// The next event; `None` once the driver's stdout is closed (it exited).
    async fn next_event(&mut self) -> Option<DriverEvent> {
        loop {
            let line = self.events.recv().await?;
            if let Ok(event) = serde_json::from_str::<DriverEvent>(&line) {
                return Some(event);
            }
        }
    }

    async fn exit_status(&mut self) -> Option<i32> {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                self.kill();
                None
            }
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Kills the driver's process group and every process of its runs.
    fn kill(&mut self) {
        // Once reaped, the pid may be another process's: signal only a live one.
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.pid) {
            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        process::kill_tagged(&format!("{}.", self.token));
    }

    /// Closes the driver's stdin, so that it stops its kernels (gracefully)
    /// and exits; kills it and its runs' processes past `grace`.
    async fn close(mut self, grace: Duration) {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(grace, self.child.wait()).await;
        // Drop kills whatever is left.
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last `limit` bytes of `text` (cut at a character boundary).
fn keep_tail(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let cut = text.len().saturating_sub(limit);
    let cut = (cut..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text.replace_range(..cut, "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_keeps_the_end_on_a_character_boundary() {
        let mut text = "é".repeat(10);
        keep_tail(&mut text, 5);
        assert_eq!(text, "éé");
        let mut short = "abc".to_owned();
        keep_tail(&mut short, 5);
        assert_eq!(short, "abc");
    }

    #[test]
    fn requests_carry_the_op_the_id_and_the_token() {
        let mut fields = Map::new();
        fields.insert("input".into(), "/x.ipynb".into());
        let message = command("prepare", 7, Some((&fields, "t.7")));
        assert_eq!(message["op"], "prepare");
        assert_eq!(message["id"], 7);
        assert_eq!(message["token"], "t.7");
        assert_eq!(message["input"], "/x.ipynb");
        let cancel = command("cancel", 3, None);
        assert_eq!(cancel.as_object().map(Map::len), Some(2));
        assert_eq!(
            (&cancel["op"], &cancel["id"]),
            (&Value::from("cancel"), &Value::from(3))
        );
    }

    #[test]
    fn unknown_end_reasons_read_as_engine_errors() {
        let event: DriverEvent = serde_json::from_str(
            r#"{"event": "end", "id": 2, "reason": "something_new", "detail": null, "running": null}"#,
        )
        .expect("parses");
        assert!(matches!(
            event,
            DriverEvent::End {
                reason: EndReason::EngineError,
                id: Some(2),
                ..
            }
        ));
        assert_eq!(
            serde_json::from_str::<EndReason>(r#""output_limit""#).expect("known"),
            EndReason::OutputLimit
        );
    }
}
