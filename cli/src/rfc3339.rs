//! A small, strict RFC 3339 timestamp parser (no extra crates).
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`, exactly, with `T` and
//! `Z` in either case (RFC 3339 section 5.6 allows lower case). The
//! fraction has 1 to 9 digits and is cut to milliseconds. Rejected:
//! anything else, including a space for `T`, a missing offset, leap
//! seconds (`:60`), impossible dates (`2023-02-29`) and out-of-range
//! fields.

/// Milliseconds since the Unix epoch (negative before 1970) of an RFC 3339
/// timestamp, or a one-line reason it is not one.
pub fn parse_millis(s: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)): {why}");
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(bad("too short"));
    }
    let year = digits(b, 0, 4).ok_or_else(|| bad("bad year"))?;
    expect(b, 4, b'-').ok_or_else(|| bad("expected '-' after the year"))?;
    let month = digits(b, 5, 2).ok_or_else(|| bad("bad month"))?;
    expect(b, 7, b'-').ok_or_else(|| bad("expected '-' after the month"))?;
    let day = digits(b, 8, 2).ok_or_else(|| bad("bad day"))?;
    if !matches!(b[10], b'T' | b't') {
        return Err(bad("expected 'T' between date and time"));
    }
    let hour = digits(b, 11, 2).ok_or_else(|| bad("bad hour"))?;
    expect(b, 13, b':').ok_or_else(|| bad("expected ':' after the hour"))?;
    let minute = digits(b, 14, 2).ok_or_else(|| bad("bad minute"))?;
    expect(b, 16, b':').ok_or_else(|| bad("expected ':' after the minute"))?;
    let second = digits(b, 17, 2).ok_or_else(|| bad("bad second"))?;
    if !(1..=12).contains(&month) {
        return Err(bad("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(bad("day out of range"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("time out of range"));
    }

    let mut pos = 19;
    let mut millis = 0i64;
    if b[pos] == b'.' {
        let start = pos + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if n == 0 || n > 9 {
            return Err(bad("the fraction needs 1 to 9 digits"));
        }
        // Cut to milliseconds: pad or truncate the first three digits.
        for i in 0..3 {
            let d = if start + i < end { i64::from(b[start + i] - b'0') } else { 0 };
            millis = millis * 10 + d;
        }
        pos = end;
    }

    let offset_minutes = match &b[pos..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = digits(b, pos + 1, 2).ok_or_else(|| bad("bad offset hours"))?;
            let om = digits(b, pos + 4, 2).ok_or_else(|| bad("bad offset minutes"))?;
            if oh > 23 || om > 59 {
                return Err(bad("offset out of range"));
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        [] => return Err(bad("missing offset (Z or +HH:MM)")),
        _ => return Err(bad("expected Z or +HH:MM at the end")),
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(secs * 1_000 + millis)
}

/// The number made of `len` ASCII digits at `at`, `None` if any is not one.
fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let part = b.get(at..at + len)?;
    part.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
}

fn expect(b: &[u8], at: usize, want: u8) -> Option<()> {
    (b.get(at) == Some(&want)).then_some(())
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`): shift the year to start in March, so the
/// leap day is the year's last, then count whole 400-year eras.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn epoch_and_known_instants() {
        assert_eq!(parse_millis("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_millis("1970-01-02T00:00:00Z"), Ok(DAY));
        assert_eq!(parse_millis("1969-12-31T23:59:59Z"), Ok(-1_000));
        assert_eq!(parse_millis("2001-09-09T01:46:40Z"), Ok(1_000_000_000_000));
        assert_eq!(parse_millis("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_millis("2038-01-19T03:14:07Z"), Ok(2_147_483_647_000));
        assert_eq!(parse_millis("2000-01-01T00:00:00Z"), Ok(946_684_800_000));
        assert_eq!(parse_millis("0000-03-01T00:00:00Z"), Ok(-62_162_035_200_000));
        assert_eq!(parse_millis("9999-12-31T23:59:59.999Z"), Ok(253_402_300_799_999));
    }

    #[test]
    fn leap_years() {
        // 2024 and 2000 are leap years; 1900 and 2023 are not.
        let feb28 = parse_millis("2024-02-28T00:00:00Z").unwrap();
        assert_eq!(parse_millis("2024-02-29T00:00:00Z"), Ok(feb28 + DAY));
        assert_eq!(parse_millis("2024-03-01T00:00:00Z"), Ok(feb28 + 2 * DAY));
        assert_eq!(parse_millis("2000-02-29T12:00:00Z"), Ok(951_825_600_000));
        assert!(parse_millis("2023-02-29T00:00:00Z").is_err());
        assert!(parse_millis("1900-02-29T00:00:00Z").is_err());
        assert!(parse_millis("2100-02-29T00:00:00Z").is_err());
        let y2023 = parse_millis("2023-01-01T00:00:00Z").unwrap();
        let y2024 = parse_millis("2024-01-01T00:00:00Z").unwrap();
        let y2025 = parse_millis("2025-01-01T00:00:00Z").unwrap();
        assert_eq!(y2024 - y2023, 365 * DAY);
        assert_eq!(y2025 - y2024, 366 * DAY);
        assert_eq!(parse_millis("2024-12-31T00:00:00Z"), Ok(y2024 + 365 * DAY));
    }

    #[test]
    fn offsets_and_fractions() {
        let utc = parse_millis("2024-06-01T12:00:00Z").unwrap();
        assert_eq!(parse_millis("2024-06-01T14:30:00+02:30"), Ok(utc));
        assert_eq!(parse_millis("2024-06-01T07:00:00-05:00"), Ok(utc));
        assert_eq!(parse_millis("2024-06-01T12:00:00+00:00"), Ok(utc));
        assert_eq!(parse_millis("2024-06-01T12:00:00-00:00"), Ok(utc));
        assert_eq!(parse_millis("2024-06-01t12:00:00z"), Ok(utc));
        // Across midnight and a year boundary.
        assert_eq!(parse_millis("2024-01-01T01:00:00+02:00"), parse_millis("2023-12-31T23:00:00Z"));
        assert_eq!(parse_millis("2024-06-01T12:00:00.5Z"), Ok(utc + 500));
        assert_eq!(parse_millis("2024-06-01T12:00:00.123Z"), Ok(utc + 123));
        assert_eq!(parse_millis("2024-06-01T12:00:00.123999999+00:00"), Ok(utc + 123));
        assert_eq!(parse_millis("2024-06-01T12:00:00.05-01:00"), Ok(utc + 3_600_000 + 50));
    }

    #[test]
    fn rejects_everything_else() {
        for s in [
            "",
            "2024",
            "2024-06-01",
            "2024-06-01T12:00:00",
            "2024-06-01 12:00:00Z",
            "2024-06-01T12:00Z",
            "2024-6-01T12:00:00Z",
            "2024-06-1T12:00:00Z",
            "24-06-01T12:00:00Z",
            "+2024-06-01T12:00:00Z",
            "2024-13-01T12:00:00Z",
            "2024-00-01T12:00:00Z",
            "2024-06-00T12:00:00Z",
            "2024-06-31T12:00:00Z",
            "2024-06-01T24:00:00Z",
            "2024-06-01T12:60:00Z",
            "2024-06-01T12:00:60Z",
            "2024-06-01T12:00:00.Z",
            "2024-06-01T12:00:00.1234567890Z",
            "2024-06-01T12:00:00+0200",
            "2024-06-01T12:00:00+02",
            "2024-06-01T12:00:00+24:00",
            "2024-06-01T12:00:00+02:60",
            "2024-06-01T12:00:00ZZ",
            "2024-06-01T12:00:00Z ",
            " 2024-06-01T12:00:00Z",
            "2024-06-01T12:00:00UTC",
            "2024-06-01T12:00:00.12a+02:00",
            "2024-06-01T12:00:00+02:00:00",
            "2024-06-01T1２:00:00Z",
            "1700000000000",
        ] {
            let err = parse_millis(s).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }
}
