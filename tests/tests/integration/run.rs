//! `nbci run` on real notebooks: verdicts, failing cells, exit codes, outputs.

use super::common::{describe, exit_code, fixtures, nbci, read_json, run_fixture, stream_text};

#[test]
fn a_passing_notebook_exits_0_with_output_and_result() {
    let (dir, output, result) = run_fixture("pass", &[]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["notebook"], "pass.ipynb");
    assert!(result["failed_cell"].is_null());
    assert!(result["duration_s"].as_f64().expect("duration") > 0.0);
    assert_eq!(result["runtime"]["kernel"], "python3");
    assert!(
        result["output"]
            .as_str()
            .expect("output uri")
            .starts_with("file:///")
    );
    assert!(dir.path().join("pass.out.ipynb").is_file());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cell"), "progress lines expected: {stderr}");
}

#[test]
fn a_failing_notebook_names_the_committed_cell() {
    let (dir, output, result) = run_fixture("fail_at_cell", &[]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(result["status"], "failed");
    let cell = &result["failed_cell"];
    assert_eq!(cell["index"], 3);
    assert_eq!(cell["ename"], "ValueError");
    assert_eq!(cell["evalue"], "boom at cell 3");
    let traceback = cell["traceback"].as_array().expect("traceback");
    assert!(
        traceback
            .iter()
            .all(|line| !line.as_str().expect("str").contains('\u{1b}')),
        "ANSI codes must be stripped: {traceback:?}"
    );
    // The executed notebook is written after a failure too, and the cell after it never ran.
    let executed = read_json(&dir.path().join("fail_at_cell.out.ipynb"));
    assert!(!stream_text(&executed).contains("never"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Failed at cell 4 of 5: ValueError"),
        "{stdout}"
    );
}

#[test]
fn the_index_ignores_injected_parameters() {
    let (_dir, output, result) = run_fixture("fail_at_cell", &["-p", "extra=1"]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(result["failed_cell"]["index"], 3);
    assert_eq!(result["parameters"]["extra"], 1);
}

#[test]
fn a_syntax_error_names_the_cell_not_a_temporary_file() {
    let (_dir, output, result) = run_fixture("syntax_error", &[]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(result["failed_cell"]["index"], 2);
    assert_eq!(result["failed_cell"]["ename"], "SyntaxError");
    let evalue = result["failed_cell"]["evalue"].as_str().expect("evalue");
    assert!(evalue.ends_with("(cell 3, line 1)"), "{evalue}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Failed at cell 3 of 4: SyntaxError")
            && stdout.contains("(cell 3, line 1)"),
        "{stdout}"
    );
    assert!(!stdout.contains(".py, line"), "{stdout}");
}

#[test]
fn sys_exit_1_fails() {
    let (_dir, output, result) = run_fixture("sys_exit_1", &[]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(result["failed_cell"]["index"], 1);
    assert_eq!(result["failed_cell"]["ename"], "SystemExit");
}

#[test]
fn sys_exit_0_passes() {
    let (_dir, output, result) = run_fixture("sys_exit_0", &[]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(result["status"], "succeeded");
}

#[test]
fn a_kernel_that_dies_is_an_infrastructure_error() {
    let (dir, output, result) = run_fixture("kernel_dies", &[]);
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    assert_eq!(result["status"], "error");
    assert_eq!(result["failed_cell"]["index"], 1);
    assert_eq!(result["failed_cell"]["ename"], "DeadKernelError");
    assert!(dir.path().join("kernel_dies.out.ipynb").is_file());
}

#[test]
fn a_cell_past_its_timeout_times_out() {
    let started = std::time::Instant::now();
    let (dir, output, result) = run_fixture("sleeps", &["--cell-timeout", "2"]);
    assert_eq!(exit_code(&output), 3, "{}", describe(&output));
    assert_eq!(result["status"], "timed_out");
    assert_eq!(result["failed_cell"]["index"], 1);
    assert!(
        started.elapsed().as_secs() < 25,
        "the kernel must be stopped, not waited for"
    );
    let executed = read_json(&dir.path().join("sleeps.out.ipynb"));
    assert!(stream_text(&executed).contains("start"));
    assert!(!stream_text(&executed).contains("end"));
}

#[test]
fn a_notebook_past_its_timeout_times_out() {
    let (_dir, output, result) = run_fixture("sleeps", &["--timeout", "3s"]);
    assert_eq!(exit_code(&output), 3, "{}", describe(&output));
    assert_eq!(result["status"], "timed_out");
    assert_eq!(result["failed_cell"]["index"], 1);
}

#[test]
fn an_error_in_a_raises_exception_cell_is_expected() {
    let (dir, output, result) = run_fixture("raises_exception_tag", &[]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(result["status"], "succeeded");
    let executed = read_json(&dir.path().join("raises_exception_tag.out.ipynb"));
    assert!(stream_text(&executed).contains("continues"));
}

#[test]
fn a_real_error_after_a_raises_exception_cell_fails() {
    let (_dir, output, result) = run_fixture("raises_then_fails", &[]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(result["failed_cell"]["index"], 2);
    assert_eq!(result["failed_cell"]["ename"], "KeyError");
}

#[test]
fn skip_execution_cells_do_not_run() {
    let (_dir, output, result) = run_fixture("skip_execution_tag", &[]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(result["status"], "succeeded");
}

#[test]
fn injected_parameters_are_typed_and_visible() {
    let (dir, output, result) = run_fixture(
        "parameters",
        &[
            "-p",
            "alpha=0.5",
            "-p",
            "name=iris",
            "-p",
            "flag=True",
            "-p",
            "count=3",
            "-p",
            "nothing=None",
        ],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let executed = read_json(&dir.path().join("parameters.out.ipynb"));
    assert!(
        stream_text(&executed).contains("alpha=0.5 name='iris' flag=True count=3 nothing=None"),
        "{}",
        stream_text(&executed)
    );
    let injected = executed["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| {
            c["metadata"]["tags"]
                .to_string()
                .contains("injected-parameters")
        })
        .expect("an injected-parameters cell");
    assert!(injected["source"].to_string().contains("alpha = 0.5"));
    assert_eq!(result["parameters"]["count"], 3);
    assert_eq!(result["parameters"]["flag"], true);
}

#[test]
fn parameters_come_from_a_yaml_file_and_the_command_line_wins() {
    let dir = fixtures();
    std::fs::write(dir.path().join("p.yaml"), "alpha: 0.25\nname: from-file\n").expect("write");
    let output = nbci(
        dir.path(),
        &["run", "parameters.ipynb", "-f", "p.yaml", "-p", "name=cli"],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let executed = read_json(&dir.path().join("parameters.out.ipynb"));
    assert!(stream_text(&executed).contains("alpha=0.25 name='cli'"));
}

#[test]
fn a_notebook_without_a_parameters_cell_gets_a_warning() {
    let (_dir, output, _result) = run_fixture("no_parameters_cell", &["-p", "x=1"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no cell tagged `parameters`"), "{stderr}");
}

#[test]
fn the_notebook_runs_in_its_own_directory() {
    let dir = fixtures();
    // Run from elsewhere: the notebook must still find the file beside it.
    let output = nbci(
        dir.path().parent().expect("parent"),
        &[
            "run",
            dir.path()
                .join("reads_sibling_file.ipynb")
                .to_str()
                .expect("utf-8 path"),
        ],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let executed = read_json(&dir.path().join("reads_sibling_file.out.ipynb"));
    assert!(stream_text(&executed).contains("hello from beside the notebook"));
}

#[test]
fn unicode_output_survives() {
    let (dir, output, _result) = run_fixture("unicode", &[]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let executed = read_json(&dir.path().join("unicode.out.ipynb"));
    assert!(stream_text(&executed).contains("héllo wörld — ✓ 日本語 🚀"));
}

#[test]
fn output_and_result_paths_can_be_chosen() {
    let dir = fixtures();
    let output = nbci(
        dir.path(),
        &[
            "run",
            "pass.ipynb",
            "--output",
            "out/executed.ipynb",
            "--result",
            "out/r.json",
        ],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(dir.path().join("out/executed.ipynb").is_file());
    assert_eq!(
        read_json(&dir.path().join("out/r.json"))["status"],
        "succeeded"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_write_nothing() {
    let dir = fixtures();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "bad/not_json.ipynb"], "not valid JSON"),
        (&["run", "bad/empty.ipynb"], "empty"),
        (&["run", "bad/array.ipynb"], "JSON array"),
        (&["run", "bad/nbformat3.ipynb"], "nbformat 3"),
        (&["run", "bad/missing_cells.ipynb"], "`cells`"),
        (&["run", "bad/wrong_types.ipynb"], "cells"),
        (&["run", "bad/wrong_source_type.ipynb"], "cells[1].source"),
        (&["run", "bad"], "directory"),
        (&["run", "missing.ipynb"], "no such file"),
        (&["run", "pass.ipynb", "-p", "noequals"], "NAME=VALUE"),
        (&["run", "pass.ipynb", "-p", "1x=2"], "variable name"),
        (&["run", "pass.ipynb", "-f", "missing.yaml"], "missing.yaml"),
        (
            &["run", "pass.ipynb", "--output", "pass.ipynb"],
            "overwrite",
        ),
        (&["run", "pass.ipynb", "--timeout", "soon"], "duration"),
    ];
    let before = listing(dir.path());
    for (args, expected) in cases {
        let output = nbci(dir.path(), args);
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(listing(dir.path()), before, "{args:?} wrote something");
    }
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("prefix").display().to_string())
        .collect();
    names.sort();
    names
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_missing_interpreter_is_named_with_the_fix() {
    let dir = fixtures();
    let output = std::process::Command::new(super::common::nbci_binary())
        .args(["run", "pass.ipynb"])
        .current_dir(dir.path())
        .env("NBCI_PYTHON", "/nonexistent/python")
        .output()
        .expect("nbci runs");
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("make setup"), "{stderr}");
}

#[test]
fn a_python_without_papermill_is_named_with_the_fix() {
    let dir = fixtures();
    let output = std::process::Command::new(super::common::nbci_binary())
        .args(["run", "pass.ipynb"])
        .current_dir(dir.path())
        .env("NBCI_PYTHON", python_without_papermill())
        .output()
        .expect("nbci runs");
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("papermill") && stderr.contains("make setup"),
        "{stderr}"
    );
    assert!(!dir.path().join("pass.result.json").exists());
}

/// A Python with no papermill: the system interpreter with `-S`-like isolation is
/// not selectable through NBCI_PYTHON, so use a tiny wrapper script.
fn python_without_papermill() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nbci-nopm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("python");
    std::fs::write(&script, "#!/bin/sh\nexec python3 -I -S \"$@\"\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    script
}

/// A notebook of code cells, written as `name.ipynb` in `dir`.
pub(super) fn write_notebook(dir: &std::path::Path, name: &str, cells: &[&str]) {
    let cells: Vec<serde_json::Value> = cells
        .iter()
        .map(|source| {
            serde_json::json!({"cell_type": "code", "execution_count": null, "metadata": {},
                               "outputs": [], "source": source})
        })
        .collect();
    let notebook = serde_json::json!({
        "nbformat": 4, "nbformat_minor": 5, "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    });
    std::fs::write(
        dir.join(format!("{name}.ipynb")),
        serde_json::to_vec_pretty(&notebook).expect("json"),
    )
    .expect("write notebook");
}

/// A number no other test uses, to recognise this test's `sleep` processes.
pub(super) fn marker() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!(
        "90.{}{:03}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The cells that leave `sleep` processes behind the ways a notebook can: a
/// child in the kernel's process group, a child in a session of its own, and
/// orphans a shell left (`sleep &`), one of them in a session of its own
/// (`setsid`), which no process-group kill reaches.
pub(super) fn background_cells(marker: &str) -> Vec<String> {
    vec![
        format!(
            "import os, subprocess, time\n\
             subprocess.Popen(['sleep', '{marker}1'])\n\
             subprocess.Popen(['sleep', '{marker}2'], start_new_session=True)\n\
             os.system('(setsid sleep {marker}3 &)')"
        ),
        format!("subprocess.run('sleep {marker}4 &', shell=True)"),
        "time.sleep(0.5)\nprint('started', flush=True)".into(),
    ]
}

/// The live processes whose command line mentions `marker`.
pub(super) fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Waits until `count` processes mention `marker` (the notebook started them).
pub(super) fn wait_for_processes(marker: &str, count: usize) {
    let started = std::time::Instant::now();
    while processes_with(marker).len() < count {
        assert!(
            started.elapsed().as_secs() < 60,
            "the background processes never started: {:?}",
            processes_with(marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn background_processes_do_not_outlive_a_passing_notebook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = marker();
    let cells = background_cells(&marker);
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    write_notebook(dir.path(), "bg", &cells);
    let output = nbci(dir.path(), &["run", "bg.ipynb"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let executed = read_json(&dir.path().join("bg.out.ipynb"));
    assert!(stream_text(&executed).contains("started"));
    // nbci run returns once every process of the run is gone.
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[test]
fn background_processes_do_not_outlive_a_failure_or_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (failing, slow) = (marker(), marker());
    let mut cells = background_cells(&failing);
    cells.push("raise ValueError('after the background')".into());
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    write_notebook(dir.path(), "fails", &cells);
    let mut cells = background_cells(&slow);
    cells.push("time.sleep(60)".into());
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    write_notebook(dir.path(), "slow", &cells);

    let output = nbci(dir.path(), &["run", "fails.ipynb"]);
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    assert_eq!(processes_with(&failing), Vec::<String>::new());

    let output = nbci(dir.path(), &["run", "slow.ipynb", "--timeout", "6"]);
    assert_eq!(exit_code(&output), 3, "{}", describe(&output));
    assert_eq!(processes_with(&slow), Vec::<String>::new());
}

#[test]
fn sigterm_saves_the_executed_notebook_and_kills_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = marker();
    let mut cells = background_cells(&marker);
    cells.push("print('in the long cell', flush=True)\ntime.sleep(120)".into());
    cells.push("print('never')".into());
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    write_notebook(dir.path(), "long", &cells);
    let child = std::process::Command::new(super::common::nbci_binary())
        .args(["run", "long.ipynb"])
        .current_dir(dir.path())
        .env_remove("NBCI_PYTHON")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nbci runs");
    wait_for_processes(&marker, 4);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stopped = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let output = child.wait_with_output().expect("nbci ends");
    assert!(
        stopped.elapsed().as_secs() < 30,
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let result = read_json(&dir.path().join("long.result.json"));
    assert_eq!(result["status"], "error");
    assert_eq!(result["failed_cell"]["index"], 3, "{result}");
    assert!(
        result["message"].as_str().unwrap_or("").contains("SIGTERM"),
        "{result}"
    );
    // The executed notebook holds what ran, up to the cell that was stopped.
    let executed = read_json(&dir.path().join("long.out.ipynb"));
    let text = stream_text(&executed);
    assert!(text.contains("in the long cell"), "{text}");
    assert!(!text.contains("never"), "{text}");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

/// The engine's future dropped (what cancelling a job of `nbci serve` does)
/// kills the kernel and everything the notebook started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_run_leaves_no_process_behind() {
    use nbci_shared::adapters::local::engine::{PapermillEngine, Python, RunRequest};
    use nbci_shared::domain::notebook::Notebook;

    let dir = tempfile::tempdir().expect("tempdir");
    let marker = marker();
    let mut cells = background_cells(&marker);
    cells.push("time.sleep(120)".into());
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    write_notebook(dir.path(), "abandoned", &cells);
    let input = dir.path().join("abandoned.ipynb");
    let committed = Notebook::read(&input).expect("notebook");
    let engine = PapermillEngine::new(Python::discover(None).expect("the .venv of make setup"));
    let request = RunRequest {
        name: "abandoned.ipynb".into(),
        input,
        output: dir.path().join("out.ipynb"),
        result: dir.path().join("result.json"),
        parameters: Default::default(),
        kernel: None,
        cell_timeout: None,
        timeout: None,
        image: "local".into(),
        output_uri: None,
    };
    let silent: nbci_shared::adapters::local::engine::ProgressSink =
        std::sync::Arc::new(|_: &str, _: &_| {});
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(&request, &committed, &silent).await })
    };
    let waiting = marker.clone();
    tokio::task::spawn_blocking(move || wait_for_processes(&waiting, 4))
        .await
        .expect("waited");
    task.abort();
    let started = std::time::Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            started.elapsed().as_secs() < 10,
            "still alive after the run was dropped: {:?}",
            processes_with(&marker)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    engine.shutdown().await;
}

/// A notebook printing 200 MB fails at the cap, in bounded time and memory:
/// nbci and its driver stay small, and the executed notebook holds about the
/// cap, not the 200 MB.
#[test]
fn output_past_the_cap_fails_the_notebook_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_notebook(
        dir.path(),
        "loud",
        &[
            "import sys\nfor i in range(200):\n    sys.stdout.write('x' * 1_000_000 + '\\n')",
            "print('never')",
        ],
    );
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(super::common::nbci_binary())
        .args(["run", "loud.ipynb"])
        .current_dir(dir.path())
        .env_remove("NBCI_PYTHON")
        .env("NBCI_MAX_OUTPUT", "20MB")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nbci runs");
    // Peak resident memory of nbci and of its driver, sampled from /proc.
    let nbci_pid = child.id();
    let (mut nbci_peak, mut driver_peak) = (0_u64, 0_u64);
    while child.try_wait().expect("wait").is_none() {
        nbci_peak = nbci_peak.max(resident_kib(nbci_pid));
        for pid in children_of(nbci_pid) {
            driver_peak = driver_peak.max(resident_kib(pid));
        }
        assert!(started.elapsed().as_secs() < 120, "no end in sight");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let elapsed = started.elapsed();
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    let result = read_json(&dir.path().join("loud.result.json"));
    assert_eq!(result["status"], "failed");
    assert_eq!(result["failed_cell"]["index"], 0);
    assert_eq!(result["failed_cell"]["ename"], "OutputLimitExceeded");
    assert!(
        result["failed_cell"]["evalue"]
            .as_str()
            .unwrap_or("")
            .contains("NBCI_MAX_OUTPUT"),
        "{result}"
    );
    let written = std::fs::metadata(dir.path().join("loud.out.ipynb"))
        .expect("executed notebook")
        .len();
    assert!(
        written < 30_000_000,
        "the executed notebook is {written} bytes"
    );
    let executed = read_json(&dir.path().join("loud.out.ipynb"));
    assert!(executed.to_string().contains("OutputLimitExceeded"));
    eprintln!(
        "200 MB printed against a 20 MB cap: {elapsed:?}, peak RSS nbci {nbci_peak} KiB, driver {driver_peak} KiB, executed notebook {written} bytes"
    );
    assert!(elapsed.as_secs() < 60, "took {elapsed:?}");
    assert!(nbci_peak < 64 * 1024, "nbci peaked at {nbci_peak} KiB");
    // The driver holds what the kernel sent before it was stopped (ZeroMQ
    // queues a flood as fast as the kernel writes it): bounded by the flood,
    // not by the cap; measured about 560 MB for these 200 MB.
    assert!(
        driver_peak < 1024 * 1024,
        "the driver peaked at {driver_peak} KiB"
    );
}

/// Resident memory of `pid` in KiB (0 once it is gone).
fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the command may hold spaces, so cut after ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid)
            && let Ok(child) = entry.file_name().to_string_lossy().parse()
        {
            children.push(child);
        }
    }
    children
}
