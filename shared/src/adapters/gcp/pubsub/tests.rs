//! The Pub/Sub bus: names and encoding as units; publishing against the
//! emulator (cloudbox, gRPC) with the message pulled back over REST; and the
//! push envelope the emulator sends, read by our own parser behind a route.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::emulator::{PubSubEmulator, data_of};
use super::*;
use crate::adapters::gcp::auth::tests::{TOKEN_PATH, fake_metadata_server};
use crate::adapters::gcp::events::parse_pushed_message;
use crate::domain::repo::{CommitSha, InstallationId, RepoRef};
use crate::domain::trigger::Trigger;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

const PROJECT: &str = "nbci-tests";

fn dispatch(delivery: &str) -> Message {
    Message::Dispatch(Trigger {
        delivery: delivery.to_owned(),
        installation: InstallationId(42),
        repo: RepoRef::parse("octo-org/notebooks").expect("repo"),
        head_sha: CommitSha::try_from("c0ffee".repeat(6) + "c0ff").expect("sha"),
        base: Some("main".into()),
        only: Some("notebooks/train.ipynb".into()),
        rerun: true,
        git_ref: None,
    })
}

fn topic(id: &str) -> TopicName {
    TopicName::parse(&format!("projects/{PROJECT}/topics/{id}")).expect("topic")
}

fn subscription(id: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{id}")
}

/// A bus on the emulator's gRPC port, as `PUBSUB_EMULATOR_HOST` would set it.
fn bus_on(emulator: &PubSubEmulator, topic: &TopicName) -> PubSubBus {
    let settings =
        PubSubSettings::new(topic.as_str(), Some(&emulator.grpc_host)).expect("settings");
    PubSubBus::new(settings).expect("bus")
}

fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn topic_names_follow_googles_rules() {
    let name = TopicName::parse("projects/my-project/topics/nbci-dispatch").expect("valid");
    assert_eq!(name.project(), "my-project");
    assert_eq!(name.topic_id(), "nbci-dispatch");
    assert_eq!(name.to_string(), "projects/my-project/topics/nbci-dispatch");
    for good in [
        "projects/123456789012/topics/dispatch",
        "projects/example.com:my-project/topics/a.b_c~d+e%41",
        &format!("projects/abcdef/topics/t{}", "x".repeat(254)),
    ] {
        let parsed = TopicName::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(parsed.as_str(), good);
    }
    for bad in [
        "",
        "nbci-dispatch",
        "projects/my-project/topics",
        "projects/my-project/subscriptions/nbci",
        "projects/my-project/topics/nbci/extra",
        "projects//topics/nbci",
        "projects/My-Project/topics/nbci",
        "projects/short/topics/nbci",
        "projects/my-project-/topics/nbci",
        "projects/1project/topics/nbci",
        "projects/my-project/topics/ab",
        "projects/my-project/topics/1abc",
        "projects/my-project/topics/google-things",
        "projects/my-project/topics/with space",
        "projects/my-project/topics/with/slash",
        &format!("projects/abcdef/topics/t{}", "x".repeat(255)),
    ] {
        let error = TopicName::parse(bad).expect_err(bad).to_string();
        assert!(error.starts_with("NBCI_DISPATCH_TOPIC"), "{bad}: {error}");
    }
}

#[test]
fn the_emulator_host_is_host_and_port_as_google_clients_read_it() {
    for (host, endpoint) in [
        ("localhost:8085", "http://localhost:8085"),
        ("127.0.0.1:8085", "http://127.0.0.1:8085"),
        ("[::1]:8085", "http://[::1]:8085"),
        ("http://pubsub:8681", "http://pubsub:8681"),
    ] {
        assert_eq!(emulator_endpoint(host).expect(host), endpoint);
    }
    for bad in [
        "localhost",
        "https://pubsub:8681",
        "localhost:8085/v1",
        "localhost:notaport",
    ] {
        let error = emulator_endpoint(bad).expect_err(bad).to_string();
        assert!(error.starts_with("PUBSUB_EMULATOR_HOST"), "{bad}: {error}");
    }
    let settings =
        PubSubSettings::new(" projects/my-project/topics/t-1 ", Some("")).expect("settings");
    assert_eq!(settings.endpoint, None, "empty means unset: Google");
    assert_eq!(settings.credentials, PubSubCredentials::ApplicationDefault);
    assert_eq!(settings.publish_timeout, DEFAULT_PUBLISH_TIMEOUT);
    let emulated =
        PubSubSettings::new("projects/my-project/topics/t-1", Some("localhost:8085")).expect("ok");
    assert_eq!(emulated.endpoint.as_deref(), Some("http://localhost:8085"));
    assert_eq!(emulated.credentials, PubSubCredentials::Anonymous);
    assert!(
        PubSubSettings::new("projects/my-project/topics/t-1", Some("nohost"))
            .expect_err("no port")
            .to_string()
            .contains("PUBSUB_EMULATOR_HOST")
    );
}

#[test]
fn a_message_is_its_json_with_its_kind_and_ids_as_attributes() {
    let message = dispatch("72d3162e-cc78-11e3-81ab-4c9367dc0958");
    let encoded = encode(&message).expect("encoded");
    assert_eq!(
        serde_json::from_slice::<Message>(&encoded.data).expect("JSON"),
        message
    );
    assert_eq!(
        encoded.attributes,
        attributes(&[
            ("type", "dispatch"),
            ("id", "dispatch-72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ])
    );
    // What /dispatch reads back from a push of these bytes.
    let envelope = serde_json::to_vec(&crate::adapters::gcp::events::PushEnvelope {
        message: crate::adapters::gcp::events::PushedMessage::new(
            &encoded.data,
            encoded.attributes.clone(),
        ),
        subscription: Some(subscription("dispatch-push")),
    })
    .expect("envelope");
    assert_eq!(parse_pushed_message(&envelope).expect("parsed"), message);

    let finalized = Message::Finalized {
        key: "ci/o/r/sha/a.ipynb/result.json".into(),
        generation: 7,
    };
    let encoded = encode(&finalized).expect("encoded");
    assert_eq!(encoded.attributes["type"], "finalized");
    assert_eq!(encoded.attributes["id"], finalized.id());
    assert!(!encoded.attributes.contains_key("delivery"));

    // The webhook takes delivery ids of 100 characters at most; a trigger
    // made elsewhere with a longer one still publishes.
    let long = dispatch(&"d".repeat(1_100));
    let encoded = encode(&long).expect("encoded");
    assert_eq!(
        encoded.attributes.keys().collect::<Vec<_>>(),
        ["type"],
        "values Pub/Sub would refuse are left out"
    );
    assert_eq!(
        serde_json::from_slice::<Message>(&encoded.data).expect("JSON"),
        long
    );
}

/// A publish that gets no answer gives up within its bound: GitHub's 10 s
/// are not spent waiting for Pub/Sub.
#[tokio::test]
async fn a_publish_is_bounded_when_pubsub_does_not_answer() {
    // Accepts connections and never answers: the worst case, a black hole.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let silent_host = silent.local_addr().expect("address").to_string();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // Refuses connections: nothing listens there any more.
    let refused_host = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.local_addr().expect("address").to_string()
    };
    for host in [silent_host, refused_host] {
        let mut settings = PubSubSettings::new("projects/my-project/topics/dispatch", Some(&host))
            .expect("settings");
        settings.publish_timeout = Duration::from_millis(600);
        let bus = PubSubBus::new(settings).expect("bus");
        let started = Instant::now();
        let error = bus
            .publish(&dispatch("d-bounded"))
            .await
            .expect_err("no Pub/Sub there");
        let elapsed = started.elapsed();
        assert!(matches!(error, BusError::Unavailable(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("projects/my-project/topics/dispatch"),
            "{error}"
        );
        assert!(
            elapsed < Duration::from_millis(1_600),
            "{host}: gave up after {elapsed:?}: {error}"
        );
    }
    keep.abort();
}

#[tokio::test]
async fn publishes_over_grpc_and_the_message_is_pulled_back_intact() {
    let emulator = PubSubEmulator::start().await;
    let topic = topic("nbci-dispatch");
    let pull = subscription("nbci-dispatch-pull");
    emulator.create_topic(&topic).await;
    emulator.create_subscription(&pull, &topic, None).await;
    let bus = bus_on(&emulator, &topic);
    assert_eq!(bus.topic(), &topic);

    let first = dispatch("6f1ed002-ab5d-11ec-8d3d-0242ac130003");
    let second = Message::Finalized {
        key: "ci/octo-org/notebooks/sha/a.ipynb/result.json".into(),
        generation: 1_637_874_272_256_630,
    };
    let started = Instant::now();
    let first_id = bus.publish_message(&first).await.expect("published");
    let publish_time = started.elapsed();
    let second_id = bus.publish_message(&second).await.expect("published");
    assert_ne!(first_id, second_id);
    // The trait's publish goes the same way.
    bus.publish(&first).await.expect("published again");

    let received = emulator.pull(&pull, 3).await;
    assert_eq!(received.len(), 3, "{received:?}");
    let by_id = |id: &str| {
        received
            .iter()
            .find(|r| r["message"]["messageId"] == id)
            .unwrap_or_else(|| panic!("{id} not pulled: {received:?}"))
    };
    for (id, message) in [(&first_id, &first), (&second_id, &second)] {
        let pulled = &by_id(id)["message"];
        let expected = encode(message).expect("encoded");
        assert_eq!(data_of(pulled), expected.data, "data of {id}");
        assert_eq!(
            serde_json::from_slice::<Message>(&data_of(pulled)).expect("a bus message"),
            *message
        );
        let pulled_attributes: BTreeMap<String, String> =
            serde_json::from_value(pulled["attributes"].clone()).expect("attributes");
        assert_eq!(pulled_attributes, expected.attributes, "attributes of {id}");
        assert_eq!(pulled["orderingKey"].as_str().unwrap_or_default(), "");
    }
    let ack_ids: Vec<&str> = received
        .iter()
        .map(|r| r["ackId"].as_str().expect("ackId"))
        .collect();
    emulator.acknowledge(&pull, &ack_ids).await;
    assert!(
        publish_time < Duration::from_secs(3),
        "a publish to a local emulator took {publish_time:?}"
    );
}

#[tokio::test]
async fn a_missing_topic_is_unavailable_and_answered_at_once() {
    let emulator = PubSubEmulator::start().await;
    let bus = bus_on(&emulator, &topic("nobody-created-me"));
    let started = Instant::now();
    let error = bus
        .publish(&dispatch("d-missing"))
        .await
        .expect_err("no such topic");
    assert!(matches!(error, BusError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("nobody-created-me"), "{error}");
    // NOT_FOUND is not retried: the answer does not wait for the bound.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Requests publish at the same time: the first ones build the one client
/// together, and every message is sent on its own, with its own id.
#[tokio::test]
async fn concurrent_publishes_share_one_client() {
    let emulator = PubSubEmulator::start().await;
    let topic = topic("nbci-concurrent");
    let pull = subscription("nbci-concurrent-pull");
    emulator.create_topic(&topic).await;
    emulator.create_subscription(&pull, &topic, None).await;
    let bus = std::sync::Arc::new(bus_on(&emulator, &topic));
    assert!(format!("{bus:?}").contains("connected: false"), "{bus:?}");
    let mut publishes = tokio::task::JoinSet::new();
    for n in 0..12 {
        let bus = bus.clone();
        publishes.spawn(async move {
            let message = dispatch(&format!("delivery-{n}"));
            (bus.publish_message(&message).await, message)
        });
    }
    let mut published = BTreeMap::new();
    while let Some(joined) = publishes.join_next().await {
        let (id, message) = joined.expect("joined");
        published.insert(id.expect("published"), message);
    }
    assert_eq!(published.len(), 12, "distinct ids: {published:?}");
    assert!(format!("{bus:?}").contains("connected: true"), "{bus:?}");
    for received in emulator.pull(&pull, 12).await {
        let id = received["message"]["messageId"].as_str().expect("id");
        let message: Message =
            serde_json::from_slice(&data_of(&received["message"])).expect("message");
        assert_eq!(published.get(id), Some(&message), "{id}");
    }
}

#[tokio::test]
async fn an_endpoint_that_is_not_a_url_is_refused_at_start_up() {
    for endpoint in ["pubsub:8085", "ftp://pubsub:21", "not a url"] {
        let settings = PubSubSettings {
            endpoint: Some(endpoint.to_owned()),
            ..PubSubSettings::new("projects/my-project/topics/t-1", None).expect("settings")
        };
        let error = PubSubBus::new(settings).expect_err(endpoint);
        assert!(error.to_string().contains(endpoint), "{error}");
    }
}

/// What the test's `/dispatch` route saw: the raw envelope and what our
/// parser read from it.
type Pushed = (Value, Message);

/// `POST /dispatch` reduced to the parse (the service adds the handling): the
/// envelope is read by `parse_pushed_message`, 204 when it reads, 400 when not.
async fn receive_push(
    State(seen): State<mpsc::UnboundedSender<Pushed>>,
    body: Bytes,
) -> StatusCode {
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match parse_pushed_message(&body) {
        Ok(message) => {
            let _ = seen.send((raw, message));
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The envelope the emulator pushes is what our parser reads. cloudbox
/// pushes only for messages published over REST, and the adapter publishes
/// over gRPC, so the message takes one relay: published by the adapter to a
/// topic with a pull subscription, pulled, and published again unchanged
/// (its data and attributes, as the REST API gave them) over REST to a topic
/// whose push subscription points at the route. Every byte that reaches the
/// route's parser was made by the adapter and carried by the emulator.
#[tokio::test]
async fn the_pushed_envelope_reaches_the_dispatch_route_as_the_message_published() {
    let emulator = PubSubEmulator::start().await;

    let (seen, mut pushes) = mpsc::unbounded_channel::<Pushed>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let route = format!(
        "http://{}/dispatch",
        listener.local_addr().expect("address")
    );
    let app = Router::new()
        .route("/dispatch", post(receive_push))
        .with_state(seen);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let relay = topic("nbci-relay");
    let relay_pull = subscription("nbci-relay-pull");
    let dispatch_topic = topic("nbci-dispatch");
    let push = subscription("nbci-dispatch-push");
    emulator.create_topic(&relay).await;
    emulator
        .create_subscription(&relay_pull, &relay, None)
        .await;
    emulator.create_topic(&dispatch_topic).await;
    emulator
        .create_subscription(&push, &dispatch_topic, Some(&route))
        .await;

    let message = dispatch("0b2f6a5e-9a7d-4a3c-8f1e-5d6c7b8a9f00");
    let bus = bus_on(&emulator, &relay);
    bus.publish_message(&message).await.expect("published");
    let pulled = emulator.pull(&relay_pull, 1).await;
    let relayed = &pulled[0]["message"];
    let ids = emulator
        .publish_rest(
            &dispatch_topic,
            vec![json!({"data": relayed["data"], "attributes": relayed["attributes"]})],
        )
        .await;

    let (envelope, parsed) = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing pushed within 5 s:\n{}", emulator.log()))
        .expect("a push");
    assert_eq!(parsed, message);
    // The standard envelope: the subscription, and the message with its data
    // (base64), attributes, id and publish time.
    assert_eq!(envelope["subscription"], push.as_str(), "{envelope}");
    assert_eq!(
        envelope["message"]["messageId"],
        ids[0].as_str(),
        "{envelope}"
    );
    assert!(envelope["message"]["publishTime"].is_string(), "{envelope}");
    assert_eq!(
        data_of(&envelope["message"]),
        encode(&message).expect("encoded").data
    );
    let pushed_attributes: BTreeMap<String, String> =
        serde_json::from_value(envelope["message"]["attributes"].clone()).expect("attributes");
    assert_eq!(
        pushed_attributes,
        encode(&message).expect("encoded").attributes
    );
    server.abort();
}

/// Set by [`application_default_credentials_authenticate_the_publish`] for
/// the child it starts: the endpoint and the topic, space-separated.
const CHILD_MARKER: &str = "NBCI_TEST_PUBSUB_ADC_CHILD";
/// The child's mode for a key file that cannot be loaded.
const BAD_KEY_MODE: &str = "bad-key";
/// Printed by the child once the bus refused the key file.
const CHILD_REFUSED: &str = "pubsub adc child: the key file was refused at start-up";
/// The metadata server's answer to which universe (googleapis.com) it is in.
const UNIVERSE_PATH: &str = "/computeMetadata/v1/universe/universe-domain";
/// Printed by the child once it published, so that a child which skipped
/// cannot pass for one that checked.
const CHILD_SUCCESS: &str = "pubsub adc child: published with Application Default Credentials";

/// Outside an emulator the client authenticates with Application Default
/// Credentials: with no key file, the metadata server (Cloud Run). The test
/// points `GCE_METADATA_HOST` at a fake one and the endpoint at the emulator
/// (which accepts any token), and checks that publishing fetched the token
/// there. `google-cloud-auth` reads that variable from the process
/// environment only, so, as in `auth`'s tests, the publish runs in a child
/// process of this test binary with the variable set in that child alone.
#[tokio::test]
async fn application_default_credentials_authenticate_the_publish() {
    let emulator = PubSubEmulator::start().await;
    let topic = topic("nbci-adc");
    let pull = subscription("nbci-adc-pull");
    emulator.create_topic(&topic).await;
    emulator.create_subscription(&pull, &topic, None).await;
    let metadata = fake_metadata_server("ya29.pubsub").await;
    // The client also asks the metadata server which universe it is in.
    Mock::given(method("GET"))
        .and(path(UNIVERSE_PATH))
        .and(header("Metadata-Flavor", "Google"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Metadata-Flavor", "Google")
                .set_body_string("googleapis.com"),
        )
        .mount(&metadata)
        .await;
    let home = tempfile::tempdir().expect("empty home");
    let exe = std::env::current_exe().expect("the test binary");
    let output = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "adapters::gcp::pubsub::tests::adc_child_publishes",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GCE_METADATA_HOST", metadata.address().to_string())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("HOME", home.path())
        .env(
            CHILD_MARKER,
            format!("http://{} {topic}", emulator.grpc_host),
        )
        .output()
        .await
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(CHILD_SUCCESS),
        "child failed:\n{stdout}\n{stderr}\n{}",
        emulator.log()
    );
    let token_requests = metadata
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|request| request.url.path() == TOKEN_PATH)
        .count();
    assert_eq!(token_requests, 1, "one token, fetched for the publish");
    let received = emulator.pull(&pull, 1).await;
    assert_eq!(
        serde_json::from_slice::<Message>(&data_of(&received[0]["message"])).expect("message"),
        dispatch("d-adc")
    );
}

/// A key file that cannot be loaded fails when the bus is built (start-up),
/// not at the first webhook; in a child process for the same reason as above.
#[tokio::test]
async fn a_key_file_that_cannot_be_loaded_fails_at_start_up() {
    let home = tempfile::tempdir().expect("empty home");
    let key = home.path().join("key.json");
    std::fs::write(&key, b"{\"type\": \"no such credentials\"}").expect("key file");
    let exe = std::env::current_exe().expect("the test binary");
    let output = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "adapters::gcp::pubsub::tests::adc_child_publishes",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .env("HOME", home.path())
        .env(CHILD_MARKER, BAD_KEY_MODE)
        .output()
        .await
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(CHILD_REFUSED),
        "child failed:\n{stdout}\n{stderr}"
    );
}

/// Run only by [`application_default_credentials_authenticate_the_publish`]
/// and [`a_key_file_that_cannot_be_loaded_fails_at_start_up`], in their own
/// processes.
#[tokio::test]
#[ignore = "a helper that the ADC tests run in a child process"]
async fn adc_child_publishes() {
    let Some(marker) = std::env::var_os(CHILD_MARKER) else {
        eprintln!("skipped: run by application_default_credentials_authenticate_the_publish");
        return;
    };
    let marker = marker.to_string_lossy().into_owned();
    if marker == BAD_KEY_MODE {
        let settings =
            PubSubSettings::new("projects/my-project/topics/dispatch", None).expect("settings");
        let error = PubSubBus::new(settings).expect_err("the key file is refused");
        assert!(
            error
                .to_string()
                .contains("Application Default Credentials"),
            "{error}"
        );
        println!("{CHILD_REFUSED}");
        return;
    }
    let (endpoint, topic) = marker.split_once(' ').expect("endpoint and topic");
    let settings = PubSubSettings {
        topic: TopicName::parse(topic).expect("topic"),
        endpoint: Some(endpoint.to_owned()),
        credentials: PubSubCredentials::ApplicationDefault,
        publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
    };
    let bus = PubSubBus::new(settings).expect("bus");
    bus.publish_message(&dispatch("d-adc"))
        .await
        .expect("published with a token from the fake metadata server");
    println!("{CHILD_SUCCESS}");
}
