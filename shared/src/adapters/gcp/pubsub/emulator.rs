//! cloudbox's Pub/Sub emulator, one per test: something that speaks Pub/Sub's
//! own protocols (gRPC for the client's publish, REST for everything the
//! tests do around it, and push), so that the adapter is checked against the
//! wire format rather than against our idea of it.
//!
//! `make pubsub-emulator` prepares it (pinned, patched for Python 3.13, in
//! `.emulators/pubsub`); each [`PubSubEmulator`] runs
//! `tests/emulators/pubsub/serve.py` on ports the system picks, with its own
//! in-memory state, and stops it when dropped (and the script stops by itself
//! when its stdin closes, should the test process die). A missing or stale
//! setup fails the test with the command that fixes it: a Pub/Sub test never
//! passes without Pub/Sub.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::TopicName;

/// How long the emulator may take to start (Python imports grpc and
/// fastapi: about a second here).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The command that prepares the emulator.
pub(crate) const SETUP: &str = "make pubsub-emulator";

/// The repository's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds shared/")
        .to_path_buf()
}

/// The emulator's interpreter, once `make pubsub-emulator` set it up from
/// the pinned requirements and patch that are in the tree now. Panics with
/// the setup command otherwise.
fn interpreter() -> PathBuf {
    let root = workspace();
    let source = root.join("tests/emulators/pubsub");
    let venv = root.join(".emulators/pubsub");
    let python = venv.join("bin/python");
    let missing = |why: String| -> ! {
        panic!(
            "the Pub/Sub emulator (cloudbox) is not set up: {why}. Run `{SETUP}` in {}",
            root.display()
        )
    };
    if !python.exists() {
        missing(format!("{} does not exist", python.display()));
    }
    // The stamp is written only after the patch was applied and checked; it
    // holds the requirements and the patch it was made from.
    let stamp = std::fs::read(venv.join(".nbci-cloudbox"))
        .unwrap_or_else(|_| missing("the setup did not finish (no stamp)".into()));
    let mut expected = std::fs::read(source.join("requirements.txt")).expect("requirements.txt");
    expected.extend(std::fs::read(source.join("patch_cloudbox.py")).expect("patch_cloudbox.py"));
    if stamp != expected {
        missing("it was made from other pins or another patch".into());
    }
    python
}

/// A running emulator: Pub/Sub over gRPC and REST, sharing one state.
#[derive(Debug)]
pub(crate) struct PubSubEmulator {
    /// `127.0.0.1:PORT`: what `PUBSUB_EMULATOR_HOST` would say.
    pub(crate) grpc_host: String,
    /// `http://127.0.0.1:PORT`: the REST API's root.
    pub(crate) rest: String,
    http: reqwest::Client,
    child: Child,
    /// Held open: the emulator stops when it closes.
    _stdin: Option<ChildStdin>,
    /// The emulator's log (stderr), quoted when a call fails.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl PubSubEmulator {
    /// Starts an emulator on free ports and waits until both servers accept.
    pub(crate) async fn start() -> Self {
        let python = interpreter();
        let script = workspace().join("tests/emulators/pubsub/serve.py");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("cloudbox.log");
        let mut child = Command::new(&python)
            .arg(&script)
            .env("CLOUDBOX_LOG_LEVEL", "warning")
            .env_remove("CLOUDBOX_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let line = match line {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                panic!("the Pub/Sub emulator exited at start:\n{}", read_log())
            }
            Err(_) => panic!(
                "the Pub/Sub emulator did not start within {START_TIMEOUT:?}:\n{}",
                read_log()
            ),
        };
        let ports: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the emulator said {line:?} ({e}):\n{}", read_log()));
        let text = |key: &str| {
            ports[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {line}"))
                .to_owned()
        };
        Self {
            grpc_host: text("grpc"),
            rest: text("rest"),
            http: reqwest::Client::new(),
            child,
            _stdin: stdin,
            log,
            _dir: dir,
        }
    }

    /// What the emulator logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One REST call; a non-2xx answer fails the test with the emulator's log.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/v1/{path}", self.rest);
        let response = self
            .http
            .request(method.clone(), &url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}\n{}", self.log()));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {url} answered {status}: {text}\n{}",
            self.log()
        );
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
        }
    }

    /// `PUT projects/P/topics/T` (topics.create).
    pub(crate) async fn create_topic(&self, topic: &TopicName) {
        self.call(reqwest::Method::PUT, topic.as_str(), json!({}))
            .await;
    }

    /// `PUT projects/P/subscriptions/S` (subscriptions.create), a pull
    /// subscription when `push_endpoint` is `None`.
    pub(crate) async fn create_subscription(
        &self,
        name: &str,
        topic: &TopicName,
        push_endpoint: Option<&str>,
    ) {
        let mut body = json!({"name": name, "topic": topic.as_str(), "ackDeadlineSeconds": 10});
        if let Some(endpoint) = push_endpoint {
            body["pushConfig"] = json!({"pushEndpoint": endpoint});
        }
        self.call(reqwest::Method::PUT, name, body).await;
    }

    /// `POST projects/P/topics/T:publish` over REST (the way that makes the
    /// emulator push); the message ids it answers.
    pub(crate) async fn publish_rest(
        &self,
        topic: &TopicName,
        messages: Vec<Value>,
    ) -> Vec<String> {
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("{topic}:publish"),
                json!({ "messages": messages }),
            )
            .await;
        serde_json::from_value(answer["messageIds"].clone()).expect("message ids")
    }

    /// Pulls until `count` messages came, or fails after a few seconds; the
    /// `receivedMessages` as the REST API answers them.
    pub(crate) async fn pull(&self, subscription: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut received = Vec::new();
        while received.len() < count {
            let answer = self
                .call(
                    reqwest::Method::POST,
                    &format!("{subscription}:pull"),
                    json!({"maxMessages": 10}),
                )
                .await;
            if let Some(messages) = answer["receivedMessages"].as_array() {
                received.extend(messages.iter().cloned());
            }
            if received.len() < count {
                assert!(
                    Instant::now() < deadline,
                    "{subscription}: {} of {count} messages after 5 s: {received:?}\n{}",
                    received.len(),
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        received
    }

    /// `POST projects/P/subscriptions/S:acknowledge`.
    pub(crate) async fn acknowledge(&self, subscription: &str, ack_ids: &[&str]) {
        self.call(
            reqwest::Method::POST,
            &format!("{subscription}:acknowledge"),
            json!({ "ackIds": ack_ids }),
        )
        .await;
    }
}

/// The decoded data of a REST `PubsubMessage` (base64 `data`).
pub(crate) fn data_of(message: &Value) -> Vec<u8> {
    let text = message["data"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("data {text:?} is not base64: {e}"))
}
