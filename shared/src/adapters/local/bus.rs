//! The local event bus: an in-process queue that loses nothing.
//!
//! A published message is first written to the bucket (`queue/{topic}/{id}.json`),
//! then handed to a worker task; it is deleted once its handler succeeded. A
//! transient failure delivers it again after a backoff, and a process that
//! dies leaves the message in the bucket, where [`LocalBus::replay`] finds it
//! at the next start: the at-least-once delivery Pub/Sub gives in the cloud.
//! Finalize events of the directory bucket are only [`LocalBus::announce`]d
//! (not written): what they would complete is found again by the sweep.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::domain::layout;
use crate::ports::bus::{BusError, EventBus, HandlerError, Message, MessageHandler};
use crate::ports::store::{ObjectStore, Precondition};
use crate::util::retry::Backoff;

/// The topic durable messages are kept under.
const TOPIC: &str = "local";

/// A message on its way, with how often it failed and where it is kept.
#[derive(Debug)]
struct Envelope {
    message: Message,
    /// The queue object, for durable messages.
    key: Option<String>,
    failures: u32,
}

/// The publishing side (cheap to clone).
#[derive(Debug, Clone)]
pub struct LocalBus {
    store: Arc<dyn ObjectStore>,
    sender: mpsc::UnboundedSender<Envelope>,
}

/// The receiving side: run it with [`LocalBusWorker::run`].
#[derive(Debug)]
pub struct LocalBusWorker {
    bus: LocalBus,
    receiver: mpsc::UnboundedReceiver<Envelope>,
    backoff: Backoff,
}

impl LocalBus {
    /// A bus whose durable messages live in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, backoff: Backoff) -> (Self, LocalBusWorker) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let bus = Self { store, sender };
        let worker = LocalBusWorker {
            bus: bus.clone(),
            receiver,
            backoff,
        };
        (bus, worker)
    }

    /// Hands `message` to the worker without writing it (finalize events).
    pub fn announce(&self, message: Message) {
        let _ = self.sender.send(Envelope {
            message,
            key: None,
            failures: 0,
        });
    }

    /// Delivers again every message a previous process left in the bucket.
    pub async fn replay(&self) -> Result<usize, BusError> {
        let keys = self
            .store
            .list(&layout::queue_prefix(TOPIC))
            .await
            .map_err(|error| BusError::Unavailable(error.to_string()))?;
        let mut replayed = 0;
        for key in keys {
            let object = match self.store.get(&key).await {
                Ok(Some(object)) => object,
                Ok(None) => continue,
                Err(error) => return Err(BusError::Unavailable(error.to_string())),
            };
            match serde_json::from_slice::<Message>(&object.bytes) {
                Ok(message) => {
                    replayed += 1;
                    let _ = self.sender.send(Envelope {
                        message,
                        key: Some(key),
                        failures: 0,
                    });
                }
                Err(error) => {
                    tracing::error!(%key, %error, "dropping an unreadable queued message");
                    let _ = self.store.delete(&key).await;
                }
            }
        }
        Ok(replayed)
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        let key = layout::queue_key(TOPIC, &message.id());
        let bytes = serde_json::to_vec(message)
            .map_err(|error| BusError::Unavailable(format!("cannot encode: {error}")))?;
        self.store
            .put(&key, bytes, "application/json", Precondition::None)
            .await
            .map_err(|error| BusError::Unavailable(error.to_string()))?;
        self.sender
            .send(Envelope {
                message: message.clone(),
                key: Some(key),
                failures: 0,
            })
            .map_err(|_| BusError::Unavailable("the bus is closed".into()))
    }
}

impl LocalBusWorker {
    /// Delivers messages to `handler` until every sender is gone, each in its
    /// own task of `tracker` (so one slow or panicking handler holds up no other).
    pub async fn run(mut self, handler: Arc<dyn MessageHandler>, tracker: TaskTracker) {
        while let Some(envelope) = self.receiver.recv().await {
            let handler = handler.clone();
            let bus = self.bus.clone();
            let backoff = self.backoff;
            tracker.spawn(deliver(bus, handler, envelope, backoff));
        }
    }
}

async fn deliver(
    bus: LocalBus,
    handler: Arc<dyn MessageHandler>,
    mut envelope: Envelope,
    backoff: Backoff,
) {
    let outcome = tokio::spawn({
        let handler = handler.clone();
        let message = envelope.message.clone();
        async move { handler.handle(&message).await }
    })
    .await;
    let retry = match outcome {
        Ok(Ok(())) => false,
        Ok(Err(HandlerError::Permanent(reason))) => {
            tracing::error!(message = %envelope.message.id(), %reason, "dropping a message that cannot be handled");
            false
        }
        Ok(Err(HandlerError::Transient(reason))) => {
            tracing::warn!(message = %envelope.message.id(), %reason, "handling failed; delivering again later");
            true
        }
        Err(panic) => {
            tracing::error!(message = %envelope.message.id(), error = %panic, "the handler panicked; delivering again later");
            true
        }
    };
    if retry {
        envelope.failures = envelope.failures.saturating_add(1);
        let wait: Duration = backoff.delay(envelope.failures);
        tokio::time::sleep(wait).await;
        let _ = bus.sender.send(envelope);
    } else if let Some(key) = &envelope.key
        && let Err(error) = bus.store.delete(key).await
    {
        tracing::warn!(%key, %error, "cannot remove a handled message; it will be delivered again");
    }
}
