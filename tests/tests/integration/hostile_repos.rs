//! Hostile and odd repositories in CI, against the real `nbci serve` binary
//! and the strict fake GitHub: the verdict is the notebook's, with the
//! reason, never an infrastructure error that a re-run cannot fix.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::durability::{Server, check_suite, notebook, payload, sleeper, until};
use super::fake_github::FakeGitHub;

fn run_named(github: &FakeGitHub, name: &str) -> Value {
    github
        .runs()
        .into_values()
        .find(|run| run["name"] == name)
        .unwrap_or_else(|| panic!("no check run {name}: {:#?}", github.runs()))
}

fn summary_of(run: &Value) -> String {
    format!(
        "{}\n{}",
        run["output"]["title"].as_str().unwrap_or(""),
        run["output"]["summary"].as_str().unwrap_or("")
    )
}

/// A notebook whose `metadata.nbci.timeout` is `"soon"` ran with no limit in
/// `nbci serve`. Now its check fails, naming the field. Bound: 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_fails_the_check_with_the_reason() {
    let soon = notebook(
        &["print('never runs')"],
        json!({"nbci": {"timeout": "soon"}}),
    );
    let github =
        FakeGitHub::start_for_any_commit(&[("soon.ipynb", "added")], &[("soon.ipynb", soon)]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "7777777777777777777777777777777777777777";
    assert_eq!(
        server
            .deliver("check_suite", "soon-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "the check completed", |runs| {
        runs.values().any(|r| r["status"] == "completed")
    })
    .await;
    let run = run_named(&github, "nbci / soon.ipynb");
    assert_eq!(run["conclusion"], "failure", "{run:#}");
    let summary = summary_of(&run);
    assert!(summary.contains("metadata.nbci.timeout"), "{summary}");
    assert!(!summary.contains("Infrastructure error"), "{summary}");
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    server.kill().await;
}

/// One absolute symbolic link failed every notebook of the commit as an
/// "Infrastructure error". Now links out of the checkout are skipped: the
/// notebook that needs one fails with the reason, the others pass, and
/// their summary names the skipped links. Bound: 90 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_repository_fail_only_the_notebooks_that_need_them() {
    let github = FakeGitHub::start_with_links(
        &[("ok.ipynb", "added"), ("evil.ipynb", "added")],
        &[("ok.ipynb", sleeper(0))],
        &[
            ("evil.ipynb", "/dev/zero"),
            ("data", "/etc"),
            ("up", "../../../.."),
        ],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "8888888888888888888888888888888888888888";
    assert_eq!(
        server
            .deliver("check_suite", "links-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 90, "both completed", |runs| {
        runs.len() == 2 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    let ok = run_named(&github, "nbci / ok.ipynb");
    assert_eq!(ok["conclusion"], "success", "{ok:#}");
    let note = summary_of(&ok);
    assert!(
        note.contains("3 symbolic link(s) leading out of the repository were not followed")
            && note.contains("`data`"),
        "{note}"
    );
    let evil = run_named(&github, "nbci / evil.ipynb");
    assert_eq!(evil["conclusion"], "failure", "{evil:#}");
    let reason = summary_of(&evil);
    assert!(
        reason.contains("needs the symbolic link evil.ipynb -> /dev/zero"),
        "{reason}"
    );
    assert!(!reason.contains("Infrastructure error"), "{reason}");
    assert!(github.problems().is_empty(), "{:?}", github.problems());
    server.kill().await;
}

/// A `check_run` re-run of a check named `nbci / README.md` ran a file that
/// is not a notebook. Now re-runs go through the notebook filter: answered
/// 202 "ignored", and nothing is created or run. Bound: 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_check_that_is_not_a_notebook_runs_nothing() {
    let github = FakeGitHub::start_for_any_commit(
        &[("README.md", "modified")],
        &[("README.md", b"# hello\n".to_vec())],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    for (name, action) in [
        ("nbci / README.md", "check_run.rerequested.json"),
        (
            "nbci / notes/.ipynb_checkpoints/a-checkpoint.ipynb",
            "check_run.rerequested.json",
        ),
        ("nbci / README.md", "check_run.requested_action.json"),
    ] {
        let mut rerun = payload(action);
        rerun["check_run"]["name"] = name.into();
        let body = serde_json::to_vec(&rerun).expect("json");
        let answer = reqwest::Client::new()
            .post(format!("{}/github", server.url))
            .header("X-GitHub-Event", "check_run")
            .header("X-GitHub-Delivery", format!("rerun-{}", body.len()))
            .header(
                "X-Hub-Signature-256",
                nbci_shared::adapters::github::sign(super::durability::SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status().as_u16(), 202, "{name}");
        let text = answer.text().await.expect("text");
        assert!(text.starts_with("ignored"), "{name}: {text}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(github.runs().is_empty(), "{:#?}", github.runs());
    let calls = github.server.received_requests().await.unwrap_or_default();
    assert!(calls.is_empty(), "no call to GitHub: {calls:?}");
    server.kill().await;
}

/// Job checkouts were created world-readable. Now each is 0700 while its
/// notebook runs (the repository may be private). Bound: 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_checkouts_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let github =
        FakeGitHub::start_for_any_commit(&[("slow.ipynb", "added")], &[("slow.ipynb", sleeper(5))])
            .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "9999999999999999999999999999999999999999";
    assert_eq!(
        server
            .deliver("check_suite", "private-1", &check_suite(sha))
            .await,
        202
    );
    let work = data.path().join("work");
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkout = loop {
        let found = std::fs::read_dir(&work).ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("nbci-job-"))
        });
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(
            Instant::now() < deadline,
            "no checkout appeared\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mode = std::fs::metadata(&checkout)
        .expect("checkout")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{} is {mode:o}", checkout.display());
    let show = || server.log();
    until(&github, &show, 60, "completed", |runs| {
        runs.values().any(|r| r["status"] == "completed")
    })
    .await;
    server.kill().await;
}
