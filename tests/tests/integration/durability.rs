//! No check left behind: the real `nbci serve` binary against the strict fake
//! GitHub, killed, restarted, and fed GitHub's failures. After any crash,
//! fault or race, every check it started ends completed, exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::{nbci_binary, workspace};
use super::fake_github::{APP_ID, FakeGitHub, Fault, OWNER, REPO, private_key_pem};

pub const SECRET: &str = "It's a Secret to Everybody";

/// A notebook of code cells.
pub fn notebook(cells: &[&str], metadata: Value) -> Vec<u8> {
    let cells: Vec<Value> = cells
        .iter()
        .map(|source| {
            json!({"cell_type": "code", "execution_count": null, "metadata": {},
                   "outputs": [], "source": source})
        })
        .collect();
    let mut metadata = metadata;
    metadata["kernelspec"] =
        json!({"name": "python3", "display_name": "Python 3", "language": "python"});
    serde_json::to_vec_pretty(
        &json!({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": cells}),
    )
    .expect("json")
}

/// One `nbci serve` process on a data directory that outlives it (the
/// harness of the hostile-client and security tests too).
pub struct Server {
    pub child: tokio::process::Child,
    pub url: String,
    pub log: PathBuf,
}

impl Server {
    pub async fn start(github: &FakeGitHub, data: &Path, extra: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = data.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = tokio::process::Command::new(nbci_binary());
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_APP_ID", APP_ID)
            .env("GITHUB_APP_PRIVATE_KEY", private_key_pem())
            .env("GITHUB_API_URL", github.uri())
            .env("NBCI_DATA_DIR", data)
            .env("NBCI_JOBS", "2")
            .env("NBCI_RETRY_MAX", "1s")
            .env("RUST_LOG", "info")
            .env_remove("NBCI_PUBLIC_URL")
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("nbci serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nbci serve never answered /healthz"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url, log }
    }

    pub async fn deliver(&self, event: &str, delivery: &str, body: &Value) -> u16 {
        let body = serde_json::to_vec(body).expect("json");
        reqwest::Client::new()
            .post(format!("{}/github", self.url))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header(
                "X-Hub-Signature-256",
                nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body),
            )
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("delivery answered")
            .status()
            .as_u16()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(stopped.is_ok(), "nbci serve did not stop on SIGTERM");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id (for its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }
}

pub fn payload(name: &str) -> Value {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/github").join(name))
        .expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A check_suite for commit `sha`.
pub fn check_suite(sha: &str) -> Value {
    let mut body = payload("check_suite.requested.json");
    body["check_suite"]["head_sha"] = sha.into();
    body
}

/// Waits until `done` holds for GitHub's runs; shows them and the server's log if it never does.
pub async fn until(
    github: &FakeGitHub,
    server_log: &dyn Fn() -> String,
    seconds: u64,
    what: &str,
    done: impl Fn(&BTreeMap<u64, Value>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let runs = github.runs();
        if done(&runs) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\nruns: {runs:#?}\nproblems: {:?}\nlog:\n{}",
                github.problems(),
                server_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn status_count(runs: &BTreeMap<u64, Value>, status: &str) -> usize {
    runs.values().filter(|run| run["status"] == status).count()
}

/// Every run completed, each completed exactly once, one run per (commit, name).
pub async fn assert_each_completed_once(github: &FakeGitHub) {
    let runs = github.runs();
    let mut per_check: BTreeMap<(String, String), usize> = BTreeMap::new();
    for run in runs.values() {
        assert_eq!(run["status"], "completed", "{run:#}");
        *per_check
            .entry((
                run["head_sha"].as_str().unwrap_or("").into(),
                run["name"].as_str().unwrap_or("").into(),
            ))
            .or_default() += 1;
    }
    for (check, count) in &per_check {
        assert_eq!(*count, 1, "{check:?} has {count} check runs: {runs:#?}");
    }
    let mut completions: BTreeMap<u64, usize> = BTreeMap::new();
    for call in github.check_calls() {
        if call.method == "PATCH" && call.body["status"] == "completed" {
            *completions.entry(call.id).or_default() += 1;
        }
    }
    for id in runs.keys() {
        assert_eq!(
            completions.get(id),
            Some(&1),
            "run {id} completed {:?} times",
            completions.get(id)
        );
    }
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    assert!(
        github.unexpected().await.is_empty(),
        "{:?}",
        github.unexpected().await
    );
}

pub fn sleeper(seconds: u32) -> Vec<u8> {
    notebook(
        &[
            "import time",
            &format!("time.sleep({seconds})"),
            "print('done')",
        ],
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_notebooks_run_then_restarted_completes_every_check() {
    let backticks = notebook(
        &[&format!("raise ValueError('{}')", "`".repeat(100_000))],
        json!({}),
    );
    let github = FakeGitHub::start_for_any_commit(
        &[
            ("a.ipynb", "added"),
            ("b.ipynb", "modified"),
            ("ticks.ipynb", "added"),
        ],
        &[
            ("a.ipynb", sleeper(4)),
            ("b.ipynb", sleeper(4)),
            ("ticks.ipynb", backticks),
        ],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let sha = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
    for (round, signal) in ["KILL", "TERM"].iter().enumerate() {
        let data = data.path().join(format!("round{round}"));
        let sha = format!("{}{round}", &sha[..39]);
        let server = Server::start(&github, &data, &[]).await;
        assert_eq!(
            server
                .deliver("check_suite", &format!("kill-{round}"), &check_suite(&sha))
                .await,
            202
        );
        let log = server.log.clone();
        let show = move || std::fs::read_to_string(&log).unwrap_or_default();
        until(&github, &show, 60, "two notebooks running", |runs| {
            runs.values()
                .filter(|r| r["head_sha"] == sha.as_str() && r["status"] == "in_progress")
                .count()
                >= 2
        })
        .await;
        if *signal == "KILL" {
            server.kill().await
        } else {
            server.terminate().await
        }
        // Redelivered while down: GitHub's answer does not matter, nothing is lost.
        let server = Server::start(&github, &data, &[]).await;
        assert_eq!(
            server
                .deliver("check_suite", &format!("kill-{round}"), &check_suite(&sha))
                .await,
            200,
            "a duplicate"
        );
        let show = || server.log();
        until(&github, &show, 120, "every check completed", |runs| {
            runs.values()
                .filter(|r| r["head_sha"] == sha.as_str())
                .count()
                == 3
                && runs
                    .values()
                    .filter(|r| r["head_sha"] == sha.as_str())
                    .all(|r| r["status"] == "completed")
        })
        .await;
        server.kill().await;
    }
    assert_each_completed_once(&github).await;
    let ticks = github
        .runs()
        .into_values()
        .find(|r| r["name"] == "nbci / ticks.ipynb")
        .expect("run");
    assert_eq!(ticks["conclusion"], "failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_accepting_and_creating_leaves_one_check_run() {
    let github =
        FakeGitHub::start_for_any_commit(&[("a.ipynb", "added")], &[("a.ipynb", sleeper(0))]).await;
    let data = tempfile::tempdir().expect("tempdir");
    // GitHub creates the run, then answers slowly: the server dies waiting.
    github.inject(
        "POST",
        "/check-runs",
        Fault::Delay(Duration::from_secs(30)),
        1,
    );
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "1111111111111111111111111111111111111111";
    assert_eq!(
        server
            .deliver("check_suite", "between-1", &check_suite(sha))
            .await,
        202
    );
    let show = || String::new();
    until(&github, &show, 30, "the run created", |runs| {
        !runs.is_empty()
    })
    .await;
    server.kill().await;
    let server = Server::start(&github, data.path(), &[]).await;
    let show = || server.log();
    until(&github, &show, 60, "completed", |runs| {
        status_count(runs, "completed") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_completed_once(&github).await;
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_failures_on_every_call_end_in_one_completed_run_each() {
    let github = FakeGitHub::start_for_any_commit(
        &[("a.ipynb", "added"), ("b.ipynb", "added")],
        &[("a.ipynb", sleeper(0)), ("b.ipynb", sleeper(1))],
    )
    .await;
    // The creation's answer is lost; the in-progress update fails longer
    // than one call's retries; completions meet 502s for a while.
    github.inject("POST", "/check-runs", Fault::LoseAnswer, 2);
    github.inject("PATCH", "/check-runs/", Fault::Status(502), 12);
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "2222222222222222222222222222222222222222";
    assert_eq!(
        server
            .deliver("check_suite", "faults-1", &check_suite(sha))
            .await,
        202
    );
    // A redelivery under a new id while GitHub is failing: nothing doubles.
    assert_eq!(
        server
            .deliver("check_suite", "faults-2", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 150, "both completed", |runs| {
        runs.len() == 2 && status_count(runs, "completed") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_completed_once(&github).await;
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_whose_answer_is_lost_completes_the_run_once() {
    let github =
        FakeGitHub::start_for_any_commit(&[("a.ipynb", "added")], &[("a.ipynb", sleeper(3))]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "3333333333333333333333333333333333333333";
    assert_eq!(
        server
            .deliver("check_suite", "lost-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "in progress", |runs| {
        status_count(runs, "in_progress") == 1
    })
    .await;
    // GitHub completes the run and the answer is lost; asking whether it is
    // completed fails the first time.
    github.inject("PATCH", "/check-runs/", Fault::LoseAnswer, 1);
    github.inject("GET", "/check-runs/", Fault::Status(503), 1);
    until(&github, &show, 60, "completed", |runs| {
        status_count(runs, "completed") == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("not completing it again") {
        assert!(
            Instant::now() < deadline,
            "the completion was never found on GitHub:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_each_completed_once(&github).await;
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_deliveries_for_each_of_twelve_commits_give_one_check_each() {
    let github =
        FakeGitHub::start_for_any_commit(&[("nb.ipynb", "added")], &[("nb.ipynb", sleeper(0))])
            .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let shas: Vec<String> = (0..12).map(|i| format!("{:040x}", 0xabc000 + i)).collect();
    let mut deliveries = Vec::new();
    for (c, sha) in shas.iter().enumerate() {
        for d in 0..30 {
            // A third repeat a delivery id; the rest are new ids for the same commit.
            let id = if d % 3 == 0 {
                format!("c{c}-same")
            } else {
                format!("c{c}-d{d}")
            };
            let body = check_suite(sha);
            let url = server.url.clone();
            deliveries.push(tokio::spawn(async move {
                let body = serde_json::to_vec(&body).expect("json");
                reqwest::Client::new()
                    .post(format!("{url}/github"))
                    .header("X-GitHub-Event", "check_suite")
                    .header("X-GitHub-Delivery", id)
                    .header(
                        "X-Hub-Signature-256",
                        nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body),
                    )
                    .body(body)
                    .send()
                    .await
                    .expect("answered")
                    .status()
                    .as_u16()
            }));
        }
    }
    for delivery in deliveries {
        let status = delivery.await.expect("task");
        assert!(status == 202 || status == 200, "{status}");
    }
    let show = || server.log();
    until(&github, &show, 180, "twelve completed", |runs| {
        runs.len() >= 12 && status_count(runs, "completed") == runs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(github.runs().len(), 12, "one check run per commit");
    assert_each_completed_once(&github).await;
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_while_running_closes_the_first_run_and_reports_the_second() {
    let github = FakeGitHub::start_for_any_commit(
        &[("notebooks/broken.ipynb", "added")],
        &[("notebooks/broken.ipynb", sleeper(6))],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let mut rerun = payload("check_run.rerequested.json");
    let sha = rerun["check_run"]["head_sha"]
        .as_str()
        .expect("sha")
        .to_owned();
    assert_eq!(
        server
            .deliver("check_suite", "first", &check_suite(&sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "running", |runs| {
        status_count(runs, "in_progress") == 1
    })
    .await;
    rerun["check_run"]["name"] = "nbci / notebooks/broken.ipynb".into();
    assert_eq!(server.deliver("check_run", "rerun", &rerun).await, 202);
    until(&github, &show, 90, "both closed", |runs| {
        runs.len() == 2 && status_count(runs, "completed") == 2
    })
    .await;
    let runs: Vec<Value> = github.runs().into_values().collect();
    assert_eq!(runs[0]["conclusion"], "cancelled", "{runs:#?}");
    assert!(
        runs[0]["output"]["title"]
            .as_str()
            .unwrap_or("")
            .contains("Superseded")
    );
    assert_eq!(runs[1]["conclusion"], "success");
    assert!(
        runs[1]["details_url"]
            .as_str()
            .unwrap_or("")
            .contains("/attempts/2/"),
        "{runs:#?}"
    );
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_without_a_timeout_stop_at_the_default_and_odd_paths_get_a_note() {
    let long_path = format!("{}.ipynb", "n".repeat(300));
    let github = FakeGitHub::start_for_any_commit(
        &[("forever.ipynb", "added"), (long_path.as_str(), "added")],
        &[("forever.ipynb", sleeper(600))],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[("NBCI_JOB_TIMEOUT", "3s")]).await;
    let sha = "3333333333333333333333333333333333333333";
    assert_eq!(
        server
            .deliver("check_suite", "forever", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "timed out and noted", |runs| {
        runs.len() == 2 && status_count(runs, "completed") == 2
    })
    .await;
    let runs: Vec<Value> = github.runs().into_values().collect();
    let forever = runs
        .iter()
        .find(|r| r["name"] == "nbci / forever.ipynb")
        .expect("run");
    assert_eq!(forever["conclusion"], "timed_out", "{forever:#}");
    let note = runs.iter().find(|r| r["name"] == "nbci").expect("note");
    assert_eq!(note["conclusion"], "neutral");
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_variable_and_a_data_dir_serves_one_process() {
    let github = FakeGitHub::start_for_any_commit(&[], &[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let run = |env: &[(&str, &str)], remove: &[&str]| {
        let mut command = std::process::Command::new(nbci_binary());
        command
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_APP_ID", APP_ID)
            .env("GITHUB_APP_PRIVATE_KEY", private_key_pem())
            .env("GITHUB_API_URL", github.uri())
            .env("NBCI_DATA_DIR", data.path());
        for (name, value) in env {
            command.env(name, value);
        }
        for name in remove {
            command.env_remove(name);
        }
        command.output().expect("runs")
    };
    for (env, remove, named) in [
        (
            vec![],
            vec!["GITHUB_WEBHOOK_SECRET"],
            "GITHUB_WEBHOOK_SECRET",
        ),
        (vec![("NBCI_JOBS", "none")], vec![], "NBCI_JOBS"),
        (
            vec![("NBCI_JOB_TIMEOUT", "1e30")],
            vec![],
            "NBCI_JOB_TIMEOUT",
        ),
        (
            vec![("GITHUB_APP_PRIVATE_KEY", "/no/such/key.pem")],
            vec![],
            "GITHUB_APP_PRIVATE_KEY",
        ),
        (
            vec![(
                "GITHUB_APP_PRIVATE_KEY",
                "-----BEGIN RSA PRIVATE KEY-----\\nAAAA\\n-----END RSA PRIVATE KEY-----",
            )],
            vec![],
            "GITHUB_APP_PRIVATE_KEY",
        ),
    ] {
        let output = run(&env, &remove);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{named}: {stderr}");
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert!(
            !stderr.contains("BEGIN RSA") && !stderr.contains(SECRET),
            "no secret in errors: {stderr}"
        );
    }
    let server = Server::start(&github, data.path(), &[]).await;
    let output = run(&[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another nbci process"),
        "{stderr}"
    );
    assert!(!server.log().contains(SECRET));
    server.kill().await;
}

#[allow(dead_code)]
fn repo_names() -> (&'static str, &'static str) {
    (OWNER, REPO)
}

/// A push to a pipeline's branch starts a run (steps, gate, deploy to the
/// local registry), and so does a Scheduler tick naming the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_and_a_scheduler_tick_start_pipeline_runs() {
    let spec = "pipelines:\n  nightly:\n    branch: master\n    steps:\n      - notebook: nb/evaluate.ipynb\n    gate:\n      metrics: {accuracy: \">= 0.5\"}\n    deploy:\n      target: local\n      model: m\n";
    let mut evaluate: Value = serde_json::from_slice(&notebook(
        &["artifacts_dir = '.'\nrun_id = 'x'", "import json, os\njson.dump({'accuracy': 0.9}, open(os.path.join(artifacts_dir, 'metrics.json'), 'w'))"],
        json!({}),
    ))
    .expect("json");
    evaluate["cells"][0]["metadata"]["tags"] = json!(["parameters"]);
    let evaluate = serde_json::to_vec(&evaluate).expect("json");
    let github = FakeGitHub::start_for_any_commit(
        &[("nb/evaluate.ipynb", "modified")],
        &[
            ("nbci.yaml", spec.as_bytes().to_vec()),
            ("nb/evaluate.ipynb", evaluate),
        ],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let mut push = payload("push.branch.json");
    let sha = "6666666666666666666666666666666666666666";
    push["after"] = sha.into();
    assert_eq!(server.deliver("push", "push-1", &push).await, 202);
    let runs_dir = data.path().join("objects/pipelines/nightly/runs");
    let deployed = |dir: &Path| -> Vec<Value> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path().join("state.json")).ok())
                    .filter_map(|text| serde_json::from_str::<Value>(&text).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !deployed(&runs_dir)
        .iter()
        .any(|run| run["phase"] == "deployed")
    {
        assert!(
            Instant::now() < deadline,
            "the push's run never deployed: {:#?}\n{}",
            deployed(&runs_dir),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let run = deployed(&runs_dir).remove(0);
    assert_eq!(run["commit"], sha);
    assert_eq!(run["cause"]["kind"], "push");
    // A Scheduler tick for the pipeline: a run at the branch head.
    let tick = reqwest::Client::new()
        .post(format!("{}/tick", server.url))
        .body(r#"{"pipeline": "nightly", "repository": "Codertocat/Hello-World"}"#)
        .send()
        .await
        .expect("tick");
    assert_eq!(tick.status().as_u16(), 200, "{}", server.log());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = deployed(&runs_dir);
        if runs
            .iter()
            .any(|r| r["commit"] == super::fake_github::BRANCH_HEAD && r["phase"] == "deployed")
        {
            assert!(runs.iter().any(|r| r["cause"]["kind"] == "schedule"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tick's run never deployed: {runs:#?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let bad = reqwest::Client::new()
        .post(format!("{}/tick", server.url))
        .body(r#"{"pipeline": "nightly"}"#)
        .send()
        .await
        .expect("tick");
    assert_eq!(bad.status().as_u16(), 400);
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    server.kill().await;
}
