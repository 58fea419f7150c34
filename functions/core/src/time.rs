//! Time helpers: durations as people write them, Unix seconds as APIs send them.

use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

/// Parses durations such as `90s`, `5m`, `1h30m`, `2h`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphabetic() {
                unit.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected a number before {unit:?}"))?;
        number.clear();
        total += match unit.as_str() {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            "d" => Duration::from_secs(value * 86_400),
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d, e.g. 90s, 5m, 1h)"
                ))
            }
        };
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: a unit is missing after {number} (e.g. 90s, 5m, 1h)"
        ));
    }
    Ok(total)
}

/// A duration as [`parse_duration`] reads it back, in its largest whole unit (`24h`,
/// `90s`, `1500ms`): for messages that name a setting's value.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in units {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Unix seconds (integer or fractional) to a UTC timestamp; `None` when out of range.
pub fn from_unix_seconds(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round() as u32;
    Utc.timestamp_opt(whole as i64, nanos.min(999_999_999))
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn unix_seconds_convert_to_utc() {
        let t = from_unix_seconds(1_700_000_000.5).unwrap();
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.500+00:00");
        assert!(from_unix_seconds(f64::NAN).is_none());
        assert!(from_unix_seconds(1e20).is_none());
    }

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["1d", "24h", "90s", "5m", "1500ms", "0ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }
}
