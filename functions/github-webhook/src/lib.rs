//! The `github-webhook` service: GitHub App webhooks in, notebook checks out.
//!
//! The handler verifies `X-Hub-Signature-256` over the raw body before
//! anything else, parses the event, dedupes on `X-GitHub-Delivery`, answers at
//! once (GitHub waits 10 s at most) and hands the work to the CI flow in the
//! background. This crate stays thin: parsing and decisions live in
//! `nbci_shared`; here requests become calls and errors become statuses.
//!
//! | answer | when |
//! |---|---|
//! | 401, empty | signature missing, not `sha256=`, or wrong |
//! | 413 | body over 25 MiB |
//! | 400 + reason | headers missing, payload malformed |
//! | 200 | ping, duplicate delivery |
//! | 202 + reason | accepted, or deliberately ignored (event, action, no installation) |
//! | 503 | the bucket is unreachable (GitHub's redelivery can retry) |

pub mod config;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nbci_shared::ci::{Ci, Trigger};
use nbci_shared::github::events::{Event, parse_event};
use nbci_shared::github::{Secret, verify_signature};
use nbci_shared::store::{ObjectStore, StoreError};

/// GitHub caps webhook payloads at 25 MB; anything larger is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// What the handler needs, built once at start-up.
#[derive(Debug, Clone)]
pub struct WebhookState {
    /// `GITHUB_WEBHOOK_SECRET`: the HMAC key GitHub signs deliveries with.
    pub secret: Arc<Secret>,
    /// Where delivery ids are claimed (`deliveries/{id}`).
    pub store: Arc<dyn ObjectStore>,
    /// The CI flow the accepted deliveries go to.
    pub ci: Ci,
}

/// The service: `POST /github` and `GET /healthz`.
pub fn app(state: WebhookState) -> Router {
    nbci_shared::server::healthz_router().merge(routes(state))
}

/// The service with the local adapters: [`app`] plus `GET /runs/...`, the
/// executed notebooks that the check runs' details links point to.
pub fn local_app(state: WebhookState, store: Arc<nbci_shared::store::LocalDirStore>) -> Router {
    let link_key = state.secret.clone();
    app(state).merge(view::routes(store, link_key))
}

/// Just `POST /github`, for `nbci serve` to merge beside its other routes.
pub fn routes(state: WebhookState) -> Router {
    Router::new()
        .route("/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

/// Delivery ids are GUIDs; anything else could not name a bucket object safely.
fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    // Nothing is parsed, not even the event name, before the signature holds.
    let signature = header(&headers, "x-hub-signature-256");
    if let Err(error) = verify_signature(state.secret.expose().as_bytes(), &body, signature) {
        tracing::warn!(reason = %error, "webhook signature rejected");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(event_name) = header(&headers, "x-github-event").filter(|e| !e.trim().is_empty())
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Event header is missing",
        );
    };
    let Some(delivery) = header(&headers, "x-github-delivery").map(str::trim) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Delivery header is missing",
        );
    };
    if !valid_delivery_id(delivery) {
        return answer(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Delivery header is not a delivery id",
        );
    }
    let event = match parse_event(event_name, &body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%delivery, event = event_name, %error, "malformed webhook payload");
            return answer(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let trigger = match &event {
        Event::Ping { .. } => return answer(StatusCode::OK, "pong"),
        Event::Ignored { reason } | Event::Skipped { reason } => {
            tracing::info!(%delivery, event = event_name, %reason, "webhook ignored");
            return answer(StatusCode::ACCEPTED, format!("ignored: {reason}"));
        }
        other => match Trigger::from_event(other, delivery) {
            Some(trigger) => trigger,
            None => {
                tracing::info!(%delivery, event = event_name, "nothing to run");
                return answer(StatusCode::ACCEPTED, "ignored: nothing to run");
            }
        },
    };
    match nbci_shared::store::claim_once(
        state.store.as_ref(),
        &format!("deliveries/{delivery}"),
        event_name.as_bytes(),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(%delivery, "duplicate delivery ignored");
            return answer(StatusCode::OK, "duplicate delivery");
        }
        Err(StoreError::Unavailable(reason)) => {
            tracing::error!(%delivery, %reason, "cannot record the delivery");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry later",
            );
        }
        Err(error) => {
            tracing::error!(%delivery, %error, "cannot record the delivery");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot record the delivery",
            );
        }
    }
    tracing::info!(
        %delivery,
        event = event_name,
        repo = %trigger.repo,
        sha = %trigger.head_sha,
        "webhook accepted"
    );
    let ci = state.ci.clone();
    tokio::spawn(async move {
        if let Err(error) = ci.dispatch(&trigger).await {
            tracing::error!(delivery = %trigger.delivery, repo = %trigger.repo, %error, "dispatching checks failed");
        }
    });
    answer(StatusCode::ACCEPTED, "accepted")
}
