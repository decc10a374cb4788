//! Serving a router to clients that may be hostile.
//!
//! The webhook is public (GitHub must reach it), so anyone can open
//! connections to it, and `nbci serve` may sit behind a tunnel. Every limit
//! here holds for every route of every service:
//! - at most [`HttpLimits::max_connections`] connections are served at once;
//!   past it the server stops accepting (the kernel's backlog holds the rest);
//! - a request's headers must arrive within [`HttpLimits::header_timeout`]
//!   (hyper's own timer), which also closes idle keep-alive connections;
//! - a handler has [`HttpLimits::request_timeout`] in all, then the client
//!   gets 503 (platforms retry 503);
//! - a client that stops taking the answer for [`HttpLimits::stall_timeout`]
//!   loses the connection ([`StallGuard`]), so a slow reader of a large
//!   executed notebook cannot hold a connection and its file for good;
//! - request bodies are read through [`super::body`]: a shared budget of
//!   bytes in memory and [`HttpLimits::body_timeout`] per body.
//!
//! Only HTTP/1.1 is served: GitHub, Pub/Sub pushes, Eventarc and Cloud Run's
//! front end all speak it to the container, and HTTP/2's own resource
//! controls (streams, windows, resets) would be one more surface to harden.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::body::BodyBudget;

/// What a server allows its clients. Read from `NBCI_HTTP_*` by the
/// configuration; [`HttpLimits::default`] is what an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once (`NBCI_HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time for a request's headers to arrive, and for an idle keep-alive
    /// connection to send its next request (`NBCI_HTTP_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// Time for a whole request body to arrive (`NBCI_HTTP_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// Time a handler has to answer (`NBCI_HTTP_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Time a client may take none of the answer before the connection is
    /// closed (`NBCI_HTTP_STALL_TIMEOUT`).
    pub stall_timeout: Duration,
    /// Bytes of request bodies held in memory at once, all requests together
    /// (`NBCI_HTTP_BODY_MEMORY_MIB`, in MiB).
    pub body_memory: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            body_memory: 64 << 20,
        }
    }
}

/// The largest read buffer of one connection: request headers must fit (GitHub's
/// are about 2 KiB), and body bytes wait here only until the handler takes them.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// How long to wait after a failed `accept` (out of file descriptors, say)
/// before trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets requests in flight finish (each connection finishes its current
/// answer and closes).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let budget = BodyBudget::new(limits.body_memory, limits.body_timeout);
    let app = app.layer(axum::middleware::from_fn(move |request, next| {
        bounded(limits.request_timeout, budget.clone(), request, next)
    }));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = tokio_util::task::TaskTracker::new();
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(StallGuard::new(stream, limits.stall_timeout));
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_CONNECTION_BUFFER);
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stopping) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                // Timeouts and clients that go away are routine on a public address.
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Completes when the server stops (or is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Middleware of [`run`]: the request timeout, and the body budget handed to
/// handlers (through the request's extensions) that read bodies.
async fn bounded(
    timeout: Duration,
    budget: BodyBudget,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(budget);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "request timed out");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long; retry later",
            )
                .into_response()
        }
    }
}

/// A connection whose writes fail once the peer has taken nothing for
/// `timeout`: a client that stops reading an answer cannot keep its
/// connection (and what the answer streams from) for good. Reads are left
/// alone: hyper bounds the header, [`super::body`] the body.
#[derive(Debug)]
pub struct StallGuard<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write waits; reset by any progress.
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled_since: None,
        }
    }

    /// What a waiting write returns: pending until the timer runs out.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took nothing of the answer for too long",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.wait(cx),
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.wait(cx),
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.wait(cx),
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.wait(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_route_answers_503_past_the_request_timeout_and_bodies_get_the_budget() {
        use axum::routing::{get, post};
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/budget",
                post(|request: Request| async move {
                    let budget = BodyBudget::of(&request);
                    budget.available().to_string()
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(300),
            body_memory: 12345,
            ..HttpLimits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, app, limits, async {
            let _ = stopped.await;
        }));
        let started = std::time::Instant::now();
        let slow = reqwest::get(format!("{url}/slow")).await.expect("answered");
        assert_eq!(slow.status().as_u16(), 503);
        assert!(started.elapsed() < Duration::from_secs(5));
        let budget = reqwest::Client::new()
            .post(format!("{url}/budget"))
            .body("x")
            .send()
            .await
            .expect("answered");
        assert_eq!(budget.text().await.expect("text"), "12345");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("task")
            .expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_nothing_fails_the_write_after_the_timeout() {
        // A pipe with a 16-byte buffer that nobody reads.
        let (near, _far) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(near, Duration::from_secs(5));
        guarded.write_all(&[0; 16]).await.expect("fits the buffer");
        let started = tokio::time::Instant::now();
        let error = guarded.write_all(&[0; 16]).await.expect_err("stalls");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_is_served() {
        let (near, mut far) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0; 8];
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let mut guarded = StallGuard::new(near, Duration::from_secs(5));
        guarded
            .write_all(&[1; 64])
            .await
            .expect("progress resets the timer");
        guarded.shutdown().await.expect("shutdown");
        drop(guarded);
        assert_eq!(reader.await.expect("reader"), 64);
    }
}
