//! HTTP for every service: serving a router within limits a hostile client
//! cannot get around ([`serve`]), reading bodies with bounded memory
//! ([`body`]), graceful shutdown, the trace middleware, and one error type
//! that maps to status codes.
//!
//! Shutdown is a parameter (as in mini-redis) so that tests bind `127.0.0.1:0`
//! and stop the server when they like, while `main` passes [`shutdown_signal`].

pub mod body;
mod error;
mod serve;

pub use crate::telemetry::{current_trace, keep_trace, trace_of};
pub use body::{BodyBudget, LimitedBytes, read_body};
pub use error::AppError;
pub use serve::{HttpLimits, StallGuard, run};

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;

/// The liveness route every service answers: `GET /healthz` -> `200 ok`.
pub fn healthz_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// The address a Cloud Run service binds: every interface, on `port`.
pub fn bind_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
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

/// Middleware: runs the request with its trace id (from `X-Cloud-Trace-Context`
/// or W3C `traceparent`) set, so that every log line it writes carries it.
pub async fn with_trace(request: Request, next: Next) -> Response {
    match trace_of(request.headers()) {
        Some(trace) => keep_trace(Some(trace), next.run(request)).await,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_either_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            "105445AA7843BC8BF206B12000100000/1;o=1"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            trace_of(&headers).as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            trace_of(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().expect("header"));
        assert_eq!(trace_of(&headers), None);
    }
}
