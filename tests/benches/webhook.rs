//! The webhook benchmark of issues 3 and 11 (`cargo bench -p nbci-tests
//! --bench webhook`, or `make bench`): figures are printed and written to
//! `$NBCI_BENCH_OUT/webhook.json` (default `target/bench`); nothing is asserted.
//!
//! 1. Signed `check_suite` deliveries to the release `github-webhook` binary
//!    (a directory bucket in `/dev/shm` with the in-bucket queue; GitHub
//!    stubbed in process: the token exchange and an empty compare, so no
//!    notebook runs) and, in the same run, with the same payloads and the
//!    same load generator, to @octokit/webhooks' `verifyAndReceive` in a Node
//!    http server (`tests/bench/webhook/octokit-server.mjs`). Rounds
//!    alternate (nbci, octokit, nbci, ...); the medians are compared.
//! 2. What nbci does before it answers (verify, parse, dedupe, the durable
//!    hand-off) apart from what it does after: during each nbci round the
//!    fake GitHub holds the token exchange, so the handed-off work waits
//!    (one exchange in flight; the rest wait for its token) and the round's
//!    CPU is the answer path's; then the exchange is let go, and the CPU the
//!    service spends until every delivery was compared is the work after
//!    the hand-off. A last round runs both at once, as they run in the
//!    service (`answer + work`).
//! 3. Where the rest goes: the same delivery id repeated (signature, parse,
//!    the dedupe look-up, nothing written), and `GET /healthz` (the load
//!    generator's ceiling).
//! 4. Cold start: spawn to the first `200` on `/healthz`, N times.
//! 5. Resident memory (`VmRSS`) of both servers idle, after load, and at
//!    their peak (`VmHWM`).
//!
//! Each server's CPU time per request comes from `/proc/PID/stat` (utime +
//! stime): unlike req/s, it hardly depends on what else the machine does.
//! Every child process is killed when the benchmark ends, fails, panics or is
//! interrupted with Ctrl-C ([`Service`] kills on drop).
//!
//! Settings (environment): `NBCI_BENCH_CONCURRENCY` (32 connections),
//! `NBCI_BENCH_SECONDS` (5 per round), `NBCI_BENCH_ROUNDS` (3 per server),
//! `NBCI_BENCH_WARMUP` (500 requests per server), `NBCI_BENCH_COLD_STARTS`
//! (10), `NBCI_WEBHOOK_BIN` (default: `github-webhook` in this benchmark's
//! profile directory, i.e. `target/release/github-webhook`), `RUST_LOG` (the
//! service's, default `info`), `NBCI_BENCH_OUT` (where `webhook.json` goes).
//! The service's bucket is a temporary directory in `/dev/shm` (in memory,
//! like Cloud Run's file system), or in `TMPDIR` when that is set.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use common::{
    FakeGitHub, Memory, READY_TIMEOUT, Report, SECRET, Service, Table, cpu_time, free_port, median,
    ms, percentile, ratio, release_binary, scratch_dir, service_command, setting, thousands,
    workspace,
};

/// How long the work handed off may take to finish once the token exchange is let go.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    common::run_until_ctrl_c(None, run(settings))
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
    /// Requests sent to each server before its first measured round.
    warmup: usize,
    /// Processes started for the cold-start figure.
    cold_starts: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            concurrency: setting("NBCI_BENCH_CONCURRENCY", 32)?,
            round: Duration::from_secs(u64::try_from(setting("NBCI_BENCH_SECONDS", 5)?)?),
            rounds: setting("NBCI_BENCH_ROUNDS", 3)?,
            warmup: setting("NBCI_BENCH_WARMUP", 500)?,
            cold_starts: setting("NBCI_BENCH_COLD_STARTS", 10)?,
        })
    }
}

/// How to start the release `github-webhook` against the fake GitHub.
#[derive(Debug, Clone)]
struct NbciEnv {
    binary: PathBuf,
    github_url: String,
}

impl NbciEnv {
    fn command(&self, bucket: &Path) -> Command {
        service_command(&self.binary, &self.github_url, bucket, true)
    }

    fn spawn(&self, bucket: &Path, log: &Path) -> anyhow::Result<Service> {
        Service::spawn("nbci", &mut self.command(bucket), log)
    }
}

/// One nbci round split in two: the answers with the work after the
/// hand-off held, then that work let go.
#[derive(Debug)]
struct Split {
    answers: Round,
    /// CPU the service spent on the held work once it was let go.
    after_cpu: Duration,
    /// Deliveries that work was for (warm-up and round).
    after_deliveries: usize,
}

impl Split {
    fn after_cpu_per_delivery(&self) -> f64 {
        self.after_cpu.as_secs_f64() * 1e6 / self.after_deliveries.max(1) as f64
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let root = workspace();
    let binary = release_binary("NBCI_WEBHOOK_BIN", "github-webhook")?;
    let octokit_dir = root.join("tests/bench/webhook");
    ensure_node_modules(&octokit_dir)?;

    let github = FakeGitHub::start().await?;
    let data = tempfile::Builder::new()
        .prefix("nbci-bench-webhook-")
        .tempdir_in(scratch_dir())?;
    let env = NbciEnv {
        binary: binary.clone(),
        github_url: github.url.clone(),
    };

    // The same body, signature and headers go to both servers; only the
    // delivery id changes from one request to the next (nbci answers a
    // repeated id with 200 "duplicate" and does no work).
    let body = Bytes::from(std::fs::read(
        root.join("tests/fixtures/github/check_suite.requested.json"),
    )?);
    let signature = nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body);
    let payload = Payload { body, signature };
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let octokit_name = octokit_version(&octokit_dir);

    println!(
        "webhook benchmark: signed check_suite deliveries ({} bytes), {} connections, \
         {} rounds of {} s per server, {} warm-up requests each, {} cores",
        payload.body.len(),
        settings.concurrency,
        settings.rounds,
        settings.round.as_secs(),
        settings.warmup,
        cores,
    );
    println!("nbci:    {}", binary.display());
    println!("octokit: {octokit_name}");
    println!("bucket:  {}", data.path().display());
    println!();

    // Cold start first, while nothing else of ours is running.
    let cold = {
        let env = env.clone();
        let dir = data.path().join("cold");
        let count = settings.cold_starts;
        tokio::task::spawn_blocking(move || cold_starts(&env, &dir, count)).await??
    };

    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(settings.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut octokit = Service::spawn(
        "octokit",
        Command::new("node")
            .arg("octokit-server.mjs")
            .current_dir(&octokit_dir)
            .env("GITHUB_WEBHOOK_SECRET", SECRET),
        &data.path().join("octokit.log"),
    )?;
    octokit.wait_ready(&client).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let octokit_idle = octokit.memory();
    let warm = measure(
        &client,
        &octokit,
        &payload,
        settings.concurrency,
        Traffic::Deliveries,
        Until::Requests(settings.warmup),
        "warmup",
    )
    .await;
    if warm.ok == 0 {
        bail!(
            "octokit: no request of the warm-up succeeded ({} failed: {}); see {}",
            warm.failed,
            warm.first_failure.as_deref().unwrap_or("?"),
            octokit.log.display()
        );
    }

    print_round_header();
    let mut nbci_rounds: Vec<Split> = Vec::new();
    let mut octokit_rounds: Vec<Round> = Vec::new();
    let mut nbci_idle: Option<Memory> = None;
    let mut nbci_loaded: Option<Memory> = None;
    let mut octokit_loaded = octokit_idle;
    // The last nbci process, kept for the rounds after the comparison.
    let mut nbci: Option<Service> = None;
    for index in 0..settings.rounds {
        // A fresh process per round: its token is not cached yet, so the
        // held exchange holds all the work handed off.
        drop(nbci.take());
        let bucket = data.path().join(format!("bucket-{index}"));
        let mut service = env.spawn(&bucket, &data.path().join(format!("nbci-{index}.log")))?;
        service.wait_ready(&client).await?;
        if nbci_idle.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            nbci_idle = Some(service.memory());
        }
        let split = split_round(&client, &github, &service, &payload, settings, index).await?;
        nbci_loaded = Some(service.memory());
        print_round(&(index + 1).to_string(), "nbci", &split.answers);
        println!(
            "{:<7} {:<8} then {} µs of CPU per delivery for the work after the hand-off",
            "",
            "",
            split.after_cpu_per_delivery().round()
        );
        nbci_rounds.push(split);
        nbci = Some(service);

        let round = measure(
            &client,
            &octokit,
            &payload,
            settings.concurrency,
            Traffic::Deliveries,
            Until::Elapsed(settings.round),
            &format!("r{index}"),
        )
        .await;
        octokit_loaded = octokit.memory();
        print_round(&(index + 1).to_string(), "octokit", &round);
        octokit_rounds.push(round);
    }
    let nbci = nbci.context("no nbci round ran")?;

    println!();
    println!("where nbci's time goes (one round each):");
    print_round_header();
    // Both halves at once, as in the service: the token is cached now.
    let compares_before = github.counts().compares;
    let cpu_before = nbci.cpu();
    let together = measure(
        &client,
        &nbci,
        &payload,
        settings.concurrency,
        Traffic::Deliveries,
        Until::Elapsed(settings.round),
        "together",
    )
    .await;
    let drained = github
        .wait_for_compares(compares_before + together.ok, DRAIN_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let together_cpu =
        nbci.cpu().saturating_sub(cpu_before).as_secs_f64() * 1e6 / together.ok.max(1) as f64;
    print_round("both", "nbci", &together);
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
        "  both: answers and the work after the hand-off at once (token cached): {} µs of CPU \
         per delivery in all{}",
        together_cpu.round(),
        if drained {
            ""
        } else {
            " (the work did not finish in time)"
        }
    );
    println!(
        "  dup: the delivery id of the first request repeated (answered 200 \"duplicate\" after \
         the signature, the parse and a look-up; nothing written, nothing dispatched);"
    );
    println!("  health: GET /healthz, no body: what this load generator can drive on this machine");
    let github_calls = github.counts();

    let peaks = [nbci.memory().peak_mib(), octokit.memory().peak_mib()];
    let nbci_idle = nbci_idle.unwrap_or(Memory {
        rss_kib: None,
        peak_kib: None,
    });
    let nbci_loaded = nbci_loaded.unwrap_or(nbci_idle);
    let summary = Summary::of(&nbci_rounds, &octokit_rounds, settings.rounds);
    print_comparison(&summary);
    println!(
        "work after the hand-off: {} µs per delivery; answer and work together: {} µs",
        summary.after_cpu.round(),
        together_cpu.round()
    );
    let cold_ms = print_cold_start(&cold);
    let memory = [
        ("idle", [nbci_idle.rss_mib(), octokit_idle.rss_mib()]),
        (
            "after its last round",
            [nbci_loaded.rss_mib(), octokit_loaded.rss_mib()],
        ),
        ("peak (VmHWM)", peaks),
    ];
    print_memory(&memory);
    println!();
    println!(
        "fake GitHub: {} token exchange(s), {} compare calls, {} unexpected calls",
        github_calls.exchanges, github_calls.compares, github_calls.unexpected
    );

    let mut report = Report::new(
        "webhook",
        "Webhook: github-webhook against @octokit/webhooks",
        method(settings, payload.body.len(), cores, &octokit_name),
    );
    let mut main_table = Table::new(
        format!(
            "check_suite deliveries: medians of {} rounds of {} s, {} connections",
            settings.rounds,
            settings.round.as_secs(),
            settings.concurrency
        ),
        &["measure", "nbci", "@octokit/webhooks", "ratio"],
    );
    let (n, o) = (&summary.nbci, &summary.octokit);
    main_table.row(vec![
        "throughput (req/s)".into(),
        thousands(n.throughput),
        thousands(o.throughput),
        ratio(n.throughput, o.throughput),
    ]);
    for (what, a, b) in [
        ("p50 latency (ms)", n.p50, o.p50),
        ("p99 latency (ms)", n.p99, o.p99),
    ] {
        main_table.row(vec![
            what.into(),
            format!("{a:.2}"),
            format!("{b:.2}"),
            ratio(a, b),
        ]);
    }
    main_table.row(vec![
        "server CPU per delivery before the answer (µs)".into(),
        format!("{:.0}", n.cpu),
        format!("{:.0}", o.cpu),
        ratio(n.cpu, o.cpu),
    ]);
    report.tables.push(main_table);
    let mut split_table = Table::new(
        "where nbci's CPU goes, per delivery (first two rows: medians over rounds; the others: one round)",
        &["measure", "nbci CPU per delivery (µs)", "/ octokit's"],
    );
    for (what, value) in [
        (
            "before the answer: verify, parse, dedupe, durable hand-off (median)",
            n.cpu,
        ),
        (
            "after the hand-off: token, compare, marker, queue removal (median)",
            summary.after_cpu,
        ),
        ("both at once, as the service runs them", together_cpu),
        (
            "a repeated delivery id: verify, parse, look-up",
            repeated.server_cpu_per_request(),
        ),
        ("GET /healthz", ceiling.server_cpu_per_request()),
    ] {
        split_table.row(vec![
            what.into(),
            format!("{value:.0}"),
            ratio(value, o.cpu),
        ]);
    }
    report.tables.push(split_table);
    let mut cold_table = Table::new(
        format!(
            "cold start: spawn to the first 200 on /healthz, {} starts",
            cold.len()
        ),
        &["measure", "ms"],
    );
    for (what, value) in cold_ms {
        cold_table.row(vec![what.into(), format!("{value:.1}")]);
    }
    report.tables.push(cold_table);
    let mut memory_table = Table::new(
        "resident memory (MiB)",
        &["when", "nbci", "@octokit/webhooks"],
    );
    for (what, [a, b]) in memory {
        let cell = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        memory_table.row(vec![what.into(), cell(a), cell(b)]);
    }
    report.tables.push(memory_table);
    let nbci_latencies: Vec<Duration> = nbci_rounds
        .iter()
        .flat_map(|s| s.answers.latencies.iter().copied())
        .collect();
    let octokit_latencies: Vec<Duration> = octokit_rounds
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    report.latencies("nbci check_suite", &nbci_latencies);
    report.latencies("octokit check_suite", &octokit_latencies);
    let path = report.write()?;
    println!("figures: {}", path.display());

    drop((nbci, octokit));
    github.stop().await;
    Ok(())
}

/// One nbci round with the token exchange held: warm-up and round answered,
/// then the exchange let go and the work after the hand-off measured.
async fn split_round(
    client: &reqwest::Client,
    github: &FakeGitHub,
    nbci: &Service,
    payload: &Payload,
    settings: Settings,
    index: usize,
) -> anyhow::Result<Split> {
    let compares_before = github.counts().compares;
    github.hold();
    let warm = measure(
        client,
        nbci,
        payload,
        settings.concurrency,
        Traffic::Deliveries,
        Until::Requests(settings.warmup),
        &format!("w{index}"),
    )
    .await;
    if warm.ok == 0 {
        github.release();
        bail!(
            "nbci: no request of the warm-up succeeded ({} failed: {}); see {}",
            warm.failed,
            warm.first_failure.as_deref().unwrap_or("?"),
            nbci.log.display()
        );
    }
    let answers = measure(
        client,
        nbci,
        payload,
        settings.concurrency,
        Traffic::Deliveries,
        Until::Elapsed(settings.round),
        &format!("r{index}"),
    )
    .await;
    let deliveries = warm.ok + answers.ok;
    let cpu_before = nbci.cpu();
    github.release();
    let drained = github
        .wait_for_compares(compares_before + deliveries, DRAIN_TIMEOUT)
        .await;
    // The marker and the queue removal trail the compare.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if !drained {
        bail!(
            "nbci: the work handed off did not finish within {DRAIN_TIMEOUT:?} ({} of {deliveries} \
             compared); see {}",
            github.counts().compares - compares_before,
            nbci.log.display()
        );
    }
    Ok(Split {
        answers,
        after_cpu: nbci.cpu().saturating_sub(cpu_before),
        after_deliveries: deliveries,
    })
}

fn method(settings: Settings, body: usize, cores: usize, octokit: &str) -> String {
    format!(
        "The release `github-webhook` binary and {octokit} (`verifyAndReceive` in a plain Node \
         http server with a `check_suite` handler that only counts) receive the same signed \
         `check_suite` delivery ({body} bytes, `tests/fixtures/github/check_suite.requested.json`), \
         each request with a delivery id of its own, from one Rust load generator (reqwest, \
         keep-alive, {concurrency} connections), all on 127.0.0.1 of one {cores}-core machine. \
         nbci runs with a directory bucket in /dev/shm and its in-bucket queue, GitHub stubbed \
         in the benchmark (token exchange, and a compare listing no files, so no notebook runs). \
         Rounds of {secs} s alternate, nbci then octokit, {rounds} each, after {warmup} warm-up \
         requests per server; the tables give medians over rounds.\n\n\
         Server CPU per delivery is the server's utime + stime (from /proc/PID/stat) over the \
         round divided by the deliveries answered 2xx; unlike req/s it hardly depends on what \
         else the machine does. Each nbci round starts a fresh process and holds the fake \
         GitHub's token exchange, so the work nbci hands off waits: the round measures what \
         nbci does before it answers (verify the signature, parse the fields that decide, the \
         claim, one line appended to the directory bucket's journal, the log line, the answer). \
         Then the exchange is let go and the CPU nbci spends until every delivery was compared \
         is the work after the hand-off. octokit does nothing after its answer. A ratio is nbci \
         divided by octokit: below 1 means nbci uses less CPU (or time) per delivery; for \
         throughput above 1 means nbci answers more requests per second.",
        concurrency = settings.concurrency,
        secs = settings.round.as_secs(),
        rounds = settings.rounds,
        warmup = settings.warmup,
    )
}

/// Medians over rounds.
#[derive(Debug, Clone, Copy)]
struct Figures {
    throughput: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

impl Figures {
    fn of<'a>(rounds: impl Iterator<Item = &'a Round> + Clone) -> Self {
        Self {
            throughput: median(rounds.clone().map(Round::throughput).collect()),
            p50: median(rounds.clone().map(|r| ms(r.percentile(0.50))).collect()),
            p99: median(rounds.clone().map(|r| ms(r.percentile(0.99))).collect()),
            cpu: median(rounds.map(Round::server_cpu_per_request).collect()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    rounds: usize,
    nbci: Figures,
    octokit: Figures,
    after_cpu: f64,
}

impl Summary {
    fn of(nbci: &[Split], octokit: &[Round], rounds: usize) -> Self {
        Self {
            rounds,
            nbci: Figures::of(nbci.iter().map(|s| &s.answers)),
            octokit: Figures::of(octokit.iter()),
            after_cpu: median(nbci.iter().map(Split::after_cpu_per_delivery).collect()),
        }
    }
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

fn print_comparison(summary: &Summary) {
    let (n, o) = (summary.nbci, summary.octokit);
    println!();
    println!(
        "medians of {} rounds (nbci: before the answer, the work after it held)",
        summary.rounds
    );
    println!(
        "{:<22} {:>9} {:>9} {:>13}  aim",
        "", "nbci", "octokit", "nbci/octokit"
    );
    println!(
        "{:<22} {:>9.0} {:>9.0} {:>12.2}x",
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
        "{:<22} {:>9.2} {:>9.2} {:>13.2}  <= 1",
        "p99 latency ms",
        n.p99,
        o.p99,
        n.p99 / o.p99
    );
    println!(
        "{:<22} {:>9.0} {:>9.0} {:>13.2}  <= 0.5",
        "server CPU us/request",
        n.cpu,
        o.cpu,
        n.cpu / o.cpu
    );
}

/// Prints the cold starts; returns median, min and max in ms.
fn print_cold_start(times: &[Duration]) -> [(&'static str, f64); 3] {
    let mut cold: Vec<f64> = times.iter().copied().map(ms).collect();
    cold.sort_by(f64::total_cmp);
    let figures = [
        ("median", median(cold.clone())),
        ("min", cold.first().copied().unwrap_or(f64::NAN)),
        ("max", cold.last().copied().unwrap_or(f64::NAN)),
    ];
    println!();
    println!(
        "cold start, spawn to first 200 on /healthz ({} starts): median {:.1} ms, min {:.1} ms, \
         max {:.1} ms (aim < 20 ms)",
        cold.len(),
        figures[0].1,
        figures[1].1,
        figures[2].1,
    );
    figures
}

fn print_memory(memory: &[(&str, [Option<f64>; 2])]) {
    let mib = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
    println!();
    println!(
        "{:<22} {:>9} {:>9}",
        "resident memory MiB", "nbci", "octokit"
    );
    for (what, [n, o]) in memory {
        println!("{:<22} {:>9} {:>9}", what, mib(*n), mib(*o));
    }
}

// ---------------------------------------------------------------------------
// Set-up

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

/// Starts the service `count` times, each on a bucket of its own; each
/// time, from just before `spawn` to the first `200` on `/healthz`, polled
/// by connecting in a tight loop.
fn cold_starts(env: &NbciEnv, dir: &Path, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    for index in 0..count {
        let port = free_port()?;
        let mut command = env.command(&dir.join(index.to_string()));
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
        percentile(&self.latencies, p)
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
