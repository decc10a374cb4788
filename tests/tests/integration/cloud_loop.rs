//! The whole cloud loop on this machine, as the contract says it runs on
//! Google Cloud: a signed webhook to the real `github-webhook` binary ->
//! the source staged in fake-gcs-server -> a Vertex-AI-shaped fake receives
//! the CustomJob and runs exactly its container arguments with the local
//! `nbci` binary against the emulator -> result.json lands -> its finalize
//! event (Eventarc's binary CloudEvent) goes to the real `gcs-events` binary
//! -> the check runs complete. Then a job that dies without a result is
//! completed by a `POST /tick` to the real `scheduler` binary.
//!
//! Access tokens come from a fake metadata server (`GCE_METADATA_HOST`), as
//! on Cloud Run: authentication is exercised, not switched off.

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

use super::common::{nbci_binary, workspace};
use super::fake_gcs::FakeGcs;
use super::fake_github::{APP_ID, FakeGitHub, Fault, private_key_pem};

const SECRET: &str = "It's a Secret to Everybody";
const PROJECT: &str = "demo-project";
const PROJECT_NUMBER: &str = "123456789012";
const REGION: &str = "us-central1";
const RUNNER_IMAGE: &str = "us-docker.pkg.dev/demo-project/nbci/runner:test";
const TOKEN: &str = "ya29.fake-access-token";

fn binary(name: &str) -> PathBuf {
    nbci_binary().with_file_name(name)
}

pub(crate) async fn serve(router: Router) -> String {
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
pub(crate) async fn fake_metadata() -> String {
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
struct FakeJob {
    body: Value,
    state: &'static str,
    error: Option<String>,
}

#[derive(Clone)]
struct Vertex {
    jobs: Arc<Mutex<BTreeMap<u64, FakeJob>>>,
    problems: Arc<Mutex<Vec<String>>>,
    gcs_endpoint: String,
    /// Where each job's runner writes its log (`runner-{id}.log`).
    logs: PathBuf,
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
        && args[1].starts_with("gs://nbci-test/ci/")
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
            },
        );
        id
    };
    // A job whose notebook path says "lost" dies before it writes anything.
    let lost = args.get(1).is_some_and(|uri| uri.contains("lost"));
    let runner = vertex.clone();
    tokio::spawn(async move {
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

async fn fake_vertex(gcs_endpoint: &str, logs: &std::path::Path) -> (String, Vertex) {
    let vertex = Vertex {
        jobs: Arc::default(),
        problems: Arc::default(),
        gcs_endpoint: gcs_endpoint.to_owned(),
        logs: logs.to_owned(),
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

/// One of the three service binaries.
struct Service {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl Service {
    async fn start(name: &str, dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join(format!("{name}.log"));
        let mut command = tokio::process::Command::new(binary(name));
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn notebook(cells: &[&str]) -> Vec<u8> {
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
async fn post_finalize(events: &str, gcs: &FakeGcs, key: &str) -> u16 {
    let object = gcs.metadata(key).await;
    reqwest::Client::new()
        .post(format!("{events}/"))
        .header("ce-specversion", "1.0")
        .header("ce-type", "google.cloud.storage.object.v1.finalized")
        .header(
            "ce-source",
            format!("//storage.googleapis.com/projects/_/buckets/{}", gcs.bucket),
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
async fn list(gcs: &FakeGcs, prefix: &str) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_cloud_jobs_to_finalize_events_to_completed_checks() {
    let gcs = FakeGcs::start().await;
    let metadata = fake_metadata().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (vertex_address, vertex) = fake_vertex(&gcs.endpoint, dir.path()).await;
    let good = notebook(&["x = 21 * 2", "assert x == 42"]);
    let bad = notebook(&[
        "import math",
        "raise ValueError('the model is not good enough')",
    ]);
    let github = FakeGitHub::start_for_any_commit(
        &[
            ("nb/good.ipynb", "added"),
            ("nb/bad.ipynb", "modified"),
            ("nb/lost.ipynb", "added"),
        ],
        &[
            ("nb/good.ipynb", good),
            ("nb/bad.ipynb", bad.clone()),
            ("nb/lost.ipynb", notebook(&["1"])),
        ],
    )
    .await;
    // Failures on the way: the logs checked at the end include retries.
    github.inject("PATCH", "/check-runs/", Fault::Status(502), 2);
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
        ("NBCI_RETRY_MAX", "2s".to_owned()),
    ];
    let mut webhook_env = common.clone();
    webhook_env.push(("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()));
    webhook_env.push(("NBCI_PUBLIC_URL", "https://nbci.example.com".to_owned()));
    let webhook = Service::start("github-webhook", dir.path(), &webhook_env).await;
    let events = Service::start("gcs-events", dir.path(), &common).await;
    let mut scheduler_env = common.clone();
    scheduler_env.push(("NBCI_LOST_JOB_GRACE", "1s".to_owned()));
    let scheduler = Service::start("scheduler", dir.path(), &scheduler_env).await;
    let logs = || {
        format!(
            "webhook:\n{}\nevents:\n{}\nscheduler:\n{}",
            webhook.log(),
            events.log(),
            scheduler.log()
        )
    };

    let mut suite: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join("tests/fixtures/github/check_suite.requested.json"),
        )
        .expect("fixture"),
    )
    .expect("json");
    let sha = "4444444444444444444444444444444444444444";
    suite["check_suite"]["head_sha"] = sha.into();
    let body = serde_json::to_vec(&suite).expect("json");
    let status = reqwest::Client::new()
        .post(format!("{}/github", webhook.url))
        .header("X-GitHub-Event", "check_suite")
        .header("X-GitHub-Delivery", "cloud-1")
        .header(
            "X-Hub-Signature-256",
            nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .expect("answered")
        .status();
    assert_eq!(status.as_u16(), 202);

    // The source is staged and the jobs run; post each result's finalize event.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut posted = std::collections::BTreeSet::new();
    loop {
        for key in list(&gcs, "ci/").await {
            if key.ends_with("/result.json") && posted.insert(key.clone()) {
                let status = post_finalize(&events.url, &gcs, &key).await;
                assert!(status == 200, "finalize of {key}: {status}\n{}", logs());
                // A duplicate event changes nothing.
                assert_eq!(post_finalize(&events.url, &gcs, &key).await, 200);
            }
        }
        let runs = github.runs();
        let done = runs.values().filter(|r| r["status"] == "completed").count();
        if posted.len() == 2 && done == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not complete\nruns: {runs:#?}\nproblems: {:?}\nvertex: {:?}\n{}",
            github.problems(),
            vertex.problems.lock().expect("lock"),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        list(&gcs, "src/")
            .await
            .iter()
            .any(|k| k.ends_with(&format!("{sha}.tar.gz"))),
        "the source is staged"
    );
    assert!(
        vertex.problems.lock().expect("lock").is_empty(),
        "{:?}",
        vertex.problems.lock().expect("lock")
    );
    let by_name = |name: &str| {
        github
            .runs()
            .into_values()
            .find(|r| r["name"] == name)
            .expect(name)
    };
    let good = by_name("nbci / nb/good.ipynb");
    assert_eq!(good["conclusion"], "success", "{good:#}");
    let bad_run = by_name("nbci / nb/bad.ipynb");
    assert_eq!(bad_run["conclusion"], "failure");
    assert_eq!(
        bad_run["output"]["title"],
        "Failed at cell 2 of 2: ValueError"
    );
    let annotation = &bad_run["output"]["annotations"][0];
    assert_eq!(annotation["path"], "nb/bad.ipynb");
    assert!(
        annotation["start_line"].as_u64().unwrap_or(0) > 1,
        "{annotation}"
    );
    assert!(
        bad_run["details_url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://nbci.example.com/runs/ci/")
    );

    // The lost job: Vertex says it failed, no result will ever come. A tick completes it.
    let lost_running = || {
        github
            .runs()
            .into_values()
            .any(|r| r["name"] == "nbci / nb/lost.ipynb" && r["status"] == "in_progress")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lost_running() {
        assert!(
            Instant::now() < deadline,
            "the lost job never started\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = reqwest::Client::new()
            .post(format!("{}/tick", scheduler.url))
            .body("{}")
            .send()
            .await
            .expect("tick");
        assert_eq!(answer.status().as_u16(), 200, "{}", logs());
        let lost = by_name("nbci / nb/lost.ipynb");
        if lost["status"] == "completed" {
            assert_eq!(lost["conclusion"], "failure");
            let summary = lost["output"]["summary"].as_str().unwrap_or("").to_owned()
                + lost["output"]["title"].as_str().unwrap_or("");
            assert!(summary.contains("image pull failed"), "{lost:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tick never completed the lost job\n{lost:#}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(github.runs().len(), 3, "one check run per notebook");
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    assert_eq!(
        vertex.jobs.lock().expect("lock").len(),
        3,
        "one job per notebook"
    );
    // No log of any service or job shows a credential: the webhook secret,
    // the App's key, an installation token or a Google access token.
    let mut secrets = vec![SECRET.to_owned(), TOKEN.to_owned()];
    secrets.extend(github.issued_tokens());
    secrets.extend(
        private_key_pem()
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .map(str::to_owned),
    );
    let mut all_logs = logs();
    for entry in std::fs::read_dir(dir.path()).expect("logs").flatten() {
        if entry.file_name().to_string_lossy().starts_with("runner-") {
            all_logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    assert!(
        all_logs.contains("runner") || all_logs.len() > 1000,
        "logs were captured"
    );
    for secret in &secrets {
        assert!(
            !all_logs.contains(secret.as_str()),
            "a log shows a secret ({}...)",
            &secret[..secret.len().min(6)]
        );
    }
    drop((webhook.child, events.child, scheduler.child));
}

/// `nbci runner` stopped by SIGTERM (a preempted or cancelled job) still
/// leaves a result saying so, and exits as an infrastructure error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_stopped_by_sigterm_writes_an_error_result() {
    use nbci_shared::domain::job::{Job, JobOrigin, JobRecord, Machine};
    use nbci_shared::ports::store::{ObjectStore, Precondition, put_json};

    let gcs = FakeGcs::start().await;
    let store = nbci_shared::adapters::gcp::storage::GcsStore::new(gcs.settings())
        .await
        .expect("store");
    let tarball = super::fake_github::tarball(
        "o-r-abc",
        &[("slow.ipynb", notebook(&["import time", "time.sleep(60)"]))],
    );
    store
        .put(
            "src/o/r/abc.tar.gz",
            tarball,
            "application/gzip",
            Precondition::None,
        )
        .await
        .expect("source");
    let job = Job {
        prefix: "ci/o/r/abc/slow.ipynb".into(),
        source: "src/o/r/abc.tar.gz".into(),
        notebook: "slow.ipynb".into(),
        parameters: Default::default(),
        timeout_s: Some(600.0),
        image: RUNNER_IMAGE.into(),
        machine: Machine::default(),
    };
    let record = JobRecord {
        job: job.clone(),
        origin: JobOrigin::Check {
            check: job.prefix.clone(),
            attempt: 1,
        },
        handle: None,
    };
    put_json(&store, &job.record_key(), &record, Precondition::None)
        .await
        .expect("job.json");
    let runner = tokio::process::Command::new(nbci_binary())
        .args([
            "runner",
            &format!("gs://{}/{}", gcs.bucket, job.record_key()),
        ])
        .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runner starts");
    // Wait until the notebook runs (its input is staged), then stop the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .generation(&job.input_key())
        .await
        .expect("gen")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the runner never staged the input"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = i32::try_from(runner.id().expect("pid")).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let output = tokio::time::timeout(Duration::from_secs(30), runner.wait_with_output())
        .await
        .expect("the runner stops")
        .expect("output");
    assert_eq!(output.status.code(), Some(4));
    let result = store
        .get(&job.result_key())
        .await
        .expect("get")
        .expect("a result");
    let outcome: Value = serde_json::from_slice(&result.bytes).expect("json");
    assert_eq!(outcome["status"], "error");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap_or("")
            .contains("SIGTERM"),
        "{outcome}"
    );
    // Its log is JSON lines, as Cloud Logging reads them.
    let log = String::from_utf8_lossy(&output.stderr);
    let first = log.lines().next().unwrap_or("");
    let line: Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert!(line["severity"].is_string(), "{line}");
}
