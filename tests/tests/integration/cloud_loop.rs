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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{nbci_binary, workspace};
use super::fake_cloud::{
    PROJECT, REGION, RUNNER_IMAGE, Service, TOKEN, fake_metadata, fake_vertex, list, notebook,
    post_finalize,
};
use super::fake_gcs::FakeGcs;
use super::fake_github::{APP_ID, FakeGitHub, Fault, private_key_pem};

const SECRET: &str = "It's a Secret to Everybody";

fn binary(name: &str) -> PathBuf {
    nbci_binary().with_file_name(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_cloud_jobs_to_finalize_events_to_completed_checks() {
    let gcs = FakeGcs::start().await;
    let metadata = fake_metadata().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (vertex_address, vertex) = fake_vertex(&gcs.endpoint, dir.path(), true).await;
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
    let webhook = Service::start(
        &binary("github-webhook"),
        "github-webhook",
        dir.path(),
        &webhook_env,
    )
    .await;
    let events = Service::start(&binary("gcs-events"), "gcs-events", dir.path(), &common).await;
    let mut scheduler_env = common.clone();
    scheduler_env.push(("NBCI_LOST_JOB_GRACE", "1s".to_owned()));
    let scheduler = Service::start(
        &binary("scheduler"),
        "scheduler",
        dir.path(),
        &scheduler_env,
    )
    .await;
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
    assert_eq!(vertex.jobs().len(), 3, "one job per notebook");
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
