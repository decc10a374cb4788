//! The GCS adapter against a real fake-gcs-server: the ObjectStore semantics
//! the flows rely on (create-only, generation-conditional overwrites,
//! listing, idempotent deletes), large files streamed both ways, and racing
//! writers. Each test starts its own server (see `fake_gcs`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbci_shared::adapters::gcp::{GcsSettings, GcsStore};
use nbci_shared::ports::store::{ObjectStore, Precondition, StoreError};

use super::fake_gcs::FakeGcs;

async fn store(fake: &FakeGcs) -> GcsStore {
    GcsStore::new(fake.settings()).await.expect("store")
}

#[tokio::test]
async fn create_only_writes_conflict_with_412() {
    let fake = FakeGcs::start().await;
    let store = store(&fake).await;
    let key = "deliveries/72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let first = store
        .put(key, Vec::new(), "text/plain", Precondition::DoesNotExist)
        .await
        .expect("first create");
    assert!(first > 0);
    let again = store
        .put(key, b"x".to_vec(), "text/plain", Precondition::DoesNotExist)
        .await;
    assert!(
        matches!(again, Err(StoreError::PreconditionFailed(_))),
        "{again:?}"
    );
    // The marker helper the webhook uses gives the same answer.
    assert!(
        !nbci_shared::ports::store::create_once(&store, key)
            .await
            .expect("create_once")
    );
    assert!(
        nbci_shared::ports::store::create_once(&store, "deliveries/other")
            .await
            .expect("create_once")
    );
    // The refused write changed nothing.
    let object = store.get(key).await.expect("get").expect("exists");
    assert_eq!((object.bytes.len(), object.generation), (0, first));
    assert!(store.probe().await.is_ok());
}

#[tokio::test]
async fn conditional_overwrites_refuse_a_stale_generation() {
    let fake = FakeGcs::start().await;
    let store = store(&fake).await;
    let key = "ci/o/r/abc/nb.ipynb/check.json";
    let g1 = store
        .put(
            key,
            b"{\"v\":1}".to_vec(),
            "application/json",
            Precondition::DoesNotExist,
        )
        .await
        .expect("create");
    let g2 = store
        .put(
            key,
            b"{\"v\":2}".to_vec(),
            "application/json",
            Precondition::Generation(g1),
        )
        .await
        .expect("the matching generation wins");
    assert_ne!(g1, g2);
    let stale = store
        .put(
            key,
            b"{\"v\":3}".to_vec(),
            "application/json",
            Precondition::Generation(g1),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed(_))),
        "{stale:?}"
    );
    let object = store.get(key).await.expect("get").expect("exists");
    assert_eq!(
        (object.bytes.as_slice(), object.generation),
        (&b"{\"v\":2}"[..], g2)
    );
    assert_eq!(store.generation(key).await.expect("generation"), Some(g2));
    // (The content type is sent in the upload's metadata, which GCS keeps;
    // fake-gcs-server v1.54 ignores it on multipart uploads, so it is not
    // checked here.)
    // Unconditional writes always land.
    let g3 = store
        .put(key, b"{}".to_vec(), "application/json", Precondition::None)
        .await
        .expect("unconditional");
    assert_eq!(store.generation(key).await.expect("generation"), Some(g3));
    // What is not there.
    assert_eq!(store.get("ci/none").await.expect("get"), None);
    assert_eq!(store.generation("ci/none").await.expect("generation"), None);
    assert_eq!(store.uri(key), format!("gs://{}/{key}", fake.bucket));
}

/// Deterministic bytes that no compression or deduplication shortcut can
/// fake, written to `path` in 1 MiB pieces.
fn write_pseudo_random(path: &Path, len: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    file.flush().expect("flush");
}

/// Whether two files hold the same bytes, compared piece by piece.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).expect("open a"),
        std::fs::File::open(b).expect("open b"),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut x);
        let m = read_full(&mut b, &mut y);
        if n != m || x[..n] != y[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).expect("read") {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test]
async fn a_50_mb_object_streams_in_and_out_unchanged() {
    const SIZE: usize = 50 << 20;
    let fake = FakeGcs::start().await;
    let store = store(&fake).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.tar.gz");
    write_pseudo_random(&source, SIZE);
    let key = "src/o/r/0123456789abcdef0123456789abcdef01234567.tar.gz";
    let before = peak_rss();

    let started = Instant::now();
    let generation = store
        .put_file(key, &source, "application/gzip", Precondition::DoesNotExist)
        .await
        .expect("upload");
    let upload = started.elapsed();
    let copy = dir.path().join("copy.tar.gz");
    let started = Instant::now();
    assert!(store.get_to_file(key, &copy).await.expect("download"));
    let download = started.elapsed();
    let after = peak_rss();

    assert_eq!(std::fs::metadata(&copy).expect("copy").len(), SIZE as u64);
    assert!(same_bytes(&source, &copy), "the bytes came back changed");
    assert_eq!(store.generation(key).await.expect("gen"), Some(generation));
    // Read as a stream (what `GET /runs/...` serves): the same bytes, in
    // chunks, with the generation and size known up front.
    let mut reader = store.read(key).await.expect("read").expect("exists");
    assert_eq!(reader.generation, generation);
    assert!(
        reader.size.is_none_or(|size| size == SIZE as u64),
        "{:?}",
        reader.size
    );
    let streamed = dir.path().join("streamed.tar.gz");
    let mut out = std::fs::File::create(&streamed).expect("file");
    let mut chunks = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut reader.chunks).await {
        out.write_all(&chunk.expect("chunk")).expect("write");
        chunks += 1;
    }
    drop(out);
    assert!(chunks > 1, "streamed in chunks");
    assert!(
        same_bytes(&source, &streamed),
        "the stream changed the bytes"
    );
    assert!(store.read("src/none").await.expect("absent").is_none());
    let after = peak_rss().or(after);
    eprintln!(
        "50 MiB through fake-gcs-server: upload {upload:.2?}, download {download:.2?}, \
         round trip {:.2?}; streamed in {chunks} chunks",
        upload + download
    );
    if let (Some(before), Some(after)) = (before, after) {
        let growth = after.saturating_sub(before);
        eprintln!("peak resident memory grew by {} MiB", growth >> 20);
        assert!(
            growth < (SIZE as u64) / 2,
            "peak memory grew by {growth} bytes: the object was held in memory"
        );
    }
    // A create-only upload of a file meets the same precondition.
    let again = store
        .put_file(key, &source, "application/gzip", Precondition::DoesNotExist)
        .await;
    assert!(
        matches!(again, Err(StoreError::PreconditionFailed(_))),
        "{again:?}"
    );
    // An existing destination is never overwritten; a missing object writes no file.
    assert!(matches!(
        store.get_to_file(key, &copy).await,
        Err(StoreError::LocalFile { .. })
    ));
    let none = dir.path().join("none");
    assert!(!store.get_to_file("src/none", &none).await.expect("absent"));
    assert!(!none.exists());
    assert!(matches!(
        store
            .put_file(
                "src/x",
                &dir.path().join("missing"),
                "t",
                Precondition::None
            )
            .await,
        Err(StoreError::LocalFile { .. })
    ));
}

#[tokio::test]
async fn listing_follows_every_page_and_sorts() {
    let fake = FakeGcs::start().await;
    let mut settings = fake.settings();
    settings.list_page_size = Some(2);
    let store = GcsStore::new(settings).await.expect("store");
    for key in ["p/e", "pa/x", "p/a", "q/y", "p/c/d", "p/b", "p/d"] {
        store
            .put(
                key,
                key.as_bytes().to_vec(),
                "text/plain",
                Precondition::None,
            )
            .await
            .expect("put");
    }
    assert_eq!(
        store.list("p/").await.expect("list"),
        vec!["p/a", "p/b", "p/c/d", "p/d", "p/e"]
    );
    assert_eq!(
        store.list("p").await.expect("list"),
        vec!["p/a", "p/b", "p/c/d", "p/d", "p/e", "pa/x"]
    );
    assert_eq!(store.list("").await.expect("list all").len(), 7);
    assert!(store.list("zz/").await.expect("list").is_empty());
}

#[tokio::test]
async fn deleting_is_idempotent() {
    let fake = FakeGcs::start().await;
    let store = store(&fake).await;
    let g1 = store
        .put("k/1", b"1".to_vec(), "t", Precondition::DoesNotExist)
        .await
        .expect("create");
    store.delete("k/1").await.expect("delete");
    store.delete("k/1").await.expect("deleting again succeeds");
    store
        .delete("k/never-there")
        .await
        .expect("deleting nothing succeeds");
    assert_eq!(store.get("k/1").await.expect("get"), None);
    assert!(store.list("k/").await.expect("list").is_empty());
    // The key can be created again, and the old generation means nothing.
    let g2 = store
        .put("k/1", b"2".to_vec(), "t", Precondition::DoesNotExist)
        .await
        .expect("create again");
    assert_ne!(g1, g2);
    assert!(matches!(
        store
            .put("k/1", b"3".to_vec(), "t", Precondition::Generation(g1))
            .await,
        Err(StoreError::PreconditionFailed(_))
    ));
}

#[tokio::test]
async fn racing_writers_never_lose_an_increment() {
    const WRITERS: u64 = 8;
    const ROUNDS: u64 = 10;
    let fake = FakeGcs::start().await;
    let store = Arc::new(store(&fake).await);
    store
        .put(
            "counter",
            b"0".to_vec(),
            "text/plain",
            Precondition::DoesNotExist,
        )
        .await
        .expect("create");
    // Writer i adds i+1, ROUNDS times, by read-modify-write on the generation.
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..ROUNDS {
                loop {
                    let object = store.get("counter").await.expect("get").expect("exists");
                    let n: u64 = String::from_utf8_lossy(&object.bytes)
                        .parse()
                        .expect("a number");
                    match store
                        .put(
                            "counter",
                            (n + writer + 1).to_string().into_bytes(),
                            "text/plain",
                            Precondition::Generation(object.generation),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::PreconditionFailed(_)) => conflicts += 1,
                        Err(error) => panic!("writer {writer}: {error}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("writer");
    }
    let object = store.get("counter").await.expect("get").expect("exists");
    let expected = ROUNDS * WRITERS * (WRITERS + 1) / 2;
    assert_eq!(
        String::from_utf8_lossy(&object.bytes),
        expected.to_string(),
        "after {conflicts} refused writes"
    );
    eprintln!("{WRITERS} writers, {conflicts} writes refused on a stale generation");
}

#[tokio::test]
async fn invalid_keys_are_refused_before_any_request() {
    let fake = FakeGcs::start().await;
    let store = store(&fake).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").expect("write");
    let long = "a".repeat(1025);
    for bad in [
        "",
        "../x",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a\nb",
        long.as_str(),
    ] {
        let invalid = |result: Result<(), StoreError>| {
            assert!(
                matches!(result, Err(StoreError::InvalidKey(_))),
                "{bad:?}: {result:?}"
            );
        };
        invalid(
            store
                .put(bad, Vec::new(), "t", Precondition::None)
                .await
                .map(drop),
        );
        invalid(
            store
                .put_file(bad, &file, "t", Precondition::None)
                .await
                .map(drop),
        );
        invalid(store.get(bad).await.map(drop));
        invalid(store.generation(bad).await.map(drop));
        invalid(
            store
                .get_to_file(bad, &dir.path().join("out"))
                .await
                .map(drop),
        );
        invalid(store.delete(bad).await);
    }
    assert!(store.list("").await.expect("list").is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_rejected_not_retried() {
    let fake = FakeGcs::start().await;
    let mut settings = fake.settings();
    settings.bucket = "gs://no-such-bucket".into();
    let store = GcsStore::new(settings).await.expect("store");
    for result in [store.probe().await, store.list("").await.map(drop)] {
        assert!(
            matches!(&result, Err(StoreError::Rejected(m)) if m.contains("no-such-bucket")),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut settings = GcsSettings::new("nbci-test", Some(format!("127.0.0.1:{port}")));
    settings.retry_time_limit = Duration::from_secs(2);
    let store = GcsStore::new(settings).await.expect("store");
    let started = Instant::now();
    let results = [
        store.get("k").await.map(drop),
        store
            .put("k", b"x".to_vec(), "t", Precondition::DoesNotExist)
            .await
            .map(drop),
        store.list("").await.map(drop),
        store.delete("k").await,
        store.generation("k").await.map(drop),
    ];
    for result in results {
        assert!(
            matches!(&result, Err(error) if error.is_transient()),
            "{result:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the retry time limit bounds every call"
    );
}

#[tokio::test]
async fn emulator_calls_carry_no_authorization() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "items": [{"name": "a"}], "generation": "7"
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let store = GcsStore::new(GcsSettings::new("b-1", Some(server.uri())))
        .await
        .expect("store");
    assert_eq!(store.list("").await.expect("list"), vec!["a"]);
    assert_eq!(store.generation("a").await.expect("gen"), Some(7));
    store.delete("a").await.expect("delete");
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 3);
    for request in requests {
        assert!(
            !request.headers.contains_key("authorization"),
            "{} {} carried credentials to an emulator",
            request.method,
            request.url
        );
        assert!(request.url.path().starts_with("/storage/v1/b/b-1/o"));
    }
}
