//! The one place that names concrete adapters: [`Services::build`] turns a
//! [`Config`] into every port as an `Arc<dyn Port>` and the flows over them.
//! Every function's `main`, `nbci serve` and the integration tests build
//! through it, so what is tested is what runs.
//!
//! | setting | adapter |
//! |---|---|
//! | `NBCI_BUCKET` set / unset (`nbci serve`) | Cloud Storage / the directory bucket |
//! | `NBCI_EXECUTOR` vertex, ai-platform / local | Vertex AI, AI Platform / papermill here |
//! | `NBCI_DISPATCH_TOPIC` set / unset | Pub/Sub / the local bus (kept in the bucket) |
//!
//! The local bus runs in every process anyway: it replays what a killed
//! process left queued, and carries the directory bucket's finalize events.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapters::gcp::ai_platform::AiPlatformExecutor;
use crate::adapters::gcp::ai_platform_deploy::AiPlatformDeployer;
use crate::adapters::gcp::auth::{AdcTokenSource, TokenSource};
use crate::adapters::gcp::deploy::DeploySettings;
use crate::adapters::gcp::jobs::JobSettings;
use crate::adapters::gcp::oidc::{OidcGuard, OidcSettings};
use crate::adapters::gcp::pubsub::{PubSubBus, PubSubSettings};
use crate::adapters::gcp::storage::{GcsSettings, GcsStore};
use crate::adapters::gcp::vertex::VertexExecutor;
use crate::adapters::gcp::vertex_deploy::VertexDeployer;
use crate::adapters::github::{
    AppCredentials, GitHubApp, GitHubClient, GitHubConfig, InstallationTokens,
};
use crate::adapters::local::bus::LocalBus;
use crate::adapters::local::engine::{EngineSettings, PapermillEngine, ProgressSink, Python};
use crate::adapters::local::executor::LocalExecutor;
use crate::adapters::local::journal::ClaimJournal;
use crate::adapters::local::registry::LocalRegistry;
use crate::adapters::local::runner::{JobRunner, sweep_checkouts};
use crate::adapters::local::store::{LocalDirStore, OpenError};
use crate::config::{CloudSettings, Config, ConfigError, ExecutorKind, Storage};
use crate::domain::layout::{ResultKind, classify};
use crate::domain::pipeline::spec::DeployTarget;
use crate::flows::ci::{Ci, CiSettings};
use crate::flows::inbox::Inbox;
use crate::flows::pipeline::{Deployers, PipelineSettings, Pipelines};
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
    /// Occurs when the Cloud Storage client cannot be built.
    #[error("NBCI_BUCKET: {0}")]
    Bucket(String),
    /// Occurs when no Python with papermill is found.
    #[error("NBCI_PYTHON: {0}")]
    Python(#[from] crate::adapters::local::engine::EngineError),
    /// Occurs when the GitHub client cannot be built.
    #[error("GITHUB_API_URL: {0}")]
    GitHub(String),
    /// Occurs when Google credentials or a cloud executor cannot be set up.
    #[error("{0}")]
    Cloud(String),
}

/// Where the bucket's objects are as jobs see them: the directory bucket's
/// objects folder, or `gs://BUCKET`.
fn store_root(config: &Config) -> String {
    match &config.storage {
        Storage::Directory(dir) => crate::util::uri::absolute(&dir.join("objects"))
            .display()
            .to_string(),
        Storage::Gcs { bucket, .. } => format!("gs://{bucket}"),
    }
}

fn pipeline_settings(
    config: &Config,
    root: &str,
    backoff: Backoff,
    worker: String,
) -> PipelineSettings {
    PipelineSettings {
        image: config
            .cloud
            .as_ref()
            .map_or_else(|| "local".to_owned(), |cloud| cloud.runner_image.clone()),
        artifacts_root: root.to_owned(),
        default_timeout: Some(config.job_timeout),
        lost_job_grace: config.lost_job_grace,
        lease_ttl: config.lease_ttl,
        backoff,
        worker,
        ..PipelineSettings::default()
    }
}

/// How often a server without Cloud Scheduler sweeps its active checks.
pub const LOCAL_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Every port, the flows, and the background work that keeps them going.
#[derive(Debug)]
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    /// The directory bucket, when that is the bucket.
    pub local_store: Option<Arc<LocalDirStore>>,
    pub bus: Arc<dyn EventBus>,
    pub executor: Arc<dyn NotebookExecutor>,
    pub check_runs: Arc<dyn CheckRuns>,
    pub sources: Arc<dyn Sources>,
    pub ci: Ci,
    pub pipelines: Pipelines,
    pub inbox: Inbox,
    /// Checks Google-signed ID tokens on the routes Google calls (`/tick`,
    /// `/dispatch`); open when no audience is configured.
    pub oidc: OidcGuard,
    local_bus: Option<LocalBus>,
    local_executor: Option<LocalExecutor>,
    background: TaskTracker,
    stop: CancellationToken,
}

/// A name for this process in leases: the service, the pid and a random
/// part (a restarted container has the same pid).
fn worker_name(config: &Config) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!(
        "{}-{}-{:08x}",
        config.service.name().replace(' ', "-"),
        std::process::id(),
        hasher.finish() as u32
    )
}

fn github_app(config: &Config) -> Result<Arc<GitHubApp>, WiringError> {
    let github = config.github.clone().ok_or(ConfigError::Missing {
        name: "GITHUB_APP_ID",
        meaning: "the GitHub App's id (or client id)",
    })?;
    let credentials = AppCredentials::new(&github.app_id, github.private_key.expose().as_bytes())
        .map_err(|error| match error {
        crate::adapters::github::AuthError::InvalidVariable { name, reason } => {
            ConfigError::Invalid { name, reason }
        }
        other => ConfigError::Invalid {
            name: "GITHUB_APP_PRIVATE_KEY",
            reason: other.to_string(),
        },
    })?;
    let client = GitHubClient::new(GitHubConfig {
        api_url: github.api_url.clone(),
        ..GitHubConfig::default()
    })
    .map_err(|error| WiringError::GitHub(error.to_string()))?;
    let tokens = Arc::new(InstallationTokens::new(credentials, client.clone()));
    Ok(Arc::new(GitHubApp::new(client, tokens)))
}

fn adc_tokens() -> Result<Arc<dyn TokenSource>, WiringError> {
    Ok(Arc::new(
        AdcTokenSource::from_environment()
            .map_err(|error| WiringError::Cloud(error.to_string()))?,
    ))
}

/// The deployers this configuration can reach: the local registry beside a
/// directory bucket; AI Platform and Vertex AI with a Google project.
pub fn deployers(config: &Config) -> Result<Deployers, WiringError> {
    let mut deployers = Deployers::default();
    if let Storage::Directory(dir) = &config.storage {
        deployers = deployers.with(
            DeployTarget::Local,
            Arc::new(LocalRegistry::new(dir.join("registry"))),
        );
    }
    if let Some(project) = &config.project {
        let tokens = adc_tokens()?;
        let mut settings = DeploySettings::new(project, &config.region);
        settings.ml_endpoint = config.ml_endpoint.clone();
        settings.vertex_endpoint = config.vertex_endpoint.clone();
        let setup =
            |error: crate::adapters::gcp::rest::SetupError| WiringError::Cloud(error.to_string());
        deployers = deployers
            .with(
                DeployTarget::AiPlatform,
                Arc::new(AiPlatformDeployer::new(settings.clone(), tokens.clone()).map_err(setup)?),
            )
            .with(
                DeployTarget::Vertex,
                Arc::new(VertexDeployer::new(settings, tokens).map_err(setup)?),
            );
    }
    Ok(deployers)
}

fn cloud_executor(
    kind: ExecutorKind,
    cloud: &CloudSettings,
    bucket: &str,
) -> Result<Arc<dyn NotebookExecutor>, WiringError> {
    let tokens = adc_tokens()?;
    let mut settings = JobSettings::new(&cloud.project, &cloud.region, bucket, &cloud.runner_image);
    settings.service_account = cloud.runner_service_account.clone();
    settings.endpoint = match kind {
        ExecutorKind::AiPlatform => cloud.ml_endpoint.clone(),
        _ => cloud.vertex_endpoint.clone(),
    };
    let executor: Arc<dyn NotebookExecutor> = match kind {
        ExecutorKind::AiPlatform => Arc::new(
            AiPlatformExecutor::new(settings, tokens)
                .map_err(|error| WiringError::Cloud(error.to_string()))?,
        ),
        _ => Arc::new(
            VertexExecutor::new(settings, tokens)
                .map_err(|error| WiringError::Cloud(error.to_string()))?,
        ),
    };
    Ok(executor)
}

/// The bucket `config` names; the directory bucket announces its finalize
/// events on the bus that `bus_slot` will hold (the bus keeps its own
/// messages in the bucket, so it is made after).
async fn open_store(
    config: &Config,
    bus_slot: &Arc<OnceLock<LocalBus>>,
) -> Result<(Arc<dyn ObjectStore>, Option<Arc<LocalDirStore>>), WiringError> {
    match &config.storage {
        Storage::Directory(dir) => {
            let listener_bus = bus_slot.clone();
            let local = Arc::new(
                LocalDirStore::new(dir)?
                    .own()?
                    .with_finalize_listener(Arc::new(move |key: &str, generation: i64| {
                        if classify(key) != ResultKind::Other
                            && let Some(bus) = listener_bus.get()
                        {
                            bus.announce(Message::Finalized {
                                key: key.to_owned(),
                                generation,
                            });
                        }
                    })),
            );
            Ok((local.clone(), Some(local)))
        }
        Storage::Gcs { bucket, emulator } => {
            let gcs = GcsStore::new(GcsSettings::new(bucket.clone(), emulator.clone()))
                .await
                .map_err(|error| WiringError::Bucket(error.to_string()))?;
            Ok((Arc::new(gcs), None))
        }
    }
}

/// The executor `config` names.
fn open_executor(
    config: &Config,
    store: &Arc<dyn ObjectStore>,
    scratch: &std::path::Path,
    progress: ProgressSink,
) -> Result<(Arc<dyn NotebookExecutor>, Option<LocalExecutor>), WiringError> {
    match (config.executor, &config.cloud, &config.storage) {
        (ExecutorKind::Local, _, _) => {
            let engine = PapermillEngine::with_settings(
                Python::discover(config.python.clone())?,
                EngineSettings {
                    slots: config.jobs,
                    max_output: Some(config.max_output),
                    max_html: config.max_html,
                    // A server runs notebook after notebook in each slot.
                    fork_kernels: true,
                    ..EngineSettings::default()
                },
            );
            let runner = JobRunner {
                engine,
                work_dir: Some(scratch.to_owned()),
                progress,
            };
            let local = LocalExecutor::new(store.clone(), runner, config.jobs);
            Ok((Arc::new(local.clone()), Some(local)))
        }
        (kind, Some(cloud), Storage::Gcs { bucket, .. }) => {
            Ok((cloud_executor(kind, cloud, bucket)?, None))
        }
        _ => Err(ConfigError::Missing {
            name: "NBCI_BUCKET",
            meaning: "cloud jobs need a Cloud Storage bucket and GOOGLE_CLOUD_PROJECT",
        }
        .into()),
    }
}

impl Services {
    /// Builds every adapter `config` asks for and starts the bus's worker.
    /// `progress` hears every cell of locally run notebooks (the terminal of
    /// `nbci serve`). Call [`Services::recover`] once the server listens.
    pub async fn build(config: Config, progress: ProgressSink) -> Result<Self, WiringError> {
        let app = github_app(&config)?;

        let bus_slot: Arc<OnceLock<LocalBus>> = Arc::new(OnceLock::new());
        let (store, local_store) = open_store(&config, &bus_slot).await?;
        let backoff = Backoff::new(Duration::from_secs(2), config.retry_max);
        let background = TaskTracker::new();
        let ci_worker = worker_name(&config);
        let scratch = config.data_dir.join("work");
        let (executor, local_executor) = open_executor(&config, &store, &scratch, progress)?;
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
                image: config
                    .cloud
                    .as_ref()
                    .map_or_else(|| "local".to_owned(), |cloud| cloud.runner_image.clone()),
                default_timeout: Some(config.job_timeout),
                lost_job_grace: config.lost_job_grace,
                lease_ttl: config.lease_ttl,
                backoff,
                worker: ci_worker.clone(),
                scratch_dir: Some(scratch),
                ..CiSettings::default()
            },
        );
        let pipelines = Pipelines::new(
            store.clone(),
            executor.clone(),
            deployers(&config)?,
            pipeline_settings(&config, &store_root(&config), backoff, ci_worker.clone()),
        )
        .with_sources(sources.clone());
        let inbox = Inbox::new(Some(ci.clone()), Some(pipelines.clone()));
        let oidc = match &config.oidc {
            None => OidcGuard::open(),
            Some(settings) => {
                let mut oidc = OidcSettings::new(settings.audience.clone());
                if let Some(email) = &settings.email {
                    oidc = oidc.with_email(email.clone());
                }
                if let Some(url) = &settings.jwks_url {
                    oidc = oidc.with_jwks_url(url.clone());
                }
                OidcGuard::from_settings(Some(oidc)).map_err(|error| ConfigError::Invalid {
                    name: "NBCI_OIDC_AUDIENCE",
                    reason: error.to_string(),
                })?
            }
        };

        // With the directory bucket, webhook deliveries are claimed in its journal.
        let (local_bus, worker) = match &local_store {
            Some(local) => {
                let dir = local.journal_dir();
                let journal = ClaimJournal::open(&dir).map_err(|error| OpenError::Io {
                    path: dir,
                    reason: error.to_string(),
                })?;
                LocalBus::journaled(store.clone(), journal, backoff)
            }
            None => LocalBus::new(store.clone(), backoff),
        };
        let _ = bus_slot.set(local_bus.clone());
        background.spawn(worker.run(Arc::new(inbox.clone()), background.clone()));
        let bus: Arc<dyn EventBus> = match &config.dispatch_topic {
            None => Arc::new(local_bus.clone()),
            Some(topic) => Arc::new(
                PubSubSettings::new(topic, config.pubsub_emulator.as_deref())
                    .and_then(PubSubBus::new)
                    .map_err(|error| ConfigError::Invalid {
                        name: "NBCI_DISPATCH_TOPIC",
                        reason: error.to_string(),
                    })?,
            ),
        };
        Ok(Self {
            config,
            store,
            local_store,
            bus,
            executor,
            check_runs,
            sources,
            ci,
            pipelines,
            inbox,
            oidc,
            local_bus: Some(local_bus),
            local_executor,
            background,
            stop: CancellationToken::new(),
        })
    }

    /// Picks up what a previous process left: its job checkouts are removed,
    /// its queued messages delivered again, and every active check swept
    /// (with the directory bucket, which this process owns alone, leases of
    /// the dead process are void). Then, on one machine, sweeps every
    /// [`LOCAL_SWEEP_INTERVAL`], the stand-in for Cloud Scheduler's tick.
    pub async fn recover(&self) {
        let removed = sweep_checkouts(&self.config.data_dir.join("work"));
        if removed > 0 {
            tracing::info!(removed, "removed job checkouts of an earlier process");
        }
        if let Some(bus) = &self.local_bus {
            match bus.replay().await {
                Ok(0) => {}
                Ok(replayed) => {
                    tracing::info!(replayed, "delivering queued messages of an earlier process")
                }
                Err(error) => tracing::error!(%error, "cannot read the queued messages"),
            }
        }
        let owns_bucket = self.local_store.is_some();
        if let Err(error) = self.ci.sweep(owns_bucket).await {
            tracing::error!(%error, "cannot sweep the active checks");
        }
        if let Err(error) = self.pipelines.sweep_with(owns_bucket).await {
            tracing::error!(%error, "cannot sweep the active pipeline runs");
        }
        if self.config.service != crate::config::Service::Serve {
            // On Cloud Run, Cloud Scheduler's tick sweeps.
            return;
        }
        let ci = self.ci.clone();
        let pipelines = self.pipelines.clone();
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
                        if let Err(error) = pipelines.sweep().await {
                            tracing::warn!(%error, "sweeping the active pipeline runs failed");
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Stops background work and waits for it, at most `deadline`: steps in
    /// flight finish (their state is in the bucket either way); notebooks
    /// still running here are stopped, and the next start runs them again.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stop.cancel();
        self.ci.begin_shutdown();
        self.pipelines.begin_shutdown();
        self.background.close();
        if let Some(local) = &self.local_executor {
            local.tracker().close();
        }
        let drained = tokio::time::timeout(deadline, self.ci.tracker().wait()).await;
        if drained.is_err() {
            tracing::warn!("shutdown deadline reached with check steps still in flight");
        }
    }
}

/// What `nbci pipeline` needs: the bucket, an executor, the deployers and the
/// CD flow, with the bucket's finalize events delivered to it. No GitHub.
#[derive(Debug)]
pub struct PipelineWorld {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    pub pipelines: Pipelines,
    local_bus: LocalBus,
    background: TaskTracker,
}

impl PipelineWorld {
    /// Builds the world `config` describes (a [`Service::Pipeline`] config).
    pub async fn build(config: Config, progress: ProgressSink) -> Result<Self, WiringError> {
        let bus_slot: Arc<OnceLock<LocalBus>> = Arc::new(OnceLock::new());
        let (store, _local) = open_store(&config, &bus_slot).await?;
        let backoff = Backoff::new(Duration::from_secs(2), config.retry_max);
        let scratch = config.data_dir.join("work");
        let (executor, _) = open_executor(&config, &store, &scratch, progress)?;
        let pipelines = Pipelines::new(
            store.clone(),
            executor,
            deployers(&config)?,
            pipeline_settings(&config, &store_root(&config), backoff, worker_name(&config)),
        );
        let (local_bus, worker) = LocalBus::new(store.clone(), backoff);
        let _ = bus_slot.set(local_bus.clone());
        let background = TaskTracker::new();
        let inbox = Inbox::new(None, Some(pipelines.clone()));
        background.spawn(worker.run(Arc::new(inbox), background.clone()));
        Ok(Self {
            config,
            store,
            pipelines,
            local_bus,
            background,
        })
    }

    /// Resumes what a killed `nbci pipeline run` left: queued finalize
    /// events and active runs.
    pub async fn recover(&self) {
        sweep_checkouts(&self.config.data_dir.join("work"));
        if let Err(error) = self.local_bus.replay().await {
            tracing::warn!(%error, "cannot read the queued messages");
        }
        if let Err(error) = self.pipelines.sweep().await {
            tracing::warn!(%error, "cannot sweep the active pipeline runs");
        }
    }

    /// Stops background work.
    pub fn shutdown(&self) {
        self.pipelines.begin_shutdown();
        self.background.close();
    }
}
