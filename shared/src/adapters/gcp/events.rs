//! Cloud Storage object events as they reach a Cloud Run service, and the
//! event bus's messages as a Pub/Sub push subscription hands them back.
//!
//! How a finalize event arrives depends on how the deployment routes it, so
//! every shape is accepted and comes out as one [`ObjectEvent`]:
//! - an Eventarc trigger on Cloud Storage: a binary-mode CloudEvent (`ce-*`
//!   headers, type `google.cloud.storage.object.v1.finalized`, source
//!   `//storage.googleapis.com/projects/_/buckets/B`, subject `objects/KEY`;
//!   the body is the object's metadata, StorageObjectData);
//! - the same event in structured mode (`application/cloudevents+json`), as
//!   other CloudEvents routers send it;
//! - a bucket notification (`OBJECT_FINALIZE`, payload `JSON_API_V1`) on a
//!   Pub/Sub topic, delivered by a push subscription as the standard
//!   envelope (`{"message": {"attributes", "data": base64, "messageId", ...},
//!   "subscription"}`), or by an Eventarc trigger on that topic as a
//!   CloudEvent of type `google.cloud.pubsub.topic.v1.messagePublished`
//!   whose data is that envelope.
//!
//! The CloudEvents themselves are read by `cloudevents-sdk`; what is Google's
//! is read here. Where a delivery names the bucket, the object or the
//! generation twice (data and attributes, data and subject), both must agree:
//! a delivery that contradicts itself cannot be acted on safely. Int64 fields
//! (`generation`, `size`) come as decimal strings in the JSON API's encoding
//! and as numbers in other producers' (google-cloudevents' test data): both
//! are accepted. Every error says what is wrong, because it becomes the body
//! of a 400 answer that the operator reads in the platform's logs.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use base64::Engine;
use cloudevents::{AttributesReader, Data, Event};
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::ports::bus::Message;

/// The CloudEvent type of a new object (or a new generation of one).
pub const FINALIZED_TYPE: &str = "google.cloud.storage.object.v1.finalized";
/// The prefix of every Cloud Storage object event type.
const STORAGE_TYPE_PREFIX: &str = "google.cloud.storage.object.v1.";
/// The CloudEvent type Eventarc gives a Pub/Sub message.
pub const PUBSUB_PUBLISHED_TYPE: &str = "google.cloud.pubsub.topic.v1.messagePublished";
/// A bucket notification's `eventType` for a new object.
pub const NOTIFICATION_FINALIZE: &str = "OBJECT_FINALIZE";
/// The `payloadFormat` of a notification whose data is the object's metadata.
const PAYLOAD_JSON: &str = "JSON_API_V1";
/// The `payloadFormat` of a notification without data.
const PAYLOAD_NONE: &str = "NONE";
/// A Cloud Storage event's `source`, before the bucket's name.
const STORAGE_SOURCE_PREFIX: &str = "//storage.googleapis.com/projects/_/buckets/";
/// A Cloud Storage event's `subject`, before the object's name.
const SUBJECT_PREFIX: &str = "objects/";
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// The longest bucket name Cloud Storage allows (dotted names).
const MAX_BUCKET_BYTES: usize = 222;
/// How much of a bad value an error repeats.
const SHOWN_CHARS: usize = 120;

/// How an event reached the service: only for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A binary-mode CloudEvent (`ce-*` headers).
    BinaryCloudEvent,
    /// A structured-mode CloudEvent (`application/cloudevents+json`).
    StructuredCloudEvent,
    /// A Pub/Sub push envelope.
    PubSubPush,
}

/// What happened to the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEventKind {
    /// The object (a new generation of it) was written: the only kind nbci acts on.
    Finalized,
    /// Anything else (deleted, archived, metadata updated), by the type its
    /// delivery gave (`google.cloud.storage.object.v1.deleted`, `OBJECT_DELETE`, ...).
    Other(String),
}

/// One Cloud Storage object event, whatever shape it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The bucket's name.
    pub bucket: String,
    /// The object's name: a key of the bucket's layout.
    pub key: String,
    /// The generation the event is about: with bucket and key, it names one
    /// write, which is what makes a redelivery recognizable.
    pub generation: i64,
    /// The object's size in bytes, when the delivery carries its metadata.
    pub size: Option<u64>,
    pub kind: ObjectEventKind,
    /// The delivery's own id (`ce-id`, Pub/Sub's `messageId`), for the logs
    /// only: two routes deliver one write under different ids.
    pub id: Option<String>,
    pub delivery: Delivery,
}

impl ObjectEvent {
    /// The bus message this event stands for: `Some` for a finalize only.
    pub fn message(&self) -> Option<Message> {
        match self.kind {
            ObjectEventKind::Finalized => Some(Message::Finalized {
                key: self.key.clone(),
                generation: self.generation,
            }),
            ObjectEventKind::Other(_) => None,
        }
    }
}

/// Why a delivery is not an object event nbci can read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Occurs when a request carries neither CloudEvent headers, nor a
    /// structured CloudEvent, nor a Pub/Sub push envelope.
    #[error(
        "not an event: expected a CloudEvent (ce-* headers, or Content-Type \
         application/cloudevents+json) or a Pub/Sub push envelope ({{\"message\": ...}})"
    )]
    UnknownShape,
    /// Occurs when CloudEvents arrive batched, which no Google producer does.
    #[error("batched CloudEvents are not accepted: send one event per request")]
    Batch,
    /// Occurs when a CloudEvent breaks the CloudEvents specification (a
    /// required attribute missing, an unknown spec version, a bad time).
    #[error("malformed CloudEvent: {0}")]
    CloudEvent(String),
    /// Occurs when a well-formed CloudEvent is not about a Cloud Storage
    /// object (nor a Pub/Sub message that could carry one). The service
    /// ignores such events rather than refusing them.
    #[error("the CloudEvent type {0:?} is not a Cloud Storage object event")]
    NotAnObjectEvent(String),
    /// Occurs when a part of the delivery is not the JSON (or base64) it should be.
    #[error("{what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// Occurs when something the event needs is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// Occurs when a value cannot be what it names.
    #[error("{field} {value:?} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Occurs when two parts of one delivery name different buckets, objects
    /// or generations.
    #[error("{first} ({first_value:?}) and {second} ({second_value:?}) disagree")]
    Disagree {
        first: &'static str,
        first_value: String,
        second: &'static str,
        second_value: String,
    },
}

/// Reads a Cloud Storage object event from a request's headers and body, in
/// any of the shapes described in the module's documentation.
pub fn parse_object_event(headers: &HeaderMap, body: &[u8]) -> Result<ObjectEvent, EventError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type.starts_with(BATCH_CONTENT_TYPE) {
        return Err(EventError::Batch);
    }
    if content_type.starts_with(STRUCTURED_CONTENT_TYPE) {
        let event: Event = serde_json::from_slice(body)
            .map_err(|error| EventError::CloudEvent(error.to_string()))?;
        return from_cloud_event(&event, None, Delivery::StructuredCloudEvent);
    }
    if headers.contains_key("ce-specversion") {
        return from_binary(headers, body);
    }
    // No CloudEvent markers: a push envelope, or a structured event sent as
    // plain JSON by a producer that did not set the content type.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| EventError::Malformed {
            what: "the body (no ce-* headers, so a Pub/Sub push envelope was expected)",
            reason: error.to_string(),
        })?;
    let Some(fields) = value.as_object() else {
        return Err(EventError::UnknownShape);
    };
    if fields.contains_key("message") {
        let envelope: PushEnvelope = from_json_value(value, "the push envelope")?;
        from_notification(&envelope, Delivery::PubSubPush)
    } else if fields.contains_key("specversion") {
        let event: Event = serde_json::from_value(value)
            .map_err(|error| EventError::CloudEvent(error.to_string()))?;
        from_cloud_event(&event, None, Delivery::StructuredCloudEvent)
    } else {
        Err(EventError::UnknownShape)
    }
}

/// Reads a bus message from a Pub/Sub push envelope whose data is the
/// message's JSON: the durable dispatch hand-off (`POST /dispatch`).
pub fn parse_pushed_message(body: &[u8]) -> Result<Message, EventError> {
    let envelope: PushEnvelope = from_json_slice(body, "the push envelope")?;
    let data = envelope.message.decoded_data()?;
    if data.is_empty() {
        return Err(EventError::Missing("the pushed message's data"));
    }
    from_json_slice(&data, "the pushed message's data (a bus message)")
}

/// The JSON body of a Pub/Sub push request (the default, wrapped format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub message: PushedMessage,
    /// `projects/P/subscriptions/S`: whom Pub/Sub pushed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// A Pub/Sub message as a push request carries it.
///
/// Pub/Sub sends the id and the publish time twice, in camelCase and in
/// snake_case; both spellings are read (an alias would refuse the pair as a
/// duplicate field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedMessage {
    /// The payload, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(
        default,
        rename = "message_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub message_id_snake: Option<String>,
    #[serde(
        default,
        rename = "publishTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub publish_time: Option<String>,
    #[serde(
        default,
        rename = "publish_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub publish_time_snake: Option<String>,
}

impl PushedMessage {
    /// A message carrying `data` (base64-encoded here) and `attributes`.
    pub fn new(data: &[u8], attributes: BTreeMap<String, String>) -> Self {
        Self {
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            attributes,
            ..Self::default()
        }
    }

    /// The message's id, in whichever spelling it came.
    pub fn id(&self) -> Option<&str> {
        self.message_id
            .as_deref()
            .or(self.message_id_snake.as_deref())
    }

    /// The payload, decoded; empty when there is none.
    pub fn decoded_data(&self) -> Result<Vec<u8>, EventError> {
        let Some(data) = self.data.as_deref().filter(|d| !d.is_empty()) else {
            return Ok(Vec::new());
        };
        decode_base64(data).map_err(|reason| EventError::Malformed {
            what: "the message's data (base64)",
            reason,
        })
    }
}

/// Standard base64 as Pub/Sub writes it; padding optional and the URL-safe
/// alphabet tolerated, since a hand-made envelope may use either.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard
        .decode(text.trim())
        .or_else(|error| url_safe.decode(text.trim()).map_err(|_| error.to_string()))
}

/// The fields of the object's metadata (StorageObjectData, the JSON API's
/// object resource) that nbci reads; the rest is ignored.
#[derive(Debug, Deserialize)]
struct ObjectData {
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "int64_field")]
    generation: Option<i64>,
    #[serde(default, deserialize_with = "int64_field")]
    size: Option<u64>,
}

/// An int64 of the JSON API: a number, or a decimal string; null is absent.
fn int64_field<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    struct IntVisitor<T>(PhantomData<T>);

    impl<'de, T> Visitor<'de> for IntVisitor<T>
    where
        T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
    {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer in range, as a number or a decimal string")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            T::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            T::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.strip_prefix('+').unwrap_or(v);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                return Err(E::invalid_value(serde::de::Unexpected::Str(v), &self));
            }
            digits
                .parse()
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(IntVisitor(PhantomData))
}

fn from_json_slice<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, EventError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| EventError::Malformed {
        what,
        reason: error.to_string(),
    })
}

fn from_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &'static str,
) -> Result<T, EventError> {
    serde_path_to_error::deserialize(value).map_err(|error| EventError::Malformed {
        what,
        reason: error.to_string(),
    })
}

/// At most [`SHOWN_CHARS`] of a value that an error repeats.
fn shown(value: &str) -> String {
    let mut shown: String = value.chars().take(SHOWN_CHARS).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    shown
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> EventError {
    EventError::Invalid {
        field,
        value: shown(value),
        reason,
    }
}

/// A binary-mode CloudEvent. `ce-subject` carries the object's name, which
/// may hold characters no header value may (non-ASCII); such a subject is
/// set aside and compared by its bytes, so that the event is still read
/// from its data instead of refused.
fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<ObjectEvent, EventError> {
    let mut readable = headers.clone();
    let mut raw_subject = None;
    if let Some(subject) = headers.get("ce-subject")
        && subject.to_str().is_err()
    {
        raw_subject = Some(String::from_utf8(subject.as_bytes().to_vec()).map_err(|_| {
            invalid(
                "ce-subject",
                &String::from_utf8_lossy(subject.as_bytes()),
                "not UTF-8",
            )
        })?);
        readable.remove("ce-subject");
    }
    let event = cloudevents::binding::http::to_event(&readable, body.to_vec())
        .map_err(|error| EventError::CloudEvent(error.to_string()))?;
    from_cloud_event(&event, raw_subject.as_deref(), Delivery::BinaryCloudEvent)
}

fn from_cloud_event(
    event: &Event,
    raw_subject: Option<&str>,
    delivery: Delivery,
) -> Result<ObjectEvent, EventError> {
    let event_type = event.ty();
    if event_type == PUBSUB_PUBLISHED_TYPE {
        let envelope: PushEnvelope =
            event_data(event, "the CloudEvent's data (a Pub/Sub push envelope)")?;
        return from_notification(&envelope, delivery).map(|mut object| {
            object.id = Some(event.id().to_owned());
            object
        });
    }
    let kind = if event_type == FINALIZED_TYPE {
        ObjectEventKind::Finalized
    } else if event_type.starts_with(STORAGE_TYPE_PREFIX) {
        ObjectEventKind::Other(event_type.to_owned())
    } else {
        return Err(EventError::NotAnObjectEvent(shown(event_type)));
    };
    let object: ObjectData = event_data(event, "the CloudEvent's data (the object's metadata)")?;

    let source = event.source().as_str();
    let source_bucket = source.strip_prefix(STORAGE_SOURCE_PREFIX).ok_or_else(|| {
        invalid(
            "ce-source",
            source,
            "not a Cloud Storage bucket (//storage.googleapis.com/projects/_/buckets/NAME)",
        )
    })?;
    let extension_bucket = event.extension("bucket").map(|value| value.to_string());
    let bucket = agreed(
        "the bucket (data.bucket, or the event's source)",
        &[
            ("data.bucket", object.bucket.as_deref()),
            ("the event's source", Some(source_bucket)),
            (
                "the bucket extension attribute",
                extension_bucket.as_deref(),
            ),
        ],
    )?;

    let subject = match raw_subject.or(event.subject()) {
        Some(subject) => Some(
            subject
                .strip_prefix(SUBJECT_PREFIX)
                .ok_or_else(|| invalid("the event's subject", subject, "not objects/NAME"))?,
        ),
        None => None,
    };
    // A subject that says the same name percent-encoded agrees with it.
    let decoded_subject = subject.map(|subject| match object.name.as_deref() {
        Some(name) if name != subject => percent_encoding::percent_decode_str(subject)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .ok()
            .filter(|decoded| decoded == name)
            .unwrap_or_else(|| subject.to_owned()),
        _ => subject.to_owned(),
    });
    let key = agreed(
        "the object's name (data.name, or the event's subject)",
        &[
            ("data.name", object.name.as_deref()),
            ("the event's subject", decoded_subject.as_deref()),
        ],
    )?;

    let generation = object.generation.ok_or(EventError::Missing(
        "the object's generation (data.generation)",
    ))?;
    finish(
        bucket,
        key,
        generation,
        object.size,
        kind,
        Some(event.id().to_owned()),
        delivery,
    )
}

/// The CloudEvent's data as `T`, however the SDK holds it.
fn event_data<T: DeserializeOwned>(event: &Event, what: &'static str) -> Result<T, EventError> {
    match event.data() {
        None => Err(EventError::Missing(what)),
        Some(Data::Json(value)) => from_json_value(value.clone(), what),
        Some(Data::Binary(bytes)) => from_json_slice(bytes, what),
        Some(Data::String(text)) => from_json_slice(text.as_bytes(), what),
    }
}

/// A bucket notification, from the attributes and data of a Pub/Sub message.
fn from_notification(
    envelope: &PushEnvelope,
    delivery: Delivery,
) -> Result<ObjectEvent, EventError> {
    let message = &envelope.message;
    let attribute = |name: &str| message.attributes.get(name).map(String::as_str);
    let event_type = attribute("eventType").ok_or(EventError::Missing(
        "the eventType attribute (so this is not a Cloud Storage notification)",
    ))?;
    let kind = if event_type == NOTIFICATION_FINALIZE {
        ObjectEventKind::Finalized
    } else {
        ObjectEventKind::Other(shown(event_type))
    };
    let object = match attribute("payloadFormat") {
        Some(PAYLOAD_NONE) => None,
        Some(PAYLOAD_JSON) | None => {
            let data = message.decoded_data()?;
            if data.is_empty() {
                None
            } else {
                Some(from_json_slice::<ObjectData>(
                    &data,
                    "the message's data (the object's metadata)",
                )?)
            }
        }
        Some(other) => {
            return Err(invalid(
                "the payloadFormat attribute",
                other,
                "neither JSON_API_V1 nor NONE",
            ));
        }
    };
    let object = object.unwrap_or(ObjectData {
        bucket: None,
        name: None,
        generation: None,
        size: None,
    });
    let bucket = agreed(
        "the bucket (the bucketId attribute)",
        &[
            ("the bucketId attribute", attribute("bucketId")),
            ("data.bucket", object.bucket.as_deref()),
        ],
    )?;
    let key = agreed(
        "the object's name (the objectId attribute)",
        &[
            ("the objectId attribute", attribute("objectId")),
            ("data.name", object.name.as_deref()),
        ],
    )?;
    let attribute_generation = attribute("objectGeneration")
        .map(|text| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| invalid("the objectGeneration attribute", text, "not an integer"))
        })
        .transpose()?;
    let generation = match (attribute_generation, object.generation) {
        (Some(first), Some(second)) if first != second => {
            return Err(EventError::Disagree {
                first: "the objectGeneration attribute",
                first_value: first.to_string(),
                second: "data.generation",
                second_value: second.to_string(),
            });
        }
        (Some(generation), _) | (None, Some(generation)) => generation,
        (None, None) => {
            return Err(EventError::Missing(
                "the object's generation (the objectGeneration attribute)",
            ));
        }
    };
    finish(
        bucket,
        key,
        generation,
        object.size,
        kind,
        message.id().map(str::to_owned),
        delivery,
    )
}

/// The one value that every place naming it gives; the first is preferred
/// for the error when none does.
fn agreed(
    what: &'static str,
    places: &[(&'static str, Option<&str>)],
) -> Result<String, EventError> {
    let mut found: Option<(&'static str, &str)> = None;
    for &(place, value) in places {
        let Some(value) = value else { continue };
        match found {
            None => found = Some((place, value)),
            Some((first, first_value)) if first_value != value => {
                return Err(EventError::Disagree {
                    first,
                    first_value: shown(first_value),
                    second: place,
                    second_value: shown(value),
                });
            }
            Some(_) => {}
        }
    }
    found
        .map(|(_, value)| value.to_owned())
        .ok_or(EventError::Missing(what))
}

/// Checks what every shape must give and builds the event.
fn finish(
    bucket: String,
    key: String,
    generation: i64,
    size: Option<u64>,
    kind: ObjectEventKind,
    id: Option<String>,
    delivery: Delivery,
) -> Result<ObjectEvent, EventError> {
    if !valid_bucket_name(&bucket) {
        return Err(invalid(
            "the bucket name",
            &bucket,
            "not a Cloud Storage bucket name (3 to 222 of a-z 0-9 . _ -)",
        ));
    }
    if key.is_empty() {
        return Err(EventError::Missing("the object's name"));
    }
    if generation <= 0 {
        return Err(invalid(
            "the generation",
            &generation.to_string(),
            "not a positive integer",
        ));
    }
    Ok(ObjectEvent {
        bucket,
        key,
        generation,
        size,
        kind,
        id,
        delivery,
    })
}

/// Cloud Storage's naming rules, loosely: the name becomes a segment of a
/// marker's key, so it must not be able to steer that key anywhere else.
fn valid_bucket_name(name: &str) -> bool {
    (3..=MAX_BUCKET_BYTES).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
#[path = "../../../../tests/fixtures/google/deliveries.rs"]
mod deliveries;

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::deliveries::{self, Shape};
    use super::*;

    const RESULT: &str = "ci/o/r/0123456789abcdef0123456789abcdef01234567/nb.ipynb/result.json";

    fn parse(delivery: &deliveries::Delivery) -> Result<ObjectEvent, EventError> {
        parse_object_event(&delivery.header_map(), &delivery.body)
    }

    #[test]
    fn every_shape_of_a_finalize_reads_the_same() {
        for fixture in [deliveries::SIMPLE, deliveries::COMPLEX] {
            for generation in [
                serde_json::json!("1637874272256630"),
                serde_json::json!(1637874272256630_i64),
            ] {
                let object = deliveries::object(fixture, "nbci-bucket", RESULT, generation);
                for shape in Shape::ALL {
                    let delivery = deliveries::finalized(shape, &object);
                    let event =
                        parse(&delivery).unwrap_or_else(|error| panic!("{shape:?}: {error}"));
                    assert_eq!(event.bucket, "nbci-bucket", "{shape:?}");
                    assert_eq!(event.key, RESULT, "{shape:?}");
                    assert_eq!(event.generation, 1637874272256630, "{shape:?}");
                    assert_eq!(event.kind, ObjectEventKind::Finalized, "{shape:?}");
                    assert_eq!(
                        event.message(),
                        Some(Message::Finalized {
                            key: RESULT.into(),
                            generation: 1637874272256630
                        })
                    );
                    assert!(event.id.is_some(), "{shape:?}");
                }
            }
        }
    }

    #[test]
    fn the_fixtures_as_google_sent_them_parse() {
        // Unchanged test data: sizes 0 (number) and "13" (string).
        let complex = deliveries::unchanged(deliveries::COMPLEX);
        let simple = deliveries::unchanged(deliveries::SIMPLE);
        for shape in Shape::ALL {
            let event = parse(&deliveries::finalized(shape, &complex)).expect("complex");
            assert_eq!(
                (
                    event.bucket.as_str(),
                    event.key.as_str(),
                    event.generation,
                    event.size
                ),
                ("sample-bucket", "MyFile", 96883251, Some(0))
            );
            let event = parse(&deliveries::finalized(shape, &simple)).expect("simple");
            assert_eq!(
                (
                    event.bucket.as_str(),
                    event.key.as_str(),
                    event.generation,
                    event.size
                ),
                ("my-bucket", "my-file.txt", 1637874272256630, Some(13))
            );
        }
    }

    #[test]
    fn other_event_types_are_read_as_other() {
        let object = deliveries::object(deliveries::SIMPLE, "b-1", RESULT, serde_json::json!("5"));
        for (shape, event_type) in [
            (Shape::Binary, "google.cloud.storage.object.v1.deleted"),
            (
                Shape::Structured,
                "google.cloud.storage.object.v1.metadataUpdated",
            ),
            (Shape::Push, "OBJECT_DELETE"),
            (Shape::PubSubCloudEvent, "OBJECT_ARCHIVE"),
        ] {
            let event = parse(&deliveries::with_type(shape, &object, event_type)).expect("parses");
            assert_eq!(event.kind, ObjectEventKind::Other(event_type.into()));
            assert_eq!(event.message(), None);
        }
        let foreign = deliveries::with_type(Shape::Binary, &object, "com.example.thing.happened");
        assert!(matches!(
            parse(&foreign),
            Err(EventError::NotAnObjectEvent(_))
        ));
    }

    #[test]
    fn contradictions_are_refused_by_name() {
        let object = deliveries::object(deliveries::SIMPLE, "b-1", RESULT, serde_json::json!("5"));
        let mut delivery = deliveries::finalized(Shape::Binary, &object);
        delivery.set_header("ce-subject", "objects/ci/other/result.json");
        let error = parse(&delivery).expect_err("disagrees").to_string();
        assert!(
            error.contains("data.name") && error.contains("subject"),
            "{error}"
        );

        let mut delivery = deliveries::finalized(Shape::Binary, &object);
        delivery.set_header(
            "ce-source",
            "//storage.googleapis.com/projects/_/buckets/b-2",
        );
        let error = parse(&delivery).expect_err("disagrees").to_string();
        assert!(error.contains("data.bucket"), "{error}");

        let mut delivery = deliveries::finalized(Shape::Push, &object);
        delivery.set_attribute("objectGeneration", "6");
        let error = parse(&delivery).expect_err("disagrees").to_string();
        assert!(error.contains("objectGeneration"), "{error}");

        let mut delivery = deliveries::finalized(Shape::Push, &object);
        delivery.set_attribute("objectId", "ci/x/result.json");
        let error = parse(&delivery).expect_err("disagrees").to_string();
        assert!(error.contains("objectId"), "{error}");
    }

    #[test]
    fn a_subject_may_be_percent_encoded_or_raw_utf8() {
        let name = "ci/o/r/s/notebooks/données 1.ipynb/result.json";
        let object = deliveries::object(deliveries::SIMPLE, "b-1", name, serde_json::json!(9));
        let mut delivery = deliveries::finalized(Shape::Binary, &object);
        delivery.set_header(
            "ce-subject",
            "objects/ci/o/r/s/notebooks/donn%C3%A9es%201.ipynb/result.json",
        );
        assert_eq!(parse(&delivery).expect("encoded").key, name);
        // Raw UTF-8 in a header value: read from the data, checked by bytes.
        let delivery = deliveries::finalized(Shape::Binary, &object);
        assert_eq!(parse(&delivery).expect("raw").key, name);
    }

    #[test]
    fn bad_values_are_named() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!("abc"), "generation"),
            (serde_json::json!("12.5"), "generation"),
            (serde_json::json!(1.5), "generation"),
            (serde_json::json!(-3), "generation"),
            (serde_json::json!(0), "generation"),
            (serde_json::json!("99999999999999999999"), "generation"),
            (serde_json::json!(true), "generation"),
            (serde_json::json!(null), "generation"),
        ];
        for (generation, needle) in cases {
            let object = deliveries::object(deliveries::SIMPLE, "b-1", RESULT, generation.clone());
            for shape in [Shape::Binary, Shape::Structured] {
                let error = parse(&deliveries::finalized(shape, &object))
                    .expect_err(&format!("{generation} refused"))
                    .to_string();
                assert!(error.contains(needle), "{shape:?} {generation}: {error}");
            }
        }
        let mut object =
            deliveries::object(deliveries::SIMPLE, "b-1", RESULT, serde_json::json!(4));
        object["size"] = serde_json::json!("-1");
        let error = parse(&deliveries::finalized(Shape::Structured, &object)).expect_err("size");
        assert!(error.to_string().contains("size"), "{error}");
        let object = deliveries::object(
            deliveries::SIMPLE,
            "Bad/Bucket",
            RESULT,
            serde_json::json!(4),
        );
        let error = parse(&deliveries::finalized(Shape::Push, &object)).expect_err("bucket");
        assert!(error.to_string().contains("bucket"), "{error}");
    }

    #[test]
    fn notifications_without_data_read_their_attributes() {
        let object = deliveries::object(deliveries::SIMPLE, "b-1", RESULT, serde_json::json!("77"));
        let mut delivery = deliveries::finalized(Shape::Push, &object);
        delivery.set_attribute("payloadFormat", "NONE");
        delivery.set_data(b"");
        let event = parse(&delivery).expect("attributes suffice");
        assert_eq!((event.key.as_str(), event.generation), (RESULT, 77));
        delivery.remove_attribute("objectGeneration");
        assert!(matches!(parse(&delivery), Err(EventError::Missing(_))));
        delivery.remove_attribute("eventType");
        let error = parse(&delivery)
            .expect_err("not a notification")
            .to_string();
        assert!(error.contains("eventType"), "{error}");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let empty = HeaderMap::new();
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"message\": 5}",
            b"\xff\xfe",
            b"{\"specversion\": \"1.0\"}",
        ] {
            let error = parse_object_event(&empty, body).expect_err("garbage");
            assert!(!error.to_string().is_empty());
        }
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("0.1"));
        assert!(matches!(
            parse_object_event(&headers, b"{}"),
            Err(EventError::CloudEvent(_))
        ));
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        let error = parse_object_event(&headers, b"{}")
            .expect_err("no id")
            .to_string();
        assert!(error.contains("CloudEvent"), "{error}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents-batch+json"),
        );
        assert!(matches!(
            parse_object_event(&headers, b"[]"),
            Err(EventError::Batch)
        ));
    }

    #[test]
    fn the_dispatch_hand_off_reads_a_bus_message() {
        let message = Message::Finalized {
            key: RESULT.into(),
            generation: 3,
        };
        let body = deliveries::pushed(&serde_json::to_vec(&message).expect("json"));
        assert_eq!(parse_pushed_message(&body).expect("message"), message);
        for bad in [
            deliveries::pushed(b"{\"type\": \"unknown\"}"),
            deliveries::pushed(b""),
            b"{\"message\": {\"data\": \"!!!\"}}".to_vec(),
            b"{}".to_vec(),
        ] {
            let error = parse_pushed_message(&bad).expect_err("refused").to_string();
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn the_upstream_push_fixture_reads_both_spellings() {
        let envelope: PushEnvelope =
            serde_json::from_str(deliveries::PUSH).expect("the fixture parses");
        assert_eq!(envelope.message.id(), Some("message-id"));
        assert_eq!(
            envelope.message.decoded_data().expect("base64"),
            vec![1, 2, 3, 4]
        );
    }
}
