//! One error type for every handler: the status tells the sender what to do
//! (401: not from who it claims; 400: fix the request, do not retry; 413:
//! too large; 503: try again later, the platform retries), and the cause is
//! logged once, here, never sent to the caller.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Occurs when a signature or token does not verify: 401 with no detail.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Occurs when the request is malformed: 400 with the reason (not retried).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Occurs when the body is over the limit: 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Occurs when the request body did not arrive in time: 408, with no
    /// detail (a slow or stalled client; honest senders retry).
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Occurs when something the service needs is unreachable: 503, and the
    /// platform (GitHub's redelivery, Pub/Sub, Eventarc) tries again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Occurs on a bug or a permanent failure of our own: 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Unauthorized(reason) => {
                tracing::warn!(%reason, "request refused: unauthorized");
                StatusCode::UNAUTHORIZED.into_response()
            }
            AppError::BadRequest(reason) => {
                tracing::warn!(%reason, "request refused: malformed");
                (StatusCode::BAD_REQUEST, reason).into_response()
            }
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            AppError::RequestTimeout => {
                tracing::warn!("request refused: its body did not arrive in time");
                StatusCode::REQUEST_TIMEOUT.into_response()
            }
            AppError::Unavailable(reason) => {
                tracing::error!(%reason, "request failed transiently; the sender should retry");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable, retry later",
                )
                    .into_response()
            }
            AppError::Internal(reason) => {
                tracing::error!(%reason, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_tell_the_sender_what_to_do() {
        let status = |error: AppError| error.into_response().status();
        assert_eq!(
            status(AppError::Unauthorized("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(AppError::BadRequest("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AppError::PayloadTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(AppError::RequestTimeout),
            StatusCode::REQUEST_TIMEOUT
        );
        assert_eq!(
            status(AppError::Unavailable("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(AppError::Internal("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
