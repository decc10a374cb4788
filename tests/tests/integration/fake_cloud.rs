//! The Google Cloud side of the cloud loop, faked on 127.0.0.1: a metadata
//! server that hands out access tokens, a Vertex-AI-shaped CustomJob API
//! (which runs each job's container arguments with the local `nbci`, or only
//! records them), the service binaries as child processes, and Eventarc's
//! finalize events. Shared by the `cloud_loop` tests and the `latency`
//! benchmark (tests/benches/latency.rs), which includes this file by path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::common::nbci_binary;
use super::fake_gcs::FakeGcs;

pub const PROJECT: &str = "demo-project";
pub const PROJECT_NUMBER: &str = "123456789012";
pub const REGION: &str = "us-central1";
pub const RUNNER_IMAGE: &str = "us-docker.pkg.dev/demo-project/nbci/runner:test";
pub const TOKEN: &str = "ya29.fake-access-token";

pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("127.0.0.1:{}", address.port())
}

/// The metadata server: access tokens for `Metadata-Flavor: Google` requests.
pub async fn fake_metadata() -> String {
    serve(Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/token",
        get(|headers: HeaderMap| async move {
            if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                return (StatusCode::FORBIDDEN, "Metadata-Flavor missing").into_response();
            }
            (
                [("metadata-flavor", "Google")],
                axum::Json(
                    json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
                ),
            )
                .into_response()
        }),
    ))
    .await
}

/// One CustomJob as the fake Vertex AI holds it.
#[derive(Debug, Clone)]
pub struct FakeJob {
    pub body: Value,
    pub state: &'static str,
    pub error: Option<String>,
    /// When the create request was received (its body read).
    #[allow(dead_code)] // read by the latency benchmark
    pub created: Instant,
}

impl FakeJob {
    /// The job's second container argument: `gs://BUCKET/PREFIX/job.json`.
    #[allow(dead_code)] // for the latency benchmark
    pub fn record_uri(&self) -> &str {
        self.body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"][1]
            .as_str()
            .unwrap_or("")
    }
}

#[derive(Clone)]
pub struct Vertex {
    pub jobs: Arc<Mutex<BTreeMap<u64, FakeJob>>>,
    pub problems: Arc<Mutex<Vec<String>>>,
    gcs_endpoint: String,
    /// Where each job's runner writes its log (`runner-{id}.log`).
    logs: PathBuf,
    /// Whether a created job runs (`nbci runner`) or only stays pending,
    /// for a caller that plays the runner itself.
    run_jobs: bool,
}

impl Vertex {
    /// The jobs created so far, by id (1, 2, ...).
    pub fn jobs(&self) -> BTreeMap<u64, FakeJob> {
        self.jobs.lock().expect("lock").clone()
    }
}

fn job_name(id: u64) -> String {
    format!("projects/{PROJECT_NUMBER}/locations/{REGION}/customJobs/{id}")
}

fn job_json(id: u64, job: &FakeJob) -> Value {
    let mut body = job.body.clone();
    body["name"] = job_name(id).into();
    body["state"] = job.state.into();
    if let Some(message) = &job.error {
        body["error"] = json!({"code": 13, "message": message});
    }
    body
}

async fn create_job(
    State(vertex): State<Vertex>,
    Path((project, region)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> impl IntoResponse {
    let created = Instant::now();
    let mut problems = Vec::new();
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        problems.push("a CustomJob without the metadata server's token".to_owned());
    }
    if (project.as_str(), region.as_str()) != (PROJECT, REGION) {
        problems.push(format!("created in projects/{project}/locations/{region}"));
    }
    let spec = &body["jobSpec"]["workerPoolSpecs"][0];
    let args: Vec<String> = spec["containerSpec"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let valid_args = args.len() == 2
        && args[0] == "runner"
        && (args[1].starts_with("gs://nbci-test/ci/")
            || args[1].starts_with("gs://nbci-test/pipelines/"))
        && args[1].ends_with("/job.json");
    if !valid_args {
        problems.push(format!("container args {args:?} are not the contract's"));
    }
    if spec["containerSpec"]["imageUri"] != RUNNER_IMAGE || spec["replicaCount"] != "1" {
        problems.push(format!("worker pool {spec}"));
    }
    vertex.problems.lock().expect("lock").extend(problems);
    let id = {
        let mut jobs = vertex.jobs.lock().expect("lock");
        let id = jobs.len() as u64 + 1;
        jobs.insert(
            id,
            FakeJob {
                body: body.clone(),
                state: "JOB_STATE_PENDING",
                error: None,
                created,
            },
        );
        id
    };
    // A job whose notebook path says "lost" dies before it writes anything.
    let lost = args.get(1).is_some_and(|uri| uri.contains("lost"));
    let runner = vertex.clone();
    tokio::spawn(async move {
        if !runner.run_jobs {
            return;
        }
        if lost {
            let mut jobs = runner.jobs.lock().expect("lock");
            if let Some(job) = jobs.get_mut(&id) {
                job.state = "JOB_STATE_FAILED";
                job.error = Some("The replica workerpool0-0 exited with a non-zero status of 1: image pull failed".into());
            }
            return;
        }
        if let Some(job) = runner.jobs.lock().expect("lock").get_mut(&id) {
            job.state = "JOB_STATE_RUNNING";
        }
        // Exactly the container's arguments, with the image's entrypoint.
        let log = std::fs::File::create(runner.logs.join(format!("runner-{id}.log")))
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::null());
        let status = tokio::process::Command::new(nbci_binary())
            .args(&args)
            .env("STORAGE_EMULATOR_HOST", &runner.gcs_endpoint)
            .env_remove("NBCI_BUCKET")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .status()
            .await;
        let mut jobs = runner.jobs.lock().expect("lock");
        if let Some(job) = jobs.get_mut(&id) {
            // The runner exits 1 for a failed notebook: the job still ran.
            job.state = match status.map(|s| s.code()) {
                Ok(Some(0 | 1 | 3)) => "JOB_STATE_SUCCEEDED",
                _ => "JOB_STATE_FAILED",
            };
        }
    });
    let job = vertex
        .jobs
        .lock()
        .expect("lock")
        .get(&id)
        .cloned()
        .expect("job");
    axum::Json(job_json(id, &job))
}

async fn list_jobs(State(vertex): State<Vertex>) -> impl IntoResponse {
    let jobs = vertex.jobs.lock().expect("lock");
    let all: Vec<Value> = jobs.iter().map(|(id, job)| job_json(*id, job)).collect();
    axum::Json(json!({"customJobs": all}))
}

async fn get_or_cancel(
    State(vertex): State<Vertex>,
    Path((_, _, job)): Path<(String, String, String)>,
) -> impl IntoResponse {
    let (id, cancel) = match job.strip_suffix(":cancel") {
        Some(id) => (id, true),
        None => (job.as_str(), false),
    };
    let Ok(id) = id.parse::<u64>() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}),
            ),
        )
            .into_response();
    };
    let mut jobs = vertex.jobs.lock().expect("lock");
    match jobs.get_mut(&id) {
        Some(job) => {
            if cancel {
                job.state = "JOB_STATE_CANCELLED";
                return axum::Json(json!({})).into_response();
            }
            axum::Json(job_json(id, job)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}),
            ),
        )
            .into_response(),
    }
}

/// The fake Vertex AI on a free port: its `host:port` and its journal. With
/// `run_jobs`, each job runs `nbci` with its container arguments against
/// `gcs_endpoint` (logs in `logs`); without, jobs stay pending.
pub async fn fake_vertex(
    gcs_endpoint: &str,
    logs: &std::path::Path,
    run_jobs: bool,
) -> (String, Vertex) {
    let vertex = Vertex {
        jobs: Arc::default(),
        problems: Arc::default(),
        gcs_endpoint: gcs_endpoint.to_owned(),
        logs: logs.to_owned(),
        run_jobs,
    };
    let router = Router::new()
        .route(
            "/v1/projects/{project}/locations/{region}/customJobs",
            post(create_job).get(list_jobs),
        )
        .route(
            "/v1/projects/{project}/locations/{region}/customJobs/{job}",
            get(get_or_cancel).post(get_or_cancel),
        )
        .with_state(vertex.clone());
    (serve(router).await, vertex)
}

/// One of the three service binaries, killed when dropped.
pub struct Service {
    pub child: tokio::process::Child,
    pub url: String,
    log: PathBuf,
}

impl Service {
    /// Starts the service binary `binary` (named `name` in messages) in
    /// `dir` with only `env` (and `PATH`, `PORT`, `RUST_LOG=info`), and waits
    /// for its `/healthz`.
    pub async fn start(
        binary: &std::path::Path,
        name: &str,
        dir: &std::path::Path,
        env: &[(&str, String)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join(format!("{name}.log"));
        let mut command = tokio::process::Command::new(binary);
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} never answered /healthz:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A notebook of code cells.
pub fn notebook(cells: &[&str]) -> Vec<u8> {
    let cells: Vec<Value> = cells
        .iter()
        .map(|source| json!({"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [], "source": source}))
        .collect();
    serde_json::to_vec_pretty(&json!({
        "nbformat": 4, "nbformat_minor": 5, "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    }))
    .expect("json")
}

/// The finalize event of `key` as Eventarc delivers it (binary CloudEvent).
pub async fn post_finalize(events: &str, gcs: &FakeGcs, key: &str) -> u16 {
    let object = gcs.metadata(key).await;
    send_finalize(&reqwest::Client::new(), events, &gcs.bucket, key, &object).await
}

/// Posts the finalize event of `key` in `bucket`, whose metadata (as the
/// JSON API gives it) is `object`, to the `gcs-events` at `events`.
pub async fn send_finalize(
    client: &reqwest::Client,
    events: &str,
    bucket: &str,
    key: &str,
    object: &Value,
) -> u16 {
    client
        .post(format!("{events}/"))
        .header("ce-specversion", "1.0")
        .header("ce-type", "google.cloud.storage.object.v1.finalized")
        .header(
            "ce-source",
            format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
        )
        .header("ce-subject", format!("objects/{key}"))
        .header(
            "ce-id",
            format!("event-{}", object["generation"].as_str().unwrap_or("1")),
        )
        .header("ce-time", "2026-11-30T00:00:00Z")
        .header("content-type", "application/json")
        .body(object.to_string())
        .send()
        .await
        .expect("gcs-events answers")
        .status()
        .as_u16()
}

/// Keys under `prefix` in the emulator's bucket.
pub async fn list(gcs: &FakeGcs, prefix: &str) -> Vec<String> {
    let answer: Value = reqwest::get(format!(
        "{}/storage/v1/b/{}/o?prefix={prefix}",
        gcs.endpoint, gcs.bucket
    ))
    .await
    .expect("list")
    .json()
    .await
    .expect("json");
    answer["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
