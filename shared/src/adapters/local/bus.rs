//! The local event bus: an in-process queue that loses nothing.
//!
//! A published message is first written to the bucket (`queue/{topic}/{id}.json`),
//! then handed to a worker task; it is deleted once its handler succeeded. A
//! transient failure delivers it again after a backoff, and a process that
//! dies leaves the message in the bucket, where [`LocalBus::replay`] finds it
//! at the next start: the at-least-once delivery Pub/Sub gives in the cloud.
//! Finalize events of the directory bucket are only [`LocalBus::announce`]d
//! (not written): what they would complete is found again by the sweep.
//!
//! A webhook delivery ([`EventBus::publish_once`]) costs one write before the
//! answer, its claim; the dedupe marker (`deliveries/{id}`) is written once
//! the handler is done, before the claim is let go. So at every moment one
//! of the two exists for an accepted delivery, and a repeat finds it: the
//! claim while it waits or runs, the marker after. A claim whose marker
//! exists was handled by a process that died before letting it go;
//! [`LocalBus::replay`] drops it. The claim is
//! - with the directory bucket ([`LocalBus::journaled`]): one line appended
//!   to the bucket's [`ClaimJournal`], pending claims held in memory (a
//!   repeat is looked up there, then by its marker). While more than
//!   [`MAX_QUEUED_IN_MEMORY`] messages wait, a new claim waits in the
//!   journal alone and is read back when the queue has room: a backlog
//!   (GitHub slow or down for an hour) costs a few dozen bytes of memory
//!   per delivery, not its message;
//! - with another bucket: a create-only queue object
//!   (`queue/{topic}/claim-dispatch-{id}.json`), the marker looked up before
//!   and after it is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::journal::{ClaimJournal, Hold, Reservation};
use crate::domain::layout;
use crate::ports::bus::{
    BusError, EventBus, HandlerError, Message, MessageHandler, PublishOnceError, Published,
};
use crate::ports::store::{ObjectStore, Precondition, StoreError, create_once};
use crate::util::retry::Backoff;

/// The topic durable messages are kept under.
const TOPIC: &str = "local";

/// The name prefix of queue objects that are also a delivery's claim.
const CLAIM: &str = "claim-";

/// How many messages are handled at once. The rest wait in the channel, a few
/// hundred bytes each (they are in the bucket too): a burst of webhooks while
/// GitHub is slow must not become a burst of handlers, each holding its
/// state in memory while it waits.
pub const MAX_HANDLED_AT_ONCE: usize = 64;

/// How many messages may wait in memory; past it, journaled claims wait in
/// the journal alone (see the module's text).
pub const MAX_QUEUED_IN_MEMORY: usize = 1024;

/// A message on its way, with how often it failed and where it is kept.
#[derive(Debug)]
struct Envelope {
    message: Message,
    /// The queue object, for durable messages.
    key: Option<String>,
    /// The dedupe marker to write once the message is handled (messages
    /// published once).
    marker: Option<String>,
    /// Whether the message is a claim in the bus's journal.
    journaled: bool,
    failures: u32,
}

/// The dedupe marker of a message published once: a dispatch's delivery.
fn marker_of(message: &Message) -> Option<String> {
    match message {
        Message::Dispatch(trigger) => layout::delivery_key(&trigger.delivery).ok(),
        Message::Finalized { .. } => None,
    }
}

/// The queue object of a message published once.
fn claim_key(message: &Message) -> String {
    layout::queue_key(TOPIC, &format!("{CLAIM}{}", message.id()))
}

fn is_claim(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(CLAIM))
}

/// The publishing side (cheap to clone).
#[derive(Debug, Clone)]
pub struct LocalBus {
    store: Arc<dyn ObjectStore>,
    /// Where deliveries are claimed, with the directory bucket.
    journal: Option<Arc<ClaimJournal>>,
    sender: mpsc::UnboundedSender<Envelope>,
    /// How many messages are in the channel.
    queued: Arc<AtomicUsize>,
    /// Tells the worker that claims were parked in the journal.
    parked: Arc<Notify>,
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
        Self::build(store, None, backoff)
    }

    /// A bus whose durable messages live in `store` (a directory bucket) and
    /// whose deliveries are claimed in `journal`, kept in the same directory.
    pub fn journaled(
        store: Arc<dyn ObjectStore>,
        journal: ClaimJournal,
        backoff: Backoff,
    ) -> (Self, LocalBusWorker) {
        Self::build(store, Some(Arc::new(journal)), backoff)
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        journal: Option<Arc<ClaimJournal>>,
        backoff: Backoff,
    ) -> (Self, LocalBusWorker) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let bus = Self {
            store,
            journal,
            sender,
            queued: Arc::new(AtomicUsize::new(0)),
            parked: Arc::new(Notify::new()),
        };
        let worker = LocalBusWorker {
            bus: bus.clone(),
            receiver,
            backoff,
        };
        (bus, worker)
    }

    /// Puts `envelope` in the worker's channel; `false` when the bus is closed.
    fn enqueue(&self, envelope: Envelope) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(envelope).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Puts up to the room left in the channel of the journal's parked
    /// claims in it; says whether any are left.
    fn unpark(&self, journal: &ClaimJournal) -> bool {
        let room = MAX_QUEUED_IN_MEMORY.saturating_sub(self.queued.load(Ordering::Relaxed));
        for message in journal.take_parked(room.max(1)) {
            let marked = marker_of(&message);
            self.enqueue(Envelope {
                message,
                key: None,
                marker: marked,
                journaled: true,
                failures: 0,
            });
        }
        journal.parked() > 0
    }

    /// Hands `message` to the worker without writing it (finalize events).
    pub fn announce(&self, message: Message) {
        self.enqueue(Envelope {
            message,
            key: None,
            marker: None,
            journaled: false,
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
                    let marker = if is_claim(&key) {
                        marker_of(&message)
                    } else {
                        None
                    };
                    if let Some(marker) = &marker {
                        let handled = self
                            .store
                            .generation(marker)
                            .await
                            .map_err(|error| BusError::Unavailable(error.to_string()))?;
                        if handled.is_some() {
                            // Handled by a process that died before deleting it.
                            let _ = self.store.delete(&key).await;
                            continue;
                        }
                    }
                    replayed += 1;
                    self.enqueue(Envelope {
                        message,
                        key: Some(key),
                        marker,
                        journaled: false,
                        failures: 0,
                    });
                }
                Err(error) => {
                    tracing::error!(%key, %error, "dropping an unreadable queued message");
                    let _ = self.store.delete(&key).await;
                }
            }
        }
        if let Some(journal) = &self.journal {
            replayed += self.replay_journal(journal).await;
        }
        Ok(replayed)
    }

    /// Delivers again the claims of the journal's earlier segments whose
    /// marker is not written; the others are done.
    async fn replay_journal(&self, journal: &ClaimJournal) -> usize {
        let mut replayed = 0;
        for message in journal.recovered() {
            let marker = marker_of(&message);
            if let Some(marker) = &marker {
                match self.store.generation(marker).await {
                    Ok(Some(_)) => {
                        journal.done(&message);
                        continue;
                    }
                    Ok(None) => {}
                    // Delivered again: handling is idempotent.
                    Err(error) => {
                        tracing::warn!(%marker, %error, "cannot tell whether a claim was handled; delivering it again")
                    }
                }
            }
            replayed += 1;
            self.enqueue(Envelope {
                message,
                key: None,
                marker,
                journaled: true,
                failures: 0,
            });
        }
        replayed
    }

    /// [`EventBus::publish_once`] with the journal: reserve the id, look the
    /// marker up, append the claim.
    async fn publish_journaled(
        &self,
        journal: &ClaimJournal,
        marker: &str,
        message: &Message,
    ) -> Result<Published, PublishOnceError> {
        // Pending (or being claimed by a concurrent repeat).
        if journal.reserve(message) == Reservation::Held {
            return Ok(Published::Duplicate);
        }
        // Handled before. The marker is written before a handled claim
        // stops being pending, so a reservation that succeeded finds it.
        match self.store.generation(marker).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                journal.release(message);
                return Ok(Published::Duplicate);
            }
            Err(error) => {
                journal.release(message);
                return Err(error.into());
            }
        }
        let room = self.queued.load(Ordering::Relaxed) < MAX_QUEUED_IN_MEMORY;
        let hold = journal
            .append(message, room)
            .map_err(|error| StoreError::Unavailable(format!("the claim journal: {error}")))?;
        if hold == Hold::Journal {
            self.parked.notify_one();
            return Ok(Published::Accepted);
        }
        let sent = self.enqueue(Envelope {
            message: message.clone(),
            key: None,
            marker: Some(marker.to_owned()),
            journaled: true,
            failures: 0,
        });
        if !sent {
            // Shutting down: the claim is in the journal, and the next
            // start delivers it.
            tracing::warn!(message = %message.id(), "the bus is closed; the claim waits for the next start");
        }
        Ok(Published::Accepted)
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
        let sent = self.enqueue(Envelope {
            message: message.clone(),
            key: Some(key),
            marker: None,
            journaled: false,
            failures: 0,
        });
        if sent {
            Ok(())
        } else {
            Err(BusError::Unavailable("the bus is closed".into()))
        }
    }

    /// One create-only write before the answer (see the module's text)
    /// when `marker` is the message's own marker in this bus's bucket; else
    /// the port's way (marker, then message).
    async fn publish_once(
        &self,
        store: &dyn ObjectStore,
        marker: &str,
        message: &Message,
    ) -> Result<Published, PublishOnceError> {
        let same_bucket =
            std::ptr::addr_eq(store as *const dyn ObjectStore, Arc::as_ptr(&self.store));
        if !same_bucket || marker_of(message).as_deref() != Some(marker) {
            return crate::ports::bus::publish_once_apart(self, store, marker, message).await;
        }
        if let Some(journal) = &self.journal {
            return self.publish_journaled(journal, marker, message).await;
        }
        // Handled before: the marker is final (a repeat costs one look-up).
        if self.store.generation(marker).await?.is_some() {
            return Ok(Published::Duplicate);
        }
        let key = claim_key(message);
        let bytes = serde_json::to_vec(message)
            .map_err(|error| BusError::Unavailable(format!("cannot encode: {error}")))?;
        match self
            .store
            .put(&key, bytes, "application/json", Precondition::DoesNotExist)
            .await
        {
            Ok(_) => {}
            // Waiting or being handled.
            Err(StoreError::PreconditionFailed(_)) => return Ok(Published::Duplicate),
            Err(error) => return Err(error.into()),
        }
        // Handled (and its claim deleted) since the first look-up?
        let handled = match self.store.generation(marker).await {
            Ok(handled) => handled.is_some(),
            Err(error) => {
                let _ = self.store.delete(&key).await;
                return Err(error.into());
            }
        };
        if handled {
            let _ = self.store.delete(&key).await;
            return Ok(Published::Duplicate);
        }
        let sent = self.enqueue(Envelope {
            message: message.clone(),
            key: Some(key.clone()),
            marker: Some(marker.to_owned()),
            journaled: false,
            failures: 0,
        });
        if !sent {
            let _ = self.store.delete(&key).await;
            return Err(BusError::Unavailable("the bus is closed".into()).into());
        }
        Ok(Published::Accepted)
    }
}

impl LocalBusWorker {
    /// Delivers messages to `handler` until every sender is gone, each in its
    /// own task of `tracker` (so one slow or panicking handler holds up no
    /// other), at most [`MAX_HANDLED_AT_ONCE`] at a time.
    pub async fn run(mut self, handler: Arc<dyn MessageHandler>, tracker: TaskTracker) {
        let slots = Arc::new(Semaphore::new(MAX_HANDLED_AT_ONCE));
        loop {
            // A slot first: the messages beyond the bound stay in the channel.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let envelope = loop {
                tokio::select! {
                    // Parked claims are read back only when the channel is empty.
                    biased;
                    envelope = self.receiver.recv() => break envelope,
                    () = self.bus.parked.notified() => {
                        if let Some(journal) = &self.bus.journal
                            && self.bus.unpark(journal)
                        {
                            // More parked: back here when the channel drains.
                            self.bus.parked.notify_one();
                        }
                    }
                }
            };
            let Some(envelope) = envelope else {
                return;
            };
            self.bus.queued.fetch_sub(1, Ordering::Relaxed);
            let handler = handler.clone();
            let bus = self.bus.clone();
            let backoff = self.backoff;
            tracker.spawn(deliver(bus, handler, envelope, backoff, slot));
        }
    }
}

async fn deliver(
    bus: LocalBus,
    handler: Arc<dyn MessageHandler>,
    mut envelope: Envelope,
    backoff: Backoff,
    slot: OwnedSemaphorePermit,
) {
    let outcome = tokio::spawn({
        let handler = handler.clone();
        let message = envelope.message.clone();
        async move { handler.handle(&message).await }
    })
    .await;
    // Waiting to deliver again takes no slot.
    drop(slot);
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
        bus.enqueue(envelope);
        return;
    }
    if let Some(marker) = &envelope.marker
        && let Err(error) = create_once(bus.store.as_ref(), marker).await
    {
        // The queue object stays the delivery's claim; the next start
        // delivers it again (handling is idempotent).
        tracing::warn!(%marker, %error, "cannot mark a handled delivery; it will be delivered again");
        return;
    }
    if envelope.journaled
        && let Some(journal) = &bus.journal
    {
        journal.done(&envelope.message);
    }
    if let Some(key) = &envelope.key
        && let Err(error) = bus.store.delete(key).await
    {
        tracing::warn!(%key, %error, "cannot remove a handled message; it will be delivered again");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::adapters::local::store::LocalDirStore;
    use crate::testing::dispatch;

    /// Records what it handles; waits on `gate` first when one is set.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<Message>>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    #[async_trait]
    impl MessageHandler for Recorder {
        async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
            if let Some(gate) = &self.gate {
                let _ = gate.acquire().await;
            }
            self.seen.lock().expect("lock").push(message.clone());
            Ok(())
        }
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(10), Duration::from_millis(50))
    }

    async fn settled(store: &dyn ObjectStore, marker: &str) {
        for _ in 0..500 {
            if store
                .generation(marker)
                .await
                .expect("generation")
                .is_some()
                && store
                    .list(&layout::queue_prefix(TOPIC))
                    .await
                    .expect("list")
                    .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the message was never handled and marked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_is_published_once_waiting_running_and_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let recorder = Arc::new(Recorder {
            seen: Mutex::default(),
            gate: Some(gate.clone()),
        });
        let (bus, worker) = LocalBus::new(store.clone(), backoff());
        let tracker = TaskTracker::new();
        tokio::spawn(worker.run(recorder.clone(), tracker.clone()));
        let message = dispatch("d-1");
        let marker = layout::delivery_key("d-1").expect("key");
        let once = || bus.publish_once(store.as_ref(), &marker, &message);
        assert_eq!(once().await.expect("first"), Published::Accepted);
        // One object before the answer: the claim, which is the queued message.
        assert_eq!(
            store.list("").await.expect("list"),
            vec![claim_key(&message)]
        );
        assert_eq!(once().await.expect("while running"), Published::Duplicate);
        gate.add_permits(10);
        settled(store.as_ref(), &marker).await;
        assert_eq!(once().await.expect("after"), Published::Duplicate);
        assert_eq!(
            store
                .list(&layout::queue_prefix(TOPIC))
                .await
                .expect("list"),
            Vec::<String>::new()
        );
        assert_eq!(
            recorder.seen.lock().expect("lock").as_slice(),
            std::slice::from_ref(&message)
        );
    }

    /// Waits until `journal` holds no pending claim.
    async fn drained(journal: &ClaimJournal) {
        for _ in 0..500 {
            if journal.pending() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} claims still pending", journal.pending());
    }

    fn journaled(
        store: &Arc<dyn ObjectStore>,
        dir: &std::path::Path,
    ) -> (LocalBus, LocalBusWorker, Arc<ClaimJournal>) {
        let journal = ClaimJournal::open(dir.join("journal")).expect("journal");
        let (bus, worker) = LocalBus::journaled(store.clone(), journal, backoff());
        let journal = bus.journal.clone().expect("journaled");
        (bus, worker, journal)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journaled_delivery_is_published_once_waiting_running_and_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalDirStore::new(dir.path().join("bucket")).expect("store"));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let recorder = Arc::new(Recorder {
            seen: Mutex::default(),
            gate: Some(gate.clone()),
        });
        let (bus, worker, journal) = journaled(&store, dir.path());
        tokio::spawn(worker.run(recorder.clone(), TaskTracker::new()));
        let message = dispatch("d-1");
        let marker = layout::delivery_key("d-1").expect("key");
        let once = || bus.publish_once(store.as_ref(), &marker, &message);
        assert_eq!(once().await.expect("first"), Published::Accepted);
        // Before the answer: one line in the journal, no object.
        assert_eq!(store.list("").await.expect("list"), Vec::<String>::new());
        assert_eq!(journal.pending(), 1);
        assert_eq!(once().await.expect("while running"), Published::Duplicate);
        gate.add_permits(10);
        settled(store.as_ref(), &marker).await;
        drained(&journal).await;
        assert_eq!(once().await.expect("after"), Published::Duplicate);
        assert_eq!(journal.pending(), 0, "a repeat found handled holds nothing");
        assert_eq!(
            recorder.seen.lock().expect("lock").as_slice(),
            std::slice::from_ref(&message)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_delivers_journaled_claims_not_yet_marked_and_drops_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalDirStore::new(dir.path().join("bucket")).expect("store"));
        let (pending, handled) = (dispatch("d-pending"), dispatch("d-handled"));
        {
            // A process that claims both and dies before handling either;
            // `d-handled` was handled and marked, its claim not let go.
            let (bus, _worker, _) = journaled(&store, dir.path());
            for (message, id) in [(&pending, "d-pending"), (&handled, "d-handled")] {
                let marker = layout::delivery_key(id).expect("key");
                assert_eq!(
                    bus.publish_once(store.as_ref(), &marker, message)
                        .await
                        .expect("publish"),
                    Published::Accepted
                );
            }
            create_once(
                store.as_ref(),
                &layout::delivery_key("d-handled").expect("key"),
            )
            .await
            .expect("marker");
        }
        let recorder = Arc::new(Recorder::default());
        let (bus, worker, journal) = journaled(&store, dir.path());
        // Until replayed, both are held: a redelivery is a duplicate.
        let marker = layout::delivery_key("d-pending").expect("key");
        assert_eq!(
            bus.publish_once(store.as_ref(), &marker, &pending)
                .await
                .expect("repeat"),
            Published::Duplicate
        );
        tokio::spawn(worker.run(recorder.clone(), TaskTracker::new()));
        assert_eq!(bus.replay().await.expect("replay"), 1);
        settled(store.as_ref(), &marker).await;
        drained(&journal).await;
        assert_eq!(
            recorder.seen.lock().expect("lock").as_slice(),
            std::slice::from_ref(&pending)
        );
        // Only the new process's (empty) segment is left.
        assert_eq!(journal.segments().expect("segments").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_past_the_memory_bound_waits_in_the_journal_and_is_all_handled_once() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalDirStore::new(dir.path().join("bucket")).expect("store"));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let crowd = Crowd::behind(&gate);
        let (bus, worker, journal) = journaled(&store, dir.path());
        tokio::spawn(worker.run(crowd.clone(), TaskTracker::new()));
        let backlog = MAX_HANDLED_AT_ONCE + MAX_QUEUED_IN_MEMORY + 700;
        for n in 0..backlog {
            let id = format!("d-{n}");
            let marker = layout::delivery_key(&id).expect("key");
            assert_eq!(
                bus.publish_once(store.as_ref(), &marker, &dispatch(&id))
                    .await
                    .expect("publish"),
                Published::Accepted
            );
        }
        // What memory cannot hold waits in the journal, still a claim.
        assert!(journal.parked() >= 600, "{} parked", journal.parked());
        assert!(bus.queued.load(SeqCst) <= MAX_QUEUED_IN_MEMORY);
        let parked_id = format!("d-{}", backlog - 1);
        assert_eq!(
            bus.publish_once(
                store.as_ref(),
                &layout::delivery_key(&parked_id).expect("key"),
                &dispatch(&parked_id)
            )
            .await
            .expect("repeat"),
            Published::Duplicate
        );
        gate.add_permits(backlog * 2);
        for _ in 0..2000 {
            if crowd.handled.load(SeqCst) == backlog && journal.pending() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(crowd.handled.load(SeqCst), backlog, "each handled once");
        assert_eq!(journal.pending(), 0);
        assert_eq!(journal.parked(), 0);
        assert!(crowd.most.load(SeqCst) <= MAX_HANDLED_AT_ONCE);
    }

    /// Counts the handlers running at once; each waits for `gate`.
    #[derive(Debug)]
    struct Crowd {
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        handled: std::sync::atomic::AtomicUsize,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Crowd {
        fn behind(gate: &Arc<tokio::sync::Semaphore>) -> Arc<Self> {
            Arc::new(Self {
                running: 0.into(),
                most: 0.into(),
                handled: 0.into(),
                gate: gate.clone(),
            })
        }
    }

    #[async_trait]
    impl MessageHandler for Crowd {
        async fn handle(&self, _message: &Message) -> Result<(), HandlerError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            let _pass = self.gate.acquire().await.expect("gate");
            self.running.fetch_sub(1, SeqCst);
            self.handled.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_handled_a_bounded_number_at_a_time_and_all_of_it() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let crowd = Crowd::behind(&gate);
        let (bus, worker) = LocalBus::new(store.clone(), backoff());
        tokio::spawn(worker.run(crowd.clone(), TaskTracker::new()));
        let burst = MAX_HANDLED_AT_ONCE * 3;
        for n in 0..burst {
            let message = dispatch(&format!("d-{n}"));
            let marker = layout::delivery_key(&format!("d-{n}")).expect("key");
            assert_eq!(
                bus.publish_once(store.as_ref(), &marker, &message)
                    .await
                    .expect("publish"),
                Published::Accepted
            );
        }
        for _ in 0..500 {
            if crowd.running.load(SeqCst) == MAX_HANDLED_AT_ONCE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Held there while the handlers wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(crowd.running.load(SeqCst), MAX_HANDLED_AT_ONCE);
        gate.add_permits(burst);
        for _ in 0..1000 {
            if crowd.handled.load(SeqCst) == burst {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(crowd.handled.load(SeqCst), burst);
        assert_eq!(crowd.most.load(SeqCst), MAX_HANDLED_AT_ONCE);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_delivers_claims_not_yet_marked_and_drops_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
        // What a killed process left: two claims, one of them handled and
        // marked before the kill, and a message of the older kind.
        let (pending, handled, older) = (
            dispatch("d-pending"),
            dispatch("d-handled"),
            dispatch("d-older"),
        );
        for message in [&pending, &handled] {
            let bytes = serde_json::to_vec(message).expect("json");
            store
                .put(
                    &claim_key(message),
                    bytes,
                    "application/json",
                    Precondition::DoesNotExist,
                )
                .await
                .expect("claim");
        }
        create_once(
            store.as_ref(),
            &layout::delivery_key("d-handled").expect("key"),
        )
        .await
        .expect("marker");
        store
            .put(
                &layout::queue_key(TOPIC, &older.id()),
                serde_json::to_vec(&older).expect("json"),
                "application/json",
                Precondition::None,
            )
            .await
            .expect("older");
        let recorder = Arc::new(Recorder::default());
        let (bus, worker) = LocalBus::new(store.clone(), backoff());
        let tracker = TaskTracker::new();
        tokio::spawn(worker.run(recorder.clone(), tracker.clone()));
        assert_eq!(bus.replay().await.expect("replay"), 2);
        settled(
            store.as_ref(),
            &layout::delivery_key("d-pending").expect("key"),
        )
        .await;
        let mut seen = recorder.seen.lock().expect("lock").clone();
        seen.sort_by_key(Message::id);
        assert_eq!(seen, vec![older, pending]);
    }
}
