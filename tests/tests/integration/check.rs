//! `nbci check` on real git repositories: which notebooks run, reports, exit codes.

use std::path::Path;
use std::process::Command;

use super::common::{describe, exit_code, git, nbci, read_json, workspace};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("tests/notebooks").join(name)).expect("fixture")
}

/// A repository whose first commit has `pass` and `unicode` notebooks and a
/// README; returns it with the first commit's id.
fn repository() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::create_dir_all(repo.join("nb")).expect("mkdir");
    std::fs::write(repo.join("nb/pass.ipynb"), fixture("pass.ipynb")).expect("write");
    std::fs::write(repo.join("nb/unicode.ipynb"), fixture("unicode.ipynb")).expect("write");
    std::fs::write(repo.join("README.md"), "demo\n").expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "first"]);
    let first = git(repo, &["rev-parse", "HEAD"]);
    (dir, first)
}

#[test]
fn only_added_and_modified_notebooks_run_and_reports_are_written() {
    let (dir, _first) = repository();
    let repo = dir.path();
    // Second commit: add a failing notebook, modify one, delete one, touch a non-notebook.
    std::fs::write(repo.join("nb/fail.ipynb"), fixture("fail_at_cell.ipynb")).expect("write");
    let mut modified = fixture("pass.ipynb");
    modified.extend_from_slice(b"\n");
    std::fs::write(repo.join("nb/pass.ipynb"), modified).expect("write");
    std::fs::remove_file(repo.join("nb/unicode.ipynb")).expect("rm");
    std::fs::write(repo.join("README.md"), "changed\n").expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "second"]);
    let head = git(repo, &["rev-parse", "HEAD"]);

    let reports = tempfile::tempdir().expect("tempdir");
    let junit = reports.path().join("junit.xml");
    let summary = reports.path().join("summary.md");
    let output = nbci(
        repo,
        &[
            "check",
            "--jobs",
            "2",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--summary",
            summary.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("nb/fail.ipynb") && stdout.contains("nb/pass.ipynb"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("unicode"),
        "deleted notebooks are skipped: {stdout}"
    );
    assert!(
        stdout.contains("2 notebooks: 1 passed, 1 failed"),
        "{stdout}"
    );

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"nb/fail.ipynb\""), "{xml}");
    let md = std::fs::read_to_string(&summary).expect("summary written");
    assert!(md.contains("Failed at cell 4 of 5: ValueError"), "{md}");

    // Results sit in the git dir, per commit and notebook path.
    let result = read_json(
        &repo
            .join(".git/nbci/check")
            .join(&head)
            .join("nb/fail.ipynb/result.json"),
    );
    assert_eq!(result["failed_cell"]["index"], 3);
    assert_eq!(result["notebook"], "nb/fail.ipynb");
    // The working tree is left alone.
    assert_eq!(git(repo, &["status", "--porcelain"]), "");
}

#[test]
fn a_root_commit_runs_every_notebook() {
    let (dir, _first) = repository();
    let output = nbci(dir.path(), &["check", "--jobs", "2"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 notebooks: 2 passed"), "{stdout}");
}

#[test]
fn a_commit_without_notebook_changes_runs_nothing() {
    let (dir, _first) = repository();
    std::fs::write(dir.path().join("README.md"), "more\n").expect("write");
    git(dir.path(), &["commit", "--quiet", "-am", "docs"]);
    let output = nbci(dir.path(), &["check"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("no notebooks"));
}

#[test]
fn a_renamed_notebook_runs_at_its_new_path_and_base_can_be_given() {
    let (dir, first) = repository();
    let repo = dir.path();
    git(repo, &["mv", "nb/pass.ipynb", "nb/renamed.ipynb"]);
    git(repo, &["commit", "--quiet", "-m", "rename"]);
    std::fs::write(repo.join("other.txt"), "x").expect("write");
    git(repo, &["add", "other.txt"]);
    git(repo, &["commit", "--quiet", "-m", "unrelated"]);
    let output = nbci(repo, &["check", "--base", &first, "--commit", "HEAD"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("nb/renamed.ipynb"), "{stdout}");
    assert!(
        stdout.contains("1 notebook: 1 passed, 0 failed, 0 timed out, 0 errors"),
        "{stdout}"
    );
}

#[test]
fn a_committed_file_that_is_not_a_notebook_fails_its_check() {
    let (dir, _first) = repository();
    std::fs::write(dir.path().join("nb/broken.ipynb"), "{not json").expect("write");
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "--quiet", "-m", "broken"]);
    let output = nbci(dir.path(), &["check"]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("not valid JSON"));
}

#[test]
fn bad_revisions_and_directories_exit_2() {
    let (dir, _first) = repository();
    for args in [
        vec!["check", "--commit", "no-such-rev"],
        vec!["check", "--base", "no-such-rev"],
        vec!["check", "--repo", "/nonexistent/repo"],
        vec!["check", "--jobs", "0"],
    ] {
        let output = nbci(dir.path(), &args);
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let not_a_repo = tempfile::tempdir().expect("tempdir");
    let output = nbci(not_a_repo.path(), &["check"]);
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(". is not a git repository"),
        "{}",
        describe(&output)
    );
    let dir = not_a_repo.path().to_str().expect("utf-8");
    let output = nbci(Path::new("/"), &["check", "--repo", dir]);
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{dir} is not a git repository")),
        "{stderr}"
    );
    assert!(!stderr.contains("HEAD"), "{stderr}");
}

#[test]
fn sigterm_stops_the_check_saving_what_runs_and_running_nothing_more() {
    let (dir, _first) = repository();
    let repo = dir.path();
    // Each notebook says when it is in its long cell by creating a file the
    // test waits for: a fixed sleep raced the kernel's start on a loaded machine.
    let signs = tempfile::tempdir().expect("tempdir");
    for name in ["a", "b", "c"] {
        let sign = signs.path().join(name);
        let source = format!(
            "import time, pathlib\nprint('sleeping', flush=True)\npathlib.Path({:?}).touch()\ntime.sleep(120)",
            sign.display().to_string()
        );
        let sleeper = serde_json::json!({
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
                       "source": source}]
        });
        std::fs::write(
            repo.join(format!("nb/slow_{name}.ipynb")),
            serde_json::to_vec(&sleeper).expect("json"),
        )
        .expect("write");
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "slow"]);
    let out = tempfile::tempdir().expect("tempdir");
    let child = Command::new(super::common::nbci_binary())
        .args(["check", "--jobs", "1", "--out-dir"])
        .arg(out.path())
        .current_dir(repo)
        .env_remove("NBCI_PYTHON")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nbci runs");
    // The notebooks run in the order listed: slow_a first.
    let waiting = std::time::Instant::now();
    while !signs.path().join("a").exists() {
        if waiting.elapsed().as_secs() >= 120 {
            let mut child = child;
            let _ = child.kill();
            let output = child.wait_with_output().expect("nbci ends");
            let started: Vec<_> = std::fs::read_dir(signs.path())
                .expect("signs")
                .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
                .collect();
            panic!(
                "slow_a never reached its long cell (started: {started:?}): {}",
                describe(&output)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The kernel's "sleeping" output travels to nbci beside the file's creation.
    std::thread::sleep(std::time::Duration::from_secs(1));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let stopped = std::time::Instant::now();
    let output = child.wait_with_output().expect("nbci ends");
    assert!(stopped.elapsed().as_secs() < 30, "{:?}", stopped.elapsed());
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopped by a signal: 2 notebooks did not run"),
        "{stderr}"
    );
    let result = read_json(&out.path().join("nb/slow_a.ipynb/result.json"));
    assert_eq!(result["status"], "error", "{result}");
    assert!(
        result["message"].as_str().unwrap_or("").contains("SIGTERM"),
        "{result}"
    );
    let executed = read_json(&out.path().join("nb/slow_a.ipynb/output.ipynb"));
    assert!(executed.to_string().contains("sleeping"), "{executed}");
    assert!(!out.path().join("nb/slow_c.ipynb/result.json").exists());
}
