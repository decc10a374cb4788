//! Entry point of the `gcs-events` Cloud Run service: logging, bind `$PORT`, serve.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let addr = nbci_shared::server::bind_addr_from_env()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "gcs-events listening");
    nbci_shared::server::run(
        listener,
        gcs_events::app(),
        nbci_shared::server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
