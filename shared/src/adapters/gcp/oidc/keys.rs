//! Google's signing keys (a JWKS), fetched once and kept until the answer's
//! `Cache-Control: max-age` says they are stale.
//!
//! The cache is keyed by `kid`. A token whose `kid` the cache does not know
//! may be signed with a key Google published since the last fetch (keys
//! rotate every few days, and a new key appears in the JWKS before it signs
//! anything), so it causes one refetch. But the `kid` is whatever the sender
//! wrote: a flood of made-up ids must not become a flood of requests to
//! Google, so fetches (successful or not) are at least
//! [`MIN_REFETCH_INTERVAL`] apart, and concurrent verifications that miss
//! share one fetch instead of each starting their own.
//!
//! When a refresh fails (Google unreachable), keys fetched before stay usable
//! for [`MAX_STALE`] past their expiry: they were Google's keys a moment ago,
//! and refusing every caller because Google's certs endpoint blinked would
//! be worse. A key the cache never had is never accepted.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use reqwest::header::{AGE, CACHE_CONTROL, HeaderMap};
use serde::Deserialize;

use super::{OidcError, printable};

/// The shortest time between two fetches of the JWKS, whatever arrives.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long keys are kept when the answer has no usable `max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
/// The longest `max-age` believed: a day (Google sends about six hours).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long past their expiry keys still verify while refreshes fail.
pub const MAX_STALE: Duration = Duration::from_secs(60 * 60);
/// A JWKS is a few KiB; an answer larger than this is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys last fetched and when to fetch again.
#[derive(Debug, Default)]
struct KeyState {
    /// `kid` -> RS256 verification key.
    keys: HashMap<String, DecodingKey>,
    /// Until when the keys are fresh (`None`: never fetched successfully).
    fresh_until: Option<Instant>,
    /// When the last fetch, successful or not, ended: the rate limit's clock.
    last_attempt: Option<Instant>,
    /// How many fetches ended, so a caller that waited for another's fetch
    /// sees that it happened and does not fetch again.
    attempts: u64,
    /// Why the last fetch failed, if it did.
    last_failure: Option<String>,
}

impl KeyState {
    fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_some_and(|until| now < until)
    }

    /// Whether a fetch may start now.
    fn may_fetch(&self, now: Instant, min_interval: Duration) -> bool {
        self.last_attempt
            .is_none_or(|last| now.saturating_duration_since(last) >= min_interval)
    }

    /// `kid`'s key if it is fresh, or stale by less than [`MAX_STALE`].
    fn usable(&self, kid: &str, now: Instant) -> Option<DecodingKey> {
        let until = self.fresh_until?.checked_add(MAX_STALE)?;
        (now < until).then(|| self.keys.get(kid).cloned()).flatten()
    }

    /// The answer when no fetch is to be made: a usable key, else why not.
    fn answer_without_fetch(&self, kid: &str, now: Instant) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.usable(kid, now) {
            return Ok(key);
        }
        match &self.last_failure {
            Some(reason) => Err(OidcError::KeysUnavailable(reason.clone())),
            None => Err(OidcError::UnknownKey {
                kid: printable(kid),
            }),
        }
    }
}

/// The JWKS of one URL, cached. Shared by every request of a service.
#[derive(Debug)]
pub(super) struct KeyCache {
    url: String,
    http: reqwest::Client,
    min_refetch_interval: Duration,
    state: RwLock<KeyState>,
    /// Held by the one fetch in progress; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyCache {
    pub(super) fn new(url: String) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("nbci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::Http(e.to_string()))?;
        Ok(Self {
            url,
            http,
            min_refetch_interval: MIN_REFETCH_INTERVAL,
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub(super) fn set_min_refetch_interval(&mut self, interval: Duration) {
        self.min_refetch_interval = interval;
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The key `kid` names: from the cache, or after one fetch when the cache
    /// is stale or does not know `kid` and the last fetch is long enough ago.
    pub(super) async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let seen = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if state.is_fresh(now)
                && let Some(key) = state.keys.get(kid)
            {
                return Ok(key.clone());
            }
            if !state.may_fetch(now, self.min_refetch_interval) {
                return state.answer_without_fetch(kid, now);
            }
            state.attempts
        };

        let _fetching = self.fetching.lock().await;
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.attempts != seen {
                // Another verification fetched while this one waited: its
                // answer is as new as ours would be.
                return state.answer_without_fetch(kid, Instant::now());
            }
        }

        let fetched = self.fetch().await;
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.attempts = state.attempts.wrapping_add(1);
        state.last_attempt = Some(now);
        match fetched {
            Ok((keys, ttl)) => {
                tracing::debug!(url = %self.url, keys = keys.len(), ttl_s = ttl.as_secs(), "fetched Google's signing keys");
                state.keys = keys;
                state.fresh_until = now.checked_add(ttl);
                state.last_failure = None;
                state
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| OidcError::UnknownKey {
                        kid: printable(kid),
                    })
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "cannot refresh Google's signing keys");
                state.last_failure = Some(reason);
                state.answer_without_fetch(kid, now)
            }
        }
    }

    /// One GET of the JWKS: its RS256 keys and how long to keep them.
    async fn fetch(&self) -> Result<(HashMap<String, DecodingKey>, Duration), String> {
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {} failed: {e}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {} answered {status}", self.url));
        }
        let ttl = time_to_live(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the answer of {} failed: {e}", self.url))?
        {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err(format!(
                    "the answer of {} is over {MAX_JWKS_BYTES} bytes: not a JWKS",
                    self.url
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body).map_err(|reason| format!("{}: {reason}", self.url))?;
        Ok((keys, ttl))
    }
}

/// The RS256 signature keys of a JWKS document, by `kid`. Keys of other
/// types, algorithms or uses are skipped (one unfamiliar key must not make
/// the others unusable); a document with none left is an error.
pub(super) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWKS (a JSON object with `keys`): {e}"))?;
    let mut keys = HashMap::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::debug!("skipped a JWK that does not parse");
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()) else {
            continue;
        };
        let rsa = matches!(jwk.algorithm, AlgorithmParameters::RSA(_));
        let rs256 = jwk
            .common
            .key_algorithm
            .is_none_or(|alg| alg == KeyAlgorithm::RS256);
        let signs = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|usage| *usage == PublicKeyUse::Signature);
        if !(rsa && rs256 && signs) {
            tracing::debug!(kid = %printable(&kid), "skipped a JWK that is not an RS256 signature key");
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(e) => {
                tracing::debug!(kid = %printable(&kid), error = %e, "skipped an unusable JWK")
            }
        }
    }
    if keys.is_empty() {
        return Err("the JWKS holds no RS256 signature key".into());
    }
    Ok(keys)
}

/// How long an answer may be kept: `max-age` less `Age` (time it already
/// spent in a cache), at most [`MAX_TTL`]; `no-cache`/`no-store` mean not at
/// all (the rate limit still spaces fetches); [`DEFAULT_TTL`] without either.
pub(super) fn time_to_live(headers: &HeaderMap) -> Duration {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = directive
                .split_once('=')
                .map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Duration::ZERO;
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(seconds) =
                    argument.and_then(|a| a.trim_matches('"').parse::<u64>().ok())
            {
                max_age = Some(seconds);
            }
        }
    }
    let Some(max_age) = max_age else {
        return DEFAULT_TTL;
    };
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(max_age.saturating_sub(age)).min(MAX_TTL)
}
