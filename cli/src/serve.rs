//! `nbci serve`: the services in one process with the local adapters.
//!
//! A laptop or a VM becomes a working CI for a real GitHub repository: point
//! the GitHub App's webhook at `POST /github` (through a tunnel, say), and
//! every push or pull request gets one check run per changed notebook, run
//! here. `GET /runs/...` serves the executed notebooks as HTML under
//! `NBCI_PUBLIC_URL`, which is where the check runs' details links point.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use github_webhook::config::WebhookConfig;

use crate::Failure;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:$PORT, PORT defaulting to 8080].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// The local bucket: staged sources, executed notebooks, results [default: $NBCI_DATA_DIR or .nbci-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn serve(args: ServeArgs) -> Result<u8, Failure> {
    nbci_shared::telemetry::init();
    let mut config = WebhookConfig::from_env().map_err(Failure::usage)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let port = nbci_shared::server::bind_addr_from_env()
                .map_err(Failure::usage)?
                .port();
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
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
    let (state, store) =
        github_webhook::config::local_state(config, crate::progress::terminal(true))
            .map_err(Failure::infra)?;
    let app = github_webhook::local_app(state, store);
    tracing::info!(%addr, "nbci serve listening: POST /github, GET /runs/..., GET /healthz");
    nbci_shared::server::run(listener, app, nbci_shared::server::shutdown_signal())
        .await
        .map_err(|error| Failure::infra(format!("server error: {error}")))?;
    Ok(0)
}
