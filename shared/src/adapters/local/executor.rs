//! The local executor: jobs run on this machine, each as
//! [`JobRunner::run_job_to_result`] against the bucket. Its result's write is
//! the finalize event that completes the flow.
//!
//! Notebooks execute `jobs` at a time in the engine's warm drivers. Up to
//! `jobs` more jobs may stage in (unpack their source) and queue meanwhile,
//! and stage out (upload, render HTML) after: so a slot finds its next
//! notebook ready, and starts its kernel early, while the current one runs.
//!
//! Handles are `local:{instance}:{n}`, where the instance is new for every
//! process: after a restart, the jobs of the killed process are `Unknown`,
//! and the flow submits them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::runner::JobRunner;
use crate::domain::job::{Job, JobHandle, JobState};
use crate::ports::executor::{ExecutorError, NotebookExecutor};
use crate::ports::store::ObjectStore;

/// One job this process runs or ran.
#[derive(Debug)]
struct LocalJob {
    prefix: String,
    state: JobState,
    task: Option<tokio::task::AbortHandle>,
}

/// Runs jobs here.
#[derive(Clone)]
pub struct LocalExecutor {
    store: Arc<dyn ObjectStore>,
    runner: JobRunner,
    permits: Arc<Semaphore>,
    /// Different for every process, so handles of a dead process are unknown.
    instance: String,
    next: Arc<AtomicU64>,
    jobs: Arc<Mutex<HashMap<String, LocalJob>>>,
    tracker: TaskTracker,
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("runner", &self.runner)
            .field("free_slots", &self.permits.available_permits())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl LocalExecutor {
    /// An executor for an engine that runs `jobs` notebooks at once: twice as
    /// many jobs are under way, half of them staging in or out.
    pub fn new(store: Arc<dyn ObjectStore>, runner: JobRunner, jobs: usize) -> Self {
        Self {
            store,
            runner,
            permits: Arc::new(Semaphore::new(jobs.max(1).saturating_mul(2))),
            instance: format!("{:08x}", rand_u32()),
            next: Arc::new(AtomicU64::new(1)),
            jobs: Arc::new(Mutex::new(HashMap::new())),
            tracker: TaskTracker::new(),
        }
    }

    /// This process's random instance id (in every handle it gives).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The running jobs' tasks, for a server to wait on (or abandon) at shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalJob>> {
        // A poisoned map only means a thread panicked while holding it; the
        // map itself is still sound.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_state(&self, handle: &str, state: JobState) {
        if let Some(job) = self.jobs().get_mut(handle) {
            job.state = state;
        }
    }
}

/// A random 32-bit number (from the hasher's per-process random keys).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

#[async_trait]
impl NotebookExecutor for LocalExecutor {
    async fn submit(&self, job: &Job) -> Result<JobHandle, ExecutorError> {
        if self.tracker.is_closed() {
            return Err(ExecutorError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        let handle = {
            let mut jobs = self.jobs();
            // The same folder again while its job is still going: that job.
            if let Some((handle, _)) = jobs
                .iter()
                .find(|(_, j)| j.prefix == job.prefix && !j.state.is_ended())
            {
                return Ok(JobHandle(handle.clone()));
            }
            let handle = format!(
                "local:{}:{}",
                self.instance,
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            jobs.insert(
                handle.clone(),
                LocalJob {
                    prefix: job.prefix.clone(),
                    state: JobState::Pending,
                    task: None,
                },
            );
            handle
        };
        let this = self.clone();
        let job = job.clone();
        let key = handle.clone();
        let task = self.tracker.spawn(async move {
            let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            this.set_state(&key, JobState::Running);
            let state = match this.runner.run_job_to_result(this.store.as_ref(), &job).await {
                Ok(_) => JobState::Succeeded,
                Err(error) => {
                    tracing::error!(notebook = %job.notebook, %error, "the job ended without a result");
                    JobState::Failed {
                        message: format!("the job could not write its result: {error}"),
                    }
                }
            };
            this.set_state(&key, state);
        });
        if let Some(entry) = self.jobs().get_mut(&handle) {
            entry.task = Some(task.abort_handle());
        }
        Ok(JobHandle(handle))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobState, ExecutorError> {
        Ok(self
            .jobs()
            .get(&handle.0)
            .map_or(JobState::Unknown, |job| job.state.clone()))
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ExecutorError> {
        let mut jobs = self.jobs();
        if let Some(job) = jobs.get_mut(&handle.0)
            && !job.state.is_ended()
        {
            if let Some(task) = job.task.take() {
                // Dropping the engine's future makes its slot kill the driver,
                // the kernel and every process the notebook started.
                task.abort();
            }
            job.state = JobState::Cancelled {
                message: "cancelled by nbci".into(),
            };
        }
        Ok(())
    }
}
