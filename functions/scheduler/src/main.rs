//! Entry point of the `scheduler` Cloud Run service: logging, config,
//! adapters, bind `$PORT`, serve until SIGTERM, drain.

use std::sync::Arc;
use std::time::Duration;

use nbci_shared::config::{Config, Service};
use nbci_shared::wiring::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::Scheduler)?;
    let services = Services::build(config, Arc::new(|_: &str, _: &_| {})).await?;
    let state = scheduler::SchedulerState {
        oidc: services.oidc.clone(),
        ci: services.ci.clone(),
        pipelines: services.pipelines.clone(),
    };
    let addr = nbci_shared::http::bind_addr(services.config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "scheduler listening");
    services.recover().await;
    nbci_shared::http::run(
        listener,
        scheduler::app(state),
        services.config.http,
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    services.shutdown(Duration::from_secs(8)).await;
    Ok(())
}
