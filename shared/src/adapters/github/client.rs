//! The REST calls nbci makes to GitHub as an App installation: the changed
//! files of a commit (compare), check runs (create, update), and the source
//! tarball of a commit.
//!
//! One [`GitHubClient`] is built at start-up from [`GitHubConfig`]; its base
//! URL comes from `GITHUB_API_URL`, so GitHub Enterprise Server
//! (`https://host/api/v3`) and wiremock work unchanged.
//!
//! Every call goes through one retry loop: 5xx, 429 and rate limits are retried
//! with exponential backoff that honours `Retry-After` and `x-ratelimit-reset`;
//! other 4xx fail at once with GitHub's own message ([`GitHubError`]). When
//! GitHub asks for a longer wait than [`RetryPolicy::max_wait`], the call fails
//! at once with [`ClientError::RateLimited`] instead of holding a request (or a
//! webhook answer) for minutes. Tokens travel only in `Authorization` headers,
//! which reqwest marks sensitive and drops on redirects to another host; they
//! are never logged, and transport errors are logged without their URL (a
//! tarball's redirect URL carries a short-lived token).

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checks::{CreateCheckRun, UpdateCheckRun};
pub use crate::domain::repo::{CheckRunId, InstallationId, RepoRef};
use crate::util::retry::Backoff;
use crate::util::secret::Secret;

/// The default API root (github.com).
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The REST API version nbci is written against.
pub const API_VERSION: &str = "2022-11-28";
/// The media type GitHub recommends for every REST call.
pub const MEDIA_TYPE: &str = "application/vnd.github+json";
/// Files per page of the compare API.
pub const COMPARE_PER_PAGE: usize = 100;
/// GitHub's compare API lists at most this many files for a whole comparison;
/// a page that long may have been cut by GitHub.
pub const GITHUB_COMPARE_FILE_LIMIT: usize = 300;

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it.
    pub base_delay: Duration,
    /// The longest nbci waits between attempts. A longer wait that GitHub
    /// demands (`Retry-After`, `x-ratelimit-reset`) fails the call at once.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1` when GitHub gave no hint.
    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.base_delay, self.max_wait).delay(attempt)
    }
}

/// Settings of the client, from the environment or set by tests.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// The API root: `https://api.github.com`, `https://host/api/v3`, or wiremock.
    pub api_url: String,
    /// GitHub refuses requests without a User-Agent.
    pub user_agent: String,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// Most changed files read from the compare API; past it the list is cut
    /// and [`ChangedFiles::capped`] says so.
    pub max_changed_files: usize,
    /// Timeout of one request (a tarball download gets ten times as long).
    pub request_timeout: Duration,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.into(),
            user_agent: concat!("nbci/", env!("CARGO_PKG_VERSION")).into(),
            retry: RetryPolicy::default(),
            max_changed_files: 3_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn parse_api_url(text: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::Config(format!("GITHUB_API_URL {text:?} {reason}"));
    let url = Url::parse(text).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid("must be an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url)
}

/// An error answer from GitHub, as its JSON body describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GitHubError {
    /// The HTTP status.
    pub status: u16,
    /// GitHub's message, such as "Not Found" or "Validation Failed".
    pub message: String,
    /// The page of GitHub's documentation about the call.
    pub documentation_url: Option<String>,
    /// Details of a 422: which field was refused and why.
    pub errors: Vec<Value>,
}

impl GitHubError {
    /// Reads GitHub's error body; a body that is not GitHub's JSON (a proxy's
    /// HTML page) becomes the start of its text, or the status's reason.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            message: Option<String>,
            documentation_url: Option<String>,
            #[serde(default)]
            errors: Vec<Value>,
        }
        if let Ok(Body {
            message: Some(message),
            documentation_url,
            errors,
        }) = serde_json::from_slice(body)
        {
            return Self {
                status,
                message,
                documentation_url,
                errors,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_owned()
        } else {
            text.chars().take(200).collect()
        };
        Self {
            status,
            message,
            documentation_url: None,
            errors: Vec::new(),
        }
    }
}

impl fmt::Display for GitHubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitHub answered {}: {}", self.status, self.message)?;
        if !self.errors.is_empty() {
            let details: Vec<String> = self.errors.iter().map(Value::to_string).collect();
            write!(f, " ({})", details.join("; "))?;
        }
        if let Some(url) = &self.documentation_url {
            write!(f, " (see {url})")?;
        }
        Ok(())
    }
}

impl std::error::Error for GitHubError {}

/// Why a call to GitHub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Occurs when GitHub answers with an error that is not retried (4xx other
    /// than rate limits), or still fails after the last attempt.
    #[error("{what}: {error}")]
    Api {
        /// The call, such as "create check run".
        what: &'static str,
        /// GitHub's answer.
        error: GitHubError,
    },
    /// Occurs when GitHub demands a wait longer than [`RetryPolicy::max_wait`]
    /// (a primary rate limit resets up to an hour later): retry after `wait`.
    #[error("{what}: rate limited by GitHub for {}s: {error}", wait.as_secs())]
    RateLimited {
        /// The call.
        what: &'static str,
        /// How long GitHub asks to wait.
        wait: Duration,
        /// GitHub's answer.
        error: GitHubError,
    },
    /// Occurs when GitHub cannot be reached or the connection breaks, after
    /// the last attempt. The reason never includes the URL.
    #[error("{what}: cannot reach GitHub: {reason}")]
    Transport {
        /// The call.
        what: &'static str,
        /// The network error.
        reason: String,
    },
    /// Occurs when a successful answer is not what the API description says.
    #[error("{what}: unexpected answer from GitHub: {reason}")]
    Decode {
        /// The call.
        what: &'static str,
        /// What did not fit.
        reason: String,
    },
    /// Occurs when the configuration is unusable (a `GITHUB_API_URL` that is not a URL).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// True when trying again later may succeed (network, 5xx, rate limits):
    /// the webhook answers 503 so that the platform redelivers.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RateLimited { .. } => true,
            Self::Api { error, .. } => error.status >= 500 || error.status == 429,
            Self::Decode { .. } | Self::Config(_) => false,
        }
    }

    /// GitHub's HTTP status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { error, .. } | Self::RateLimited { error, .. } => Some(error.status),
            _ => None,
        }
    }
}

/// How a file changed between two commits (the compare API's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// New in head.
    Added,
    /// Deleted in head: nothing to run.
    Removed,
    /// Changed content.
    Modified,
    /// Moved (`previous_filename` has the old path); runs at its new path.
    Renamed,
    /// Copied from another file.
    Copied,
    /// Mode or type changed.
    Changed,
    /// Listed but unchanged.
    Unchanged,
    /// A status this version of nbci does not know.
    #[serde(other)]
    Other,
}

/// One entry of the compare API's `files[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// Path in head.
    pub filename: String,
    /// How it changed.
    pub status: FileStatus,
    /// The path in base, for a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_filename: Option<String>,
}

/// The files changed between two commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedFiles {
    /// In GitHub's order, each path once.
    pub files: Vec<ChangedFile>,
    /// True when the list may be incomplete: nbci's cap
    /// ([`GitHubConfig::max_changed_files`]) was reached, or GitHub's own
    /// 300-file limit may have cut it. The check should say so.
    pub capped: bool,
}

impl ChangedFiles {
    /// The notebooks to run: `.ipynb` files that exist in head (removed ones
    /// are skipped; a renamed one runs at its new path), in GitHub's order.
    pub fn notebooks(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|file| !matches!(file.status, FileStatus::Removed | FileStatus::Unchanged))
            .map(|file| file.filename.as_str())
            .filter(|name| name.to_ascii_lowercase().ends_with(".ipynb"))
    }
}

/// One entry of the list-check-runs answer: what finding a run by its external id needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedCheckRun {
    pub id: CheckRunId,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// A check run as `GET /repos/{owner}/{repo}/check-runs/{id}` answers it:
/// whether it is completed, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FetchedCheckRun {
    pub id: CheckRunId,
    /// `queued`, `in_progress`, `completed`, or one of the statuses only
    /// GitHub Actions sets (`waiting`, `requested`, `pending`): kept as text,
    /// so that a status nbci never sets is read rather than refused.
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
}

impl FetchedCheckRun {
    pub fn is_completed(&self) -> bool {
        self.status == "completed"
    }
}

/// A client of GitHub's REST API. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    api: Url,
    retry: RetryPolicy,
    max_changed_files: usize,
    request_timeout: Duration,
}

impl GitHubClient {
    /// Builds the client; fails on an unusable `api_url`.
    pub fn new(config: GitHubConfig) -> Result<Self, ClientError> {
        let api = parse_api_url(&config.api_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MEDIA_TYPE));
        headers.insert(
            "X-GitHub-Api-Version",
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            api,
            retry: config.retry,
            max_changed_files: config.max_changed_files,
            request_timeout: config.request_timeout,
        })
    }

    /// The API root, for logs and for the App's token exchange.
    pub fn api_url(&self) -> &Url {
        &self.api
    }

    /// `{api}/seg/seg/...`, each segment percent-encoded; a trailing slash in
    /// the configured URL is tolerated and a GHE path prefix kept.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the standard headers, the timeout and the token.
    pub(crate) fn request(&self, method: Method, url: Url, bearer: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .timeout(self.request_timeout)
            .bearer_auth(bearer)
    }

    /// Sends the request `build` makes, retrying as [`RetryPolicy`] says;
    /// `build` is called once per attempt. Answers with a 2xx response.
    pub(crate) async fn send(
        &self,
        what: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        self.send_attempts(what, self.retry.max_attempts, build)
            .await
    }

    /// [`GitHubClient::send`] with at most `max_attempts` attempts.
    async fn send_attempts(
        &self,
        what: &'static str,
        max_attempts: u32,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= max_attempts;
            let wait = match build().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    let error = GitHubError::from_body(status, &body);
                    let Some(delay) = retry_delay(
                        status,
                        &headers,
                        &error.message,
                        attempt,
                        &self.retry,
                        SystemTime::now(),
                    ) else {
                        tracing::warn!(what, status, message = %error.message, "GitHub refused the request");
                        return Err(ClientError::Api { what, error });
                    };
                    if delay.mandated && delay.wait > self.retry.max_wait {
                        tracing::warn!(
                            what,
                            status,
                            wait_s = delay.wait.as_secs(),
                            "GitHub rate limit: not waiting that long"
                        );
                        return Err(ClientError::RateLimited {
                            what,
                            wait: delay.wait,
                            error,
                        });
                    }
                    if last {
                        tracing::warn!(what, status, attempt, message = %error.message, "GitHub request failed; no attempts left");
                        return Err(ClientError::Api { what, error });
                    }
                    tracing::warn!(
                        what,
                        status,
                        attempt,
                        wait_ms = delay.wait.as_millis() as u64,
                        "GitHub request failed; retrying"
                    );
                    delay.wait
                }
                Err(error) => {
                    let reason = transport_reason(error);
                    if last {
                        tracing::warn!(what, attempt, %reason, "cannot reach GitHub; no attempts left");
                        return Err(ClientError::Transport { what, reason });
                    }
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(what, attempt, %reason, wait_ms = wait.as_millis() as u64, "cannot reach GitHub; retrying");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The files changed between `base` and `head` (commit SHAs or refs), from
    /// `GET /repos/{owner}/{repo}/compare/{base}...{head}`, page by page.
    ///
    /// GitHub documents that with paging the file list comes whole on the
    /// first page (at most 300 files); servers that page the files too are
    /// read until a page has fewer than `per_page` files. Paths are
    /// deduplicated, and reading stops at the configured cap.
    pub async fn compare_changed_files(
        &self,
        repo: &RepoRef,
        token: &Secret,
        base: &str,
        head: &str,
    ) -> Result<ChangedFiles, ClientError> {
        #[derive(Deserialize)]
        struct ComparePage {
            #[serde(default)]
            files: Vec<ChangedFile>,
        }
        let what = "compare commits";
        let cap = self.max_changed_files;
        // Enough pages for the cap, plus one to see the end: a server that
        // repeats pages cannot keep nbci looping.
        let max_pages = cap.div_ceil(COMPARE_PER_PAGE) + 1;
        let basehead = format!("{base}...{head}");
        let mut result = ChangedFiles::default();
        let mut seen = std::collections::HashSet::new();
        for page in 1..=max_pages {
            let url = self.url(&["repos", repo.owner(), repo.name(), "compare", &basehead]);
            let query = [("per_page", COMPARE_PER_PAGE), ("page", page)];
            let response = self
                .send(what, || {
                    self.request(Method::GET, url.clone(), token.expose())
                        .query(&query)
                })
                .await?;
            let body: ComparePage = decode(what, response).await?;
            let count = body.files.len();
            if count >= GITHUB_COMPARE_FILE_LIMIT {
                result.capped = true;
            }
            for file in body.files {
                if seen.insert(file.filename.clone()) {
                    if result.files.len() >= cap {
                        result.capped = true;
                        return Ok(result);
                    }
                    result.files.push(file);
                }
            }
            if count < COMPARE_PER_PAGE {
                return Ok(result);
            }
        }
        result.capped = true;
        Ok(result)
    }

    /// Creates a check run (`POST /repos/{owner}/{repo}/check-runs`); answers its id.
    pub async fn create_check_run(
        &self,
        repo: &RepoRef,
        token: &Secret,
        body: &CreateCheckRun,
    ) -> Result<CheckRunId, ClientError> {
        #[derive(Deserialize)]
        struct Created {
            id: CheckRunId,
        }
        let what = "create check run";
        let url = self.url(&["repos", repo.owner(), repo.name(), "check-runs"]);
        // One attempt only: when the answer is lost, GitHub may have created
        // the run, and a blind retry would leave a second one queued forever.
        // The caller looks the run up by its external id before trying again.
        let response = self
            .send_attempts(what, 1, || {
                self.request(Method::POST, url.clone(), token.expose())
                    .json(body)
            })
            .await?;
        Ok(decode::<Created>(what, response).await?.id)
    }

    /// Updates a check run (`PATCH /repos/{owner}/{repo}/check-runs/{id}`).
    pub async fn update_check_run(
        &self,
        repo: &RepoRef,
        token: &Secret,
        id: CheckRunId,
        body: &UpdateCheckRun,
    ) -> Result<(), ClientError> {
        self.patch_check_run(repo, token, id, body, self.retry.max_attempts)
            .await
    }

    /// [`GitHubClient::update_check_run`] in one attempt, for an update that
    /// must land once (a verdict): when the answer is lost, GitHub may have
    /// taken it, and a blind retry would send it again. The caller asks
    /// ([`GitHubClient::get_check_run`]) before trying again.
    pub async fn update_check_run_once(
        &self,
        repo: &RepoRef,
        token: &Secret,
        id: CheckRunId,
        body: &UpdateCheckRun,
    ) -> Result<(), ClientError> {
        self.patch_check_run(repo, token, id, body, 1).await
    }

    async fn patch_check_run(
        &self,
        repo: &RepoRef,
        token: &Secret,
        id: CheckRunId,
        body: &UpdateCheckRun,
        max_attempts: u32,
    ) -> Result<(), ClientError> {
        let what = "update check run";
        let id = id.to_string();
        let url = self.url(&["repos", repo.owner(), repo.name(), "check-runs", &id]);
        self.send_attempts(what, max_attempts, || {
            self.request(Method::PATCH, url.clone(), token.expose())
                .json(body)
        })
        .await?;
        Ok(())
    }

    /// A check run (`GET /repos/{owner}/{repo}/check-runs/{id}`).
    pub async fn get_check_run(
        &self,
        repo: &RepoRef,
        token: &Secret,
        id: CheckRunId,
    ) -> Result<FetchedCheckRun, ClientError> {
        let what = "get check run";
        let id = id.to_string();
        let url = self.url(&["repos", repo.owner(), repo.name(), "check-runs", &id]);
        let response = self
            .send(what, || {
                self.request(Method::GET, url.clone(), token.expose())
            })
            .await?;
        decode(what, response).await
    }

    /// The repository's default branch (`GET /repos/{owner}/{repo}`).
    pub async fn default_branch(
        &self,
        repo: &RepoRef,
        token: &Secret,
    ) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Repository {
            default_branch: String,
        }
        let what = "get repository";
        let url = self.url(&["repos", repo.owner(), repo.name()]);
        let response = self
            .send(what, || {
                self.request(Method::GET, url.clone(), token.expose())
            })
            .await?;
        Ok(decode::<Repository>(what, response).await?.default_branch)
    }

    /// The commit at the head of `branch` (`GET /repos/{owner}/{repo}/commits/{ref}`).
    pub async fn branch_head(
        &self,
        repo: &RepoRef,
        token: &Secret,
        branch: &str,
    ) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        let what = "get commit";
        let url = self.url(&["repos", repo.owner(), repo.name(), "commits", branch]);
        let response = self
            .send(what, || {
                self.request(Method::GET, url.clone(), token.expose())
            })
            .await?;
        Ok(decode::<Commit>(what, response).await?.sha)
    }

    /// The check runs named `name` on commit `sha`, with their external ids
    /// (`GET /repos/{owner}/{repo}/commits/{ref}/check-runs?check_name=..&filter=all`),
    /// page by page up to `max_pages` of 100.
    pub async fn list_check_runs(
        &self,
        repo: &RepoRef,
        token: &Secret,
        sha: &str,
        name: &str,
    ) -> Result<Vec<ListedCheckRun>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            check_runs: Vec<ListedCheckRun>,
        }
        const PER_PAGE: usize = 100;
        const MAX_PAGES: usize = 10;
        let what = "list check runs";
        let url = self.url(&[
            "repos",
            repo.owner(),
            repo.name(),
            "commits",
            sha,
            "check-runs",
        ]);
        let mut runs = Vec::new();
        for page in 1..=MAX_PAGES {
            let page_text = page.to_string();
            let per_page = PER_PAGE.to_string();
            let query = [
                ("check_name", name),
                ("filter", "all"),
                ("per_page", per_page.as_str()),
                ("page", page_text.as_str()),
            ];
            let response = self
                .send(what, || {
                    self.request(Method::GET, url.clone(), token.expose())
                        .query(&query)
                })
                .await?;
            let body: Page = decode(what, response).await?;
            let count = body.check_runs.len();
            runs.extend(body.check_runs);
            if count < PER_PAGE {
                break;
            }
        }
        Ok(runs)
    }

    /// [`GitHubClient::download_tarball`] streamed into a new file at `dest`,
    /// so that a large repository is never held in memory.
    pub async fn download_tarball_to(
        &self,
        repo: &RepoRef,
        token: &Secret,
        git_ref: &str,
        dest: &std::path::Path,
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt as _;
        let what = "download tarball";
        let url = self.url(&["repos", repo.owner(), repo.name(), "tarball", git_ref]);
        let timeout = self.request_timeout.saturating_mul(10);
        let mut response = self
            .send(what, || {
                self.request(Method::GET, url.clone(), token.expose())
                    .timeout(timeout)
            })
            .await?;
        let local = |error: std::io::Error| ClientError::Transport {
            what,
            reason: format!("cannot write {}: {error}", dest.display()),
        };
        let mut file = tokio::fs::File::create_new(dest).await.map_err(local)?;
        let mut written: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(|e| ClientError::Transport {
            what,
            reason: transport_reason(e),
        })? {
            file.write_all(&chunk).await.map_err(local)?;
            written = written.saturating_add(chunk.len() as u64);
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    /// The repository at `git_ref` as a gzip tarball
    /// (`GET /repos/{owner}/{repo}/tarball/{ref}`), following GitHub's
    /// redirect to its download host (which gets no `Authorization` header:
    /// the redirect URL carries its own short-lived token).
    pub async fn download_tarball(
        &self,
        repo: &RepoRef,
        token: &Secret,
        git_ref: &str,
    ) -> Result<Bytes, ClientError> {
        let what = "download tarball";
        let url = self.url(&["repos", repo.owner(), repo.name(), "tarball", git_ref]);
        let timeout = self.request_timeout.saturating_mul(10);
        let response = self
            .send(what, || {
                self.request(Method::GET, url.clone(), token.expose())
                    .timeout(timeout)
            })
            .await?;
        response.bytes().await.map_err(|e| ClientError::Transport {
            what,
            reason: transport_reason(e),
        })
    }
}

/// A network error with its causes, without the URL: a redirect target (the
/// tarball's download URL) carries a token in its query.
fn transport_reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// Reads a JSON answer into `T`.
pub(crate) async fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    response: Response,
) -> Result<T, ClientError> {
    let body = response.bytes().await.map_err(|e| ClientError::Transport {
        what,
        reason: transport_reason(e),
    })?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// A wait before the next attempt, and whether GitHub demanded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delay {
    wait: Duration,
    /// From `Retry-After` or `x-ratelimit-reset` (or GitHub's "wait a minute"
    /// for secondary limits), rather than nbci's own backoff.
    mandated: bool,
}

/// Whether an error answer is retried, and after how long. `None`: fail now.
///
/// Follows GitHub's "Best practices for using the REST API": on a rate limit,
/// wait `Retry-After` seconds if given; else, when `x-ratelimit-remaining` is
/// 0, until `x-ratelimit-reset`; else (a secondary limit) at least a minute.
fn retry_delay(
    status: u16,
    headers: &HeaderMap,
    message: &str,
    attempt: u32,
    policy: &RetryPolicy,
    now: SystemTime,
) -> Option<Delay> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let reset_wait = (header("x-ratelimit-remaining") == Some("0"))
        .then(|| header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()))
        .flatten()
        .map(|reset| {
            let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
            reset.duration_since(now).unwrap_or_default()
        });
    let mandated = |wait| {
        Some(Delay {
            wait,
            mandated: true,
        })
    };
    let backoff = Some(Delay {
        wait: policy.backoff(attempt),
        mandated: false,
    });
    match status {
        403 | 429 => {
            if let Some(wait) = retry_after {
                mandated(wait)
            } else if let Some(wait) = reset_wait {
                mandated(wait)
            } else if status == 429 {
                backoff
            } else if message
                .to_ascii_lowercase()
                .contains("secondary rate limit")
            {
                mandated(Duration::from_secs(60))
            } else {
                // A plain 403: no permission. Retrying changes nothing.
                None
            }
        }
        500..=599 => match retry_after {
            Some(wait) => mandated(wait),
            None => backoff,
        },
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;
    use wiremock::matchers::{any, bearer_token, body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::github::checks;

    const TOKEN: &str = "ghs_test-installation-token";

    fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_wait: Duration::from_secs(2),
        }
    }

    fn client_for(server: &MockServer, suffix: &str) -> GitHubClient {
        GitHubClient::new(GitHubConfig {
            api_url: format!("{}{suffix}", server.uri()),
            retry: fast_policy(),
            ..GitHubConfig::default()
        })
        .expect("client")
    }

    fn token() -> Secret {
        Secret::new(TOKEN)
    }

    fn repo() -> RepoRef {
        RepoRef::parse("octo-org/hello.world").expect("valid")
    }

    /// Any request no other mock expects fails the test loudly: 418 is not
    /// retried, and the `expect(0)` is checked when the server drops.
    pub(crate) async fn fail_on_unexpected(server: &MockServer) {
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(418).set_body_json(json!({"message": "unexpected request"})),
            )
            .with_priority(u8::MAX)
            .expect(0)
            .named("fallback: unexpected request")
            .mount(server)
            .await;
    }

    fn file(name: &str) -> Value {
        json!({"sha": "bbcd538c", "filename": name, "status": "modified", "additions": 1, "deletions": 0, "changes": 1,
               "blob_url": "https://github.com/x", "raw_url": "https://github.com/y", "contents_url": "https://api.github.com/z",
               "patch": "@@ -1 +1 @@"})
    }

    #[test]
    fn repo_refs_refuse_what_github_would() {
        assert_eq!(repo().to_string(), "octo-org/hello.world");
        for bad in [
            "", "a", "a/", "/b", "a/b/c", "a/..", "a/b c", "a/b?x", "ä/b",
        ] {
            assert_eq!(RepoRef::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn urls_tolerate_trailing_slashes_and_keep_ghe_prefixes() {
        for (api, expected) in [
            (
                "https://api.github.com",
                "https://api.github.com/repos/o/r/check-runs",
            ),
            (
                "https://api.github.com/",
                "https://api.github.com/repos/o/r/check-runs",
            ),
            (
                "https://ghe.example/api/v3",
                "https://ghe.example/api/v3/repos/o/r/check-runs",
            ),
            (
                "https://ghe.example/api/v3/",
                "https://ghe.example/api/v3/repos/o/r/check-runs",
            ),
        ] {
            let client = GitHubClient::new(GitHubConfig {
                api_url: api.into(),
                ..GitHubConfig::default()
            })
            .expect("client");
            assert_eq!(
                client.url(&["repos", "o", "r", "check-runs"]).as_str(),
                expected
            );
        }
        let client = GitHubClient::new(GitHubConfig::default()).expect("client");
        assert_eq!(
            client
                .url(&["repos", "o", "r", "compare", "main...feature/x y"])
                .as_str(),
            "https://api.github.com/repos/o/r/compare/main...feature%2Fx%20y"
        );
    }

    #[test]
    fn the_api_url_must_be_an_http_base() {
        let client = GitHubClient::new(GitHubConfig {
            api_url: "https://ghe.example/api/v3/".into(),
            ..GitHubConfig::default()
        })
        .expect("ghe");
        assert_eq!(client.api_url().as_str(), "https://ghe.example/api/v3/");
        for bad in ["not a url", "ftp://x", "https://x/?a=1", "mailto:x@y"] {
            let error = GitHubClient::new(GitHubConfig {
                api_url: bad.into(),
                ..GitHubConfig::default()
            })
            .expect_err(bad);
            assert!(error.to_string().contains("GITHUB_API_URL"), "{error}");
        }
    }

    #[test]
    fn github_error_bodies_are_read() {
        let error = GitHubError::from_body(
            422,
            br#"{"message":"Validation Failed","errors":[{"resource":"CheckRun","code":"invalid","field":"conclusion"}],"documentation_url":"https://docs.github.com/rest/checks/runs#create-a-check-run"}"#,
        );
        assert_eq!(error.status, 422);
        assert_eq!(error.message, "Validation Failed");
        assert_eq!(
            error.documentation_url.as_deref(),
            Some("https://docs.github.com/rest/checks/runs#create-a-check-run")
        );
        assert!(error.to_string().contains("conclusion"), "{error}");
        assert_eq!(GitHubError::from_body(502, b"").message, "Bad Gateway");
        assert_eq!(
            GitHubError::from_body(502, b"<html>bad gateway</html>").message,
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn retry_decisions_follow_github_guidance() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).expect("value"));
            }
            map
        };
        let decide = |status, h: &HeaderMap, message: &str, attempt| {
            retry_delay(status, h, message, attempt, &policy, now)
        };
        let backoff = |secs| {
            Some(Delay {
                wait: Duration::from_secs(secs),
                mandated: false,
            })
        };
        let mandated = |secs| {
            Some(Delay {
                wait: Duration::from_secs(secs),
                mandated: true,
            })
        };
        let none = HeaderMap::new();
        assert_eq!(decide(502, &none, "", 1), backoff(1));
        assert_eq!(decide(500, &none, "", 3), backoff(4));
        assert_eq!(decide(503, &none, "", 30), backoff(60), "capped");
        assert_eq!(
            decide(503, &headers(&[("retry-after", "7")]), "", 1),
            mandated(7)
        );
        assert_eq!(decide(429, &none, "", 2), backoff(2));
        assert_eq!(
            decide(429, &headers(&[("retry-after", "3")]), "", 1),
            mandated(3)
        );
        assert_eq!(
            decide(403, &headers(&[("retry-after", "5")]), "", 1),
            mandated(5)
        );
        let reset = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1030"),
        ]);
        assert_eq!(
            decide(403, &reset, "API rate limit exceeded", 1),
            mandated(30)
        );
        let past = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "900")]);
        assert_eq!(decide(429, &past, "", 1), mandated(0));
        assert_eq!(
            decide(403, &none, "You have exceeded a secondary rate limit.", 1),
            mandated(60)
        );
        let remaining = headers(&[
            ("x-ratelimit-remaining", "10"),
            ("x-ratelimit-reset", "1030"),
        ]);
        assert_eq!(
            decide(403, &remaining, "Resource not accessible by integration", 1),
            None
        );
        for status in [400, 401, 404, 409, 422] {
            assert_eq!(decide(status, &none, "", 1), None, "{status}");
        }
    }

    #[tokio::test]
    async fn compare_reads_pages_until_a_short_one() {
        let server = MockServer::start().await;
        let page = |n: usize, names: Vec<String>| {
            Mock::given(method("GET"))
                .and(path("/api/v3/repos/octo-org/hello.world/compare/aaa...bbb"))
                .and(query_param("per_page", "100"))
                .and(query_param("page", n.to_string()))
                .and(bearer_token(TOKEN))
                .and(header("accept", MEDIA_TYPE))
                .and(header("x-github-api-version", API_VERSION))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1, "commits": [],
                    "files": names.iter().map(|name| file(name)).collect::<Vec<_>>(),
                })))
                .expect(1)
        };
        let first: Vec<String> = (0..100).map(|i| format!("nb/{i}.ipynb")).collect();
        let mut second: Vec<String> = (100..130).map(|i| format!("nb/{i}.ipynb")).collect();
        second.push("nb/0.ipynb".into()); // repeated: kept once
        page(1, first).mount(&server).await;
        page(2, second).mount(&server).await;
        fail_on_unexpected(&server).await;

        let client = client_for(&server, "/api/v3/");
        let changed = client
            .compare_changed_files(&repo(), &token(), "aaa", "bbb")
            .await
            .expect("compare");
        assert_eq!(changed.files.len(), 130);
        assert!(!changed.capped);
        assert_eq!(changed.files[0].filename, "nb/0.ipynb");
        assert_eq!(changed.files[0].status, FileStatus::Modified);
    }

    #[tokio::test]
    async fn compare_stops_at_the_cap_and_says_so() {
        let server = MockServer::start().await;
        let files: Vec<Value> = (0..100).map(|i| file(&format!("{i}.ipynb"))).collect();
        Mock::given(method("GET"))
            .and(path("/repos/octo-org/hello.world/compare/a...b"))
            .and(query_param("page", "1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"files": files})))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        let client = GitHubClient::new(GitHubConfig {
            api_url: server.uri(),
            retry: fast_policy(),
            max_changed_files: 40,
            ..GitHubConfig::default()
        })
        .expect("client");
        let changed = client
            .compare_changed_files(&repo(), &token(), "a", "b")
            .await
            .expect("compare");
        assert_eq!(changed.files.len(), 40);
        assert!(changed.capped);
    }

    #[tokio::test]
    async fn compare_reads_renames_and_removals() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/repos/octo-org/hello.world/compare/a...b"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"files": [
                {"filename": "new.ipynb", "status": "renamed", "previous_filename": "old.ipynb"},
                {"filename": "gone.ipynb", "status": "removed"},
                {"filename": "odd.ipynb", "status": "something-new"},
                {"filename": "README.md", "status": "added"},
            ]})))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        let changed = client_for(&server, "")
            .compare_changed_files(&repo(), &token(), "a", "b")
            .await
            .expect("compare");
        assert_eq!(
            changed.files[0].previous_filename.as_deref(),
            Some("old.ipynb")
        );
        assert_eq!(
            changed.files.iter().map(|f| f.status).collect::<Vec<_>>(),
            [
                FileStatus::Renamed,
                FileStatus::Removed,
                FileStatus::Other,
                FileStatus::Added
            ]
        );
        assert_eq!(
            changed.notebooks().collect::<Vec<_>>(),
            ["new.ipynb", "odd.ipynb"]
        );
    }

    #[tokio::test]
    async fn retries_a_502_then_succeeds() {
        let server = MockServer::start().await;
        let body = checks::in_progress(Some("https://x/y"));
        Mock::given(method("PATCH"))
            .and(path("/repos/octo-org/hello.world/check-runs/4"))
            .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path("/repos/octo-org/hello.world/check-runs/4"))
            .and(bearer_token(TOKEN))
            .and(body_json(&body))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 4})))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        client_for(&server, "")
            .update_check_run(&repo(), &token(), CheckRunId(4), &body)
            .await
            .expect("updated");
    }

    #[tokio::test]
    async fn a_check_run_is_read_with_its_status() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v3/repos/octo-org/hello.world/check-runs/4"))
            .and(bearer_token(TOKEN))
            .and(header("accept", MEDIA_TYPE))
            .and(header("x-github-api-version", API_VERSION))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 4, "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
                "external_id": "ci/o/r/a.ipynb/attempts/1", "status": "completed",
                "conclusion": "failure", "name": "nbci / a.ipynb",
                "started_at": "2018-05-04T01:14:52Z", "completed_at": "2018-05-04T01:15:52Z",
                "output": {"title": "a.ipynb failed", "summary": "", "text": null,
                           "annotations_count": 0, "annotations_url": "https://x"},
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v3/repos/octo-org/hello.world/check-runs/5"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": 5, "status": "waiting", "conclusion": null})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v3/repos/octo-org/hello.world/check-runs/6"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/checks/runs#get-a-check-run",
                "status": "404"})))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        let client = client_for(&server, "/api/v3");
        let completed = client
            .get_check_run(&repo(), &token(), CheckRunId(4))
            .await
            .expect("read");
        assert_eq!(completed.id, CheckRunId(4));
        assert!(completed.is_completed());
        assert_eq!(completed.conclusion.as_deref(), Some("failure"));
        let waiting = client
            .get_check_run(&repo(), &token(), CheckRunId(5))
            .await
            .expect("a status nbci never sets is read");
        assert!(!waiting.is_completed());
        let error = client
            .get_check_run(&repo(), &token(), CheckRunId(6))
            .await
            .expect_err("unknown run");
        assert_eq!(error.status(), Some(404));
        assert!(!error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn a_creation_is_never_retried_blindly() {
        // GitHub may have created the run before the 502: only the caller,
        // after looking the run up by its external id, may try again.
        let server = MockServer::start().await;
        let body = checks::queued("nbci / a.ipynb", "abc", "key");
        Mock::given(method("POST"))
            .and(path("/repos/octo-org/hello.world/check-runs"))
            .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        let error = client_for(&server, "")
            .create_check_run(&repo(), &token(), &body)
            .await
            .expect_err("one attempt");
        assert!(error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn a_verdict_is_never_retried_blindly() {
        // GitHub may have completed the run before the 502: only the
        // caller, after asking whether it is completed, may try again.
        let server = MockServer::start().await;
        let body = checks::UpdateCheckRun {
            status: Some(checks::CheckStatus::Completed),
            conclusion: Some(checks::Conclusion::Success),
            ..checks::UpdateCheckRun::default()
        };
        Mock::given(method("PATCH"))
            .and(path("/repos/octo-org/hello.world/check-runs/4"))
            .and(bearer_token(TOKEN))
            .and(body_json(&body))
            .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        let error = client_for(&server, "")
            .update_check_run_once(&repo(), &token(), CheckRunId(4), &body)
            .await
            .expect_err("one attempt");
        assert!(error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let server = MockServer::start().await;
        let first_at = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
        let seen = first_at.clone();
        Mock::given(method("PATCH"))
            .and(path("/repos/octo-org/hello.world/check-runs/7"))
            .respond_with(move |_: &Request| {
                *seen.lock().expect("lock") = Some(std::time::Instant::now());
                ResponseTemplate::new(403)
                    .insert_header("retry-after", "1")
                    .set_body_json(json!({"message": "You have exceeded a secondary rate limit."}))
            })
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let waited = Arc::new(std::sync::Mutex::new(None::<Duration>));
        let (first, record) = (first_at.clone(), waited.clone());
        Mock::given(method("PATCH"))
            .and(path("/repos/octo-org/hello.world/check-runs/7"))
            .respond_with(move |_: &Request| {
                let start = first.lock().expect("lock").expect("first attempt seen");
                *record.lock().expect("lock") = Some(start.elapsed());
                ResponseTemplate::new(200).set_body_json(json!({"id": 7}))
            })
            .expect(1)
            .mount(&server)
            .await;
        fail_on_unexpected(&server).await;
        client_for(&server, "")
            .update_check_run(&repo(), &token(), CheckRunId(7), &checks::in_progress(None))
            .await
            .expect("updated");
        let waited = waited.lock().expect("lock").expect("second attempt seen");
        assert!(
            waited >= Duration::from_millis(950),
            "waited only {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_cap_fails_at_once() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(403)
                    .insert_header("x-ratelimit-remaining", "0")
                    .insert_header(
                        "x-ratelimit-reset",
                        (SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .expect("epoch")
                            .as_secs()
                            + 3600)
                            .to_string(),
                    )
                    .set_body_json(json!({"message": "API rate limit exceeded"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let error = client_for(&server, "")
            .compare_changed_files(&repo(), &token(), "a", "b")
            .await
            .expect_err("limited");
        assert!(
            matches!(error, ClientError::RateLimited { wait, .. } if wait > Duration::from_secs(3000)),
            "{error:?}"
        );
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn a_422_fails_at_once_with_githubs_message() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(422).set_body_json(json!({
                "message": "Validation Failed",
                "errors": [{"resource": "CheckRun", "code": "invalid", "field": "head_sha"}],
                "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run",
            })))
            .expect(1)
            .mount(&server)
            .await;
        let body = checks::queued("nbci / a.ipynb", "nope", "key");
        let error = client_for(&server, "")
            .create_check_run(&repo(), &token(), &body)
            .await
            .expect_err("refused");
        let ClientError::Api { error: github, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(github.status, 422);
        assert_eq!(github.message, "Validation Failed");
        assert!(!error.is_transient());
        assert!(!error.to_string().contains(TOKEN));
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(503))
            .expect(3)
            .mount(&server)
            .await;
        let error = client_for(&server, "")
            .compare_changed_files(&repo(), &token(), "a", "b")
            .await
            .expect_err("down");
        assert_eq!(error.status(), Some(503));
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn unreachable_github_is_a_transport_error() {
        // A port that was free a moment ago (wiremock servers are pooled, so
        // a dropped one still answers).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let api_url = format!("http://127.0.0.1:{port}");
        let client = GitHubClient::new(GitHubConfig {
            api_url,
            retry: fast_policy(),
            ..GitHubConfig::default()
        })
        .expect("client");
        let error = client
            .compare_changed_files(&repo(), &token(), "a", "b")
            .await
            .expect_err("down");
        assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn tarball_follows_the_redirect_without_the_token() {
        let github = MockServer::start().await;
        let codeload = MockServer::start().await;
        let location = format!(
            "{}/octo-org/hello.world/legacy.tar.gz/abc123?token=short-lived",
            codeload.uri()
        );
        Mock::given(method("GET"))
            .and(path("/repos/octo-org/hello.world/tarball/abc123"))
            .and(bearer_token(TOKEN))
            .respond_with(ResponseTemplate::new(302).insert_header("location", location.as_str()))
            .expect(1)
            .mount(&github)
            .await;
        fail_on_unexpected(&github).await;
        let saw_authorization = Arc::new(AtomicUsize::new(0));
        let counter = saw_authorization.clone();
        Mock::given(method("GET"))
            .and(path("/octo-org/hello.world/legacy.tar.gz/abc123"))
            .and(query_param("token", "short-lived"))
            .respond_with(move |request: &Request| {
                if request.headers.contains_key("authorization") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                ResponseTemplate::new(200).set_body_bytes(b"tarball bytes".to_vec())
            })
            .expect(1)
            .mount(&codeload)
            .await;
        fail_on_unexpected(&codeload).await;
        let bytes = client_for(&github, "")
            .download_tarball(&repo(), &token(), "abc123")
            .await
            .expect("download");
        assert_eq!(&bytes[..], b"tarball bytes");
        assert_eq!(
            saw_authorization.load(Ordering::SeqCst),
            0,
            "the token must not follow the redirect"
        );
    }
}
