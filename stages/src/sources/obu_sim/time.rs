//! Timestamp parsing for replayed files: RFC 3339 and its common relatives.
//!
//! Recorded fleet data rarely follows RFC 3339 to the letter: the date and
//! time may be separated by a space, and offsets come as `Z`, `+hh:mm`,
//! `+hhmm` or `+hh`. This parser accepts all of them, requires an offset
//! (a time without one cannot be placed on the UTC axis), and allocates
//! nothing.

use crate::event::Millis;

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {text:?} is not `YYYY-MM-DD[T ]hh:mm:ss[.fff](Z|+hh:mm|+hhmm)`")]
pub struct TimeError {
    pub text: String,
}

/// Parses a timestamp with a UTC offset into milliseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<Millis, TimeError> {
    parse(text.trim().as_bytes()).ok_or_else(|| TimeError { text: text.to_owned() })
}

fn parse(b: &[u8]) -> Option<Millis> {
    // Fixed-width date and time: `YYYY-MM-DD?hh:mm:ss`.
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let date_ok = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    if !date_ok || hour > 23 || minute > 59 || second > 60 {
        return None;
    }

    // Optional fraction: keep milliseconds, ignore finer digits.
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some((b'.', tail)) = rest.split_first() {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 100;
        for &c in tail.iter().take(n.min(3)) {
            millis += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &tail[n..];
    }

    let offset_s = offset_seconds(rest)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    Some(seconds * 1_000 + millis)
}

/// `Z`, `+hh:mm`, `+hhmm` or `+hh`, with `+` or `-`, as seconds east of UTC.
fn offset_seconds(b: &[u8]) -> Option<i64> {
    let (sign, hhmm) = match b.split_first()? {
        (b'Z' | b'z', []) => return Some(0),
        (b'+', tail) => (1, tail),
        (b'-', tail) => (-1, tail),
        _ => return None,
    };
    let (hours, minutes) = match hhmm.len() {
        2 => (digits(hhmm)?, 0),
        4 => (digits(&hhmm[0..2])?, digits(&hhmm[2..4])?),
        5 if hhmm[2] == b':' => (digits(&hhmm[0..2])?, digits(&hhmm[3..5])?),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3_600 + minutes * 60))
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
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

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from 1 March of year 0, so the leap day falls at the end of a
    // year, in 400-year eras of 146,097 days.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are hand-converted to UTC and checked with `date -u +%s`.

    #[test]
    fn offset_without_colon_is_understood() {
        // 06:54:07 at +02:00 is 04:54:07 UTC.
        assert_eq!(parse_timestamp("2014-09-10 06:54:07+0200"), Ok(1_410_324_847_000));
    }

    #[test]
    fn space_separator_and_colon_offset_are_understood() {
        assert_eq!(parse_timestamp("2019-03-11 08:33:24+00:00"), Ok(1_552_293_204_000));
    }

    #[test]
    fn negative_offsets_on_both_sides_of_the_dst_switch_agree_with_utc() {
        // CST (-06:00) before the switch, CDT (-05:00) after: 01:59:59 CST is
        // 07:59:59 UTC and 03:00:00 CDT is 08:00:00 UTC, one second later.
        assert_eq!(parse_timestamp("2015-03-08T01:40:54-06:00"), Ok(1_425_800_454_000));
        let before = parse_timestamp("2015-03-08T01:59:59-06:00").unwrap();
        let after = parse_timestamp("2015-03-08T03:00:00-05:00").unwrap();
        assert_eq!(after - before, 1_000);
        assert_eq!(after, 1_425_801_600_000);
    }

    #[test]
    fn zulu_fraction_and_short_offset_are_understood() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("2000-02-29T12:00:00.1234Z"), Ok(951_825_600_123));
        assert_eq!(parse_timestamp("1970-01-01t01:00:00+01"), Ok(0));
    }

    #[test]
    fn malformed_or_offsetless_times_are_refused() {
        for bad in [
            "",
            "2014-09-10 06:54:07",
            "2014-09-10 06:54:07+2",
            "2014-13-10 06:54:07Z",
            "2015-02-29 06:54:07Z",
            "2014-09-10_06:54:07Z",
            "2014-09-10 25:54:07Z",
            "2014-09-10 06:54:07.Z",
            "yesterday at noon",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
