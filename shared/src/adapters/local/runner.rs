//! One job: stage in, execute, stage out. The same steps run in `nbci serve`
//! (the local executor) and in the cloud job image (`nbci runner`); only the
//! [`ObjectStore`] behind them differs.
//!
//! Stage-out order is the contract: the executed notebook (and its HTML)
//! first, `result.json` last, so a reader that sees a result also finds the
//! output. When the job cannot produce a result of its own (the source is
//! missing, the disk is full), [`run_job_to_result`] writes one that says
//! so: no job ends without a result if the bucket can take one.

use std::path::{Path, PathBuf};

use crate::adapters::local::engine::{EngineError, PapermillEngine, ProgressSink, RunRequest};
use crate::domain::job::Job;
use crate::domain::layout::validate_key;
use crate::domain::notebook::{
    MAX_NOTEBOOK_BYTES, Notebook, NotebookError, describe_io_error, read_notebook_file,
};
use crate::domain::outcome::{Outcome, Status};
use crate::ports::store::{ObjectStore, Precondition, StoreError};

/// Why a job could not produce a result (the infrastructure, not the notebook).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// Occurs when the source tarball is missing.
    #[error("the source {0} is not in the bucket")]
    NoSource(String),
    /// Occurs when the tarball cannot be unpacked (corrupt, or unsafe entries).
    #[error("cannot unpack the source: {0}")]
    Unpack(#[from] crate::util::archive::UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Occurs when a local file or directory cannot be used.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// What runs jobs on this machine: the engine, where checkouts go, and who hears progress.
#[derive(Clone)]
pub struct JobRunner {
    pub engine: PapermillEngine,
    /// Where job checkouts are made (`None`: the system's temporary directory).
    /// A server sweeps it at start: checkouts of a killed process are garbage.
    pub work_dir: Option<PathBuf>,
    pub progress: ProgressSink,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("engine", &self.engine)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    /// Runs `job` and makes sure it ends with a `result.json`: the notebook's
    /// own, or one with status `error` saying why there is none. Returns the
    /// outcome written, or the error when even that could not be written.
    pub async fn run_job_to_result(
        &self,
        store: &dyn ObjectStore,
        job: &Job,
    ) -> Result<Outcome, RunnerError> {
        match self.run_job(store, job).await {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                tracing::error!(notebook = %job.notebook, %error, "the job failed before a result");
                let outcome = Outcome::without_result(
                    job,
                    Status::Error,
                    &error.to_string(),
                    store.uri(&job.output_key()),
                    crate::util::time::now_rfc3339(),
                );
                store
                    .put(
                        &job.result_key(),
                        outcome.to_json(),
                        "application/json",
                        Precondition::None,
                    )
                    .await?;
                Ok(outcome)
            }
        }
    }

    /// Runs `job`: unpack its source, execute the notebook, write input,
    /// output, HTML and finally the result to `store`. Returns the outcome.
    pub async fn run_job(
        &self,
        store: &dyn ObjectStore,
        job: &Job,
    ) -> Result<Outcome, RunnerError> {
        // Private to this user: the checkout holds a repository that may be private.
        let checkout = crate::util::fs::private_tempdir("nbci-job-", self.work_dir.as_deref())
            .map_err(|error| RunnerError::Io {
                path: self.work_dir.clone().unwrap_or_else(std::env::temp_dir),
                reason: describe_io_error(&error),
            })?;
        let archive = checkout.path().join("source.tar.gz");
        if !store.get_to_file(&job.source, &archive).await? {
            return Err(RunnerError::NoSource(job.source.clone()));
        }
        let tree = checkout.path().join("src");
        let unpack_into = tree.clone();
        let unpack_from = archive.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&unpack_from).map_err(|error| {
                crate::util::archive::UnpackError::Io {
                    entry: None,
                    reason: error.to_string(),
                }
            })?;
            crate::util::archive::unpack_tarball(std::io::BufReader::new(file), &unpack_into)
        })
        .await
        .map_err(|error| RunnerError::Io {
            path: archive.clone(),
            reason: format!("the unpacking task failed: {error}"),
        })??;
        let _ = std::fs::remove_file(&archive);

        let input = tree.join(&job.notebook);
        let raw = read_committed(job, &input, &unpacked);
        if let Ok(raw) = &raw
            && !raw.is_empty()
        {
            store
                .put(
                    &job.input_key(),
                    raw.clone(),
                    "application/x-ipynb+json",
                    Precondition::None,
                )
                .await?;
        }
        let invalid = |reason: String| {
            Outcome::invalid_notebook(
                &job.notebook,
                &reason,
                store.uri(&job.input_key()),
                job.parameters.clone(),
                &job.image,
                crate::util::time::now_rfc3339(),
            )
        };
        let prepared = raw.and_then(|raw| {
            Notebook::parse(Path::new(&job.notebook), &raw)
                .map_err(|error| error.to_string())
                .and_then(|notebook| {
                    let environment = notebook
                        .environment()
                        .map_err(|reason| format!("{}: {reason}", job.notebook))?;
                    Ok((notebook, environment))
                })
        });
        let outcome = match prepared {
            Err(reason) => invalid(reason),
            Ok((committed, environment)) => {
                let request = RunRequest {
                    name: job.notebook.clone(),
                    input: input.clone(),
                    output: checkout.path().join("output.ipynb"),
                    result: checkout.path().join("result.json"),
                    parameters: job.parameters.clone(),
                    kernel: None,
                    cell_timeout: None,
                    timeout: job.timeout().or(environment.timeout),
                    image: job.image.clone(),
                    output_uri: Some(store.uri(&job.output_key())),
                };
                let outcome = self
                    .engine
                    .run(&request, &committed, &self.progress)
                    .await?;
                store
                    .put_file(
                        &job.output_key(),
                        &request.output,
                        "application/x-ipynb+json",
                        Precondition::None,
                    )
                    .await?;
                match self.engine.render_html(&request.output).await {
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
        let outcome = with_note(outcome, unpacked.skipped_note(MAX_LINKS_NAMED));
        store
            .put(
                &job.result_key(),
                outcome.to_json(),
                "application/json",
                Precondition::None,
            )
            .await?;
        Ok(outcome)
    }
}

/// How many skipped links a result names; the rest are counted.
const MAX_LINKS_NAMED: usize = 5;

/// The committed notebook's bytes, or why the job cannot have them: not a
/// path in the repository, behind a symbolic link that leads out of it (not
/// created by the unpacker, never followed), missing, or not a regular file
/// of a sane size.
fn read_committed(
    job: &Job,
    input: &Path,
    unpacked: &crate::util::archive::UnpackSummary,
) -> Result<Vec<u8>, String> {
    if validate_key(&job.notebook).is_err() {
        return Err(format!(
            "{:?} is not a path in the repository",
            job.notebook
        ));
    }
    if let Some(link) = unpacked.skipped_link_for(&job.notebook) {
        return Err(format!(
            "{} needs the symbolic link {} -> {}, which leads out of the repository: nbci does not follow it",
            job.notebook, link.path, link.target
        ));
    }
    if std::fs::symlink_metadata(input).is_err() {
        return Err(format!(
            "{} is not in the repository at this commit",
            job.notebook
        ));
    }
    read_notebook_file(input, MAX_NOTEBOOK_BYTES).map_err(|error| match error {
        NotebookError::Unreadable { reason, .. } => {
            format!("{}: cannot read the notebook: {reason}", job.notebook)
        }
        other => other.to_string(),
    })
}

/// `outcome` with `note` (skipped links) added to its message, where the
/// check run's summary shows it.
fn with_note(mut outcome: Outcome, note: Option<String>) -> Outcome {
    if let Some(note) = note {
        outcome.message = Some(match outcome.message.take() {
            Some(message) if !message.is_empty() => format!("{message}. Note: {note}"),
            _ => format!("Note: {note}"),
        });
    }
    outcome
}

/// Removes job checkouts left in `work_dir` by a process that was killed.
pub fn sweep_checkouts(work_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("nbci-job-")
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
