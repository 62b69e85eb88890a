//! Pipeline events to and from their `toll.v1` wire form.

use crate::event::{valid_obu_id, Chord, EventContext, ObuId, Segment, TraceContext, TrackState};
use crate::invoice::{Invoice, PriceLine};

use super::proto;

/// Why a received segment was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SegmentError {
    #[error("segment has an invalid obu_id: {}", crate::event::OBU_ID_RULE)]
    ObuId,
    #[error("segment of obu {0} has no track state")]
    MissingState(String),
    #[error("segment of obu {obu_id} has a {field} that is not a finite number")]
    NotFinite { obu_id: String, field: &'static str },
    #[error("segment of obu {0} has negative metres")]
    NegativeMetres(String),
}

/// The wire form of a segment.
pub fn segment_to_proto(segment: &Segment) -> proto::Segment {
    let state = &segment.state;
    let (anchor_ms, anchor_lat, anchor_lon) = state.anchor;
    let (cluster_n, cluster_lat_sum, cluster_lon_sum) = state.cluster;
    proto::Segment {
        obu_id: segment.obu_id.to_string(),
        from_ms: segment.from_ms,
        to_ms: segment.to_ms,
        metres: segment.metres,
        to_lat: segment.to_lat,
        to_lon: segment.to_lon,
        chord: segment.chord.map(|c| proto::Chord {
            metres: c.metres,
            bearing_deg: c.bearing_deg,
            turn_in_deg: c.turn_in_deg,
        }),
        received_ms: segment.ctx.received_ms,
        traceparent: segment.ctx.trace.map(|t| traceparent(&t)).unwrap_or_default(),
        checkpoint: segment.checkpoint,
        state: Some(proto::TrackState {
            anchor_ms,
            anchor_lat,
            anchor_lon,
            cluster_n,
            cluster_lat_sum,
            cluster_lon_sum,
            recent: state.recent.iter().map(|&(lat, lon)| proto::Position { lat, lon }).collect(),
        }),
    }
}

/// A segment from its wire form, checked as every source checks its input.
/// A malformed `traceparent` is dropped, as W3C asks of receivers, and the
/// segment is kept untraced.
pub fn segment_from_proto(wire: proto::Segment) -> Result<Segment, SegmentError> {
    if !valid_obu_id(&wire.obu_id) {
        return Err(SegmentError::ObuId);
    }
    let Some(state) = wire.state else {
        return Err(SegmentError::MissingState(wire.obu_id));
    };
    let chord = wire.chord.unwrap_or_default();
    let numbers = [
        ("metres", wire.metres),
        ("to_lat", wire.to_lat),
        ("to_lon", wire.to_lon),
        ("chord.metres", chord.metres),
        ("chord.bearing_deg", chord.bearing_deg),
        ("chord.turn_in_deg", chord.turn_in_deg.unwrap_or(0.0)),
        ("state.anchor_lat", state.anchor_lat),
        ("state.anchor_lon", state.anchor_lon),
        ("state.cluster_n", state.cluster_n),
        ("state.cluster_lat_sum", state.cluster_lat_sum),
        ("state.cluster_lon_sum", state.cluster_lon_sum),
    ];
    let recent_finite = state.recent.iter().all(|p| p.lat.is_finite() && p.lon.is_finite());
    if let Some((field, _)) = numbers.iter().find(|(_, v)| !v.is_finite()) {
        return Err(SegmentError::NotFinite { obu_id: wire.obu_id, field });
    }
    if !recent_finite {
        return Err(SegmentError::NotFinite { obu_id: wire.obu_id, field: "state.recent" });
    }
    if wire.metres < 0.0 {
        return Err(SegmentError::NegativeMetres(wire.obu_id));
    }

    Ok(Segment {
        obu_id: ObuId::from(wire.obu_id),
        from_ms: wire.from_ms,
        to_ms: wire.to_ms,
        metres: wire.metres,
        to_lat: wire.to_lat,
        to_lon: wire.to_lon,
        chord: wire.chord.map(|c| Chord {
            metres: c.metres,
            bearing_deg: c.bearing_deg,
            turn_in_deg: c.turn_in_deg,
        }),
        checkpoint: wire.checkpoint,
        state: TrackState {
            anchor: (state.anchor_ms, state.anchor_lat, state.anchor_lon),
            cluster: (state.cluster_n, state.cluster_lat_sum, state.cluster_lon_sum),
            recent: state.recent.iter().map(|p| (p.lat, p.lon)).collect(),
        },
        ctx: EventContext {
            received_ms: wire.received_ms,
            trace: parse_traceparent(&wire.traceparent),
        },
    })
}

/// A trace context as a W3C `traceparent` header value, version 00.
pub fn traceparent(trace: &TraceContext) -> String {
    let flags = u8::from(trace.sampled);
    format!("00-{:032x}-{:016x}-{flags:02x}", trace.trace_id, trace.span_id)
}

/// Reads a W3C `traceparent`; `None` when it is empty or malformed, or
/// names the all-zero trace or span that W3C declares invalid.
pub fn parse_traceparent(text: &str) -> Option<TraceContext> {
    let mut parts = text.split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; later versions may append more.
    let known_length = version != "00" || parts.next().is_none();
    let shaped = version.len() == 2 && trace_id.len() == 32 && span_id.len() == 16;
    if !known_length || !shaped || flags.len() != 2 || version == "ff" {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ![version, trace_id, span_id, flags].into_iter().all(hex) {
        return None;
    }

    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let span_id = u64::from_str_radix(span_id, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some(TraceContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The wire form of an invoice.
pub fn invoice_to_proto(invoice: Invoice) -> proto::Invoice {
    proto::Invoice {
        obu_id: invoice.obu_id,
        period: invoice.period,
        distance_m: invoice.distance_m,
        distance_km: invoice.distance_km,
        amount: invoice.amount,
        currency: invoice.currency,
        segments: invoice.segments,
        first_fix: invoice.first_fix,
        last_fix: invoice.last_fix,
        lines: invoice
            .lines
            .into_iter()
            .map(|l| proto::PriceLine {
                price_per_km: l.price_per_km,
                distance_km: l.distance_km,
                amount: l.amount,
            })
            .collect(),
    }
}

/// An invoice from its wire form.
pub fn invoice_from_proto(wire: proto::Invoice) -> Invoice {
    Invoice {
        obu_id: wire.obu_id,
        period: wire.period,
        distance_m: wire.distance_m,
        distance_km: wire.distance_km,
        amount: wire.amount,
        currency: wire.currency,
        segments: wire.segments,
        first_fix: wire.first_fix,
        last_fix: wire.last_fix,
        lines: wire
            .lines
            .into_iter()
            .map(|l| PriceLine {
                price_per_km: l.price_per_km,
                distance_km: l.distance_km,
                amount: l.amount,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(trace: Option<TraceContext>) -> Segment {
        Segment {
            obu_id: ObuId::from("obu-7"),
            from_ms: 1_714_000_000_000,
            to_ms: 1_714_000_001_000,
            metres: 12.5,
            to_lat: 50.3,
            to_lon: 11.9,
            chord: Some(Chord { metres: 12.4, bearing_deg: 271.0, turn_in_deg: Some(-3.5) }),
            checkpoint: true,
            state: TrackState {
                anchor: (1_714_000_001_000, 50.3, 11.9),
                cluster: (2.0, 100.6, 23.8),
                recent: [(50.29, 11.91), (50.3, 11.9)].into_iter().collect(),
            },
            ctx: EventContext { received_ms: 1_714_000_002_000, trace },
        }
    }

    #[test]
    fn segment_survives_the_round_trip_with_its_trace() {
        let trace = TraceContext { trace_id: 0xabc << 64 | 7, span_id: 0x1f, sampled: true };
        let original = segment(Some(trace));
        let back = segment_from_proto(segment_to_proto(&original)).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn traceparent_is_written_as_w3c_version_00() {
        let trace = TraceContext { trace_id: 1, span_id: 2, sampled: false };
        assert_eq!(traceparent(&trace), "00-00000000000000000000000000000001-0000000000000002-00");
    }

    #[test]
    fn malformed_traceparent_is_dropped() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse_traceparent(good).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_without_state_or_with_bad_values_is_refused() {
        let mut wire = segment_to_proto(&segment(None));
        wire.state = None;
        assert_eq!(segment_from_proto(wire), Err(SegmentError::MissingState("obu-7".into())));

        let mut wire = segment_to_proto(&segment(None));
        wire.chord = None;
        assert_eq!(
            segment_from_proto(wire).map(|s| s.chord),
            Ok(None),
            "a checkpoint may lack one"
        );

        let mut wire = segment_to_proto(&segment(None));
        wire.to_lat = f64::NAN;
        let refused = segment_from_proto(wire);
        assert_eq!(
            refused,
            Err(SegmentError::NotFinite { obu_id: "obu-7".into(), field: "to_lat" })
        );

        let mut wire = segment_to_proto(&segment(None));
        wire.obu_id = String::new();
        assert_eq!(segment_from_proto(wire), Err(SegmentError::ObuId));

        let mut wire = segment_to_proto(&segment(None));
        wire.metres = -1.0;
        assert_eq!(segment_from_proto(wire), Err(SegmentError::NegativeMetres("obu-7".into())));
    }
}
