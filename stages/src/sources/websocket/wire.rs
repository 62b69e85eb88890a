//! What OBUs send and what the server answers, as JSON text.
//!
//! A frame holds one fix or an array of fixes, in either of two shapes that
//! may be mixed in one array:
//!
//! - native: `{"obu_id": "obu-17", "ts": "2024-05-01T12:00:00Z", "lat": 50.1, "lon": 11.9}`
//! - the old Go OBU: `{"obuID": 17, "lat": 50.1, "long": 11.9}`, which carries no
//!   time, so the time the frame was received stands in for the fix time.
//!
//! A native fix may carry a W3C `traceparent`, which makes its trace continue
//! the OBU's (a malformed one is ignored, as W3C asks).
//!
//! Fields of other names are ignored, so newer OBUs may add some. Frames are
//! parsed straight into [`Fix`]es: identifiers up to 24 bytes stay inline, so
//! the only allocation per frame is the batch's vector.

use std::fmt;

use chrono::{DateTime, SecondsFormat};
use compact_str::ToCompactString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::ack::AckStatus;
use crate::event::{EventContext, Fix, Millis, ObuId, TraceContext};

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Malformed(#[from] serde_json::Error),
    #[error("frame holds {count} fixes, more than the limit of {max}")]
    TooManyFixes { count: usize, max: usize },
}

impl FrameError {
    /// The rejection reason this error is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Malformed(_) => "malformed_frame",
            FrameError::TooManyFixes { .. } => "too_many_fixes",
        }
    }
}

/// Parses a frame into `out`, stamping every fix with `received_ms`.
///
/// On error `out` may hold the fixes parsed before the fault; callers discard
/// it with the frame.
pub fn parse_frame(
    payload: &[u8],
    received_ms: Millis,
    max_fixes: usize,
    out: &mut Vec<Fix>,
) -> Result<(), FrameError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    FrameSeed { out: &mut *out, received_ms }.deserialize(&mut de)?;
    de.end()?;

    // Frames are bounded in bytes, so counting after parsing costs at most
    // one frame's worth of work.
    if out.len() > max_fixes {
        return Err(FrameError::TooManyFixes { count: out.len(), max: max_fixes });
    }
    Ok(())
}

/// A fix as either kind of OBU writes it; which fields must be present is
/// decided in [`WireFix::into_fix`].
#[derive(Deserialize)]
struct WireFix {
    obu_id: Option<ObuId>,
    #[serde(rename = "obuID")]
    go_obu_id: Option<i64>,
    ts: Option<Rfc3339Millis>,
    lat: Option<f64>,
    lon: Option<f64>,
    long: Option<f64>,
    traceparent: Option<WireTrace>,
}

impl WireFix {
    fn into_fix(self, received_ms: Millis) -> Result<Fix, &'static str> {
        let (obu_id, native) = match (self.obu_id, self.go_obu_id) {
            (Some(id), None) if !crate::event::valid_obu_id(&id) => {
                return Err(crate::event::OBU_ID_RULE)
            }
            (Some(id), None) => (id, true),
            (None, Some(number)) => (number.to_compact_string(), false),
            (None, None) => return Err("missing field `obu_id` (or `obuID`)"),
            (Some(_), Some(_)) => return Err("fields `obu_id` and `obuID` are both present"),
        };
        let ts_ms = match (self.ts, native) {
            (Some(ts), _) => ts.0,
            (None, false) => received_ms,
            (None, true) => return Err("missing field `ts`"),
        };
        let lat = self.lat.ok_or("missing field `lat`")?;
        let lon = match (self.lon, self.long) {
            (Some(lon), None) | (None, Some(lon)) => lon,
            (None, None) => return Err("missing field `lon` (or `long`)"),
            (Some(_), Some(_)) => return Err("fields `lon` and `long` are both present"),
        };
        let trace = self.traceparent.and_then(|t| t.0);
        let ctx = EventContext { received_ms, trace };
        Ok(Fix { obu_id, ts_ms, lat, lon, ctx })
    }
}

/// A `traceparent` read without keeping the text; `None` when malformed.
struct WireTrace(Option<TraceContext>);

impl<'de> Deserialize<'de> for WireTrace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TraceVisitor)
    }
}

struct TraceVisitor;

impl Visitor<'_> for TraceVisitor {
    type Value = WireTrace;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a W3C traceparent")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(WireTrace(crate::grpc::parse_traceparent(text)))
    }
}

/// An RFC 3339 time read as milliseconds since the epoch, without keeping the text.
struct Rfc3339Millis(Millis);

impl<'de> Deserialize<'de> for Rfc3339Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Rfc3339Visitor)
    }
}

struct Rfc3339Visitor;

impl Visitor<'_> for Rfc3339Visitor {
    type Value = Rfc3339Millis;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        match DateTime::parse_from_rfc3339(text) {
            Ok(time) => Ok(Rfc3339Millis(time.timestamp_millis())),
            Err(error) => Err(E::custom(format_args!("bad timestamp {text:?}: {error}"))),
        }
    }
}

/// The whole frame: one fix object or an array of them.
struct FrameSeed<'v> {
    out: &'v mut Vec<Fix>,
    received_ms: Millis,
}

impl<'de> DeserializeSeed<'de> for FrameSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FrameSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fix object or an array of fix objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        push_fix(map, self.out, self.received_ms)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let received_ms = self.received_ms;
        while seq.next_element_seed(FixSeed { out: &mut *self.out, received_ms })?.is_some() {}
        Ok(())
    }
}

/// One element of an array frame; only objects are fixes.
struct FixSeed<'v> {
    out: &'v mut Vec<Fix>,
    received_ms: Millis,
}

impl<'de> DeserializeSeed<'de> for FixSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FixSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fix object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        push_fix(map, self.out, self.received_ms)
    }
}

fn push_fix<'de, A: MapAccess<'de>>(
    map: A,
    out: &mut Vec<Fix>,
    received_ms: Millis,
) -> Result<(), A::Error> {
    let wire = WireFix::deserialize(de::value::MapAccessDeserializer::new(map))?;
    out.push(wire.into_fix(received_ms).map_err(de::Error::custom)?);
    Ok(())
}

/// A fix cannot be written in the native format.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncodeError {
    #[error("fix time {ts_ms} ms is outside the range of RFC 3339")]
    TimeOutOfRange { ts_ms: Millis },
    #[error("fix coordinates ({lat}, {lon}) are not finite numbers, which JSON cannot carry")]
    NotFinite { lat: f64, lon: f64 },
}

#[derive(Serialize)]
struct NativeFix<'a> {
    obu_id: &'a str,
    ts: &'a str,
    lat: f64,
    lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

impl<'a> NativeFix<'a> {
    /// Checks that `fix` can be written and formats its time into `ts`.
    fn new(fix: &'a Fix, ts: &'a mut String) -> Result<Self, EncodeError> {
        let time = DateTime::from_timestamp_millis(fix.ts_ms)
            .ok_or(EncodeError::TimeOutOfRange { ts_ms: fix.ts_ms })?;
        if !fix.lat.is_finite() || !fix.lon.is_finite() {
            return Err(EncodeError::NotFinite { lat: fix.lat, lon: fix.lon });
        }
        *ts = time.to_rfc3339_opts(SecondsFormat::Millis, true);
        let ts: &'a String = ts;
        Ok(NativeFix { obu_id: &fix.obu_id, ts, lat: fix.lat, lon: fix.lon, traceparent: None })
    }
}

/// Appends `fix` to `buf` in the native format, the time in UTC with milliseconds.
pub fn write_native_json(fix: &Fix, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut ts = String::new();
    let native = NativeFix::new(fix, &mut ts)?;
    // Strings and finite numbers always serialize; the vector cannot refuse bytes.
    let _ = serde_json::to_writer(buf, &native);
    Ok(())
}

/// Like [`write_native_json`], with the fix's trace context as `traceparent`
/// when it has one, so that the receiver continues its trace.
pub fn write_native_json_traced(fix: &Fix, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut ts = String::new();
    let mut native = NativeFix::new(fix, &mut ts)?;
    native.traceparent = fix.ctx.trace.map(|t| crate::grpc::traceparent(&t));
    // Strings and finite numbers always serialize; the vector cannot refuse bytes.
    let _ = serde_json::to_writer(buf, &native);
    Ok(())
}

/// `fix` in the native format, the time in UTC with milliseconds.
pub fn to_native_json(fix: &Fix) -> Result<String, EncodeError> {
    let mut ts = String::new();
    let native = NativeFix::new(fix, &mut ts)?;
    // Strings and finite numbers always serialize.
    Ok(serde_json::to_string(&native).unwrap_or_default())
}

/// The answer to a frame whose fixes every downstream component is done with
/// (`{"ack": 3, "fixes": 10}`), or that one of them failed (`{"nack": ...}`).
pub fn ack_reply(frame: u64, fixes: usize, status: AckStatus) -> String {
    match status {
        AckStatus::Delivered => format!(r#"{{"ack":{frame},"fixes":{fixes}}}"#),
        AckStatus::Failed => format!(r#"{{"nack":{frame},"fixes":{fixes}}}"#),
    }
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: &'a str,
    frame: u64,
    detail: String,
}

/// The answer to a refused frame: `{"error": "malformed frame", "frame": 3, "detail": "..."}`.
pub fn error_reply(frame: u64, error: &FrameError) -> String {
    let kind = match error {
        FrameError::Malformed(_) => "malformed frame",
        FrameError::TooManyFixes { .. } => "too many fixes",
    };
    let reply = ErrorReply { error: kind, frame, detail: error.to_string() };
    serde_json::to_string(&reply).unwrap_or_else(|_| format!(r#"{{"error":"{kind}"}}"#))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
