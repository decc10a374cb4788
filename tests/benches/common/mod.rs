//! What the service benchmarks share (`webhook.rs`, `load.rs`): the release
//! binaries as child processes killed on drop, their CPU time and memory from
//! `/proc`, a fake GitHub, percentiles, and the JSON file of each benchmark's
//! figures (`$NBCI_BENCH_OUT/{id}.json`, default `target/bench`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The webhook secret the services verify with (a benchmark value, not a secret).
pub const SECRET: &str = "nbci-bench-webhook-secret";
/// How long a server may take to answer its first `/healthz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Raw latency samples kept per series in the JSON file.
const MAX_SAMPLES: usize = 20_000;

/// The workspace root (this crate is `tests/`, one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Runs `benchmark` on a multi-threaded runtime (`threads` workers, or one
/// per core) until it ends or Ctrl-C comes. On Ctrl-C it is dropped, which
/// drops its [`Service`]s and so kills the processes they started, and the
/// program exits 130.
pub fn run_until_ctrl_c(
    threads: Option<usize>,
    benchmark: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build()?;
    let finished = runtime.block_on(async {
        tokio::select! {
            result = benchmark => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match finished {
        Some(result) => result,
        None => {
            eprintln!("interrupted; the processes it started are stopped");
            std::process::exit(130);
        }
    }
}

/// `$variable`, else `name` in this benchmark's profile directory
/// (`target/release/deps/bench-*` -> `target/release/name`).
pub fn release_binary(variable: &str, name: &str) -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os(variable) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("the benchmark does not live in target/<profile>/deps")?
            .join(name),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --release --bin {name}` \
             (`make bench` does), or set {variable}",
            binary.display()
        );
    }
    Ok(binary)
}

/// Where the services' buckets and the logs go: `TMPDIR` when it is set,
/// else `/dev/shm` where there is one (Cloud Run's file system is in memory
/// too); else the temporary directory.
pub fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A port nobody listens on now (the OS picks it; a tiny race remains until
/// the child binds it).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A positive whole number from the environment, else `default`.
pub fn setting(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{name} must be a positive whole number, got {value:?}")),
    }
}

/// The command line of a release service (`github-webhook`, `gcs-events`)
/// over the directory bucket `bucket`, against `github_url`: all but `PORT`.
pub fn service_command(
    binary: &Path,
    github_url: &str,
    bucket: &Path,
    webhook_secret: bool,
) -> Command {
    let root = workspace();
    let mut command = Command::new(binary);
    command
        .current_dir(&root)
        .env("GITHUB_APP_ID", "1")
        .env(
            "GITHUB_APP_PRIVATE_KEY",
            root.join("tests/fixtures/github/test-app-key.pkcs1.pem"),
        )
        .env("GITHUB_API_URL", github_url)
        // A directory bucket (an absolute path): dedupe markers, and the
        // in-bucket queue triggers are handed to before the answer.
        .env("NBCI_BUCKET", bucket)
        // No notebook runs (the fake compare lists no files).
        .env("NBCI_PYTHON", "/bin/true")
        .env_remove("NBCI_DATA_DIR")
        .env_remove("NBCI_EXECUTOR")
        .env_remove("NBCI_DISPATCH_TOPIC")
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("NBCI_PUBLIC_URL")
        .env_remove("K_SERVICE")
        // The services' default level (a line or two per request), unless
        // the benchmark is run with another.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        );
    if webhook_secret {
        command.env("GITHUB_WEBHOOK_SECRET", SECRET);
    } else {
        command.env_remove("GITHUB_WEBHOOK_SECRET");
    }
    command
}

/// A server process of a benchmark, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// A process's resident memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: Option<u64>,
    /// `VmHWM`: the most it has been resident.
    pub peak_kib: Option<u64>,
}

impl Memory {
    pub fn rss_mib(&self) -> Option<f64> {
        self.rss_kib.map(|k| k as f64 / 1024.0)
    }

    pub fn peak_mib(&self) -> Option<f64> {
        self.peak_kib.map(|k| k as f64 / 1024.0)
    }
}

impl Service {
    /// Starts `command` with `PORT` set to a free port, its output to `log`.
    pub fn spawn(name: &'static str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let out = std::fs::File::create(log)?;
        let child = command
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name,
            child,
            port,
            log: log.to_path_buf(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(self.url("/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited before answering /healthz ({status}): {}",
                    self.name,
                    self.log_tail()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not answer /healthz within {READY_TIMEOUT:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of its log, for errors.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    pub fn cpu(&self) -> Duration {
        cpu_time(&self.child.id().to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time of a process, all its threads, from
/// `/proc/PID/stat` (in clock ticks of 10 ms: `getconf CLK_TCK` is 100 on
/// Linux); zero when it cannot be read.
pub fn cpu_time(pid: &str) -> Duration {
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces and parentheses: count from its end.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name: state, ppid, ..., utime (12th), stime (13th).
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u32>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => TICK * (user + system),
        _ => Duration::ZERO,
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of `sorted` (`1.0` is the max); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------
// The fake GitHub

/// What the services call after each accepted delivery: the installation
/// token exchange (cached by the service) and the compare, answered with no
/// files so that no notebook runs. Anything else is counted as unexpected.
///
/// The token exchange can be held ([`FakeGitHub::hold`]): the service's
/// work after the hand-off then waits for the token (one exchange in flight
/// per installation), so that a round measures only what the service does
/// before it answers, and [`FakeGitHub::release`] lets the work run.
#[derive(Debug)]
pub struct FakeGitHub {
    pub url: String,
    counts: Arc<Counts>,
    gate: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Debug, Default)]
struct Counts {
    exchanges: AtomicUsize,
    compares: AtomicUsize,
    unexpected: AtomicUsize,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CountsSnapshot {
    pub exchanges: usize,
    pub compares: usize,
    pub unexpected: usize,
}

#[derive(Debug, Clone)]
struct GitHubState {
    counts: Arc<Counts>,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl FakeGitHub {
    pub async fn start() -> anyhow::Result<Self> {
        let counts = Arc::new(Counts::default());
        let (gate, open) = tokio::sync::watch::channel(true);
        let state = GitHubState {
            counts: counts.clone(),
            gate: open,
        };
        let app = Router::new()
            .route(
                "/app/installations/{id}/access_tokens",
                post(|State(state): State<GitHubState>| async move {
                    let mut gate = state.gate.clone();
                    let _ = gate.wait_for(|open| *open).await;
                    state.counts.exchanges.fetch_add(1, Ordering::Relaxed);
                    let expires_at = rfc3339(SystemTime::now() + Duration::from_secs(3600));
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"token": "ghs_x", "expires_at": expires_at})),
                    )
                }),
            )
            .route(
                "/repos/{owner}/{repo}/compare/{basehead}",
                get(|State(state): State<GitHubState>| async move {
                    state.counts.compares.fetch_add(1, Ordering::Relaxed);
                    axum::Json(json!({"files": []}))
                }),
            )
            .fallback(|State(state): State<GitHubState>| async move {
                state.counts.unexpected.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "Not Found (the benchmark's fake GitHub)"})),
                )
            })
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = nbci_shared::http::HttpLimits::default();
        let task = tokio::spawn(nbci_shared::http::run(listener, app, limits, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            counts,
            gate,
            stop,
            task,
        })
    }

    /// Token exchanges wait from now on.
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    /// Token exchanges are answered again, the waiting ones first.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    pub fn counts(&self) -> CountsSnapshot {
        CountsSnapshot {
            exchanges: self.counts.exchanges.load(Ordering::Relaxed),
            compares: self.counts.compares.load(Ordering::Relaxed),
            unexpected: self.counts.unexpected.load(Ordering::Relaxed),
        }
    }

    /// Waits until `compares` compare calls were made in all, at most `limit`.
    pub async fn wait_for_compares(&self, compares: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while self.counts().compares < compares {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// `2026-01-02T03:04:05Z` (UTC), the form GitHub gives `expires_at` in.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

// ---------------------------------------------------------------------------
// The figures as JSON

/// One table of a benchmark's report: preformatted cells.
#[derive(Debug, Clone)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: impl Into<String>, header: &[&str]) -> Self {
        Self {
            caption: caption.into(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// A line plot: one x axis, one line per name.
#[derive(Debug, Clone)]
pub struct Series {
    pub x_label: String,
    pub x: Vec<f64>,
    pub lines: BTreeMap<String, Vec<f64>>,
}

/// The figures of one benchmark, for `$NBCI_BENCH_OUT/{id}.json`.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: String,
    pub title: String,
    pub method: String,
    pub tables: Vec<Table>,
    /// Raw per-request latencies in ms, per series.
    pub latencies_ms: BTreeMap<String, Vec<f64>>,
    pub series: BTreeMap<String, Series>,
}

impl Report {
    pub fn new(id: &str, title: &str, method: String) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            method,
            tables: Vec::new(),
            latencies_ms: BTreeMap::new(),
            series: BTreeMap::new(),
        }
    }

    /// Keeps `latencies` (in any order) as ms, at most [`MAX_SAMPLES`] of
    /// them, taken uniformly.
    pub fn latencies(&mut self, name: &str, latencies: &[Duration]) {
        let step = latencies.len().div_ceil(MAX_SAMPLES).max(1);
        let kept: Vec<f64> = latencies
            .iter()
            .step_by(step)
            .map(|d| (ms(*d) * 1000.0).round() / 1000.0)
            .collect();
        self.latencies_ms.insert(name.to_owned(), kept);
    }

    pub fn to_json(&self) -> Value {
        let tables: Vec<Value> = self
            .tables
            .iter()
            .map(|t| json!({"caption": t.caption, "header": t.header, "rows": t.rows}))
            .collect();
        let mut report = json!({
            "id": self.id,
            "title": self.title,
            "method": self.method,
            "tables": tables,
        });
        if !self.latencies_ms.is_empty() {
            report["latencies_ms"] = json!(self.latencies_ms);
        }
        if !self.series.is_empty() {
            let series: serde_json::Map<String, Value> = self
                .series
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        json!({"x_label": s.x_label, "x": s.x, "lines": s.lines}),
                    )
                })
                .collect();
            report["series"] = Value::Object(series);
        }
        report
    }

    /// Writes `{id}.json` into `NBCI_BENCH_OUT` (default `target/bench` in
    /// the workspace); returns its path.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let dir = std::env::var_os("NBCI_BENCH_OUT")
            .filter(|d| !d.is_empty())
            .map_or_else(|| workspace().join("target/bench"), PathBuf::from);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.id));
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// `12,345` for 12345.4.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "?".to_owned();
    }
    let whole = value.round() as i64;
    let digits = whole.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

/// `0.46x`: how many times `denominator` `numerator` is.
pub fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 && numerator.is_finite() {
        format!("{:.2}x", numerator / denominator)
    } else {
        "?".to_owned()
    }
}
