//! Entry point of the `gcs-events` Cloud Run service: logging, config, bind `$PORT`, serve.
//!
//! The flows are not wired into this service yet (that needs the bucket and
//! the GitHub App in its configuration), so its handler takes no event: each
//! one is answered 503 and stays with Pub/Sub or Eventarc, which redeliver it
//! once a wired revision serves. Nothing is acted on, and nothing is lost.

use std::sync::Arc;

use async_trait::async_trait;
use gcs_events::EventsState;
use nbci_shared::adapters::local::store::LocalDirStore;
use nbci_shared::config::{Config, Service};
use nbci_shared::ports::bus::{HandlerError, Message, MessageHandler};

/// A handler that asks for every message to be delivered again later.
#[derive(Debug)]
struct NotWired;

#[async_trait]
impl MessageHandler for NotWired {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        Err(HandlerError::Transient(format!(
            "gcs-events is not wired to the flows yet; {} stays queued",
            message.id()
        )))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::GcsEvents)?;
    let state = EventsState {
        handler: Arc::new(NotWired),
        store: Arc::new(LocalDirStore::new(&config.data_dir)?),
    };
    let addr = nbci_shared::http::bind_addr(config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "gcs-events listening");
    nbci_shared::http::run(
        listener,
        gcs_events::app(state),
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
