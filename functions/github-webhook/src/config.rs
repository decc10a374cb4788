//! The webhook service's configuration, read once from the environment.
//!
//! Each variable is named when it is missing or malformed; secrets are kept
//! in [`Secret`] and never printed.

use std::path::PathBuf;
use std::sync::Arc;

use nbci_shared::ci::{Ci, CiConfig};
use nbci_shared::engine::{LocalEngine, ProgressSink, Python};
use nbci_shared::executor::LocalExecutor;
use nbci_shared::github::{AppCredentials, GitHubClient, GitHubConfig, InstallationTokens, Secret};
use nbci_shared::store::{LocalDirStore, ObjectStore};

use crate::WebhookState;

/// Everything the service reads from its environment.
#[derive(Debug)]
pub struct WebhookConfig {
    pub secret: Secret,
    pub credentials: AppCredentials,
    pub github: GitHubConfig,
    /// `NBCI_PUBLIC_URL`: where executed notebooks are served (details links).
    pub public_url: Option<String>,
    /// `NBCI_DATA_DIR`: the local bucket of the local executor.
    pub data_dir: PathBuf,
    /// `NBCI_JOBS`: notebooks run at once by the local executor.
    pub jobs: usize,
    /// `NBCI_MAX_NOTEBOOKS`: notebooks checked per commit.
    pub max_notebooks: usize,
}

impl WebhookConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let secret = lookup("GITHUB_WEBHOOK_SECRET")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "GITHUB_WEBHOOK_SECRET is not set (the GitHub App's webhook secret)"
                )
            })?;
        match lookup("NBCI_EXECUTOR").as_deref().map(str::trim) {
            None | Some("" | "local") => {}
            Some(other) => anyhow::bail!(
                "NBCI_EXECUTOR={other}: this build runs notebooks with the local executor only \
                 (set NBCI_EXECUTOR=local or leave it unset)"
            ),
        }
        let number = |name: &str, default: usize| -> anyhow::Result<usize> {
            match lookup(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!("{name} must be a positive whole number, got {value:?}")
                    }),
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            secret: Secret::new(secret),
            credentials: AppCredentials::from_lookup(&lookup)?,
            github: GitHubConfig::from_lookup(&lookup)?,
            public_url: lookup("NBCI_PUBLIC_URL")
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            data_dir: lookup("NBCI_DATA_DIR")
                .filter(|d| !d.trim().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".nbci-data")),
            jobs: number("NBCI_JOBS", cores)?,
            max_notebooks: number("NBCI_MAX_NOTEBOOKS", 50)?,
        })
    }
}

/// The webhook state with the local adapters: a directory bucket, notebooks
/// run here, results completed from the in-process queue (spawned here).
pub fn local_state(
    config: WebhookConfig,
    progress: ProgressSink,
) -> anyhow::Result<(WebhookState, Arc<LocalDirStore>)> {
    let store = Arc::new(LocalDirStore::new(&config.data_dir).map_err(|error| {
        anyhow::anyhow!("NBCI_DATA_DIR {}: {error}", config.data_dir.display())
    })?);
    let github = GitHubClient::new(config.github)?;
    let tokens = Arc::new(InstallationTokens::new(config.credentials, github.clone()));
    let engine = LocalEngine::new(Python::discover()?);
    let (finalized_tx, finalized_rx) = tokio::sync::mpsc::unbounded_channel();
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    let executor = Arc::new(LocalExecutor::new(
        dyn_store.clone(),
        engine,
        config.jobs,
        finalized_tx,
        progress,
    ));
    let ci = Ci::new(
        github,
        tokens,
        dyn_store.clone(),
        executor,
        CiConfig {
            public_url: config.public_url,
            max_notebooks: config.max_notebooks,
            image: "local".into(),
            link_key: Some(config.secret.clone()),
        },
    );
    tokio::spawn(ci.clone().complete_from_queue(finalized_rx));
    Ok((
        WebhookState {
            secret: Arc::new(config.secret.clone()),
            store: dyn_store,
            ci,
        },
        store,
    ))
}
