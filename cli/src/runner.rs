//! `nbci runner gs://BUCKET/KEY/job.json`: the entrypoint of the cloud job
//! image (**contract**). It reads the job record, fetches and unpacks the
//! source, runs the notebook with the same engine as `nbci run`, uploads
//! output.ipynb and output.html, then result.json last. It needs no GitHub
//! credentials and no NBCI_* setting: the bucket comes from the URI, the
//! storage endpoint from `STORAGE_EMULATOR_HOST` when set, credentials from
//! the job's service account.
//!
//! Its log lines are JSON (Cloud Logging reads them from the job): one per
//! cell as it finishes, then each cell's stdout/stderr. On SIGTERM
//! (preemption, a cancelled job) it writes result.json with status `error`
//! saying so, then exits.

use std::sync::Arc;

use clap::Args;
use nbci_shared::adapters::gcp::storage::{GcsSettings, GcsStore};
use nbci_shared::adapters::local::engine::{
    DEFAULT_MAX_HTML, DEFAULT_MAX_OUTPUT, EngineSettings, PapermillEngine, Progress, ProgressSink,
    Python,
};
use nbci_shared::adapters::local::runner::JobRunner;
use nbci_shared::domain::job::JobRecord;
use nbci_shared::domain::layout::{self, JOB_FILE};
use nbci_shared::domain::outcome::{Outcome, Status};
use nbci_shared::ports::store::{ObjectStore, Precondition, get_json};
use nbci_shared::util::size::parse_size;

use crate::Failure;

#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The job record: gs://BUCKET/{prefix}/job.json.
    #[arg(value_name = "JOB_URI")]
    pub job: String,
    /// Fail the notebook when its outputs pass this size [default: 256MB].
    #[arg(long, value_name = "SIZE", env = "NBCI_MAX_OUTPUT", value_parser = parse_size)]
    pub max_output: Option<u64>,
    /// Render no HTML for executed notebooks larger than this [default: 32MB].
    #[arg(long, value_name = "SIZE", env = "NBCI_MAX_HTML", value_parser = parse_size)]
    pub max_html: Option<u64>,
}

/// How long a job stopped by SIGTERM gets to save its executed notebook and
/// upload it with its result, before the result alone is written.
const SIGTERM_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// `gs://bucket/key` -> (bucket, key); the key must name a job.json.
fn parse_job_uri(uri: &str) -> Result<(String, String), Failure> {
    let rest = uri
        .strip_prefix("gs://")
        .ok_or_else(|| Failure::usage(format!("{uri}: expected gs://BUCKET/PREFIX/job.json")))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| Failure::usage(format!("{uri}: no object after the bucket")))?;
    layout::validate_key(key).map_err(Failure::usage)?;
    if bucket.is_empty() || !key.ends_with(&format!("/{JOB_FILE}")) {
        return Err(Failure::usage(format!(
            "{uri}: expected gs://BUCKET/PREFIX/{JOB_FILE}"
        )));
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

/// Progress as JSON log lines.
fn log_progress() -> ProgressSink {
    Arc::new(|notebook: &str, event: &Progress| match event {
        Progress::Started { kernel, code_cells } => {
            tracing::info!(%notebook, %kernel, code_cells, "notebook started")
        }
        Progress::CellDone {
            position,
            total,
            seconds,
            outcome,
            ..
        } => tracing::info!(
            %notebook,
            cell = position.unwrap_or(0),
            of = total,
            seconds,
            %outcome,
            "cell done"
        ),
        Progress::Warning(message) => tracing::warn!(%notebook, %message, "notebook warning"),
    })
}

/// Each code cell's stdout and stderr from the executed notebook, as log lines.
fn log_streams(executed: &[u8]) {
    let Ok(notebook) = serde_json::from_slice::<serde_json::Value>(executed) else {
        return;
    };
    let cells = notebook["cells"].as_array().cloned().unwrap_or_default();
    for (index, cell) in cells.iter().enumerate() {
        for output in cell["outputs"].as_array().into_iter().flatten() {
            if output["output_type"] != "stream" {
                continue;
            }
            let text = match &output["text"] {
                serde_json::Value::Array(lines) => lines
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect::<String>(),
                other => other.as_str().unwrap_or_default().to_owned(),
            };
            let stream = output["name"].as_str().unwrap_or("stdout");
            tracing::info!(cell = index + 1, stream, text = %text.trim_end(), "notebook output");
        }
    }
}

pub async fn runner(args: RunnerArgs) -> Result<u8, Failure> {
    nbci_shared::telemetry::init_json();
    let (bucket, record_key) = parse_job_uri(&args.job)?;
    let emulator = std::env::var("STORAGE_EMULATOR_HOST")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let store = GcsStore::new(GcsSettings::new(bucket.clone(), emulator))
        .await
        .map_err(|error| Failure::infra(format!("gs://{bucket}: {error}")))?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let record: JobRecord = get_json(store.as_ref(), &record_key)
        .await
        .map_err(|error| Failure::infra(format!("{}: {error}", args.job)))?
        .ok_or_else(|| Failure::usage(format!("{}: no such job record", args.job)))?
        .0;
    let job = record.job;
    if layout::job_file(&job.prefix, JOB_FILE) != record_key {
        return Err(Failure::usage(format!(
            "{}: the record names another folder ({})",
            args.job, job.prefix
        )));
    }
    let engine = PapermillEngine::with_settings(
        Python::discover(None)?,
        EngineSettings {
            max_output: Some(args.max_output.unwrap_or(DEFAULT_MAX_OUTPUT)),
            max_html: args.max_html.unwrap_or(DEFAULT_MAX_HTML),
            ..EngineSettings::default()
        },
    );
    let runner = JobRunner {
        engine: engine.clone(),
        work_dir: None,
        progress: log_progress(),
    };
    tracing::info!(notebook = %job.notebook, prefix = %job.prefix, image = %job.image, "job started");
    let run = runner.run_job_to_result(store.as_ref(), &job);
    tokio::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        () = terminated() => {
            // The job is being stopped: the notebook stops where it is, and
            // its executed notebook and result (status error, saying so) are
            // uploaded as usual, if that is quick enough.
            engine.terminate();
            match tokio::time::timeout(SIGTERM_GRACE, &mut run).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let outcome = Outcome::without_result(
                        &job,
                        Status::Error,
                        "the job was stopped by SIGTERM (preempted or cancelled) before it finished",
                        store.uri(&job.output_key()),
                        nbci_shared::util::time::now_rfc3339(),
                    );
                    let written = store
                        .put(&job.result_key(), outcome.to_json(), "application/json", Precondition::None)
                        .await;
                    if let Err(error) = written {
                        tracing::error!(%error, "cannot write the result after SIGTERM");
                    }
                    return Ok(4);
                }
            }
        }
    };
    engine.shutdown().await;
    let outcome =
        outcome.map_err(|error| Failure::infra(format!("no result could be written: {error}")))?;
    if let Ok(Some(executed)) = store.get(&job.output_key()).await {
        log_streams(&executed.bytes);
    }
    tracing::info!(notebook = %job.notebook, status = %outcome.status, "job finished");
    Ok(u8::try_from(outcome.status.exit_code()).unwrap_or(4))
}

/// Completes on SIGTERM.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_uris_name_a_job_record_in_a_bucket() {
        assert_eq!(
            parse_job_uri("gs://b/ci/o/r/s/nb.ipynb/job.json").expect("valid"),
            ("b".into(), "ci/o/r/s/nb.ipynb/job.json".into())
        );
        for bad in [
            "b/ci/job.json",
            "gs://b",
            "gs://b/ci/../job.json",
            "gs://b/ci/result.json",
            "gs:///ci/job.json",
        ] {
            assert!(parse_job_uri(bad).is_err(), "{bad}");
        }
    }
}
