//! Reading request bodies with bounded memory and time.
//!
//! A public service cannot trust a body before it has read it (a webhook's
//! signature covers the whole body), so a caller who sends nothing valid can
//! still make it buffer. Two limits keep that small:
//! - one [`BodyBudget`] per server: the bytes of all bodies being read or
//!   held, together, stay under it; a body waits for room, chunk by chunk,
//!   instead of growing memory;
//! - a body must arrive whole within the budget's timeout, so a client that
//!   trickles (or stops) gives its share back.
//!
//! [`read_body`] reads a body under both, feeding each chunk to a callback (a
//! MAC, say) as it comes; [`LimitedBytes`] is the extractor for handlers that
//! just want the bytes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppError;
use super::serve::HttpLimits;

/// Bytes of request bodies that may be in memory at once, and how long one
/// body may take. Cloned handles share one budget.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    room: Arc<Semaphore>,
    /// The budget's size: no one body may ask for more.
    bytes: usize,
    timeout: Duration,
}

impl BodyBudget {
    pub fn new(bytes: usize, timeout: Duration) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            room: Arc::new(Semaphore::new(bytes)),
            bytes,
            timeout,
        }
    }

    /// The budget [`super::run`] put in the request, else one for the
    /// process with the default limits (handlers tested without a server).
    pub fn of(request: &Request) -> Self {
        request
            .extensions()
            .get::<BodyBudget>()
            .cloned()
            .unwrap_or_else(|| {
                static FALLBACK: OnceLock<BodyBudget> = OnceLock::new();
                FALLBACK
                    .get_or_init(|| {
                        let limits = HttpLimits::default();
                        BodyBudget::new(limits.body_memory, limits.body_timeout)
                    })
                    .clone()
            })
    }

    /// Bytes free now (for tests and logs).
    pub fn available(&self) -> usize {
        self.room.available_permits()
    }
}

/// A body read whole; its bytes count against the budget until it is dropped.
#[derive(Debug)]
pub struct BufferedBody {
    bytes: Vec<u8>,
    _held: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for BufferedBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads `body` whole, at most `max_bytes` of it, within `budget` (room and
/// time), calling `on_chunk` with each chunk as it arrives. Errors: 413 past
/// `max_bytes` (also when `Content-Length` says so up front), 408 when the
/// body did not arrive in time, 400 when the connection broke.
pub async fn read_body(
    body: Body,
    content_length: Option<u64>,
    max_bytes: usize,
    budget: &BodyBudget,
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<BufferedBody, AppError> {
    let max_bytes = max_bytes.min(budget.bytes);
    if content_length.is_some_and(|length| length > u64::try_from(max_bytes).unwrap_or(u64::MAX)) {
        return Err(AppError::PayloadTooLarge);
    }
    // An honest length saves the doublings of a growing buffer; pages are
    // only touched as bytes arrive, so a lying one costs nothing real.
    let capacity = content_length
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0)
        .min(max_bytes);
    let read = async {
        let mut body = body;
        let mut bytes: Vec<u8> = Vec::with_capacity(capacity);
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                AppError::BadRequest(format!("the request body broke off: {error}"))
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if chunk.is_empty() {
                continue;
            }
            if bytes.len().saturating_add(chunk.len()) > max_bytes {
                return Err(AppError::PayloadTooLarge);
            }
            // Room for this chunk before it is kept; it waits if others hold
            // the budget. A chunk is at most a connection's buffer (64 KiB).
            let wanted = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let permit = budget
                .room
                .clone()
                .acquire_many_owned(wanted)
                .await
                .map_err(|_| AppError::Unavailable("the body budget is closed".into()))?;
            match held.as_mut() {
                Some(all) => all.merge(permit),
                None => held = Some(permit),
            }
            on_chunk(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        Ok(BufferedBody { bytes, _held: held })
    };
    match tokio::time::timeout(budget.timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(AppError::RequestTimeout),
    }
}

/// The `Content-Length` a request declares, if any and numeric.
pub fn content_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Extractor: the whole body, at most `MAX` bytes, read within the server's
/// [`BodyBudget`]. Use it instead of `Bytes` on every route that takes a body.
#[derive(Debug)]
pub struct LimitedBytes<const MAX: usize>(pub BufferedBody);

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for LimitedBytes<MAX> {
    type Rejection = AppError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let budget = BodyBudget::of(&request);
        let length = content_length(&request);
        let body = read_body(request.into_body(), length, MAX, &budget, |_| {}).await?;
        Ok(Self(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunks(parts: Vec<&'static [u8]>) -> Body {
        let stream = tokio_stream_of(parts);
        Body::from_stream(stream)
    }

    fn tokio_stream_of(
        parts: Vec<&'static [u8]>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_and_hold_their_bytes_until_dropped() {
        let budget = BodyBudget::new(100, Duration::from_secs(5));
        let mut seen = Vec::new();
        let body = read_body(chunks(vec![b"abc", b"", b"de"]), None, 50, &budget, |c| {
            seen.extend_from_slice(c)
        })
        .await
        .expect("read");
        assert_eq!(&*body, b"abcde");
        assert_eq!(seen, b"abcde");
        assert_eq!(budget.available(), 95);
        drop(body);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn too_large_bodies_are_refused_before_or_while_reading() {
        let budget = BodyBudget::new(100, Duration::from_secs(5));
        let error = read_body(chunks(vec![b"x"]), Some(51), 50, &budget, |_| {})
            .await
            .expect_err("declared too large");
        assert!(matches!(error, AppError::PayloadTooLarge));
        let error = read_body(chunks(vec![b"0123456789"; 6]), None, 50, &budget, |_| {})
            .await
            .expect_err("too large");
        assert!(matches!(error, AppError::PayloadTooLarge));
        assert_eq!(budget.available(), 100, "everything given back");
        // No body may need more than the whole budget.
        let small = BodyBudget::new(8, Duration::from_secs(5));
        let error = read_body(chunks(vec![b"0123456789"]), None, 50, &small, |_| {})
            .await
            .expect_err("over the budget");
        assert!(matches!(error, AppError::PayloadTooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waits_for_room_and_gives_up_at_the_timeout() {
        let budget = BodyBudget::new(10, Duration::from_secs(30));
        let first = read_body(chunks(vec![b"012345678"]), None, 10, &budget, |_| {})
            .await
            .expect("fits");
        let started = tokio::time::Instant::now();
        let error = read_body(chunks(vec![b"0123"]), None, 10, &budget, |_| {})
            .await
            .expect_err("no room");
        assert!(matches!(error, AppError::RequestTimeout));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(first);
        assert!(
            read_body(chunks(vec![b"0123"]), None, 10, &budget, |_| {})
                .await
                .is_ok()
        );
    }
}
