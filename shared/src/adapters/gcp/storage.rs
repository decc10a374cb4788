//! The ObjectStore port on Google Cloud Storage.
//!
//! Objects move through the official client (`google-cloud-storage`): it
//! streams uploads from a file and downloads to one, checks CRC32C both
//! ways, retries what GCS calls retryable, and turns a precondition into
//! `ifGenerationMatch`, which GCS enforces atomically: that one header is
//! what makes every state change in nbci safe against duplicate and
//! reordered events. Listing, deleting and reading a generation go through
//! the JSON API over `reqwest` instead: the client offers them only in
//! `StorageControl`, which speaks gRPC, and fake-gcs-server (the emulator
//! the tests and the local end-to-end runs use) serves only the JSON API.
//!
//! # Using it
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nbci_shared::adapters::gcp::storage::{GcsSettings, GcsStore};
//! // NBCI_BUCKET and STORAGE_EMULATOR_HOST, read by the configuration.
//! let settings = GcsSettings::new(
//!     "gs://my-bucket",
//!     std::env::var("STORAGE_EMULATOR_HOST").ok(),
//! );
//! let store = GcsStore::new(settings).await?;
//! store.probe().await?; // fail fast on a wrong bucket or a missing permission
//! # Ok(()) }
//! ```
//! Without an emulator, credentials are Application Default Credentials (the
//! metadata server on Cloud Run and in jobs, `GOOGLE_APPLICATION_CREDENTIALS`
//! or gcloud's file on a laptop), and the identity needs
//! `roles/storage.objectUser` on the bucket (create, read, overwrite,
//! delete, list). With an emulator, calls are anonymous, as emulators expect.
//!
//! # Semantics worth knowing
//! - A conditional write is idempotent, so the client retries it after a
//!   transient failure; when the failure was a lost answer to a write that
//!   landed, the retry meets that write and reports `PreconditionFailed`.
//!   This is GCS's own semantics on every client: a caller that must tell
//!   "someone else wrote first" from "my write landed" writes something
//!   of its own and reads it back.
//! - A 404 on a read means "no such object" and gives `None`; a missing
//!   bucket looks the same there, which is why [`GcsStore::probe`] exists.
//! - Uploads carry their CRC32C up front: GCS refuses a corrupted upload
//!   before the object exists.

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::read_object::ReadObjectResponse;
use google_cloud_storage::retry_policy::RetryableErrors;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::auth::{AdcTokenSource, CLOUD_PLATFORM_SCOPE, TokenSource};
use crate::domain::layout::validate_key;
use crate::ports::store::{Object, ObjectReader, ObjectStore, Precondition, StoreError};
use crate::util::retry::Backoff;

/// Where Google serves Cloud Storage when no emulator is configured.
const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";
/// The JSON API's largest page of a listing.
const MAX_PAGE_SIZE: u32 = 1000;
/// One JSON API request (a page of names, a deletion) is small: a request
/// that takes longer than this is stuck, and is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Between attempts of one JSON API call (GCS's guidance: exponential from 1 s).
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));

/// What [`GcsStore::new`] needs. Build it with [`GcsSettings::new`] and
/// change the tuning fields when needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GcsSettings {
    /// The bucket, as `name` or `gs://name` (the form `NBCI_BUCKET` and job
    /// URIs use).
    pub bucket: String,
    /// An emulator's address (`STORAGE_EMULATOR_HOST`): `http://host:port`,
    /// `https://...` or a bare `host:port` (read as http, as Google's other
    /// client libraries do). Set, it also switches to anonymous calls; unset
    /// or empty, the store talks to Google with Application Default
    /// Credentials.
    pub endpoint: Option<String>,
    /// How long one call keeps retrying transient failures (network, 429,
    /// 5xx) before it reports [`StoreError::Unavailable`]. The client's own
    /// default is 300 s; ours is shorter because a Cloud Run request must
    /// answer well inside its timeout, and a platform redelivery is the
    /// longer retry. It never cuts a transfer short: a large file takes
    /// as long as it takes. `get` and `put` (small objects) give up after
    /// this plus one minute in all, so a stalled connection cannot hold a
    /// handler forever.
    pub retry_time_limit: Duration,
    /// Tests only: uploads this large or larger are resumable (`None`: the
    /// client's default, 16 MiB). Resumable uploads hang against
    /// fake-gcs-server on any port but 80 (it hands back a session URL on
    /// port 80), so tests raise this above their largest object; in
    /// production the default is right.
    pub resumable_upload_threshold: Option<usize>,
    /// Tests only: names per page of a listing (`None`: 1000, the API's
    /// largest), so a test can cross page boundaries with a few objects.
    pub list_page_size: Option<u32>,
}

impl GcsSettings {
    /// Settings for `bucket` (`name` or `gs://name`), on Google or on the
    /// emulator at `endpoint` (the value of `STORAGE_EMULATOR_HOST`), with
    /// the default tuning.
    pub fn new(bucket: impl Into<String>, endpoint: Option<String>) -> Self {
        Self {
            bucket: bucket.into(),
            endpoint,
            retry_time_limit: Duration::from_secs(30),
            resumable_upload_threshold: None,
            list_page_size: None,
        }
    }
}

/// Why a [`GcsStore`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcsSetupError {
    /// Occurs when the bucket setting does not follow Cloud Storage's bucket
    /// naming rules.
    #[error("invalid bucket name {value:?}: {reason}")]
    InvalidBucket { value: String, reason: String },
    /// Occurs when the emulator address is neither `host:port` nor an
    /// http(s) URL.
    #[error("invalid storage emulator address {value:?}: {reason}")]
    InvalidEndpoint { value: String, reason: String },
    /// Occurs when Application Default Credentials cannot be found or loaded.
    #[error("no Google credentials for Cloud Storage: {0}")]
    Credentials(String),
    /// Occurs when the storage client or the HTTP client cannot be built.
    #[error("cannot build the Cloud Storage client: {0}")]
    Client(String),
}

/// One GCS bucket as an [`ObjectStore`]. Build it once at start-up and share
/// it: both clients inside pool their connections.
pub struct GcsStore {
    /// The bucket's bare name (`uri` and error messages use it).
    bucket: String,
    /// The bucket as the storage client names it: `projects/_/buckets/{name}`.
    bucket_path: String,
    /// The official client: reads and writes.
    client: Storage,
    /// The JSON API client: list, delete, generation.
    http: reqwest::Client,
    /// `{endpoint}/storage/v1/b/{bucket}/o`: the JSON API's objects collection.
    objects_url: url::Url,
    /// The bearer tokens of the JSON API calls (the family's one way to get
    /// a token); `None` with an emulator, which wants anonymous calls.
    tokens: Option<Arc<dyn TokenSource>>,
    /// The emulator's address; `None` on Google (shown by `Debug`).
    endpoint: Option<String>,
    retry_time_limit: Duration,
    list_page_size: u32,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GcsStore {
    /// A store on the bucket `settings` names: on the emulator at
    /// `settings.endpoint` with anonymous calls, else on Google with
    /// Application Default Credentials. Makes no request: call
    /// [`GcsStore::probe`] to check the bucket.
    pub async fn new(settings: GcsSettings) -> Result<Self, GcsSetupError> {
        let emulator = match settings.endpoint.as_deref() {
            Some(value) => parse_endpoint(value)?,
            None => None,
        };
        match emulator {
            Some(endpoint) => {
                let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
                Self::build(&settings, Some(endpoint), anonymous, None).await
            }
            None => {
                // The client and the JSON API calls each keep their own
                // token cache: one more token fetch an hour.
                let adc = google_cloud_auth::credentials::Builder::default()
                    .with_scopes([CLOUD_PLATFORM_SCOPE])
                    .build()
                    .map_err(|error| GcsSetupError::Credentials(error.to_string()))?;
                let tokens = AdcTokenSource::from_environment()
                    .map_err(|error| GcsSetupError::Credentials(error.to_string()))?;
                Self::build(&settings, None, adc, Some(Arc::new(tokens))).await
            }
        }
    }

    /// The store on `endpoint` (Google's when `None`): the client with
    /// `sdk_credentials`, the JSON API calls with bearer tokens from
    /// `tokens` (none when `None`).
    async fn build(
        settings: &GcsSettings,
        endpoint: Option<String>,
        sdk_credentials: Credentials,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, GcsSetupError> {
        let bucket = parse_bucket(&settings.bucket)?;
        let mut builder = Storage::builder()
            .with_credentials(sdk_credentials)
            .with_retry_policy(RetryableErrors.with_time_limit(settings.retry_time_limit));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(threshold) = settings.resumable_upload_threshold {
            builder = builder.with_resumable_upload_threshold(threshold);
        }
        let client = builder
            .build()
            .await
            .map_err(|error| GcsSetupError::Client(error.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("nbci/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| GcsSetupError::Client(error.to_string()))?;
        let root = endpoint.as_deref().unwrap_or(GOOGLE_ENDPOINT);
        let objects_url = objects_url(root, &bucket)?;
        Ok(Self {
            bucket_path: format!("projects/_/buckets/{bucket}"),
            bucket,
            client,
            http,
            objects_url,
            tokens,
            endpoint,
            retry_time_limit: settings.retry_time_limit,
            list_page_size: settings
                .list_page_size
                .unwrap_or(MAX_PAGE_SIZE)
                .clamp(1, MAX_PAGE_SIZE),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that the bucket exists and that this identity may list it:
    /// worth calling at start-up, because a read of a missing bucket looks
    /// like a read of a missing object.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let mut url = self.objects_url.clone();
        url.query_pairs_mut()
            .append_pair("maxResults", "1")
            .append_pair("fields", "nextPageToken");
        match self
            .call(&format!("list bucket {}", self.bucket), || {
                self.http.get(url.clone())
            })
            .await?
        {
            Some(_) => Ok(()),
            None => Err(self.no_bucket()),
        }
    }

    fn no_bucket(&self) -> StoreError {
        StoreError::Rejected(format!("bucket {} does not exist", self.bucket))
    }

    /// Runs a call on a small object within the retry time limit plus one
    /// request's time: the client sets no deadline of its own on a request.
    async fn bounded<T>(
        &self,
        key: &str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let deadline = self.retry_time_limit.saturating_add(REQUEST_TIMEOUT);
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "{key}: no answer within {deadline:?}"
                )))
            })
    }

    /// The JSON API URL of the object at `key` (any character escaped,
    /// `/` included, as the API wants).
    fn object_url(&self, key: &str) -> url::Url {
        let mut url = self.objects_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(key);
        }
        url
    }

    /// Starts reading the object at `key`; `None` when there is none.
    async fn open(&self, key: &str) -> Result<Option<ReadObjectResponse>, StoreError> {
        validate_key(key)?;
        match self.client.read_object(&self.bucket_path, key).send().await {
            Ok(response) => Ok(Some(response)),
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(sdk_error(key, &error)),
        }
    }

    /// Sends one JSON API request, retrying transient failures within the
    /// retry time limit; `None` on 404. `request` builds the request anew
    /// for each attempt.
    async fn call(
        &self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Option<reqwest::Response>, StoreError> {
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            let failure = match self.attempt(what, request()).await? {
                Attempt::Done(response) => return Ok(response),
                Attempt::Transient(failure) => failure,
            };
            failures = failures.saturating_add(1);
            let delay = BACKOFF.delay(failures);
            if started.elapsed().saturating_add(delay) > self.retry_time_limit {
                return Err(StoreError::Unavailable(failure));
            }
            tracing::debug!(what, %failure, ?delay, "retrying a Cloud Storage call");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Attempt, StoreError> {
        let mut request = request.timeout(REQUEST_TIMEOUT);
        if let Some(tokens) = &self.tokens {
            match tokens.token().await {
                Ok(token) => request = request.bearer_auth(token.expose()),
                Err(error) if error.is_transient() => {
                    return Ok(Attempt::Transient(format!("{what}: {error}")));
                }
                Err(error) => return Err(StoreError::Rejected(format!("{what}: {error}"))),
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Ok(Attempt::Transient(format!("{what}: {error}"))),
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(Attempt::Done(Some(response)));
        }
        if status == 404 {
            return Ok(Attempt::Done(None));
        }
        let body = response.text().await.unwrap_or_default();
        let failure = format!("{what}: HTTP {status}: {}", error_message(&body));
        match status {
            412 => Err(StoreError::PreconditionFailed(failure)),
            408 | 429 | 500..=599 => Ok(Attempt::Transient(failure)),
            _ => Err(StoreError::Rejected(failure)),
        }
    }
}

/// How one JSON API attempt ended.
enum Attempt {
    /// An answer to act on: the response, or `None` for 404.
    Done(Option<reqwest::Response>),
    /// A failure that another attempt may not meet.
    Transient(String),
}

/// `{"items": [{"name": ...}], "nextPageToken": ...}`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListedObject>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListedObject {
    name: String,
}

/// `{"generation": "123"}`: the JSON API writes int64 as a string; accept a
/// number too.
#[derive(Debug, Deserialize)]
struct ObjectGeneration {
    generation: Int64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Int64 {
    Number(i64),
    Text(String),
}

impl Int64 {
    fn value(&self) -> Option<i64> {
        match self {
            Int64::Number(n) => Some(*n),
            Int64::Text(text) => text.parse().ok(),
        }
    }
}

/// The message of a JSON API error body (`{"error": {"message": ...}}`),
/// else the body's start.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(envelope) => envelope.error.message,
        Err(_) => body.trim().chars().take(300).collect(),
    }
}

/// The HTTP status of a client error, or the one its RPC code stands for.
fn status_of(error: &google_cloud_storage::Error) -> Option<u16> {
    if let Some(code) = error.http_status_code() {
        return Some(code);
    }
    let code = match error.status()?.code {
        Code::NotFound => 404,
        Code::FailedPrecondition => 412,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::DeadlineExceeded => 504,
        Code::Unavailable => 503,
        _ => 500,
    };
    Some(code)
}

/// A client error as the port's error.
fn sdk_error(key: &str, error: &google_cloud_storage::Error) -> StoreError {
    match status_of(error) {
        Some(412) => StoreError::PreconditionFailed(key.to_owned()),
        Some(408 | 429 | 500..=599) => StoreError::Unavailable(format!("{key}: {error}")),
        Some(_) => StoreError::Rejected(format!("{key}: {error}")),
        // A request the client could not even build or encode will fail the
        // same way next time.
        None if error.is_binding() || error.is_serialization() => {
            StoreError::Rejected(format!("{key}: {error}"))
        }
        // Connection failures, timeouts, retries exhausted, a token that
        // could not be fetched, a download cut short.
        None => StoreError::Unavailable(format!("{key}: {error}")),
    }
}

/// The bucket name in `value` (`name` or `gs://name`), checked against Cloud
/// Storage's naming rules so that a typo fails at start-up with the rule it
/// breaks, not at the first request with a 400.
pub fn parse_bucket(value: &str) -> Result<String, GcsSetupError> {
    let invalid = |reason: &str| GcsSetupError::InvalidBucket {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = value.trim();
    let name = trimmed.strip_prefix("gs://").unwrap_or(trimmed);
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.contains('/') {
        return Err(invalid(
            "a bucket name has no `/`: give gs://BUCKET, not a path inside it",
        ));
    }
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(invalid("bucket names are lowercase"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "only lowercase letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    let dotted = name.contains('.');
    let (min, max) = (3, if dotted { 222 } else { 63 });
    if name.len() < min || name.len() > max {
        return Err(invalid(if dotted {
            "must be 3 to 222 characters long"
        } else {
            "must be 3 to 63 characters long (222 with dots)"
        }));
    }
    let edges_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edges_ok(name.chars().next()) || !edges_ok(name.chars().last()) {
        return Err(invalid("must start and end with a letter or a digit"));
    }
    if dotted
        && name
            .split('.')
            .any(|part| part.is_empty() || part.len() > 63)
    {
        return Err(invalid(
            "each dot-separated part must be 1 to 63 characters long",
        ));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid("must not look like an IP address"));
    }
    if name.starts_with("goog") {
        return Err(invalid("must not start with `goog`"));
    }
    if name.contains("google") || name.contains("g00gle") {
        return Err(invalid("must not contain `google`"));
    }
    Ok(name.to_owned())
}

/// The emulator's base URL from `STORAGE_EMULATOR_HOST`'s value: an
/// http(s) URL as given, a bare `host:port` as http; `None` when empty (an
/// empty variable means unset, as in Google's other client libraries).
pub fn parse_endpoint(value: &str) -> Result<Option<String>, GcsSetupError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| GcsSetupError::InvalidEndpoint {
        value: value.to_owned(),
        reason,
    };
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment allowed".into()));
    }
    Ok(Some(url.as_str().trim_end_matches('/').to_owned()))
}

/// `{root}/storage/v1/b/{bucket}/o`.
fn objects_url(root: &str, bucket: &str) -> Result<url::Url, GcsSetupError> {
    let invalid = |reason: String| GcsSetupError::InvalidEndpoint {
        value: root.to_owned(),
        reason,
    };
    let mut url = url::Url::parse(root).map_err(|error| invalid(error.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| invalid("cannot hold a path".into()))?
        .pop_if_empty()
        .extend(["storage", "v1", "b", bucket, "o"]);
    Ok(url)
}

/// The CRC32C of the file at `path`, read in 1 MiB pieces.
///
/// Every upload carries its checksum up front, in the request's metadata:
/// GCS then refuses a corrupted upload before the object exists (a file
/// that changes between this pass and the upload is refused too), and the
/// client skips its own pass. It also keeps the client from appending the
/// checksum as a trailing multipart part, which fake-gcs-server (v1.54)
/// stores as part of the object's content.
async fn file_crc32c(path: &Path) -> Result<u32, StoreError> {
    let owned = path.to_owned();
    let computed = tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut crc = 0u32;
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return Ok(crc),
                Ok(n) => crc = crc32c::crc32c_append(crc, buffer.get(..n).unwrap_or_default()),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .map_err(|error| StoreError::LocalFile {
        path: path.display().to_string(),
        reason: format!("checksum task: {error}"),
    })?;
    computed.map_err(local_file(path))
}

fn local_file(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::LocalFile {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.bounded(key, async {
            let Some(mut response) = self.open(key).await? else {
                return Ok(None);
            };
            let generation = response.object().generation;
            let capacity = usize::try_from(response.object().size).unwrap_or(0);
            // Objects read whole are small (states, results); the size is
            // only a hint, capped so that a lying header cannot reserve
            // gigabytes.
            let mut bytes = Vec::with_capacity(capacity.min(64 << 20));
            while let Some(chunk) = response.next().await {
                let chunk = chunk.map_err(|error| sdk_error(key, &error))?;
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(Object { bytes, generation }))
        })
        .await
    }

    async fn read(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        // Starting the read is bounded like a small call; the transfer then
        // takes as long as its reader does (a slow download is the client's).
        let Some(response) = self.bounded(key, self.open(key)).await? else {
            return Ok(None);
        };
        let generation = response.object().generation;
        // A size of 0 may only mean "not said" (fake-gcs-server leaves it
        // out): a wrong Content-Length would cut the answer, none costs nothing.
        let size = u64::try_from(response.object().size)
            .ok()
            .filter(|size| *size > 0);
        let key = key.to_owned();
        let chunks = futures_util::stream::unfold(Some(response), move |state| {
            let key = key.clone();
            async move {
                let mut response = state?;
                match response.next().await? {
                    Ok(chunk) => Some((Ok(chunk), Some(response))),
                    // One error ends the stream: the client sees a cut answer.
                    Err(error) => Some((Err(sdk_error(&key, &error)), None)),
                }
            }
        });
        Ok(Some(ObjectReader {
            generation,
            size,
            chunks: Box::pin(chunks),
        }))
    }

    async fn generation(&self, key: &str) -> Result<Option<i64>, StoreError> {
        validate_key(key)?;
        let mut url = self.object_url(key);
        url.query_pairs_mut().append_pair("fields", "generation");
        let Some(response) = self
            .call(&format!("generation of {key}"), || {
                self.http.get(url.clone())
            })
            .await?
        else {
            return Ok(None);
        };
        let body: ObjectGeneration = response
            .json()
            .await
            .map_err(|error| StoreError::Unavailable(format!("{key}: metadata: {error}")))?;
        body.generation.value().map(Some).ok_or_else(|| {
            StoreError::Unavailable(format!("{key}: metadata: generation is not an integer"))
        })
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        validate_key(key)?;
        let crc32c = crc32c::crc32c(&bytes);
        let write = self
            .client
            .write_object(&self.bucket_path, key, bytes::Bytes::from(bytes))
            .set_content_type(content_type)
            .with_known_crc32c(crc32c);
        let write = match precondition {
            Precondition::None => write,
            Precondition::DoesNotExist => write.set_if_generation_match(0),
            Precondition::Generation(generation) => write.set_if_generation_match(generation),
        };
        let object = self
            .bounded(key, async {
                write
                    .send_unbuffered()
                    .await
                    .map_err(|error| sdk_error(key, &error))
            })
            .await?;
        Ok(object.generation)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        precondition: Precondition,
    ) -> Result<i64, StoreError> {
        validate_key(key)?;
        let crc32c = file_crc32c(path).await?;
        // The client reads the file in chunks (and seeks back on a retry):
        // never more than a chunk of it in memory.
        let file = tokio::fs::File::open(path)
            .await
            .map_err(local_file(path))?;
        let write = self
            .client
            .write_object(&self.bucket_path, key, file)
            .set_content_type(content_type)
            .with_known_crc32c(crc32c);
        let write = match precondition {
            Precondition::None => write,
            Precondition::DoesNotExist => write.set_if_generation_match(0),
            Precondition::Generation(generation) => write.set_if_generation_match(generation),
        };
        let object = write
            .send_unbuffered()
            .await
            .map_err(|error| sdk_error(key, &error))?;
        Ok(object.generation)
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<bool, StoreError> {
        let Some(mut response) = self.open(key).await? else {
            return Ok(false);
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(local_file(path))?;
        let copied = async {
            while let Some(chunk) = response.next().await {
                let chunk = chunk.map_err(|error| sdk_error(key, &error))?;
                file.write_all(&chunk).await.map_err(local_file(path))?;
            }
            file.flush().await.map_err(local_file(path))
        }
        .await;
        if let Err(error) = copied {
            // No half object left behind to be taken for a whole one.
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
            return Err(error);
        }
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let url = self.object_url(key);
        // A 404 (never there, or a retry after our own deletion) is success.
        self.call(&format!("delete {key}"), || self.http.delete(url.clone()))
            .await
            .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let page_size = self.list_page_size.to_string();
        let mut keys = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.objects_url.clone();
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("prefix", prefix)
                    .append_pair("maxResults", &page_size)
                    .append_pair("fields", "items(name),nextPageToken");
                if let Some(token) = &page_token {
                    query.append_pair("pageToken", token);
                }
            }
            let Some(response) = self
                .call(&format!("list {prefix}"), || self.http.get(url.clone()))
                .await?
            else {
                return Err(self.no_bucket());
            };
            let page: ListPage = response
                .json()
                .await
                .map_err(|error| StoreError::Unavailable(format!("list {prefix}: {error}")))?;
            keys.extend(page.items.into_iter().map(|item| item.name));
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn uri(&self, key: &str) -> String {
        format!("gs://{}/{key}", self.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_api_calls_carry_a_bearer_token() {
        use wiremock::matchers::{header, method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let authorized = || header("authorization", "Bearer ya29.test-token");
        Mock::given(method("GET"))
            .and(path("/storage/v1/b/nbci-data/o"))
            .and(query_param("pageToken", "page-2"))
            .and(authorized())
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "kind": "storage#objects", "items": [{"name": "ci/a"}]
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/storage/v1/b/nbci-data/o"))
            .and(authorized())
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "items": [{"name": "ci/c"}, {"name": "ci/b"}], "nextPageToken": "page-2"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/storage/v1/b/nbci-data/o/ci%2Fb"))
            .and(authorized())
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"generation": "42"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .and(path("/storage/v1/b/nbci-data/o/ci%2Fb"))
            .and(authorized())
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        // Anything else (no token, another path) is a loud 418.
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(418))
            .mount(&server)
            .await;
        let store = GcsStore::build(
            &GcsSettings::new("gs://nbci-data", None),
            Some(server.uri()),
            google_cloud_auth::credentials::anonymous::Builder::new().build(),
            Some(Arc::new(crate::adapters::gcp::auth::FixedToken::new(
                "ya29.test-token",
            ))),
        )
        .await
        .expect("store");
        assert_eq!(
            store.list("ci/").await.expect("list"),
            vec!["ci/a", "ci/b", "ci/c"]
        );
        assert_eq!(
            store.generation("ci/b").await.expect("generation"),
            Some(42)
        );
        store.delete("ci/b").await.expect("delete");
        assert!(store.probe().await.is_ok());
    }

    #[tokio::test]
    async fn refusals_are_not_retried_and_outages_are() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/storage/v1/b/b-1/o/denied"))
            .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
                "error": {"code": 403, "message": "nbci@p.iam.gserviceaccount.com does not have storage.objects.get access"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/storage/v1/b/b-1/o/busy"))
            .respond_with(ResponseTemplate::new(503))
            .expect(2..)
            .mount(&server)
            .await;
        let mut settings = GcsSettings::new("b-1", Some(server.uri()));
        settings.retry_time_limit = Duration::from_millis(1500);
        let store = GcsStore::new(settings).await.expect("store");
        let denied = store.generation("denied").await;
        assert!(
            matches!(&denied, Err(StoreError::Rejected(m)) if m.contains("storage.objects.get")),
            "{denied:?}"
        );
        let busy = store.generation("busy").await;
        assert!(matches!(&busy, Err(e) if e.is_transient()), "{busy:?}");
    }

    #[test]
    fn bucket_names_follow_the_rules() {
        for good in [
            "my-bucket",
            "gs://my-bucket",
            "gs://my-bucket/",
            "a_b",
            "abc",
            "example.com.data",
            "123",
        ] {
            assert!(parse_bucket(good).is_ok(), "{good} should be valid");
        }
        assert_eq!(parse_bucket("gs://nbci-data").expect("valid"), "nbci-data");
        for (bad, why) in [
            ("", "empty"),
            ("gs://", "empty"),
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("My-Bucket", "lowercase"),
            ("my bucket", "only lowercase"),
            ("-bucket", "start and end"),
            ("bucket.", "start and end"),
            ("a..b", "dot-separated"),
            ("192.168.1.1", "IP address"),
            ("goog-data", "goog"),
            ("my-google-data", "google"),
            ("gs://bucket/some/object", "no `/`"),
        ] {
            let error = parse_bucket(bad).expect_err(bad).to_string();
            assert!(error.contains(why), "{bad}: {error} should say {why}");
        }
    }

    #[test]
    fn emulator_addresses_are_read_as_other_google_clients_read_them() {
        assert_eq!(
            parse_endpoint("127.0.0.1:4443").expect("bare"),
            Some("http://127.0.0.1:4443".to_owned())
        );
        assert_eq!(
            parse_endpoint("http://localhost:9023/").expect("url"),
            Some("http://localhost:9023".to_owned())
        );
        assert_eq!(
            parse_endpoint("https://gcs.internal").expect("https"),
            Some("https://gcs.internal".to_owned())
        );
        assert_eq!(parse_endpoint("  ").expect("empty"), None);
        for bad in [
            "ftp://host:21",
            "http://",
            "host:port:extra",
            "http://h:1/?x=1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn object_urls_escape_every_separator() {
        let url = objects_url("http://127.0.0.1:4443", "b").expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:4443/storage/v1/b/b/o");
        let mut object = url.clone();
        object
            .path_segments_mut()
            .expect("segments")
            .push("ci/o w/n?#%.ipynb");
        assert_eq!(
            object.as_str(),
            "http://127.0.0.1:4443/storage/v1/b/b/o/ci%2Fo%20w%2Fn%3F%23%25.ipynb"
        );
    }

    #[test]
    fn generations_read_as_strings_or_numbers() {
        for body in [
            r#"{"generation": "1700000000123456"}"#,
            r#"{"generation": 1700000000123456}"#,
        ] {
            let parsed: ObjectGeneration = serde_json::from_str(body).expect("json");
            assert_eq!(parsed.generation.value(), Some(1_700_000_000_123_456));
        }
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(
                r#"{"error": {"code": 403, "message": "caller lacks storage.objects.list"}}"#
            ),
            "caller lacks storage.objects.list"
        );
        assert_eq!(error_message("  upstream timeout \n"), "upstream timeout");
    }
}
