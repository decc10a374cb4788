//! The NotebookExecutor port: where jobs run.
//!
//! The CI and pipeline flows end at [`NotebookExecutor::submit`]; whatever runs
//! the job writes `result.json` last, and the finalize event of that object
//! completes the flow. [`LocalExecutor`] runs jobs on this machine (papermill
//! subprocesses, at most N at once) and announces each finished result on an
//! in-process queue, the local stand-in for the GCS finalize event.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};

use crate::engine::{LocalEngine, ProgressSink};
use crate::outcome::{Outcome, Runtime, Status};
use crate::runner::{Job, run_job};
use crate::store::{ObjectStore, Precondition};

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// Occurs when the executor refuses or cannot be reached; the caller may retry.
    #[error("cannot submit the job: {0}")]
    Unavailable(String),
}

/// Somewhere to run notebook jobs.
#[async_trait]
pub trait NotebookExecutor: Send + Sync + std::fmt::Debug {
    /// Accepts `job`; returns once it is queued, not when it is done.
    async fn submit(&self, job: Job) -> Result<(), ExecutorError>;
}

/// Runs jobs here, `jobs` at a time, and sends each written result's key on `finalized`.
#[derive(Clone)]
pub struct LocalExecutor {
    store: Arc<dyn ObjectStore>,
    engine: LocalEngine,
    permits: Arc<Semaphore>,
    finalized: mpsc::UnboundedSender<String>,
    progress: ProgressSink,
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("store", &self.store)
            .field("engine", &self.engine)
            .field("free_slots", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl LocalExecutor {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        engine: LocalEngine,
        jobs: usize,
        finalized: mpsc::UnboundedSender<String>,
        progress: ProgressSink,
    ) -> Self {
        Self {
            store,
            engine,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            finalized,
            progress,
        }
    }
}

#[async_trait]
impl NotebookExecutor for LocalExecutor {
    async fn submit(&self, job: Job) -> Result<(), ExecutorError> {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            if let Err(error) =
                run_job(this.store.as_ref(), &this.engine, &job, &this.progress).await
            {
                // Never leave a check hanging: an infrastructure failure is a result too.
                tracing::error!(notebook = %job.notebook, %error, "job failed before a result");
                let outcome = infrastructure_failure(&job, &error.to_string(), this.store.as_ref());
                let body = serde_json::to_vec_pretty(&outcome).unwrap_or_default();
                if let Err(error) = this
                    .store
                    .put(
                        &job.result_key(),
                        body,
                        "application/json",
                        Precondition::None,
                    )
                    .await
                {
                    tracing::error!(notebook = %job.notebook, %error, "cannot write the result");
                    return;
                }
            }
            let _ = this.finalized.send(job.result_key());
        });
        Ok(())
    }
}

/// The result of a job the infrastructure could not run.
pub fn infrastructure_failure(job: &Job, reason: &str, store: &dyn ObjectStore) -> Outcome {
    Outcome {
        notebook: job.notebook.clone(),
        status: Status::Error,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        duration_s: 0.0,
        output: store.uri(&job.output_key()),
        failed_cell: None,
        parameters: job.parameters.clone(),
        runtime: Runtime {
            image: job.image.clone(),
            kernel: String::new(),
            versions: Default::default(),
        },
        total_cells: 0,
        message: Some(reason.into()),
    }
}
