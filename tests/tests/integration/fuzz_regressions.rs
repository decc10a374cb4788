//! The fuzz targets' regression inputs (`fuzz/regressions/<target>/`),
//! replayed through the same calls as `fuzz/fuzz_targets/<target>.rs`, on
//! the stable toolchain, in `make test`: a crash `make fuzz` found stays
//! fixed. Each input must be handled (an error is fine) within a second.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use nbci_shared::adapters::gcp::events::{parse_object_event, parse_pushed_message};
use nbci_shared::adapters::github::events::parse_event;
use nbci_shared::domain::notebook::Notebook;
use nbci_shared::domain::pipeline::spec::PipelineSpec;
use nbci_shared::util::archive::{read_files, unpack_tar_within, unpack_tarball_within};

use super::common::workspace;

/// Runs `target` on every input kept for it; returns how many there were.
fn replay(name: &str, target: impl Fn(&[u8])) -> usize {
    let dir = workspace().join("fuzz/regressions").join(name);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("input");
        let started = Instant::now();
        target(&data);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{} took {took:?}",
            path.display()
        );
        count += 1;
    }
    count
}

// The bodies below are the fuzz targets' own (fuzz/fuzz_targets/*.rs).

fn webhook_payload(data: &[u8]) {
    const EVENTS: &[&str] = &[
        "check_suite",
        "check_run",
        "pull_request",
        "push",
        "ping",
        "issues",
    ];
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(*first) % EVENTS.len()];
    if let Ok(event) = parse_event(event, body) {
        let _ = event.trigger("fuzz-delivery");
    }
}

fn notebook(data: &[u8]) {
    if let Ok(notebook) = Notebook::parse(Path::new("fuzz.ipynb"), data) {
        let _ = notebook.environment();
        let _ = notebook.has_parameters_cell();
        let _ = notebook.first_error(&notebook);
    }
}

fn tarball(data: &[u8]) {
    let root = tempfile::tempdir().expect("scratch");
    let dest = root.path().join("checkout");
    let _ = unpack_tarball_within(data, &dest, 1 << 20);
    let _ = std::fs::remove_dir_all(&dest);
    let _ = unpack_tar_within(data, &dest, 1 << 20);
    let wanted = ["a.ipynb".to_owned()].into_iter().collect();
    let _ = read_files(data, &wanted, 1 << 20);
    for entry in std::fs::read_dir(root.path()).expect("scratch").flatten() {
        assert_eq!(
            entry.file_name(),
            "checkout",
            "written outside the checkout"
        );
    }
}

fn gcs_event(data: &[u8]) {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (&[][..], data),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = parse_object_event(&headers, body);
}

fn pushed_message(data: &[u8]) {
    let _ = parse_pushed_message(data);
}

fn pipeline_spec(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PipelineSpec::parse(text, |path| path.ends_with(".ipynb"));
    }
}

/// A fuzz target: its name and its body.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_kept_fuzz_input_is_handled() {
    let targets: [Target; 6] = [
        ("webhook_payload", webhook_payload),
        ("notebook", notebook),
        ("tarball", tarball),
        ("gcs_event", gcs_event),
        ("pushed_message", pushed_message),
        ("pipeline_spec", pipeline_spec),
    ];
    for (name, target) in targets {
        let replayed = replay(name, target);
        assert!(replayed > 0, "no regression inputs for {name}");
    }
}

/// YAML's "billion laughs": nine aliases deep, 9^9 nodes once expanded.
/// Refused, not expanded.
#[test]
fn a_yaml_alias_bomb_is_refused_quickly() {
    let text = std::fs::read_to_string(
        workspace().join("fuzz/regressions/pipeline_spec/billion-laughs.yaml"),
    )
    .expect("input");
    let started = Instant::now();
    let result = PipelineSpec::parse(&text, |_| true);
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
}
