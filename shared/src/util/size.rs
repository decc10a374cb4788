//! Sizes as people write them (`256MB`, `1.5 GiB`, `1000000`), parsed and shown
//! with the `bytesize` crate's units (kB = 1000 bytes, KiB = 1024).

/// Parses a positive size: a number of bytes or a number with a unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let size = trimmed
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!("{trimmed:?} is not a size (write e.g. 256MB, 1GiB or a number of bytes)")
        })?;
    if size == 0 {
        return Err(format!("{trimmed:?} is zero"));
    }
    Ok(size)
}

/// `bytes` for a reader: `2.0 kB`, `256.0 MB`.
pub fn show_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().si().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units_or_bytes() {
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64 kb"), Ok(64_000));
        for bad in ["", "lots", "-1MB", "0"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(show_size(2000), "2.0 kB");
    }
}
