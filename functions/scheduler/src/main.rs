//! Entry point of the `scheduler` Cloud Run service: logging, config, bind `$PORT`, serve.

use nbci_shared::config::{Config, Service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::Scheduler)?;
    let addr = nbci_shared::http::bind_addr(config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "scheduler listening");
    nbci_shared::http::run(
        listener,
        scheduler::app(),
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
