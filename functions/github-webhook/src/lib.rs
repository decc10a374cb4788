//! The `github-webhook` service: GitHub App webhooks in, notebook checks out.
//!
//! The handler verifies `X-Hub-Signature-256` over the raw body before
//! anything else, parses the event, dedupes on `X-GitHub-Delivery`, hands the
//! trigger to the event bus (durable: the bucket locally, Pub/Sub in the
//! cloud) and answers at once (GitHub waits 10 s at most). The CI flow picks
//! the trigger up from the bus. This crate stays thin: parsing and decisions
//! live in `nbci_shared`; here requests become calls and errors become statuses.
//!
//! | answer | when |
//! |---|---|
//! | 401, empty | signature missing, not `sha256=`, or wrong (the first two before the body is read) |
//! | 413 | body over 25 MiB (declared: before the body is read) |
//! | 408 | the body did not arrive within `NBCI_HTTP_BODY_TIMEOUT` |
//! | 400 + reason | headers missing, payload malformed |
//! | 200 | ping, duplicate delivery |
//! | 202 + reason | accepted, or deliberately ignored (event, action, no installation) |
//! | 503 | the bucket or the bus is unreachable (GitHub's redelivery can retry) |

pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nbci_shared::adapters::github::SignatureCheck;
use nbci_shared::adapters::github::events::{Event, parse_event};
use nbci_shared::domain::layout;
use nbci_shared::http::body::BufferedBody;
use nbci_shared::http::{AppError, BodyBudget, LimitedBytes, read_body};
use nbci_shared::ports::bus::{
    EventBus, HandlerError, Message, MessageHandler, PublishOnceError, Published,
};
use nbci_shared::ports::store::{ObjectStore, StoreError};
use nbci_shared::util::secret::Secret;
use nbci_shared::wiring::Services;

/// GitHub caps webhook payloads at 25 MB; anything larger is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// What the handler needs, built once at start-up.
#[derive(Debug, Clone)]
pub struct WebhookState {
    /// `GITHUB_WEBHOOK_SECRET`: the HMAC key GitHub signs deliveries with.
    pub secret: Arc<Secret>,
    /// Where delivery ids are recorded (`deliveries/{id}`).
    pub store: Arc<dyn ObjectStore>,
    /// Where accepted triggers go; the CI flow takes them from there.
    pub bus: Arc<dyn EventBus>,
    /// What `POST /dispatch` hands Pub/Sub's pushes to (the flows' inbox).
    pub handler: Arc<dyn MessageHandler>,
    /// Checks the push subscription's ID token on `/dispatch` (the service
    /// is public: GitHub must reach it, so Cloud Run cannot check callers).
    pub oidc: nbci_shared::adapters::gcp::oidc::OidcGuard,
}

impl WebhookState {
    /// The state over built services; `None` when the configuration has no
    /// webhook secret (a service that receives no webhooks).
    pub fn from_services(services: &Services) -> Option<Self> {
        Some(Self {
            secret: Arc::new(services.config.webhook_secret.clone()?),
            store: services.store.clone(),
            bus: services.bus.clone(),
            handler: Arc::new(services.inbox.clone()),
            oidc: services.oidc.clone(),
        })
    }
}

/// The service: `POST /github` (and `POST /`), `GET /runs/...` (the executed
/// notebooks the check runs' details links point to) and `GET /healthz`.
pub fn app(state: WebhookState) -> Router {
    nbci_shared::http::healthz_router()
        .merge(routes(state.clone()))
        .merge(
            Router::new()
                .route("/", post(receive))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(state),
        )
        .layer(axum::middleware::from_fn(nbci_shared::http::with_trace))
}

/// `POST /github` and `GET /runs/...`, for `nbci serve` to merge beside its
/// other routes.
pub fn routes(state: WebhookState) -> Router {
    let view = view::routes(state.store.clone(), state.secret.clone());
    let dispatch = state
        .oidc
        .protect(Router::new().route("/dispatch", post(dispatch)));
    Router::new()
        .route("/github", post(receive))
        .merge(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .merge(view)
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

/// `POST /dispatch`: a trigger handed off through Pub/Sub, pushed back in the
/// standard push envelope. 200 when handled (or never handleable: logged),
/// 503 when Pub/Sub should deliver it again, 400 when it is not an envelope.
async fn dispatch(
    State(state): State<WebhookState>,
    LimitedBytes(body): LimitedBytes<MAX_BODY_BYTES>,
) -> Response {
    let message = match nbci_shared::adapters::gcp::events::parse_pushed_message(&body) {
        Ok(message) => message,
        Err(error) => return AppError::BadRequest(error.to_string()).into_response(),
    };
    match state.handler.handle(&message).await {
        Ok(()) => answer(StatusCode::OK, "dispatched"),
        Err(HandlerError::Transient(reason)) => AppError::Unavailable(reason).into_response(),
        Err(error) => {
            tracing::error!(message = %message.id(), %error, "dropping a dispatch that cannot be handled");
            answer(StatusCode::OK, "dropped")
        }
    }
}

async fn receive(State(state): State<WebhookState>, request: Request) -> Response {
    match accept(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Reads the body of a delivery whose signature header is well formed,
/// hashing it as it arrives, and returns it once the signature holds.
///
/// Anyone can call the webhook, so what can be checked without the body is
/// checked before a byte of it is read (a missing or malformed signature:
/// 401; a declared length over GitHub's limit: 413), and the body is read
/// within the server's budget of body bytes (see `nbci_shared::http::body`):
/// unsigned uploads held open cannot make the server grow past it.
async fn verified_body(
    state: &WebhookState,
    request: Request,
) -> Result<(HeaderMap, BufferedBody), AppError> {
    let budget = BodyBudget::of(&request);
    let length = nbci_shared::http::body::content_length(&request);
    let (parts, body) = request.into_parts();
    let signature = header(&parts.headers, "x-hub-signature-256");
    let mut check = SignatureCheck::new(state.secret.expose().as_bytes(), signature)
        .map_err(|error| AppError::Unauthorized(error.to_string()))?;
    let body = read_body(body, length, MAX_BODY_BYTES, &budget, |chunk| {
        check.update(chunk)
    })
    .await?;
    check
        .verify()
        .map_err(|error| AppError::Unauthorized(error.to_string()))?;
    Ok((parts.headers, body))
}

async fn accept(state: &WebhookState, request: Request) -> Result<Response, AppError> {
    // Nothing is parsed, not even the event name, before the signature holds.
    let (headers, body) = verified_body(state, request).await?;
    let headers = &headers;
    let body: &[u8] = &body;
    let event_name = header(headers, "x-github-event")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| AppError::BadRequest("the X-GitHub-Event header is missing".into()))?;
    let delivery = header(headers, "x-github-delivery")
        .map(str::trim)
        .ok_or_else(|| AppError::BadRequest("the X-GitHub-Delivery header is missing".into()))?;
    if !valid_delivery_id(delivery) {
        return Err(AppError::BadRequest(
            "the X-GitHub-Delivery header is not a delivery id".into(),
        ));
    }
    let event =
        parse_event(event_name, body).map_err(|error| AppError::BadRequest(error.to_string()))?;
    let trigger = match &event {
        Event::Ping { .. } => return Ok(answer(StatusCode::OK, "pong")),
        Event::Ignored { reason } | Event::Skipped { reason } => {
            tracing::info!(%delivery, event = event_name, %reason, "webhook ignored");
            return Ok(answer(StatusCode::ACCEPTED, format!("ignored: {reason}")));
        }
        other => match other.trigger(delivery) {
            Some(trigger) => trigger,
            None => {
                tracing::info!(%delivery, event = event_name, "nothing to run");
                return Ok(answer(StatusCode::ACCEPTED, "ignored: nothing to run"));
            }
        },
    };
    let delivery_key =
        layout::delivery_key(delivery).map_err(|error| AppError::BadRequest(error.to_string()))?;
    // The delivery is recorded and the trigger durably handed off (one
    // create-only write with the in-bucket queue) before the answer.
    let message = Message::Dispatch(trigger);
    let published = state
        .bus
        .publish_once(state.store.as_ref(), &delivery_key, &message)
        .await
        .map_err(|error| match error {
            PublishOnceError::Store(StoreError::Unavailable(reason)) => {
                AppError::Unavailable(format!("cannot record the delivery: {reason}"))
            }
            PublishOnceError::Store(other) => {
                AppError::Internal(format!("cannot record the delivery: {other}"))
            }
            other => AppError::Unavailable(other.to_string()),
        })?;
    if published == Published::Duplicate {
        tracing::info!(%delivery, "duplicate delivery ignored");
        return Ok(answer(StatusCode::OK, "duplicate delivery"));
    }
    // Debug only: the delivery's info line is the flow's "dispatched
    // notebook checks" (delivery, repo, sha and what it started), written
    // after the hand-off. A line here cost the answer path about a tenth of
    // its CPU (issue 11's webhook benchmark).
    if let Message::Dispatch(trigger) = &message {
        tracing::debug!(
            %delivery,
            event = event_name,
            repo = %trigger.repo,
            sha = %trigger.head_sha,
            "webhook accepted"
        );
    }
    Ok(answer(StatusCode::ACCEPTED, "accepted"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/github")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().join(name)).expect("fixture")
    }

    /// The service with local adapters and a GitHub that refuses connections:
    /// background work fails fast, answers are what is tested.
    fn service(data: &std::path::Path) -> Router {
        service_with_github(data, "http://127.0.0.1:9")
    }

    fn service_with_github(data: &std::path::Path, api_url: &str) -> Router {
        let (services, state) = services(data, api_url);
        let app = app(state);
        // The services live as long as the test's runtime.
        std::mem::forget(services);
        app
    }

    fn services(data: &std::path::Path, api_url: &str) -> (Services, WebhookState) {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(build_services(data, api_url))
        })
    }

    async fn build_services(data: &std::path::Path, api_url: &str) -> (Services, WebhookState) {
        let key = fixtures().join("test-app-key.pkcs1.pem");
        let env: HashMap<&str, String> = HashMap::from([
            ("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
            ("GITHUB_APP_ID", "1".to_owned()),
            ("GITHUB_APP_PRIVATE_KEY", key.display().to_string()),
            ("GITHUB_API_URL", api_url.to_owned()),
            ("NBCI_DATA_DIR", data.display().to_string()),
            ("NBCI_PYTHON", "/bin/true".to_owned()),
        ]);
        let config =
            nbci_shared::config::Config::from_lookup(nbci_shared::config::Service::Serve, |name| {
                env.get(name).cloned()
            })
            .expect("config");
        let services = Services::build(config, Arc::new(|_: &str, _: &_| {}))
            .await
            .expect("services");
        let state = WebhookState::from_services(&services).expect("state");
        (services, state)
    }

    async fn post(
        app: &Router,
        event: Option<&str>,
        delivery: Option<&str>,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut request = Request::post("/github").header("content-type", "application/json");
        if let Some(event) = event {
            request = request.header("x-github-event", event);
        }
        if let Some(delivery) = delivery {
            request = request.header("x-github-delivery", delivery);
        }
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn signed(body: &[u8]) -> Option<String> {
        Some(nbci_shared::adapters::github::sign(SECRET.as_bytes(), body))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_signatures_get_401_with_no_detail() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let body = fixture("check_suite.requested.json");
        let good = nbci_shared::adapters::github::sign(SECRET.as_bytes(), &body);
        let wrong = nbci_shared::adapters::github::sign(b"another secret", &body);
        let cases = vec![
            None,
            Some(String::new()),
            Some(wrong),
            Some(good[..good.len() - 2].to_owned()),
            Some(good.replacen("sha256=", "sha1=", 1)),
            Some("sha1=0123456789abcdef0123456789abcdef01234567".to_owned()),
            Some(good.replacen("sha256=", "", 1)),
            Some(format!("{good}00")),
            Some("sha256=zz".to_owned()),
        ];
        for signature in cases {
            let (status, text) = post(
                &app,
                Some("check_suite"),
                Some("d-1"),
                signature.clone(),
                body.clone(),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
            assert!(text.is_empty(), "no detail for {signature:?}: {text}");
        }
        // A body changed after signing is refused too.
        let mut tampered = body.clone();
        tampered.push(b' ');
        let (status, _) = post(&app, Some("check_suite"), Some("d-1"), Some(good), tampered).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_bodies_get_413() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let body = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = post(&app, Some("push"), Some("d-1"), signed(&body), body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body that never arrives: only an answer that does not wait for it
    /// comes back.
    fn endless_body() -> Body {
        Body::from_stream(futures_util::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_can_be_checked_without_the_body_is_checked_before_reading_it() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let well_formed = format!("sha256={}", "0".repeat(64));
        for (signature, length, expected) in [
            (None, None, StatusCode::UNAUTHORIZED),
            (Some("sha256=zz"), None, StatusCode::UNAUTHORIZED),
            (Some("sha1=0123"), None, StatusCode::UNAUTHORIZED),
            (
                Some(well_formed.as_str()),
                Some(MAX_BODY_BYTES + 1),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ] {
            let mut request = Request::post("/github")
                .header("x-github-event", "push")
                .header("x-github-delivery", "early-1");
            if let Some(signature) = signature {
                request = request.header("x-hub-signature-256", signature);
            }
            if let Some(length) = length {
                request = request.header("content-length", length);
            }
            let response = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                app.clone()
                    .oneshot(request.body(endless_body()).expect("request")),
            )
            .await
            .expect("answered without reading the body")
            .expect("response");
            assert_eq!(response.status(), expected, "{signature:?} {length:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_ignored_and_skipped_events_are_answered_2xx() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let ping = fixture("ping.json");
        let (status, text) = post(&app, Some("ping"), Some("p-1"), signed(&ping), ping).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "pong"));
        for (event, file) in [
            ("push", "push.tag.json"),
            ("push", "push.branch-deleted.json"),
            ("push", "push.no-installation.json"),
            ("issues", "ping.json"),
            ("check_suite", "check_suite.requested.json"),
        ] {
            let mut body = fixture(file);
            if event == "check_suite" {
                // An action nbci does not handle.
                let mut value: serde_json::Value = serde_json::from_slice(&body).expect("json");
                value["action"] = "completed".into();
                body = serde_json::to_vec(&value).expect("json");
            }
            let (status, text) = post(&app, Some(event), Some("i-1"), signed(&body), body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{event} {file}: {text}");
            assert!(text.starts_with("ignored"), "{event} {file}: {text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_requests_get_400_with_a_reason() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let body = fixture("check_suite.requested.json");
        let (status, text) = post(&app, None, Some("d"), signed(&body), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("X-GitHub-Event"), "{text}");
        let (status, text) =
            post(&app, Some("check_suite"), None, signed(&body), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("X-GitHub-Delivery"), "{text}");
        let (status, _) = post(
            &app,
            Some("check_suite"),
            Some("../../etc"),
            signed(&body),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let junk = b"{\"action\": \"requested\", \"check_suite\": 5".to_vec();
        let (status, text) = post(&app, Some("check_suite"), Some("d"), signed(&junk), junk).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!text.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_delivery_is_accepted_once() {
        // A GitHub that takes its time: the first delivery is still being worked on.
        let github = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(
                wiremock::ResponseTemplate::new(500).set_delay(std::time::Duration::from_secs(30)),
            )
            .mount(&github)
            .await;
        let data = tempfile::tempdir().expect("tempdir");
        let app = service_with_github(data.path(), &github.uri());
        let body = fixture("check_suite.requested.json");
        let (first, _) = post(
            &app,
            Some("check_suite"),
            Some("same"),
            signed(&body),
            body.clone(),
        )
        .await;
        let (second, text) =
            post(&app, Some("check_suite"), Some("same"), signed(&body), body).await;
        assert_eq!(first, StatusCode::ACCEPTED);
        assert_eq!(
            (second, text.as_str()),
            (StatusCode::OK, "duplicate delivery")
        );
    }

    /// A handler that records what it is given and fails as told.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: std::sync::Mutex<Vec<Message>>,
        transient: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl MessageHandler for Recorder {
        async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
            self.seen.lock().expect("lock").push(message.clone());
            if self.transient.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(HandlerError::Transient("GitHub is down".into()));
            }
            Ok(())
        }
    }

    /// Pub/Sub's push envelope of `message`, as the push subscription posts it.
    fn envelope(message: &Message) -> Vec<u8> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(message).expect("json"));
        serde_json::to_vec(&serde_json::json!({
            "message": {"data": data, "attributes": {"type": "dispatch"}, "messageId": "136969346945",
                        "publishTime": "2026-11-30T03:00:00.000Z"},
            "subscription": "projects/p/subscriptions/nbci-dispatch"
        }))
        .expect("json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dispatch_takes_pubsub_pushes_and_asks_for_redelivery_when_it_must() {
        let data = tempfile::tempdir().expect("tempdir");
        let (services, state) = services(data.path(), "http://127.0.0.1:9");
        let recorder = Arc::new(Recorder::default());
        let app = app(WebhookState {
            handler: recorder.clone(),
            ..state
        });
        let body = fixture("check_suite.requested.json");
        let event = parse_event("check_suite", &body).expect("event");
        let message = Message::Dispatch(event.trigger("d-9").expect("trigger"));
        let send = |body: Vec<u8>| {
            let app = app.clone();
            async move {
                let request = axum::http::Request::post("/dispatch")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .expect("request");
                app.oneshot(request).await.expect("response").status()
            }
        };
        assert_eq!(send(envelope(&message)).await, StatusCode::OK);
        assert_eq!(
            recorder.seen.lock().expect("lock").as_slice(),
            std::slice::from_ref(&message)
        );
        recorder
            .transient
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            send(envelope(&message)).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "Pub/Sub redelivers"
        );
        assert_eq!(
            send(b"{not an envelope".to_vec()).await,
            StatusCode::BAD_REQUEST
        );
        drop(services);
    }

    /// A bus that refuses every message, as Pub/Sub might during an outage.
    #[derive(Debug)]
    struct DownBus;

    #[async_trait::async_trait]
    impl EventBus for DownBus {
        async fn publish(&self, _: &Message) -> Result<(), nbci_shared::ports::bus::BusError> {
            Err(nbci_shared::ports::bus::BusError::Unavailable(
                "down".into(),
            ))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_whose_hand_off_failed_is_accepted_again() {
        let data = tempfile::tempdir().expect("tempdir");
        let (services, state) = services(data.path(), "http://127.0.0.1:9");
        let down = app(WebhookState {
            bus: Arc::new(DownBus),
            ..state.clone()
        });
        let body = fixture("check_suite.requested.json");
        let (first, _) = post(
            &down,
            Some("check_suite"),
            Some("retry-me"),
            signed(&body),
            body.clone(),
        )
        .await;
        assert_eq!(
            first,
            StatusCode::SERVICE_UNAVAILABLE,
            "GitHub is told to retry"
        );
        // The redelivery, with the bus back, is accepted: the first left no marker.
        let up = app(state);
        let (again, text) = post(
            &up,
            Some("check_suite"),
            Some("retry-me"),
            signed(&body),
            body,
        )
        .await;
        assert_eq!(again, StatusCode::ACCEPTED, "{text}");
        drop(services);
    }

    /// Thousands of validly signed but malformed bodies: never a 5xx, never a panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mangled_payloads_with_valid_signatures_never_fail_the_server() {
        let data = tempfile::tempdir().expect("tempdir");
        let app = service(data.path());
        let sources = [
            ("check_suite", fixture("check_suite.requested.json")),
            ("pull_request", fixture("pull_request.opened.json")),
            ("push", fixture("push.branch.json")),
            ("check_run", fixture("check_run.requested_action.json")),
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const NOISE: &[u8] = b"{}[]\",:0-9aZ\\\x00\xff ";
        for round in 0..2000 {
            let (event, original) = &sources[round % sources.len()];
            let mut body = original.clone();
            match next() % 3 {
                0 => body.truncate(usize::try_from(next() % body.len() as u64).expect("fits")),
                1 => {
                    for _ in 0..(next() % 8 + 1) {
                        let at = usize::try_from(next() % body.len() as u64).expect("fits");
                        body[at] =
                            NOISE[usize::try_from(next() % NOISE.len() as u64).expect("fits")];
                    }
                }
                _ => {
                    // Valid JSON with a field of the wrong type.
                    let mut value: serde_json::Value =
                        serde_json::from_slice(original).expect("json");
                    let replacement = match next() % 4 {
                        0 => serde_json::json!(null),
                        1 => serde_json::json!(42),
                        2 => serde_json::json!("x"),
                        _ => serde_json::json!([]),
                    };
                    let keys: Vec<String> = value
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    let key = &keys[usize::try_from(next() % keys.len() as u64).expect("fits")];
                    value[key] = replacement;
                    body = serde_json::to_vec(&value).expect("json");
                }
            }
            let delivery = format!("fuzz-{round}");
            let (status, text) =
                post(&app, Some(event), Some(&delivery), signed(&body), body).await;
            assert!(!status.is_server_error(), "round {round}: {status} {text}");
        }
    }
}
