//! Entry point of the `github-webhook` Cloud Run service: logging, config,
//! adapters, bind `$PORT`, serve until SIGTERM, drain.

use std::sync::Arc;
use std::time::Duration;

use nbci_shared::config::{Config, Service};
use nbci_shared::wiring::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::GithubWebhook)?;
    let services = Services::build(config, Arc::new(|_: &str, _: &_| {})).await?;
    let state = github_webhook::WebhookState::from_services(&services)
        .ok_or_else(|| anyhow::anyhow!("GITHUB_WEBHOOK_SECRET is not set"))?;
    let addr = nbci_shared::http::bind_addr(services.config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "github-webhook listening");
    services.recover().await;
    let app = github_webhook::app(state);
    nbci_shared::http::run(
        listener,
        app,
        services.config.http,
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    services.shutdown(Duration::from_secs(8)).await;
    Ok(())
}
