//! Entry point of the `scheduler` Cloud Run service: logging, config, bind `$PORT`, serve.

use nbci_shared::adapters::gcp::oidc::{OidcGuard, OidcSettings};
use nbci_shared::config::{Config, Service};

/// `NBCI_OIDC_AUDIENCE`, `NBCI_OIDC_EMAIL`, `NBCI_OIDC_JWKS_URL`, read here
/// only until `Config` carries them (`config.oidc`): a scheduler deployed
/// with an audience must never serve `/tick` unchecked in the meantime.
fn oidc_settings_from_env() -> anyhow::Result<Option<OidcSettings>> {
    let variable = |name: &str| std::env::var(name).ok();
    Ok(OidcSettings::from_variables(
        variable("NBCI_OIDC_AUDIENCE").as_deref(),
        variable("NBCI_OIDC_EMAIL").as_deref(),
        variable("NBCI_OIDC_JWKS_URL").as_deref(),
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nbci_shared::telemetry::init();
    let config = Config::from_env(Service::Scheduler)?;
    let state = scheduler::SchedulerState {
        oidc: OidcGuard::from_settings(oidc_settings_from_env()?)?,
    };
    let addr = nbci_shared::http::bind_addr(config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "scheduler listening");
    nbci_shared::http::run(
        listener,
        scheduler::app(state),
        nbci_shared::http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
