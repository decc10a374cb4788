//! Hostile clients against the real `nbci serve` binary: the webhook is
//! public, so anyone can open connections, send bodies that will never
//! verify, or download slowly. Each test states the bound it holds the
//! server to: memory as the growth of its resident set (VmHWM, the peak,
//! against VmRSS before the attack, from /proc), and time.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::memory_kib;
use super::durability::{SECRET, Server, check_suite, sleeper};
use super::fake_github::FakeGitHub;

const MIB: u64 = 1024;
/// GitHub's limit on a payload, which the webhook takes as its own.
const PAYLOAD: usize = 25 * 1024 * 1024;

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// The status code of the first answer on `stream`, if one comes within `wait`.
async fn status_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> Option<u16> {
    let mut buffer = vec![0; 512];
    let read = tokio::time::timeout(wait, stream.read(&mut buffer)).await;
    let n = read.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buffer[..n]);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// One upload of a body that claims GitHub's full 25 MiB and never ends:
/// `signed` sends a well-formed signature that will not verify, otherwise
/// none. Returns the answer's status, if any came.
async fn endless_upload(address: String, signed: bool) -> Option<u16> {
    let mut stream = TcpStream::connect(&address).await.ok()?;
    let mut head = format!(
        "POST /github HTTP/1.1\r\nHost: {address}\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: hostile\r\nContent-Type: application/json\r\nContent-Length: {PAYLOAD}\r\n"
    );
    if signed {
        head.push_str(&format!(
            "X-Hub-Signature-256: sha256={}\r\n",
            "0".repeat(64)
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        // All but the last chunk: the body is never complete.
        for _ in 0..(PAYLOAD / chunk.len() - 1) {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    let status = status_within(&mut reader, Duration::from_secs(40)).await;
    writing.abort();
    status
}

/// The case: 40 uploads of 25 MiB held open took the server to
/// 1 GB. Now unsigned bodies are refused before they are read, and the
/// signed-looking ones share the body budget (64 MiB by default) until the
/// body timeout gives it back; a real delivery then still gets through.
/// Bound: peak resident memory at most 112 MiB above the server's before
/// (the 64 MiB budget, 48 MiB for 40 connections' buffers and allocator
/// slack), everything answered within 40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_uploads_held_open_stay_within_the_body_budget() {
    let github =
        FakeGitHub::start_for_any_commit(&[("a.ipynb", "added")], &[("a.ipynb", sleeper(0))]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[("NBCI_HTTP_BODY_TIMEOUT", "8s")]).await;
    let (before, _) = memory_kib(server.pid());
    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..40 {
        uploads.spawn(endless_upload(address(&server), i % 2 == 0));
    }
    // Every upload has sent what the server will take of it by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (during, peak) = memory_kib(server.pid());
    assert!(
        reqwest::get(format!("{}/healthz", server.url))
            .await
            .is_ok_and(|r| r.status() == 200),
        "the server still answers"
    );
    // A real delivery waits for room in the budget, and is accepted.
    let sha = "5555555555555555555555555555555555555555";
    assert_eq!(
        server
            .deliver("check_suite", "legit-after-flood", &check_suite(sha))
            .await,
        202
    );
    let mut statuses = Vec::new();
    while let Some(joined) = uploads.join_next().await {
        statuses.push(joined.expect("upload task"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "40 endless uploads: VmRSS {before} KiB before, {during} KiB during, peak {peak} KiB \
         (+{} MiB); all answered in {elapsed:?}; statuses {statuses:?}",
        peak.saturating_sub(before) / MIB
    );
    assert!(
        peak.saturating_sub(before) < 112 * MIB,
        "the server grew by {} MiB (peak {peak} KiB, before {before} KiB)\n{}",
        peak.saturating_sub(before) / MIB,
        server.log()
    );
    assert!(elapsed < Duration::from_secs(40), "{elapsed:?}");
    let count = |code: u16| statuses.iter().filter(|s| **s == Some(code)).count();
    assert_eq!(
        (count(401), count(408)),
        (20, 20),
        "the unsigned uploads are refused before their body is read (401), \
         the others when their body does not arrive in time (408): {statuses:?}"
    );
    server.kill().await;
}

/// The case: 300 connections that never finish their headers stayed
/// open for good. Now each is closed at the header timeout (2 s here), at
/// most 100 are served at once, and /healthz is answered meanwhile.
/// Bound: every connection closed within 20 s; peak resident memory at most
/// 32 MiB above the server's before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed() {
    let github = FakeGitHub::start_for_any_commit(&[], &[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &github,
        data.path(),
        &[
            ("NBCI_HTTP_HEADER_TIMEOUT", "2s"),
            ("NBCI_HTTP_MAX_CONNECTIONS", "100"),
        ],
    )
    .await;
    let (before, _) = memory_kib(server.pid());
    let started = Instant::now();
    let mut idle = tokio::task::JoinSet::new();
    for i in 0..300 {
        let address = address(&server);
        idle.spawn(async move {
            let mut stream = TcpStream::connect(&address).await.expect("connect");
            // Half the connections send part of a head, half nothing at all.
            if i % 2 == 0 {
                stream
                    .write_all(b"POST /github HTTP/1.1\r\nHost: x\r\nX-Hub-Signa")
                    .await
                    .expect("write");
            }
            let mut buffer = [0u8; 256];
            let closed = loop {
                match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer)).await
                {
                    Ok(Ok(0) | Err(_)) => break true,
                    Ok(Ok(_)) => continue, // an error answer, then the close
                    Err(_) => break false,
                }
            };
            (closed, started.elapsed())
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let healthz = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    let healthz_after = started.elapsed();
    let (_, peak) = memory_kib(server.pid());
    let mut last = Duration::ZERO;
    let mut open = 0;
    while let Some(joined) = idle.join_next().await {
        let (closed, at) = joined.expect("task");
        if closed {
            last = last.max(at);
        } else {
            open += 1;
        }
    }
    let (_, peak_after) = memory_kib(server.pid());
    let peak = peak.max(peak_after);
    eprintln!(
        "300 idle connections: all closed after {last:?}, /healthz answered after {healthz_after:?}; \
         VmRSS {before} KiB before, peak {peak} KiB (+{} MiB)",
        peak.saturating_sub(before) / MIB
    );
    assert_eq!(open, 0, "connections left open by the server");
    assert!(
        last < Duration::from_secs(20),
        "the last closed after {last:?}"
    );
    assert!(
        healthz.is_ok_and(|r| r.status() == 200),
        "/healthz is served beside them"
    );
    assert!(
        peak.saturating_sub(before) < 32 * MIB,
        "the server grew by {} MiB",
        peak.saturating_sub(before) / MIB
    );
    server.kill().await;
}

/// The case: eight slow downloads of a 200 MB executed notebook took
/// the server to 2.3 GB. Now objects are streamed: eight readers that keep
/// reading slowly cost a few chunks each, a reader that stops is cut off at
/// the stall timeout (3 s here), and a full download is byte-exact.
/// Bound: peak resident memory at most 48 MiB above the server's before;
/// the stalled reader cut within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downloads_of_a_large_executed_notebook_are_streamed() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let github = FakeGitHub::start_for_any_commit(&[], &[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&github, data.path(), &[("NBCI_HTTP_STALL_TIMEOUT", "3s")]).await;
    let prefix = "ci/Codertocat/Hello-World/6666666666666666666666666666666666666666/big.ipynb";
    let object = data
        .path()
        .join("objects")
        .join(prefix)
        .join("output.ipynb");
    std::fs::create_dir_all(object.parent().expect("parent")).expect("dirs");
    // Sparse: 200 MB to serve, nothing on disk.
    std::fs::File::create(&object)
        .and_then(|file| file.set_len(SIZE))
        .expect("sparse notebook");
    let token = nbci_shared::flows::ci::view_token(
        &nbci_shared::util::secret::Secret::new(SECRET.to_owned()),
        prefix,
    );
    let url = format!("{}/runs/{prefix}/output.ipynb?token={token}", server.url);
    let (before, _) = memory_kib(server.pid());

    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        readers.spawn(async move {
            let mut response = reqwest::get(&url).await.expect("download starts");
            assert_eq!(response.status(), 200);
            let mut read = 0usize;
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            read
        });
    }
    // One reader takes a little, then nothing for longer than the stall timeout.
    let stalled = {
        let url = url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut response = reqwest::get(&url).await.expect("download starts");
            let mut read = 0usize;
            while read < 1 << 20 {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            tokio::time::sleep(Duration::from_secs(8)).await;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
            }
            (read, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, peak) = memory_kib(server.pid());
    let mut slow_reads = Vec::new();
    while let Some(read) = readers.join_next().await {
        slow_reads.push(read.expect("reader"));
    }
    let (stalled_read, stalled_after) = stalled.await.expect("stalled reader");
    let (_, peak_after) = memory_kib(server.pid());
    let peak = peak.max(peak_after);

    // A full download is the whole object.
    let started = Instant::now();
    let mut response = reqwest::get(&url).await.expect("download");
    assert_eq!(
        response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(SIZE.to_string().as_str())
    );
    let mut total = 0u64;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        total += chunk.len() as u64;
    }
    let full_after = started.elapsed();
    eprintln!(
        "8 slow readers read {slow_reads:?} bytes; the stalled one {stalled_read} bytes, cut after \
         {stalled_after:?}; a full 200 MB download took {full_after:?}; VmRSS {before} KiB before, \
         peak {peak} KiB (+{} MiB)",
        peak.saturating_sub(before) / MIB
    );
    assert_eq!(total, SIZE);
    assert!(slow_reads.iter().all(|r| *r > 0), "{slow_reads:?}");
    assert!(
        (stalled_read as u64) < SIZE,
        "the stalled reader was cut off ({stalled_read} bytes)"
    );
    assert!(stalled_after < Duration::from_secs(15), "{stalled_after:?}");
    assert!(
        peak.saturating_sub(before) < 48 * MIB,
        "the server grew by {} MiB",
        peak.saturating_sub(before) / MIB
    );
    server.kill().await;
}
