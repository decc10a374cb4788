//! RFC 3339 timestamps, as GitHub, Google APIs and the result object write them.
//!
//! GitHub writes `2016-07-11T22:14:10Z`; GitHub Enterprise Server, Google and
//! Python (`datetime.isoformat()`) may write fractions and an offset such as
//! `+00:00` or `-05:00`. `jiff` parses all of them; a time without an offset
//! is refused (it names no instant).

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 timestamp with `Z` or a numeric offset, with or without
/// fractional seconds. `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let timestamp: jiff::Timestamp = text.trim().parse().ok()?;
    Some(SystemTime::from(timestamp))
}

/// Formats a time to the second, in UTC: `YYYY-MM-DDTHH:MM:SSZ` (the form
/// GitHub's REST API wants). Times outside jiff's range (years -9999 to 9999)
/// are clamped to it.
pub fn format_rfc3339(time: SystemTime) -> String {
    let timestamp = jiff::Timestamp::try_from(time).unwrap_or(if time < SystemTime::UNIX_EPOCH {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, formatted by [`format_rfc3339`].
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Seconds since the Unix epoch, as a float (0 for times before it).
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The time `seconds` after the epoch; out-of-range values saturate.
pub fn from_epoch_seconds(seconds: f64) -> SystemTime {
    let offset = Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX);
    SystemTime::UNIX_EPOCH
        .checked_add(offset)
        // The end of year 9999, jiff's last instant.
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799))
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
        for (text, expected) in [
            ("2016-07-11T22:14:10Z", at(1_468_275_250)),
            ("2016-07-11T22:14:10+00:00", at(1_468_275_250)),
            ("2016-07-12T00:14:10+02:00", at(1_468_275_250)),
            ("2016-07-11T17:14:10-05:00", at(1_468_275_250)),
            (
                "2016-07-11T22:14:10.500Z",
                at(1_468_275_250) + Duration::from_millis(500),
            ),
            (
                "2016-07-11T22:14:10.250000+00:00",
                at(1_468_275_250) + Duration::from_millis(250),
            ),
        ] {
            assert_eq!(parse_rfc3339(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "Z",
            "yesterday",
            "2016-07-11",
            "2016-07-11T22:14:10",
            "2016-07-11T22:14:10+99:00",
            "2016-07-11T22:14:10é00:00",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
    }

    #[test]
    fn formats_in_github_form() {
        assert_eq!(format_rfc3339(at(1_468_275_250)), "2016-07-11T22:14:10Z");
        assert_eq!(
            format_rfc3339(at(1_468_275_250) + Duration::from_millis(999)),
            "2016-07-11T22:14:10Z"
        );
        // Far future: clamped, not a panic.
        let _ = format_rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40));
    }

    #[test]
    fn epoch_seconds_round_trip_and_saturate() {
        assert_eq!(epoch_seconds(at(10)), 10.0);
        assert_eq!(from_epoch_seconds(10.0), at(10));
        let _ = from_epoch_seconds(1e300);
        let _ = from_epoch_seconds(f64::NAN);
        assert_eq!(from_epoch_seconds(-5.0), SystemTime::UNIX_EPOCH);
    }
}
