//! HMAC-SHA256 (RFC 2104 with SHA-256), from the `hmac` and `sha2` crates.

use hmac::{KeyInit, Mac};

/// The MAC type used for webhook signatures and link tokens.
pub type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A MAC keyed with `key`; HMAC takes keys of any length.
pub fn keyed(key: &[u8]) -> HmacSha256 {
    // `new_from_slice` fails only for MACs with a fixed key size; HMAC has none.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// HMAC-SHA256 of `data` under `key`, as lowercase hex.
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = keyed(key);
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
