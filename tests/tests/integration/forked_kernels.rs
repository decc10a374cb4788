//! Kernels forked from the driver's zygote (`nbci check` with more notebooks
//! than slots, and every server) must be indistinguishable, to a notebook,
//! from kernels `jupyter_client` launches: same `sys.path`, arguments,
//! session, environment and working directory, a random state of their own,
//! and nothing left running after them.

use serde_json::Value;

use super::common::{describe, exit_code, git, nbci, read_json, stream_text};
use super::run::{background_cells, marker, processes_with, write_notebook};

/// What a kernel says about itself, as one JSON line.
const FACTS: &str = r#"import json, os, random, sys
print("FACTS" + json.dumps({
    "forked": b"-m\x00ipykernel_launcher" not in open("/proc/self/cmdline", "rb").read(),
    "path": sys.path,
    "argv0": os.path.basename(sys.argv[0]),
    "argv1": sys.argv[1:2],
    "session_leader": os.getsid(0) == os.getpid(),
    "name": __name__,
    "token": "NBCI_RUN" in os.environ,
    "parent": "JPY_PARENT_PID" in os.environ,
    "in_notebook_dir": os.path.isfile("beside.txt"),
    "random": random.random(),
}), flush=True)"#;

fn facts(executed: &Value) -> Value {
    let text = stream_text(executed);
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("FACTS"))
        .unwrap_or_else(|| panic!("no facts in {text}"));
    serde_json::from_str(line).expect("facts are JSON")
}

#[test]
fn forked_kernels_look_like_launched_ones_and_leave_no_process_behind() {
    let repo = tempfile::tempdir().expect("tempdir");
    let marker = marker();
    let mut cells = vec![FACTS.to_owned()];
    cells.extend(background_cells(&marker));
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    let names = ["one", "two", "three"];
    for name in names {
        write_notebook(repo.path(), name, &cells);
    }
    std::fs::write(repo.path().join("beside.txt"), "data").expect("write");
    git(repo.path(), &["init", "--quiet"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "--quiet", "-m", "notebooks"]);

    // The reference: `nbci run` launches its one kernel the usual way.
    let alone = tempfile::tempdir().expect("tempdir");
    write_notebook(alone.path(), "one", &cells);
    std::fs::write(alone.path().join("beside.txt"), "data").expect("write");
    let output = nbci(alone.path(), &["run", "one.ipynb"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let launched = facts(&read_json(&alone.path().join("one.out.ipynb")));
    assert_eq!(launched["forked"], false, "{launched}");
    assert!(processes_with(&marker).is_empty());

    // Three notebooks in one slot: their kernels are forked.
    let out = tempfile::tempdir().expect("tempdir");
    let out_dir = out.path().to_str().expect("utf-8");
    let output = nbci(repo.path(), &["check", "--jobs", "1", "--out-dir", out_dir]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let mut randoms = Vec::new();
    for name in names {
        let forked = facts(&read_json(
            &out.path().join(format!("{name}.ipynb/output.ipynb")),
        ));
        assert_eq!(forked["forked"], true, "{name}: {forked}");
        for fact in [
            "path",
            "argv0",
            "argv1",
            "session_leader",
            "name",
            "token",
            "parent",
            "in_notebook_dir",
        ] {
            assert_eq!(forked[fact], launched[fact], "{name}: {fact}");
        }
        assert_eq!(forked["in_notebook_dir"], true, "{name}: {forked}");
        randoms.push(forked["random"].to_string());
    }
    randoms.dedup();
    assert_eq!(randoms.len(), names.len(), "one random state: {randoms:?}");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}
