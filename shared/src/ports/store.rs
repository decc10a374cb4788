//! The ObjectStore port: one bucket of objects with generation preconditions.
//!
//! Every state change in nbci is a conditional write, because every event may
//! arrive twice or out of order: `DoesNotExist` creates a key once (delivery
//! ids, check states), `Generation(g)` updates only what was read. GCS gives
//! these semantics natively (`ifGenerationMatch`); the directory bucket gives
//! them on a file system. Generations never repeat for a key, even across a
//! delete, so a stale read can never win a later write.

use std::path::Path;

use async_trait::async_trait;

use crate::domain::layout::InvalidKey;

/// A write condition, as GCS's `ifGenerationMatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// Write only if the object does not exist yet (`ifGenerationMatch=0`).
    DoesNotExist,
    /// Write only if the object is at this generation.
    Generation(i64),
}

/// An object read back with its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub generation: i64,
}

/// An object's bytes as they come, chunk by chunk.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, StoreError>> + Send>>;

/// An object being read: what is known up front, and its bytes as a stream,
/// so that serving a 200 MB executed notebook holds one chunk in memory,
/// not the notebook.
pub struct ObjectReader {
    pub generation: i64,
    /// Its size in bytes, when the store says (for `Content-Length`).
    pub size: Option<u64>,
    pub chunks: ByteStream,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("generation", &self.generation)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Occurs when a precondition does not hold (someone else wrote first): not retried.
    #[error("precondition failed for {0}")]
    PreconditionFailed(String),
    /// Occurs when a key cannot name an object.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    /// Occurs when the storage cannot be reached or written: transient.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Occurs when the storage refuses a request that trying again will not
    /// fix (permission denied, no such bucket): not retried, so a
    /// misconfiguration surfaces instead of looking like an outage.
    #[error("storage refused the request: {0}")]
    Rejected(String),
    /// Occurs when a local file to upload or download to cannot be used.
    #[error("local file {path}: {reason}")]
    LocalFile { path: String, reason: String },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// One bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The object at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;
    /// The generation of the object at `key`, or `None`, without reading it.
    async fn generation(&self, key: &str) -> Result<Option<i64>, StoreError>;
    /// Writes `bytes` at `key` if `precondition` holds; returns the new generation.
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError>;
    /// Writes the file at `path` to `key`, streaming it (source tarballs can
    /// be hundreds of megabytes); returns the new generation.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError>;
    /// Starts reading the object at `key` as a stream of chunks; `None` when
    /// there is no such object. Stores that can stream override this; the
    /// default reads the object whole, for small test stores.
    async fn read(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        Ok(self.get(key).await?.map(|object| ObjectReader {
            generation: object.generation,
            size: u64::try_from(object.bytes.len()).ok(),
            chunks: Box::pin(futures_util::stream::once(std::future::ready(Ok(
                bytes::Bytes::from(object.bytes),
            )))),
        }))
    }
    /// Streams the object at `key` into a new file at `path`; false when
    /// there is no such object.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<bool, StoreError>;
    /// Deletes the object at `key`; deleting what is not there succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Where a person or a job finds the object (`file://...`, `gs://...`).
    fn uri(&self, key: &str) -> String;
}

/// Creates an empty object at `key` once: true for the first caller, false
/// for every later one. Its existence is the marker.
pub async fn create_once(store: &dyn ObjectStore, key: &str) -> Result<bool, StoreError> {
    match store
        .put(key, Vec::new(), "text/plain", Precondition::DoesNotExist)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::PreconditionFailed(_)) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Reads a JSON object with its generation; `None` when absent.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<(T, i64)>, JsonObjectError> {
    let Some(object) = store.get(key).await? else {
        return Ok(None);
    };
    let value =
        serde_json::from_slice(&object.bytes).map_err(|error| JsonObjectError::Corrupt {
            key: key.to_owned(),
            reason: error.to_string(),
        })?;
    Ok(Some((value, object.generation)))
}

/// Writes a JSON object under `precondition`; returns the new generation.
pub async fn put_json<T: serde::Serialize>(
    store: &dyn ObjectStore,
    key: &str,
    value: &T,
    precondition: Precondition,
) -> Result<i64, JsonObjectError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|error| JsonObjectError::Corrupt {
        key: key.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(store
        .put(key, bytes, "application/json", precondition)
        .await?)
}

/// What the change given to [`update_json`] decides about the object it was shown.
#[derive(Debug)]
pub enum Change<T, R> {
    /// Write this value (creating the object if there was none), then answer `R`.
    Write(T, R),
    /// Write nothing; answer `R`.
    Keep(R),
    /// Read the object again (another writer is expected to settle it).
    ReadAgain,
}

/// Reads the JSON object at `key` (`None` when absent), lets `change` decide
/// what becomes of it, and writes that under the generation it read (or
/// `DoesNotExist`): a read-modify-write. When another writer came first, it
/// reads again and asks `change` again, `attempts` times at the most, then
/// fails with [`JsonObjectError::KeepsChanging`].
pub async fn update_json<T, R>(
    store: &dyn ObjectStore,
    key: &str,
    attempts: usize,
    mut change: impl FnMut(Option<T>) -> Change<T, R>,
) -> Result<R, JsonObjectError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    for _ in 0..attempts {
        let (current, precondition) = match get_json::<T>(store, key).await? {
            Some((value, generation)) => (Some(value), Precondition::Generation(generation)),
            None => (None, Precondition::DoesNotExist),
        };
        let (next, answer) = match change(current) {
            Change::Write(next, answer) => (next, answer),
            Change::Keep(answer) => return Ok(answer),
            Change::ReadAgain => continue,
        };
        match put_json(store, key, &next, precondition).await {
            Ok(_) => return Ok(answer),
            Err(JsonObjectError::Store(StoreError::PreconditionFailed(_))) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(JsonObjectError::KeepsChanging {
        key: key.to_owned(),
    })
}

/// Why a JSON object could not be read or written: the bucket's part of
/// every flow's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonObjectError {
    #[error("bucket: {0}")]
    Store(#[from] StoreError),
    /// Occurs when an object is not the JSON nbci wrote there.
    #[error("{key} is not what nbci wrote: {reason}")]
    Corrupt { key: String, reason: String },
    /// Occurs when [`update_json`] found another writer's newer write on
    /// every attempt: transient, as the storage being unavailable.
    #[error("bucket: storage unavailable: {key} keeps changing")]
    KeepsChanging { key: String },
}

impl JsonObjectError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Corrupt { .. } => false,
            Self::KeepsChanging { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{FaultyStore, MemoryStore, StoreFaults};

    #[tokio::test]
    async fn an_update_creates_changes_or_keeps() {
        let store = MemoryStore::default();
        let bump = |n: Option<u32>| match n {
            Some(n) if n >= 2 => Change::Keep(Some(n)),
            n => Change::Write(n.unwrap_or(0) + 1, n),
        };
        assert_eq!(
            update_json(&store, "n.json", 3, bump)
                .await
                .expect("updated"),
            None
        );
        assert_eq!(
            update_json(&store, "n.json", 3, bump)
                .await
                .expect("updated"),
            Some(1)
        );
        assert_eq!(
            update_json(&store, "n.json", 3, bump)
                .await
                .expect("updated"),
            Some(2)
        );
        let (n, _) = get_json::<u32>(&store, "n.json")
            .await
            .expect("read")
            .expect("written");
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn an_update_that_lost_its_answer_reads_again_and_sees_its_write() {
        // Call 0 reads, call 1 writes (its answer lost), call 2 reads again.
        let store = FaultyStore {
            inner: Arc::new(MemoryStore::default()),
            faults: Arc::new(StoreFaults {
                lose_answer_at: [1].into(),
                ..StoreFaults::default()
            }),
        };
        let mut seen = Vec::new();
        let answer = update_json(&store, "n.json", 3, |n: Option<u32>| {
            seen.push(n);
            match n {
                None => Change::Write(1, "wrote"),
                Some(_) => Change::Keep("found"),
            }
        })
        .await
        .expect("updated");
        assert_eq!(answer, "found");
        assert_eq!(seen, [None, Some(1)]);
    }

    #[test]
    fn bucket_errors_read_as_the_flows_report_them() {
        let down = JsonObjectError::from(StoreError::Unavailable("down".into()));
        assert_eq!(down.to_string(), "bucket: storage unavailable: down");
        assert!(down.is_transient());
        let busy = JsonObjectError::KeepsChanging { key: "k".into() };
        assert_eq!(
            busy.to_string(),
            "bucket: storage unavailable: k keeps changing"
        );
        assert!(busy.is_transient());
    }

    #[tokio::test]
    async fn an_update_gives_up_after_its_attempts() {
        let store = MemoryStore::default();
        let mut asked = 0;
        let result = update_json(&store, "n.json", 3, |_: Option<u32>| {
            asked += 1;
            Change::<u32, ()>::ReadAgain
        })
        .await;
        assert!(matches!(result, Err(JsonObjectError::KeepsChanging { key }) if key == "n.json"));
        assert_eq!(asked, 3);
    }
}
