//! Google's side of ID tokens, played inside a test: RSA keys made in the
//! test process, tokens signed with them, and a JWKS served from
//! `127.0.0.1:0` that a test can rotate, break and count.
//!
//! Compiled for this crate's tests and, through the `testing` feature, for
//! the tests of the services that put routes behind
//! [`OidcGuard`](super::OidcGuard) (a dev-dependency feature: it never
//! reaches a release build). Being test support, it panics on failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Where [`JwksServer`] serves the keys.
pub const JWKS_PATH: &str = "/oauth2/v3/certs";
/// The issuer Google writes in ID tokens.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// An RSA key pair standing in for one of Google's signing keys.
pub struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl TestKey {
    /// A fresh 2048-bit key named `kid`. Key generation takes a moment:
    /// tests that need any key use [`google_key`] and [`rotated_key`].
    pub fn generate(kid: &str) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
        let private = pair.as_der().expect("PKCS#8 DER");
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", private.as_ref()).as_bytes())
            .expect("jsonwebtoken reads the key");
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let public_der = public.as_der().expect("X.509 public key DER");
        Self {
            kid: kid.to_owned(),
            encoding,
            // The shape of an entry of https://www.googleapis.com/oauth2/v3/certs.
            jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e}),
            public_pem: pem("PUBLIC KEY", public_der.as_ref()),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's JWKS entry.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public key as PEM: what an attacker has, to sign HS256 tokens with.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// `claims` as an RS256 token with this key's `kid`, as Google signs them.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// `claims` signed with this key under any header (a wrong `kid`, say).
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing")
    }
}

/// One key for every test that needs "Google's key" (generated once per process).
pub fn google_key() -> &'static TestKey {
    static KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("google-test-key-1"));
    &KEY
}

/// A second key, for rotations and for tokens the JWKS does not vouch for.
pub fn rotated_key() -> &'static TestKey {
    static KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("google-test-key-2"));
    &KEY
}

/// Seconds since the epoch, now.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The claims of an ID token Google would mint now for `email` and
/// `audience` (Cloud Scheduler's, Pub/Sub push's): valid for an hour.
pub fn google_claims(audience: &str, email: &str) -> Value {
    let now = now_s();
    json!({
        "aud": audience,
        "azp": "113774264463038321964",
        "email": email,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": GOOGLE_ISSUER,
        "sub": "113774264463038321964"
    })
}

/// A token assembled by hand from a header, claims and a signature part:
/// `alg: none`, Cloud Run's `SIGNATURE_REMOVED_BY_GOOGLE`, and other forgeries.
pub fn assemble_token(header: &Value, claims: &Value, signature: &str) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.{signature}", part(header), part(claims))
}

/// What the JWKS server answers, changed by the test while it runs.
#[derive(Debug)]
struct Served {
    keys: Vec<Value>,
    cache_control: Option<String>,
    /// Answer this status with no keys instead (Google failing).
    failure: Option<StatusCode>,
}

#[derive(Debug)]
struct Shared {
    served: Mutex<Served>,
    hits: AtomicUsize,
}

/// A JWKS endpoint on `127.0.0.1:0`, stopped when dropped.
#[derive(Debug)]
pub struct JwksServer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_keys(State(shared): State<Arc<Shared>>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let served = shared.served.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(status) = served.failure {
        return status.into_response();
    }
    let mut response = axum::Json(json!({"keys": served.keys})).into_response();
    if let Some(value) = served
        .cache_control
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

impl JwksServer {
    /// Serves `keys` at [`JWKS_PATH`] with Google's usual
    /// `Cache-Control: public, max-age=21600, must-revalidate, no-transform`.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let shared = Arc::new(Shared {
            served: Mutex::new(Served {
                keys: keys.iter().map(|key| key.jwk()).collect(),
                cache_control: Some("public, max-age=21600, must-revalidate, no-transform".into()),
                failure: None,
            }),
            hits: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .route(JWKS_PATH, get(serve_keys))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}{JWKS_PATH}"),
            shared,
            task,
        }
    }

    /// The JWKS URL, for `OidcSettings::jwks_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves `keys` from now on (a rotation).
    pub fn publish(&self, keys: &[&TestKey]) {
        self.served().keys = keys.iter().map(|key| key.jwk()).collect();
    }

    /// Serves this `Cache-Control` (or none) from now on.
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.served().cache_control = value.map(str::to_owned);
    }

    /// Answers `status` with no keys from now on (`None`: serve keys again).
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.served().failure = status;
    }

    /// How many times the JWKS was asked for.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Served> {
        self.shared
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
