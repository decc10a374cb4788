//! Fault injection across the cloud loop: the real `nbci serve` binary as
//! the whole cloud system (NBCI_BUCKET on fake-gcs-server, Vertex AI jobs,
//! AI Platform deployments), with every outside system misbehaving:
//!
//! - Cloud Storage behind [`FaultProxy`], a proxy that answers 503, resets
//!   connections before or after forwarding (a lost answer), answers a
//!   conditional write that landed with 412 (what a client's retry of it
//!   meets), or answers slowly, on a seeded schedule;
//! - a Vertex-AI-shaped job API ([`FakeVertex`]) that answers 429 and 503,
//!   and loses answers (creates the job, then answers 502);
//! - finalize events delivered by [`Eventarc`], a stand-in that delivers
//!   each result's event one to three times, in the three shapes Google uses
//!   (binary and structured CloudEvents, a Pub/Sub push), out of order, and
//!   again until it is acknowledged;
//! - the server itself SIGKILLed at random points of a CI run and of a
//!   pipeline run, and started again.
//!
//! Each test checks the promises: the same final state as an undisturbed
//! run, one job per notebook or pipeline step (the job API's own count),
//! every check run completed exactly once (the strict fake GitHub's count
//! of completion PATCHes), at most one model version deployed per run (the
//! fake AI Platform's count of versions created).
//!
//! Randomness comes from one seed, printed when a test fails; set
//! `NBCI_FAULT_SEED` to replay a schedule, and `NBCI_FAULT_ROUNDS` to kill
//! and restart the server over more rounds (a local soak run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nbci_shared::adapters::gcp::storage::GcsStore;
use nbci_shared::domain::job::JobRecord;
use nbci_shared::domain::outcome::{Outcome, Status};
use nbci_shared::ports::store::{ObjectStore, Precondition, get_json};
use serde_json::{Value, json};

use super::common::nbci_binary;
use super::fake_cloud::{fake_metadata, serve};
use super::fake_gcs::FakeGcs;
use super::fake_github::{APP_ID, FakeGitHub, OWNER, REPO, private_key_pem};

#[path = "../../fixtures/google/deliveries.rs"]
mod deliveries;

const SECRET: &str = "It's a Secret to Everybody";
const PROJECT: &str = "demo-project";
const PROJECT_NUMBER: &str = "123456789012";
const REGION: &str = "us-central1";
const RUNNER_IMAGE: &str = "us-docker.pkg.dev/demo-project/nbci/runner:test";
/// The pipeline of the repository under test, and its model.
const PIPELINE: &str = "model";
const MODEL: &str = "scorer";
/// The seed when `NBCI_FAULT_SEED` does not give one.
const DEFAULT_SEED: u64 = 0x5eed_f00d;

// ---------------------------------------------------------------------------
// Randomness: one seed per test, printed on failure.

/// SplitMix64: small, seedable, good enough to draw schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high.saturating_sub(low).max(1)))
    }
}

/// The seed of this test run: `NBCI_FAULT_SEED`, else a fixed one.
fn seed() -> u64 {
    std::env::var("NBCI_FAULT_SEED")
        .ok()
        .and_then(|text| {
            let text = text.trim();
            text.strip_prefix("0x").map_or_else(
                || text.parse().ok(),
                |hex| u64::from_str_radix(hex, 16).ok(),
            )
        })
        .unwrap_or(DEFAULT_SEED)
}

/// Rounds of a test that repeats: `NBCI_FAULT_ROUNDS` (a local soak run),
/// else `default` (few, to keep `make test` quick).
fn rounds(default: usize) -> usize {
    std::env::var("NBCI_FAULT_ROUNDS")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|rounds| *rounds > 0)
        .unwrap_or(default)
}

/// Prints the seed if the test panics, so that its schedule can be replayed.
struct SeedReport {
    test: &'static str,
    seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {:#x}: replay with NBCI_FAULT_SEED={:#x} cargo nextest run -p nbci-tests {}",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The fault-injecting proxy in front of fake-gcs-server.

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 without forwarding (an overloaded front end).
    Unavailable,
    /// Close the connection without forwarding or answering.
    ResetBefore,
    /// Forward, then close the connection without answering: the request
    /// took effect, the caller does not know.
    ResetAfter,
    /// Forward, then answer 503 instead of the real answer.
    LoseAnswer,
    /// A conditional write (`ifGenerationMatch`): forward, then answer 412,
    /// which is what the retry of a write whose answer was lost meets.
    PreconditionLost,
    /// Forward after a pause (not long enough to time out).
    Slow,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Unavailable,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::LoseAnswer,
        Fault::PreconditionLost,
        Fault::Slow,
    ];
}

/// The proxy's schedule: which requests meet which fault.
#[derive(Debug)]
struct Plan {
    rng: Rng,
    /// Chance of a fault per request, in percent.
    percent: u64,
    /// Faults left to inject; then the proxy only forwards.
    budget: usize,
    /// Whether faults are injected at all now.
    armed: bool,
    /// What was injected, for the failure message: (request, fault).
    injected: Vec<(String, Fault)>,
    requests: usize,
}

/// A proxy that forwards to fake-gcs-server and injects [`Fault`]s.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: what `STORAGE_EMULATOR_HOST` says.
    pub endpoint: String,
    plan: Arc<Mutex<Plan>>,
}

impl FaultProxy {
    /// A proxy to `upstream` injecting a fault into `percent`% of requests,
    /// `budget` at most, drawn from `seed`.
    pub async fn start(upstream: &str, seed: u64, percent: u64, budget: usize) -> Self {
        let plan = Arc::new(Mutex::new(Plan {
            rng: Rng::new(seed),
            percent,
            budget,
            armed: true,
            injected: Vec::new(),
            requests: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .build()
            .expect("client");
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = plan.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let plan = shared.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        proxy_one(request, plan.clone(), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { endpoint, plan }
    }

    /// Stops (or starts again) injecting faults.
    pub fn arm(&self, armed: bool) {
        self.plan.lock().expect("plan").armed = armed;
    }

    /// The faults injected so far, one line each.
    pub fn injected(&self) -> Vec<String> {
        self.plan
            .lock()
            .expect("plan")
            .injected
            .iter()
            .map(|(request, fault)| format!("{fault:?}: {request}"))
            .collect()
    }

    /// Requests seen, faults injected.
    pub fn counts(&self) -> (usize, usize) {
        let plan = self.plan.lock().expect("plan");
        (plan.requests, plan.injected.len())
    }
}

/// Why the proxy drops a connection (hyper then closes it without an answer).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

type ProxyBody = http_body_util::Full<bytes::Bytes>;

async fn proxy_one(
    request: hyper::Request<hyper::body::Incoming>,
    plan: Arc<Mutex<Plan>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<hyper::Response<ProxyBody>, Dropped> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let described = format!("{} {}", parts.method, path);
    let conditional = path.contains("ifGenerationMatch=");
    let fault = {
        let mut plan = plan.lock().expect("plan");
        plan.requests += 1;
        let fault = if plan.armed && plan.budget > 0 && {
            let percent = plan.percent;
            plan.rng.percent(percent)
        } {
            let kind = Fault::ALL[plan.rng.below(Fault::ALL.len() as u64) as usize];
            // A 412 is only what a conditional write's retry can meet.
            match kind {
                Fault::PreconditionLost if !conditional => Some(Fault::LoseAnswer),
                kind => Some(kind),
            }
        } else {
            None
        };
        if let Some(fault) = fault {
            plan.budget -= 1;
            plan.injected.push((described.clone(), fault));
        }
        fault
    };
    let status = |code: u16, message: &str| {
        let body = json!({"error": {"code": code, "message": message}}).to_string();
        hyper::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(ProxyBody::new(bytes::Bytes::from(body)))
            .map_err(|_| Dropped)
    };
    match fault {
        Some(Fault::Unavailable) => return status(503, "injected: service unavailable"),
        Some(Fault::ResetBefore) => return Err(Dropped),
        Some(Fault::Slow) => tokio::time::sleep(Duration::from_millis(1500)).await,
        _ => {}
    }
    let method =
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).map_err(|_| Dropped)?;
    let mut forwarded = client.request(method, format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forwarded.body(body).send().await.map_err(|_| Dropped)?;
    let code = answer.status().as_u16();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(|_| Dropped)?;
    match fault {
        Some(Fault::ResetAfter) => return Err(Dropped),
        Some(Fault::LoseAnswer) => return status(503, "injected: the answer was lost"),
        Some(Fault::PreconditionLost) if (200..300).contains(&code) => {
            return status(412, "injected: conditionNotMet (a retry met its own write)");
        }
        _ => {}
    }
    let mut response = hyper::Response::builder().status(code);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response.body(ProxyBody::new(bytes)).map_err(|_| Dropped)
}

// ---------------------------------------------------------------------------
// The Vertex AI job API, with faults.

/// What the fake job API does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFault {
    /// Answer this status and do nothing.
    Status(u16),
    /// Create the job, then answer 502 (the answer was lost on its way).
    LoseAnswer,
}

/// How the fake runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// No notebook runs: after a pause, the job writes what the runner would
    /// (executed notebook, metrics for a pipeline's evaluate step, then
    /// result.json): fast, so that many schedules fit in a test.
    Synthetic,
}

#[derive(Debug, Clone)]
struct VertexJob {
    body: Value,
    state: &'static str,
    /// The job's folder label.
    folder: String,
    /// The job record's key (`{prefix}/job.json`).
    record: String,
}

#[derive(Clone)]
pub struct FakeVertex {
    jobs: Arc<Mutex<BTreeMap<u64, VertexJob>>>,
    /// Armed faults per operation ("create", "list"), taken in order.
    faults: Arc<Mutex<BTreeMap<&'static str, Vec<JobFault>>>>,
    problems: Arc<Mutex<Vec<String>>>,
    /// The storage endpoint the jobs use, and the bucket.
    gcs_endpoint: String,
    bucket: String,
    runner: Runner,
    /// Jobs run on after the server that created them died (they live in
    /// this process), until the test ends.
    running: Arc<AtomicU64>,
}

impl FakeVertex {
    pub async fn start(gcs_endpoint: &str, bucket: &str, runner: Runner) -> (String, Self) {
        let vertex = Self {
            jobs: Arc::default(),
            faults: Arc::default(),
            problems: Arc::default(),
            gcs_endpoint: gcs_endpoint.to_owned(),
            bucket: bucket.to_owned(),
            runner,
            running: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/v1/projects/{project}/locations/{region}/customJobs",
                post(vertex_create).get(vertex_list),
            )
            .route(
                "/v1/projects/{project}/locations/{region}/customJobs/{job}",
                get(vertex_get_or_cancel).post(vertex_get_or_cancel),
            )
            .with_state(vertex.clone());
        (serve(router).await, vertex)
    }

    /// Arms `faults` for the next calls of `operation` ("create" or "list").
    pub fn inject(&self, operation: &'static str, faults: &[JobFault]) {
        self.faults
            .lock()
            .expect("faults")
            .entry(operation)
            .or_default()
            .extend_from_slice(faults);
    }

    fn take_fault(&self, operation: &'static str) -> Option<JobFault> {
        let mut faults = self.faults.lock().expect("faults");
        let queue = faults.get_mut(operation)?;
        (!queue.is_empty()).then(|| queue.remove(0))
    }

    /// Jobs created per job folder (its `job.json` key).
    pub fn jobs_per_folder(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for job in self.jobs.lock().expect("jobs").values() {
            *counts.entry(job.record.clone()).or_default() += 1;
        }
        counts
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("problems").clone()
    }

    fn set_state(&self, id: u64, state: &'static str) {
        if let Some(job) = self.jobs.lock().expect("jobs").get_mut(&id) {
            job.state = state;
        }
    }

    /// Runs job `id` whose record is `record` (a `gs://` URI).
    async fn run(self, id: u64, record: String) {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.set_state(id, "JOB_STATE_RUNNING");
        let state = match self.runner {
            Runner::Synthetic => {
                match synthetic_job(&self.gcs_endpoint, &self.bucket, &record, id).await {
                    Ok(()) => "JOB_STATE_SUCCEEDED",
                    Err(problem) => {
                        self.problems.lock().expect("problems").push(problem);
                        "JOB_STATE_FAILED"
                    }
                }
            }
        };
        self.set_state(id, state);
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a notebook of the repository under test passes.
fn notebook_passes(notebook: &str) -> bool {
    !notebook.contains("bad")
}

/// What a synthetic job writes: the executed notebook, the metrics of an
/// evaluate step, then result.json, straight to the emulator.
async fn synthetic_job(
    endpoint: &str,
    bucket: &str,
    record_key: &str,
    id: u64,
) -> Result<(), String> {
    let store = emulator_store(endpoint, bucket).await;
    let (record, _) = get_json::<JobRecord>(&store, record_key)
        .await
        .map_err(|e| format!("job {id}: {e}"))?
        .ok_or_else(|| format!("job {id}: no record at {record_key}"))?;
    let job = record.job;
    // A job takes a while: long enough for a server to die meanwhile.
    let pause = 200 + (id * 37) % 400;
    tokio::time::sleep(Duration::from_millis(pause)).await;
    store
        .put(
            &job.output_key(),
            b"{}".to_vec(),
            "application/json",
            Precondition::None,
        )
        .await
        .map_err(|e| e.to_string())?;
    if job.notebook.ends_with("evaluate.ipynb") {
        let artifacts = job
            .parameters
            .get("artifacts_dir")
            .and_then(|v| serde_json::to_value(v).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| format!("job {id}: no artifacts_dir"))?;
        let prefix = artifacts
            .strip_prefix(&format!("gs://{bucket}/"))
            .ok_or_else(|| format!("job {id}: artifacts_dir {artifacts} is not in the bucket"))?;
        store
            .put(
                &format!("{prefix}/metrics.json"),
                br#"{"accuracy": 0.93}"#.to_vec(),
                "application/json",
                Precondition::None,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let status = if notebook_passes(&job.notebook) {
        Status::Succeeded
    } else {
        Status::Failed
    };
    let outcome = Outcome::without_result(
        &job,
        status,
        "synthetic job",
        store.uri(&job.output_key()),
        "2026-12-01T00:00:00Z".into(),
    );
    store
        .put(
            &job.result_key(),
            outcome.to_json(),
            "application/json",
            Precondition::None,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A store on the emulator itself (never through the proxy).
async fn emulator_store(endpoint: &str, bucket: &str) -> GcsStore {
    let mut settings =
        nbci_shared::adapters::gcp::GcsSettings::new(bucket, Some(endpoint.to_owned()));
    settings.resumable_upload_threshold = Some(256 << 20);
    GcsStore::new(settings).await.expect("store")
}

fn vertex_job_json(id: u64, job: &VertexJob) -> Value {
    let mut body = job.body.clone();
    body["name"] = format!("projects/{PROJECT_NUMBER}/locations/{REGION}/customJobs/{id}").into();
    body["state"] = job.state.into();
    body["createTime"] = format!("2026-12-01T00:00:{:02}Z", id % 60).into();
    body
}

fn google_error(code: u16, status: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": code, "message": format!("injected {code}"), "status": status}})),
    )
        .into_response()
}

async fn vertex_create(
    State(vertex): State<FakeVertex>,
    Path((project, region)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let fault = vertex.take_fault("create");
    if let Some(JobFault::Status(code)) = fault {
        let status = if code == 429 {
            "RESOURCE_EXHAUSTED"
        } else {
            "UNAVAILABLE"
        };
        return google_error(code, status);
    }
    if (project.as_str(), region.as_str()) != (PROJECT, REGION) {
        vertex
            .problems
            .lock()
            .expect("problems")
            .push(format!("created in projects/{project}/locations/{region}"));
    }
    let args: Vec<String> = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let record = args
        .get(1)
        .and_then(|uri| uri.strip_prefix(&format!("gs://{}/", vertex.bucket)))
        .map(str::to_owned);
    let (Some(record), true) = (record, args.len() == 2 && args[0] == "runner") else {
        vertex
            .problems
            .lock()
            .expect("problems")
            .push(format!("container args {args:?} are not the contract's"));
        return google_error(400, "INVALID_ARGUMENT");
    };
    let folder = body["labels"]["nbci_job"].as_str().unwrap_or("").to_owned();
    let (id, job) = {
        let mut jobs = vertex.jobs.lock().expect("jobs");
        let id = jobs.len() as u64 + 1;
        let job = VertexJob {
            body: body.clone(),
            state: "JOB_STATE_PENDING",
            folder,
            record: record.clone(),
        };
        jobs.insert(id, job.clone());
        (id, job)
    };
    tokio::spawn(vertex.clone().run(id, record));
    if fault == Some(JobFault::LoseAnswer) {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    axum::Json(vertex_job_json(id, &job)).into_response()
}

async fn vertex_list(
    State(vertex): State<FakeVertex>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(JobFault::Status(code)) = vertex.take_fault("list") {
        return google_error(code, "UNAVAILABLE");
    }
    // `labels.nbci_job="..."`, as the executor filters.
    let wanted = query
        .get("filter")
        .and_then(|f| f.split_once('"'))
        .map(|(_, rest)| rest.trim_end_matches('"').to_owned());
    let jobs = vertex.jobs.lock().expect("jobs");
    let found: Vec<Value> = jobs
        .iter()
        .filter(|(_, job)| wanted.as_ref().is_none_or(|w| &job.folder == w))
        .map(|(id, job)| vertex_job_json(*id, job))
        .collect();
    axum::Json(json!({"customJobs": found})).into_response()
}

async fn vertex_get_or_cancel(
    State(vertex): State<FakeVertex>,
    Path((_, _, job)): Path<(String, String, String)>,
) -> Response {
    let (id, cancel) = match job.strip_suffix(":cancel") {
        Some(id) => (id, true),
        None => (job.as_str(), false),
    };
    let mut jobs = vertex.jobs.lock().expect("jobs");
    match id
        .parse::<u64>()
        .ok()
        .and_then(|id| jobs.get_mut(&id).map(|j| (id, j)))
    {
        Some((id, job)) => {
            if cancel {
                job.state = "JOB_STATE_CANCELLED";
                return axum::Json(json!({})).into_response();
            }
            axum::Json(vertex_job_json(id, job)).into_response()
        }
        None => google_error(404, "NOT_FOUND"),
    }
}

// ---------------------------------------------------------------------------
// AI Platform Prediction (ml v1), enough of it for a deployment.

#[derive(Debug, Default)]
struct MlState {
    models: BTreeMap<String, Option<String>>,
    /// Versions by name: (deployment URI, state).
    versions: BTreeMap<String, (String, &'static str)>,
    /// Every versions.create that created a version, by version name.
    created: BTreeMap<String, usize>,
    /// Operations by id: the version they create.
    operations: BTreeMap<u64, String>,
    set_default: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeMl {
    state: Arc<Mutex<MlState>>,
}

impl FakeMl {
    pub async fn start() -> (String, Self) {
        let ml = Self::default();
        let router = Router::new()
            .route("/v1/projects/{project}/models", post(ml_create_model))
            .route("/v1/projects/{project}/models/{model}", get(ml_get_model))
            .route(
                "/v1/projects/{project}/models/{model}/versions",
                post(ml_create_version),
            )
            .route(
                "/v1/projects/{project}/models/{model}/versions/{version}",
                get(ml_get_version).post(ml_set_default),
            )
            .route(
                "/v1/projects/{project}/operations/{operation}",
                get(ml_get_operation),
            )
            .with_state(ml.clone());
        (serve(router).await, ml)
    }

    /// Versions created, by name, with how many creates made each (one, if
    /// nothing was deployed twice).
    pub fn versions_created(&self) -> BTreeMap<String, usize> {
        self.state.lock().expect("ml").created.clone()
    }

    pub fn default_version(&self) -> Option<String> {
        self.state
            .lock()
            .expect("ml")
            .models
            .get(MODEL)
            .cloned()
            .flatten()
    }
}

async fn ml_create_model(
    State(ml): State<FakeMl>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let name = body["name"].as_str().unwrap_or("").to_owned();
    let mut state = ml.state.lock().expect("ml");
    if state.models.contains_key(&name) {
        return google_error(409, "ALREADY_EXISTS");
    }
    state.models.insert(name.clone(), None);
    axum::Json(json!({"name": format!("projects/{PROJECT}/models/{name}")})).into_response()
}

async fn ml_get_model(
    State(ml): State<FakeMl>,
    Path((_, model)): Path<(String, String)>,
) -> Response {
    let state = ml.state.lock().expect("ml");
    match state.models.get(&model) {
        None => google_error(404, "NOT_FOUND"),
        Some(default) => {
            let mut body = json!({"name": format!("projects/{PROJECT}/models/{model}")});
            if let Some(version) = default {
                body["defaultVersion"] = json!({"name": format!("projects/{PROJECT}/models/{model}/versions/{version}")});
            }
            axum::Json(body).into_response()
        }
    }
}

async fn ml_create_version(
    State(ml): State<FakeMl>,
    Path((_, model)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let name = body["name"].as_str().unwrap_or("").to_owned();
    let uri = body["deploymentUri"].as_str().unwrap_or("").to_owned();
    let mut state = ml.state.lock().expect("ml");
    if !state.models.contains_key(&model) {
        return google_error(404, "NOT_FOUND");
    }
    if state.versions.contains_key(&name) {
        return google_error(409, "ALREADY_EXISTS");
    }
    state.versions.insert(name.clone(), (uri, "CREATING"));
    *state.created.entry(name.clone()).or_default() += 1;
    let id = state.operations.len() as u64 + 1;
    state.operations.insert(id, name);
    axum::Json(json!({"name": format!("projects/{PROJECT}/operations/create_{id}"), "done": false}))
        .into_response()
}

async fn ml_get_operation(
    State(ml): State<FakeMl>,
    Path((_, operation)): Path<(String, String)>,
) -> Response {
    let mut state = ml.state.lock().expect("ml");
    let id = operation
        .strip_prefix("create_")
        .and_then(|id| id.parse::<u64>().ok());
    let Some(version) = id.and_then(|id| state.operations.get(&id).cloned()) else {
        return google_error(404, "NOT_FOUND");
    };
    if let Some(entry) = state.versions.get_mut(&version) {
        entry.1 = "READY";
    }
    axum::Json(json!({"name": format!("projects/{PROJECT}/operations/{operation}"), "done": true, "response": {}}))
        .into_response()
}

async fn ml_get_version(
    State(ml): State<FakeMl>,
    Path((_, model, version)): Path<(String, String, String)>,
) -> Response {
    let state = ml.state.lock().expect("ml");
    match state.versions.get(&version) {
        None => google_error(404, "NOT_FOUND"),
        Some((uri, status)) => axum::Json(json!({
            "name": format!("projects/{PROJECT}/models/{model}/versions/{version}"),
            "deploymentUri": uri, "state": status}))
        .into_response(),
    }
}

async fn ml_set_default(
    State(ml): State<FakeMl>,
    Path((_, model, version)): Path<(String, String, String)>,
) -> Response {
    let Some(version) = version.strip_suffix(":setDefault") else {
        return google_error(404, "NOT_FOUND");
    };
    let mut state = ml.state.lock().expect("ml");
    if !state.versions.contains_key(version) {
        return google_error(404, "NOT_FOUND");
    }
    state.models.insert(model, Some(version.to_owned()));
    state.set_default.push(version.to_owned());
    axum::Json(json!({"name": version})).into_response()
}

// ---------------------------------------------------------------------------
// Eventarc: finalize events of results, duplicated, reordered, redelivered.

/// Delivers the finalize event of every `result.json` that lands in the
/// bucket to `nbci serve`'s `/events`: each one to three times, in a random
/// shape, after a random pause, and again until one copy is acknowledged.
pub struct Eventarc {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    /// Deliveries sent, and how many were answered 2xx.
    pub sent: Arc<AtomicU64>,
    pub acknowledged: Arc<AtomicU64>,
}

impl Eventarc {
    /// Watches `gcs`'s bucket (directly, never through a proxy) and
    /// delivers to `target()` (read anew for each delivery: the server moves
    /// when it restarts).
    pub fn start(gcs: &FakeGcs, target: Arc<Mutex<String>>, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let endpoint = gcs.endpoint.clone();
        let bucket = gcs.bucket.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            let sent = sent.clone();
            let acknowledged = acknowledged.clone();
            async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                let mut rng = Rng::new(seed);
                let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
                while !stop.load(Ordering::SeqCst) {
                    for object in list_objects(&http, &endpoint, &bucket).await {
                        let name = object["name"].as_str().unwrap_or("").to_owned();
                        let generation = object["generation"].as_str().unwrap_or("").to_owned();
                        if !name.ends_with("/result.json") || !seen.insert((name, generation)) {
                            continue;
                        }
                        let copies = 1 + rng.below(3);
                        for _ in 0..copies {
                            let shape = [
                                deliveries::Shape::Binary,
                                deliveries::Shape::Structured,
                                deliveries::Shape::Push,
                            ][rng.below(3) as usize];
                            let delivery = deliveries::finalized(shape, &object);
                            let pause = rng.millis(0, 400);
                            tokio::spawn(deliver_until_acknowledged(
                                http.clone(),
                                target.clone(),
                                delivery,
                                pause,
                                stop.clone(),
                                sent.clone(),
                                acknowledged.clone(),
                            ));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        });
        Self {
            stop,
            task,
            sent,
            acknowledged,
        }
    }
}

impl Drop for Eventarc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Every object in the bucket, as the JSON API lists them.
async fn list_objects(http: &reqwest::Client, endpoint: &str, bucket: &str) -> Vec<Value> {
    let url = format!("{endpoint}/storage/v1/b/{bucket}/o");
    let Ok(answer) = http.get(&url).send().await else {
        return Vec::new();
    };
    let Ok(page) = answer.json::<Value>().await else {
        return Vec::new();
    };
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn deliver_until_acknowledged(
    http: reqwest::Client,
    target: Arc<Mutex<String>>,
    delivery: deliveries::Delivery,
    pause: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    acknowledged: Arc<AtomicU64>,
) {
    tokio::time::sleep(pause).await;
    while !stop.load(Ordering::SeqCst) {
        let url = format!("{}/events", target.lock().expect("target"));
        let mut request = http.post(url).body(delivery.body.clone());
        for (name, value) in &delivery.headers {
            request = request.header(name.as_str(), value.as_slice());
        }
        sent.fetch_add(1, Ordering::SeqCst);
        if let Ok(answer) = request.send().await
            && answer.status().is_success()
        {
            acknowledged.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Eventarc backs off; a short one keeps the test quick.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------------------
// The repository under test: two checked notebooks (one fails) and a
// three-step pipeline on master, deployed to AI Platform.

fn notebook(parameters: Option<&str>, cells: &[&str]) -> Vec<u8> {
    let mut all = Vec::new();
    if let Some(parameters) = parameters {
        all.push(
            json!({"cell_type": "code", "execution_count": null, "outputs": [],
            "metadata": {"tags": ["parameters"]}, "source": parameters}),
        );
    }
    for source in cells {
        all.push(
            json!({"cell_type": "code", "execution_count": null, "outputs": [],
            "metadata": {}, "source": source}),
        );
    }
    serde_json::to_vec_pretty(&json!({"nbformat": 4, "nbformat_minor": 5, "cells": all,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))
    .expect("json")
}

const SPEC: &str = "pipelines:\n  model:\n    branch: master\n    steps:\n      - notebook: pipe/prepare.ipynb\n      - notebook: pipe/train.ipynb\n      - notebook: pipe/evaluate.ipynb\n    gate:\n      metrics: {accuracy: \">= 0.5\"}\n    deploy:\n      target: ai-platform\n      model: scorer\n      framework: SCIKIT_LEARN\n      runtime_version: \"2.11\"\n      python_version: \"3.7\"\n      set_default: true\n";

/// The evaluate step writes metrics.json into `artifacts_dir` (a gs://
/// folder) with the JSON API of the emulator, which the job finds in
/// `NBCI_TEST_GCS` (a real job would use its client library).
const EVALUATE: &str = r#"import json, os, urllib.parse, urllib.request
bucket, folder = artifacts_dir[len('gs://'):].split('/', 1)
name = urllib.parse.quote(folder + '/metrics.json', safe='')
url = f"{os.environ['NBCI_TEST_GCS']}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
request = urllib.request.Request(url, data=json.dumps({'accuracy': 0.93}).encode(), method='POST', headers={'Content-Type': 'application/json'})
urllib.request.urlopen(request).read()"#;

/// Changed files as the compare API lists them: (path, status).
type Changed = Vec<(&'static str, &'static str)>;
/// A commit's files: (path, contents).
type Tree = Vec<(&'static str, Vec<u8>)>;

/// The checked notebooks, and the whole tree.
fn repository() -> (Changed, Tree) {
    let parameters = "run_id = 'none'\nartifacts_dir = 'gs://nowhere/x'";
    let changed = vec![("nb/good.ipynb", "modified"), ("nb/bad.ipynb", "added")];
    let tree = vec![
        (
            "nb/good.ipynb",
            notebook(None, &["x = 21 * 2", "assert x == 42"]),
        ),
        (
            "nb/bad.ipynb",
            notebook(
                None,
                &[
                    "import math",
                    "raise ValueError('the model is not good enough')",
                ],
            ),
        ),
        (
            "pipe/prepare.ipynb",
            notebook(Some(parameters), &["print(run_id)"]),
        ),
        (
            "pipe/train.ipynb",
            notebook(Some(parameters), &["print('training', run_id)"]),
        ),
        (
            "pipe/evaluate.ipynb",
            notebook(Some(parameters), &[EVALUATE]),
        ),
        ("nbci.yaml", SPEC.as_bytes().to_vec()),
    ];
    (changed, tree)
}

fn push_payload(sha: &str) -> Value {
    let text = std::fs::read_to_string(
        super::common::workspace().join("tests/fixtures/github/push.branch.json"),
    )
    .expect("fixture");
    let mut push: Value = serde_json::from_str(&text).expect("json");
    push["after"] = sha.into();
    push
}

// ---------------------------------------------------------------------------
// `nbci serve` as the whole cloud system.

/// Everything outside the server, and the server (when it runs).
struct System {
    gcs: FakeGcs,
    proxy: Option<FaultProxy>,
    github: FakeGitHub,
    vertex: FakeVertex,
    ml: FakeMl,
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
    log: PathBuf,
    server: Option<tokio::process::Child>,
    /// Where the server listens now (Eventarc reads it for every delivery).
    url: Arc<Mutex<String>>,
    store: GcsStore,
}

impl System {
    /// The fakes, a proxy in front of the emulator when `proxy` gives a
    /// seed, percentage and budget, and the server's environment.
    async fn new(runner: Runner, proxy: Option<(u64, u64, usize)>) -> Self {
        let gcs = FakeGcs::start().await;
        let proxy = match proxy {
            Some((seed, percent, budget)) => {
                Some(FaultProxy::start(&gcs.endpoint, seed, percent, budget).await)
            }
            None => None,
        };
        let storage = proxy
            .as_ref()
            .map_or_else(|| gcs.endpoint.clone(), |p| p.endpoint.clone());
        let metadata = fake_metadata().await;
        let (vertex_address, vertex) = FakeVertex::start(&gcs.endpoint, &gcs.bucket, runner).await;
        let (ml_address, ml) = FakeMl::start().await;
        let (changed, tree) = repository();
        let github = FakeGitHub::start_for_any_commit(&changed, &tree).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let env = vec![
            ("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
            ("GITHUB_APP_ID", APP_ID.to_owned()),
            ("GITHUB_APP_PRIVATE_KEY", private_key_pem()),
            ("GITHUB_API_URL", github.uri()),
            ("NBCI_BUCKET", format!("gs://{}", gcs.bucket)),
            ("STORAGE_EMULATOR_HOST", storage),
            ("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned()),
            ("NBCI_REGION", REGION.to_owned()),
            ("NBCI_EXECUTOR", "vertex".to_owned()),
            ("NBCI_RUNNER_IMAGE", RUNNER_IMAGE.to_owned()),
            ("NBCI_VERTEX_ENDPOINT", format!("http://{vertex_address}")),
            ("NBCI_ML_ENDPOINT", format!("http://{ml_address}")),
            ("GCE_METADATA_HOST", metadata),
            ("NBCI_PUBLIC_URL", "https://nbci.example.com".to_owned()),
            (
                "NBCI_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("NBCI_RETRY_MAX", "1s".to_owned()),
            ("NBCI_LEASE_TTL", "3s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        let store = emulator_store(&gcs.endpoint, &gcs.bucket).await;
        let log = dir.path().join("serve.log");
        Self {
            gcs,
            proxy,
            github,
            vertex,
            ml,
            env,
            dir,
            log,
            server: None,
            url: Arc::new(Mutex::new(String::from("http://127.0.0.1:9"))),
            store,
        }
    }

    /// Starts `nbci serve` and waits until it answers.
    async fn start(&mut self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut command = tokio::process::Command::new(nbci_binary());
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let child = command.spawn().expect("nbci serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = reqwest::get(format!("{url}/healthz")).await
                && answer.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nbci serve never answered /healthz\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *self.url.lock().expect("url") = url;
        self.server = Some(child);
    }

    /// SIGKILL: no drain, no goodbye.
    async fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill().await;
        }
    }

    fn url(&self) -> String {
        self.url.lock().expect("url").clone()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Cloud Scheduler's tick (its failures only mean: tick again later).
    async fn tick(&self) {
        let _ = reqwest::Client::new()
            .post(format!("{}/tick", self.url()))
            .body("{}")
            .timeout(Duration::from_secs(30))
            .send()
            .await;
    }

    /// Waits, ticking, until the run for `sha` is over: both checks
    /// completed and the pipeline run finished.
    async fn settle(&self, sha: &str, seconds: u64, context: &dyn Fn() -> String) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let snapshot = self.snapshot(sha).await;
            if snapshot.is_over() {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "the run of {sha} never ended: {snapshot:#?}\nproblems: {:?} {:?}\n{}\nlog:\n{}",
                self.github.problems(),
                self.vertex.problems(),
                context(),
                self.log_tail()
            );
            self.tick().await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }

    /// What the world says about the run of `sha`.
    async fn snapshot(&self, sha: &str) -> Snapshot {
        let mut checks: BTreeMap<String, Vec<CheckRunView>> = BTreeMap::new();
        for run in self.github.runs().into_values() {
            if run["head_sha"] != sha {
                continue;
            }
            checks
                .entry(run["name"].as_str().unwrap_or("").to_owned())
                .or_default()
                .push(CheckRunView {
                    status: run["status"].as_str().unwrap_or("").to_owned(),
                    conclusion: run["conclusion"].as_str().map(str::to_owned),
                    title: run["output"]["title"].as_str().map(str::to_owned),
                });
        }
        let mut phases = BTreeMap::new();
        for (notebook, _) in repository().0 {
            let key = format!("ci/{OWNER}/{REPO}/{sha}/{notebook}/check.json");
            let phase = get_json::<Value>(&self.store, &key)
                .await
                .ok()
                .flatten()
                .and_then(|(state, _)| state["phase"].as_str().map(str::to_owned));
            phases.insert(notebook.to_owned(), phase);
        }
        let mut pipeline = Vec::new();
        let prefix = format!("pipelines/{PIPELINE}/runs/");
        for key in self.store.list(&prefix).await.unwrap_or_default() {
            if !key.ends_with("/state.json") || key.contains("/steps/") {
                continue;
            }
            if let Ok(Some((run, _))) =
                get_json::<nbci_shared::domain::pipeline::PipelineRun>(&self.store, &key).await
                && run.commit == sha
            {
                pipeline.push(PipelineView {
                    phase: format!("{:?}", run.phase),
                    steps: run
                        .steps
                        .iter()
                        .map(|s| s.outcome.map(|o| o.to_string()))
                        .collect(),
                    gate_passed: run.gate.as_ref().map(|g| g.passed),
                    version: run.deploy.as_ref().map(|d| d.version.clone()),
                    prefix: run.prefix.clone(),
                });
            }
        }
        Snapshot {
            checks,
            phases,
            pipeline,
        }
    }

    /// The promises, for the run of `sha`: one check run per notebook, each
    /// completed by exactly one PATCH (also when a process was killed, or the
    /// bucket failed, between completing it and recording that it did); one
    /// job per notebook and pipeline step; one pipeline run; one model
    /// version, created once.
    async fn assert_promises(&self, sha: &str, snapshot: &Snapshot) {
        for (name, runs) in &snapshot.checks {
            assert_eq!(
                runs.len(),
                1,
                "{name} has {} check runs: {runs:#?}",
                runs.len()
            );
        }
        let ids: BTreeSet<u64> = self
            .github
            .runs()
            .iter()
            .filter(|(_, run)| run["head_sha"] == sha)
            .map(|(id, _)| *id)
            .collect();
        let mut completions: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
        for call in self.github.check_calls() {
            if call.method == "PATCH"
                && call.body["status"] == "completed"
                && ids.contains(&call.id)
            {
                let said = json!([call.body["conclusion"], call.body["output"]["title"]]);
                completions.entry(call.id).or_default().push(said);
            }
        }
        for id in &ids {
            let said = completions.get(id).cloned().unwrap_or_default();
            assert!(
                said.len() == 1,
                "check run {id} was completed {} times ({said:?}): {:#?}",
                said.len(),
                self.github.runs().get(id)
            );
        }
        let jobs = self.vertex.jobs_per_folder();
        let ours: BTreeMap<&String, &usize> = jobs
            .iter()
            .filter(|(record, _)| {
                record.starts_with(&format!("ci/{OWNER}/{REPO}/{sha}/"))
                    || snapshot
                        .pipeline
                        .iter()
                        .any(|run| record.starts_with(&format!("{}/", run.prefix)))
            })
            .collect();
        assert!(
            ours.values().all(|n| **n == 1),
            "a folder got more than one job: {ours:#?}"
        );
        let expected_jobs = repository().0.len() + 3;
        assert_eq!(
            ours.len(),
            expected_jobs,
            "one job per notebook and step: {ours:#?}"
        );
        assert_eq!(
            snapshot.pipeline.len(),
            1,
            "one pipeline run: {:#?}",
            snapshot.pipeline
        );
        if let Some(version) = &snapshot.pipeline[0].version {
            assert_eq!(
                self.ml.versions_created().get(version),
                Some(&1),
                "version {version} created once: {:?}",
                self.ml.versions_created()
            );
        }
        assert!(
            self.github.problems().is_empty(),
            "{:?}",
            self.github.problems()
        );
        assert!(
            self.vertex.problems().is_empty(),
            "{:?}",
            self.vertex.problems()
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckRunView {
    status: String,
    conclusion: Option<String>,
    title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PipelineView {
    phase: String,
    steps: Vec<Option<String>>,
    gate_passed: Option<bool>,
    /// Differ from run to run (they name the run); not compared.
    version: Option<String>,
    prefix: String,
}

/// The final state of one commit's CI and pipeline runs.
#[derive(Debug, Clone)]
struct Snapshot {
    checks: BTreeMap<String, Vec<CheckRunView>>,
    /// check.json's phase per notebook.
    phases: BTreeMap<String, Option<String>>,
    pipeline: Vec<PipelineView>,
}

/// A snapshot's checks by notebook, run phases, and deployed versions: what
/// must not differ from an undisturbed run.
type Comparable = (
    BTreeMap<String, Vec<CheckRunView>>,
    BTreeMap<String, Option<String>>,
    Vec<(String, Vec<Option<String>>, Option<bool>)>,
);

impl Snapshot {
    fn is_over(&self) -> bool {
        let checked = repository().0.len();
        self.checks.len() == checked
            && self
                .checks
                .values()
                .flatten()
                .all(|r| r.status == "completed")
            && self
                .phases
                .values()
                .all(|p| p.as_deref() == Some("completed"))
            && !self.pipeline.is_empty()
            && self.pipeline.iter().all(|run| {
                matches!(
                    run.phase.as_str(),
                    "Deployed" | "Completed" | "GateRejected" | "Failed"
                )
            })
    }

    /// What must be the same as an undisturbed run's: everything but the
    /// names that differ from run to run.
    fn comparable(&self) -> Comparable {
        (
            self.checks.clone(),
            self.phases.clone(),
            self.pipeline
                .iter()
                .map(|run| (run.phase.clone(), run.steps.clone(), run.gate_passed))
                .collect(),
        )
    }
}

fn sha_of_round(round: usize) -> String {
    format!("{:040x}", 0xfa17_0000_u64 + round as u64)
}

/// Sends a signed push webhook for `sha` to whoever listens at `url` now,
/// again until it is taken (as GitHub's redelivery would, with the same
/// delivery id).
async fn push_until_taken(url: Arc<Mutex<String>>, sha: String, delivery: String) -> u16 {
    let body = serde_json::to_vec(&push_payload(&sha)).expect("json");
    let signature = nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let target = url.lock().expect("url").clone();
        let answer = reqwest::Client::new()
            .post(format!("{target}/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", &delivery)
            .header("X-Hub-Signature-256", &signature)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
        {
            return answer.status().as_u16();
        }
        assert!(
            Instant::now() < deadline,
            "the push of {sha} was never taken"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs the push of round `round` with nothing disturbed but Eventarc's
/// duplicates: the final state every disturbed round must reach.
async fn undisturbed(system: &System, round: usize) -> Snapshot {
    let sha = sha_of_round(round);
    push_until_taken(system.url.clone(), sha.clone(), format!("push-{round}")).await;
    let snapshot = system.settle(&sha, 60, &String::new).await;
    system.assert_promises(&sha, &snapshot).await;
    let (checks, _, pipeline) = snapshot.comparable();
    assert_eq!(
        checks
            .get("nbci / nb/good.ipynb")
            .and_then(|r| r[0].conclusion.clone()),
        Some("success".into())
    );
    assert_eq!(
        checks
            .get("nbci / nb/bad.ipynb")
            .and_then(|r| r[0].conclusion.clone()),
        Some("failure".into())
    );
    assert_eq!(pipeline[0].0, "Deployed", "{snapshot:#?}");
    snapshot
}

fn assert_same_final_state(round: usize, baseline: &Snapshot, snapshot: &Snapshot) {
    assert_eq!(
        snapshot.comparable(),
        baseline.comparable(),
        "round {round} ended otherwise than the undisturbed run:\n{snapshot:#?}\nundisturbed:\n{baseline:#?}"
    );
}

/// Cloud Storage failing under the real services (the proxy: 503s, resets
/// before and after forwarding, 412s met by retried conditional writes,
/// slow answers) during a full CI run and a pipeline run, with real jobs
/// (`nbci runner`) and duplicated, reordered finalize events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_during_a_ci_run_and_a_pipeline_run_change_no_outcome() {
    let seed = seed();
    let _report = SeedReport {
        test: "storage_faults_during_a_ci_run_and_a_pipeline_run_change_no_outcome",
        seed,
    };
    // Synthetic jobs: the jobs write to the emulator directly (a real
    // runner would too), so the faults meet the services' own storage calls;
    // real papermill jobs made the test too slow for `make test` on 2 cores.
    let mut system = System::new(Runner::Synthetic, Some((seed, 12, 120))).await;
    let proxy = system.proxy.take().expect("proxy");
    proxy.arm(false);
    system.start().await;
    let _eventarc = Eventarc::start(&system.gcs, system.url.clone(), seed);
    let baseline = undisturbed(&system, 0).await;

    proxy.arm(true);
    let sha = sha_of_round(1);
    push_until_taken(system.url.clone(), sha.clone(), "push-1".into()).await;
    let injected = || format!("faults injected: {:#?}", proxy.injected());
    let snapshot = system.settle(&sha, 150, &injected).await;
    let (requests, faults) = proxy.counts();
    assert!(faults >= 10, "only {faults} faults in {requests} requests");
    system.assert_promises(&sha, &snapshot).await;
    assert_same_final_state(1, &baseline, &snapshot);
    assert_eq!(system.ml.default_version(), snapshot.pipeline[0].version);
    system.kill().await;
}

/// The job API answering 429 and 503 to creates and lists, and losing the
/// answers of creates (the job is created, the answer is a 502): still one
/// job per notebook and per pipeline step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_api_refusing_and_losing_answers_starts_one_job_per_folder() {
    let seed = seed();
    let _report = SeedReport {
        test: "the_job_api_refusing_and_losing_answers_starts_one_job_per_folder",
        seed,
    };
    let mut system = System::new(Runner::Synthetic, None).await;
    system.start().await;
    let _eventarc = Eventarc::start(&system.gcs, system.url.clone(), seed);
    let baseline = undisturbed(&system, 0).await;

    let mut rng = Rng::new(seed);
    let mut creates = Vec::new();
    for _ in 0..10 {
        creates.push(match rng.below(4) {
            0 => JobFault::Status(429),
            1 => JobFault::Status(503),
            _ => JobFault::LoseAnswer,
        });
    }
    system.vertex.inject("create", &creates);
    system.vertex.inject(
        "list",
        &[
            JobFault::Status(503),
            JobFault::Status(429),
            JobFault::Status(503),
        ],
    );
    let sha = sha_of_round(1);
    push_until_taken(system.url.clone(), sha.clone(), "push-1".into()).await;
    let faults = format!("create faults: {creates:?}");
    let snapshot = system.settle(&sha, 90, &|| faults.clone()).await;
    system.assert_promises(&sha, &snapshot).await;
    assert_same_final_state(1, &baseline, &snapshot);
    system.kill().await;
}

/// `nbci serve` SIGKILLed at random points of a CI run and a pipeline run
/// (a push starts both), several times per round, and started again: each
/// round ends as the undisturbed one did, one job per notebook and step,
/// every check run completed once, one model version per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_and_restarted_ends_as_an_undisturbed_run() {
    let rounds = rounds(2);
    let seed = seed();
    let _report = SeedReport {
        test: "killed_at_random_points_and_restarted_ends_as_an_undisturbed_run",
        seed,
    };
    let mut system = System::new(Runner::Synthetic, None).await;
    system.start().await;
    let eventarc = Eventarc::start(&system.gcs, system.url.clone(), seed);
    let baseline = undisturbed(&system, 0).await;

    let mut rng = Rng::new(seed);
    for round in 1..=rounds {
        let sha = sha_of_round(round);
        let push = tokio::spawn(push_until_taken(
            system.url.clone(),
            sha.clone(),
            format!("push-{round}"),
        ));
        let mut kills = Vec::new();
        for _ in 0..(1 + rng.below(3)) {
            let after = rng.millis(0, 1800);
            tokio::time::sleep(after).await;
            system.kill().await;
            kills.push(after);
            system.start().await;
        }
        push.await.expect("the push task");
        let context = || {
            format!(
                "round {round}: killed after {kills:?}; finalize events sent {}, acknowledged {}",
                eventarc.sent.load(Ordering::SeqCst),
                eventarc.acknowledged.load(Ordering::SeqCst)
            )
        };
        let snapshot = system.settle(&sha, 90, &context).await;
        system.assert_promises(&sha, &snapshot).await;
        assert_same_final_state(round, &baseline, &snapshot);
    }
    system.kill().await;
}
