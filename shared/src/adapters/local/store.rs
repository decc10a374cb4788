//! The directory bucket: the ObjectStore port on a local file system, with
//! the same conditional-write semantics as GCS.
//!
//! Objects are plain files under `root/objects/{key}` (so a `file://` URI in a
//! result opens the executed notebook directly). An object's generation is
//! its file's modification time in nanoseconds, set before the file is
//! renamed into place: content and generation change in one atomic rename,
//! so a reader can never pair new bytes with an old generation. A
//! generation is never reused for a key (each write takes the later of now
//! and the previous generation plus one). Create-only writes hard-link a
//! finished temporary file into place, which the file system refuses
//! atomically when the name exists; every other write happens under an
//! exclusive `flock` on `root/.lock`, so conditional writes are atomic
//! across threads and processes. Writes are not flushed to disk: a power cut
//! may lose the last writes, never leave half an object.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::domain::layout::validate_key;
use crate::ports::store::{Object, ObjectReader, ObjectStore, Precondition, StoreError};
use futures_util::StreamExt as _;

/// Bytes read from disk per chunk of a streamed object.
const STREAM_CHUNK: usize = 64 * 1024;

/// Called after each object is written: (key, generation). The directory
/// bucket's stand-in for GCS's finalize notifications.
pub type FinalizeListener = Arc<dyn Fn(&str, i64) + Send + Sync>;

/// A bucket as a directory.
pub struct LocalDirStore {
    root: PathBuf,
    objects: PathBuf,
    on_finalize: Option<FinalizeListener>,
    /// Held for the store's life by [`LocalDirStore::own`]: one server per directory.
    _owner: Option<File>,
}

impl std::fmt::Debug for LocalDirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDirStore")
            .field("root", &self.root)
            .field("notifies", &self.on_finalize.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a directory cannot be a bucket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Occurs when the directory cannot be created or written.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// Occurs when the file system keeps modification times too coarsely to
    /// serve as generations.
    #[error("{path}: the file system does not keep nanosecond modification times")]
    CoarseTimes { path: PathBuf },
    /// Occurs when another process serves from the same directory.
    #[error("{path} is in use by another nbci process")]
    InUse { path: PathBuf },
}

impl LocalDirStore {
    /// Opens (creating) the bucket at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let root = crate::util::uri::absolute(&root.into());
        let objects = root.join("objects");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |error: io::Error| OpenError::Io {
                path,
                reason: error.to_string(),
            }
        };
        std::fs::create_dir_all(&objects).map_err(io_error(&objects))?;
        // Generations are modification times: make sure they survive.
        let probe = root.join(".generation-probe");
        let file = File::create(&probe).map_err(io_error(&probe))?;
        let wanted = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        file.set_modified(wanted).map_err(io_error(&probe))?;
        let kept = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io_error(&probe))?;
        drop(file);
        let _ = std::fs::remove_file(&probe);
        if kept != wanted {
            return Err(OpenError::CoarseTimes { path: root });
        }
        Ok(Self {
            root,
            objects,
            on_finalize: None,
            _owner: None,
        })
    }

    /// Takes the directory for this process alone (a server's data
    /// directory): a second `nbci serve` on it is refused, and this process
    /// may treat leases left by an earlier one as void.
    pub fn own(mut self) -> Result<Self, OpenError> {
        let path = self.root.join(".owner");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| OpenError::Io {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => {
                self._owner = Some(file);
                Ok(self)
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse { path: self.root }),
            Err(std::fs::TryLockError::Error(error)) => Err(OpenError::Io {
                path,
                reason: error.to_string(),
            }),
        }
    }

    /// Calls `listener` after every write, as GCS notifies finalize events.
    pub fn with_finalize_listener(mut self, listener: FinalizeListener) -> Self {
        self.on_finalize = Some(listener);
        self
    }

    /// The bucket's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the local bus keeps its claim journal: in the bucket's
    /// directory, beside (not among) its objects.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// The file holding the object at `key` (which must be valid).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.objects.join(key))
    }

    /// Opens the object's file for reading, with its generation; `None` when absent.
    pub fn open(&self, key: &str) -> Result<Option<(File, i64)>, StoreError> {
        let path = self.path_of(key)?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(error) => return Err(unavailable(error)),
        };
        let meta = file.metadata().map_err(unavailable)?;
        if !meta.is_file() {
            return Ok(None);
        }
        let generation = generation_of(&meta).map_err(unavailable)?;
        Ok(Some((file, generation)))
    }

    fn lock(&self) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".lock"))
            .map_err(unavailable)?;
        file.lock().map_err(unavailable)?;
        Ok(file)
    }

    /// The generation of the object at `path` (a file), if any.
    fn current_generation(path: &Path) -> Result<Option<i64>, StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => generation_of(&meta).map(Some).map_err(unavailable),
            Ok(_) => Ok(None),
            Err(error) if is_absent(&error) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Moves a finished temporary file to `key` if `precondition` holds.
    fn commit(
        &self,
        key: &str,
        temp: tempfile::NamedTempFile,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        let path = self.path_of(key)?;
        if precondition == Precondition::DoesNotExist {
            let generation = now_nanos();
            temp.as_file()
                .set_modified(from_nanos(generation))
                .map_err(unavailable)?;
            return match std::fs::hard_link(temp.path(), &path) {
                Ok(()) => Ok(generation),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    Err(StoreError::PreconditionFailed(key.into()))
                }
                Err(error) => Err(unavailable(error)),
            };
        }
        let _lock = self.lock()?;
        let current = Self::current_generation(&path)?;
        let holds = match precondition {
            Precondition::None => true,
            Precondition::DoesNotExist => current.is_none(),
            Precondition::Generation(expected) => current == Some(expected),
        };
        if !holds {
            return Err(StoreError::PreconditionFailed(key.into()));
        }
        let generation = current.map_or(now_nanos(), |g| now_nanos().max(g.saturating_add(1)));
        temp.as_file()
            .set_modified(from_nanos(generation))
            .map_err(unavailable)?;
        temp.persist(&path)
            .map_err(|error| unavailable(error.error))?;
        Ok(generation)
    }

    /// A temporary file beside `key`'s object, its directories created.
    fn temp_for(&self, key: &str) -> Result<tempfile::NamedTempFile, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.objects);
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(dir)
            .map_err(unavailable)
    }

    fn notify(&self, key: &str, generation: i64) {
        if let Some(listener) = &self.on_finalize {
            listener(key, generation);
        }
    }
}

fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

fn generation_of(meta: &std::fs::Metadata) -> io::Result<i64> {
    let modified = meta.modified()?;
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn now_nanos() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos());
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

fn from_nanos(generation: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(generation).unwrap_or(0))
}

fn unavailable(error: io::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let Some((mut file, generation)) = self.open(key)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(unavailable)?;
        Ok(Some(Object { bytes, generation }))
    }

    async fn generation(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Self::current_generation(&self.path_of(key)?)
    }

    async fn read(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        let Some((file, generation)) = self.open(key)? else {
            return Ok(None);
        };
        let size = file.metadata().ok().map(|meta| meta.len());
        // The open file keeps the bytes of this generation even if the
        // object is replaced (renamed over) while it streams.
        let chunks = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            STREAM_CHUNK,
        )
        .map(|chunk| chunk.map_err(unavailable));
        Ok(Some(ObjectReader {
            generation,
            size,
            chunks: Box::pin(chunks),
        }))
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        _content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        let mut temp = self.temp_for(key)?;
        io::Write::write_all(&mut temp, &bytes).map_err(unavailable)?;
        let generation = self.commit(key, temp, precondition)?;
        self.notify(key, generation);
        Ok(generation)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        _content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        let local = |error: io::Error| StoreError::LocalFile {
            path: path.display().to_string(),
            reason: error.to_string(),
        };
        let mut source = File::open(path).map_err(local)?;
        let mut temp = self.temp_for(key)?;
        io::copy(&mut source, &mut temp).map_err(unavailable)?;
        let generation = self.commit(key, temp, precondition)?;
        self.notify(key, generation);
        Ok(generation)
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<bool, StoreError> {
        let Some((mut file, _)) = self.open(key)? else {
            return Ok(false);
        };
        let mut dest = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|error| StoreError::LocalFile {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        io::copy(&mut file, &mut dest).map_err(unavailable)?;
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let _lock = self.lock()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if is_absent(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only the directory the prefix names, not the whole bucket.
        let start = match prefix.rfind('/') {
            Some(slash) => self.objects.join(&prefix[..slash]),
            None => self.objects.clone(),
        };
        let mut keys = Vec::new();
        collect_keys(&self.objects, &start, &mut keys).map_err(unavailable)?;
        keys.retain(|key| key.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    fn uri(&self, key: &str) -> String {
        crate::util::uri::file_uri(&self.objects.join(key))
    }
}

fn collect_keys(root: &Path, dir: &Path, keys: &mut Vec<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if is_absent(&error) => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_keys(root, &path, keys)?;
        } else if kind.is_file() {
            // Temporary files of a write in progress are not objects.
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                continue;
            }
            if let Ok(relative) = path.strip_prefix(root) {
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalDirStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDirStore::new(dir.path()).expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn conditional_writes_behave_like_gcs() {
        let (_dir, store) = store();
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
        assert_eq!(
            (object.bytes.as_slice(), object.generation),
            (&b"2"[..], g2)
        );
        assert_eq!(store.generation("a/b.json").await.expect("gen"), Some(g2));
        assert_eq!(store.get("a/none").await.expect("get"), None);
        assert_eq!(
            store.get("a").await.expect("a directory is no object"),
            None
        );
        assert_eq!(store.list("a/").await.expect("list"), vec!["a/b.json"]);
        assert_eq!(store.list("a/b").await.expect("list"), vec!["a/b.json"]);
        assert!(store.list("zz/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn generations_never_repeat_across_a_delete() {
        let (_dir, store) = store();
        let first = store
            .put("k", b"1".to_vec(), "t", Precondition::DoesNotExist)
            .await
            .expect("create");
        store.delete("k").await.expect("delete");
        store.delete("k").await.expect("deleting nothing succeeds");
        let second = store
            .put("k", b"2".to_vec(), "t", Precondition::DoesNotExist)
            .await
            .expect("create again");
        assert_ne!(first, second);
        assert!(
            store
                .put("k", b"3".to_vec(), "t", Precondition::Generation(first))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn files_stream_in_and_out() {
        let (dir, store) = store();
        let source = dir.path().join("big.bin");
        std::fs::write(&source, vec![7u8; 3 << 20]).expect("write");
        store
            .put_file(
                "src/x.tar.gz",
                &source,
                "application/gzip",
                Precondition::DoesNotExist,
            )
            .await
            .expect("upload");
        let dest = dir.path().join("copy.bin");
        assert!(
            store
                .get_to_file("src/x.tar.gz", &dest)
                .await
                .expect("download")
        );
        assert_eq!(std::fs::read(&dest).expect("read").len(), 3 << 20);
        assert!(
            !store
                .get_to_file("src/none", &dir.path().join("none"))
                .await
                .expect("absent")
        );
    }

    #[tokio::test]
    async fn racing_conditional_writers_never_both_win() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let start = store
            .put("counter", b"0".to_vec(), "t", Precondition::DoesNotExist)
            .await
            .expect("create");
        let _ = start;
        // 8 tasks each add 25 with read-modify-write retried on conflicts.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    loop {
                        let object = store.get("counter").await.expect("get").expect("exists");
                        let n: u64 = String::from_utf8_lossy(&object.bytes).parse().expect("n");
                        match store
                            .put(
                                "counter",
                                (n + 1).to_string().into_bytes(),
                                "t",
                                Precondition::Generation(object.generation),
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::PreconditionFailed(_)) => continue,
                            Err(error) => panic!("{error}"),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let object = store.get("counter").await.expect("get").expect("exists");
        assert_eq!(object.bytes, b"200");
    }

    #[tokio::test]
    async fn a_second_owner_is_refused_and_writes_are_announced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let store = LocalDirStore::new(dir.path())
            .expect("store")
            .own()
            .expect("first owner")
            .with_finalize_listener(Arc::new(move |key: &str, _| {
                log.lock().expect("lock").push(key.to_owned());
            }));
        assert!(matches!(
            LocalDirStore::new(dir.path()).expect("store").own(),
            Err(OpenError::InUse { .. })
        ));
        store
            .put("ci/x/result.json", b"{}".to_vec(), "t", Precondition::None)
            .await
            .expect("put");
        assert_eq!(*seen.lock().expect("lock"), vec!["ci/x/result.json"]);
    }

    #[tokio::test]
    async fn objects_stream_in_chunks_with_their_generation() {
        use futures_util::StreamExt as _;
        let (_dir, store) = store();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let generation = store
            .put("ci/a/output.ipynb", bytes.clone(), "t", Precondition::None)
            .await
            .expect("put");
        let mut reader = store
            .read("ci/a/output.ipynb")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            (reader.generation, reader.size),
            (generation, Some(200_000))
        );
        // Replaced while it streams: the reader keeps the bytes it opened.
        store
            .put(
                "ci/a/output.ipynb",
                b"new".to_vec(),
                "t",
                Precondition::None,
            )
            .await
            .expect("replace");
        let mut read = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = reader.chunks.next().await {
            read.extend_from_slice(&chunk.expect("chunk"));
            chunks += 1;
        }
        assert_eq!(read, bytes);
        assert!(chunks > 1);
        assert!(store.read("ci/none").await.expect("absent").is_none());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_bucket() {
        let (_dir, store) = store();
        for bad in ["../x", "/etc/passwd", "a//b"] {
            assert!(
                store
                    .put(bad, Vec::new(), "t", Precondition::None)
                    .await
                    .is_err()
            );
            assert!(store.get(bad).await.is_err());
        }
    }
}
