//! The `scheduler` Cloud Run service: Cloud Scheduler's ticks.
//!
//! Cloud Scheduler calls `POST /tick` with a Google-signed ID token of its
//! service account. A tick starts pipeline runs, so `/tick` is behind
//! [`OidcGuard`]: with `NBCI_OIDC_AUDIENCE` set, a request without a valid
//! token for that audience (and `NBCI_OIDC_EMAIL`'s account) gets 401 and an
//! empty body; without it (local `nbci serve`) every request passes.
//! `GET /healthz` is never behind the guard: Cloud Run's probes carry no token.
//!
//! This crate stays thin: it parses requests, calls `nbci_shared` and maps
//! errors to HTTP statuses.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use nbci_shared::adapters::gcp::oidc::{Claims, OidcGuard};
use nbci_shared::domain::repo::RepoRef;
use nbci_shared::flows::ci::Ci;
use nbci_shared::flows::pipeline::{PipelineError, Pipelines};
use nbci_shared::http::AppError;
use serde_json::json;

/// What the handlers need, built once at start-up.
#[derive(Debug, Clone)]
pub struct SchedulerState {
    /// Checks Cloud Scheduler's ID token on `/tick` (open when no audience
    /// is configured).
    pub oidc: OidcGuard,
    /// The CI flow whose active checks a tick sweeps (lost jobs, overdue
    /// jobs, steps waiting for a retry).
    pub ci: Ci,
    /// The CD flow: a tick naming a pipeline starts its run; every tick
    /// sweeps active runs (lost steps, deployments to poll).
    pub pipelines: Pipelines,
}

/// What a tick may name: Cloud Scheduler's job for one pipeline's schedule
/// posts `{"pipeline": NAME, "repository": "owner/repo"}`; the every-minute
/// sweep posts `{}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TickBody {
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    repository: Option<String>,
}

/// The service's routes: `POST /tick` and `GET /healthz`. Handler tests call
/// `app(state).oneshot(request)` with no socket.
pub fn app(state: SchedulerState) -> Router {
    nbci_shared::http::healthz_router()
        .merge(routes(state))
        .layer(axum::middleware::from_fn(nbci_shared::http::with_trace))
}

/// Just `POST /tick`, behind the guard, for `nbci serve` to merge beside its
/// other routes.
pub fn routes(state: SchedulerState) -> Router {
    let guard = state.oidc.clone();
    guard
        .protect(Router::new().route("/tick", post(tick)))
        .with_state(state)
}

/// One tick: every active check is swept (jobs that died without a result
/// or outlived their timeout are completed, steps due for a retry are
/// performed). A transient failure answers 503; Cloud Scheduler retries.
async fn tick(
    State(state): State<SchedulerState>,
    caller: Option<Extension<Claims>>,
    body: axum::body::Bytes,
) -> Response {
    let caller = caller.and_then(|Extension(claims)| claims.email);
    let body: TickBody = if body.iter().all(u8::is_ascii_whitespace) {
        TickBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(error) => {
                return AppError::BadRequest(format!("the tick's body: {error}")).into_response();
            }
        }
    };
    tracing::info!(
        caller = caller.as_deref().unwrap_or("(unchecked)"),
        pipeline = body.pipeline.as_deref().unwrap_or(""),
        "tick"
    );
    let unavailable_or_internal = |transient: bool, reason: String| {
        if transient {
            AppError::Unavailable(reason).into_response()
        } else {
            AppError::Internal(reason).into_response()
        }
    };
    let started = match (&body.pipeline, &body.repository) {
        (Some(pipeline), Some(repository)) => {
            let Some(repo) = RepoRef::parse(repository) else {
                return AppError::BadRequest(format!("{repository:?} is not owner/name"))
                    .into_response();
            };
            match state.pipelines.on_schedule(&repo, pipeline).await {
                Ok(started) => Some(format!("{started:?}")),
                Err(PipelineError::Refused(reason)) => {
                    // The repository's to fix; Cloud Scheduler retrying cannot help.
                    tracing::warn!(%reason, "a scheduled pipeline could not start");
                    Some(format!("refused: {reason}"))
                }
                Err(error) => {
                    return unavailable_or_internal(error.is_transient(), error.to_string());
                }
            }
        }
        (None, None) => None,
        _ => {
            return AppError::BadRequest(
                "a tick names both a pipeline and its repository, or neither".into(),
            )
            .into_response();
        }
    };
    let runs = match state.pipelines.sweep().await {
        Ok(runs) => runs,
        Err(error) => return unavailable_or_internal(error.is_transient(), error.to_string()),
    };
    match state.ci.sweep(false).await {
        Ok(summary) => Json(json!({
            "ticked": true,
            "checks": summary.checks,
            "lost_jobs": summary.lost_jobs,
            "resubmitted": summary.resubmitted,
            "pipeline_runs": runs,
            "started": started,
        }))
        .into_response(),
        Err(error) => unavailable_or_internal(error.is_transient(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use nbci_shared::adapters::gcp::oidc::testing::{
        JwksServer, assemble_token, google_claims, google_key, rotated_key,
    };
    use nbci_shared::adapters::gcp::oidc::{OidcSettings, SIGNATURE_REMOVED};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    const AUDIENCE: &str = "https://scheduler-abc123-uc.a.run.app";
    const EMAIL: &str = "nbci-ticks@demo-project.iam.gserviceaccount.com";

    /// The CI flow over a directory bucket of its own (nothing active: a
    /// tick sweeps nothing), kept alive for the test's process.
    fn test_flows() -> (Ci, Pipelines) {
        let data = tempfile::tempdir().expect("tempdir").keep();
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/github/test-app-key.pkcs1.pem");
        let env: std::collections::HashMap<&str, String> = std::collections::HashMap::from([
            ("GITHUB_WEBHOOK_SECRET", "s".to_owned()),
            ("GITHUB_APP_ID", "1".to_owned()),
            ("GITHUB_APP_PRIVATE_KEY", key.display().to_string()),
            ("GITHUB_API_URL", "http://127.0.0.1:9".to_owned()),
            ("NBCI_DATA_DIR", data.display().to_string()),
            ("NBCI_PYTHON", "/bin/true".to_owned()),
        ]);
        let config =
            nbci_shared::config::Config::from_lookup(nbci_shared::config::Service::Serve, |name| {
                env.get(name).cloned()
            })
            .expect("config");
        let services = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(nbci_shared::wiring::Services::build(
                config,
                std::sync::Arc::new(|_: &str, _: &_| {}),
            ))
        })
        .expect("services");
        let ci = services.ci.clone();
        let pipelines = services.pipelines.clone();
        std::mem::forget(services);
        (ci, pipelines)
    }

    /// The service with a guard that trusts `server`'s keys.
    fn guarded_app(server: &JwksServer) -> Router {
        let settings = OidcSettings::new(AUDIENCE)
            .with_email(EMAIL)
            .with_jwks_url(server.url());
        app(SchedulerState {
            oidc: OidcGuard::from_settings(Some(settings)).expect("guard"),
            ci: test_flows().0,
            pipelines: test_flows().1,
        })
    }

    async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, body)
    }

    fn tick_request(authorization: Option<&str>) -> Request<Body> {
        let mut request = Request::post("/tick").header("content-type", "application/json");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.body(Body::from("{}")).expect("request")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_answers_ok_without_a_token() {
        let server = JwksServer::start(&[google_key()]).await;
        let (status, body) = send(
            &guarded_app(&server),
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"ok");
        assert_eq!(server.hits(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_with_cloud_schedulers_token_is_served() {
        let server = JwksServer::start(&[google_key()]).await;
        let app = guarded_app(&server);
        let token = google_key().sign(&google_claims(AUDIENCE, EMAIL));
        let (status, body) = send(&app, tick_request(Some(&format!("Bearer {token}")))).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["ticked"], json!(true), "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_without_a_valid_token_is_401_with_an_empty_body() {
        let server = JwksServer::start(&[google_key()]).await;
        let app = guarded_app(&server);
        let claims = google_claims(AUDIENCE, EMAIL);
        let good = google_key().sign(&claims);
        let stripped = format!(
            "{}.{SIGNATURE_REMOVED}",
            good.rsplit_once('.').expect("parts").0
        );
        let unsigned = assemble_token(
            &json!({"alg": "none", "kid": google_key().kid()}),
            &claims,
            "",
        );
        let other_account = google_key().sign(&google_claims(
            AUDIENCE,
            "someone@demo-project.iam.gserviceaccount.com",
        ));
        let other_service = google_key().sign(&google_claims(
            "https://github-webhook-abc123-uc.a.run.app",
            EMAIL,
        ));
        // The JWKS does not vouch for this key.
        let unknown_key = rotated_key().sign(&claims);
        let cases = [
            None,
            Some(String::new()),
            Some(good.clone()),
            Some("Bearer garbage".to_owned()),
            Some(format!("Bearer {stripped}")),
            Some(format!("Bearer {unsigned}")),
            Some(format!("Bearer {other_account}")),
            Some(format!("Bearer {other_service}")),
            Some(format!("Bearer {unknown_key}")),
            Some(format!("Bearer {}", "x".repeat(10 * 1024))),
        ];
        for authorization in &cases {
            let (status, body) = send(&app, tick_request(authorization.as_deref())).await;
            let shown = authorization
                .as_deref()
                .map(|a| a.chars().take(40).collect::<String>());
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{shown:?}");
            assert!(body.is_empty(), "{shown:?}: {body:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_audience_ticks_pass_unchecked() {
        let app = app(SchedulerState {
            oidc: OidcGuard::from_settings(None).expect("guard"),
            ci: test_flows().0,
            pipelines: test_flows().1,
        });
        let (status, body) = send(&app, tick_request(None)).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["ticked"], json!(true), "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_post_ticks() {
        let app = app(SchedulerState {
            oidc: OidcGuard::from_settings(None).expect("guard"),
            ci: test_flows().0,
            pipelines: test_flows().1,
        });
        let (status, _) = send(
            &app,
            Request::get("/tick").body(Body::empty()).expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
