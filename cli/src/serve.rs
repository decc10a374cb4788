//! `nbci serve`: the services in one process with the local adapters.
//!
//! A laptop or a VM becomes a working CI for a real GitHub repository: point
//! the GitHub App's webhook at `POST /github` (through a tunnel, say), and
//! every push or pull request gets one check run per changed notebook, run
//! here. `GET /runs/...` serves the executed notebooks as HTML under
//! `NBCI_PUBLIC_URL`, which is where the check runs' details links point.
//! Everything it accepted is kept in the data directory: killed and started
//! again, it finishes what it had started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use nbci_shared::config::{Config, Service};
use nbci_shared::wiring::Services;

use crate::Failure;

/// How long a stopping server waits for check steps in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:$PORT, PORT defaulting to 8080].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// The local bucket: staged sources, check states, executed notebooks [default: $NBCI_DATA_DIR or .nbci-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn serve(args: ServeArgs) -> Result<u8, Failure> {
    nbci_shared::telemetry::init();
    let mut config = Config::from_env(Service::Serve).map_err(Failure::usage)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let addr = args
        .addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], config.port)));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| Failure::infra(format!("cannot listen on {addr}: {error}")))?;
    let addr = listener.local_addr().unwrap_or(addr);
    if config.public_url.is_none() {
        // Links that work on this machine beat no links at all.
        let host = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let url = format!("http://{host}");
        tracing::warn!(%url, "NBCI_PUBLIC_URL is not set: details links point at this machine only");
        config.public_url = Some(url);
    }
    let services = Services::build(config, crate::progress::terminal(true))
        .await
        .map_err(Failure::usage)?;
    let Some(state) = github_webhook::WebhookState::from_services(&services) else {
        return Err(Failure::usage("GITHUB_WEBHOOK_SECRET is not set"));
    };
    let app = nbci_shared::http::healthz_router()
        .merge(github_webhook::routes(state))
        .merge(gcs_events::routes(gcs_events::EventsState {
            handler: std::sync::Arc::new(services.inbox.clone()),
            store: services.store.clone(),
        }))
        .merge(scheduler::routes(scheduler::SchedulerState {
            oidc: services.oidc.clone(),
            ci: services.ci.clone(),
            pipelines: services.pipelines.clone(),
        }))
        .layer(axum::middleware::from_fn(nbci_shared::http::with_trace));
    tracing::info!(
        %addr,
        "nbci serve listening: POST /github, /dispatch, /events, /tick; GET /runs/..., /healthz"
    );
    services.recover().await;
    let limits = services.config.http;
    nbci_shared::http::run(listener, app, limits, nbci_shared::http::shutdown_signal())
        .await
        .map_err(|error| Failure::infra(format!("server error: {error}")))?;
    services.shutdown(DRAIN_DEADLINE).await;
    Ok(0)
}
