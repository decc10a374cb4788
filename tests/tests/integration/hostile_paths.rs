//! Hostile paths on the command line and in repositories, against the real
//! `nbci` binary: FIFOs, devices and symbolic links out of the repository
//! as notebooks, devices and FIFOs as output files, a disk that fills up,
//! and metadata that is wrong. Each case ends in bounded time with the
//! contract's exit code, and nothing half-written under a final name.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::{describe, exit_code, fixtures, git, nbci_binary, read_json, workspace};

/// The address space `nbci` gets in the cases that must not grow: reading
/// `/dev/zero` into memory would fail (and abort) far below it.
const ADDRESS_SPACE_KIB: u64 = 1024 * 1024;

/// Runs `nbci ARGS` in `dir` under a 1 GiB address-space limit, killed after
/// `limit`; returns the output and how long it took.
fn nbci_bounded(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(nbci_binary())
        .args(args)
        .current_dir(dir)
        .env_remove("NBCI_PYTHON")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nbci starts");
    let deadline = started + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "nbci {args:?} still ran after {limit:?}: {}",
                describe(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (output, started.elapsed())
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Bound: each exits 2 within 5 s under a 1 GiB address space.
#[test]
fn nbci_run_refuses_fifos_and_devices_as_notebooks_without_hanging_or_growing() {
    let dir = fixtures();
    mkfifo(&dir.path().join("pipe.ipynb"));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.ipynb")).expect("link");
    for (notebook, says) in [
        ("pipe.ipynb", "FIFO"),
        ("/dev/zero", "device"),
        ("zero.ipynb", "device"),
    ] {
        let (output, took) = nbci_bounded(dir.path(), &["run", notebook], Duration::from_secs(5));
        eprintln!(
            "nbci run {notebook}: exit {:?} after {took:?}",
            output.status.code()
        );
        assert_eq!(exit_code(&output), 2, "{notebook}: {}", describe(&output));
        assert!(
            stderr(&output).contains(says),
            "{notebook}: {}",
            describe(&output)
        );
    }
    assert!(!dir.path().join("pipe.out.ipynb").exists());
    assert!(!dir.path().join("zero.result.json").exists());
}

/// `--output /dev/zero` grew to 9 GB; `--result /dev/full` as root replaced
/// the device node. Now anything but a regular file (or nothing) there is
/// bad input: exit 2 within 5 s (1 GiB address space), nothing written, the
/// node untouched.
#[test]
fn nbci_run_writes_only_regular_files() {
    let dir = fixtures();
    let fifo = dir.path().join("result.fifo");
    mkfifo(&fifo);
    std::os::unix::fs::symlink("/dev/null", dir.path().join("out-link.ipynb")).expect("link");
    let mut cases: Vec<(Vec<&str>, &Path)> = vec![
        (vec!["--output", "/dev/zero"], Path::new("/dev/zero")),
        (vec!["--result", "/dev/full"], Path::new("/dev/full")),
        (vec!["--result", "result.fifo"], fifo.as_path()),
        (vec!["--output", "out-link.ipynb"], Path::new("/dev/null")),
    ];
    // As root, a device node of our own: the case that replaced /dev/full.
    let device = dir.path().join("full");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        let made = Command::new("mknod")
            .args([device.as_os_str(), "c".as_ref(), "1".as_ref(), "7".as_ref()])
            .status()
            .expect("mknod");
        assert!(made.success());
        cases.push((vec!["--result", "full"], device.as_path()));
    }
    for (extra, node) in &cases {
        let kind = |path: &Path| std::fs::symlink_metadata(path).map(|m| m.file_type());
        let before = kind(node).expect("the node exists");
        let mut args = vec!["run", "pass.ipynb"];
        args.extend(extra);
        let (output, took) = nbci_bounded(dir.path(), &args, Duration::from_secs(5));
        eprintln!(
            "nbci {args:?}: exit {:?} after {took:?}",
            output.status.code()
        );
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        assert!(
            stderr(&output).contains("nbci writes only regular files"),
            "{args:?}: {}",
            describe(&output)
        );
        assert_eq!(
            kind(node).expect("still there"),
            before,
            "{args:?} changed {node:?}"
        );
        assert!(!dir.path().join("pass.out.ipynb").exists(), "{args:?}");
        assert!(!dir.path().join("pass.result.json").exists(), "{args:?}");
    }
}

/// `nbci check --junit/--summary` write through the atomic writer, which
/// replaces only regular files: a device is reported as a failure to write
/// (exit 4, the file named), and left as it was. Bound: 10 s.
#[test]
fn nbci_check_reports_are_never_written_over_a_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "no notebooks\n").expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "one"]);
    for flag in ["--junit", "--summary"] {
        let (output, took) =
            nbci_bounded(repo, &["check", flag, "/dev/full"], Duration::from_secs(10));
        eprintln!(
            "nbci check {flag} /dev/full: exit {:?} after {took:?}",
            output.status.code()
        );
        assert_eq!(exit_code(&output), 4, "{flag}: {}", describe(&output));
        assert!(
            stderr(&output).contains("cannot write /dev/full")
                && stderr(&output).contains("not a regular file"),
            "{flag}: {}",
            describe(&output)
        );
        let meta = std::fs::symlink_metadata("/dev/full").expect("/dev/full");
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type()),
            "/dev/full is still the device"
        );
    }
}

/// A notebook whose output does not fit: the disk is simulated full with a
/// file-size limit (`ulimit -f`, SIGXFSZ ignored so that writes fail with
/// EFBIG as on ENOSPC). The CLI names the executed notebook, exits 4, and
/// leaves neither it (truncated) nor a result under their final names.
/// Bound: 120 s.
#[test]
fn a_full_disk_names_the_file_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notebook = json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
                   "source": "print('x' * 2_000_000)"}]
    });
    std::fs::write(
        dir.path().join("big.ipynb"),
        serde_json::to_vec(&notebook).expect("json"),
    )
    .expect("write");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg("-c")
        // 500 KiB per file: the executed notebook (2 MB) cannot be written.
        .arg("trap '' XFSZ; ulimit -f 1000; exec \"$0\" run big.ipynb")
        .arg(nbci_binary())
        .current_dir(dir.path())
        .env_remove("NBCI_PYTHON")
        .output()
        .expect("nbci runs");
    let took = started.elapsed();
    eprintln!("full disk: exit {:?} after {took:?}", output.status.code());
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let message = stderr(&output);
    assert!(
        message.contains("cannot write big.out.ipynb"),
        "names the executed notebook: {message}"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["big.ipynb"], "nothing half-written is left");
    assert!(took < Duration::from_secs(120), "{took:?}");
}

/// A commit holding `evil.ipynb -> /dev/zero` ran out of memory, then hung on
/// a FIFO. Now links out of the repository are not created: the notebooks
/// that need them fail with the reason, the others run, and the summary names
/// every skipped link. Bound: 120 s under a 1 GiB address space.
#[test]
fn nbci_check_never_follows_links_out_of_the_repository() {
    let outside = tempfile::tempdir().expect("tempdir");
    let fifo = outside.path().join("pipe.ipynb");
    mkfifo(&fifo);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::copy(
        workspace().join("tests/notebooks/pass.ipynb"),
        repo.join("ok.ipynb"),
    )
    .expect("copy");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, repo.join(name)).expect("link");
    };
    link(Path::new("/dev/zero"), "evil.ipynb");
    link(&fifo, "pipe.ipynb");
    link(Path::new("../../../../../../../../../dev/zero"), "up.ipynb");
    link(Path::new("/etc"), "data");
    link(Path::new("ok.ipynb"), "alias.ipynb");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "hostile"]);
    let summary = repo.join("summary.md");
    let summary_arg = summary.display().to_string();
    let (output, took) = nbci_bounded(
        repo,
        &["check", "--summary", &summary_arg],
        Duration::from_secs(120),
    );
    eprintln!(
        "nbci check with hostile links: exit {:?} after {took:?}",
        output.status.code()
    );
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for needs in ["evil.ipynb", "pipe.ipynb", "up.ipynb"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(needs))
            .unwrap_or_else(|| panic!("{needs} not reported: {}", describe(&output)));
        assert!(line.contains("failed"), "{line}");
        assert!(line.contains("needs the symbolic link"), "{line}");
    }
    for runs in ["ok.ipynb", "alias.ipynb"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(runs))
            .unwrap_or_else(|| panic!("{runs} not reported: {}", describe(&output)));
        assert!(line.contains("succeeded"), "{line}");
    }
    let summary = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        summary.contains("4 symbolic link(s) leading out of the repository were not followed")
            && summary.contains("`data`"),
        "{summary}"
    );
}

fn bad_timeout_notebook() -> Vec<u8> {
    let mut notebook: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace().join("tests/notebooks/pass.ipynb")).expect("fixture"),
    )
    .expect("json");
    notebook["metadata"]["nbci"] = json!({"timeout": "soon"});
    serde_json::to_vec(&notebook).expect("json")
}

/// Invalid `metadata.nbci.timeout` is one error everywhere: `nbci run`
/// rejects it (exit 2, the field named), `nbci check` fails the notebook
/// with the reason, with or without `--timeout` (in CI, see
/// `hostile_repos::bad_metadata_fails_the_check_with_the_reason`).
#[test]
fn invalid_timeout_metadata_is_one_error_for_run_and_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    std::fs::write(repo.join("soon.ipynb"), bad_timeout_notebook()).expect("write");
    for extra in [&[][..], &["--timeout", "30s"][..]] {
        let mut args = vec!["run", "soon.ipynb"];
        args.extend(extra);
        let (output, _) = nbci_bounded(repo, &args, Duration::from_secs(10));
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        assert!(
            stderr(&output).contains("metadata.nbci.timeout"),
            "{}",
            describe(&output)
        );
    }
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "--quiet", "-m", "soon"]);
    for extra in [&[][..], &["--timeout", "30s"][..]] {
        let mut args = vec!["check"];
        args.extend(extra);
        let (output, _) = nbci_bounded(repo, &args, Duration::from_secs(60));
        assert_eq!(exit_code(&output), 1, "{args:?}: {}", describe(&output));
        let result = read_json(
            &repo
                .join(".git/nbci/check")
                .join(
                    String::from_utf8_lossy(
                        &Command::new("git")
                            .args(["rev-parse", "HEAD"])
                            .current_dir(repo)
                            .output()
                            .expect("git")
                            .stdout,
                    )
                    .trim(),
                )
                .join("soon.ipynb/result.json"),
        );
        assert_eq!(result["status"], "failed", "{args:?}: {result:#}");
        assert!(
            result["message"]
                .as_str()
                .unwrap_or("")
                .contains("metadata.nbci.timeout"),
            "{args:?}: {result:#}"
        );
    }
}
