//! Entry point of the `gcs-events` Cloud Run service: logging, config, bind `$PORT`, serve.

use nbci_shared::config::{Config, Service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::GcsEvents)?;
    let addr = nbci_shared::http::bind_addr(config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "gcs-events listening");
    nbci_shared::http::run(
        listener,
        gcs_events::app(),
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
