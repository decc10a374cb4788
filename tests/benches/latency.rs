//! Event-to-effect latency of `gcs-events` (issue 11; `cargo bench -p
//! nbci-tests --bench latency`, or `make bench`): figures are printed and
//! written as JSON, nothing is asserted.
//!
//! 1. **finalize -> check completed.** A signed `check_suite` delivery to
//!    the release `github-webhook` creates the check (check run queued, then
//!    in progress) and submits its job to a Vertex-AI-shaped stub, which only
//!    records it. The benchmark then plays the runner (input.ipynb,
//!    output.ipynb, output.html, then result.json, in fake-gcs-server) and
//!    times the finalize event of result.json, posted to the release
//!    `gcs-events` as Eventarc's binary CloudEvent, to the moment the GitHub
//!    stub takes the PATCH that completes the check run; and to the event's
//!    answer.
//! 2. **finalize -> next pipeline step submitted.** A push to the branch of a
//!    three-step pipeline (no gate, no deploy) starts a run; the webhook
//!    submits step 1. The finalize event of step 1's result.json is timed to
//!    the moment the Vertex stub takes the CustomJob create of step 2. Steps
//!    2 and 3 then end the same way (not timed), so that the pipeline's lock
//!    is free for the next run.
//!
//! Every service and stub listens on 127.0.0.1; access tokens come from a
//! fake metadata server, GitHub is the strict wiremock fake of the
//! integration tests (JWT, installation token, check-run rules), storage is
//! fake-gcs-server from `.venv`. The stubs and services are the integration
//! tests' own (tests/tests/integration/{fake_cloud,fake_gcs,fake_github}.rs,
//! included by path). Children are killed when the benchmark ends, fails,
//! panics or is interrupted.
//!
//! Settings (environment): `NBCI_BENCH_SAMPLES` (200, the check
//! completions), `NBCI_BENCH_PIPELINE_SAMPLES` (50, one pipeline run each),
//! `NBCI_BENCH_WARMUP` (5 untimed samples of each before the timed ones),
//! `NBCI_BENCH_OUT` (directory of `latency.json`, default `target/bench`),
//! `NBCI_EVENTS_BIN` and `NBCI_WEBHOOK_BIN` (default: `gcs-events` and
//! `github-webhook` in this benchmark's profile directory, i.e.
//! `target/release/`).

/// The benchmarks' own helpers (`run_until_ctrl_c`).
#[path = "common/mod.rs"]
mod bench;
#[path = "../tests/integration/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/integration/fake_cloud.rs"]
#[allow(dead_code)]
mod fake_cloud;
#[path = "../tests/integration/fake_gcs.rs"]
#[allow(dead_code)]
mod fake_gcs;
#[path = "../tests/integration/fake_github.rs"]
#[allow(dead_code)]
mod fake_github;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nbci_shared::adapters::gcp::storage::GcsStore;
use nbci_shared::ports::store::{ObjectStore, Precondition};
use serde_json::{Value, json};

use fake_cloud::{
    PROJECT, REGION, RUNNER_IMAGE, Service, Vertex, fake_metadata, fake_vertex, notebook,
    send_finalize,
};
use fake_gcs::FakeGcs;
use fake_github::{APP_ID, FakeGitHub, private_key_pem};

/// The webhook secret (a benchmark value, not a secret).
const SECRET: &str = "nbci-bench-latency-secret";
/// The whole benchmark stops after this long, whatever it is doing.
const OVERALL: Duration = Duration::from_secs(30 * 60);
/// How long one awaited effect may take before the benchmark gives up.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(30);
const CI_COMPLETED: &str = "finalize -> check completed";
const CI_ANSWERED: &str = "finalize -> gcs-events answered (check)";
const NEXT_STEP: &str = "finalize -> next step submitted";
const STEP_ANSWERED: &str = "finalize -> gcs-events answered (pipeline step)";
const STORE_READ: &str = "reference: one storage read";
const STORE_WRITE: &str = "reference: one conditional storage write";

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    bench::run_until_ctrl_c(Some(2), async {
        tokio::time::timeout(OVERALL, run(settings))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("gave up after {OVERALL:?}")))
    })
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    samples: usize,
    pipeline_samples: usize,
    warmup: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn number(name: &str, default: usize) -> anyhow::Result<usize> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(value) => value
                    .trim()
                    .parse::<usize>()
                    .with_context(|| format!("{name} must be a whole number, got {value:?}")),
            }
        }
        Ok(Self {
            samples: number("NBCI_BENCH_SAMPLES", 200)?,
            pipeline_samples: number("NBCI_BENCH_PIPELINE_SAMPLES", 50)?,
            warmup: number("NBCI_BENCH_WARMUP", 5)?,
        })
    }
}

/// A release service binary: `override_var`, else `name` in this
/// benchmark's profile directory (`target/release/deps/latency-*` -> `target/release/`).
fn service_binary(name: &str, override_var: &str) -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os(override_var) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("the benchmark does not live in target/<profile>/deps")?
            .join(name),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --release --bin gcs-events \
             --bin github-webhook` (`make bench` does), or set {override_var}",
            binary.display()
        );
    }
    Ok(binary)
}

/// Both services, their stubs and a store on the stub bucket (the runner's view).
struct World {
    gcs: FakeGcs,
    store: GcsStore,
    vertex: Vertex,
    github: FakeGitHub,
    webhook: Service,
    events: Service,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(changed: &[(&str, &str)], tree: &[(&str, Vec<u8>)]) -> anyhow::Result<Self> {
        let webhook_binary = service_binary("github-webhook", "NBCI_WEBHOOK_BIN")?;
        let events_binary = service_binary("gcs-events", "NBCI_EVENTS_BIN")?;
        let gcs = FakeGcs::start().await;
        let store = GcsStore::new(gcs.settings()).await?;
        let metadata = fake_metadata().await;
        let dir = tempfile::tempdir()?;
        let (vertex_address, vertex) = fake_vertex(&gcs.endpoint, dir.path(), false).await;
        let github = FakeGitHub::start_for_any_commit(changed, tree).await;
        let common = vec![
            ("GITHUB_APP_ID", APP_ID.to_owned()),
            ("GITHUB_APP_PRIVATE_KEY", private_key_pem()),
            ("GITHUB_API_URL", github.uri()),
            ("NBCI_BUCKET", format!("gs://{}", gcs.bucket)),
            ("STORAGE_EMULATOR_HOST", gcs.endpoint.clone()),
            ("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned()),
            ("NBCI_REGION", REGION.to_owned()),
            ("NBCI_EXECUTOR", "vertex".to_owned()),
            ("NBCI_RUNNER_IMAGE", RUNNER_IMAGE.to_owned()),
            ("NBCI_VERTEX_ENDPOINT", format!("http://{vertex_address}")),
            ("GCE_METADATA_HOST", metadata),
        ];
        let mut webhook_env = common.clone();
        webhook_env.push(("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()));
        webhook_env.push(("NBCI_PUBLIC_URL", "https://nbci.example.com".to_owned()));
        let webhook =
            Service::start(&webhook_binary, "github-webhook", dir.path(), &webhook_env).await;
        let events = Service::start(&events_binary, "gcs-events", dir.path(), &common).await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(EFFECT_TIMEOUT)
            .build()?;
        Ok(Self {
            gcs,
            store,
            vertex,
            github,
            webhook,
            events,
            client,
            _dir: dir,
        })
    }

    fn logs(&self) -> String {
        format!(
            "--- github-webhook\n{}\n--- gcs-events\n{}\n--- GitHub stub problems\n{:?}\n--- Vertex stub problems\n{:?}",
            tail(&self.webhook.log()),
            tail(&self.events.log()),
            self.github.problems(),
            self.vertex
                .problems
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default()
        )
    }

    /// Sends a signed delivery of `event` to the webhook; expects 202.
    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> anyhow::Result<()> {
        let body = serde_json::to_vec(payload)?;
        let answer = self
            .client
            .post(format!("{}/github", self.webhook.url))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header(
                "X-Hub-Signature-256",
                nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await?;
        if answer.status().as_u16() != 202 {
            bail!(
                "the webhook answered {} to {delivery}: {}\n{}",
                answer.status(),
                answer.text().await.unwrap_or_default(),
                self.logs()
            );
        }
        Ok(())
    }

    /// Waits for the `count`th CustomJob (from 1) and answers its folder
    /// (the record URI's key without `/job.json`) and when it was created.
    async fn job(&self, count: usize) -> anyhow::Result<(String, Instant)> {
        let prefix = format!("gs://{}/", self.gcs.bucket);
        self.until(&format!("CustomJob #{count}"), || async {
            let jobs = self.vertex.jobs();
            jobs.values().nth(count - 1).map(|job| {
                let key = job
                    .record_uri()
                    .trim_start_matches(&prefix)
                    .trim_end_matches("/job.json")
                    .to_owned();
                (key, job.created)
            })
        })
        .await
    }

    /// The JSON object at `key`, if there is one.
    async fn json(&self, key: &str) -> anyhow::Result<Option<Value>> {
        Ok(match self.store.get(key).await? {
            Some(object) => Some(serde_json::from_slice(&object.bytes)?),
            None => None,
        })
    }

    /// Waits until the state object at `key` says `ready`.
    async fn until_state(&self, key: &str, ready: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        self.until(key, || async {
            match self.json(key).await {
                Ok(Some(state)) if ready(&state) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Polls `probe` every millisecond until it answers, at most [`EFFECT_TIMEOUT`].
    async fn until<T, F, Fut>(&self, what: &str, probe: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + EFFECT_TIMEOUT;
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("waited {EFFECT_TIMEOUT:?} for {what}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Writes what `nbci runner` leaves in the job folder `prefix`, result.json last.
    async fn finish_job(&self, prefix: &str, notebook_path: &str) -> anyhow::Result<String> {
        let input = notebook(&["x = 21 * 2", "assert x == 42"]);
        for (name, bytes, content_type) in [
            ("input.ipynb", input.clone(), "application/x-ipynb+json"),
            ("output.ipynb", input, "application/x-ipynb+json"),
            (
                "output.html",
                b"<html><body>executed</body></html>".to_vec(),
                "text/html",
            ),
        ] {
            self.store
                .put(
                    &format!("{prefix}/{name}"),
                    bytes,
                    content_type,
                    Precondition::None,
                )
                .await?;
        }
        let result = serde_json::to_vec_pretty(&json!({
            "notebook": notebook_path,
            "status": "succeeded",
            "started_at": "2026-11-30T00:00:00Z",
            "duration_s": 1.5,
            "output": format!("gs://{}/{prefix}/output.ipynb", self.gcs.bucket),
            "failed_cell": null,
            "parameters": {},
            "runtime": {"image": RUNNER_IMAGE, "kernel": "python3"},
            "total_cells": 2
        }))?;
        nbci_shared::domain::outcome::Outcome::from_json(&result)
            .map_err(|reason| anyhow::anyhow!("the benchmark's result.json: {reason}"))?;
        let key = format!("{prefix}/result.json");
        self.store
            .put(&key, result, "application/json", Precondition::None)
            .await?;
        Ok(key)
    }

    /// Posts the finalize event of `key` (its metadata read first, as
    /// Eventarc has it in hand); answers when it was sent and how long the
    /// answer took.
    async fn finalize(&self, key: &str) -> anyhow::Result<(Instant, Duration)> {
        let object = self.gcs.metadata(key).await;
        let sent = Instant::now();
        let status = send_finalize(
            &self.client,
            &self.events.url,
            &self.gcs.bucket,
            key,
            &object,
        )
        .await;
        let answered = sent.elapsed();
        if status != 200 {
            bail!("gcs-events answered {status} to {key}\n{}", self.logs());
        }
        Ok((sent, answered))
    }
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(0);
    &log[start..]
}

/// One timed effect: from the event sent to the effect, and to the event's answer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    effect: Duration,
    answer: Duration,
}

/// What one run of the check completions measured.
struct Checks {
    samples: Vec<Sample>,
    /// Reads and conditional writes of a small object through the
    /// services' own storage adapter: the unit the services' work is made of.
    reads: Vec<Duration>,
    writes: Vec<Duration>,
}

/// Check completions: one check_suite delivery per sample, one notebook each.
async fn check_completions(settings: Settings) -> anyhow::Result<Checks> {
    let path = "nb/sample.ipynb";
    let world = World::start(
        &[(path, "added")],
        &[(path, notebook(&["x = 21 * 2", "assert x == 42"]))],
    )
    .await?;
    let mut suite: Value = serde_json::from_str(&std::fs::read_to_string(
        common::workspace().join("tests/fixtures/github/check_suite.requested.json"),
    )?)?;
    let mut samples = Vec::new();
    for i in 0..settings.warmup + settings.samples {
        let sha = format!("{i:07x}{}", "c".repeat(33));
        suite["check_suite"]["head_sha"] = sha.clone().into();
        world
            .deliver("check_suite", &format!("latency-check-{i}"), &suite)
            .await?;
        let (prefix, _) = world.job(i + 1).await?;
        if !prefix.contains(&sha) {
            bail!("job {} is {prefix}, not of commit {sha}", i + 1);
        }
        // The check is running (its job submitted, its state released).
        let state_key = format!("{prefix}/check.json");
        world
            .until_state(&state_key, |s| {
                s["phase"] == "running" && s.get("lease").is_none_or(Value::is_null)
            })
            .await?;
        let check_run = world
            .json(&state_key)
            .await?
            .and_then(|s| s["check_run"].as_u64())
            .context("the check has no check run")?;
        let result = world.finish_job(&prefix, path).await?;
        let (sent, answer) = world.finalize(&result).await?;
        let completed = world
            .until("the completing PATCH", || async {
                world
                    .github
                    .check_calls()
                    .iter()
                    .find(|c| {
                        c.method == "PATCH" && c.id == check_run && c.body["status"] == "completed"
                    })
                    .map(|c| c.at)
            })
            .await?;
        // Let the check settle (its state written, its active marker gone)
        // before the next delivery.
        world
            .until_state(&state_key, |s| {
                s["phase"] == "completed" && s.get("lease").is_none_or(Value::is_null)
            })
            .await?;
        if i >= settings.warmup {
            samples.push(Sample {
                effect: completed.saturating_duration_since(sent),
                answer,
            });
        }
    }
    let problems = world.github.problems();
    if !problems.is_empty() {
        bail!("the GitHub stub saw problems: {problems:?}");
    }
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    let key = "bench/reference.json";
    let mut generation = world
        .store
        .put(key, b"{}".to_vec(), "application/json", Precondition::None)
        .await?;
    for _ in 0..settings.samples {
        let started = Instant::now();
        world
            .store
            .get(key)
            .await?
            .context("the reference object")?;
        reads.push(started.elapsed());
        let started = Instant::now();
        generation = world
            .store
            .put(
                key,
                b"{}".to_vec(),
                "application/json",
                Precondition::Generation(generation),
            )
            .await?;
        writes.push(started.elapsed());
    }
    Ok(Checks {
        samples,
        reads,
        writes,
    })
}

/// Next steps: one pipeline run (a push) per sample.
async fn next_steps(settings: Settings) -> anyhow::Result<Vec<Sample>> {
    let spec = "pipelines:\n  latency:\n    branch: master\n    steps:\n      \
                - notebook: nb/prepare.ipynb\n      - notebook: nb/train.ipynb\n      \
                - notebook: nb/evaluate.ipynb\n";
    let step = notebook(&["x = 1"]);
    let world = World::start(
        &[],
        &[
            ("nbci.yaml", spec.as_bytes().to_vec()),
            ("nb/prepare.ipynb", step.clone()),
            ("nb/train.ipynb", step.clone()),
            ("nb/evaluate.ipynb", step),
        ],
    )
    .await?;
    let mut push: Value = serde_json::from_str(&std::fs::read_to_string(
        common::workspace().join("tests/fixtures/github/push.branch.json"),
    )?)?;
    let notebooks = ["nb/prepare.ipynb", "nb/train.ipynb", "nb/evaluate.ipynb"];
    let lock_key = "pipelines/latency/lock.json";
    let mut samples = Vec::new();
    let mut jobs = 0;
    for i in 0..settings.warmup + settings.pipeline_samples {
        // Run ids are the trigger's second and the sha's first 7 digits.
        let sha = format!("{i:07x}{}", "b".repeat(33));
        push["after"] = sha.clone().into();
        push["head_commit"]["id"] = sha.clone().into();
        world
            .deliver("push", &format!("latency-push-{i}"), &push)
            .await?;
        let mut timed = None;
        for (index, notebook_path) in notebooks.iter().enumerate() {
            jobs += 1;
            let (prefix, created) = world.job(jobs).await?;
            if let Some(sent) = timed.take() {
                let (sent, answer): (Instant, Duration) = sent;
                if i >= settings.warmup {
                    samples.push(Sample {
                        effect: created.saturating_duration_since(sent),
                        answer,
                    });
                }
            }
            let run_prefix = prefix
                .split_once("/steps/")
                .map(|(run, _)| run.to_owned())
                .with_context(|| format!("{prefix} is not a pipeline step's folder"))?;
            // The step is submitted and the run's state released.
            world
                .until_state(&format!("{run_prefix}/state.json"), |s| {
                    s.get("lease").is_none_or(Value::is_null)
                        && s["steps"][index]["handle"].is_string()
                })
                .await?;
            let result = world.finish_job(&prefix, notebook_path).await?;
            let sent = world.finalize(&result).await?;
            if index == 0 {
                timed = Some(sent);
            }
        }
        // The run is over and the lock free for the next push.
        world
            .until_state(lock_key, |lock| {
                lock.get("active").is_none_or(Value::is_null)
                    && lock.get("queued").is_none_or(Value::is_null)
            })
            .await?;
    }
    Ok(samples)
}

/// The `q` quantile by nearest rank of sorted milliseconds.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}

/// A row of the table: path, p50, p90, p99, max, samples.
fn row(path: &str, values: &[f64]) -> Vec<String> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let cell = |v: f64| format!("{v:.1}");
    vec![
        path.to_owned(),
        cell(quantile(&sorted, 0.5)),
        cell(quantile(&sorted, 0.9)),
        cell(quantile(&sorted, 0.99)),
        cell(sorted.last().copied().unwrap_or(f64::NAN)),
        values.len().to_string(),
    ]
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    println!(
        "latency benchmark: {} check completions and {} pipeline runs after {} warm-up samples \
         of each, {} cores",
        settings.samples,
        settings.pipeline_samples,
        settings.warmup,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let started = Instant::now();
    let Checks {
        samples: checks,
        reads,
        writes,
    } = if settings.samples > 0 {
        check_completions(settings).await?
    } else {
        Checks {
            samples: Vec::new(),
            reads: Vec::new(),
            writes: Vec::new(),
        }
    };
    let steps = if settings.pipeline_samples > 0 {
        next_steps(settings).await?
    } else {
        Vec::new()
    };
    let series: Vec<(&str, Vec<f64>)> = vec![
        (CI_COMPLETED, checks.iter().map(|s| ms(s.effect)).collect()),
        (CI_ANSWERED, checks.iter().map(|s| ms(s.answer)).collect()),
        (NEXT_STEP, steps.iter().map(|s| ms(s.effect)).collect()),
        (STEP_ANSWERED, steps.iter().map(|s| ms(s.answer)).collect()),
        (STORE_READ, reads.iter().copied().map(ms).collect()),
        (STORE_WRITE, writes.iter().copied().map(ms).collect()),
    ];
    let rows: Vec<Vec<String>> = series
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(path, values)| row(path, values))
        .collect();
    let header = ["path", "p50", "p90", "p99", "max", "samples"];
    println!();
    println!(
        "{:<48} {:>8} {:>8} {:>8} {:>8} {:>8}",
        header[0], header[1], header[2], header[3], header[4], header[5]
    );
    for r in &rows {
        println!(
            "{:<48} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    }
    println!("(ms; {:.0} s in all)", started.elapsed().as_secs_f64());

    let method = format!(
        "The release `github-webhook` and `gcs-events` binaries run as child processes on \
         127.0.0.1 against stubs: fake-gcs-server (the bucket, memory backend), a \
         Vertex-AI-shaped CustomJob API that records each create and runs nothing, a fake \
         metadata server for access tokens, and the integration tests' strict wiremock \
         GitHub (App JWT, installation token, check-run rules). Services log at `info`, as \
         on Cloud Run.\n\n\
         **{CI_COMPLETED}**: per sample, a signed `check_suite` delivery to the webhook \
         creates a check for one notebook and submits its job; once its state says \
         running, the benchmark writes what `nbci runner` leaves (input.ipynb, \
         output.ipynb, output.html, then a succeeded result.json) and posts the \
         result's finalize event (Eventarc's binary CloudEvent, the object's metadata \
         read beforehand) to `gcs-events`. Timed from the event sent to the moment the \
         GitHub stub takes the PATCH that completes the check run; \
         *{CI_ANSWERED}* is the same event to its `200` answer (the completion is \
         driven in the background, so it may land before or after the answer). \
         {} samples after {} untimed.\n\n\
         **{NEXT_STEP}**: per sample, a push to the branch of a three-step pipeline \
         (no gate, no deploy) starts a run, whose first step the webhook submits; \
         step 1's result.json is written and its finalize event posted to `gcs-events`, \
         timed to the moment the Vertex stub takes the CustomJob create of step 2 \
         (*{STEP_ANSWERED}*: to the event's answer). Steps 2 and 3 then end untimed, \
         which frees the pipeline for the next run. {} samples after {} untimed.\n\n\
         *{STORE_READ}* and *{STORE_WRITE}* (`ifGenerationMatch`) time a small object \
         through the services' own storage adapter against the same fake-gcs-server, \
         from the benchmark process: the unit of the services' work. Up to the \
         completing PATCH, `gcs-events` makes 5 storage reads and 3 conditional \
         writes in sequence (claim the event's marker; read job.json, result.json \
         and check.json; record the outcome; read the state again, lease it, read \
         input.ipynb for the annotations), then one PATCH to GitHub with a cached \
         installation token; up to the next step's create, 4 reads and 4 writes, then \
         Vertex AI's list of the step folder's jobs (none: not submitted before) and the \
         create.\n\n\
         Quantiles are nearest-rank over the samples; {} cores, shared with other work \
         when these figures were taken.",
        checks.len(),
        settings.warmup,
        steps.len(),
        settings.warmup,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let report = json!({
        "id": "latency",
        "title": "Event to effect: finalize to check completion, and to the next pipeline step",
        "method": method,
        "tables": [{
            "caption": "latency (ms)",
            "header": header,
            "rows": rows,
        }],
        "latencies_ms": series
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(path, values)| ((*path).to_owned(), json!(values)))
            .collect::<serde_json::Map<String, Value>>(),
    });
    let out = std::env::var_os("NBCI_BENCH_OUT")
        .map_or_else(|| common::workspace().join("target/bench"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let file = out.join("latency.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&report)?)?;
    println!("written: {}", file.display());
    Ok(())
}
