//! Conformance: `nbci check` over 46 notebooks from the papermill, nbclient and
//! nbmake test suites (tests/conformance/notebooks, see SOURCES.md). Each
//! verdict and failing cell must be what `make conformance` established
//! against papermill itself (tests/conformance/expected.json: papermill's
//! verdict, or the documented difference: raises-exception, kernel fallback).

use std::process::Command;

use super::common::{copy_dir, describe, nbci, read_json, workspace};

#[test]
fn verdicts_match_papermill_on_real_test_suite_notebooks() {
    let corpus = workspace().join("tests/conformance");
    let expected = read_json(&corpus.join("expected.json"));
    let expected = expected.as_object().expect("expected.json is an object");
    let repo = tempfile::tempdir().expect("tempdir");
    copy_dir(&corpus.join("notebooks"), repo.path());
    for args in [
        vec!["init", "--quiet"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "corpus",
        ],
    ] {
        let status = Command::new("git")
            .args(&args)
            .current_dir(repo.path())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let output = nbci(
        repo.path(),
        &[
            "check",
            "--jobs",
            "2",
            "--timeout",
            "120",
            "--out-dir",
            out.path().to_str().expect("utf-8"),
        ],
    );
    assert!(
        matches!(output.status.code(), Some(0 | 1 | 4)),
        "{}",
        describe(&output)
    );
    let mut mismatches = Vec::new();
    for (notebook, want) in expected {
        let result = read_json(&out.path().join(notebook).join("result.json"));
        let got = (
            result["status"].clone(),
            result["failed_cell"]["index"].clone(),
            result["failed_cell"]["ename"].clone(),
        );
        let wanted = (
            want["status"].clone(),
            want["index"].clone(),
            want["ename"].clone(),
        );
        if got != wanted {
            mismatches.push(format!(
                "{notebook}: got {got:?}, expected {wanted:?} (papermill: {})",
                want["papermill"].as_str().unwrap_or("?")
            ));
        }
    }
    assert_eq!(expected.len(), 46, "the whole corpus is checked");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
