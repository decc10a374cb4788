//! Credentials and links, against the real `nbci serve` binary and the
//! strict fake GitHub: a revoked installation token is replaced, the logs of
//! whole flows (failures and retries included) carry no secret, and a
//! details link opens its own run only.

use std::time::Duration;

use serde_json::{Value, json};

use super::durability::{
    SECRET, Server, assert_each_completed_once, check_suite, notebook, payload, sleeper, until,
};
use super::fake_github::{FakeGitHub, Fault, TOKEN, private_key_pem};

/// What must never appear in a log: the webhook secret, any installation
/// token GitHub issued, and any line of the App's private key.
fn secrets(github: &FakeGitHub) -> Vec<String> {
    let mut secrets = vec![SECRET.to_owned(), TOKEN.to_owned()];
    secrets.extend(github.issued_tokens());
    secrets.extend(
        private_key_pem()
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .map(str::to_owned),
    );
    secrets
}

fn assert_no_secret(what: &str, log: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{what} shows a secret ({}...):\n{log}",
            &secret[..secret.len().min(6)]
        );
    }
}

/// After the installation token is revoked, every call failed with 401 for
/// good and no new token was requested. Now the App forgets it on the 401,
/// fetches a new one once, and the checks complete. Bound: 90 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_installation_token_is_forgotten_and_replaced_once() {
    let github = FakeGitHub::start_for_any_commit(
        &[("a.ipynb", "added"), ("b.ipynb", "added")],
        &[("a.ipynb", sleeper(3)), ("b.ipynb", sleeper(3))],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "aaaa000000000000000000000000000000000001";
    assert_eq!(
        server
            .deliver("check_suite", "revoke-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "both running", |runs| {
        runs.len() == 2 && runs.values().all(|r| r["status"] == "in_progress")
    })
    .await;
    assert_eq!(github.token_exchanges(), 1);
    let revoked = github.revoke_token();
    until(&github, &show, 60, "both completed", |runs| {
        runs.len() == 2 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        github.token_exchanges(),
        2,
        "one new token for the revocation, however many calls met it"
    );
    assert!(
        github.revoked_refusals() >= 1,
        "the revoked token was tried"
    );
    assert_each_completed_once(&github).await;
    assert!(
        server
            .log()
            .contains("GitHub refused the installation token"),
        "{}",
        server.log()
    );
    assert_no_secret("the server's log", &server.log(), &[revoked]);
    server.kill().await;
}

/// The log of a whole flow at the most verbose level, through everything
/// that goes wrong on the way (lost answers, 502s, a revoked token, a failing
/// notebook, bad metadata, a re-run), shows no webhook secret, no line of the
/// private key and no installation token, old or new. (The cloud services'
/// logs, with Google access tokens, are checked by
/// `cloud_loop::webhook_to_cloud_jobs_to_finalize_events_to_completed_checks`.)
/// Bound: 120 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_whole_flows_with_failures_and_retries_carry_no_secret() {
    let failing = notebook(&["raise ValueError('boom')"], json!({}));
    let soon = notebook(&["1"], json!({"nbci": {"timeout": "soon"}}));
    let github = FakeGitHub::start_for_any_commit(
        &[
            ("ok.ipynb", "added"),
            ("bad.ipynb", "added"),
            ("soon.ipynb", "added"),
        ],
        &[
            ("ok.ipynb", sleeper(2)),
            ("bad.ipynb", failing),
            ("soon.ipynb", soon),
        ],
    )
    .await;
    github.inject("POST", "/check-runs", Fault::LoseAnswer, 1);
    github.inject("PATCH", "/check-runs/", Fault::Status(502), 3);
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &github,
        data.path(),
        &[(
            "RUST_LOG",
            "debug,nbci=trace,nbci_shared=trace,github_webhook=trace,gcs_events=trace,scheduler=trace",
        )],
    )
    .await;
    let sha = "aaaa000000000000000000000000000000000002";
    // A delivery with a wrong signature and one with a good one.
    let body = serde_json::to_vec(&check_suite(sha)).expect("json");
    let refused = reqwest::Client::new()
        .post(format!("{}/github", server.url))
        .header("X-GitHub-Event", "check_suite")
        .header("X-GitHub-Delivery", "logs-0")
        .header(
            "X-Hub-Signature-256",
            nbci_shared::adapters::github::sign(b"not the secret", &body),
        )
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        server
            .deliver("check_suite", "logs-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 90, "three in progress or done", |runs| {
        runs.len() == 3 && runs.values().all(|r| r["status"] != "queued")
    })
    .await;
    github.revoke_token();
    until(&github, &show, 90, "three completed", |runs| {
        runs.len() == 3 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    let mut rerun = payload("check_run.rerequested.json");
    rerun["check_run"]["name"] = "nbci / bad.ipynb".into();
    rerun["check_run"]["head_sha"] = sha.into();
    assert_eq!(server.deliver("check_run", "logs-2", &rerun).await, 202);
    until(&github, &show, 60, "the re-run completed", |runs| {
        runs.len() == 4 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    let log = server.log();
    assert!(
        log.contains("GitHub refused the installation token") && log.contains("DEBUG"),
        "the flow went through its failures at the most verbose level:\n{log}"
    );
    assert_no_secret("the server's log", &log, &secrets(&github));
    // Nor does anything GitHub shows.
    for run in github.runs().values() {
        assert_no_secret("a check run", &run.to_string(), &secrets(&github));
    }
    server.kill().await;
}

/// `base?token=...` with `base` the run's key of `file`.
fn with_file(details_url: &str, prefix_from: &str, prefix_to: &str, file: &str) -> String {
    let (path, query) = details_url.split_once('?').expect("a token");
    let path = path.replace(prefix_from, prefix_to);
    let (dir, _) = path.rsplit_once('/').expect("a file");
    format!("{dir}/{file}?{query}")
}

/// A details link's token is derived from its run's key: it opens that run's
/// files, and nothing of another notebook, another commit or another attempt
/// of the same notebook; no token, or a truncated one, opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_details_link_token_cannot_be_replayed_for_another_run() {
    let github = FakeGitHub::start_for_any_commit(
        &[("a.ipynb", "added"), ("b.ipynb", "added")],
        &[("a.ipynb", sleeper(0)), ("b.ipynb", sleeper(0))],
    )
    .await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[]).await;
    let sha = "aaaa000000000000000000000000000000000003";
    assert_eq!(
        server
            .deliver("check_suite", "links-1", &check_suite(sha))
            .await,
        202
    );
    let show = || server.log();
    until(&github, &show, 60, "both completed", |runs| {
        runs.len() == 2 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    let mut rerun = payload("check_run.rerequested.json");
    rerun["check_run"]["name"] = "nbci / a.ipynb".into();
    rerun["check_run"]["head_sha"] = sha.into();
    assert_eq!(server.deliver("check_run", "links-2", &rerun).await, 202);
    until(&github, &show, 60, "the re-run completed", |runs| {
        runs.len() == 3 && runs.values().all(|r| r["status"] == "completed")
    })
    .await;
    let url_of = |name: &str, attempt: bool| -> String {
        github
            .runs()
            .into_values()
            .filter(|r| r["name"] == name)
            .map(|r: Value| r["details_url"].as_str().unwrap_or("").to_owned())
            .find(|url| url.contains("/attempts/") == attempt)
            .unwrap_or_else(|| panic!("no details link for {name}: {:#?}", github.runs()))
    };
    let a = url_of("nbci / a.ipynb", false);
    let a2 = url_of("nbci / a.ipynb", true);
    let b = url_of("nbci / b.ipynb", false);
    let status = |url: String| async move {
        reqwest::get(&url)
            .await
            .expect("answered")
            .status()
            .as_u16()
    };
    let prefix = |url: &str| {
        let path = url.split_once("/runs/").expect("runs").1;
        path.rsplit_once('/').expect("file").0.to_owned()
    };
    let (pa, pa2, pb) = (prefix(&a), prefix(&a2), prefix(&b));
    // Its own run: every file it serves.
    for file in ["output.html", "output.ipynb", "result.json"] {
        assert_eq!(status(with_file(&a, &pa, &pa, file)).await, 200, "{file}");
    }
    assert_eq!(status(a2.clone()).await, 200);
    // Replayed elsewhere: refused.
    for (from, to, what) in [
        (&a, &pb, "another notebook"),
        (&a, &pa2, "a later attempt"),
        (&a2, &pa, "an earlier attempt"),
        (
            &a,
            &pa.replace(sha, "bbbb000000000000000000000000000000000003"),
            "another commit",
        ),
    ] {
        let url = with_file(from, &prefix(from), to, "output.html");
        assert_eq!(status(url).await, 403, "{what}");
    }
    // Sources, markers and job records are never served, token or not.
    let job = with_file(&a, &pa, &pa, "job.json");
    assert_eq!(status(job).await, 404);
    let bare = a.split_once('?').expect("query").0.to_owned();
    assert_eq!(status(bare.clone()).await, 403, "no token");
    let token = a.split_once("token=").expect("token").1;
    let short = format!("{bare}?token={}", &token[..token.len() - 1]);
    assert_eq!(status(short).await, 403, "a truncated token");
    server.kill().await;
}
