//! Checks a fix must pass on its own, before it is ordered among its OBU's fixes.

use crate::event::Fix;

/// Why the distance stage did not bill a fix. Each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Latitude or longitude is NaN or infinite.
    NonFinite,
    /// Latitude outside ±90 or longitude outside ±180.
    OutOfRange,
    /// Exactly (0, 0): a receiver without a position.
    NullIsland,
    /// Fix time before 1970 or after 2200: a broken clock.
    InvalidTime,
    /// Fix time too far after the time it was received.
    Future,
    /// Fix time too far before the time it was received.
    Stale,
    /// The same time and position as a fix already taken.
    Duplicate,
    /// The same time as a fix already taken, at another position.
    SameTime,
    /// Older than fixes already billed (it arrived after the reorder window).
    TooLate,
    /// The same position as the fix before it (a receiver's heartbeat).
    RepeatedPosition,
    /// The same position as one of the last few fixes: an old fix sent again.
    ResentPosition,
    /// Reaching it from the last accepted fix needs an impossible speed.
    ImplausibleSpeed,
    /// A lone jump away and back that the following fixes contradict.
    Spike,
    /// Within the jitter radius of a parked vehicle's position.
    Stationary,
    /// A move away from a stopped position that the following fixes did not confirm.
    UnconfirmedMove,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::NonFinite,
        Reason::OutOfRange,
        Reason::NullIsland,
        Reason::InvalidTime,
        Reason::Future,
        Reason::Stale,
        Reason::Duplicate,
        Reason::SameTime,
        Reason::TooLate,
        Reason::RepeatedPosition,
        Reason::ResentPosition,
        Reason::ImplausibleSpeed,
        Reason::Spike,
        Reason::Stationary,
        Reason::UnconfirmedMove,
    ];

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NonFinite => "non_finite",
            Reason::OutOfRange => "out_of_range",
            Reason::NullIsland => "null_island",
            Reason::InvalidTime => "invalid_time",
            Reason::Future => "future_time",
            Reason::Stale => "past_time",
            Reason::Duplicate => "duplicate",
            Reason::SameTime => "same_time",
            Reason::TooLate => "too_late",
            Reason::RepeatedPosition => "repeated_position",
            Reason::ResentPosition => "resent_position",
            Reason::ImplausibleSpeed => "implausible_speed",
            Reason::Spike => "spike",
            Reason::Stationary => "stationary",
            Reason::UnconfirmedMove => "unconfirmed_move",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// 2200-01-01T00:00:00Z: no OBU in service reports a later time.
const LATEST_MS: i64 = 7_258_118_400_000;

/// Limits on fix time relative to receive time.
#[derive(Clone, Copy, Debug)]
pub struct Skew {
    pub max_future_ms: i64,
    pub max_past_ms: i64,
}

/// The first check `fix` fails, if any.
pub fn check(fix: &Fix, skew: Skew) -> Option<Reason> {
    if !fix.lat.is_finite() || !fix.lon.is_finite() {
        return Some(Reason::NonFinite);
    }
    if fix.lat.abs() > 90.0 || fix.lon.abs() > 180.0 {
        return Some(Reason::OutOfRange);
    }
    if fix.lat == 0.0 && fix.lon == 0.0 {
        return Some(Reason::NullIsland);
    }
    if !(0..LATEST_MS).contains(&fix.ts_ms) {
        return Some(Reason::InvalidTime);
    }
    let ahead = fix.ts_ms.saturating_sub(fix.ctx.received_ms);
    if ahead > skew.max_future_ms {
        return Some(Reason::Future);
    }
    if ahead.saturating_neg() > skew.max_past_ms {
        return Some(Reason::Stale);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventContext;

    fn fix(lat: f64, lon: f64, ts_ms: i64, received_ms: i64) -> Fix {
        let ctx = EventContext { received_ms, trace: None };
        Fix { obu_id: "a".into(), ts_ms, lat, lon, ctx }
    }

    #[test]
    fn each_bad_coordinate_gets_its_own_reason() {
        let skew = Skew { max_future_ms: 1_000, max_past_ms: 10_000 };
        assert_eq!(check(&fix(f64::NAN, 1.0, 0, 0), skew), Some(Reason::NonFinite));
        assert_eq!(check(&fix(1.0, f64::INFINITY, 0, 0), skew), Some(Reason::NonFinite));
        assert_eq!(check(&fix(90.5, 1.0, 0, 0), skew), Some(Reason::OutOfRange));
        assert_eq!(check(&fix(1.0, -180.1, 0, 0), skew), Some(Reason::OutOfRange));
        assert_eq!(check(&fix(0.0, 0.0, 0, 0), skew), Some(Reason::NullIsland));
        assert_eq!(check(&fix(50.0, 11.9, 0, 0), skew), None);
    }

    #[test]
    fn times_far_from_the_receive_time_are_refused() {
        let skew = Skew { max_future_ms: 1_000, max_past_ms: 10_000 };
        assert_eq!(check(&fix(50.0, 11.9, 1_001, 0), skew), Some(Reason::Future));
        assert_eq!(check(&fix(50.0, 11.9, 1_000, 0), skew), None);
        assert_eq!(check(&fix(50.0, 11.9, 0, 10_001), skew), Some(Reason::Stale));
        assert_eq!(check(&fix(50.0, 11.9, 0, 10_000), skew), None);
        assert_eq!(check(&fix(50.0, 11.9, -1, -1), skew), Some(Reason::InvalidTime));
        let far = 8_000_000_000_000;
        assert_eq!(check(&fix(50.0, 11.9, far, far), skew), Some(Reason::InvalidTime));
    }
}
