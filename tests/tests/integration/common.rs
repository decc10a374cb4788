//! Test set-up: find the `nbci` binary, copy fixture notebooks into a temporary
//! directory (outputs are written beside inputs), run and parse results.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The workspace root (tests/ is one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `nbci` binary of this build profile: `target/<profile>/nbci`, beside `deps/`.
pub fn nbci_binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("current exe");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("nbci");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (`make test` does)",
        binary.display()
    );
    binary
}

/// A temporary directory holding a copy of `tests/notebooks` (with `bad/`).
pub fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&workspace().join("tests").join("notebooks"), dir.path());
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixtures") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture");
        }
    }
}

/// Runs `nbci ARGS` in `dir`.
pub fn nbci(dir: &Path, args: &[&str]) -> Output {
    Command::new(nbci_binary())
        .args(args)
        .current_dir(dir)
        .env_remove("NBCI_PYTHON")
        .output()
        .expect("nbci runs")
}

/// The process's exit code, with its output shown when it is not the expected one.
pub fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Runs `nbci run NAME.ipynb EXTRA...` in a fresh fixture copy; returns the
/// directory (kept alive), the process output and the result object.
pub fn run_fixture(name: &str, extra: &[&str]) -> (tempfile::TempDir, Output, Value) {
    let dir = fixtures();
    let notebook = format!("{name}.ipynb");
    let mut args = vec!["run", notebook.as_str()];
    args.extend_from_slice(extra);
    let output = nbci(dir.path(), &args);
    let result_path = dir.path().join(format!("{name}.result.json"));
    assert!(
        result_path.is_file(),
        "no result.json for {name}: {}",
        describe(&output)
    );
    let result = read_json(&result_path);
    (dir, output, result)
}

/// The concatenated text of every stream output in an executed notebook.
pub fn stream_text(notebook: &Value) -> String {
    let mut text = String::new();
    for cell in notebook["cells"].as_array().into_iter().flatten() {
        for output in cell["outputs"].as_array().into_iter().flatten() {
            match &output["text"] {
                Value::String(s) => text.push_str(s),
                Value::Array(lines) => lines
                    .iter()
                    .filter_map(Value::as_str)
                    .for_each(|l| text.push_str(l)),
                _ => {}
            }
        }
    }
    text
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM` from
/// /proc), in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `git ARGS` in `repo` with a fixed identity; its trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
