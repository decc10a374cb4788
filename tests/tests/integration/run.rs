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
