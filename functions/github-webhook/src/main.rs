//! Entry point of the `github-webhook` Cloud Run service: logging, config,
//! adapters, bind `$PORT`, serve until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = github_webhook::config::WebhookConfig::from_env()?;
    let (state, store) =
        github_webhook::config::local_state(config, std::sync::Arc::new(|_: &str, _: &_| {}))?;
    let addr = nbci_shared::server::bind_addr_from_env()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "github-webhook listening");
    nbci_shared::server::run(
        listener,
        github_webhook::local_app(state, store),
        nbci_shared::server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
