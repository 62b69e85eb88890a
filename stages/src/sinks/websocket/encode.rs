//! How one fix is written on the wire, in the native or the legacy format.
//!
//! Fixes are encoded once, when the sink takes them in, so that a fix that
//! cannot be written is refused at the door and a resend after a reconnect
//! sends exactly the bytes of the first attempt.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::Fix;
use crate::sources::websocket::wire;
use crate::telemetry::{ComponentMetrics, Counter};

/// The shape of the fixes in a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"obu_id": "obu-17", "ts": "2024-05-01T12:00:00.000Z", "lat": .., "lon": ..}`.
    #[default]
    Native,
    /// The old Go OBU's `{"obuID": 17, "lat": .., "long": ..}`: it has no time
    /// (the receiver stamps the time it got the frame) and a numeric id.
    Legacy,
}

/// Why a fix cannot be written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    /// The legacy format carries the id as a JSON integer.
    #[error("obu id {0:?} is not a decimal integer without leading zeros, as legacy frames need")]
    NotLegacyId(String),
    #[error("fix cannot be encoded")]
    Unencodable(#[from] wire::EncodeError),
}

impl Refusal {
    /// The rejection reason the fix is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotLegacyId(_) => "not_legacy_id",
            Refusal::Unencodable(_) => "unencodable_fix",
        }
    }
}

#[derive(Serialize)]
struct LegacyFix {
    #[serde(rename = "obuID")]
    obu_id: i64,
    lat: f64,
    long: f64,
}

impl Format {
    /// The JSON text of `fix` in this format.
    pub fn encode(self, fix: &Fix) -> Result<Box<[u8]>, Refusal> {
        let mut buf = Vec::with_capacity(96);
        match self {
            Format::Native => wire::write_native_json_traced(fix, &mut buf)?,
            Format::Legacy => {
                let obu_id = legacy_id(&fix.obu_id)
                    .ok_or_else(|| Refusal::NotLegacyId(fix.obu_id.to_string()))?;
                // serde_json writes NaN as null, which the receiver refuses.
                if !fix.lat.is_finite() || !fix.lon.is_finite() {
                    let (lat, lon) = (fix.lat, fix.lon);
                    return Err(wire::EncodeError::NotFinite { lat, lon }.into());
                }
                let legacy = LegacyFix { obu_id, lat: fix.lat, long: fix.lon };
                // An integer and finite numbers always serialize.
                let _ = serde_json::to_writer(&mut buf, &legacy);
            }
        }
        Ok(buf.into_boxed_slice())
    }
}

/// The id as the legacy integer, when writing it as one and reading it back
/// gives the same text: digits only, no leading zero (`"007"` would come back
/// as `"7"` and bill another OBU), and within `i64`.
fn legacy_id(id: &str) -> Option<i64> {
    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = id.len() > 1 && id.starts_with('0');
    if !digits || leading_zero {
        return None;
    }
    id.parse().ok()
}

/// Encodes the fixes of incoming batches, counting refused ones and warning
/// about them at most once per interval.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    not_legacy_id: Counter,
    unencodable: Counter,
    warnings: Throttle,
}

impl Encoder {
    pub fn new(format: Format, metrics: &ComponentMetrics, warn_interval: Duration) -> Self {
        Encoder {
            format,
            not_legacy_id: metrics.rejected("not_legacy_id"),
            unencodable: metrics.rejected("unencodable_fix"),
            warnings: Throttle::new(warn_interval),
        }
    }

    /// The encoded fixes that can be written, in order; the others are dropped.
    pub fn encode_all(&mut self, fixes: &[Fix]) -> Vec<Box<[u8]>> {
        let mut encoded = Vec::with_capacity(fixes.len());
        for fix in fixes {
            let refusal = match self.format.encode(fix) {
                Ok(bytes) => {
                    encoded.push(bytes);
                    continue;
                }
                Err(refusal) => refusal,
            };
            let counter = match refusal {
                Refusal::NotLegacyId(_) => &self.not_legacy_id,
                Refusal::Unencodable(_) => &self.unencodable,
            };
            counter.add(1);
            if let Some(suppressed) = self.warnings.allow() {
                let (obu_id, error) = (&fix.obu_id, crate::error_chain(&refusal));
                let reason = refusal.reason();
                tracing::warn!(%obu_id, reason, %error, suppressed, "websocket sink refused a fix");
            }
        }
        encoded
    }
}

/// Lets a warning through at most once per interval and counts the ones held back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, last: None, suppressed: 0 }
    }

    /// `Some(held back since the last one)` when a warning may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventContext;

    fn fix(obu_id: &str, lat: f64) -> Fix {
        let ctx = EventContext { received_ms: 0, trace: None };
        Fix { obu_id: obu_id.into(), ts_ms: 1_714_564_800_250, lat, lon: 11.5, ctx }
    }

    fn text(bytes: Box<[u8]>) -> String {
        String::from_utf8(bytes.into_vec()).expect("utf-8")
    }

    #[test]
    fn native_fix_carries_id_time_and_position() {
        let encoded = Format::Native.encode(&fix("obu-1", 50.25)).expect("encodable");

        let expected =
            r#"{"obu_id":"obu-1","ts":"2024-05-01T12:00:00.250Z","lat":50.25,"lon":11.5}"#;
        assert_eq!(text(encoded), expected);
    }

    #[test]
    fn legacy_fix_has_a_numeric_id_and_no_time() {
        let encoded = Format::Legacy.encode(&fix("4711", 50.25)).expect("encodable");

        assert_eq!(text(encoded), r#"{"obuID":4711,"lat":50.25,"long":11.5}"#);
    }

    #[test]
    fn legacy_refuses_ids_that_would_not_read_back_the_same() {
        let too_big = "9223372036854775808"; // i64::MAX + 1
        for id in ["obu-1", "007", "-5", "+5", "1.0", " 1", too_big] {
            let refusal = Format::Legacy.encode(&fix(id, 1.0)).expect_err(id);

            assert_eq!(refusal.reason(), "not_legacy_id", "{id}");
        }
        assert!(Format::Legacy.encode(&fix("0", 1.0)).is_ok());
        assert!(Format::Legacy.encode(&fix("9223372036854775807", 1.0)).is_ok());
    }

    #[test]
    fn coordinates_that_json_cannot_carry_are_refused_in_both_formats() {
        for format in [Format::Native, Format::Legacy] {
            let refusal = format.encode(&fix("12", f64::NAN)).expect_err("nan");

            assert_eq!(refusal.reason(), "unencodable_fix", "{format:?}");
        }
    }

    #[test]
    fn throttle_lets_the_first_warning_through_and_counts_the_rest() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));

        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed, 2);
    }
}
