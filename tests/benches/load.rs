//! The load benchmark of issue 11 (`cargo bench -p nbci-tests --bench load`,
//! or `make bench`): the release `github-webhook` and `gcs-events` binaries
//! under steady load at a fixed rate, at the same time, for
//! `NBCI_LOAD_SECONDS` (30). Figures are printed and written to
//! `$NBCI_BENCH_OUT/load.json` (default `target/bench`); nothing is asserted.
//!
//! - `github-webhook`: signed `check_suite` deliveries, each with a delivery
//!   id of its own, at `NBCI_LOAD_RATE` per second (200), over a directory
//!   bucket in `/dev/shm` with its in-bucket queue; GitHub is stubbed in
//!   this process (token exchange, and a compare that lists no files, so
//!   each accepted delivery is dispatched and no notebook runs).
//! - `gcs-events`: Eventarc finalize events (binary CloudEvents) of
//!   `result.json` objects under `ci/`, each object and generation new, at
//!   `NBCI_LOAD_EVENTS_RATE` per second (200), over a directory bucket of
//!   its own: each is claimed (its create-only event marker), looked up (no
//!   job record: nothing to complete) and marked done.
//!
//! Requests leave on a fixed schedule (open loop): a slow answer does not
//! hold back the next request, and latency counts from when the request was
//! due, so queueing shows. At most `NBCI_LOAD_MAX_IN_FLIGHT` (1000) requests
//! per service are in flight; one due past that is counted as an error.
//! Both services' resident memory is sampled every second. Everything runs
//! on 127.0.0.1, stops by itself, and every child process is killed when the
//! benchmark ends, fails or is interrupted ([`Service`] kills on drop).
//!
//! Other settings: `NBCI_WEBHOOK_BIN`, `NBCI_EVENTS_BIN` (other builds of the
//! services), `RUST_LOG` (the services', default `info`), `NBCI_BENCH_OUT`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{
    FakeGitHub, Report, SECRET, Series, Service, Table, ms, percentile, release_binary,
    scratch_dir, service_command, setting,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// What the benchmark does, from `NBCI_LOAD_*`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    length: Duration,
    webhook_rate: usize,
    events_rate: usize,
    max_in_flight: usize,
}

/// How long requests still in flight at the end may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// The bucket name the finalize events carry.
const EVENTS_BUCKET: &str = "nbci-load";
/// The object metadata of a finalize event (google-cloudevents' test data).
const OBJECT: &str =
    include_str!("../fixtures/google/storage/v1/StorageObjectDataWorkflows-simple.json");

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        length: Duration::from_secs(u64::try_from(setting("NBCI_LOAD_SECONDS", 30)?)?),
        webhook_rate: setting("NBCI_LOAD_RATE", 200)?,
        events_rate: setting("NBCI_LOAD_EVENTS_RATE", 200)?,
        max_in_flight: setting("NBCI_LOAD_MAX_IN_FLIGHT", 1000)?,
    };
    common::run_until_ctrl_c(None, run(settings))
}

/// One request, ready to send.
#[derive(Debug, Clone)]
struct Request {
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// What one target's requests came to.
#[derive(Debug, Default)]
struct Outcome {
    sent: usize,
    ok: usize,
    /// Answered otherwise, not answered, or not sent (too many in flight).
    errors: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn record(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(latency) => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let webhook_binary = release_binary("NBCI_WEBHOOK_BIN", "github-webhook")?;
    let events_binary = release_binary("NBCI_EVENTS_BIN", "gcs-events")?;
    let github = FakeGitHub::start().await?;
    let data = tempfile::Builder::new()
        .prefix("nbci-bench-load-")
        .tempdir_in(scratch_dir())?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(settings.max_in_flight)
        .timeout(FINISH_TIMEOUT)
        .build()?;
    let mut webhook = Service::spawn(
        "github-webhook",
        &mut service_command(
            &webhook_binary,
            &github.url,
            &data.path().join("webhook-bucket"),
            true,
        ),
        &data.path().join("github-webhook.log"),
    )?;
    let mut events = Service::spawn(
        "gcs-events",
        &mut service_command(
            &events_binary,
            &github.url,
            &data.path().join("events-bucket"),
            false,
        ),
        &data.path().join("gcs-events.log"),
    )?;
    webhook.wait_ready(&client).await?;
    events.wait_ready(&client).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = [webhook.memory(), events.memory()];
    let cpu_before = [webhook.cpu(), events.cpu()];
    println!(
        "load benchmark: {} s; github-webhook {} deliveries/s, gcs-events {} finalize events/s; \
         at most {} in flight each; {} cores",
        settings.length.as_secs(),
        settings.webhook_rate,
        settings.events_rate,
        settings.max_in_flight,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    println!("github-webhook: {}", webhook_binary.display());
    println!("gcs-events:     {}", events_binary.display());
    println!("buckets:        {}", data.path().display());

    let body = Bytes::from(std::fs::read(
        common::workspace().join("tests/fixtures/github/check_suite.requested.json"),
    )?);
    let signature = nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body);
    let webhook_url = webhook.url("/github");
    let delivery = move |n: usize| Request {
        url: webhook_url.clone(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), "GitHub-Hookshot/nbci-load".into()),
            ("x-github-event".into(), "check_suite".into()),
            ("x-github-delivery".into(), format!("load-{n}")),
            ("x-hub-signature-256".into(), signature.clone()),
        ],
        body: body.clone(),
    };
    let object: Value = serde_json::from_str(OBJECT)?;
    let events_url = events.url("/");
    let finalize = move |n: usize| finalize_event(&events_url, &object, n);

    let started = Instant::now();
    let sampler = {
        let pids = [webhook.child.id(), events.child.id()];
        let length = settings.length;
        tokio::spawn(sample_memory(pids, length))
    };
    let (webhook_outcome, events_outcome) = tokio::join!(
        drive(
            &client,
            settings.webhook_rate,
            settings.length,
            settings.max_in_flight,
            delivery
        ),
        drive(
            &client,
            settings.events_rate,
            settings.length,
            settings.max_in_flight,
            finalize
        ),
    );
    let elapsed = started.elapsed();
    let samples = sampler.await?;
    // The compares trail the answers: wait for the dispatches to finish.
    let compared = github
        .wait_for_compares(webhook_outcome.ok, FINISH_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = [webhook.memory(), events.memory()];
    let cpu = [
        webhook.cpu().saturating_sub(cpu_before[0]),
        events.cpu().saturating_sub(cpu_before[1]),
    ];
    let calls = github.counts();

    let outcomes = [
        ("github-webhook", &webhook_outcome),
        ("gcs-events", &events_outcome),
    ];
    let rates = [settings.webhook_rate, settings.events_rate];
    println!();
    println!(
        "{:<15} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "service",
        "rate/s",
        "sent",
        "errors",
        "achieved",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu us/rq",
        "RSS MiB",
        "after MiB"
    );
    let mut table = Table::new(
        format!(
            "{} s at a fixed rate, both services at once",
            settings.length.as_secs()
        ),
        &[
            "service",
            "rate (req/s)",
            "requests",
            "errors",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "CPU per request (µs)",
            "RSS before (MiB)",
            "RSS after (MiB)",
        ],
    );
    let mut latencies = BTreeMap::new();
    for (index, (name, outcome)) in outcomes.iter().enumerate() {
        let mut sorted = outcome.latencies.clone();
        sorted.sort_unstable();
        let [p50, p99, max] = [0.5, 0.99, 1.0].map(|p| ms(percentile(&sorted, p)));
        let cpu_per = cpu[index].as_secs_f64() * 1e6 / outcome.ok.max(1) as f64;
        let mib = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:<15} {:>7} {:>7} {:>7} {:>9.1} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>9} {:>9}",
            name,
            rates[index],
            outcome.sent,
            outcome.errors,
            outcome.ok as f64 / elapsed.as_secs_f64(),
            p50,
            p99,
            max,
            cpu_per,
            mib(before[index].rss_mib()),
            mib(after[index].rss_mib()),
        );
        if let Some(error) = &outcome.first_error {
            println!("                first error: {error}");
        }
        table.row(vec![
            (*name).to_owned(),
            rates[index].to_string(),
            outcome.sent.to_string(),
            outcome.errors.to_string(),
            format!("{p50:.2}"),
            format!("{p99:.2}"),
            format!("{max:.2}"),
            format!("{cpu_per:.0}"),
            mib(before[index].rss_mib()),
            mib(after[index].rss_mib()),
        ]);
        latencies.insert(*name, outcome.latencies.clone());
    }
    println!();
    println!("resident memory every second (MiB):");
    println!("{:>4} {:>15} {:>11}", "s", "github-webhook", "gcs-events");
    for (second, [w, e]) in samples.iter().enumerate() {
        println!("{second:>4} {w:>15.1} {e:>11.1}");
    }
    println!();
    println!(
        "fake GitHub: {} token exchange(s), {} compare calls for {} accepted deliveries{}, {} \
         unexpected calls",
        calls.exchanges,
        calls.compares,
        webhook_outcome.ok,
        if compared {
            ""
        } else {
            " (not all dispatched in time)"
        },
        calls.unexpected
    );

    let mut report = Report::new(
        "load",
        "Load: github-webhook and gcs-events at a fixed rate",
        method(settings),
    );
    report.tables.push(table);
    let mut work = Table::new("the work behind the answers", &["measure", "value"]);
    work.row(vec![
        "deliveries dispatched (compare calls) / accepted".into(),
        format!("{} / {}", calls.compares, webhook_outcome.ok),
    ]);
    work.row(vec![
        "token exchanges; unexpected GitHub calls".into(),
        format!("{}; {}", calls.exchanges, calls.unexpected),
    ]);
    report.tables.push(work);
    for (name, samples) in &latencies {
        report.latencies(name, samples);
    }
    let mut lines = BTreeMap::new();
    lines.insert(
        "github-webhook RSS".to_owned(),
        samples.iter().map(|[w, _]| round1(*w)).collect(),
    );
    lines.insert(
        "gcs-events RSS".to_owned(),
        samples.iter().map(|[_, e]| round1(*e)).collect(),
    );
    report.series.insert(
        "memory over time (MiB)".to_owned(),
        Series {
            x_label: "seconds".to_owned(),
            x: (0..samples.len()).map(|s| s as f64).collect(),
            lines,
        },
    );
    let path = report.write()?;
    println!("figures: {}", path.display());

    drop((webhook, events));
    github.stop().await;
    Ok(())
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn method(settings: Settings) -> String {
    format!(
        "The release `github-webhook` and `gcs-events` binaries run at the same time on \
         127.0.0.1, each over a directory bucket of its own in /dev/shm, for {secs} s. \
         `github-webhook` receives signed `check_suite` deliveries \
         (`tests/fixtures/github/check_suite.requested.json`, each with a delivery id of its \
         own) at {webhook} per second; GitHub is stubbed in the benchmark (token exchange, and \
         a compare that lists no files), so each accepted delivery is handed to the in-bucket \
         queue and dispatched, and no notebook runs. `gcs-events` receives Eventarc finalize \
         events (binary CloudEvents) of `result.json` objects under `ci/`, each object and \
         generation new, at {events} per second: each is claimed with its create-only marker, \
         finds no job record, and is marked done.\n\n\
         Requests leave on a fixed schedule (open loop), so a slow answer does not hold back \
         the next one, and latency counts from when a request was due: queueing shows in p99 \
         and max. At most {max} requests per service may be in flight; one due past that, \
         and every answer other than 2xx, is an error. CPU per request is the service's \
         utime + stime (/proc/PID/stat) over the run, its work after the answers included, \
         divided by the requests answered 2xx. Resident memory (VmRSS) is sampled every second.",
        secs = settings.length.as_secs(),
        webhook = settings.webhook_rate,
        events = settings.events_rate,
        max = settings.max_in_flight,
    )
}

/// The finalize event of the `n`th new `result.json`, as Eventarc posts it.
fn finalize_event(url: &str, object: &Value, n: usize) -> Request {
    let name = format!("ci/Codertocat/Hello-World/{n:040x}/notebooks/n{n}.ipynb/result.json");
    let generation = (1_700_000_000_000_000 + n).to_string();
    let mut object = object.clone();
    object["bucket"] = json!(EVENTS_BUCKET);
    object["name"] = json!(name);
    object["id"] = json!(format!("{EVENTS_BUCKET}/{name}/{generation}"));
    object["generation"] = json!(generation);
    Request {
        url: url.to_owned(),
        headers: vec![
            ("ce-specversion".into(), "1.0".into()),
            (
                "ce-type".into(),
                "google.cloud.storage.object.v1.finalized".into(),
            ),
            (
                "ce-source".into(),
                format!("//storage.googleapis.com/projects/_/buckets/{EVENTS_BUCKET}"),
            ),
            ("ce-subject".into(), format!("objects/{name}")),
            ("ce-id".into(), format!("load-{n}")),
            ("ce-time".into(), "2026-11-30T00:00:00Z".into()),
            ("ce-bucket".into(), EVENTS_BUCKET.into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: Bytes::from(object.to_string()),
    }
}

/// Sends `request(n)` at `rate` per second for `length`, each on its own
/// schedule; waits for the answers (at most [`FINISH_TIMEOUT`] past the end).
async fn drive(
    client: &reqwest::Client,
    rate: usize,
    length: Duration,
    max_in_flight: usize,
    request: impl Fn(usize) -> Request,
) -> Outcome {
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let total = (length.as_secs_f64() * rate as f64).round() as usize;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + period.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            let mut outcome = outcome.lock().await;
            outcome.sent += 1;
            outcome.record(Err(format!("more than {max_in_flight} requests in flight")));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let Request { url, headers, body } = request(n);
        let mut builder = client.post(url).body(body);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let outcome = outcome.clone();
        let in_flight = in_flight.clone();
        tasks.spawn(async move {
            let result = answer(builder).await.map(|()| due.elapsed());
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut outcome = outcome.lock().await;
            outcome.sent += 1;
            outcome.record(result);
        });
    }
    let finish = tokio::time::timeout(FINISH_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finish.is_err() {
        tasks.abort_all();
        let mut outcome = outcome.lock().await;
        let unanswered = in_flight.load(Ordering::Relaxed);
        outcome.sent += unanswered;
        outcome.errors += unanswered;
        outcome
            .first_error
            .get_or_insert_with(|| format!("{unanswered} requests unanswered at the end"));
    }
    let mut outcome = outcome.lock().await;
    std::mem::take(&mut *outcome)
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

/// `VmRSS` of both processes in MiB, every second from now to `length`
/// (both ends included).
async fn sample_memory(pids: [u32; 2], length: Duration) -> Vec<[f64; 2]> {
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("VmRSS:")
                        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                })
            })
            .map_or(f64::NAN, |kib: u64| kib as f64 / 1024.0)
    };
    let mut samples = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..=length.as_secs() {
        interval.tick().await;
        samples.push(pids.map(rss));
    }
    samples
}
