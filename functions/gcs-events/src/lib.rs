//! The `gcs-events` Cloud Run service. This crate stays thin: it parses requests,
//! calls `nbci_shared` and maps errors to HTTP statuses.

use axum::Router;

/// The service's routes. Handler tests call `app().oneshot(request)` with no socket.
pub fn app() -> Router {
    nbci_shared::http::healthz_router()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_answers_ok() {
        let response = super::app()
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
