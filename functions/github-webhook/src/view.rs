//! Executed notebooks of local CI runs, served for the check runs' details links.
//!
//! Only `output.html`, `output.ipynb` and `result.json` under `ci/` are served,
//! and only with the run's link token (see `nbci_shared::flows::ci::view_token`):
//! `NBCI_PUBLIC_URL` may be a public tunnel, and the notebooks may come from a
//! private repository. Sources, markers and job records are never served.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nbci_shared::domain::layout::validate_key;
use nbci_shared::ports::store::ObjectStore;
use nbci_shared::util::secret::Secret;

/// `GET /runs/{key}` over the bucket.
pub fn routes(store: Arc<dyn ObjectStore>, link_key: Arc<Secret>) -> Router {
    Router::new()
        .route("/runs/{*key}", get(view_run))
        .with_state(ViewState { store, link_key })
}

#[derive(Debug, Clone)]
struct ViewState {
    store: Arc<dyn ObjectStore>,
    link_key: Arc<Secret>,
}

#[derive(Debug, serde::Deserialize)]
struct ViewQuery {
    token: Option<String>,
}

/// Serves `output.html`, `output.ipynb` and `result.json` of CI runs, to holders
/// of the run's link token. Nothing else in the bucket (sources, markers) is served.
/// The token is the run's own (derived from its prefix): it opens nothing
/// of another run, or of another attempt of the same notebook.
async fn view_run(
    State(state): State<ViewState>,
    Path(key): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such run").into_response();
    if validate_key(&key).is_err() || !key.starts_with("ci/") {
        return not_found();
    }
    let Some((prefix, file)) = key.rsplit_once('/') else {
        return not_found();
    };
    let content_type = match file {
        "output.html" => "text/html; charset=utf-8",
        "output.ipynb" => "application/x-ipynb+json",
        "result.json" => "application/json",
        _ => return not_found(),
    };
    let expected = nbci_shared::flows::ci::view_token(&state.link_key, prefix);
    let given = query.token.unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        expected.as_bytes(),
    )) {
        return (StatusCode::FORBIDDEN, "this link needs its token").into_response();
    }
    match state.store.read(&key).await {
        // Streamed: a large executed notebook is never held whole in memory,
        // however many people download it at once.
        Ok(Some(object)) => {
            let mut response = Response::new(Body::from_stream(object.chunks));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Some(size) = object.size {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            }
            response
        }
        Ok(None) => match state.store.generation(&format!("{prefix}/job.json")).await {
            Ok(Some(_)) => (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                RUNNING_PAGE,
            )
                .into_response(),
            _ => not_found(),
        },
        Err(error) => {
            tracing::error!(%error, "cannot read the local bucket");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response()
        }
    }
}

const RUNNING_PAGE: &str = "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>\
<title>nbci: running</title><p>The notebook is still running; this page refreshes every 5 seconds.</p>";
