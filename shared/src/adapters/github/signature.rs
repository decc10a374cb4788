//! Webhook signatures: `X-Hub-Signature-256`, checked before anything is parsed.
//!
//! GitHub signs every delivery with HMAC-SHA256 of the raw body under the
//! webhook secret and sends `sha256=<64 hex digits>`. A delivery whose
//! signature does not verify is not from GitHub (or was altered), so nothing of
//! it may be trusted, not even its JSON: verification comes first, on bytes.
//!
//! The comparison is constant-time (`Mac::verify_slice`), so an attacker cannot
//! learn the expected MAC byte by byte from response times. Every malformed
//! header is an error, never a panic: the header is attacker-controlled.

use hmac::Mac;

use crate::util::hmac::{hmac_sha256_hex, keyed as new_mac};

/// The header GitHub puts the SHA-256 signature in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// The prefix of the header's value; `sha1=` (the legacy `X-Hub-Signature`) is refused.
const SHA256_PREFIX: &str = "sha256=";

/// Why a delivery's signature was refused. The webhook answers 401 for every
/// variant and logs the variant, never the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Occurs when the delivery has no `X-Hub-Signature-256` header.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// Occurs when the value does not start with `sha256=` (for example the
    /// legacy `sha1=` form, which is not accepted).
    #[error("the signature does not start with `sha256=`")]
    WrongScheme,
    /// Occurs when the part after `sha256=` is not hexadecimal.
    #[error("the signature is not hexadecimal")]
    NotHex,
    /// Occurs when the signature is not 32 bytes (64 hex digits), for example
    /// a truncated one.
    #[error("the signature is {found} bytes long, expected 32")]
    WrongLength {
        /// Bytes decoded from the header.
        found: usize,
    },
    /// Occurs when the signature is well formed but does not match the body.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature-256`, if any) against the
/// HMAC-SHA256 of `body` under `secret`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let mut check = SignatureCheck::new(secret, header)?;
    check.update(body);
    check.verify()
}

/// A signature check fed the body as it arrives.
///
/// The header is checked when the check is made, before a byte of the body
/// is read: a delivery without a well-formed signature is refused without
/// buffering anything. The MAC then takes each chunk as it comes, so the
/// body is hashed while it is read, not in a second pass over the buffer.
pub struct SignatureCheck {
    mac: crate::util::hmac::HmacSha256,
    expected: [u8; 32],
}

impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key state nor the claimed MAC is worth printing.
        f.debug_struct("SignatureCheck").finish_non_exhaustive()
    }
}

impl SignatureCheck {
    /// Parses `header` (the value of `X-Hub-Signature-256`, if any); the
    /// error says what is wrong with it.
    pub fn new(secret: &[u8], header: Option<&str>) -> Result<Self, SignatureError> {
        let value = header.ok_or(SignatureError::Missing)?.trim();
        let digits =
            strip_prefix_ignore_case(value, SHA256_PREFIX).ok_or(SignatureError::WrongScheme)?;
        // Length first: it needs no decoding and names the truncation precisely.
        if digits.len() % 2 != 0 {
            return Err(if digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                SignatureError::WrongLength {
                    found: digits.len() / 2,
                }
            } else {
                SignatureError::NotHex
            });
        }
        let decoded = hex::decode(digits).map_err(|_| SignatureError::NotHex)?;
        let expected: [u8; 32] =
            decoded
                .try_into()
                .map_err(|decoded: Vec<u8>| SignatureError::WrongLength {
                    found: decoded.len(),
                })?;
        Ok(Self {
            mac: new_mac(secret),
            expected,
        })
    }

    /// Feeds the next part of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
    }

    /// Whether the body fed so far carries the signature (constant time).
    pub fn verify(self) -> Result<(), SignatureError> {
        self.mac
            .verify_slice(&self.expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`: for tests,
/// benchmarks and local tools that play GitHub.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hmac_sha256_hex(secret, body))
}

/// GitHub sends `sha256=` in lower case; proxies have been seen to change the
/// case of header values, and the scheme name carries no secret, so the prefix
/// is matched without regard to case. The hex digits are case-insensitive too.
fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const EXPECTED: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_documented_vector_verifies() {
        assert_eq!(sign(SECRET, BODY), EXPECTED);
        assert_eq!(verify_signature(SECRET, BODY, Some(EXPECTED)), Ok(()));
    }

    #[test]
    fn upper_case_hex_and_surrounding_space_verify() {
        let upper = format!("sha256={}", EXPECTED["sha256=".len()..].to_uppercase());
        assert_eq!(verify_signature(SECRET, BODY, Some(&upper)), Ok(()));
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&format!(" {EXPECTED} "))),
            Ok(())
        );
    }

    #[test]
    fn missing_header_is_refused() {
        assert_eq!(
            verify_signature(SECRET, BODY, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn sha1_and_bare_signatures_are_refused() {
        let sha1 = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
        assert_eq!(
            verify_signature(SECRET, BODY, Some(sha1)),
            Err(SignatureError::WrongScheme)
        );
        let bare = &EXPECTED["sha256=".len()..];
        assert_eq!(
            verify_signature(SECRET, BODY, Some(bare)),
            Err(SignatureError::WrongScheme)
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some("")),
            Err(SignatureError::WrongScheme)
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some("sha256")),
            Err(SignatureError::WrongScheme)
        );
    }

    #[test]
    fn bad_hex_is_refused() {
        let bad = format!("sha256={}", "zz".repeat(32));
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&bad)),
            Err(SignatureError::NotHex)
        );
        // A multi-byte character must not make slicing panic.
        let unicode = format!("sha256={}é", "a".repeat(62));
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&unicode)),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some("é")),
            Err(SignatureError::WrongScheme)
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some("sha25é=00")),
            Err(SignatureError::WrongScheme)
        );
    }

    #[test]
    fn truncated_and_wrong_length_signatures_are_refused() {
        let truncated = &EXPECTED[..EXPECTED.len() - 2];
        assert_eq!(
            verify_signature(SECRET, BODY, Some(truncated)),
            Err(SignatureError::WrongLength { found: 31 })
        );
        let odd = &EXPECTED[..EXPECTED.len() - 1];
        assert_eq!(
            verify_signature(SECRET, BODY, Some(odd)),
            Err(SignatureError::WrongLength { found: 31 })
        );
        let long = format!("{EXPECTED}00");
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&long)),
            Err(SignatureError::WrongLength { found: 33 })
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some("sha256=")),
            Err(SignatureError::WrongLength { found: 0 })
        );
    }

    #[test]
    fn wrong_secret_or_altered_body_is_a_mismatch() {
        assert_eq!(
            verify_signature(b"another secret", BODY, Some(EXPECTED)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(SECRET, b"Hello, World?", Some(EXPECTED)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_secret_and_body_still_sign_and_verify() {
        let signature = sign(b"", b"");
        assert_eq!(verify_signature(b"", b"", Some(&signature)), Ok(()));
        assert_eq!(signature.len(), "sha256=".len() + 64);
    }
}
