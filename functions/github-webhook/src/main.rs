//! Entry point of the `github-webhook` Cloud Run service: logging, bind `$PORT`, serve.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let addr = nbci_shared::server::bind_addr_from_env()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "github-webhook listening");
    nbci_shared::server::run(
        listener,
        github_webhook::app(),
        nbci_shared::server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
