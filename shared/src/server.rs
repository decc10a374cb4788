//! Serving a router the same way in every Cloud Run service and in `nbci serve`.
//!
//! Shutdown is a parameter (as in mini-redis) so that tests bind `127.0.0.1:0`
//! and stop the server when they like, while `main` passes [`shutdown_signal`].

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// The liveness route every service answers: `GET /healthz` -> `200 ok`.
pub fn healthz_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// The address to bind: `0.0.0.0:$PORT`, where Cloud Run sets `PORT` (default 8080).
pub fn bind_addr_from_env() -> anyhow::Result<SocketAddr> {
    let port = match std::env::var("PORT") {
        Ok(value) => value
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("PORT must be a TCP port number, got {value:?}"))?,
        Err(_) => 8080,
    };
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests
/// in flight finish.
pub async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGTERM (what Cloud Run sends before stopping an instance) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing requests in flight");
}
