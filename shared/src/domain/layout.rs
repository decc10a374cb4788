//! The bucket's layout (**contract**): the only module that spells keys.
//!
//! ```text
//! ci/{owner}/{repo}/{sha}/{notebook}/             one notebook's check on one commit
//!     check.json                                  its state machine (domain::check)
//!     job.json input.ipynb output.ipynb output.html result.json   attempt 1
//!     attempts/{n}/job.json ... result.json       re-run n (n >= 2): its own folder
//! src/{owner}/{repo}/{sha}.tar.gz                 the repository at that commit
//! pipelines/{pipeline}/runs/{run_id}/state.json   a pipeline run (domain::pipeline::run)
//!     metrics.json, model files ...               what the steps write to artifacts_dir (the run's folder)
//!     steps/{i}-{stem}/job.json ... result.json   step i's job (i from 0, stem of its notebook)
//! pipelines/{pipeline}/lock.json                  the active run and the one queued (domain::pipeline::lock)
//! pipelines/{pipeline}/deployed.json              the version serving now and its metrics (the gate's baseline)
//! deliveries/{id}                                 webhook dedupe markers (create-only)
//! events/{bucket}/{generation}-{flat_id(object)}   finalize-event dedupe markers (create-only)
//! active/ci/...                                   index of checks not completed yet
//! queue/{topic}/{id}.json                         the local event bus's pending messages
//! ```
//!
//! Keys are relative, `/`-separated, without empty, `.` or `..` segments or
//! control characters, at most 1024 bytes (GCS's limit) with segments of at
//! most 255 bytes (a file name's limit, for the directory bucket).

use super::repo::{CommitSha, RepoRef};

/// GCS's longest object name, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// A file name's longest length on common file systems, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Room kept after a check's prefix for the files beneath it
/// (`/attempts/{n}/output.ipynb` and the like).
const FILES_ROOM: usize = 48;

/// File names inside a job's folder.
pub const JOB_FILE: &str = "job.json";
pub const INPUT_FILE: &str = "input.ipynb";
pub const OUTPUT_FILE: &str = "output.ipynb";
pub const HTML_FILE: &str = "output.html";
pub const RESULT_FILE: &str = "result.json";
/// A check's state, beside attempt 1's files.
pub const CHECK_FILE: &str = "check.json";
/// A pipeline run's state.
pub const RUN_STATE_FILE: &str = "state.json";
/// The pipeline spec at the top of a repository (**contract**).
pub const PIPELINE_SPEC_FILE: &str = "nbci.yaml";
/// What the last step of a pipeline writes to `artifacts_dir` for the gate.
pub const METRICS_FILE: &str = "metrics.json";
/// A pipeline's lock: its active run and the trigger queued behind it.
pub const PIPELINE_LOCK_FILE: &str = "lock.json";
/// The version of a pipeline's model that serves now.
pub const DEPLOYED_FILE: &str = "deployed.json";

const CI: &str = "ci";
const SOURCES: &str = "src";
const PIPELINES: &str = "pipelines";
const DELIVERIES: &str = "deliveries";
const EVENTS: &str = "events";
const ACTIVE: &str = "active";
const QUEUE: &str = "queue";
const ATTEMPTS: &str = "attempts";
const RUNS: &str = "runs";
const STEPS: &str = "steps";
const PUSHES: &str = "pushes";
/// The longest notebook stem kept in a step's folder name.
const MAX_STEP_STEM: usize = 64;

/// Why a key cannot name an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidKey {
    pub key: String,
    pub reason: &'static str,
}

/// Checks that `key` can name an object in every bucket nbci uses.
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    let invalid = |reason| {
        Err(InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("absolute");
    }
    if key.chars().any(|c| c.is_control()) || key.contains('\\') {
        return invalid("control character or backslash");
    }
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return invalid("empty, `.` or `..` segment");
        }
        if part.len() > MAX_SEGMENT_BYTES {
            return invalid("a segment longer than 255 bytes");
        }
    }
    Ok(())
}

/// `ci/{owner}/{repo}/{sha}/{notebook}`: the folder of one notebook's check on
/// one commit, or why the notebook's path cannot have one.
pub fn check_prefix(repo: &RepoRef, sha: &CommitSha, notebook: &str) -> Result<String, InvalidKey> {
    let prefix = format!("{CI}/{}/{}/{sha}/{notebook}", repo.owner(), repo.name());
    validate_key(&prefix)?;
    if prefix.len() + FILES_ROOM > MAX_KEY_BYTES {
        return Err(InvalidKey {
            key: prefix.chars().take(200).collect(),
            reason: "too long for the files beneath it",
        });
    }
    Ok(prefix)
}

/// The state of the check whose folder is `check_prefix`.
pub fn check_state_key(check_prefix: &str) -> String {
    format!("{check_prefix}/{CHECK_FILE}")
}

/// The folder of attempt `attempt` of a check: attempt 1 is the check's own
/// folder (the contract's `ci/.../{notebook}/`), re-runs get `attempts/{n}`.
pub fn attempt_prefix(check_prefix: &str, attempt: u32) -> String {
    if attempt <= 1 {
        check_prefix.to_owned()
    } else {
        format!("{check_prefix}/{ATTEMPTS}/{attempt}")
    }
}

/// The marker that lists a check among those not completed yet.
pub fn active_key(check_prefix: &str) -> String {
    format!("{ACTIVE}/{check_prefix}")
}

/// The prefix of every active marker.
pub fn active_prefix() -> String {
    format!("{ACTIVE}/")
}

/// The prefix of the active markers of CI checks.
pub fn active_checks_prefix() -> String {
    format!("{ACTIVE}/{CI}/")
}

/// The prefix of the active markers of pipeline runs.
pub fn active_runs_prefix() -> String {
    format!("{ACTIVE}/{PIPELINES}/")
}

/// The check prefix an active marker stands for.
pub fn check_of_active_key(key: &str) -> Option<&str> {
    key.strip_prefix(ACTIVE)?.strip_prefix('/')
}

/// `src/{owner}/{repo}/{sha}.tar.gz`: the staged source of a commit.
pub fn source_key(repo: &RepoRef, sha: &CommitSha) -> String {
    format!("{SOURCES}/{}/{}/{sha}.tar.gz", repo.owner(), repo.name())
}

/// `deliveries/{id}`: the dedupe marker of a webhook delivery.
pub fn delivery_key(delivery: &str) -> Result<String, InvalidKey> {
    let key = format!("{DELIVERIES}/{delivery}");
    validate_key(&key)?;
    if delivery.contains('/') {
        return Err(InvalidKey {
            key,
            reason: "a delivery id has no `/`",
        });
    }
    Ok(key)
}

/// `events/{bucket}/{generation}-{flat_id(object)}`: the dedupe marker of
/// the finalize event of one generation of one object.
///
/// A generation never repeats for an object name, so (bucket, object,
/// generation) names one write: every redelivery of its event finds the
/// marker, while a later write of the same name (a re-run's result) does not.
/// The object's name is hashed because it is a path of its own, too long
/// and too deep to nest under `events/` as it is.
pub fn event_marker_key(bucket: &str, object: &str, generation: i64) -> Result<String, InvalidKey> {
    let key = format!("{EVENTS}/{bucket}/{generation}-{}", flat_id(object));
    validate_key(&key)?;
    if bucket.contains('/') {
        return Err(InvalidKey {
            key: key.chars().take(200).collect(),
            reason: "a bucket name has no `/`",
        });
    }
    Ok(key)
}

/// `queue/{topic}/{id}.json`: a message of the local event bus.
pub fn queue_key(topic: &str, id: &str) -> String {
    format!("{QUEUE}/{topic}/{id}.json")
}

/// The prefix of a topic's pending messages.
pub fn queue_prefix(topic: &str) -> String {
    format!("{QUEUE}/{topic}/")
}

/// `pipelines/{pipeline}/runs/{run_id}`: the folder of a pipeline run.
pub fn pipeline_run_prefix(pipeline: &str, run_id: &str) -> String {
    format!("{PIPELINES}/{pipeline}/{RUNS}/{run_id}")
}

/// `pipelines/{pipeline}/runs/`: the prefix to list a pipeline's runs (run
/// ids sort by time, so the listing is in order).
pub fn pipeline_runs_prefix(pipeline: &str) -> String {
    format!("{PIPELINES}/{pipeline}/{RUNS}/")
}

/// The state of the run whose folder is `run_prefix`.
pub fn pipeline_run_state_key(run_prefix: &str) -> String {
    format!("{run_prefix}/{RUN_STATE_FILE}")
}

/// The `metrics.json` the last step wrote to the run's folder (`artifacts_dir`).
pub fn pipeline_metrics_key(run_prefix: &str) -> String {
    format!("{run_prefix}/{METRICS_FILE}")
}

/// `pipelines/{pipeline}/pushes/{flat_id(delivery)}.json`: the run trigger
/// a push delivery made for a pipeline, so that every redelivery of that
/// push asks for the same run. The delivery id is hashed: it is the
/// sender's text.
pub fn pipeline_push_key(pipeline: &str, delivery: &str) -> String {
    format!("{PIPELINES}/{pipeline}/{PUSHES}/{}.json", flat_id(delivery))
}

/// `pipelines/{pipeline}/lock.json`.
pub fn pipeline_lock_key(pipeline: &str) -> String {
    format!("{PIPELINES}/{pipeline}/{PIPELINE_LOCK_FILE}")
}

/// `pipelines/{pipeline}/deployed.json`.
pub fn pipeline_deployed_key(pipeline: &str) -> String {
    format!("{PIPELINES}/{pipeline}/{DEPLOYED_FILE}")
}

/// `{run}/steps/{index}-{stem}`: the folder of step `index` (from 0) of a
/// run. The index keeps the folders in order and unique; the notebook's stem,
/// cut to a safe key segment, tells a person which step it is.
pub fn pipeline_step_prefix(run_prefix: &str, index: usize, notebook: &str) -> String {
    let file = notebook.rsplit('/').next().unwrap_or(notebook);
    let stem = file.strip_suffix(".ipynb").unwrap_or(file);
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_STEP_STEM)
        .collect();
    let stem = stem.trim_start_matches('.');
    if stem.is_empty() {
        format!("{run_prefix}/{STEPS}/{index}")
    } else {
        format!("{run_prefix}/{STEPS}/{index}-{stem}")
    }
}

/// Which run and step a step's folder belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStepRef<'a> {
    pub pipeline: &'a str,
    pub run_id: &'a str,
    /// From 0.
    pub step: usize,
    /// The run's folder.
    pub run_prefix: &'a str,
}

/// Reads a step's folder back (the job prefix of a `result.json` that
/// [`classify`] found under `pipelines/`), or `None` for any other folder.
pub fn pipeline_step_of(job_prefix: &str) -> Option<PipelineStepRef<'_>> {
    let (run_prefix, folder) = job_prefix.rsplit_once(&format!("/{STEPS}/"))?;
    let rest = run_prefix.strip_prefix(PIPELINES)?.strip_prefix('/')?;
    let (pipeline, run_id) = rest.split_once(&format!("/{RUNS}/"))?;
    if pipeline.is_empty() || pipeline.contains('/') || run_id.is_empty() || run_id.contains('/') {
        return None;
    }
    if folder.contains('/') {
        return None;
    }
    let digits = folder.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(PipelineStepRef {
        pipeline,
        run_id,
        step: digits.parse().ok()?,
        run_prefix,
    })
}

/// The files of one job, under its folder.
pub fn job_file(job_prefix: &str, file: &str) -> String {
    format!("{job_prefix}/{file}")
}

/// A short id for a key, usable as one segment of another key: the first
/// 32 hex digits of its SHA-256.
pub fn flat_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    hex::encode(&digest[..16])
}

/// What a finalized object is to nbci.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind<'a> {
    /// The result of a CI job; the job's folder.
    Ci { job_prefix: &'a str },
    /// The result of a pipeline step; the step's folder.
    PipelineStep { job_prefix: &'a str },
    /// Anything else: not acted on.
    Other,
}

/// Classifies a finalized object's key: only `result.json` under `ci/` or
/// `pipelines/` is acted on.
pub fn classify(key: &str) -> ResultKind<'_> {
    let Some(job_prefix) = key
        .strip_suffix(RESULT_FILE)
        .and_then(|p| p.strip_suffix('/'))
    else {
        return ResultKind::Other;
    };
    if validate_key(key).is_err() {
        return ResultKind::Other;
    }
    if job_prefix.starts_with(CI) && job_prefix.as_bytes().get(CI.len()) == Some(&b'/') {
        ResultKind::Ci { job_prefix }
    } else if job_prefix.starts_with(PIPELINES)
        && job_prefix.as_bytes().get(PIPELINES.len()) == Some(&b'/')
    {
        ResultKind::PipelineStep { job_prefix }
    } else {
        ResultKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha() -> CommitSha {
        CommitSha::try_from("a".repeat(40)).expect("sha")
    }

    #[test]
    fn keys_cannot_escape_or_overflow_the_bucket() {
        for bad in [
            "", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a\0b", "a\nb",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"x".repeat(256)).is_err());
        assert!(validate_key(&format!("{}/y", "x".repeat(255))).is_ok());
        assert!(validate_key(&["x"; 600].join("/")).is_err());
        assert!(validate_key("ci/o/r/sha/nb/x.ipynb/result.json").is_ok());
    }

    #[test]
    fn prefixes_are_stable() {
        let repo = RepoRef::parse("o/r").expect("repo");
        let prefix = check_prefix(&repo, &sha(), "nb/x.ipynb").expect("valid");
        assert_eq!(prefix, format!("ci/o/r/{}/nb/x.ipynb", "a".repeat(40)));
        assert_eq!(attempt_prefix(&prefix, 1), prefix);
        assert_eq!(attempt_prefix(&prefix, 3), format!("{prefix}/attempts/3"));
        assert_eq!(
            check_of_active_key(&active_key(&prefix)),
            Some(prefix.as_str())
        );
        assert_eq!(
            source_key(&repo, &sha()),
            format!("src/o/r/{}.tar.gz", "a".repeat(40))
        );
        assert!(check_prefix(&repo, &sha(), &format!("{}.ipynb", "n".repeat(300))).is_err());
        assert!(check_prefix(&repo, &sha(), "../x.ipynb").is_err());
        assert!(delivery_key("abc-1").is_ok());
        assert!(delivery_key("a/b").is_err());
    }

    #[test]
    fn event_markers_name_one_generation_of_one_object() {
        let key = event_marker_key("b", "ci/o/r/s/nb.ipynb/result.json", 7).expect("valid");
        assert!(key.starts_with("events/b/7-"), "{key}");
        assert_eq!(key.len(), "events/b/7-".len() + 32);
        assert_ne!(
            key,
            event_marker_key("b", "ci/o/r/s/nb.ipynb/result.json", 8).expect("valid")
        );
        assert_ne!(
            key,
            event_marker_key("c", "ci/o/r/s/nb.ipynb/result.json", 7).expect("valid")
        );
        for bad in ["", "a/b", "..", "."] {
            assert!(event_marker_key(bad, "x", 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pipeline_keys_read_back() {
        let run = pipeline_run_prefix("train", "20261130T031500Z-abc1234");
        assert_eq!(run, "pipelines/train/runs/20261130T031500Z-abc1234");
        assert_eq!(pipeline_run_state_key(&run), format!("{run}/state.json"));
        assert_eq!(pipeline_metrics_key(&run), format!("{run}/metrics.json"));
        assert_eq!(pipeline_lock_key("train"), "pipelines/train/lock.json");
        assert_eq!(
            pipeline_deployed_key("train"),
            "pipelines/train/deployed.json"
        );
        assert!(run.starts_with(&pipeline_runs_prefix("train")));
        let step = pipeline_step_prefix(&run, 1, "notebooks/train model.ipynb");
        assert_eq!(step, format!("{run}/steps/1-train-model"));
        assert!(validate_key(&job_file(&step, RESULT_FILE)).is_ok());
        assert_eq!(
            pipeline_step_of(&step),
            Some(PipelineStepRef {
                pipeline: "train",
                run_id: "20261130T031500Z-abc1234",
                step: 1,
                run_prefix: &run,
            })
        );
        let result = job_file(&step, RESULT_FILE);
        assert_eq!(
            classify(&result),
            ResultKind::PipelineStep { job_prefix: &step }
        );
        assert_eq!(
            pipeline_step_prefix(&run, 0, "..ipynb"),
            format!("{run}/steps/0")
        );
        let long = pipeline_step_prefix(&run, 12, &format!("{}.ipynb", "é".repeat(300)));
        assert!(validate_key(&long).is_ok(), "{long}");
        for other in [
            "pipelines/train/runs/r/model",
            "pipelines/train/runs/r/steps/x-train",
            "pipelines/train/runs/r/steps/1/extra",
            "ci/o/r/steps/1-x",
            "pipelines/train/r/steps/1-x",
        ] {
            assert_eq!(pipeline_step_of(other), None, "{other}");
        }
    }

    #[test]
    fn only_results_under_ci_and_pipelines_act() {
        assert_eq!(
            classify("ci/o/r/s/nb.ipynb/result.json"),
            ResultKind::Ci {
                job_prefix: "ci/o/r/s/nb.ipynb"
            }
        );
        assert_eq!(
            classify("pipelines/p/runs/1/train/result.json"),
            ResultKind::PipelineStep {
                job_prefix: "pipelines/p/runs/1/train"
            }
        );
        for other in [
            "ci/o/r/s/nb.ipynb/output.ipynb",
            "cix/result.json",
            "result.json",
            "src/o/r/s.tar.gz",
            "ci/../result.json",
        ] {
            assert_eq!(classify(other), ResultKind::Other, "{other}");
        }
    }
}
