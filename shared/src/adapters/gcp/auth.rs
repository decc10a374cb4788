//! Access tokens for Google APIs.
//!
//! Every Google adapter asks a [`TokenSource`] for a token on each call
//! rather than keeping one: tokens expire within the hour, and the source
//! caches and refreshes them. The trait is all a caller needs, so the
//! executors here and the deployers share it, and tests hand in a fixed token
//! without any credentials at all.
//!
//! [`AdcTokenSource`] is Application Default Credentials through the official
//! `google-cloud-auth` crate (**contract**: "Google credentials" in the
//! architecture): `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's well-known file
//! when present (a laptop), else the metadata server (Cloud Run, a Vertex AI
//! job). The crate reads `GCE_METADATA_HOST` like every Google client library,
//! so tests point it at a fake metadata server instead of switching
//! authentication off.

use async_trait::async_trait;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder, mds};

use crate::ports::RemoteError;
use crate::util::secret::Secret;

/// The OAuth scope of every Google Cloud API nbci calls; what a token may
/// actually do is decided by the IAM roles of its service account.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where Google access tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token valid for at least the next few minutes, to send as
    /// `Authorization: Bearer`. A transient error (the metadata server
    /// unreachable or overloaded) may succeed when tried again; a permanent
    /// one (no credentials, a refused key) will not.
    async fn token(&self) -> Result<Secret, RemoteError>;
}

/// Why Application Default Credentials could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsSetupError {
    /// Occurs when `GOOGLE_APPLICATION_CREDENTIALS` (or gcloud's well-known
    /// file) names a file that cannot be read, or holds credentials that
    /// `google-cloud-auth` cannot use.
    #[error("Application Default Credentials cannot be loaded: {0}")]
    Adc(String),
}

/// Tokens from Application Default Credentials, cached and refreshed by
/// `google-cloud-auth`. Build one at start-up and share it: clones share the
/// cache.
#[derive(Clone)]
pub struct AdcTokenSource {
    credentials: AccessTokenCredentials,
    /// Where the credentials come from, for `Debug` (never the token).
    origin: &'static str,
}

impl std::fmt::Debug for AdcTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdcTokenSource")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl AdcTokenSource {
    /// Application Default Credentials as the environment defines them, with
    /// the cloud-platform scope. Nothing is fetched yet: a missing metadata
    /// server shows at the first [`TokenSource::token`], not here.
    pub fn from_environment() -> Result<Self, CredentialsSetupError> {
        let credentials = Builder::default()
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build_access_token_credentials()
            .map_err(|e| CredentialsSetupError::Adc(e.to_string()))?;
        Ok(Self {
            credentials,
            origin: "application default credentials",
        })
    }

    /// Tokens of the metadata server at `endpoint` (`http://host:port`),
    /// whatever key file the environment names. `GCE_METADATA_HOST`, when
    /// set, still wins: `google-cloud-auth` gives it precedence.
    pub fn from_metadata_server(endpoint: &str) -> Result<Self, CredentialsSetupError> {
        let credentials = mds::Builder::default()
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build_access_token_credentials()
            .map_err(|e| CredentialsSetupError::Adc(e.to_string()))?;
        Ok(Self {
            credentials,
            origin: "metadata server",
        })
    }
}

#[async_trait]
impl TokenSource for AdcTokenSource {
    async fn token(&self) -> Result<Secret, RemoteError> {
        match self.credentials.access_token().await {
            Ok(token) => Ok(Secret::new(token.token)),
            // google-cloud-auth's messages name the endpoint and the cause,
            // never the token.
            Err(e) if e.is_transient() => Err(RemoteError::transient(format!(
                "no Google access token from the {}: {e}",
                self.origin
            ))),
            Err(e) => Err(RemoteError::Permanent(format!(
                "no Google access token from the {}: {e}",
                self.origin
            ))),
        }
    }
}

/// A token source for tests: always the same token, or always the same error.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct FixedToken(pub Result<Secret, RemoteError>);

#[cfg(test)]
impl FixedToken {
    pub(crate) fn new(token: &str) -> Self {
        Self(Ok(Secret::new(token)))
    }
}

#[cfg(test)]
#[async_trait]
impl TokenSource for FixedToken {
    async fn token(&self) -> Result<Secret, RemoteError> {
        self.0.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;
    use wiremock::matchers::{any, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    /// The metadata server's token endpoint (the same on GCE, Cloud Run and
    /// in Vertex AI jobs).
    pub(crate) const TOKEN_PATH: &str =
        "/computeMetadata/v1/instance/service-accounts/default/token";

    /// A fake metadata server that hands out `token` to requests that carry
    /// `Metadata-Flavor: Google` and ask for the cloud-platform scope; any
    /// other request fails the test.
    pub(crate) async fn fake_metadata_server(token: &str) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(TOKEN_PATH))
            .and(header("Metadata-Flavor", "Google"))
            .and(query_param("scopes", CLOUD_PLATFORM_SCOPE))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("Metadata-Flavor", "Google")
                    .set_body_json(json!({
                        "access_token": token,
                        "expires_in": 3599,
                        "token_type": "Bearer"
                    })),
            )
            .mount(&server)
            .await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(418))
            .with_priority(u8::MAX)
            .expect(0)
            .named("fallback: unexpected request to the metadata server")
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn tokens_come_from_the_metadata_server_and_are_cached() {
        let server = fake_metadata_server("ya29.from-metadata").await;
        let source = AdcTokenSource::from_metadata_server(&server.uri()).expect("source");
        for _ in 0..3 {
            let token = source.token().await.expect("token");
            assert_eq!(token.expose(), "ya29.from-metadata");
        }
        let requests = server.received_requests().await.unwrap_or_default();
        assert_eq!(requests.len(), 1, "the token is cached until it expires");
        assert!(!format!("{source:?}").contains("ya29"));
    }

    #[tokio::test]
    async fn a_metadata_server_that_refuses_is_permanent_and_one_that_fails_transient() {
        for (status, transient) in [(403, false), (503, true)] {
            let server = MockServer::start().await;
            Mock::given(path(TOKEN_PATH))
                .respond_with(ResponseTemplate::new(status).set_body_string("nope"))
                .mount(&server)
                .await;
            let source = AdcTokenSource::from_metadata_server(&server.uri()).expect("source");
            let error = source.token().await.expect_err("no token");
            assert_eq!(error.is_transient(), transient, "{status}: {error}");
            assert!(error.to_string().contains("metadata server"), "{error}");
        }
    }

    /// Set by [`adc_honours_gce_metadata_host`] for the child it starts.
    const CHILD_MARKER: &str = "NBCI_TEST_ADC_CHILD";
    /// Printed by the child once it got the token, so that a child which
    /// skipped cannot pass for one that checked.
    const CHILD_SUCCESS: &str = "adc child: token from GCE_METADATA_HOST";

    /// Application Default Credentials with no key file fall back to the
    /// metadata server, and `google-cloud-auth` reads its address from
    /// `GCE_METADATA_HOST` only, from the process environment. Setting a
    /// variable in a test process is unsafe (other test threads read the
    /// environment) and `cargo test` runs tests as threads of one process,
    /// so this test runs its helper below in a child process of the same
    /// test binary, with the variable set (and no key file: no
    /// `GOOGLE_APPLICATION_CREDENTIALS`, an empty `HOME`) in that child only.
    #[tokio::test]
    async fn adc_honours_gce_metadata_host() {
        let server = fake_metadata_server("ya29.adc").await;
        let home = tempfile::tempdir().expect("empty home");
        let exe = std::env::current_exe().expect("the test binary");
        let output = tokio::process::Command::new(exe)
            .args([
                "--exact",
                "adapters::gcp::auth::tests::adc_child_reads_the_token",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GCE_METADATA_HOST", server.address().to_string())
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("HOME", home.path())
            .env(CHILD_MARKER, "ya29.adc")
            .output()
            .await
            .expect("the child runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains(CHILD_SUCCESS),
            "child failed:\n{stdout}\n{stderr}"
        );
        assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
    }

    /// Run only by [`adc_honours_gce_metadata_host`], in its own process.
    #[tokio::test]
    #[ignore = "a helper that adc_honours_gce_metadata_host runs in a child process"]
    async fn adc_child_reads_the_token() {
        let Some(expected) = std::env::var_os(CHILD_MARKER) else {
            eprintln!("skipped: run by adc_honours_gce_metadata_host, not on its own");
            return;
        };
        let source = AdcTokenSource::from_environment().expect("ADC");
        let token = source
            .token()
            .await
            .expect("a token from the fake metadata server");
        assert_eq!(Some(token.expose()), expected.to_str());
        println!("{CHILD_SUCCESS}");
    }

    #[tokio::test]
    async fn fixed_tokens_are_for_tests() {
        let error = FixedToken(Err(RemoteError::Permanent("no".into())))
            .token()
            .await
            .expect_err("error");
        assert!(!error.is_transient());
        assert_eq!(
            FixedToken::new("t").token().await.expect("token").expose(),
            "t"
        );
    }
}
