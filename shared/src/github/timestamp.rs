//! RFC 3339 timestamps as GitHub and the result object write them.
//!
//! GitHub writes `2016-07-11T22:14:10Z`; GitHub Enterprise Server and Python
//! (`datetime.isoformat()`, which papermill-side tools use) may write an offset
//! such as `+00:00` or `-05:00`. `humantime` parses the `Z` form only, so the
//! offset is applied here.

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 timestamp with `Z` or a numeric `±HH:MM` offset, with or
/// without fractional seconds. `None` when it is not one.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Some(utc) = text.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339_weak(utc).ok();
    }
    // `±HH:MM` is the last six bytes; the date part never contains `+`, and
    // its `-`s are at fixed positions before the time.
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    let (hours, minutes) = offset.get(1..)?.split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 || !local.contains('T') && !local.contains(' ') {
        return None;
    }
    let as_if_utc = humantime::parse_rfc3339_weak(local).ok()?;
    // Local time = UTC + offset, so UTC = local - offset.
    let shift = Duration::from_secs((hours * 3600 + minutes * 60).unsigned_abs());
    if sign > 0 {
        as_if_utc.checked_sub(shift)
    } else {
        as_if_utc.checked_add(shift)
    }
}

/// Formats a time the way GitHub's REST API wants it: `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parses_github_form_and_offsets() {
        // 2016-07-11T22:14:10Z = 1468275250
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10Z"),
            Some(at(1_468_275_250))
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10+00:00"),
            Some(at(1_468_275_250))
        );
        assert_eq!(
            parse_rfc3339("2016-07-12T00:14:10+02:00"),
            Some(at(1_468_275_250))
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T17:14:10-05:00"),
            Some(at(1_468_275_250))
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10.500Z"),
            Some(at(1_468_275_250) + Duration::from_millis(500))
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10.250000+00:00"),
            Some(at(1_468_275_250) + Duration::from_millis(250))
        );
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "Z",
            "yesterday",
            "2016-07-11",
            "2016-07-11T22:14:10",
            "2016-07-11T22:14:10+25:00",
            "2016-07-11T22:14:10é00:00",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
    }

    #[test]
    fn formats_in_github_form() {
        assert_eq!(format_rfc3339(at(1_468_275_250)), "2016-07-11T22:14:10Z");
    }
}
