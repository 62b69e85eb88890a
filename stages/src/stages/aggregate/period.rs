//! Billing periods: calendar months in a configured time zone.

use chrono::{Datelike, LocalResult, NaiveDate, TimeZone};
use chrono_tz::Tz;

/// Maps fix times to billing periods, remembering the last period's bounds so
/// that the common case (the same month as the previous segment) is two
/// comparisons.
#[derive(Clone, Debug)]
pub struct PeriodClock {
    tz: Tz,
    cached: Option<Period>,
}

/// One calendar month, as a UTC time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// `YYYY-MM`.
    pub label: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl PeriodClock {
    pub fn new(tz: Tz) -> Self {
        PeriodClock { tz, cached: None }
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The period that contains `ts_ms`.
    pub fn period_of(&mut self, ts_ms: i64) -> &Period {
        let hit = matches!(&self.cached, Some(p) if p.start_ms <= ts_ms && ts_ms < p.end_ms);
        if !hit {
            self.cached = Some(month_of(self.tz, ts_ms));
        }
        self.cached.as_ref().expect("filled above")
    }

    /// Splits `mm` driven between two times over the periods it spans, in
    /// proportion to time. The parts add up to `mm` exactly.
    /// Each part is named by the UTC start of its period.
    pub fn split(&mut self, from_ms: i64, to_ms: i64, mm: i64, mut part: impl FnMut(i64, i64)) {
        let end = self.period_of(to_ms);
        if end.start_ms <= from_ms || to_ms <= from_ms {
            part(end.start_ms, mm);
            return;
        }
        let span = (to_ms - from_ms) as f64;
        let mut given = 0;
        let mut cursor = from_ms;
        while cursor < to_ms {
            let period = self.period_of(cursor).clone();
            let until = period.end_ms.min(to_ms);
            let share = if until == to_ms {
                mm - given
            } else {
                ((until - from_ms) as f64 / span * mm as f64).round() as i64 - given
            };
            given += share;
            part(period.start_ms, share);
            cursor = until;
        }
    }
}

/// The label of the period containing the present moment.
pub fn current_label(tz: Tz) -> String {
    month_of(tz, chrono::Utc::now().timestamp_millis()).label
}

fn month_of(tz: Tz, ts_ms: i64) -> Period {
    // Fix times are checked to lie between 1970 and 2200 before they get here;
    // anything else is billed to the epoch's month rather than panicking.
    let local = match tz.timestamp_millis_opt(ts_ms) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
        LocalResult::None => chrono::DateTime::UNIX_EPOCH.with_timezone(&tz),
    };
    let (year, month) = (local.year(), local.month());
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    Period {
        label: format!("{year:04}-{month:02}"),
        start_ms: month_start_ms(tz, year, month),
        end_ms: month_start_ms(tz, next_year, next_month),
    }
}

/// Midnight at the start of a month in `tz`, in UTC milliseconds. Where a
/// time zone skips midnight (a DST change at 00:00), the first valid instant.
fn month_start_ms(tz: Tz, year: i32, month: u32) -> i64 {
    let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    let mut time = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        match tz.from_local_datetime(&time) {
            LocalResult::Single(t) => return t.timestamp_millis(),
            LocalResult::Ambiguous(earliest, _) => return earliest.timestamp_millis(),
            LocalResult::None => time += chrono::Duration::minutes(30),
        }
    }
    time.and_utc().timestamp_millis()
}

/// Parses a billing period label `YYYY-MM`.
pub fn valid_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    bytes.len() == 7
        && bytes[4] == b'-'
        && bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
        && matches!(label[5..].parse::<u32>(), Ok(1..=12))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn months_follow_the_configured_time_zone() {
        let mut utc = PeriodClock::new(Tz::UTC);
        let mut berlin = PeriodClock::new(chrono_tz::Europe::Berlin);
        // 23:30 UTC on 31 January is already February in Berlin.
        let t = ms("2024-01-31T23:30:00Z");
        assert_eq!(utc.period_of(t).label, "2024-01");
        assert_eq!(berlin.period_of(t).label, "2024-02");
        assert_eq!(berlin.period_of(t).start_ms, ms("2024-01-31T23:00:00Z"));
    }

    #[test]
    fn a_segment_across_month_end_is_split_by_time_and_keeps_every_millimetre() {
        let mut clock = PeriodClock::new(Tz::UTC);
        let mut parts = Vec::new();
        let from = ms("2024-03-31T23:00:00Z");
        let to = ms("2024-04-01T02:00:00Z");
        clock.split(from, to, 3001, |start, mm| parts.push((start, mm)));
        let (march, april) = (ms("2024-03-01T00:00:00Z"), ms("2024-04-01T00:00:00Z"));
        assert_eq!(parts, vec![(march, 1000), (april, 2001)]);
    }

    #[test]
    fn period_labels_are_checked() {
        assert!(valid_label("2024-01"));
        assert!(valid_label("2024-12"));
        for bad in ["2024-13", "2024-00", "2024-1", "abcd-01", "2024/01", ""] {
            assert!(!valid_label(bad), "{bad}");
        }
    }
}
