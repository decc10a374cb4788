//! The EventBus port: work handed past a webhook's answer, and finalize
//! events of the bucket, delivered at least once to a [`MessageHandler`].
//!
//! In the cloud, dispatches go to Pub/Sub (`NBCI_DISPATCH_TOPIC`) and come
//! back as push requests to `/dispatch`, and finalize events come from GCS
//! notifications to `gcs-events`; on one machine, the local bus keeps each
//! message in the bucket until its handler succeeded, so a crash loses none.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::trigger::Trigger;
use crate::ports::store::{ObjectStore, StoreError, create_once};

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Check the notebooks a delivery asks for.
    Dispatch(Trigger),
    /// An object was written (finalized) in the bucket.
    Finalized { key: String, generation: i64 },
}

impl Message {
    /// A stable id for deduplication and the local queue's object name.
    pub fn id(&self) -> String {
        match self {
            Message::Dispatch(trigger) => format!("dispatch-{}", trigger.delivery),
            Message::Finalized { key, generation } => {
                format!(
                    "finalized-{generation}-{}",
                    crate::domain::layout::flat_id(key)
                )
            }
        }
    }
}

/// Why a message could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Occurs when the bus cannot take the message now: retry (or answer 503).
    #[error("cannot publish: {0}")]
    Unavailable(String),
}

/// What [`EventBus::publish_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The message is durably accepted, for the first time.
    Accepted,
    /// Its marker says it was accepted before: nothing was published.
    Duplicate,
}

/// Why [`EventBus::publish_once`] failed; nothing was accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishOnceError {
    /// Occurs when the marker cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Occurs when the bus cannot take the message now.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Somewhere to hand work to.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Returns once the message is durably accepted.
    async fn publish(&self, message: &Message) -> Result<(), BusError>;

    /// Publishes `message` unless `marker` (a key of `store`) says it was
    /// published before: the dedupe of webhook deliveries. Returns once the
    /// message is durably accepted (or found a duplicate); on an error
    /// nothing is accepted and nothing marked, so a retry can succeed.
    ///
    /// This default creates the marker (create-only), then publishes, and
    /// deletes the marker again when publishing fails. A bus that keeps its
    /// messages in the same bucket may do both in one write.
    async fn publish_once(
        &self,
        store: &dyn ObjectStore,
        marker: &str,
        message: &Message,
    ) -> Result<Published, PublishOnceError> {
        publish_once_apart(self, store, marker, message).await
    }
}

/// [`EventBus::publish_once`] with the marker apart from the message: the
/// marker is created (create-only), then the message published; the marker
/// is deleted again when publishing fails.
pub async fn publish_once_apart<B: EventBus + ?Sized>(
    bus: &B,
    store: &dyn ObjectStore,
    marker: &str,
    message: &Message,
) -> Result<Published, PublishOnceError> {
    if !create_once(store, marker).await? {
        return Ok(Published::Duplicate);
    }
    if let Err(error) = bus.publish(message).await {
        // Give the marker back, so that a redelivery is accepted.
        if let Err(release) = store.delete(marker).await {
            tracing::error!(%marker, error = %release, "cannot release a marker");
        }
        return Err(error.into());
    }
    Ok(Published::Accepted)
}

/// Why handling a message failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Occurs when the work may succeed later: the message is delivered again.
    #[error("{0}")]
    Transient(String),
    /// Occurs when the message can never be handled: it is dropped (and logged).
    #[error("{0}")]
    Permanent(String),
}

/// What a bus delivers messages to.
#[async_trait]
pub trait MessageHandler: Send + Sync + std::fmt::Debug {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError>;
}
