//! One authenticated JSON call to a Google REST API, and Google's errors.
//!
//! Google's REST APIs answer errors as
//! `{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}`.
//! [`ApiError`] keeps the HTTP status and that body, so a caller can act on
//! the few answers that are not failures to it (404 on a status, 409 on a
//! retried create), and turns everything else into the executor's two kinds:
//! 4xx other than 408 and 429 is [`ExecutorError::Rejected`] (trying again
//! cannot help), 5xx, 408, 429 and the network are
//! [`ExecutorError::Unavailable`]. Calls are not retried here: the flows
//! retry transient errors with their own persisted backoff, and a create
//! that is retried blindly could start a second job.
//!
//! Tokens travel only in the `Authorization` header (which reqwest marks
//! sensitive); URLs and bodies carry none, so errors may quote them.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::auth::TokenSource;
use crate::ports::RemoteError;
use crate::ports::executor::ExecutorError;

/// Why an executor could not be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Occurs when an endpoint override is not an `http(s)` URL without a
    /// query, or a project or region could not be a segment of a URL path.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: String },
    /// Occurs when the HTTP client cannot be built (no TLS backend).
    #[error("the HTTP client cannot be built: {0}")]
    Http(String),
}

/// An error answer from Google, as its JSON body describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoogleError {
    /// The canonical code's name (`INVALID_ARGUMENT`, `ALREADY_EXISTS`), when
    /// the body gave one.
    pub status: Option<String>,
    /// Google's message, else the start of the body, else the HTTP reason.
    pub message: String,
}

impl GoogleError {
    /// Reads Google's error body; anything else (a proxy's HTML page)
    /// becomes the start of its text.
    pub fn from_body(http_status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(default)]
            message: String,
            status: Option<String>,
        }
        if let Ok(Envelope { error }) = serde_json::from_slice::<Envelope>(body) {
            return Self {
                status: error.status,
                message: error.message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            reqwest::StatusCode::from_u16(http_status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_owned()
        } else {
            text.chars().take(300).collect()
        };
        Self {
            status: None,
            message,
        }
    }
}

impl std::fmt::Display for GoogleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Some(status) => write!(f, "{status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a call to a Google API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Occurs when no access token could be had.
    #[error("{what}: {error}")]
    Token {
        what: &'static str,
        error: RemoteError,
    },
    /// Occurs when the request did not get an answer: no connection, a
    /// timeout, a body cut off.
    #[error("{what}: no answer: {reason}")]
    Transport { what: &'static str, reason: String },
    /// Occurs when Google answers with an error status.
    #[error("{what}: Google answered {status}: {error}")]
    Status {
        what: &'static str,
        status: u16,
        error: GoogleError,
    },
    /// Occurs when a success answer is not the JSON the call expects (a
    /// proxy in the way, an incompatible endpoint).
    #[error("{what}: unexpected answer: {reason}")]
    Decode { what: &'static str, reason: String },
}

impl ApiError {
    /// The HTTP status Google answered, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Google's canonical code (`ALREADY_EXISTS`), if it gave one.
    pub fn google_status(&self) -> Option<&str> {
        match self {
            Self::Status { error, .. } => error.status.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Token { error, .. } => error.is_transient(),
            Self::Status { status, error, .. } => {
                // Google's canonical codes that say "try again" win over
                // the HTTP status (ABORTED is a 409).
                matches!(
                    error.status.as_deref(),
                    Some("ABORTED" | "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "DEADLINE_EXCEEDED")
                ) || !is_permanent_status(*status)
            }
            // A garbled success may still have done its work: only trying
            // again (which finds that work) tells.
            Self::Transport { .. } | Self::Decode { .. } => true,
        }
    }
}

/// 4xx other than 408 (timeout) and 429 (quota, rate): the request itself is
/// refused, and sending it again cannot help.
fn is_permanent_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

impl From<ApiError> for ExecutorError {
    fn from(error: ApiError) -> Self {
        if error.is_transient() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Rejected(error.to_string())
        }
    }
}

impl From<ApiError> for RemoteError {
    fn from(error: ApiError) -> Self {
        if error.is_transient() {
            Self::transient(error.to_string())
        } else {
            Self::Permanent(error.to_string())
        }
    }
}

/// Checks that `value` can be one segment of a URL path as is: no `/`, no
/// characters that would need escaping, not `.` or `..`.
pub fn check_segment(name: &'static str, value: &str) -> Result<(), SetupError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':');
    if value.is_empty() || value == "." || value == ".." || !value.chars().all(allowed) {
        return Err(SetupError::InvalidSetting {
            name,
            reason: format!("{value:?} is not a valid identifier"),
        });
    }
    Ok(())
}

/// Whether a resource name Google returned (`projects/123/jobs/x`) can be
/// put after the API root as it is.
pub fn is_resource_name(name: &str) -> bool {
    name.starts_with("projects/")
        && name
            .split('/')
            .all(|segment| check_segment("resource name", segment).is_ok())
}

/// An API root: `endpoint` if set, else `default`; `http(s)`, no query, no
/// trailing slash.
pub fn api_root(
    name: &'static str,
    endpoint: Option<&str>,
    default: String,
) -> Result<String, SetupError> {
    let text = endpoint.map(str::trim).filter(|e| !e.is_empty());
    let root = text.map_or(default, str::to_owned);
    let invalid = |reason: String| SetupError::InvalidSetting { name, reason };
    let url = Url::parse(&root).map_err(|e| invalid(format!("{root:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid(format!("{root:?} is not an http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!("{root:?} has a query or fragment")));
    }
    Ok(root.trim_end_matches('/').to_owned())
}

/// Calls to one Google API with tokens from a [`TokenSource`].
#[derive(Debug, Clone)]
pub struct GoogleApi {
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    /// The API root, such as `https://us-central1-aiplatform.googleapis.com`.
    root: String,
}

impl GoogleApi {
    pub fn new(
        root: String,
        tokens: Arc<dyn TokenSource>,
        request_timeout: Duration,
    ) -> Result<Self, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .user_agent(concat!("nbci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Http(e.to_string()))?;
        Ok(Self { http, tokens, root })
    }

    /// The API root, for messages and tests.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `method {root}/{path}` with `query`, `body` as JSON when given; the
    /// answer's JSON read as `T` (an empty answer is read as `{}`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let token = self
            .tokens
            .token()
            .await
            .map_err(|error| ApiError::Token { what, error })?;
        let url = format!("{}/{}", self.root, path.trim_start_matches('/'));
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            what,
            // Without the URL: it names nothing secret, but the reason is enough.
            reason: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ApiError::Status {
                what,
                status: status.as_u16(),
                error: GoogleError::from_body(status.as_u16(), &bytes),
            });
        }
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
            what,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_s_error_body_is_read_and_anything_else_quoted() {
        let error = GoogleError::from_body(
            409,
            br#"{"error": {"code": 409, "message": "Field: job.job_id Error: A job with this id already exists.", "status": "ALREADY_EXISTS"}}"#,
        );
        assert_eq!(error.status.as_deref(), Some("ALREADY_EXISTS"));
        assert!(error.message.contains("already exists"));
        assert_eq!(
            GoogleError::from_body(502, b"<html>Bad Gateway</html>").message,
            "<html>Bad Gateway</html>"
        );
        assert_eq!(
            GoogleError::from_body(503, b"").message,
            "Service Unavailable"
        );
    }

    #[test]
    fn only_refusals_are_permanent() {
        let status = |status| ApiError::Status {
            what: "x",
            status,
            error: GoogleError::default(),
        };
        for (code, transient) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (408, true),
            (409, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(status(code).is_transient(), transient, "{code}");
            let executor = ExecutorError::from(status(code));
            assert_eq!(executor.is_transient(), transient, "{code}");
        }
    }

    #[test]
    fn roots_and_names_are_checked() {
        assert_eq!(
            api_root("E", Some("http://127.0.0.1:9/api/ "), "x".into()).as_deref(),
            Ok("http://127.0.0.1:9/api")
        );
        assert_eq!(
            api_root("E", None, "https://ml.googleapis.com".into()).as_deref(),
            Ok("https://ml.googleapis.com")
        );
        for bad in ["ftp://x", "not a url", "http://x/?q=1"] {
            assert!(api_root("E", Some(bad), "x".into()).is_err(), "{bad}");
        }
        assert!(is_resource_name(
            "projects/123456789012/locations/us-central1/customJobs/42"
        ));
        for bad in [
            "local:abc:1",
            "projects/../x",
            "projects/a?b",
            "projects/a//b",
            "projects/a b",
        ] {
            assert!(!is_resource_name(bad), "{bad}");
        }
        assert!(check_segment("p", "example.com:my-project").is_ok());
        assert!(check_segment("p", "a/b").is_err());
    }
}
