//! `--duration` values: a number with a unit, as `10s`, `1.5s`, `500ms`,
//! `2m`.

use std::time::Duration;

/// Longest accepted run, so a typo like `10h` for `10s` is at least
/// bounded and the float conversion below cannot overflow.
const MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`; the number may
/// have a fraction. A bare number is refused: `10` could mean seconds or
/// milliseconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("{text:?} has no unit: write e.g. 10s, 500ms or 2m")),
        other => return Err(format!("unknown unit {other:?} in {text:?} (use ms, s, m or h)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a number with a unit (e.g. 10s)"))?;
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be more than zero"));
    }
    if seconds > MAX.as_secs_f64() {
        return Err(format!("{text:?} is longer than {}h", MAX.as_secs() / 3600));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units_and_fractions_parse() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10x").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("not a number"));
        assert!(parse("1.2.3s").unwrap_err().contains("not a number"));
        assert!(parse("0s").unwrap_err().contains("more than zero"));
        assert!(parse("25h").unwrap_err().contains("longer than"));
        assert!(parse("-1s").is_err());
    }
}
