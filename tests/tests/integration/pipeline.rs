//! `nbci pipeline` on a repository written here: steps that read `run_id`
//! and `artifacts_dir`, a model that passes the gate and is deployed to the
//! local registry, a worse one that the gate rejects, the dry run of an AI
//! Platform deployment, a rollback, and a run killed between steps that the
//! next invocation resumes without repeating a step.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::nbci_binary;

fn notebook(parameters: &str, cells: &[&str]) -> String {
    let mut all = vec![
        json!({"cell_type": "code", "execution_count": null, "outputs": [],
        "metadata": {"tags": ["parameters"]}, "source": parameters}),
    ];
    for source in cells {
        all.push(json!({"cell_type": "code", "execution_count": null, "outputs": [], "metadata": {}, "source": source}));
    }
    serde_json::to_string_pretty(&json!({"nbformat": 4, "nbformat_minor": 5, "cells": all,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))
    .expect("json")
}

const PARAMETERS: &str = "run_id = 'none'\nartifacts_dir = 'artifacts'\nscore = 0.0\nsleep = 0";

/// A repository whose pipeline writes `score` as its accuracy.
fn repository(dir: &Path, score: f64, target: &str, sleep_in_train: u32) {
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, text).expect("write");
    };
    write(
        "nbci.yaml",
        &format!(
            "pipelines:\n  model:\n    branch: main\n    steps:\n      - notebook: nb/prepare.ipynb\n      - notebook: nb/train.ipynb\n        parameters: {{sleep: {sleep_in_train}}}\n      - notebook: nb/evaluate.ipynb\n        parameters: {{score: {score}}}\n    gate:\n      metrics: {{accuracy: \">= 0.5\"}}\n      better_than_deployed: accuracy\n    deploy:\n      target: {target}\n      model: scorer\n      framework: SCIKIT_LEARN\n      runtime_version: \"2.11\"\n      python_version: \"3.7\"\n"
        ),
    );
    write(
        "nb/prepare.ipynb",
        &notebook(
            PARAMETERS,
            &[
                "import os, json\nos.makedirs(artifacts_dir, exist_ok=True)\njson.dump({'run': run_id}, open(os.path.join(artifacts_dir, 'data.json'), 'w'))",
            ],
        ),
    );
    write(
        "nb/train.ipynb",
        &notebook(
            PARAMETERS,
            &[
                "import os, json, time\ntime.sleep(sleep)\nassert json.load(open(os.path.join(artifacts_dir, 'data.json')))['run'] == run_id\nopen(os.path.join(artifacts_dir, 'model.txt'), 'w').write('model of ' + run_id)",
            ],
        ),
    );
    write(
        "nb/evaluate.ipynb",
        &notebook(
            PARAMETERS,
            &[
                "import os, json\nassert os.path.exists(os.path.join(artifacts_dir, 'model.txt'))\njson.dump({'accuracy': score}, open(os.path.join(artifacts_dir, 'metrics.json'), 'w'))",
            ],
        ),
    );
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

fn nbci(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(nbci_binary())
        .args(args)
        .current_dir(dir)
        .env_remove("NBCI_BUCKET")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .output()
        .expect("nbci runs")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_passing_model_is_deployed_a_worse_one_rejected_and_rollback_restores() {
    let repo = tempfile::tempdir().expect("tempdir");
    let dir = repo.path();
    repository(dir, 0.8, "local", 0);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
    let first = nbci(dir, &["pipeline", "run"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("deployed") && out.contains("✓ accuracy >= 0.5"),
        "{out}"
    );
    let registry = dir.join(".git/nbci/pipelines/registry/scorer");
    let current = std::fs::read_to_string(registry.join("CURRENT")).expect("a version serves");

    // A worse model: the gate refuses it, nothing is deployed, exit 1.
    repository(dir, 0.6, "local", 0);
    git(dir, &["commit", "-qam", "worse"]);
    let second = nbci(dir, &["pipeline", "run", "model"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("gate_rejected") && out.contains("✗ accuracy no worse than deployed"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(registry.join("CURRENT")).expect("current"),
        current
    );

    // A better one is deployed; a rollback puts the first back.
    repository(dir, 0.9, "local", 0);
    git(dir, &["commit", "-qam", "better"]);
    let third = nbci(dir, &["pipeline", "run"]);
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert_ne!(
        std::fs::read_to_string(registry.join("CURRENT")).expect("current"),
        current
    );
    let status = nbci(dir, &["pipeline", "status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains("3 run(s)") && out.contains("gate_rejected"),
        "{}",
        text(&status)
    );
    let rollback = nbci(dir, &["pipeline", "rollback", "model"]);
    assert_eq!(rollback.status.code(), Some(0), "{}", text(&rollback));
    assert_eq!(
        std::fs::read_to_string(registry.join("CURRENT")).expect("current"),
        current
    );

    // Bad input: an unknown pipeline, and a directory that is no repository.
    let unknown = nbci(dir, &["pipeline", "run", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no pipeline \"nope\""));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let not_git = nbci(elsewhere.path(), &["pipeline", "run"]);
    assert_eq!(not_git.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&not_git.stderr).contains("is not a git repository"),
        "{}",
        text(&not_git)
    );
}

#[test]
fn deploy_dry_run_prints_the_ai_platform_requests() {
    let repo = tempfile::tempdir().expect("tempdir");
    let dir = repo.path();
    repository(dir, 0.8, "ai-platform", 0);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
    let missing = nbci(dir, &["pipeline", "deploy", "--dry-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("GOOGLE_CLOUD_PROJECT"));
    let output = Command::new(nbci_binary())
        .args(["pipeline", "deploy", "--dry-run"])
        .current_dir(dir)
        .env("GOOGLE_CLOUD_PROJECT", "demo-project")
        .env("NBCI_REGION", "europe-west1")
        .env("NBCI_BUCKET", "gs://models-bucket")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let create = lines
        .iter()
        .find(|l| {
            l["method"] == "POST"
                && l["url"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("/models/scorer/versions")
        })
        .unwrap_or_else(|| panic!("versions.create: {lines:#?}"));
    assert_eq!(
        create["url"],
        "https://ml.googleapis.com/v1/projects/demo-project/models/scorer/versions"
    );
    let body = &create["body"];
    assert!(
        body["deploymentUri"]
            .as_str()
            .unwrap_or("")
            .starts_with("gs://models-bucket/pipelines/model/runs/")
    );
    assert_eq!(body["framework"], "SCIKIT_LEARN");
    assert_eq!(
        (
            body["runtimeVersion"].as_str(),
            body["pythonVersion"].as_str()
        ),
        (Some("2.11"), Some("3.7"))
    );
    let name = body["name"].as_str().unwrap_or("");
    assert!(
        name.starts_with('v') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{name}"
    );
    let model = lines
        .iter()
        .find(|l| l["method"] == "POST" && l["url"].as_str().unwrap_or("").ends_with("/models"))
        .expect("models.create");
    assert_eq!(model["body"]["regions"], json!(["europe-west1"]));
}

#[test]
fn a_run_killed_between_steps_is_resumed_without_repeating_a_step() {
    let repo = tempfile::tempdir().expect("tempdir");
    let dir = repo.path();
    repository(dir, 0.8, "local", 8);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
    let mut child = Command::new(nbci_binary())
        .args(["pipeline", "run"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runs");
    // Kill it while step 2 (train, sleeping 8 s) runs.
    let runs = dir.join(".git/nbci/pipelines/objects/pipelines/model/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let found = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(Result::ok);
        if let Some(entry) = found {
            let path = entry.path().join("state.json");
            if let Ok(text) = std::fs::read_to_string(&path) {
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                if value["phase"] == "step_submitted" && value["step"] == 1 {
                    break path;
                }
            }
        }
        assert!(Instant::now() < deadline, "step 2 never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().expect("kill");
    let _ = child.wait();
    let prepare_result = std::fs::read_dir(state.parent().expect("run").join("steps"))
        .expect("steps")
        .filter_map(Result::ok)
        .map(|e| e.path().join("result.json"))
        .find(|p| p.to_string_lossy().contains("0-prepare"))
        .expect("step 1's result");
    let before = std::fs::metadata(&prepare_result)
        .and_then(|m| m.modified())
        .expect("mtime");
    // The next invocation finishes the killed run first, then runs its own.
    let next = nbci(dir, &["pipeline", "run"]);
    assert_eq!(next.status.code(), Some(0), "{}", text(&next));
    let resumed: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(resumed["phase"], "deployed", "{resumed:#}");
    assert_eq!(
        resumed["steps"][0]["resubmissions"], 0,
        "step 1 was not repeated"
    );
    assert_eq!(resumed["steps"][2]["resubmissions"], 0);
    let after = std::fs::metadata(&prepare_result)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after, "step 1's result was not written again");
}
