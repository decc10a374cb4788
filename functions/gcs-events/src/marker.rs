//! The dedupe marker of one finalize event: `events/{bucket}/{generation}-...`
//! (see `nbci_shared::domain::layout::event_marker_key`).
//!
//! The marker is a claim first and a record after. The first delivery
//! creates it (create-only, so of two concurrent deliveries exactly one
//! wins) as `claimed`, handles the event, then marks it `done`; a delivery
//! that finds it `done` is a duplicate. A claim is not forever: a process
//! that dies while handling (an instance stopped, out of memory) leaves its
//! claim behind, and after [`CLAIM_LEASE`] a redelivery takes it over
//! (a generation-conditional overwrite, so again only one does). Until then
//! redeliveries are told to come back later (503), because the event may
//! still be in hand. Taking over is safe because the flows behind the
//! handler are idempotent (every transition is a conditional write); the
//! marker spares them the repeated work and keeps two deliveries of one
//! event from running side by side.

use std::time::{Duration, SystemTime};

use nbci_shared::ports::store::{ObjectStore, Precondition, StoreError};
use nbci_shared::util::time::{format_rfc3339, parse_rfc3339};
use serde::{Deserialize, Serialize};

/// How long a claim holds: Pub/Sub's longest acknowledgement deadline, past
/// which the platform has given up on the delivery that claimed it anyway.
pub const CLAIM_LEASE: Duration = Duration::from_secs(600);

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Marker {
    /// A delivery is handling the event since `at` (RFC 3339).
    Claimed { at: String },
    /// The event was handled (or can never be) at `at`.
    Done { at: String },
}

impl Marker {
    fn bytes(&self) -> Vec<u8> {
        // A two-field enum of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What trying to claim an event found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery holds the claim, at this generation of the marker.
    Won(i64),
    /// The event was handled already.
    Done,
    /// Another delivery holds a live claim, taken at this time (RFC 3339).
    Busy { since: String },
}

/// Claims the event whose marker is `key` at time `now`.
pub async fn claim(
    store: &dyn ObjectStore,
    key: &str,
    now: SystemTime,
) -> Result<Claim, StoreError> {
    let claimed = Marker::Claimed {
        at: format_rfc3339(now),
    };
    // Twice at most: a claim released between our create and our read
    // leaves room for one more create.
    for _ in 0..2 {
        match store
            .put(
                key,
                claimed.bytes(),
                "application/json",
                Precondition::DoesNotExist,
            )
            .await
        {
            Ok(generation) => return Ok(Claim::Won(generation)),
            Err(StoreError::PreconditionFailed(_)) => {}
            Err(other) => return Err(other),
        }
        let Some(existing) = store.get(key).await? else {
            continue;
        };
        let since = match serde_json::from_slice::<Marker>(&existing.bytes) {
            Ok(Marker::Claimed { at }) => at,
            // `done`, or anything nbci did not write (an empty object from
            // another writer): the event is not ours to handle again.
            Ok(Marker::Done { .. }) | Err(_) => return Ok(Claim::Done),
        };
        let live = parse_rfc3339(&since).is_some_and(|at| {
            now.duration_since(at)
                .map(|age| age < CLAIM_LEASE)
                // A claim from the future (clocks disagree): live until the lease passes it.
                .unwrap_or(true)
        });
        if live {
            return Ok(Claim::Busy { since });
        }
        tracing::warn!(%key, %since, "taking over an expired claim");
        return match store
            .put(
                key,
                claimed.bytes(),
                "application/json",
                Precondition::Generation(existing.generation),
            )
            .await
        {
            Ok(generation) => Ok(Claim::Won(generation)),
            // Another redelivery took it over first.
            Err(StoreError::PreconditionFailed(_)) => Ok(Claim::Busy {
                since: format_rfc3339(now),
            }),
            Err(other) => Err(other),
        };
    }
    Ok(Claim::Busy {
        since: format_rfc3339(now),
    })
}

/// Records the event claimed at `generation` as handled. A failure here is
/// only logged: the claim then expires and a redelivery handles the event
/// again, which the idempotent flows absorb.
pub async fn mark_done(store: &dyn ObjectStore, key: &str, generation: i64) {
    let done = Marker::Done {
        at: format_rfc3339(SystemTime::now()),
    };
    if let Err(error) = store
        .put(
            key,
            done.bytes(),
            "application/json",
            Precondition::Generation(generation),
        )
        .await
    {
        tracing::warn!(%key, %error, "cannot mark the event done; its claim will expire");
    }
}

/// Gives the claim back, so that the platform's redelivery handles the
/// event. A failure is logged: the claim then expires after its lease.
pub async fn release(store: &dyn ObjectStore, key: &str) {
    if let Err(error) = store.delete(key).await {
        tracing::error!(%key, %error, "cannot release the event's claim; redeliveries wait for its lease");
    }
}

/// Writes a claim taken at `at`, as a delivery that died would have left it.
#[cfg(test)]
pub(crate) async fn leave_claim(
    store: &dyn ObjectStore,
    key: &str,
    at: SystemTime,
) -> Result<i64, StoreError> {
    let claimed = Marker::Claimed {
        at: format_rfc3339(at),
    };
    store
        .put(
            key,
            claimed.bytes(),
            "application/json",
            Precondition::DoesNotExist,
        )
        .await
}

#[cfg(test)]
mod tests {
    use nbci_shared::adapters::local::store::LocalDirStore;

    use super::*;

    #[tokio::test]
    async fn one_claim_then_done_then_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        let now = SystemTime::now();
        let Claim::Won(generation) = claim(&store, "events/b/1-x", now).await.expect("claim")
        else {
            panic!("the first claim wins");
        };
        assert!(matches!(
            claim(&store, "events/b/1-x", now).await.expect("claim"),
            Claim::Busy { .. }
        ));
        mark_done(&store, "events/b/1-x", generation).await;
        assert_eq!(
            claim(&store, "events/b/1-x", now).await.expect("claim"),
            Claim::Done
        );
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over_and_a_released_one_retaken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        let now = SystemTime::now();
        leave_claim(
            &store,
            "events/b/2-x",
            now - CLAIM_LEASE - Duration::from_secs(1),
        )
        .await
        .expect("stale claim");
        assert!(matches!(
            claim(&store, "events/b/2-x", now).await.expect("claim"),
            Claim::Won(_)
        ));
        release(&store, "events/b/2-x").await;
        assert!(matches!(
            claim(&store, "events/b/2-x", now).await.expect("claim"),
            Claim::Won(_)
        ));
    }

    #[tokio::test]
    async fn a_foreign_marker_counts_as_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        nbci_shared::ports::store::create_once(&store, "events/b/3-x")
            .await
            .expect("marker");
        assert_eq!(
            claim(&store, "events/b/3-x", SystemTime::now())
                .await
                .expect("claim"),
            Claim::Done
        );
    }
}
