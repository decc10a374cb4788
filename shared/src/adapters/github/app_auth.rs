//! GitHub App authentication: the App's JWT, and installation tokens cached
//! per installation.
//!
//! An App proves itself with a short RS256 JWT signed by its private key
//! ([`AppCredentials::app_jwt`]) and trades it for an installation token
//! (`POST /app/installations/{id}/access_tokens`), which every REST call then
//! uses. Installation tokens live an hour; [`InstallationTokens`] keeps each
//! one until five minutes before its `expires_at`, so a burst of webhooks
//! makes one exchange, and concurrent callers for one installation share it.
//!
//! Secrets never reach a log: the key and tokens print as `***`
//! ([`Secret`], the `Debug` of [`AppCredentials`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{ClientError, GitHubClient, decode};
use crate::domain::repo::{InstallationId, RepoRef};
pub use crate::util::secret::Secret;
use crate::util::time::parse_rfc3339;

/// The variable holding the App's id (numeric) or client id (`Iv1.…`).
pub const APP_ID_VAR: &str = "GITHUB_APP_ID";
/// The variable holding the App's private key: PEM text, or a path to a PEM file.
pub const PRIVATE_KEY_VAR: &str = "GITHUB_APP_PRIVATE_KEY";

/// `iat` is set this far in the past, against clock drift (GitHub's advice).
const JWT_BACKDATE: Duration = Duration::from_secs(60);
/// `exp` is this far ahead: with the backdating, 10 minutes in all, GitHub's maximum.
const JWT_LIFETIME: Duration = Duration::from_secs(540);
/// A cached installation token is replaced this long before it expires, so
/// that no call starts with a token about to die.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Why the App could not authenticate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Occurs when a required variable is unset or empty.
    #[error("{name} is not set")]
    MissingVariable {
        /// The variable.
        name: &'static str,
    },
    /// Occurs when a variable is set to something unusable. The reason never
    /// contains the key.
    #[error("{name} is invalid: {reason}")]
    InvalidVariable {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when the JWT cannot be signed (a key the crypto library refuses).
    #[error("cannot sign the GitHub App JWT: {0}")]
    Jwt(String),
    /// Occurs when the App is not installed on a repository (404) or GitHub
    /// cannot say.
    #[error("cannot find the App's installation on {repo}: {source}")]
    Lookup {
        repo: String,
        #[source]
        source: Box<ClientError>,
    },
    /// Occurs when the token exchange fails: a 401 usually means the key or
    /// App id is wrong or the clock is off; a 404, that the App was uninstalled.
    #[error("cannot get an installation token for installation {installation}: {source}")]
    Exchange {
        /// The installation.
        installation: InstallationId,
        /// The failed call.
        #[source]
        source: ClientError,
    },
}

/// The App's identity: its id and private key, read once at start-up.
#[derive(Clone)]
pub struct AppCredentials {
    /// The numeric App id or the client id; the JWT's `iss`.
    app_id: String,
    /// The parsed private key (never printed).
    key: EncodingKey,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("private_key", &"***")
            .finish()
    }
}

/// The JWT's claims, as GitHub documents them. `iss` is a string even for a
/// numeric App id: RFC 7519 makes it a StringOrURI, and GitHub's examples
/// send the id or client id as a string.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

impl AppCredentials {
    /// Credentials from an App id (or client id) and a PEM private key
    /// (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`). The key
    /// is tried once here, so a bad one fails at start-up, not at the first
    /// webhook.
    pub fn new(app_id: &str, private_key_pem: &[u8]) -> Result<Self, AuthError> {
        let app_id = app_id.trim();
        if app_id.is_empty() {
            return Err(AuthError::MissingVariable { name: APP_ID_VAR });
        }
        if !app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(AuthError::InvalidVariable {
                name: APP_ID_VAR,
                reason: "expected the App's numeric id or its client id (such as Iv1.0123abcd)"
                    .into(),
            });
        }
        let invalid_key = |reason: &str| AuthError::InvalidVariable {
            name: PRIVATE_KEY_VAR,
            reason: reason.into(),
        };
        let text = String::from_utf8_lossy(private_key_pem);
        if !text.contains("PRIVATE KEY-----") {
            return Err(invalid_key(
                "not a PEM private key (expected `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN PRIVATE KEY-----`)",
            ));
        }
        let key = EncodingKey::from_rsa_pem(private_key_pem)
            .map_err(|_| invalid_key("the PEM is not an RSA private key (PKCS#1 or PKCS#8)"))?;
        // Check the key the way signing will load it, without signing: the first
        // signature seeds the crypto library's random generator, which costs
        // tens of milliseconds that a cold start should not pay.
        let der = pem_der(&text).ok_or_else(|| invalid_key("the PEM body is not base64"))?;
        let parsed = if text.contains("BEGIN RSA PRIVATE KEY") {
            aws_lc_rs::rsa::KeyPair::from_der(&der)
        } else {
            aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
        };
        parsed.map_err(|_| invalid_key("the RSA private key is incomplete or invalid"))?;
        Ok(Self {
            app_id: app_id.to_owned(),
            key,
        })
    }

    /// Reads `GITHUB_APP_ID` and `GITHUB_APP_PRIVATE_KEY` (PEM text, or a path
    /// to a PEM file) through `lookup`; errors name the variable at fault.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let read = |name: &'static str| {
            lookup(name)
                .filter(|value| !value.trim().is_empty())
                .ok_or(AuthError::MissingVariable { name })
        };
        let app_id = read(APP_ID_VAR)?;
        let key = read(PRIVATE_KEY_VAR)?;
        Self::new(&app_id, &private_key_bytes(&key)?)
    }

    /// The App id or client id, as configured.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A JWT for the App at `now`: RS256, `iat` = now - 60 s, `exp` = now +
    /// 540 s (10 minutes in all, GitHub's maximum), `iss` = the App id.
    pub fn app_jwt(&self, now: SystemTime) -> Result<Secret, AuthError> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            iat: now.saturating_sub(JWT_BACKDATE).as_secs(),
            exp: (now + JWT_LIFETIME).as_secs(),
            iss: &self.app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| AuthError::Jwt(e.to_string()))
    }
}

/// The DER bytes of the first PEM block in `text`.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .map(str::trim)
        .collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The PEM text of `GITHUB_APP_PRIVATE_KEY`: the value itself when it is PEM
/// (with `\n` escapes turned into newlines, as single-line secret stores
/// write them), else the contents of the file it names.
pub fn private_key_pem(value: &str) -> Result<String, String> {
    private_key_bytes(value)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|error| match error {
            AuthError::InvalidVariable { reason, .. } => reason,
            other => other.to_string(),
        })
}

fn private_key_bytes(value: &str) -> Result<Vec<u8>, AuthError> {
    let value = value.trim();
    if value.starts_with("-----BEGIN") {
        let text = if value.contains('\n') {
            value.to_owned()
        } else {
            value.replace("\\n", "\n")
        };
        return Ok(text.into_bytes());
    }
    let path = Path::new(value);
    std::fs::read(path).map_err(|e| AuthError::InvalidVariable {
        name: PRIVATE_KEY_VAR,
        reason: format!(
            "it is not PEM text, and the file {} cannot be read: {e}",
            path.display()
        ),
    })
}

/// A cached installation token.
#[derive(Clone)]
struct CachedToken {
    token: Secret,
    /// `expires_at` minus the margin; `None` when GitHub gave no usable
    /// `expires_at`, which makes the token single-use.
    refresh_at: Option<SystemTime>,
}

/// One installation's slot: the lock makes concurrent callers wait for the
/// exchange in flight instead of starting their own.
type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// The clock that decides whether a cached token is fresh, replaceable in tests.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Installation tokens, cached per installation until five minutes before
/// they expire. Share one (in an `Arc`) across the service.
pub struct InstallationTokens {
    credentials: AppCredentials,
    client: GitHubClient,
    slots: SyncMutex<HashMap<InstallationId, Slot>>,
    clock: Clock,
}

impl fmt::Debug for InstallationTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .slots
            .lock()
            .map(|slots| slots.len())
            .unwrap_or_default();
        f.debug_struct("InstallationTokens")
            .field("credentials", &self.credentials)
            .field("api", &self.client.api_url().as_str())
            .field("installations", &cached)
            .finish()
    }
}

impl InstallationTokens {
    /// A cache that exchanges JWTs of `credentials` through `client`.
    pub fn new(credentials: AppCredentials, client: GitHubClient) -> Self {
        Self {
            credentials,
            client,
            slots: SyncMutex::new(HashMap::new()),
            clock: Arc::new(SystemTime::now),
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// An installation token for `installation`: the cached one while it has
    /// more than five minutes to live, else a new one from GitHub. Callers
    /// for one installation at the same time share one exchange.
    pub async fn token(&self, installation: InstallationId) -> Result<Secret, AuthError> {
        let slot = self.slot(installation);
        let mut cached = slot.lock().await;
        let now = (self.clock)();
        if let Some(CachedToken {
            token,
            refresh_at: Some(refresh_at),
        }) = cached.as_ref()
            && now < *refresh_at
        {
            return Ok(token.clone());
        }
        let fresh = self.exchange(installation).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// The installation of the App on `repo`
    /// (`GET /repos/{owner}/{repo}/installation`, as the App itself): what a
    /// Scheduler tick, which names only a repository, acts as.
    pub async fn installation_of(&self, repo: &RepoRef) -> Result<InstallationId, AuthError> {
        #[derive(Deserialize)]
        struct Installation {
            id: InstallationId,
        }
        let what = "find the App's installation";
        let jwt = self.credentials.app_jwt(SystemTime::now())?;
        let url = self
            .client
            .url(&["repos", repo.owner(), repo.name(), "installation"]);
        let lookup_error = |source| AuthError::Lookup {
            repo: repo.to_string(),
            source: Box::new(source),
        };
        let response = self
            .client
            .send(what, || {
                self.client.request(Method::GET, url.clone(), jwt.expose())
            })
            .await
            .map_err(lookup_error)?;
        Ok(decode::<Installation>(what, response)
            .await
            .map_err(lookup_error)?
            .id)
    }

    /// Drops the cached token of `installation`, after GitHub refused it (401).
    pub async fn forget(&self, installation: InstallationId) {
        let slot = self.slot(installation);
        *slot.lock().await = None;
    }

    /// Drops the cached token of `installation` if it is still `refused`:
    /// when several calls meet the same revoked token at once, the first
    /// forgets it and fetches a new one, and the others then use that one
    /// instead of forgetting it in turn (one exchange per revocation, not
    /// one per call in flight).
    pub async fn forget_refused(&self, installation: InstallationId, refused: &Secret) {
        let slot = self.slot(installation);
        let mut cached = slot.lock().await;
        if cached
            .as_ref()
            .is_some_and(|cached| cached.token.expose() == refused.expose())
        {
            *cached = None;
        }
    }

    fn slot(&self, installation: InstallationId) -> Slot {
        // A poisoned lock only means another thread panicked while inserting:
        // the map itself is still sound.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(installation).or_default().clone()
    }

    async fn exchange(&self, installation: InstallationId) -> Result<CachedToken, AuthError> {
        #[derive(Deserialize)]
        struct AccessToken {
            token: String,
            expires_at: Option<String>,
        }
        let what = "create installation token";
        let exchange_error = |source| AuthError::Exchange {
            installation,
            source,
        };
        // The real clock, whatever the cache's clock says: GitHub checks it.
        let jwt = self.credentials.app_jwt(SystemTime::now())?;
        let id = installation.to_string();
        let url = self
            .client
            .url(&["app", "installations", &id, "access_tokens"]);
        let response = self
            .client
            .send(what, || {
                self.client.request(Method::POST, url.clone(), jwt.expose())
            })
            .await
            .map_err(exchange_error)?;
        let answer: AccessToken = decode(what, response).await.map_err(exchange_error)?;
        if answer.token.is_empty() {
            return Err(exchange_error(ClientError::Decode {
                what,
                reason: "the token is empty".into(),
            }));
        }
        let refresh_at = match answer.expires_at.as_deref().and_then(parse_rfc3339) {
            Some(expires_at) => expires_at.checked_sub(TOKEN_REFRESH_MARGIN),
            None => {
                tracing::warn!(%installation, "installation token without a readable expires_at; not caching it");
                None
            }
        };
        tracing::debug!(%installation, "new installation token");
        Ok(CachedToken {
            token: Secret::new(answer.token),
            refresh_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{Value, json};
    use wiremock::matchers::{header, header_exists, method, path};
    use wiremock::{Match, Mock, MockBuilder, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::adapters::github::client::{API_VERSION, GitHubConfig, MEDIA_TYPE, RetryPolicy};

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn credentials() -> AppCredentials {
        AppCredentials::new("12345", fixture("test-app-key.pkcs1.pem").as_bytes())
            .expect("test key")
    }

    fn lookup(pairs: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&'static str, String> = pairs.iter().cloned().collect();
        move |name| map.get(name).cloned()
    }

    /// Verifies the App JWT the way GitHub does: RS256 signature with the
    /// App's public key, `iat` in the past, `exp` at most 10 minutes ahead,
    /// `iss` the App id. Prints why it refuses, so a failing test says so.
    struct ValidAppJwt {
        key: DecodingKey,
        iss: Value,
    }

    impl ValidAppJwt {
        fn new(iss: Value) -> Self {
            Self {
                key: DecodingKey::from_rsa_pem(fixture("test-app-key.pub.pem").as_bytes())
                    .expect("public key"),
                iss,
            }
        }

        fn check(&self, request: &Request) -> Result<(), String> {
            let authorization = request
                .headers
                .get("authorization")
                .ok_or("no Authorization header")?;
            let jwt = authorization
                .to_str()
                .map_err(|e| e.to_string())?
                .strip_prefix("Bearer ")
                .ok_or("not a bearer token")?;
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_required_spec_claims(&["iat", "exp", "iss"]);
            validation.leeway = 0;
            let claims = jsonwebtoken::decode::<Value>(jwt, &self.key, &validation)
                .map_err(|e| e.to_string())?
                .claims;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch")
                .as_secs();
            let (iat, exp) = (
                claims["iat"].as_u64().ok_or("iat")?,
                claims["exp"].as_u64().ok_or("exp")?,
            );
            if iat > now {
                return Err(format!("iat {iat} is in the future (now {now})"));
            }
            if exp > now + 600 || exp - iat > 600 {
                return Err(format!(
                    "exp {exp} is more than 10 minutes ahead (iat {iat}, now {now})"
                ));
            }
            if claims["iss"] != self.iss {
                return Err(format!("iss {} is not {}", claims["iss"], self.iss));
            }
            Ok(())
        }
    }

    impl Match for ValidAppJwt {
        fn matches(&self, request: &Request) -> bool {
            self.check(request)
                .map_err(|reason| eprintln!("JWT refused: {reason}"))
                .is_ok()
        }
    }

    async fn fake_github() -> MockServer {
        let server = MockServer::start().await;
        crate::adapters::github::client::tests::fail_on_unexpected(&server).await;
        server
    }

    fn tokens_for(server: &MockServer) -> InstallationTokens {
        let client = GitHubClient::new(GitHubConfig {
            api_url: format!("{}/", server.uri()),
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(10),
                max_wait: Duration::from_secs(1),
            },
            ..GitHubConfig::default()
        })
        .expect("client");
        InstallationTokens::new(credentials(), client)
    }

    fn expires_in(secs: u64) -> String {
        crate::util::time::format_rfc3339(SystemTime::now() + Duration::from_secs(secs))
    }

    /// The token exchange as GitHub checks it: path, JWT, headers.
    fn exchange_request(installation: u64) -> MockBuilder {
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{installation}/access_tokens"
            )))
            .and(ValidAppJwt::new(json!("12345")))
            .and(header("accept", MEDIA_TYPE))
            .and(header("x-github-api-version", API_VERSION))
            .and(header_exists("user-agent"))
    }

    fn token_response(token: &str, expires_at: String) -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"checks": "write", "contents": "read"},
            "repository_selection": "selected",
        }))
    }

    fn exchange_mock(installation: u64, token: &str, expires_at: String) -> Mock {
        exchange_request(installation).respond_with(token_response(token, expires_at))
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("ghs_abc");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "ghs_abc");
        let debug = format!("{:?}", credentials());
        assert!(
            debug.contains("12345") && debug.contains("***") && !debug.contains("PRIVATE"),
            "{debug}"
        );
        assert!(
            !format!(
                "{:?}",
                credentials().app_jwt(SystemTime::now()).expect("jwt")
            )
            .contains("eyJ")
        );
    }

    #[test]
    fn jwt_claims_follow_githubs_rules() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = credentials().app_jwt(now).expect("jwt");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let key = DecodingKey::from_rsa_pem(fixture("test-app-key.pub.pem").as_bytes())
            .expect("public key");
        let data = jsonwebtoken::decode::<Value>(jwt.expose(), &key, &validation)
            .expect("valid signature");
        assert_eq!(data.header.alg, Algorithm::RS256);
        assert_eq!(
            data.claims,
            json!({"iat": 1_699_999_940u64, "exp": 1_700_000_540u64, "iss": "12345"})
        );
    }

    #[test]
    fn client_ids_are_sent_as_strings() {
        let credentials =
            AppCredentials::new("Iv1.0123abcd", fixture("test-app-key.pkcs8.pem").as_bytes())
                .expect("pkcs8 key");
        let jwt = credentials.app_jwt(SystemTime::now()).expect("jwt");
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(jwt.expose())
            .expect("decodes")
            .claims;
        assert_eq!(claims["iss"], "Iv1.0123abcd");
    }

    #[test]
    fn credentials_from_pem_text_escaped_pem_or_a_path() {
        let pem = fixture("test-app-key.pkcs8.pem");
        let from_text = AppCredentials::from_lookup(lookup(&[
            (APP_ID_VAR, "12345".into()),
            (PRIVATE_KEY_VAR, pem.clone()),
        ]));
        assert_eq!(from_text.expect("text").app_id(), "12345");
        let escaped = pem.trim().replace('\n', "\\n");
        AppCredentials::from_lookup(lookup(&[
            (APP_ID_VAR, "12345".into()),
            (PRIVATE_KEY_VAR, escaped),
        ]))
        .expect("escaped");
        let path = format!(
            "{}/../tests/fixtures/github/test-app-key.pkcs1.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        AppCredentials::from_lookup(lookup(&[
            (APP_ID_VAR, " 12345 ".into()),
            (PRIVATE_KEY_VAR, path),
        ]))
        .expect("path");
    }

    #[test]
    fn credential_errors_name_the_variable_and_hide_the_key() {
        let pem = fixture("test-app-key.pkcs1.pem");
        let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
            (
                vec![(PRIVATE_KEY_VAR, pem.clone())],
                "GITHUB_APP_ID is not set",
            ),
            (
                vec![(APP_ID_VAR, "".into()), (PRIVATE_KEY_VAR, pem.clone())],
                "GITHUB_APP_ID is not set",
            ),
            (
                vec![
                    (APP_ID_VAR, "12 345".into()),
                    (PRIVATE_KEY_VAR, pem.clone()),
                ],
                "GITHUB_APP_ID is invalid",
            ),
            (
                vec![(APP_ID_VAR, "1".into())],
                "GITHUB_APP_PRIVATE_KEY is not set",
            ),
            (
                vec![
                    (APP_ID_VAR, "1".into()),
                    (PRIVATE_KEY_VAR, "/no/such/key.pem".into()),
                ],
                "/no/such/key.pem",
            ),
            (
                vec![
                    (APP_ID_VAR, "1".into()),
                    (PRIVATE_KEY_VAR, fixture("test-app-key.pub.pem")),
                ],
                "GITHUB_APP_PRIVATE_KEY is invalid",
            ),
            (
                vec![
                    (APP_ID_VAR, "1".into()),
                    (PRIVATE_KEY_VAR, pem.replace("MII", "XXX")),
                ],
                "GITHUB_APP_PRIVATE_KEY is invalid",
            ),
        ];
        for (vars, expected) in cases {
            let error = AppCredentials::from_lookup(lookup(&vars))
                .expect_err(expected)
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} does not contain {expected:?}"
            );
            assert!(!error.contains("MII"), "key material in {error}");
        }
    }

    #[tokio::test]
    async fn token_exchange_checks_the_jwt_and_caches() {
        let server = fake_github().await;
        exchange_mock(957387, "ghs_first", expires_in(3600))
            .expect(1)
            .mount(&server)
            .await;
        let tokens = tokens_for(&server);
        let first = tokens.token(InstallationId(957387)).await.expect("token");
        let second = tokens.token(InstallationId(957387)).await.expect("cached");
        assert_eq!(
            (first.expose(), second.expose()),
            ("ghs_first", "ghs_first")
        );
    }

    #[tokio::test]
    async fn tokens_are_replaced_five_minutes_before_they_expire() {
        let server = fake_github().await;
        // 4 minutes left: inside the margin, so every call exchanges again.
        exchange_mock(1, "short-lived", expires_in(240))
            .expect(2)
            .mount(&server)
            .await;
        let tokens = tokens_for(&server);
        tokens.token(InstallationId(1)).await.expect("token");
        tokens.token(InstallationId(1)).await.expect("token again");
    }

    #[tokio::test]
    async fn cached_token_is_refreshed_once_the_clock_passes_the_margin() {
        let server = fake_github().await;
        let expires_at = SystemTime::now() + Duration::from_secs(3600);
        exchange_mock(2, "tok", crate::util::time::format_rfc3339(expires_at))
            .expect(2)
            .mount(&server)
            .await;
        let offset = Arc::new(AtomicU64::new(0));
        let clock_offset = offset.clone();
        let tokens = tokens_for(&server).with_clock(move || {
            SystemTime::now() + Duration::from_secs(clock_offset.load(Ordering::SeqCst))
        });
        tokens.token(InstallationId(2)).await.expect("first");
        offset.store(54 * 60, Ordering::SeqCst);
        tokens
            .token(InstallationId(2))
            .await
            .expect("still cached at 54 min");
        offset.store(56 * 60, Ordering::SeqCst);
        tokens
            .token(InstallationId(2))
            .await
            .expect("refreshed at 56 min");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_exchange_and_installations_are_separate() {
        let server = fake_github().await;
        exchange_request(10)
            .respond_with(
                token_response("ten", expires_in(3600)).set_delay(Duration::from_millis(200)),
            )
            .expect(1)
            .mount(&server)
            .await;
        exchange_mock(11, "eleven", expires_in(3600))
            .expect(1)
            .mount(&server)
            .await;
        let tokens = Arc::new(tokens_for(&server));
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.token(InstallationId(10)).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.expect("joined").expect("token").expose(), "ten");
        }
        assert_eq!(
            tokens
                .token(InstallationId(11))
                .await
                .expect("token")
                .expose(),
            "eleven"
        );
    }

    #[tokio::test]
    async fn forget_drops_the_cached_token() {
        let server = fake_github().await;
        exchange_mock(3, "t", expires_in(3600))
            .expect(2)
            .mount(&server)
            .await;
        let tokens = tokens_for(&server);
        tokens.token(InstallationId(3)).await.expect("token");
        tokens.forget(InstallationId(3)).await;
        tokens.token(InstallationId(3)).await.expect("new token");
    }

    #[tokio::test]
    async fn a_refused_token_is_forgotten_once_however_many_calls_met_it() {
        let server = fake_github().await;
        exchange_mock(4, "revoked", expires_in(3600))
            .up_to_n_times(1)
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        exchange_mock(4, "fresh", expires_in(3600))
            .expect(1)
            .with_priority(2)
            .mount(&server)
            .await;
        let tokens = tokens_for(&server);
        let refused = tokens.token(InstallationId(4)).await.expect("token");
        // The first call that met the 401 forgets it and fetches anew ...
        tokens.forget_refused(InstallationId(4), &refused).await;
        let fresh = tokens.token(InstallationId(4)).await.expect("new token");
        // ... a second one, late with the same news, keeps the new token.
        tokens.forget_refused(InstallationId(4), &refused).await;
        tokens
            .forget_refused(InstallationId(4), &Secret::new("other".to_owned()))
            .await;
        let kept = tokens.token(InstallationId(4)).await.expect("cached");
        assert_eq!((fresh.expose(), kept.expose()), ("fresh", "fresh"));
    }

    #[tokio::test]
    async fn a_refused_exchange_names_the_installation_and_never_the_jwt() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/app/installations/404/access_tokens"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
            })))
            .expect(1)
            .mount(&server)
            .await;
        let error = tokens_for(&server)
            .token(InstallationId(404))
            .await
            .expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("installation 404") && text.contains("Not Found"),
            "{text}"
        );
        assert!(!text.contains("eyJ"), "{text}");
    }
}
