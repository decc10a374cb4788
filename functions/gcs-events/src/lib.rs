//! The `gcs-events` service: Cloud Storage finalize events in, completed
//! checks (and, later, advanced pipelines) out.
//!
//! A job ends by writing `result.json`; its finalize event arrives here as an
//! Eventarc CloudEvent (binary or structured) or a Pub/Sub push envelope,
//! read by `nbci_shared::adapters::gcp::events`. Deliveries are at least once
//! and may repeat or cross, so each event is claimed through a marker keyed
//! on (bucket, object, generation) before it is handed to the
//! [`MessageHandler`] (see [`marker`]). This crate stays thin: parsing and
//! decisions live in `nbci_shared`; here requests become calls and errors
//! become statuses, which tell the platform whether to redeliver:
//!
//! | answer | when |
//! |---|---|
//! | 400 + reason | not an event, malformed, or contradicting itself (not retried usefully: fix the sender) |
//! | 413 | body over [`MAX_BODY_BYTES`] |
//! | 202 + `ignored: ...` | not a finalize, not a `result.json` under `ci/` or `pipelines/`, or a CloudEvent of another service |
//! | 202 + `dropped` | the handler failed for good (logged; redelivery would fail the same way) |
//! | 200 `handled` | the event was handled |
//! | 200 `duplicate` | the event was handled before |
//! | 503 | the bucket is unreachable, the handler failed transiently, or another delivery of the same event is in hand: redeliver later |

pub mod marker;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nbci_shared::adapters::gcp::events::{EventError, ObjectEvent, parse_object_event};
use nbci_shared::domain::layout::{self, ResultKind};
use nbci_shared::http::{AppError, LimitedBytes};
use nbci_shared::ports::bus::{HandlerError, MessageHandler};
use nbci_shared::ports::store::{ObjectStore, StoreError};

use crate::marker::Claim;

/// A finalize event is an object's metadata (a few KiB; custom metadata is
/// capped at 8 KiB), base64-wrapped at most once: anything near this is not one.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handler needs, built once at start-up.
#[derive(Debug, Clone)]
pub struct EventsState {
    /// Where a finalized result goes: the flows' inbox (CI results complete
    /// their checks; pipeline results advance their runs).
    pub handler: Arc<dyn MessageHandler>,
    /// The bucket that keeps the events' dedupe markers (`events/...`).
    pub store: Arc<dyn ObjectStore>,
}

/// The service: `POST /` (where Eventarc and push subscriptions deliver),
/// `POST /events` and `GET /healthz`.
pub fn app(state: EventsState) -> Router {
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

/// Just `POST /events`, for `nbci serve` to merge beside its other routes.
pub fn routes(state: EventsState) -> Router {
    Router::new()
        .route("/events", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

async fn receive(
    State(state): State<EventsState>,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes<MAX_BODY_BYTES>,
) -> Response {
    match accept(&state, &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A store failure as an answer: unreachable storage is worth a redelivery;
/// anything else is ours to fix, and never the sender's input.
fn store_error(error: StoreError) -> AppError {
    match error {
        StoreError::Unavailable(reason) => {
            AppError::Unavailable(format!("cannot record the event: {reason}"))
        }
        StoreError::InvalidKey(error) => AppError::BadRequest(error.to_string()),
        other => AppError::Internal(format!("cannot record the event: {other}")),
    }
}

async fn accept(
    state: &EventsState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let event = match parse_object_event(headers, body) {
        Ok(event) => event,
        Err(EventError::NotAnObjectEvent(event_type)) => {
            tracing::info!(%event_type, "event ignored: not a Cloud Storage object event");
            return Ok(answer(
                StatusCode::ACCEPTED,
                format!("ignored: {event_type} is not a Cloud Storage object event"),
            ));
        }
        Err(error) => return Err(AppError::BadRequest(error.to_string())),
    };
    let Some(message) = event.message() else {
        log_ignored(&event, "not a finalize");
        return Ok(answer(
            StatusCode::ACCEPTED,
            "ignored: not a finalize event",
        ));
    };
    if layout::classify(&event.key) == ResultKind::Other {
        log_ignored(&event, "not a result object");
        return Ok(answer(
            StatusCode::ACCEPTED,
            "ignored: not a result.json under ci/ or pipelines/",
        ));
    }
    let marker_key = layout::event_marker_key(&event.bucket, &event.key, event.generation)
        .map_err(|error| AppError::BadRequest(error.to_string()))?;
    let claimed = match marker::claim(state.store.as_ref(), &marker_key, SystemTime::now())
        .await
        .map_err(store_error)?
    {
        Claim::Won(generation) => generation,
        Claim::Done => {
            tracing::info!(bucket = %event.bucket, key = %event.key, generation = event.generation, "duplicate event ignored");
            return Ok(answer(StatusCode::OK, "duplicate"));
        }
        Claim::Busy { since } => {
            return Err(AppError::Unavailable(format!(
                "{} generation {} is being handled by another delivery (since {since})",
                event.key, event.generation
            )));
        }
    };
    match state.handler.handle(&message).await {
        Ok(()) => {
            marker::mark_done(state.store.as_ref(), &marker_key, claimed).await;
            tracing::info!(
                bucket = %event.bucket,
                key = %event.key,
                generation = event.generation,
                delivery = ?event.delivery,
                id = event.id.as_deref().unwrap_or(""),
                "result handled"
            );
            Ok(answer(StatusCode::OK, "handled"))
        }
        Err(HandlerError::Permanent(reason)) => {
            marker::mark_done(state.store.as_ref(), &marker_key, claimed).await;
            tracing::error!(
                key = %event.key,
                generation = event.generation,
                %reason,
                "result dropped: it can never be handled"
            );
            Ok(answer(StatusCode::ACCEPTED, "dropped"))
        }
        Err(error) => {
            // Transient (or a kind added later): give the claim back, so
            // that the platform's redelivery handles the event.
            marker::release(state.store.as_ref(), &marker_key).await;
            Err(AppError::Unavailable(format!(
                "handling {} generation {}: {error}",
                event.key, event.generation
            )))
        }
    }
}

fn log_ignored(event: &ObjectEvent, reason: &str) {
    tracing::info!(
        bucket = %event.bucket,
        key = %event.key,
        generation = event.generation,
        kind = ?event.kind,
        %reason,
        "event ignored"
    );
}

#[cfg(test)]
#[path = "../../../tests/fixtures/google/deliveries.rs"]
mod deliveries;

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use nbci_shared::adapters::local::store::LocalDirStore;
    use nbci_shared::ports::bus::Message;
    use nbci_shared::ports::store::Object;
    use serde_json::json;
    use tower::ServiceExt;

    use super::deliveries::{self, Shape};
    use super::*;

    const RESULT: &str =
        "ci/octo/repo/0123456789abcdef0123456789abcdef01234567/nb/x.ipynb/result.json";
    const BUCKET: &str = "nbci-test-bucket";

    /// A handler that records what it is given and answers from a script
    /// (then `Ok`); with a gate, it waits for it before answering.
    #[derive(Debug, Default)]
    struct FakeHandler {
        seen: Mutex<Vec<Message>>,
        script: Mutex<VecDeque<Result<(), HandlerError>>>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl FakeHandler {
        fn answering(script: Vec<Result<(), HandlerError>>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script.into()),
                ..Self::default()
            })
        }

        fn seen(&self) -> Vec<Message> {
            self.seen.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl MessageHandler for FakeHandler {
        async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
            self.seen.lock().expect("lock").push(message.clone());
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await.expect("gate");
            }
            self.script
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or(Ok(()))
        }
    }

    struct Service {
        app: Router,
        store: Arc<LocalDirStore>,
        handler: Arc<FakeHandler>,
        _dir: tempfile::TempDir,
    }

    fn service_with(handler: Arc<FakeHandler>) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        let app = app(EventsState {
            handler: handler.clone(),
            store: store.clone(),
        });
        Service {
            app,
            store,
            handler,
            _dir: dir,
        }
    }

    fn service() -> Service {
        service_with(FakeHandler::answering(Vec::new()))
    }

    async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn post(app: &Router, delivery: &deliveries::Delivery) -> (StatusCode, String) {
        send(app, delivery.request("/")).await
    }

    fn result_object(key: &str, generation: serde_json::Value) -> serde_json::Value {
        deliveries::object(deliveries::SIMPLE, BUCKET, key, generation)
    }

    fn finalized(key: &str, generation: i64) -> Message {
        Message::Finalized {
            key: key.into(),
            generation,
        }
    }

    fn marker_path(root: &Path, key: &str, generation: i64) -> std::path::PathBuf {
        root.join("objects")
            .join(layout::event_marker_key(BUCKET, key, generation).expect("key"))
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let service = service();
        let (status, text) = send(
            &service.app,
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn a_finalized_result_is_handled_in_every_shape() {
        let service = service();
        let mut expected = Vec::new();
        let mut generation = 1_700_000_000_000_000_i64;
        for fixture in [deliveries::SIMPLE, deliveries::COMPLEX] {
            for shape in Shape::ALL {
                for as_text in [true, false] {
                    generation += 1;
                    let value = if as_text {
                        json!(generation.to_string())
                    } else {
                        json!(generation)
                    };
                    let object = deliveries::object(fixture, BUCKET, RESULT, value);
                    let delivery = deliveries::finalized(shape, &object);
                    let (status, text) = post(&service.app, &delivery).await;
                    assert_eq!(
                        (status, text.as_str()),
                        (StatusCode::OK, "handled"),
                        "{shape:?} text={as_text}"
                    );
                    expected.push(finalized(RESULT, generation));
                }
            }
        }
        assert_eq!(service.handler.seen(), expected);
        // nbci serve's mount point answers the same way.
        let object = result_object(RESULT, json!(5));
        let (status, _) = send(
            &service.app,
            deliveries::finalized(Shape::Push, &object).request("/events"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let alone = routes(EventsState {
            handler: service.handler.clone(),
            store: service.store.clone(),
        });
        let (status, text) = send(
            &alone,
            deliveries::finalized(Shape::Binary, &object).request("/events"),
        )
        .await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "duplicate"));
    }

    #[tokio::test]
    async fn pipeline_results_are_handed_on_too() {
        let service = service();
        let key = "pipelines/train/runs/r-1/prepare/result.json";
        let object = result_object(key, json!("12"));
        let (status, _) = post(&service.app, &deliveries::finalized(Shape::Binary, &object)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(service.handler.seen(), vec![finalized(key, 12)]);
    }

    #[tokio::test]
    async fn a_repeated_event_is_handled_once_whatever_its_shape() {
        let service = service();
        let object = result_object(RESULT, json!("42"));
        let (status, _) = post(&service.app, &deliveries::finalized(Shape::Binary, &object)).await;
        assert_eq!(status, StatusCode::OK);
        for shape in Shape::ALL {
            let (status, text) = post(&service.app, &deliveries::finalized(shape, &object)).await;
            assert_eq!(
                (status, text.as_str()),
                (StatusCode::OK, "duplicate"),
                "{shape:?}"
            );
        }
        // The generation is a number here: the same write all the same.
        let object = result_object(RESULT, json!(42));
        let (_, text) = post(&service.app, &deliveries::finalized(Shape::Push, &object)).await;
        assert_eq!(text, "duplicate");
        // A new generation of the same object (a re-run's result) is new.
        let object = result_object(RESULT, json!(43));
        let (_, text) = post(&service.app, &deliveries::finalized(Shape::Push, &object)).await;
        assert_eq!(text, "handled");
        assert_eq!(
            service.handler.seen(),
            vec![finalized(RESULT, 42), finalized(RESULT, 43)]
        );
    }

    #[tokio::test]
    async fn unrelated_objects_and_other_events_are_ignored_with_2xx() {
        let service = service();
        for key in [
            "ci/octo/repo/0123456789abcdef0123456789abcdef01234567/nb/x.ipynb/output.ipynb",
            "src/octo/repo/0123456789abcdef0123456789abcdef01234567.tar.gz",
            "result.json",
            "elsewhere/result.json",
            "ci/../result.json",
            "events/nbci-test-bucket/1-abc",
        ] {
            for shape in Shape::ALL {
                let object = result_object(key, json!("3"));
                let (status, text) =
                    post(&service.app, &deliveries::finalized(shape, &object)).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{key} {shape:?}: {text}");
                assert!(text.starts_with("ignored"), "{text}");
            }
        }
        let object = result_object(RESULT, json!("3"));
        for (shape, event_type) in [
            (Shape::Binary, "google.cloud.storage.object.v1.deleted"),
            (Shape::Binary, "google.cloud.storage.object.v1.archived"),
            (
                Shape::Structured,
                "google.cloud.storage.object.v1.metadataUpdated",
            ),
            (Shape::Push, "OBJECT_DELETE"),
            (Shape::Push, "OBJECT_METADATA_UPDATE"),
            (Shape::PubSubCloudEvent, "OBJECT_ARCHIVE"),
            (Shape::Binary, "com.example.something.happened"),
        ] {
            let delivery = deliveries::with_type(shape, &object, event_type);
            let (status, text) = post(&service.app, &delivery).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{event_type}: {text}");
            assert!(text.starts_with("ignored"), "{text}");
        }
        assert!(service.handler.seen().is_empty());
        // Nothing ignored left a marker behind.
        assert!(
            !service._dir.path().join("objects/events").exists(),
            "no markers for ignored events"
        );
    }

    #[tokio::test]
    async fn malformed_deliveries_get_400_with_the_reason() {
        let service = service();
        let object = result_object(RESULT, json!("8"));
        let mut disagreeing = deliveries::finalized(Shape::Binary, &object);
        disagreeing.set_header("ce-subject", "objects/ci/octo/other/result.json");
        let mut bad_generation = deliveries::finalized(Shape::Push, &object);
        bad_generation.set_attribute("objectGeneration", "eight");
        let mut no_type = deliveries::finalized(Shape::Push, &object);
        no_type.remove_attribute("eventType");
        let mut bad_base64 = deliveries::finalized(Shape::Push, &object);
        bad_base64.set_data(b"not json");
        let cases: Vec<(Request<Body>, &str)> = vec![
            (disagreeing.request("/"), "disagree"),
            (bad_generation.request("/"), "objectGeneration"),
            (no_type.request("/"), "eventType"),
            (bad_base64.request("/"), "data"),
            (
                Request::post("/")
                    .body(Body::from("garbage"))
                    .expect("request"),
                "push envelope",
            ),
            (Request::post("/").body(Body::empty()).expect("request"), ""),
            (
                Request::post("/")
                    .header("content-type", "application/json")
                    .body(Body::from("{\"hello\": \"world\"}"))
                    .expect("request"),
                "not an event",
            ),
            (
                Request::post("/")
                    .header("content-type", "application/cloudevents+json")
                    .body(Body::from("{\"specversion\": \"1.0\"}"))
                    .expect("request"),
                "CloudEvent",
            ),
            (
                Request::post("/")
                    .header("ce-specversion", "1.0")
                    .header("ce-type", "google.cloud.storage.object.v1.finalized")
                    .body(Body::from("{}"))
                    .expect("request"),
                "CloudEvent",
            ),
        ];
        for (request, needle) in cases {
            let (status, text) = send(&service.app, request).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{needle}: {text}");
            assert!(
                !text.is_empty() && text.contains(needle),
                "{needle}: {text}"
            );
        }
        assert!(service.handler.seen().is_empty());
    }

    #[tokio::test]
    async fn oversized_bodies_get_413() {
        let service = service();
        let body = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = send(
            &service.app,
            Request::post("/").body(Body::from(body)).expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_transient_failure_answers_503_and_the_redelivery_is_handled() {
        let handler = FakeHandler::answering(vec![Err(HandlerError::Transient(
            "GitHub is unreachable".into(),
        ))]);
        let service = service_with(handler);
        let object = result_object(RESULT, json!("9"));
        let delivery = deliveries::finalized(Shape::Push, &object);
        let (status, text) = post(&service.app, &delivery).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !text.contains("GitHub"),
            "the cause goes to the log, not to the sender: {text}"
        );
        assert!(
            !marker_path(service._dir.path(), RESULT, 9).exists(),
            "the claim was given back"
        );
        let (status, text) = post(&service.app, &delivery).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "handled"));
        let (_, text) = post(&service.app, &delivery).await;
        assert_eq!(text, "duplicate");
        assert_eq!(
            service.handler.seen(),
            vec![finalized(RESULT, 9), finalized(RESULT, 9)]
        );
    }

    #[tokio::test]
    async fn a_permanent_failure_is_a_logged_2xx_and_not_retried() {
        let handler = FakeHandler::answering(vec![Err(HandlerError::Permanent(
            "the job record is corrupt".into(),
        ))]);
        let service = service_with(handler);
        let object = result_object(RESULT, json!("10"));
        let delivery = deliveries::finalized(Shape::Structured, &object);
        let (status, text) = post(&service.app, &delivery).await;
        assert_eq!((status, text.as_str()), (StatusCode::ACCEPTED, "dropped"));
        let (status, text) = post(&service.app, &delivery).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "duplicate"));
        assert_eq!(service.handler.seen().len(), 1);
    }

    #[tokio::test]
    async fn a_delivery_crossing_one_in_hand_is_told_to_come_back() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = Arc::new(FakeHandler {
            gate: Some(gate.clone()),
            ..FakeHandler::default()
        });
        let service = service_with(handler);
        let object = result_object(RESULT, json!("11"));
        let first = tokio::spawn({
            let app = service.app.clone();
            let delivery = deliveries::finalized(Shape::Binary, &object);
            async move { post(&app, &delivery).await }
        });
        // Wait until the first delivery is in the handler.
        while service.handler.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, _) = post(&service.app, &deliveries::finalized(Shape::Push, &object)).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "in hand: come back later"
        );
        gate.add_permits(1);
        let (status, text) = first.await.expect("first");
        assert_eq!((status, text.as_str()), (StatusCode::OK, "handled"));
        let (_, text) = post(&service.app, &deliveries::finalized(Shape::Push, &object)).await;
        assert_eq!(text, "duplicate");
        assert_eq!(service.handler.seen().len(), 1);
    }

    #[tokio::test]
    async fn the_claim_of_a_delivery_that_died_expires() {
        let service = service();
        let key = layout::event_marker_key(BUCKET, RESULT, 12).expect("key");
        let long_ago = SystemTime::now() - marker::CLAIM_LEASE - Duration::from_secs(5);
        marker::leave_claim(service.store.as_ref(), &key, long_ago)
            .await
            .expect("claim");
        let object = result_object(RESULT, json!(12));
        let (status, text) = post(&service.app, &deliveries::finalized(Shape::Push, &object)).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "handled"));
        assert_eq!(service.handler.seen(), vec![finalized(RESULT, 12)]);
    }

    /// A bucket that cannot be reached.
    #[derive(Debug)]
    struct DownStore;

    #[async_trait]
    impl ObjectStore for DownStore {
        async fn get(&self, _: &str) -> Result<Option<Object>, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn generation(&self, _: &str) -> Result<Option<i64>, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn put(
            &self,
            _: &str,
            _: Vec<u8>,
            _: &str,
            _: nbci_shared::ports::store::Precondition,
        ) -> Result<i64, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn put_file(
            &self,
            _: &str,
            _: &Path,
            _: &str,
            _: nbci_shared::ports::store::Precondition,
        ) -> Result<i64, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn get_to_file(&self, _: &str, _: &Path) -> Result<bool, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        async fn list(&self, _: &str) -> Result<Vec<String>, StoreError> {
            Err(StoreError::Unavailable("down".into()))
        }
        fn uri(&self, key: &str) -> String {
            format!("down://{key}")
        }
    }

    #[tokio::test]
    async fn an_unreachable_bucket_answers_503_and_nothing_is_handled() {
        let handler = FakeHandler::answering(Vec::new());
        let app = app(EventsState {
            handler: handler.clone(),
            store: Arc::new(DownStore),
        });
        let object = result_object(RESULT, json!("13"));
        let (status, _) = post(&app, &deliveries::finalized(Shape::Binary, &object)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(handler.seen().is_empty());
    }

    /// Thousands of mangled deliveries of every shape: never a 5xx, never a panic.
    #[tokio::test]
    async fn mangled_deliveries_never_fail_the_server() {
        let service = service();
        let mut sources = Vec::new();
        for fixture in [deliveries::SIMPLE, deliveries::COMPLEX] {
            for generation in [json!("77"), json!(77)] {
                let object = deliveries::object(fixture, BUCKET, RESULT, generation);
                for shape in Shape::ALL {
                    sources.push(deliveries::finalized(shape, &object));
                }
            }
        }
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pick = |n: usize, r: u64| usize::try_from(r % n as u64).expect("fits");
        const NOISE: &[u8] = b"{}[]\",:0-9aZ\\/=+\x00\xff\xc3 ";
        const HEADER_NOISE: &[&str] = &[
            "",
            "1.0",
            "0.3",
            "2.0",
            "objects/",
            "objects/ci/x/result.json",
            "//storage.googleapis.com/projects/_/buckets/",
            "//storage.googleapis.com/projects/_/buckets/UPPER",
            "google.cloud.storage.object.v1.finalized",
            "google.cloud.pubsub.topic.v1.messagePublished",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "text/plain",
            "not a time",
        ];
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for round in 0..3000 {
            let mut delivery = sources[pick(sources.len(), next())].clone();
            match next() % 4 {
                0 => {
                    let at = pick(delivery.body.len() + 1, next());
                    delivery.body.truncate(at);
                }
                1 => {
                    for _ in 0..(next() % 8 + 1) {
                        let at = pick(delivery.body.len(), next());
                        delivery.body[at] = NOISE[pick(NOISE.len(), next())];
                    }
                }
                2 => {
                    // Valid JSON with one value (at any depth) replaced.
                    let mut value: serde_json::Value =
                        serde_json::from_slice(&delivery.body).expect("json");
                    let replacement = match next() % 6 {
                        0 => json!(null),
                        1 => json!(-1),
                        2 => json!("x"),
                        3 => json!([]),
                        4 => json!({}),
                        _ => json!(u64::MAX),
                    };
                    replace_somewhere(&mut value, replacement, &mut next);
                    delivery.body = serde_json::to_vec(&value).expect("json");
                }
                _ => {
                    let names = [
                        "ce-specversion",
                        "ce-type",
                        "ce-source",
                        "ce-subject",
                        "ce-id",
                        "ce-time",
                        "ce-bucket",
                        "content-type",
                    ];
                    let name = names[pick(names.len(), next())];
                    let value = HEADER_NOISE[pick(HEADER_NOISE.len(), next())];
                    delivery.set_header(name, value);
                }
            }
            let (status, text) = post(&service.app, &delivery).await;
            assert!(!status.is_server_error(), "round {round}: {status} {text}");
            *statuses.entry(status.as_u16()).or_default() += 1;
        }
        // The mangling reached every answer: refused, ignored and handled.
        for status in [200, 202, 400] {
            assert!(
                statuses.get(&status).copied().unwrap_or(0) > 10,
                "{statuses:?}"
            );
        }
    }

    /// Replaces one value of `value`'s tree, chosen by `next`.
    fn replace_somewhere(
        value: &mut serde_json::Value,
        replacement: serde_json::Value,
        next: &mut impl FnMut() -> u64,
    ) {
        let children = match value {
            serde_json::Value::Object(map) => map.len(),
            serde_json::Value::Array(items) => items.len(),
            _ => 0,
        };
        if children == 0 || next().is_multiple_of(3) {
            *value = replacement;
            return;
        }
        let at = usize::try_from(next() % children as u64).expect("fits");
        let child = match value {
            serde_json::Value::Object(map) => map.values_mut().nth(at),
            serde_json::Value::Array(items) => items.get_mut(at),
            _ => None,
        };
        if let Some(child) = child {
            replace_somewhere(child, replacement, next);
        }
    }
}
