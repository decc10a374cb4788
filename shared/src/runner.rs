//! One job: stage in, execute, stage out. The same steps run in `nbci serve`
//! (the local executor) and in the cloud job image (`nbci runner`); only the
//! [`ObjectStore`] behind them differs.
//!
//! Stage-out order is the contract: the executed notebook (and its HTML) first,
//! `result.json` last, so a reader that sees a result also finds the output.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{LocalEngine, ProgressSink, RunRequest};
use crate::notebook::Notebook;
use crate::outcome::Outcome;
use crate::params::Parameters;
use crate::store::{ObjectStore, Precondition, StoreError};

/// What to run and where its files go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Object prefix of the run, e.g. `ci/{owner}/{repo}/{sha}/{notebook-path}`.
    pub prefix: String,
    /// Key of the gzip tarball of the repository at the commit.
    pub source: String,
    /// Path of the notebook inside the repository.
    pub notebook: String,
    #[serde(default)]
    pub parameters: Parameters,
    /// Whole-notebook limit, in seconds.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// What the result records as `runtime.image`.
    pub image: String,
}

impl Job {
    pub fn input_key(&self) -> String {
        format!("{}/input.ipynb", self.prefix)
    }
    pub fn output_key(&self) -> String {
        format!("{}/output.ipynb", self.prefix)
    }
    pub fn html_key(&self) -> String {
        format!("{}/output.html", self.prefix)
    }
    pub fn result_key(&self) -> String {
        format!("{}/result.json", self.prefix)
    }
}

/// Why a job could not produce a result (the infrastructure, not the notebook).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// Occurs when the source tarball is missing.
    #[error("the source {0} is not in the bucket")]
    NoSource(String),
    /// Occurs when the tarball cannot be unpacked (corrupt, or unsafe entries).
    #[error("cannot unpack the source: {0}")]
    Unpack(String),
    /// Occurs when the notebook is not in the source at all.
    #[error("{0} is not in the repository at this commit")]
    NoNotebook(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("local I/O: {0}")]
    Io(String),
}

/// Runs `job`: unpack its source, execute the notebook, write input, output,
/// HTML and finally the result to `store`. Returns the outcome.
pub async fn run_job(
    store: &dyn ObjectStore,
    engine: &LocalEngine,
    job: &Job,
    progress: &ProgressSink,
) -> Result<Outcome, RunnerError> {
    let io = |error: std::io::Error| RunnerError::Io(error.to_string());
    let tarball = store
        .get(&job.source)
        .await?
        .ok_or_else(|| RunnerError::NoSource(job.source.clone()))?;
    let checkout = tempfile::Builder::new()
        .prefix("nbci-job-")
        .tempdir()
        .map_err(io)?;
    let tree = checkout.path().join("src");
    let bytes = tarball.bytes;
    let unpack_into = tree.clone();
    tokio::task::spawn_blocking(move || crate::github::unpack_tarball(&bytes, &unpack_into))
        .await
        .map_err(|error| RunnerError::Unpack(error.to_string()))?
        .map_err(|error| RunnerError::Unpack(error.to_string()))?;

    let input: PathBuf = tree.join(&job.notebook);
    if crate::store::validate_key(&job.notebook).is_err() || !input.is_file() {
        return Err(RunnerError::NoNotebook(job.notebook.clone()));
    }
    let raw = std::fs::read(&input).map_err(io)?;
    store
        .put(
            &job.input_key(),
            raw.clone(),
            "application/x-ipynb+json",
            Precondition::None,
        )
        .await?;

    let outcome = match Notebook::parse(std::path::Path::new(&job.notebook), &raw) {
        Err(error) => Outcome::invalid_notebook(
            &job.notebook,
            &error.to_string(),
            store.uri(&job.input_key()),
            job.parameters.clone(),
            &job.image,
        ),
        Ok(committed) => {
            let environment = committed.environment().unwrap_or_default();
            let request = RunRequest {
                name: job.notebook.clone(),
                input: input.clone(),
                output: checkout.path().join("output.ipynb"),
                result: checkout.path().join("result.json"),
                parameters: job.parameters.clone(),
                kernel: None,
                cell_timeout: None,
                timeout: job
                    .timeout_s
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .or(environment.timeout),
                image: job.image.clone(),
                output_uri: Some(store.uri(&job.output_key())),
            };
            let outcome = engine.run(&request, &committed, progress).await?;
            let executed = std::fs::read(&request.output).map_err(io)?;
            store
                .put(
                    &job.output_key(),
                    executed,
                    "application/x-ipynb+json",
                    Precondition::None,
                )
                .await?;
            match engine.render_html(&request.output).await {
                Ok(html) => {
                    store
                        .put(
                            &job.html_key(),
                            html,
                            "text/html; charset=utf-8",
                            Precondition::None,
                        )
                        .await?;
                }
                Err(reason) => {
                    tracing::warn!(notebook = %job.notebook, %reason, "no HTML rendering")
                }
            }
            outcome
        }
    };
    let mut result =
        serde_json::to_vec_pretty(&outcome).map_err(|e| RunnerError::Io(e.to_string()))?;
    result.push(b'\n');
    store
        .put(
            &job.result_key(),
            result,
            "application/json",
            Precondition::None,
        )
        .await?;
    Ok(outcome)
}
