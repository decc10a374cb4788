//! Serving a router the same way in every Cloud Run service and in `nbci serve`.
//!
//! Shutdown is a parameter (as in mini-redis) so that tests bind `127.0.0.1:0`
//! and stop the server when they like, while `main` passes [`shutdown_signal`].

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
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

tokio::task_local! {
    /// The trace id of the request being served, for log lines.
    static TRACE: String;
}

/// Middleware: runs the request with its trace id (from `X-Cloud-Trace-Context`
/// or W3C `traceparent`) set, so that every log line it writes carries it.
pub async fn with_trace(request: Request, next: Next) -> Response {
    match trace_of(request.headers()) {
        Some(trace) => TRACE.scope(trace, next.run(request)).await,
        None => next.run(request).await,
    }
}

/// The trace id of the current request, if it came with one.
pub fn current_trace() -> Option<String> {
    TRACE.try_with(Clone::clone).ok()
}

/// `future` with the current request's trace id, for work spawned past the answer.
pub async fn keep_trace<F: Future>(trace: Option<String>, future: F) -> F::Output {
    match trace {
        Some(trace) => TRACE.scope(trace, future).await,
        None => future.await,
    }
}

/// The 32-hex-digit trace id of a request.
pub fn trace_of(headers: &HeaderMap) -> Option<String> {
    let is_trace = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(value) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = value.split('/').next().unwrap_or_default();
        if is_trace(id) {
            return Some(id.to_ascii_lowercase());
        }
    }
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let id = parent.split('-').nth(1)?;
    is_trace(id).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_either_header() {
        let mut headers = HeaderMap::new();
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
        let mut headers = HeaderMap::new();
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
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().expect("header"));
        assert_eq!(trace_of(&headers), None);
    }
}
