//! The ObjectStore port: one bucket of objects with generation preconditions.
//!
//! Every state change in nbci is a conditional write, because every event may
//! arrive twice or out of order: `DoesNotExist` claims a key once (delivery
//! ids, run keys), `Generation(g)` updates only what was read. GCS gives these
//! semantics natively (`ifGenerationMatch`); [`LocalDirStore`] gives them on a
//! directory for `nbci serve` and tests.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

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

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Occurs when a precondition does not hold (someone else wrote first): not retried.
    #[error("precondition failed for {0}")]
    PreconditionFailed(String),
    /// Occurs when a key is empty, absolute or climbs out with `..`.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// Occurs when the storage cannot be reached or written: transient.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// One bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The object at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;
    /// Writes `bytes` at `key` if `precondition` holds; returns the new generation.
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Where a person or a job finds the object (`file://...`, `gs://...`).
    fn uri(&self, key: &str) -> String;
}

/// Claims `key` once: true for the first caller, false for every later one.
/// The marker is an empty object: its existence is the claim (and a store can
/// create an empty object in one atomic step).
pub async fn claim_once(store: &dyn ObjectStore, key: &str) -> Result<bool, StoreError> {
    match store
        .put(key, Vec::new(), "text/plain", Precondition::DoesNotExist)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::PreconditionFailed(_)) => Ok(false),
        Err(other) => Err(other),
    }
}

/// What a released claim holds: the work it guarded failed and may be tried again.
const RELEASED: &[u8] = b"released";

/// Claims `key` for work that must happen once, unless an earlier claim was
/// [`release`]d (its work failed): true for the caller that should do the work.
/// Two racing callers cannot both win: every write is conditional.
pub async fn claim(store: &dyn ObjectStore, key: &str) -> Result<bool, StoreError> {
    if claim_once(store, key).await? {
        return Ok(true);
    }
    match store.get(key).await? {
        Some(existing) if existing.bytes == RELEASED => match store
            .put(
                key,
                Vec::new(),
                "text/plain",
                Precondition::Generation(existing.generation),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::PreconditionFailed(_)) => Ok(false),
            Err(other) => Err(other),
        },
        _ => Ok(false),
    }
}

/// Gives a claim back after its work failed, so that a redelivery can claim it again.
pub async fn release(store: &dyn ObjectStore, key: &str) -> Result<(), StoreError> {
    store
        .put(key, RELEASED.to_vec(), "text/plain", Precondition::None)
        .await
        .map(|_| ())
}

/// Checks that a key is a relative path without `..`, empty segments or NULs.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(StoreError::InvalidKey(key.into()));
    }
    Ok(())
}

/// A bucket as a directory: objects under `root/objects/`, their generations
/// under `root/generations/`. One process owns it; a mutex makes each
/// conditional write atomic. Writes are atomic renames without a flush to
/// disk: a crash may lose the last writes (a marker lost means at most one
/// more run of the same work), never leave half an object.
#[derive(Debug)]
pub struct LocalDirStore {
    root: PathBuf,
    write_lock: tokio::sync::Mutex<()>,
}

impl LocalDirStore {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("objects"))?;
        std::fs::create_dir_all(root.join("generations"))?;
        Ok(Self {
            root: std::path::absolute(&root).unwrap_or(root),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The file holding the object at `key` (which must be valid).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join("objects").join(key))
    }

    fn generation_path(&self, key: &str) -> PathBuf {
        self.root.join("generations").join(key)
    }

    /// Creates the object only if absent, without the write lock: the content
    /// goes to a temporary file that is then hard-linked into place, which the
    /// file system refuses atomically when the name exists. A new object is at
    /// generation 1, which is what a missing generation file reads as.
    fn create_new(&self, key: &str, path: &Path, bytes: &[u8]) -> Result<i64, StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        if bytes.is_empty() {
            // An empty object (a claim marker) is whole as soon as it exists:
            // one exclusive create, the cheapest conditional write there is.
            return match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => Ok(1),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StoreError::PreconditionFailed(key.into()))
                }
                Err(error) => Err(unavailable(error)),
            };
        }
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(unavailable)?;
        std::io::Write::write_all(&mut file, bytes).map_err(unavailable)?;
        match std::fs::hard_link(file.path(), path) {
            Ok(()) => Ok(1),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::PreconditionFailed(key.into()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    fn read_generation(&self, key: &str) -> i64 {
        std::fs::read_to_string(self.generation_path(key))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1)
    }
}

fn unavailable(error: std::io::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Object {
                bytes,
                generation: self.read_generation(key),
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) if path.is_dir() => {
                let _ = error;
                Ok(None)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        _content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        let path = self.path_of(key)?;
        if precondition == Precondition::DoesNotExist {
            return self.create_new(key, &path, &bytes);
        }
        let _guard = self.write_lock.lock().await;
        let exists = path.is_file();
        let current = exists.then(|| self.read_generation(key));
        let holds = match precondition {
            Precondition::None => true,
            Precondition::DoesNotExist => !exists,
            Precondition::Generation(expected) => current == Some(expected),
        };
        if !holds {
            return Err(StoreError::PreconditionFailed(key.into()));
        }
        let generation = current.map_or(1, |g| g + 1);
        let generation_path = self.generation_path(key);
        for file in [&path, &generation_path] {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(unavailable)?;
            }
        }
        crate::outcome::write_atomically_with(&path, &bytes, false).map_err(unavailable)?;
        crate::outcome::write_atomically_with(
            &generation_path,
            generation.to_string().as_bytes(),
            false,
        )
        .map_err(unavailable)?;
        Ok(generation)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let objects = self.root.join("objects");
        let mut keys = Vec::new();
        collect_keys(&objects, &objects, &mut keys).map_err(unavailable)?;
        keys.retain(|key| key.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    fn uri(&self, key: &str) -> String {
        crate::engine::file_uri(&self.root.join("objects").join(key))
    }
}

fn collect_keys(root: &Path, dir: &Path, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_keys(root, &path, keys)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Temporary files of an atomic write in progress are not objects.
            if name.starts_with(".tmp") {
                continue;
            }
            let key: Vec<String> = relative
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            keys.push(key.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_writes_behave_like_gcs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        let g1 = store
            .put(
                "a/b.json",
                b"1".to_vec(),
                "application/json",
                Precondition::DoesNotExist,
            )
            .await
            .expect("first write");
        assert!(matches!(
            store
                .put(
                    "a/b.json",
                    b"2".to_vec(),
                    "application/json",
                    Precondition::DoesNotExist
                )
                .await,
            Err(StoreError::PreconditionFailed(_))
        ));
        let g2 = store
            .put(
                "a/b.json",
                b"2".to_vec(),
                "application/json",
                Precondition::Generation(g1),
            )
            .await
            .expect("matching generation");
        assert!(g2 > g1);
        assert!(
            store
                .put(
                    "a/b.json",
                    b"3".to_vec(),
                    "application/json",
                    Precondition::Generation(g1)
                )
                .await
                .is_err(),
            "a stale generation must not overwrite"
        );
        let object = store.get("a/b.json").await.expect("get").expect("exists");
        assert_eq!(object.bytes, b"2");
        assert_eq!(object.generation, g2);
        assert_eq!(store.get("a/none").await.expect("get"), None);
        assert_eq!(store.list("a/").await.expect("list"), vec!["a/b.json"]);
    }

    #[tokio::test]
    async fn claims_succeed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        assert!(claim_once(&store, "deliveries/1").await.expect("claim"));
        assert!(!claim_once(&store, "deliveries/1").await.expect("claim"));
    }

    #[tokio::test]
    async fn released_claims_can_be_claimed_again_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        assert!(claim(&store, "k").await.expect("claim"));
        assert!(!claim(&store, "k").await.expect("claim"));
        release(&store, "k").await.expect("release");
        assert!(claim(&store, "k").await.expect("claim"));
        assert!(!claim(&store, "k").await.expect("claim"));
    }

    #[test]
    fn keys_cannot_escape_the_bucket() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key("ci/o/r/sha/nb/x.ipynb/result.json").is_ok());
    }
}
