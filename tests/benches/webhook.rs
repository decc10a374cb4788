//! The webhook benchmarks of issue 3 (`cargo bench -p nbci-tests --bench
//! webhook`, or `make bench`): figures are printed, nothing is asserted.
//!
//! 1. Throughput and latency of signed `check_suite` deliveries to the release
//!    `github-webhook` binary (GitHub stubbed in process: token exchange and
//!    an empty compare, so no notebook runs) and, in the same run, with the
//!    same payloads and the same load generator, to @octokit/webhooks'
//!    `verifyAndReceive` in a Node http server
//!    (`tests/bench/webhook/octokit-server.mjs`). Rounds alternate (nbci,
//!    octokit, nbci, ...); the medians are compared. Each server's CPU time
//!    per request is printed too: unlike req/s, it hardly depends on what else
//!    the machine is doing.
//! 2. Two rounds that show where nbci's time goes: the same delivery id
//!    repeated (signature, parsing and the dedupe look-up, no claim written,
//!    nothing dispatched), and `GET /healthz` (the load generator's ceiling).
//! 3. Cold start: spawn to the first `200` on `/healthz`, N times.
//! 4. Resident memory (`VmRSS`) of both servers idle, after their last load
//!    round, and at their peak (`VmHWM`).
//!
//! Every child process is killed when the benchmark ends, fails, panics or is
//! interrupted with Ctrl-C ([`Service`] kills on drop).
//!
//! Settings (environment): `NBCI_BENCH_CONCURRENCY` (32 connections),
//! `NBCI_BENCH_SECONDS` (5 per round), `NBCI_BENCH_ROUNDS` (3 per server),
//! `NBCI_BENCH_WARMUP` (500 requests per server), `NBCI_BENCH_COLD_STARTS`
//! (10), `NBCI_WEBHOOK_BIN` (default: `github-webhook` in this benchmark's
//! profile directory, i.e. `target/release/github-webhook`), `RUST_LOG` (the
//! service's, default `info`). The service's bucket is a temporary directory
//! in `/dev/shm` (in memory, like Cloud Run's file system), or in `TMPDIR`
//! when that is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

/// The webhook secret both servers verify with (a benchmark value, not a secret).
const SECRET: &str = "nbci-bench-webhook-secret";
/// How long a server may take to answer its first `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let finished = runtime.block_on(async {
        tokio::select! {
            result = run(settings) => Some(result),
            // Dropping `run` drops its `Service`s, which kill their processes.
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match finished {
        Some(result) => result,
        None => {
            eprintln!("interrupted; the servers it started are stopped");
            std::process::exit(130);
        }
    }
}

/// What the benchmark does, read from `NBCI_BENCH_*`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Connections (and requests) in flight at once.
    concurrency: usize,
    /// Length of one load round.
    round: Duration,
    /// Load rounds per server; they alternate between the servers.
    rounds: usize,
    /// Requests sent to each server before the first measured round (JIT,
    /// connection pool, token cache).
    warmup: usize,
    /// Processes started for the cold-start figure.
    cold_starts: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn number(name: &str, default: usize) -> anyhow::Result<usize> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(value) => value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| {
                        format!("{name} must be a positive whole number, got {value:?}")
                    }),
            }
        }
        Ok(Self {
            concurrency: number("NBCI_BENCH_CONCURRENCY", 32)?,
            round: Duration::from_secs(u64::try_from(number("NBCI_BENCH_SECONDS", 5)?)?),
            rounds: number("NBCI_BENCH_ROUNDS", 3)?,
            warmup: number("NBCI_BENCH_WARMUP", 500)?,
            cold_starts: number("NBCI_BENCH_COLD_STARTS", 10)?,
        })
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let root = workspace();
    let binary = webhook_binary()?;
    let octokit_dir = root.join("tests/bench/webhook");
    ensure_node_modules(&octokit_dir)?;

    let github = FakeGitHub::start().await?;
    let data = tempfile::Builder::new()
        .prefix("nbci-bench-webhook-")
        .tempdir_in(scratch_dir())?;
    let env = NbciEnv {
        binary: binary.clone(),
        root: root.clone(),
        github_url: github.url.clone(),
        private_key: root.join("tests/fixtures/github/test-app-key.pkcs1.pem"),
    };

    // The same body, signature and headers go to both servers; only the
    // delivery id changes from one request to the next (nbci answers a
    // repeated id with 200 "duplicate" and does no work).
    let body = Bytes::from(std::fs::read(
        root.join("tests/fixtures/github/check_suite.requested.json"),
    )?);
    let signature = nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body);
    let payload = Payload { body, signature };

    println!(
        "webhook benchmark: signed check_suite deliveries ({} bytes), {} connections, \
         {} rounds of {} s per server, {} warm-up requests each, {} cores",
        payload.body.len(),
        settings.concurrency,
        settings.rounds,
        settings.round.as_secs(),
        settings.warmup,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    println!("nbci:    {}", binary.display());
    println!("octokit: {}", octokit_version(&octokit_dir));
    println!("bucket:  {}", data.path().display());
    println!();

    // Cold start first, while nothing else of ours is running.
    let cold = {
        let env = env.clone();
        let dir = data.path().join("cold");
        let count = settings.cold_starts;
        tokio::task::spawn_blocking(move || cold_starts(&env, &dir, count)).await??
    };

    let nbci = env.spawn(&data.path().join("bucket"), &data.path().join("nbci.log"))?;
    let octokit = Service::spawn(
        "octokit",
        Command::new("node")
            .arg("octokit-server.mjs")
            .current_dir(&octokit_dir)
            .env("GITHUB_WEBHOOK_SECRET", SECRET),
        &data.path().join("octokit.log"),
    )?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(settings.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    nbci.wait_ready(&client).await?;
    octokit.wait_ready(&client).await?;
    // Let both settle before reading their idle memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = [nbci.memory(), octokit.memory()];

    let servers = [&nbci, &octokit];
    let mut accepted = 0;
    for server in servers {
        let warm = measure(
            &client,
            server,
            &payload,
            settings.concurrency,
            Traffic::Deliveries,
            Until::Requests(settings.warmup),
            "warmup",
        )
        .await;
        if warm.ok == 0 {
            bail!(
                "{}: no request of the warm-up succeeded ({} failed: {}); see {}",
                server.name,
                warm.failed,
                warm.first_failure.as_deref().unwrap_or("?"),
                server.log.display()
            );
        }
        if server.name == nbci.name {
            accepted += warm.ok;
        }
    }

    print_round_header();
    let mut rounds: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    // Each server's memory right after its last round.
    let mut loaded = idle;
    for index in 0..settings.rounds {
        for ((server, results), loaded) in
            servers.iter().zip(rounds.iter_mut()).zip(loaded.iter_mut())
        {
            let round = measure(
                &client,
                server,
                &payload,
                settings.concurrency,
                Traffic::Deliveries,
                Until::Elapsed(settings.round),
                &format!("r{index}"),
            )
            .await;
            *loaded = server.memory();
            print_round(&(index + 1).to_string(), server.name, &round);
            results.push(round);
        }
    }
    accepted += rounds[0].iter().map(|r| r.ok).sum::<usize>();

    println!();
    println!("where nbci's time goes (one round each):");
    print_round_header();
    let repeated = measure(
        &client,
        &nbci,
        &payload,
        settings.concurrency,
        Traffic::RepeatedDelivery,
        Until::Elapsed(settings.round),
        "repeated",
    )
    .await;
    print_round("dup", "nbci", &repeated);
    let ceiling = measure(
        &client,
        &nbci,
        &payload,
        settings.concurrency,
        Traffic::Healthz,
        Until::Elapsed(settings.round),
        "healthz",
    )
    .await;
    print_round("health", "nbci", &ceiling);
    println!(
        "  dup: the delivery id of the first request repeated (answered 200 \"duplicate\" after \
         the signature, the parse and a look-up; no claim written, nothing dispatched);"
    );
    println!("  health: GET /healthz, no body: what this load generator can drive on this machine");
    // The compare calls trail the 202s (they happen after the answer).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let github_calls = github.counts();

    let [nbci_rounds, octokit_rounds] = &rounds;
    print_comparison(settings.rounds, nbci_rounds, octokit_rounds);
    print_cold_start(&cold);
    print_memory(
        &idle,
        &loaded,
        &[nbci.memory().peak_kib, octokit.memory().peak_kib],
    );

    println!();
    println!(
        "fake GitHub: {} token exchange(s), {} compare calls for {} deliveries nbci accepted \
         (+1 of the repeated round), {} unexpected calls",
        github_calls.exchanges, github_calls.compares, accepted, github_calls.unexpected
    );
    drop((nbci, octokit));
    github.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// The report

fn print_round_header() {
    println!(
        "{:<7} {:<8} {:>8} {:>6} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "round",
        "server",
        "requests",
        "failed",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu us/rq",
        "gen us/rq"
    );
}

fn print_round(label: &str, server: &str, round: &Round) {
    println!(
        "{:<7} {:<8} {:>8} {:>6} {:>8.0} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>9.0}",
        label,
        server,
        round.ok,
        round.failed,
        round.throughput(),
        ms(round.percentile(0.50)),
        ms(round.percentile(0.99)),
        ms(round.percentile(1.0)),
        round.server_cpu_per_request(),
        round.generator_cpu_per_request(),
    );
    if let Some(failure) = &round.first_failure {
        println!("        first failure: {failure}");
    }
}

fn print_comparison(count: usize, nbci: &[Round], octokit: &[Round]) {
    /// The figures compared between the servers: medians over the rounds.
    struct Summary {
        throughput: f64,
        p50: f64,
        p99: f64,
        cpu: f64,
    }
    let summary = |rounds: &[Round]| Summary {
        throughput: median(rounds.iter().map(Round::throughput).collect()),
        p50: median(rounds.iter().map(|r| ms(r.percentile(0.50))).collect()),
        p99: median(rounds.iter().map(|r| ms(r.percentile(0.99))).collect()),
        cpu: median(rounds.iter().map(Round::server_cpu_per_request).collect()),
    };
    let (n, o) = (summary(nbci), summary(octokit));
    println!();
    println!("medians of {count} rounds");
    println!(
        "{:<22} {:>9} {:>9} {:>13}  aim",
        "", "nbci", "octokit", "nbci/octokit"
    );
    println!(
        "{:<22} {:>9.0} {:>9.0} {:>12.2}x  >= 5x",
        "throughput req/s",
        n.throughput,
        o.throughput,
        n.throughput / o.throughput
    );
    println!(
        "{:<22} {:>9.2} {:>9.2} {:>13.2}",
        "p50 latency ms",
        n.p50,
        o.p50,
        n.p50 / o.p50
    );
    println!(
        "{:<22} {:>9.2} {:>9.2} {:>13.2}  <= 0.20",
        "p99 latency ms",
        n.p99,
        o.p99,
        n.p99 / o.p99
    );
    println!(
        "{:<22} {:>9.0} {:>9.0} {:>13.2}",
        "server CPU us/request",
        n.cpu,
        o.cpu,
        n.cpu / o.cpu
    );
}

fn print_cold_start(times: &[Duration]) {
    let mut cold: Vec<f64> = times.iter().copied().map(ms).collect();
    cold.sort_by(f64::total_cmp);
    println!();
    println!(
        "cold start, spawn to first 200 on /healthz ({} starts): median {:.1} ms, min {:.1} ms, \
         max {:.1} ms (aim < 20 ms)",
        cold.len(),
        median(cold.clone()),
        cold.first().copied().unwrap_or(f64::NAN),
        cold.last().copied().unwrap_or(f64::NAN),
    );
}

fn print_memory(idle: &[Memory; 2], loaded: &[Memory; 2], peak: &[Option<u64>; 2]) {
    let mib = |kib: Option<u64>| {
        kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    };
    println!();
    println!(
        "{:<22} {:>9} {:>9}",
        "resident memory MiB", "nbci", "octokit"
    );
    for (what, [n, o]) in [
        ("idle", [idle[0].rss_kib, idle[1].rss_kib]),
        (
            "after its last round",
            [loaded[0].rss_kib, loaded[1].rss_kib],
        ),
        ("peak (VmHWM)", *peak),
    ] {
        println!("{:<22} {:>9} {:>9}", what, mib(n), mib(o));
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------
// Locations and set-up

/// The workspace root (this crate is `tests/`, one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// `NBCI_WEBHOOK_BIN`, else `github-webhook` in this benchmark's profile
/// directory (`target/release/deps/webhook-*` -> `target/release/`).
fn webhook_binary() -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os("NBCI_WEBHOOK_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("the benchmark does not live in target/<profile>/deps")?
            .join("github-webhook"),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --release --bin github-webhook` \
             (`make bench` does), or set NBCI_WEBHOOK_BIN",
            binary.display()
        );
    }
    Ok(binary)
}

/// Installs @octokit/webhooks (pinned in package.json and package-lock.json)
/// when it is missing.
fn ensure_node_modules(dir: &Path) -> anyhow::Result<()> {
    if Command::new("node").arg("--version").output().is_err() {
        bail!(
            "node is not installed: the octokit baseline needs Node.js >= 20 and npm \
             (e.g. `apt-get install nodejs npm`)"
        );
    }
    if dir
        .join("node_modules/@octokit/webhooks/package.json")
        .is_file()
    {
        return Ok(());
    }
    println!(
        "installing @octokit/webhooks into {} (npm install)",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .map_err(|_| {
            anyhow::anyhow!(
                "npm is not installed: the octokit baseline installs @octokit/webhooks with npm \
                 (e.g. `apt-get install npm`)"
            )
        })?;
    if !status.success() {
        bail!("npm install in {} failed ({status})", dir.display());
    }
    Ok(())
}

fn octokit_version(dir: &Path) -> String {
    let version = std::fs::read_to_string(dir.join("node_modules/@octokit/webhooks/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|package| package["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".to_owned());
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("@octokit/webhooks {version} on node {node}")
}

/// Where the service's bucket and the logs go: `TMPDIR` when it is set, else
/// `/dev/shm` where there is one, since Cloud Run's file system, where the
/// service keeps its bucket, is in memory too; else the temporary directory.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A port nobody listens on now (the OS picks it; a tiny race remains until
/// the child binds it).
fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// Child processes

/// How to start the release `github-webhook` against the fake GitHub.
#[derive(Debug, Clone)]
struct NbciEnv {
    binary: PathBuf,
    /// The working directory: the workspace, where the service finds `.venv`.
    root: PathBuf,
    github_url: String,
    private_key: PathBuf,
}

impl NbciEnv {
    /// The service's command line and environment, all but `PORT`.
    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(&self.root)
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_APP_ID", "1")
            .env("GITHUB_APP_PRIVATE_KEY", &self.private_key)
            .env("GITHUB_API_URL", &self.github_url)
            .env("NBCI_DATA_DIR", data_dir)
            .env_remove("NBCI_PUBLIC_URL")
            .env_remove("K_SERVICE")
            // The service's default level (a line or two per delivery), unless
            // the benchmark is run with another.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            );
        command
    }

    fn spawn(&self, data_dir: &Path, log: &Path) -> anyhow::Result<Service> {
        Service::spawn("nbci", &mut self.command(data_dir), log)
    }
}

/// A server process of the benchmark, killed (and reaped) when dropped.
#[derive(Debug)]
struct Service {
    name: &'static str,
    child: Child,
    port: u16,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

/// A process's resident memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `VmRSS`: resident now.
    rss_kib: Option<u64>,
    /// `VmHWM`: the most it has been resident.
    peak_kib: Option<u64>,
}

impl Service {
    /// Starts `command` with `PORT` set to a free port, its output to `log`.
    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(self.url("/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(());
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

    fn memory(&self) -> Memory {
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

    fn cpu(&self) -> Duration {
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
fn cpu_time(pid: &str) -> Duration {
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

/// Starts the service `count` times; each time, from just before `spawn` to
/// the first `200` on `/healthz`, polled by connecting in a tight loop.
fn cold_starts(env: &NbciEnv, data_dir: &Path, count: usize) -> anyhow::Result<Vec<Duration>> {
    std::fs::create_dir_all(data_dir)?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let port = free_port()?;
        let mut command = env.command(data_dir);
        command
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut service = Service {
            name: "nbci (cold start)",
            child: command.spawn()?,
            port,
            log: PathBuf::from("/dev/null"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if healthz_once(addr) == Some(true) {
                times.push(started.elapsed());
                break;
            }
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{} exited before answering /healthz ({status})",
                    service.name
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not answer /healthz within {READY_TIMEOUT:?}",
                    service.name
                );
            }
            std::thread::yield_now();
        }
    }
    Ok(times)
}

/// `None` while nothing listens on `addr`; else whether `GET /healthz` is 200.
fn healthz_once(addr: SocketAddr) -> Option<bool> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(head.starts_with(b"HTTP/1.1 200"))
}

// ---------------------------------------------------------------------------
// The load generator

/// The bytes every delivery carries, signed once.
#[derive(Debug)]
struct Payload {
    body: Bytes,
    signature: String,
}

/// What each request of a round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traffic {
    /// The signed payload, each with a delivery id of its own.
    Deliveries,
    /// The signed payload, always with the same delivery id.
    RepeatedDelivery,
    /// `GET /healthz`.
    Healthz,
}

#[derive(Debug, Clone, Copy)]
enum Until {
    Requests(usize),
    Elapsed(Duration),
}

/// One load round against one server.
#[derive(Debug, Default)]
struct Round {
    /// Requests answered 2xx.
    ok: usize,
    /// Requests answered otherwise, or not at all.
    failed: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    /// Latencies of the 2xx answers, sorted.
    latencies: Vec<Duration>,
    /// CPU time the server used during the round.
    server_cpu: Duration,
    /// CPU time this process (load generator and fake GitHub) used.
    generator_cpu: Duration,
}

impl Round {
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile of the successful requests (`1.0` is the max).
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn server_cpu_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }

    fn generator_cpu_per_request(&self) -> f64 {
        self.generator_cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
}

/// [`load`], with the CPU time both sides used meanwhile.
async fn measure(
    client: &reqwest::Client,
    server: &Service,
    payload: &Payload,
    concurrency: usize,
    traffic: Traffic,
    until: Until,
    label: &str,
) -> Round {
    let (server_before, generator_before) = (server.cpu(), cpu_time("self"));
    let mut round = load(client, server, payload, concurrency, traffic, until, label).await;
    round.server_cpu = server.cpu().saturating_sub(server_before);
    round.generator_cpu = cpu_time("self").saturating_sub(generator_before);
    round
}

/// Keeps `concurrency` requests in flight against `server` (one keep-alive
/// connection each) until `until`. Delivery ids are `{label}-{worker}-{n}`.
async fn load(
    client: &reqwest::Client,
    server: &Service,
    payload: &Payload,
    concurrency: usize,
    traffic: Traffic,
    until: Until,
    label: &str,
) -> Round {
    let url = server.url(if traffic == Traffic::Healthz {
        "/healthz"
    } else {
        "/github"
    });
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let body = payload.body.clone();
        let signature = payload.signature.clone();
        let sent = sent.clone();
        let prefix = format!("{label}-{worker}");
        let repeated = format!("{label}-0-0");
        workers.spawn(async move {
            let mut round = Round::default();
            for n in 0_u64.. {
                match until {
                    Until::Requests(total) if sent.fetch_add(1, Ordering::Relaxed) >= total => {
                        break;
                    }
                    Until::Elapsed(length) if started.elapsed() >= length => break,
                    _ => {}
                }
                let request = match traffic {
                    Traffic::Healthz => client.get(&url),
                    Traffic::Deliveries | Traffic::RepeatedDelivery => client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("user-agent", "GitHub-Hookshot/nbci-bench")
                        .header("x-github-event", "check_suite")
                        .header(
                            "x-github-delivery",
                            if traffic == Traffic::Deliveries {
                                format!("{prefix}-{n}")
                            } else {
                                repeated.clone()
                            },
                        )
                        .header("x-hub-signature-256", &signature)
                        .body(body.clone()),
                };
                let begun = Instant::now();
                match answer(request).await {
                    Ok(()) => {
                        round.ok += 1;
                        round.latencies.push(begun.elapsed());
                    }
                    Err(failure) => {
                        round.failed += 1;
                        round.first_failure.get_or_insert(failure);
                    }
                }
            }
            round
        });
    }
    let mut total = Round::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(round) => {
                total.ok += round.ok;
                total.failed += round.failed;
                if total.first_failure.is_none() {
                    total.first_failure = round.first_failure;
                }
                total.latencies.extend(round.latencies);
            }
            Err(error) => {
                total.failed += 1;
                total.first_failure.get_or_insert(error.to_string());
            }
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

/// Sends `request` and reads the whole answer: `Ok` for a 2xx.
async fn answer(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        return Ok(());
    }
    let text: String = String::from_utf8_lossy(&text).chars().take(200).collect();
    Err(format!("{status} {text}"))
}

// ---------------------------------------------------------------------------
// The fake GitHub

/// What the service calls after each accepted delivery: the installation
/// token exchange (cached by the service) and the compare, answered with no
/// files so that no notebook runs. Anything else is counted as unexpected.
#[derive(Debug)]
struct FakeGitHub {
    url: String,
    counts: Arc<Counts>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Debug, Default)]
struct Counts {
    exchanges: AtomicUsize,
    compares: AtomicUsize,
    unexpected: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct CountsSnapshot {
    exchanges: usize,
    compares: usize,
    unexpected: usize,
}

impl FakeGitHub {
    async fn start() -> anyhow::Result<Self> {
        let counts = Arc::new(Counts::default());
        let app = Router::new()
            .route(
                "/app/installations/{id}/access_tokens",
                post(|State(counts): State<Arc<Counts>>| async move {
                    counts.exchanges.fetch_add(1, Ordering::Relaxed);
                    let expires_at = rfc3339(SystemTime::now() + Duration::from_secs(3600));
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"token": "ghs_x", "expires_at": expires_at})),
                    )
                }),
            )
            .route(
                "/repos/{owner}/{repo}/compare/{basehead}",
                get(|State(counts): State<Arc<Counts>>| async move {
                    counts.compares.fetch_add(1, Ordering::Relaxed);
                    axum::Json(json!({"files": []}))
                }),
            )
            .fallback(|State(counts): State<Arc<Counts>>| async move {
                counts.unexpected.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "Not Found (the benchmark's fake GitHub)"})),
                )
            })
            .with_state(counts.clone());
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
            stop,
            task,
        })
    }

    fn counts(&self) -> CountsSnapshot {
        CountsSnapshot {
            exchanges: self.counts.exchanges.load(Ordering::Relaxed),
            compares: self.counts.compares.load(Ordering::Relaxed),
            unexpected: self.counts.unexpected.load(Ordering::Relaxed),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// `2026-01-02T03:04:05Z` (UTC), the form GitHub gives `expires_at` in.
fn rfc3339(time: SystemTime) -> String {
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
