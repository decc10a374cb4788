//! The one place that names concrete adapters: [`Services::build`] turns a
//! [`Config`] into every port as an `Arc<dyn Port>` and the flows over them.
//! Every function's `main`, `nbci serve` and the integration tests build
//! through it, so what is tested is what runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapters::github::{
    AppCredentials, GitHubApp, GitHubClient, GitHubConfig, InstallationTokens,
};
use crate::adapters::local::bus::LocalBus;
use crate::adapters::local::engine::{PapermillEngine, ProgressSink, Python};
use crate::adapters::local::executor::LocalExecutor;
use crate::adapters::local::runner::{JobRunner, sweep_checkouts};
use crate::adapters::local::store::LocalDirStore;
use crate::config::{Config, ConfigError, ExecutorKind};
use crate::flows::ci::{Ci, CiSettings};
use crate::flows::inbox::Inbox;
use crate::ports::bus::{EventBus, Message};
use crate::ports::check_runs::CheckRuns;
use crate::ports::executor::NotebookExecutor;
use crate::ports::sources::Sources;
use crate::ports::store::ObjectStore;
use crate::util::retry::Backoff;

/// Why the services could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Occurs when the data directory cannot be the bucket.
    #[error("NBCI_DATA_DIR {0}")]
    DataDir(#[from] crate::adapters::local::store::OpenError),
    /// Occurs when no Python with papermill is found.
    #[error("NBCI_PYTHON: {0}")]
    Python(#[from] crate::adapters::local::engine::EngineError),
    /// Occurs when the GitHub client cannot be built.
    #[error("GITHUB_API_URL: {0}")]
    GitHub(String),
}

/// How often a server without Cloud Scheduler sweeps its active checks.
pub const LOCAL_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Every port, the flows, and the background work that keeps them going.
#[derive(Debug)]
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    /// The directory bucket itself (to serve executed notebooks from it).
    pub local_store: Arc<LocalDirStore>,
    pub bus: Arc<dyn EventBus>,
    pub executor: Arc<dyn NotebookExecutor>,
    pub check_runs: Arc<dyn CheckRuns>,
    pub sources: Arc<dyn Sources>,
    pub ci: Ci,
    pub inbox: Inbox,
    local_bus: LocalBus,
    local_executor: LocalExecutor,
    background: TaskTracker,
    stop: CancellationToken,
}

impl Services {
    /// Builds every adapter `config` asks for and starts the bus's worker.
    /// `progress` hears every cell of locally run notebooks (the terminal of
    /// `nbci serve`). Call [`Services::recover`] once the server listens.
    pub fn build(config: Config, progress: ProgressSink) -> Result<Self, WiringError> {
        let ExecutorKind::Local = config.executor;
        let github = config.github.clone().ok_or(ConfigError::Missing {
            name: "GITHUB_APP_ID",
            meaning: "the GitHub App's id (or client id)",
        })?;
        let credentials =
            AppCredentials::new(&github.app_id, github.private_key.expose().as_bytes()).map_err(
                |error| match error {
                    crate::adapters::github::AuthError::InvalidVariable { name, reason } => {
                        ConfigError::Invalid { name, reason }
                    }
                    other => ConfigError::Invalid {
                        name: "GITHUB_APP_PRIVATE_KEY",
                        reason: other.to_string(),
                    },
                },
            )?;
        let client = GitHubClient::new(GitHubConfig {
            api_url: github.api_url.clone(),
            ..GitHubConfig::default()
        })
        .map_err(|error| WiringError::GitHub(error.to_string()))?;
        let tokens = Arc::new(InstallationTokens::new(credentials, client.clone()));
        let app = Arc::new(GitHubApp::new(client, tokens));

        // The bucket announces its finalize events on the bus, which keeps
        // its own messages in the bucket: the listener finds the bus later.
        let bus_slot: Arc<OnceLock<LocalBus>> = Arc::new(OnceLock::new());
        let listener_bus = bus_slot.clone();
        let local_store = Arc::new(
            LocalDirStore::new(&config.data_dir)?
                .own()?
                .with_finalize_listener(Arc::new(move |key: &str, generation: i64| {
                    if crate::domain::layout::classify(key)
                        != crate::domain::layout::ResultKind::Other
                        && let Some(bus) = listener_bus.get()
                    {
                        bus.announce(Message::Finalized {
                            key: key.to_owned(),
                            generation,
                        });
                    }
                })),
        );
        let store: Arc<dyn ObjectStore> = local_store.clone();
        let backoff = Backoff::new(Duration::from_secs(2), config.retry_max);
        let (local_bus, worker) = LocalBus::new(store.clone(), backoff);
        let _ = bus_slot.set(local_bus.clone());

        let engine = PapermillEngine::new(Python::discover(config.python.clone())?);
        let runner = JobRunner {
            engine,
            work_dir: Some(config.data_dir.join("work")),
            progress,
        };
        let local_executor = LocalExecutor::new(store.clone(), runner, config.jobs);
        let executor: Arc<dyn NotebookExecutor> = Arc::new(local_executor.clone());
        let check_runs: Arc<dyn CheckRuns> = app.clone();
        let sources: Arc<dyn Sources> = app;
        let ci = Ci::new(
            store.clone(),
            executor.clone(),
            check_runs.clone(),
            sources.clone(),
            CiSettings {
                public_url: config.public_url.clone(),
                link_key: config.webhook_secret.clone(),
                max_notebooks: config.max_notebooks,
                image: "local".into(),
                default_timeout: Some(config.job_timeout),
                lost_job_grace: config.lost_job_grace,
                backoff,
                worker: format!(
                    "{}-{}",
                    config.service.name().replace(' ', "-"),
                    std::process::id()
                ),
                scratch_dir: Some(config.data_dir.join("work")),
                ..CiSettings::default()
            },
        );
        let inbox = Inbox::new(ci.clone());
        let background = TaskTracker::new();
        background.spawn(worker.run(Arc::new(inbox.clone()), background.clone()));
        Ok(Self {
            config,
            store,
            local_store,
            bus: Arc::new(local_bus.clone()),
            executor,
            check_runs,
            sources,
            ci,
            inbox,
            local_bus,
            local_executor,
            background,
            stop: CancellationToken::new(),
        })
    }

    /// Picks up what a previous process left: its job checkouts are removed,
    /// its queued messages delivered again, and every active check swept
    /// (leases of the dead process are void: this process owns the bucket).
    /// Then sweeps every [`LOCAL_SWEEP_INTERVAL`], the local stand-in for
    /// Cloud Scheduler's tick.
    pub async fn recover(&self) {
        let removed = sweep_checkouts(&self.config.data_dir.join("work"));
        if removed > 0 {
            tracing::info!(removed, "removed job checkouts of an earlier process");
        }
        match self.local_bus.replay().await {
            Ok(0) => {}
            Ok(replayed) => {
                tracing::info!(replayed, "delivering queued messages of an earlier process")
            }
            Err(error) => tracing::error!(%error, "cannot read the queued messages"),
        }
        if let Err(error) = self.ci.sweep(true).await {
            tracing::error!(%error, "cannot sweep the active checks");
        }
        let ci = self.ci.clone();
        let stop = self.stop.clone();
        self.background.spawn(async move {
            let mut interval = tokio::time::interval(LOCAL_SWEEP_INTERVAL);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if let Err(error) = ci.sweep(false).await {
                            tracing::warn!(%error, "sweeping the active checks failed");
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Stops background work and waits for it, at most `deadline`: steps in
    /// flight finish (their state is in the bucket either way); notebooks
    /// still running are stopped, and the next start runs them again.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stop.cancel();
        self.ci.begin_shutdown();
        self.background.close();
        self.local_executor.tracker().close();
        let drained = tokio::time::timeout(deadline, async {
            self.ci.tracker().wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown deadline reached with check steps still in flight");
        }
    }
}
