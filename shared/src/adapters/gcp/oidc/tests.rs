//! The verifier against keys made in the test and a JWKS served locally.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::testing::{
    JwksServer, TestKey, assemble_token, google_claims, google_key, now_s, rotated_key,
};
use super::*;

const AUDIENCE: &str = "https://scheduler-abc123-uc.a.run.app";
const EMAIL: &str = "nbci-ticks@demo-project.iam.gserviceaccount.com";

fn settings(server: &JwksServer) -> OidcSettings {
    OidcSettings::new(AUDIENCE)
        .with_email(EMAIL)
        .with_jwks_url(server.url())
}

async fn setup() -> (JwksServer, OidcVerifier) {
    let server = JwksServer::start(&[google_key()]).await;
    let verifier = OidcVerifier::new(settings(&server)).expect("verifier");
    (server, verifier)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn good_claims() -> Value {
    google_claims(AUDIENCE, EMAIL)
}

/// `claims` with `changes` merged in (a `null` removes the claim).
fn with(changes: Value) -> Value {
    let mut claims = good_claims();
    let (Some(target), Some(changes)) = (claims.as_object_mut(), changes.as_object()) else {
        panic!("objects");
    };
    for (name, value) in changes {
        if value.is_null() {
            target.remove(name);
        } else {
            target.insert(name.clone(), value.clone());
        }
    }
    claims
}

async fn verdict(verifier: &OidcVerifier, claims: &Value) -> Result<Claims, OidcError> {
    verifier
        .verify(Some(&bearer(&google_key().sign(claims))))
        .await
}

#[tokio::test]
async fn a_google_id_token_is_accepted_and_its_keys_are_cached() {
    let (server, verifier) = setup().await;
    for _ in 0..3 {
        let claims = verdict(&verifier, &good_claims()).await.expect("accepted");
        assert_eq!(claims.audience, AUDIENCE);
        assert_eq!(claims.email.as_deref(), Some(EMAIL));
        assert!(claims.email_verified);
        assert_eq!(claims.issuer, "https://accounts.google.com");
        assert_eq!(claims.subject, "113774264463038321964");
    }
    assert_eq!(server.hits(), 1, "the JWKS is fetched once, then cached");
}

#[tokio::test]
async fn both_google_issuer_forms_are_accepted_and_the_scheme_is_case_insensitive() {
    let (_server, verifier) = setup().await;
    let token = google_key().sign(&with(json!({"iss": "accounts.google.com"})));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let claims = verifier
            .verify(Some(&format!("{scheme} {token}")))
            .await
            .expect("accepted");
        assert_eq!(claims.issuer, "accounts.google.com");
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_beyond_the_leeway() {
    let (_server, verifier) = setup().await;
    let now = now_s();
    let expired = with(json!({"iat": now - 7200, "exp": now - 120}));
    assert_eq!(verdict(&verifier, &expired).await, Err(OidcError::Expired));
    // Within the leeway a clock a few seconds off does not matter.
    let just_expired = with(json!({"iat": now - 3600, "exp": now - 5}));
    verdict(&verifier, &just_expired)
        .await
        .expect("within the leeway");
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused() {
    let (_server, verifier) = setup().await;
    let now = now_s();
    let not_before = with(json!({"nbf": now + 600}));
    assert_eq!(
        verdict(&verifier, &not_before).await,
        Err(OidcError::NotYetValid)
    );
    let issued_later = with(json!({"iat": now + 600, "exp": now + 4200}));
    assert_eq!(
        verdict(&verifier, &issued_later).await,
        Err(OidcError::NotYetValid)
    );
    let slightly_ahead = with(json!({"iat": now + 5}));
    verdict(&verifier, &slightly_ahead)
        .await
        .expect("within the leeway");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (_server, verifier) = setup().await;
    for audience in [
        json!("https://github-webhook-abc123-uc.a.run.app"),
        json!(format!("{AUDIENCE}/")),
        json!(["https://elsewhere.example"]),
    ] {
        assert_eq!(
            verdict(&verifier, &with(json!({ "aud": audience }))).await,
            Err(OidcError::WrongAudience),
            "{audience}"
        );
    }
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let (_server, verifier) = setup().await;
    for issuer in [
        "https://cloud.google.com/iap",
        "https://accounts.google.com.evil.example",
        "https://securetoken.google.com/demo-project",
    ] {
        assert_eq!(
            verdict(&verifier, &with(json!({ "iss": issuer }))).await,
            Err(OidcError::WrongIssuer),
            "{issuer}"
        );
    }
}

#[tokio::test]
async fn a_token_of_another_account_is_refused() {
    let (server, verifier) = setup().await;
    let other = with(json!({"email": "someone-else@demo-project.iam.gserviceaccount.com"}));
    let error = verdict(&verifier, &other).await.expect_err("refused");
    assert_eq!(
        error,
        OidcError::WrongEmail {
            expected: EMAIL.into()
        }
    );
    assert!(
        !error.to_string().contains("someone-else"),
        "the token's email is not echoed: {error}"
    );
    assert_eq!(
        verdict(&verifier, &with(json!({"email": null}))).await,
        Err(OidcError::WrongEmail {
            expected: EMAIL.into()
        })
    );
    // Google writes account names in lower case; the setting may not.
    let upper = OidcVerifier::new(
        OidcSettings::new(AUDIENCE)
            .with_email(EMAIL.to_uppercase())
            .with_jwks_url(server.url()),
    )
    .expect("verifier");
    verdict(&upper, &good_claims()).await.expect("same account");
}

#[tokio::test]
async fn an_unverified_email_is_refused() {
    let (_server, verifier) = setup().await;
    for verified in [json!(false), json!("true"), Value::Null] {
        assert_eq!(
            verdict(&verifier, &with(json!({ "email_verified": verified }))).await,
            Err(OidcError::EmailNotVerified),
            "{verified}"
        );
    }
}

#[tokio::test]
async fn without_a_configured_account_any_google_account_is_accepted() {
    let server = JwksServer::start(&[google_key()]).await;
    let verifier = OidcVerifier::new(OidcSettings::new(AUDIENCE).with_jwks_url(server.url()))
        .expect("verifier");
    let claims = verdict(
        &verifier,
        &with(json!({"email": "anyone@example.com", "email_verified": false})),
    )
    .await
    .expect("accepted");
    assert_eq!(claims.email.as_deref(), Some("anyone@example.com"));
    assert!(!claims.email_verified);
}

#[tokio::test]
async fn missing_claims_are_named() {
    let (_server, verifier) = setup().await;
    for claim in ["exp", "iss", "aud", "sub", "iat"] {
        let claims = with(json!({ claim: null }));
        assert_eq!(
            verdict(&verifier, &claims).await,
            Err(OidcError::MissingClaim(claim.into())),
            "{claim}"
        );
    }
}

#[tokio::test]
async fn alg_none_is_refused_without_a_key_lookup() {
    let (server, verifier) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let token = assemble_token(
            &json!({"alg": alg, "typ": "JWT", "kid": google_key().kid()}),
            &good_claims(),
            "",
        );
        assert_eq!(
            verifier.verify(Some(&bearer(&token))).await,
            Err(OidcError::UnsupportedAlgorithm { alg: alg.into() })
        );
    }
    assert_eq!(server.hits(), 0, "no key is fetched for an unsigned token");
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_is_refused() {
    let (_server, verifier) = setup().await;
    let key = google_key();
    // Warm the cache, so the key the forgery names is at hand.
    verdict(&verifier, &good_claims()).await.expect("accepted");
    let public_key_forms: [Vec<u8>; 2] = [
        key.public_key_pem().as_bytes().to_vec(),
        key.jwk()["n"].as_str().expect("n").as_bytes().to_vec(),
    ];
    for secret in public_key_forms {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(key.kid().to_owned());
            let forged =
                jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(&secret))
                    .expect("forged");
            assert!(
                matches!(
                    verifier.verify(Some(&bearer(&forged))).await,
                    Err(OidcError::UnsupportedAlgorithm { .. })
                ),
                "{alg:?}"
            );
        }
    }
}

#[tokio::test]
async fn other_rsa_and_ec_algorithms_are_refused() {
    let (_server, verifier) = setup().await;
    for alg in ["RS384", "RS512", "PS256", "ES256", "EdDSA", "rs256", ""] {
        let token = assemble_token(
            &json!({"alg": alg, "kid": google_key().kid()}),
            &good_claims(),
            "c2lnbmF0dXJl",
        );
        assert!(
            matches!(
                verifier.verify(Some(&bearer(&token))).await,
                Err(OidcError::UnsupportedAlgorithm { .. })
            ),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn a_signature_cloud_run_removed_is_refused_with_its_own_reason() {
    let (server, verifier) = setup().await;
    let token = google_key().sign(&good_claims());
    let (signed, _signature) = token.rsplit_once('.').expect("three parts");
    let stripped = format!("{signed}.{SIGNATURE_REMOVED}");
    let error = verifier
        .verify(Some(&bearer(&stripped)))
        .await
        .expect_err("refused");
    assert_eq!(error, OidcError::SignatureRemoved);
    assert!(error.to_string().contains("NBCI_OIDC_AUDIENCE"), "{error}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_tampered_token_or_a_stranger_key_under_a_known_kid_is_refused() {
    let (_server, verifier) = setup().await;
    // Claims changed after signing.
    let token = google_key().sign(&good_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(json!({"email": "x@y.z"})).to_string());
    assert_eq!(
        verifier.verify(Some(&bearer(&parts.join(".")))).await,
        Err(OidcError::BadSignature)
    );
    // Signed by a key the JWKS does not hold, naming one it does.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(google_key().kid().to_owned());
    let stranger = rotated_key().sign_with(header, &good_claims());
    assert_eq!(
        verifier.verify(Some(&bearer(&stranger))).await,
        Err(OidcError::BadSignature)
    );
}

#[tokio::test]
async fn an_unknown_kid_is_fetched_once_then_refused() {
    let (server, verifier) = setup().await;
    verdict(&verifier, &good_claims()).await.expect("accepted");
    assert_eq!(server.hits(), 1);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("no-such-key".into());
    let unknown = rotated_key().sign_with(header, &good_claims());
    let verifier = verifier.with_min_refetch_interval(Duration::ZERO);
    assert_eq!(
        verifier.verify(Some(&bearer(&unknown))).await,
        Err(OidcError::UnknownKey {
            kid: "no-such-key".into()
        })
    );
    assert_eq!(server.hits(), 2, "one refetch for the unknown kid");
}

#[tokio::test]
async fn a_burst_of_unknown_kids_fetches_the_jwks_a_bounded_number_of_times() {
    let (server, verifier) = setup().await;
    verdict(&verifier, &good_claims()).await.expect("accepted");
    assert_eq!(server.hits(), 1);
    let tokens: Vec<String> = (0..200)
        .map(|i| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(format!("bogus-{i}"));
            rotated_key().sign_with(header, &good_claims())
        })
        .collect();
    // Past the rate limit's interval from the first fetch, so the burst may
    // (and does) fetch once.
    let verifier = Arc::new(verifier.with_min_refetch_interval(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut burst = tokio::task::JoinSet::new();
    for token in tokens.clone() {
        let verifier = Arc::clone(&verifier);
        burst.spawn(async move { verifier.verify(Some(&bearer(&token))).await });
    }
    while let Some(result) = burst.join_next().await {
        assert!(
            matches!(result.expect("task"), Err(OidcError::UnknownKey { .. })),
            "bogus kids are refused"
        );
    }
    assert_eq!(
        server.hits(),
        2,
        "the whole concurrent burst shares one fetch"
    );
    // And sequential bogus kids inside the interval fetch nothing.
    for token in &tokens[..20] {
        assert!(verifier.verify(Some(&bearer(token))).await.is_err());
    }
    assert_eq!(server.hits(), 2);
    // Google's own key still verifies from the cache all along.
    verdict(&verifier, &good_claims()).await.expect("accepted");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch_once_the_interval_allows() {
    let (server, verifier) = setup().await;
    let verifier = verifier.with_min_refetch_interval(Duration::from_secs(1));
    verdict(&verifier, &good_claims()).await.expect("accepted");
    server.publish(&[google_key(), rotated_key()]);
    let rotated = rotated_key().sign(&good_claims());
    // Right after a fetch the rate limit holds: no second fetch yet.
    assert!(matches!(
        verifier.verify(Some(&bearer(&rotated))).await,
        Err(OidcError::UnknownKey { .. })
    ));
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier
        .verify(Some(&bearer(&rotated)))
        .await
        .expect("the new key is fetched and accepted");
    assert_eq!(server.hits(), 2);
    // Both keys now verify from the cache.
    verdict(&verifier, &good_claims()).await.expect("old key");
    verifier
        .verify(Some(&bearer(&rotated)))
        .await
        .expect("new key");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_rotated_key_with_the_default_interval_needs_no_wait_on_a_cold_cache() {
    // The usual case: the new key is in the JWKS before it signs anything,
    // so the first fetch already has it.
    let server = JwksServer::start(&[google_key(), rotated_key()]).await;
    let verifier = OidcVerifier::new(settings(&server)).expect("verifier");
    verifier
        .verify(Some(&bearer(&rotated_key().sign(&good_claims()))))
        .await
        .expect("accepted");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn keys_expire_with_max_age() {
    let server = JwksServer::start(&[google_key()]).await;
    server.set_cache_control(Some("public, max-age=0, must-revalidate"));
    let verifier = OidcVerifier::new(settings(&server))
        .expect("verifier")
        .with_min_refetch_interval(Duration::ZERO);
    verdict(&verifier, &good_claims()).await.expect("accepted");
    verdict(&verifier, &good_claims()).await.expect("accepted");
    assert_eq!(
        server.hits(),
        2,
        "max-age=0: fetched again when next needed"
    );
}

#[tokio::test]
async fn google_down_keeps_the_keys_it_had_and_unknown_keys_are_unavailable() {
    let server = JwksServer::start(&[google_key()]).await;
    server.set_cache_control(Some("max-age=0"));
    let verifier = OidcVerifier::new(settings(&server))
        .expect("verifier")
        .with_min_refetch_interval(Duration::ZERO);
    verdict(&verifier, &good_claims()).await.expect("accepted");
    server.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    verdict(&verifier, &good_claims())
        .await
        .expect("stale keys serve while the refresh fails");
    let error = verifier
        .verify(Some(&bearer(&rotated_key().sign(&good_claims()))))
        .await
        .expect_err("cannot be checked");
    assert!(
        matches!(&error, OidcError::KeysUnavailable(reason) if reason.contains("503")),
        "{error}"
    );
    assert!(error.is_transient());
    assert_eq!(
        AppError::from(error).into_response().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_cold_cache_with_google_down_is_unavailable_not_unauthorized() {
    let server = JwksServer::start(&[google_key()]).await;
    server.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let verifier = OidcVerifier::new(settings(&server)).expect("verifier");
    for _ in 0..5 {
        assert!(matches!(
            verdict(&verifier, &good_claims()).await,
            Err(OidcError::KeysUnavailable(_))
        ));
    }
    assert_eq!(server.hits(), 1, "failed fetches are rate-limited too");
}

#[tokio::test]
async fn malformed_headers_are_refused_without_a_fetch() {
    let (server, verifier) = setup().await;
    let junk = "A".repeat(10 * 1024);
    let good = google_key().sign(&good_claims());
    let cases: Vec<(Option<String>, OidcError)> = vec![
        (None, OidcError::MissingToken),
        (Some(String::new()), OidcError::MissingToken),
        (Some("   ".into()), OidcError::MissingToken),
        (Some("Bearer".into()), OidcError::MissingToken),
        (Some("Bearer    ".into()), OidcError::MissingToken),
        (Some(good.clone()), OidcError::NotBearer),
        (Some(format!("Basic {good}")), OidcError::NotBearer),
        (Some("Basic dXNlcjpwYXNz".into()), OidcError::NotBearer),
        (
            Some("Bearer garbage".into()),
            OidcError::Malformed("not three dot-separated parts"),
        ),
        (
            Some("Bearer a.b.c.d".into()),
            OidcError::Malformed("not three dot-separated parts"),
        ),
        (
            Some("Bearer ..".into()),
            OidcError::Malformed("the header and claims are not base64url"),
        ),
        (
            Some("Bearer !!!.???.sig".into()),
            OidcError::Malformed("the header and claims are not base64url"),
        ),
        (
            Some("Bearer e30.e30.c2ln".into()),
            OidcError::Malformed("the header is not a JSON object with an alg"),
        ),
        (
            Some(format!("Bearer {good} extra")),
            OidcError::Malformed("the token contains whitespace"),
        ),
        (Some(format!("Bearer {junk}")), OidcError::TooLong),
        (Some(junk.clone()), OidcError::TooLong),
        (
            Some(format!("Bearer {}.{}.x", &junk[..4000], &junk[..2000])),
            OidcError::Malformed("the header is not a JSON object with an alg"),
        ),
    ];
    for (header, expected) in cases {
        let shown = header
            .as_deref()
            .map(|h| h.chars().take(40).collect::<String>());
        assert_eq!(
            verifier.verify(header.as_deref()).await,
            Err(expected),
            "{shown:?}"
        );
    }
    // No kid, crit, empty signature.
    let no_kid = assemble_token(&json!({"alg": "RS256"}), &good_claims(), "c2ln");
    assert_eq!(
        verifier.verify(Some(&bearer(&no_kid))).await,
        Err(OidcError::MissingKeyId)
    );
    let crit = assemble_token(
        &json!({"alg": "RS256", "kid": google_key().kid(), "crit": ["exp"]}),
        &good_claims(),
        "c2ln",
    );
    assert!(matches!(
        verifier.verify(Some(&bearer(&crit))).await,
        Err(OidcError::Malformed(_))
    ));
    let (signed, _) = good.rsplit_once('.').expect("parts");
    assert_eq!(
        verifier.verify(Some(&bearer(&format!("{signed}.")))).await,
        Err(OidcError::Malformed("the signature is not base64url"))
    );
    assert_eq!(server.hits(), 0, "nothing malformed reaches the key cache");
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let (_server, verifier) = setup().await;
    let expired = google_key().sign(&with(json!({"exp": now_s() - 3600})));
    let payload = expired.split('.').nth(1).expect("claims part").to_owned();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(format!("kid-{}", "k".repeat(500)));
    let long_kid = rotated_key().sign_with(header, &good_claims());
    for token in [
        expired.clone(),
        format!("{expired}x"),
        long_kid,
        format!(
            "{}.{payload}.{SIGNATURE_REMOVED}",
            expired.split('.').next().unwrap_or("")
        ),
    ] {
        let error = verifier
            .verify(Some(&bearer(&token)))
            .await
            .expect_err("refused");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(&payload), "{text}");
        assert!(text.len() < 600, "{text}");
    }
}

#[test]
fn max_age_and_age_set_the_keys_lifetime() {
    use reqwest::header::{HeaderMap, HeaderValue};
    let ttl = |cache_control: Option<&str>, age: Option<&str>| {
        let mut headers = HeaderMap::new();
        if let Some(value) = cache_control {
            headers.insert(
                "cache-control",
                HeaderValue::from_str(value).expect("value"),
            );
        }
        if let Some(value) = age {
            headers.insert("age", HeaderValue::from_str(value).expect("value"));
        }
        keys::time_to_live(&headers)
    };
    let secs = Duration::from_secs;
    assert_eq!(
        ttl(
            Some("public, max-age=19809, must-revalidate, no-transform"),
            None
        ),
        secs(19809)
    );
    assert_eq!(ttl(Some("public, max-age=19809"), Some("809")), secs(19000));
    assert_eq!(ttl(Some("MAX-AGE=60"), Some("120")), Duration::ZERO);
    assert_eq!(ttl(Some("max-age=999999999"), None), keys::MAX_TTL);
    assert_eq!(ttl(Some("no-store"), None), Duration::ZERO);
    assert_eq!(ttl(Some("private, max-age=nope"), None), keys::DEFAULT_TTL);
    assert_eq!(ttl(None, None), keys::DEFAULT_TTL);
}

#[test]
fn only_rs256_signature_keys_are_taken_from_the_jwks() {
    let good = google_key().jwk();
    let mut encryption = rotated_key().jwk();
    encryption["use"] = json!("enc");
    encryption["kid"] = json!("enc-key");
    let mut rs512 = rotated_key().jwk();
    rs512["alg"] = json!("RS512");
    rs512["kid"] = json!("rs512-key");
    let hmac = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac-key", "alg": "HS256"});
    let ec = json!({"kty": "EC", "crv": "P-256", "kid": "ec-key",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let strange = json!({"kty": "future", "kid": "future-key"});
    let document = json!({"keys": [good, encryption, rs512, hmac, ec, strange]});
    let keys = keys::parse_jwks(document.to_string().as_bytes()).expect("a JWKS");
    assert_eq!(
        keys.keys().collect::<Vec<_>>(),
        vec![google_key().kid()],
        "only the RS256 signature key"
    );
    assert!(keys::parse_jwks(br#"{"keys": []}"#).is_err());
    assert!(keys::parse_jwks(b"<html>").is_err());
}

#[test]
fn settings_come_from_the_three_variables() {
    assert_eq!(OidcSettings::from_variables(None, None, None), Ok(None));
    assert_eq!(
        OidcSettings::from_variables(Some("  "), None, Some("")),
        Ok(None)
    );
    assert_eq!(
        OidcSettings::from_variables(Some(AUDIENCE), Some(EMAIL), Some("")),
        Ok(Some(OidcSettings {
            audience: AUDIENCE.into(),
            email: Some(EMAIL.into()),
            jwks_url: GOOGLE_JWKS_URL.into(),
        }))
    );
    assert_eq!(
        OidcSettings::from_variables(Some(AUDIENCE), None, Some("http://127.0.0.1:9/certs"))
            .map(|s| s.map(|s| s.jwks_url)),
        Ok(Some("http://127.0.0.1:9/certs".into()))
    );
    let named = |result: Result<Option<OidcSettings>, OidcError>| match result {
        Err(OidcError::InvalidSetting { name, .. }) => name,
        other => panic!("expected an invalid setting, got {other:?}"),
    };
    assert_eq!(
        named(OidcSettings::from_variables(None, Some(EMAIL), None)),
        "NBCI_OIDC_AUDIENCE"
    );
    assert_eq!(
        named(OidcSettings::from_variables(
            Some(AUDIENCE),
            Some("not an email"),
            None
        )),
        "NBCI_OIDC_EMAIL"
    );
    assert_eq!(
        named(OidcSettings::from_variables(
            Some(AUDIENCE),
            None,
            Some("ftp://example.com/certs")
        )),
        "NBCI_OIDC_JWKS_URL"
    );
}

#[test]
fn refusals_are_401_and_outages_503() {
    let status = |error: OidcError| AppError::from(error).into_response().status();
    assert_eq!(status(OidcError::Expired), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(OidcError::SignatureRemoved),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(OidcError::KeysUnavailable("down".into())),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn printable_shortens_and_masks() {
    assert_eq!(printable("RS256"), "RS256");
    assert_eq!(printable("a\nb\u{7}c é"), "a?b?c??");
    let long = printable(&"x".repeat(100));
    assert_eq!(long.len(), 67);
    assert!(long.ends_with("..."));
}

// --- the guard, through a router ------------------------------------------

fn protected_router(guard: &OidcGuard) -> Router {
    let protected = guard.protect(Router::new().route(
        "/tick",
        post(|claims: Option<axum::Extension<Claims>>| async move {
            axum::Json(json!({
                "ticked": true,
                "email": claims.and_then(|c| c.0.email),
            }))
        }),
    ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
}

async fn call(router: &Router, authorization: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut request = HttpRequest::post("/tick");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

#[tokio::test]
async fn the_guard_answers_401_with_an_empty_body_and_passes_good_tokens_on() {
    let (server, verifier) = setup().await;
    let guard = OidcGuard::requiring(verifier);
    assert!(guard.is_enforcing());
    let router = protected_router(&guard);

    let good = bearer(&google_key().sign(&good_claims()));
    let (status, body) = call(&router, Some(&good)).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body, json!({"ticked": true, "email": EMAIL}));

    let expired = bearer(&google_key().sign(&with(json!({"exp": now_s() - 3600}))));
    let stripped = format!(
        "{}.{SIGNATURE_REMOVED}",
        good.rsplit_once('.').expect("parts").0
    );
    for authorization in [
        None,
        Some("Bearer garbage"),
        Some(expired.as_str()),
        Some(stripped.as_str()),
    ] {
        let (status, body) = call(&router, authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert!(body.is_empty(), "401 says nothing: {body:?}");
    }

    // Two Authorization headers are refused, whatever they hold.
    let response = router
        .clone()
        .oneshot(
            HttpRequest::post("/tick")
                .header("authorization", &good)
                .header("authorization", &good)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // /healthz is not behind the guard.
    let response = router
        .clone()
        .oneshot(
            HttpRequest::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn the_guard_answers_503_when_google_is_down() {
    let server = JwksServer::start(&[google_key()]).await;
    server.fail_with(Some(StatusCode::BAD_GATEWAY));
    let guard = OidcGuard::from_settings(Some(settings(&server))).expect("guard");
    let router = protected_router(&guard);
    let good = bearer(&google_key().sign(&good_claims()));
    let (status, _) = call(&router, Some(&good)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_open_guard_lets_requests_through() {
    let guard = OidcGuard::from_settings(None).expect("guard");
    assert!(!guard.is_enforcing());
    let router = protected_router(&guard);
    let (status, body) = call(&router, None).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body, json!({"ticked": true, "email": null}));
}

#[test]
fn generated_keys_sign_verifiable_tokens() {
    // The test keys themselves: a token signed by one verifies under its
    // published JWK and not under the other's.
    let key = TestKey::generate("local");
    let token = key.sign(&good_claims());
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).expect("jwk");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key"),
        &validation,
    )
    .expect("verifies");
    let other: jsonwebtoken::jwk::Jwk = serde_json::from_value(google_key().jwk()).expect("jwk");
    assert!(
        jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(&other).expect("key"),
            &validation,
        )
        .is_err()
    );
}
