//! Google-signed ID tokens, checked before a request from Google is served.
//!
//! Cloud Scheduler (the scheduler's `POST /tick`), Pub/Sub push
//! (github-webhook's `POST /dispatch`) and Eventarc (gcs-events' `POST /`)
//! call us with `Authorization: Bearer <ID token>`, a JWT that Google signed
//! for one of our service accounts and one audience (the service's URL). A
//! service that anyone can reach has to check that token itself, or anyone
//! could start pipelines or feed it forged events. [`OidcVerifier`] checks,
//! in this order, and refuses with one [`OidcError`] per reason:
//! 1. one `Authorization: Bearer` header holding three base64url parts, at
//!    most [`MAX_TOKEN_BYTES`] (Google's tokens are about 1 KiB);
//! 2. the header's `alg` is `RS256`, exactly: `none`, `HS256` (an attacker's
//!    HMAC keyed with our *public* key) and every other algorithm are refused
//!    before any key is looked at, whatever key they name;
//! 3. the header's `kid` names a key of the JWKS at
//!    [`OidcSettings::jwks_url`] (Google's certs; see [`keys`] for caching);
//!    keys offered inside the token (`jwk`, `jku`, `x5u`) are never used;
//! 4. the RS256 signature verifies under that key;
//! 5. `iss` is Google (`https://accounts.google.com` or `accounts.google.com`),
//!    `aud` is [`OidcSettings::audience`], and `exp`, `nbf` and `iat` hold
//!    with [`LEEWAY`] for clock skew;
//! 6. when [`OidcSettings::email`] is set, `email` is that account and
//!    `email_verified` is true: the audience alone admits a token that *any*
//!    Google account minted for our URL.
//!
//! [`OidcGuard`] puts routes behind the verifier in axum: 401 with an empty
//! body on a refusal (through [`AppError::Unauthorized`], which logs the
//! reason), 503 when Google's keys cannot be fetched (the sender retries),
//! and with no audience configured it lets everything through (local
//! `nbci serve`) after saying so once in the log.
//!
//! # Why `jsonwebtoken` rather than `google-cloud-auth`'s verifier
//! `google-cloud-auth` (its `idtoken` feature) has an ID-token verifier, built
//! on the same `jsonwebtoken` calls that do the cryptography here. It does not
//! fit a public endpoint: it takes the algorithm from the token's own header
//! and also accepts ES256 and IAP's issuer; its key cache fetches the JWKS
//! again on *every* unknown `kid`, with no rate limit, so a flood of made-up
//! ids is a flood of requests to Google; it ignores `Cache-Control`; and it
//! holds its cache with `try_write` across the fetch, so verifications that
//! arrive while one fetches fail instead of waiting. What is ours here is
//! policy (which algorithm, issuer, claims) and the key cache; parsing JWKs,
//! RSA and claim validation stay `jsonwebtoken`'s (aws-lc-rs underneath).
//!
//! # Behind Cloud Run's own IAM check
//! A Cloud Run service that requires authentication (`roles/run.invoker`,
//! no `allUsers`) checks the token itself and then replaces its signature
//! with `SIGNATURE_REMOVED_BY_GOOGLE` before the request reaches us. Such a
//! token cannot be verified again, and a public service cannot tell it from a
//! forgery, so it is refused with its own reason
//! ([`OidcError::SignatureRemoved`]), which says what to change: let IAM be
//! the check (no `NBCI_OIDC_AUDIENCE`), or let the service check (allow
//! unauthenticated invocations, keep ingress internal).
//!
//! Errors never contain the token; the few header fields they name (`alg`,
//! `kid`) are shortened to printable ASCII.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::http::AppError;

pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

/// Google's JWKS for ID tokens: the default of `NBCI_OIDC_JWKS_URL`.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The issuers Google writes in ID tokens (both forms occur).
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Allowed clock difference between Google and us for `exp`, `nbf`, `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The longest token read; Google's ID tokens are about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// What Cloud Run writes in place of the signature of a token it checked.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";
/// The only algorithm Google signs ID tokens with.
const ALGORITHM: &str = "RS256";

/// Why a request's ID token was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// Occurs when there is no `Authorization` header, or it holds a scheme
    /// with nothing after it.
    #[error("no bearer token: the Authorization header is missing or empty")]
    MissingToken,
    /// Occurs when the `Authorization` header is not `Bearer <token>`, or
    /// there is more than one.
    #[error("the Authorization header is not one `Bearer <token>`")]
    NotBearer,
    /// Occurs when the header or the token is longer than any ID token.
    #[error("the token is over {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Occurs when the token is not a JWS in compact form with a readable
    /// JSON header and claims of the expected types.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// Occurs when Cloud Run's IAM check already verified the token and
    /// removed its signature: the service requires authentication.
    #[error(
        "the token's signature was removed by Cloud Run (SIGNATURE_REMOVED_BY_GOOGLE): the service \
         requires IAM authentication, which checks tokens before nbci sees them; either rely on IAM \
         (unset NBCI_OIDC_AUDIENCE) or allow unauthenticated invocations so nbci checks them"
    )]
    SignatureRemoved,
    /// Occurs when the token's `alg` is anything but RS256 (`none`, HS256 with
    /// the public key as its secret, ES256, ...).
    #[error("the token's algorithm {alg:?} is not RS256")]
    UnsupportedAlgorithm {
        /// The header's `alg`, shortened to printable ASCII.
        alg: String,
    },
    /// Occurs when the token's header names no `kid`.
    #[error("the token's header names no key (kid)")]
    MissingKeyId,
    /// Occurs when the JWKS, even fetched again, has no key of the token's `kid`.
    #[error("the token's key {kid:?} is not one of Google's signing keys")]
    UnknownKey {
        /// The header's `kid`, shortened to printable ASCII.
        kid: String,
    },
    /// Occurs when the signature does not verify under the key its `kid` names.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Occurs when `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// Occurs when `nbf` or `iat` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Occurs when `iss` is not Google.
    #[error("the token's issuer is not Google (accounts.google.com)")]
    WrongIssuer,
    /// Occurs when `aud` is not the configured audience: a token minted for
    /// another service.
    #[error("the token's audience is not this service's (NBCI_OIDC_AUDIENCE)")]
    WrongAudience,
    /// Occurs when a claim every Google ID token has is missing.
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    /// Occurs when an account is configured and the token's `email` is
    /// another (or none).
    #[error("the token was not minted for {expected} (NBCI_OIDC_EMAIL)")]
    WrongEmail {
        /// The configured account.
        expected: String,
    },
    /// Occurs when an account is configured and `email_verified` is not true.
    #[error("the token's email is not verified (email_verified is not true)")]
    EmailNotVerified,
    /// Occurs when Google's keys cannot be fetched and none cached fits: the
    /// token could not be checked, not found wrong (503: the sender retries).
    #[error("Google's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// Occurs when a setting cannot be used (it names the variable).
    #[error("{name} is invalid: {reason}")]
    InvalidSetting {
        /// The environment variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when the HTTP client for the JWKS cannot be built.
    #[error("the HTTP client for Google's keys cannot be built: {0}")]
    Http(String),
}

impl OidcError {
    /// Whether the token could not be checked (rather than was refused):
    /// asking again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OidcError::KeysUnavailable(_))
    }
}

impl From<OidcError> for AppError {
    fn from(error: OidcError) -> Self {
        match error {
            OidcError::KeysUnavailable(_) => AppError::Unavailable(error.to_string()),
            OidcError::InvalidSetting { .. } | OidcError::Http(_) => {
                AppError::Internal(error.to_string())
            }
            refused => AppError::Unauthorized(refused.to_string()),
        }
    }
}

/// At most 64 printable ASCII characters of an attacker-written field, for
/// an error message or a log line.
pub(crate) fn printable(text: &str) -> String {
    const MAX: usize = 64;
    let mut shown: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if text.chars().nth(MAX).is_some() {
        shown.push_str("...");
    }
    shown
}

/// What a service accepts: `NBCI_OIDC_AUDIENCE`, `NBCI_OIDC_EMAIL`,
/// `NBCI_OIDC_JWKS_URL` (**contract**: configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The `aud` a token must carry: the URL the minter was told to call
    /// (Cloud Scheduler's and Pub/Sub's `audience`, usually the service URL).
    pub audience: String,
    /// The service account the token must be minted for (Cloud Scheduler's or
    /// the push subscription's); `None` admits any Google account, which only
    /// makes sense when nothing else can mint tokens for the audience.
    pub email: Option<String>,
    /// Where Google's public keys are: Google's certs, or a test's server.
    pub jwks_url: String,
}

impl OidcSettings {
    /// Tokens for `audience`, from any account, checked with Google's keys.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            email: None,
            jwks_url: GOOGLE_JWKS_URL.to_owned(),
        }
    }

    /// Only tokens minted for `email`.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Keys from `url` instead of Google's certs.
    #[must_use]
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = url.into();
        self
    }

    /// The settings as the three variables give them (blank counts as unset,
    /// as Terraform writes `NBCI_OIDC_JWKS_URL = ""`): `None` when no
    /// audience is set (no check), an error naming the variable when one is
    /// unusable or when an account is set without an audience (the operator
    /// meant to have a check that would silently be off).
    pub fn from_variables(
        audience: Option<&str>,
        email: Option<&str>,
        jwks_url: Option<&str>,
    ) -> Result<Option<Self>, OidcError> {
        fn set(value: Option<&str>) -> Option<&str> {
            value.map(str::trim).filter(|v| !v.is_empty())
        }
        let (audience, email, jwks_url) = (set(audience), set(email), set(jwks_url));
        let Some(audience) = audience else {
            if email.is_some() {
                return Err(OidcError::InvalidSetting {
                    name: "NBCI_OIDC_AUDIENCE",
                    reason: "NBCI_OIDC_EMAIL is set but NBCI_OIDC_AUDIENCE is not, so ID tokens \
                             would not be checked at all"
                        .into(),
                });
            }
            return Ok(None);
        };
        let mut settings = Self::new(audience);
        if let Some(email) = email {
            if !email.contains('@') || email.chars().any(char::is_whitespace) {
                return Err(OidcError::InvalidSetting {
                    name: "NBCI_OIDC_EMAIL",
                    reason: format!("{email:?} is not an email address"),
                });
            }
            settings = settings.with_email(email);
        }
        if let Some(url) = jwks_url {
            settings = settings.with_jwks_url(url);
        }
        settings.check()?;
        Ok(Some(settings))
    }

    fn check(&self) -> Result<(), OidcError> {
        if self.audience.trim().is_empty() {
            return Err(OidcError::InvalidSetting {
                name: "NBCI_OIDC_AUDIENCE",
                reason: "it is empty".into(),
            });
        }
        match url::Url::parse(&self.jwks_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
            _ => Err(OidcError::InvalidSetting {
                name: "NBCI_OIDC_JWKS_URL",
                reason: format!("{:?} is not an http(s) URL", self.jwks_url),
            }),
        }
    }
}

/// The claims of an accepted ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// `iss`: one of [`GOOGLE_ISSUERS`].
    pub issuer: String,
    /// `aud`: the configured audience.
    pub audience: String,
    /// `sub`: the account's unique id.
    pub subject: String,
    /// `email`: the account the token was minted for, when it says.
    pub email: Option<String>,
    /// `email_verified`.
    pub email_verified: bool,
    /// `iat`, seconds since the epoch.
    pub issued_at: u64,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// The claims as the token carries them; presence is checked after the
/// signature, so a missing claim is named rather than a parse error.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    iat: Option<u64>,
    exp: Option<u64>,
}

/// The fields of the JOSE header looked at before anything else.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// Critical extensions must be understood or the token refused (RFC 7515
    /// 4.1.11); nbci understands none.
    crit: Option<serde_json::Value>,
}

/// Checks ID tokens against one audience (and account). Build it once at
/// start-up and share it: the key cache lives inside.
#[derive(Debug)]
pub struct OidcVerifier {
    settings: OidcSettings,
    keys: keys::KeyCache,
    validation: Validation,
}

impl OidcVerifier {
    /// A verifier for `settings`. Nothing is fetched yet: the keys come with
    /// the first token, so a service starts even while Google is unreachable.
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        settings.check()?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self {
            keys: keys::KeyCache::new(settings.jwks_url.clone())?,
            settings,
            validation,
        })
    }

    /// The same verifier with fetches at least `interval` apart instead of
    /// [`keys::MIN_REFETCH_INTERVAL`] (tests of rotation use a short one).
    #[must_use]
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.keys.set_min_refetch_interval(interval);
        self
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Checks the value of an `Authorization` header; the claims when the
    /// token is a valid Google ID token for this audience (and account).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Claims, OidcError> {
        let token = bearer_token(authorization)?;
        let kid = checked_header(token)?;
        let key = self.keys.key(&kid).await?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation)
            .map_err(|e| refusal(e.kind()))?;
        self.accept(data.claims)
    }

    /// The checks `jsonwebtoken` does not make: `iat`, the account.
    fn accept(&self, raw: RawClaims) -> Result<Claims, OidcError> {
        let missing = |name: &str| OidcError::MissingClaim(name.to_owned());
        let issued_at = raw.iat.ok_or_else(|| missing("iat"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if issued_at > now.saturating_add(LEEWAY.as_secs()) {
            return Err(OidcError::NotYetValid);
        }
        let email_verified = raw.email_verified == Some(serde_json::Value::Bool(true));
        if let Some(expected) = &self.settings.email {
            // Google's account names are case-insensitive and written in
            // lower case; an operator's capital letter must not lock us out.
            if !raw
                .email
                .as_deref()
                .is_some_and(|email| email.eq_ignore_ascii_case(expected))
            {
                return Err(OidcError::WrongEmail {
                    expected: expected.clone(),
                });
            }
            if !email_verified {
                return Err(OidcError::EmailNotVerified);
            }
        }
        Ok(Claims {
            issuer: raw.iss.ok_or_else(|| missing("iss"))?,
            audience: self.settings.audience.clone(),
            subject: raw.sub.ok_or_else(|| missing("sub"))?,
            email: raw.email,
            email_verified,
            issued_at,
            expires_at: raw.exp.ok_or_else(|| missing("exp"))?,
        })
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer_token(authorization: Option<&str>) -> Result<&str, OidcError> {
    let value = authorization.ok_or(OidcError::MissingToken)?;
    if value.len() > MAX_TOKEN_BYTES.saturating_add(64) {
        return Err(OidcError::TooLong);
    }
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("bearer") {
        return Err(OidcError::MissingToken);
    }
    let (scheme, token) = value.split_once(' ').ok_or(OidcError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(OidcError::NotBearer);
    }
    let token = token.trim_start();
    if token.chars().any(char::is_whitespace) {
        return Err(OidcError::Malformed("the token contains whitespace"));
    }
    Ok(token)
}

/// Checks the token's shape and JOSE header; its `kid`.
fn checked_header(token: &str) -> Result<String, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("not three dot-separated parts"));
    };
    if signature == SIGNATURE_REMOVED {
        return Err(OidcError::SignatureRemoved);
    }
    let base64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if header.is_empty() || claims.is_empty() || !base64url(header) || !base64url(claims) {
        return Err(OidcError::Malformed(
            "the header and claims are not base64url",
        ));
    }
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed("the header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| OidcError::Malformed("the header is not a JSON object with an alg"))?;
    if header.alg != ALGORITHM {
        return Err(OidcError::UnsupportedAlgorithm {
            alg: printable(&header.alg),
        });
    }
    if header.crit.is_some() {
        return Err(OidcError::Malformed(
            "the header names critical extensions (crit)",
        ));
    }
    if signature.is_empty() || !base64url(signature) {
        return Err(OidcError::Malformed("the signature is not base64url"));
    }
    match header.kid {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(OidcError::MissingKeyId),
    }
}

/// `jsonwebtoken`'s verdict as our reason. Its messages are not passed on:
/// some quote the token's parts.
fn refusal(kind: &ErrorKind) -> OidcError {
    match kind {
        ErrorKind::InvalidSignature => OidcError::BadSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(printable(claim)),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            OidcError::UnsupportedAlgorithm {
                alg: "unknown".into(),
            }
        }
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            OidcError::Malformed("the claims are not JSON of the expected types")
        }
        ErrorKind::Base64(_) => OidcError::Malformed("a part is not base64url"),
        _ => OidcError::Malformed("the token does not decode"),
    }
}

/// Routes behind an ID-token check, or open when none is configured.
///
/// Build one at start-up ([`OidcGuard::from_settings`], which logs what it
/// chose) and clone it into every router that needs it: clones share the
/// verifier and its key cache.
#[derive(Debug, Clone)]
pub struct OidcGuard {
    verifier: Option<Arc<OidcVerifier>>,
}

impl OidcGuard {
    /// A guard that checks tokens with `settings`, or, with `None` (no
    /// `NBCI_OIDC_AUDIENCE`), lets every request through. Logs the choice:
    /// call it once per process.
    pub fn from_settings(settings: Option<OidcSettings>) -> Result<Self, OidcError> {
        match settings {
            Some(settings) => Ok(Self::requiring(OidcVerifier::new(settings)?)),
            None => Ok(Self::open()),
        }
    }

    /// A guard that checks tokens with `verifier`. Logs the settings.
    pub fn requiring(verifier: OidcVerifier) -> Self {
        let settings = verifier.settings();
        tracing::info!(
            audience = %settings.audience,
            email = settings.email.as_deref().unwrap_or("(any Google account)"),
            jwks_url = %verifier.keys.url(),
            "Google-signed ID tokens are required on the protected routes"
        );
        Self {
            verifier: Some(Arc::new(verifier)),
        }
    }

    /// A guard that lets every request through (local `nbci serve`). Logs it.
    pub fn open() -> Self {
        tracing::warn!(
            "NBCI_OIDC_AUDIENCE is not set: the routes meant for Google's calls (/tick, /dispatch, \
             events) accept requests without an ID token; right for a local `nbci serve`, never \
             for a service on the internet"
        );
        Self { verifier: None }
    }

    /// Whether requests are checked.
    pub fn is_enforcing(&self) -> bool {
        self.verifier.is_some()
    }

    /// The claims of the request's token; `None` when the guard is open.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Option<Claims>, OidcError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let authorization = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(value.to_str().map_err(|_| {
                OidcError::Malformed("the Authorization header is not visible ASCII")
            })?),
            (Some(_), Some(_)) => return Err(OidcError::NotBearer),
        };
        verifier.verify(authorization).await.map(Some)
    }

    /// `router`'s routes behind this guard (those added later are not).
    pub fn protect<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.route_layer(axum::middleware::from_fn_with_state(
            self.clone(),
            require_id_token,
        ))
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(guard, require_id_token)`):
/// passes the request on with its [`Claims`] as an extension, or answers
/// 401 with an empty body (503 when Google's keys are unavailable).
pub async fn require_id_token(
    State(guard): State<OidcGuard>,
    mut request: Request,
    next: Next,
) -> Response {
    match guard.check(request.headers()).await {
        Ok(claims) => {
            if let Some(claims) = claims {
                request.extensions_mut().insert(claims);
            }
            next.run(request).await
        }
        Err(error) => AppError::from(error).into_response(),
    }
}
