//! Entry point of the `gcs-events` Cloud Run service: logging, config,
//! adapters, bind `$PORT`, serve until SIGTERM, drain.

use std::sync::Arc;
use std::time::Duration;

use gcs_events::EventsState;
use nbci_shared::config::{Config, Service};
use nbci_shared::wiring::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::GcsEvents)?;
    let services = Services::build(config, Arc::new(|_: &str, _: &_| {})).await?;
    let state = EventsState {
        handler: Arc::new(services.inbox.clone()),
        store: services.store.clone(),
    };
    let addr = nbci_shared::http::bind_addr(services.config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "gcs-events listening");
    services.recover().await;
    nbci_shared::http::run(
        listener,
        gcs_events::app(state),
        services.config.http,
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    services.shutdown(Duration::from_secs(8)).await;
    Ok(())
}
