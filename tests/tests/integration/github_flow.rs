//! The whole local CI flow: signed GitHub deliveries to the webhook service
//! (local adapters: directory bucket, papermill here) against the strict fake
//! GitHub, down to completed check runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::workspace;
use super::fake_github::{APP_ID, FakeGitHub, private_key_pem};

const SECRET: &str = "It's a Secret to Everybody";
const HEAD: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";

fn fixture_payload(name: &str) -> Value {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/github").join(name))
        .expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn notebook(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("tests/notebooks").join(name)).expect("notebook")
}

/// A running webhook service wired to the fake GitHub.
struct Service {
    url: String,
    _data: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

async fn start_service(github: &FakeGitHub) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let data = tempfile::tempdir().expect("tempdir");
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("GITHUB_WEBHOOK_SECRET", SECRET.into());
    env.insert("GITHUB_APP_ID", APP_ID.into());
    env.insert("GITHUB_APP_PRIVATE_KEY", private_key_pem());
    env.insert("GITHUB_API_URL", github.uri());
    env.insert("NBCI_DATA_DIR", data.path().display().to_string());
    env.insert("NBCI_PUBLIC_URL", url.clone());
    env.insert("NBCI_JOBS", "2".into());
    let config =
        nbci_shared::config::Config::from_lookup(nbci_shared::config::Service::Serve, |name| {
            env.get(name).cloned()
        })
        .expect("config");
    let services = nbci_shared::wiring::Services::build(config, Arc::new(|_: &str, _: &_| {}))
        .await
        .expect("services");
    let state = github_webhook::WebhookState::from_services(&services).expect("state");
    let app = github_webhook::app(state);
    let limits = services.config.http;
    let server = tokio::spawn(async move {
        services.recover().await;
        let _ = nbci_shared::http::run(listener, app, limits, std::future::pending()).await;
        drop(services);
    });
    Service {
        url,
        _data: data,
        _server: server,
    }
}

async fn deliver(base_url: &str, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/github"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header(
            "X-Hub-Signature-256",
            nbci_shared::adapters::github::sign(SECRET.as_bytes(), body),
        )
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("delivery answered");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Waits until `count` check runs are completed (PATCH with status completed).
async fn wait_for_completions(github: &FakeGitHub, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let completed: Vec<Value> = github
            .check_calls()
            .into_iter()
            .filter(|c| c.method == "PATCH" && c.body["status"] == "completed")
            .map(|c| {
                let mut body = c.body;
                body["id"] = c.id.into();
                body
            })
            .collect();
        if completed.len() >= count {
            return completed;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} completed check runs; calls: {:#?}; problems: {:?}",
            github.check_calls(),
            github.problems()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The 1-based line where cell `index` starts in a notebook as Jupyter writes
/// it (one-space indent: each cell opens with a line `  {` inside `"cells": [`).
fn cell_start_line(raw: &str, index: usize) -> u64 {
    let mut seen = 0;
    let mut in_cells = false;
    for (number, line) in raw.lines().enumerate() {
        if line.starts_with(" \"cells\": [") {
            in_cells = true;
            continue;
        }
        if in_cells && line == "  {" {
            if seen == index {
                return number as u64 + 1;
            }
            seen += 1;
        }
    }
    panic!("cell {index} not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_suite_gets_one_completed_check_run_per_changed_notebook() {
    let good = notebook("pass.ipynb");
    let bad = notebook("fail_at_cell.ipynb");
    let github = FakeGitHub::start(
        HEAD,
        &[
            ("notebooks/good.ipynb", "added"),
            ("notebooks/broken.ipynb", "modified"),
            ("notebooks/old.ipynb", "removed"),
            ("README.md", "modified"),
        ],
        &[
            ("notebooks/good.ipynb", good.clone()),
            ("notebooks/broken.ipynb", bad.clone()),
            ("README.md", b"hello\n".to_vec()),
        ],
    )
    .await;
    let service = start_service(&github).await;

    let payload = serde_json::to_vec(&fixture_payload("check_suite.requested.json")).expect("json");
    let (status, text) = deliver(&service.url, "check_suite", "d-1", &payload).await;
    assert_eq!(status, 202, "{text}");

    let completed = wait_for_completions(&github, 2).await;
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    assert!(
        github.unexpected().await.is_empty(),
        "{:?}",
        github.unexpected().await
    );

    // Each check run went queued -> in_progress (with a details link) -> completed.
    let calls = github.check_calls();
    let created: Vec<_> = calls.iter().filter(|c| c.method == "POST").collect();
    assert_eq!(created.len(), 2, "{calls:#?}");
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for call in &created {
        assert_eq!(call.body["status"], "queued");
        assert_eq!(call.body["head_sha"], HEAD);
        by_name.insert(
            call.body["name"].as_str().expect("name").to_owned(),
            call.id,
        );
        let updates: Vec<&str> = calls
            .iter()
            .filter(|c| c.method == "PATCH" && c.id == call.id)
            .map(|c| c.body["status"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(updates, vec!["in_progress", "completed"], "{calls:#?}");
    }
    let good_id = by_name["nbci / notebooks/good.ipynb"];
    let bad_id = by_name["nbci / notebooks/broken.ipynb"];
    let good_done = completed
        .iter()
        .find(|c| c["id"] == good_id)
        .expect("good completed");
    let bad_done = completed
        .iter()
        .find(|c| c["id"] == bad_id)
        .expect("bad completed");
    assert_eq!(good_done["conclusion"], "success");
    assert_eq!(bad_done["conclusion"], "failure");
    assert_eq!(
        bad_done["output"]["title"],
        "Failed at cell 4 of 5: ValueError"
    );
    let annotations = bad_done["output"]["annotations"]
        .as_array()
        .expect("annotations");
    assert_eq!(annotations.len(), 1);
    let annotation = &annotations[0];
    assert_eq!(annotation["path"], "notebooks/broken.ipynb");
    assert_eq!(annotation["annotation_level"], "failure");
    assert_eq!(annotation["title"], "ValueError");
    assert_eq!(annotation["message"], "boom at cell 3");
    let expected_line = cell_start_line(&String::from_utf8_lossy(&bad), 3);
    assert_eq!(annotation["start_line"], expected_line);
    assert!(
        bad_done["output"]["text"]
            .as_str()
            .expect("traceback")
            .contains("ValueError")
    );
    assert!(
        !bad_done["output"]["text"]
            .as_str()
            .expect("text")
            .contains('\u{1b}')
    );
    assert_eq!(bad_done["actions"][0]["identifier"], "rerun");

    // The details link serves the executed notebook to whoever follows it.
    let details = bad_done["details_url"].as_str().expect("details_url");
    assert!(details.starts_with(&service.url), "{details}");
    let page = reqwest::get(details).await.expect("details page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("boom at cell 3"),
        "the page shows the executed notebook"
    );
    // Without its token the same page is refused.
    let bare = details.split('?').next().expect("url");
    assert_eq!(
        reqwest::get(bare).await.expect("answer").status().as_u16(),
        403
    );

    // The same delivery again, and the push of the same commit: nothing runs twice.
    let (status, _) = deliver(&service.url, "check_suite", "d-1", &payload).await;
    assert_eq!(status, 200);
    let push = serde_json::to_vec(&fixture_payload("push.branch.json")).expect("json");
    let (status, _) = deliver(&service.url, "push", "d-2", &push).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let created_after = github
        .check_calls()
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(
        created_after, 2,
        "no new check runs for a duplicate or the same commit"
    );
    assert_eq!(
        github.token_exchanges(),
        1,
        "the installation token is cached"
    );

    // The Re-run button runs that one notebook again, as a new check run.
    let rerun =
        serde_json::to_vec(&fixture_payload("check_run.requested_action.json")).expect("json");
    let (status, text) = deliver(&service.url, "check_run", "d-3", &rerun).await;
    assert_eq!(status, 202, "{text}");
    let completed = wait_for_completions(&github, 3).await;
    let last = completed.last().expect("third completion");
    assert_eq!(last["conclusion"], "failure");
    assert!(github.problems().is_empty(), "{:?}", github.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_reports_timeouts_and_infrastructure_errors_honestly() {
    const PR_HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    // The notebook asks for a 2 s limit in its own metadata.
    let mut sleeps: Value = serde_json::from_slice(&notebook("sleeps.ipynb")).expect("json");
    sleeps["metadata"]["nbci"] = serde_json::json!({"timeout": "2s"});
    let sleeps = serde_json::to_vec_pretty(&sleeps).expect("json");
    let github = FakeGitHub::start(
        PR_HEAD,
        &[("slow.ipynb", "added"), ("dies.ipynb", "renamed")],
        &[
            ("slow.ipynb", sleeps),
            ("dies.ipynb", notebook("kernel_dies.ipynb")),
        ],
    )
    .await;
    let service = start_service(&github).await;
    let payload = serde_json::to_vec(&fixture_payload("pull_request.opened.json")).expect("json");
    let (status, text) = deliver(&service.url, "pull_request", "pr-1", &payload).await;
    assert_eq!(status, 202, "{text}");
    let completed = wait_for_completions(&github, 2).await;
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    let names: HashMap<u64, String> = github
        .check_calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .map(|c| (c.id, c.body["name"].as_str().unwrap_or("").to_owned()))
        .collect();
    let by_name = |name: &str| {
        completed
            .iter()
            .find(|c| {
                names
                    .get(&c["id"].as_u64().unwrap_or(0))
                    .map(String::as_str)
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("{name} not completed: {completed:#?}"))
            .clone()
    };
    let slow = by_name("nbci / slow.ipynb");
    assert_eq!(slow["conclusion"], "timed_out");
    assert_eq!(slow["output"]["title"], "Timed out at cell 2 of 3");
    let dies = by_name("nbci / dies.ipynb");
    assert_eq!(dies["conclusion"], "failure", "never a silent green");
    let title = dies["output"]["title"].as_str().expect("title");
    assert!(title.contains("Infrastructure error"), "{title}");
}

/// The `nbci serve` binary itself, configured only through its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbci_serve_runs_the_same_flow_from_its_environment() {
    let github = FakeGitHub::start(
        HEAD,
        &[("nb/ok.ipynb", "added")],
        &[("nb/ok.ipynb", notebook("unicode.ipynb"))],
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(super::common::nbci_binary())
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .env("GITHUB_WEBHOOK_SECRET", SECRET)
        .env("GITHUB_APP_ID", APP_ID)
        .env("GITHUB_APP_PRIVATE_KEY", private_key_pem())
        .env("GITHUB_API_URL", github.uri())
        .env("NBCI_DATA_DIR", data.path())
        .env_remove("NBCI_PUBLIC_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nbci serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nbci serve never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let payload = serde_json::to_vec(&fixture_payload("check_suite.requested.json")).expect("json");
    let (status, text) = deliver(&url, "check_suite", "serve-1", &payload).await;
    assert_eq!(status, 202, "{text}");
    let completed = wait_for_completions(&github, 1).await;
    assert_eq!(completed[0]["conclusion"], "success");
    // Without NBCI_PUBLIC_URL the details link points at the server itself, and works.
    let details = completed[0]["details_url"].as_str().expect("details_url");
    assert!(details.starts_with(&url), "{details}");
    let page = reqwest::get(details).await.expect("details page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    let _ = child.kill().await;
}
