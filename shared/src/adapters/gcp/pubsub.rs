//! The event bus on Google Cloud Pub/Sub: the durable dispatch hand-off.
//!
//! GitHub never redelivers a failed webhook delivery on its own, so the work
//! a delivery asks for must not live only in the process that answered it.
//! With `NBCI_DISPATCH_TOPIC` set, github-webhook publishes the trigger here
//! and answers; a push subscription brings it back as the standard push
//! envelope to `POST /dispatch`
//! ([`parse_pushed_message`](super::events::parse_pushed_message)), whose 503
//! makes Pub/Sub deliver it again.
//!
//! # What is published
//! One Pub/Sub message per bus [`Message`]: the data is the message's JSON,
//! exactly what the receiving side parses (**contract** between
//! [`PubSubBus`] and `/dispatch`), and the attributes repeat what a
//! subscription filter, a dead-letter inspection or a log wants without
//! decoding the data: [`ATTRIBUTE_TYPE`] (`dispatch`, the JSON's own tag),
//! [`ATTRIBUTE_ID`] ([`Message::id`], the stable deduplication id) and, for a
//! dispatch, [`ATTRIBUTE_DELIVERY`] (`X-GitHub-Delivery`). No ordering key:
//! dispatches of different deliveries are independent, and an ordering key
//! would make one failing delivery hold up the others.
//!
//! # Bounded
//! GitHub waits 10 s for the webhook's answer, and the webhook first records
//! the delivery in the bucket. A publish therefore gives up after
//! [`DEFAULT_PUBLISH_TIMEOUT`] (4 s): the client's own retries stop at that
//! time limit, and the whole call, token and connection included (which the
//! client's per-attempt deadline does not cover), is cut off at the same
//! bound. A publish that was cut off may still reach Pub/Sub afterwards; the
//! webhook has answered 503 by then, and the redelivery GitHub is asked for
//! publishes the same trigger again, which the CI flow takes as the duplicate
//! it is (it creates each check once per repository, commit and notebook).
//!
//! # Client and credentials
//! The [`Publisher`] is built once and shared: it keeps a gRPC connection
//! pool and a background task, both meant to be reused across requests (the
//! bus is built at start-up, the client inside it by the first publish: see
//! [`PubSubBus::new`]). Credentials are Application Default Credentials (the
//! metadata server on Cloud Run, a key file on a laptop). With an emulator host
//! (`PUBSUB_EMULATOR_HOST`, `host:port`, as Google's other client libraries
//! read it) the client speaks plaintext gRPC to it with anonymous
//! credentials, as emulators expect; the official Rust client does not read
//! that variable itself, so the settings carry it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::builder::publisher::PublisherBuilder;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message as PubSubMessage;
use google_cloud_pubsub::retry_policy::RetryableErrors;
use tokio::sync::OnceCell;

use super::auth::CLOUD_PLATFORM_SCOPE;
use crate::ports::bus::{BusError, EventBus, Message};

/// Pub/Sub's global endpoint, the client's default.
pub const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// How long a publish may take at most, retries included (see "Bounded").
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(4);

/// The attribute naming the message's kind: the `type` tag of its JSON
/// (`dispatch`, `finalized`).
pub const ATTRIBUTE_TYPE: &str = "type";
/// The attribute carrying [`Message::id`], stable across retries.
pub const ATTRIBUTE_ID: &str = "id";
/// The attribute carrying a dispatch's `X-GitHub-Delivery`.
pub const ATTRIBUTE_DELIVERY: &str = "delivery";
/// Pub/Sub refuses attribute values longer than this (in bytes).
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// Why the Pub/Sub bus could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubSetupError {
    /// Occurs when the topic (`NBCI_DISPATCH_TOPIC`) is not a Pub/Sub topic's
    /// resource name, `projects/PROJECT/topics/TOPIC`.
    #[error(
        "NBCI_DISPATCH_TOPIC {value:?} is not a topic name (projects/PROJECT/topics/TOPIC): {reason}"
    )]
    InvalidTopic { value: String, reason: String },
    /// Occurs when the emulator host (`PUBSUB_EMULATOR_HOST`) is not
    /// `host:port`.
    #[error("PUBSUB_EMULATOR_HOST {value:?} is not host:port: {reason}")]
    InvalidEmulatorHost { value: String, reason: String },
    /// Occurs when the Pub/Sub client cannot be built: Application Default
    /// Credentials that cannot be loaded, an endpoint the client refuses.
    #[error("the Pub/Sub client cannot be built: {0}")]
    Client(String),
}

/// A Pub/Sub topic's resource name, `projects/PROJECT/topics/TOPIC`, checked
/// against Google's naming rules so that a typo fails at start-up, naming the
/// variable, rather than at the first webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicName {
    name: String,
    project_len: usize,
}

impl TopicName {
    /// Reads `projects/PROJECT/topics/TOPIC`. The project is a project id
    /// (6 to 30 lowercase letters, digits and hyphens, a letter first, not
    /// ending in a hyphen; optionally `domain:` first) or a project number;
    /// the topic 3 to 255 letters, digits and `-_.~+%`, a letter first, not
    /// starting with `goog`.
    pub fn parse(value: &str) -> Result<Self, PubSubSetupError> {
        let invalid = |reason: &str| PubSubSetupError::InvalidTopic {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = value.split('/').collect();
        let [projects, project, topics, topic] = parts.as_slice() else {
            return Err(invalid("expected four segments"));
        };
        if *projects != "projects" || *topics != "topics" {
            return Err(invalid("expected projects/PROJECT/topics/TOPIC"));
        }
        if !valid_project(project) {
            return Err(invalid("the project is neither a project id nor a number"));
        }
        if !valid_topic_id(topic) {
            return Err(invalid(
                "the topic id must be 3 to 255 letters, digits or -_.~+%, start with a letter and not with goog",
            ));
        }
        Ok(Self {
            name: value.to_owned(),
            project_len: project.len(),
        })
    }

    /// The full resource name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The project part.
    pub fn project(&self) -> &str {
        let start = "projects/".len();
        &self.name[start..start + self.project_len]
    }

    /// The topic id (the last segment).
    pub fn topic_id(&self) -> &str {
        let start = "projects/".len() + self.project_len + "/topics/".len();
        &self.name[start..]
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn valid_project(project: &str) -> bool {
    if !project.is_empty() && project.bytes().all(|b| b.is_ascii_digit()) {
        return project.len() <= 20;
    }
    // Domain-scoped projects: `example.com:my-project`.
    let id = match project.rsplit_once(':') {
        Some((domain, id)) => {
            let domain_ok = !domain.is_empty()
                && domain.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !domain_ok {
                return false;
            }
            id
        }
        None => project,
    };
    (6..=30).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_topic_id(topic: &str) -> bool {
    (3..=255).contains(&topic.len())
        && topic
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        && !topic.to_ascii_lowercase().starts_with("goog")
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+%".contains(&b))
}

/// Which credentials the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubCredentials {
    /// Application Default Credentials with the cloud-platform scope, as
    /// every Google adapter here ([`auth`](super::auth)).
    ApplicationDefault,
    /// None: what emulators expect.
    Anonymous,
}

/// What the bus needs, read from the configuration by `wiring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubSettings {
    /// `NBCI_DISPATCH_TOPIC`: where messages go.
    pub topic: TopicName,
    /// The gRPC endpoint, `http(s)://host:port`; `None` is Google's
    /// (`https://pubsub.googleapis.com`). `http` means plaintext (emulators).
    pub endpoint: Option<String>,
    pub credentials: PubSubCredentials,
    /// How long a publish may take at most (see "Bounded" above).
    pub publish_timeout: Duration,
}

impl PubSubSettings {
    /// Settings from `NBCI_DISPATCH_TOPIC` and `PUBSUB_EMULATOR_HOST` as the
    /// environment spells them. With an emulator host (neither absent nor
    /// empty), the emulator with anonymous credentials; else Google with
    /// Application Default Credentials.
    pub fn new(topic: &str, emulator_host: Option<&str>) -> Result<Self, PubSubSetupError> {
        let topic = TopicName::parse(topic.trim())?;
        let settings = match emulator_host.map(str::trim).filter(|h| !h.is_empty()) {
            Some(host) => Self {
                topic,
                endpoint: Some(emulator_endpoint(host)?),
                credentials: PubSubCredentials::Anonymous,
                publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            },
            None => Self {
                topic,
                endpoint: None,
                credentials: PubSubCredentials::ApplicationDefault,
                publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            },
        };
        Ok(settings)
    }
}

/// `host:port` (what `PUBSUB_EMULATOR_HOST` holds for every Google client
/// library) as the endpoint URL the Rust client takes. A URL with an `http`
/// scheme is accepted too; a path, query or any other scheme is not.
pub fn emulator_endpoint(host: &str) -> Result<String, PubSubSetupError> {
    let invalid = |reason: &str| PubSubSetupError::InvalidEmulatorHost {
        value: host.to_owned(),
        reason: reason.to_owned(),
    };
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(invalid("emulators speak plaintext: no scheme, or http://"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a host and port only, no path"));
    }
    let Some(host_part) = url.host_str() else {
        return Err(invalid("no host"));
    };
    let Some(port) = url.port() else {
        return Err(invalid("no port"));
    };
    Ok(format!("http://{host_part}:{port}"))
}

/// A bus message as Pub/Sub carries it: the data and the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The message's JSON: what `/dispatch` parses back.
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
}

/// The data and attributes a message is published with (see "What is
/// published"); the one place that decides them, shared by the publisher and
/// the tests that check what arrives.
pub fn encode(message: &Message) -> Result<Encoded, BusError> {
    let value = serde_json::to_value(message)
        .map_err(|error| BusError::Unavailable(format!("cannot encode the message: {error}")))?;
    let kind = value
        .get("type")
        .and_then(|kind| kind.as_str())
        .ok_or_else(|| BusError::Unavailable("the message's JSON has no type tag".into()))?
        .to_owned();
    let data = serde_json::to_vec(&value)
        .map_err(|error| BusError::Unavailable(format!("cannot encode the message: {error}")))?;
    let mut attributes = BTreeMap::from([
        (ATTRIBUTE_TYPE.to_owned(), kind),
        (ATTRIBUTE_ID.to_owned(), message.id()),
    ]);
    if let Message::Dispatch(trigger) = message {
        attributes.insert(ATTRIBUTE_DELIVERY.to_owned(), trigger.delivery.clone());
    }
    // Attributes only repeat what the data holds: one that Pub/Sub would
    // refuse (a delivery id far longer than GitHub's) is left out rather
    // than failing the message.
    attributes.retain(|_, value| value.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
    Ok(Encoded { data, attributes })
}

/// The event bus on a Pub/Sub topic. Build one at start-up and share it.
pub struct PubSubBus {
    /// The client's configuration, checked; the client itself is built from
    /// it once, by the first publish (see [`PubSubBus::new`]).
    builder: PublisherBuilder,
    /// The client, once built: one gRPC pool and one background task for
    /// the life of the process.
    publisher: OnceCell<Publisher>,
    topic: TopicName,
    /// The bound on one publish, retries and connection included.
    timeout: Duration,
    /// Where messages go, for logs and `Debug`: Google or the emulator.
    endpoint: String,
}

impl fmt::Debug for PubSubBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubBus")
            .field("topic", &self.topic.as_str())
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("connected", &self.publisher.initialized())
            .finish_non_exhaustive()
    }
}

impl PubSubBus {
    /// The bus of `settings.topic`, with everything that can be checked
    /// without the network checked now: the topic's name, the endpoint, and
    /// the credentials (a key file that cannot be loaded fails here, at
    /// start-up).
    ///
    /// The client is built by the first publish, once, and then reused. It
    /// is not built here because building it is async and spawns the
    /// client's background task, which must live on the runtime that serves
    /// requests, while wiring is synchronous; building connects to nothing
    /// (the gRPC channel and the token are lazy), so the first publish pays
    /// microseconds, not a round trip. An unreachable Pub/Sub, a missing
    /// topic or a metadata server that gives no token show at a publish, as
    /// [`BusError::Unavailable`].
    ///
    /// Call it within the Tokio runtime: Application Default Credentials
    /// start their token cache's task when they are built.
    pub fn new(settings: PubSubSettings) -> Result<Self, PubSubSetupError> {
        let timeout = settings.publish_timeout;
        let credentials = match settings.credentials {
            PubSubCredentials::Anonymous => {
                google_cloud_auth::credentials::anonymous::Builder::new().build()
            }
            PubSubCredentials::ApplicationDefault => {
                google_cloud_auth::credentials::Builder::default()
                    .with_scopes([CLOUD_PLATFORM_SCOPE])
                    .build()
                    .map_err(|error| {
                        PubSubSetupError::Client(format!(
                            "Application Default Credentials cannot be loaded: {error}"
                        ))
                    })?
            }
        };
        let builder = Publisher::builder(settings.topic.as_str())
            .with_credentials(credentials)
            // One message per call, sent at once: the webhook waits for its
            // id, and batching would only add the batch's delay.
            .set_message_count_threshold(1)
            .set_delay_threshold(Duration::ZERO)
            // The client retries transient errors for 600 s by default; the
            // webhook cannot wait that long (see "Bounded").
            .with_retry_policy(RetryableErrors.with_time_limit(timeout))
            .with_backoff_policy(
                ExponentialBackoffBuilder::new()
                    .with_initial_delay(Duration::from_millis(100))
                    .with_maximum_delay(Duration::from_secs(1))
                    .with_scaling(2.0)
                    .clamp(),
            );
        let (builder, endpoint) = match &settings.endpoint {
            Some(endpoint) => {
                let url = url::Url::parse(endpoint).map_err(|error| {
                    PubSubSetupError::Client(format!("the endpoint {endpoint:?}: {error}"))
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(PubSubSetupError::Client(format!(
                        "the endpoint {endpoint:?} is not an http(s) URL"
                    )));
                }
                (builder.with_endpoint(endpoint.clone()), endpoint.clone())
            }
            None => (builder, GOOGLE_ENDPOINT.to_owned()),
        };
        Ok(Self {
            builder,
            publisher: OnceCell::new(),
            topic: settings.topic,
            timeout,
            endpoint,
        })
    }

    /// The topic messages go to.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// Publishes `message` and returns the id Pub/Sub gave it, once Pub/Sub
    /// acknowledged it (stored it durably), within the bound.
    pub async fn publish_message(&self, message: &Message) -> Result<String, BusError> {
        let Encoded { data, attributes } = encode(message)?;
        let id = message.id();
        let outgoing = PubSubMessage::new()
            .set_data(data)
            .set_attributes(attributes);
        let published = tokio::time::timeout(self.timeout, async {
            let publisher = self
                .publisher
                .get_or_try_init(|| self.builder.clone().build())
                .await
                .map_err(|error| format!("the Pub/Sub client cannot be built: {error}"))?;
            publisher
                .publish(outgoing)
                .await
                .map_err(|error| format!("Pub/Sub did not take the message: {error}"))
        })
        .await;
        match published {
            Ok(Ok(message_id)) => {
                tracing::info!(message = %id, %message_id, topic = %self.topic, "published to Pub/Sub");
                Ok(message_id)
            }
            Ok(Err(error)) => {
                let reason = format!("{} ({}): {error}", self.topic, self.endpoint);
                tracing::warn!(message = %id, error = %reason, "publish failed");
                Err(BusError::Unavailable(reason))
            }
            Err(_) => {
                let reason = format!(
                    "{} ({}): Pub/Sub did not acknowledge the message within {:?}",
                    self.topic, self.endpoint, self.timeout
                );
                tracing::warn!(message = %id, error = %reason, "publish timed out");
                Err(BusError::Unavailable(reason))
            }
        }
    }
}

#[async_trait]
impl EventBus for PubSubBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.publish_message(message).await.map(drop)
    }
}

#[cfg(test)]
mod emulator;

#[cfg(test)]
mod tests;
