//! The events that flow through a pipeline and the batches that carry them.
//!
//! Events travel in batches: one channel send, one acknowledgement set and one
//! metrics update serve every event of a batch. Each event also carries a small
//! [`EventContext`] so that per-event facts (when it was received, whether it is
//! traced) survive every hop.

use compact_str::CompactString;
use serde::Serialize;

use crate::ack::AckSet;

/// The identifier of an on-board unit. Short identifiers are stored inline, so
/// cloning a fix does not allocate.
pub type ObuId = CompactString;

/// Longest OBU id accepted anywhere, in bytes.
pub const MAX_OBU_ID_BYTES: usize = 64;

/// Whether `id` can name an OBU: 1 to [`MAX_OBU_ID_BYTES`] bytes, no control
/// characters. Every source refuses other ids, so that whatever is billed can
/// also be asked for at the gateway.
pub fn valid_obu_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_OBU_ID_BYTES && !id.chars().any(char::is_control)
}

/// What to tell a client whose OBU id is refused.
pub const OBU_ID_RULE: &str = "obu_id must be 1 to 64 bytes without control characters";

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Per-event facts that every hop keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventContext {
    /// When the pipeline received the event (for replays, the replay clock).
    pub received_ms: Millis,
    /// Trace identity, present when the event is sampled for tracing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// A W3C trace context, carried by events that are traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// One GPS position reported by an OBU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fix {
    pub obu_id: ObuId,
    /// Time of the fix as reported by the OBU.
    pub ts_ms: Millis,
    /// WGS-84 latitude in degrees.
    pub lat: f64,
    /// WGS-84 longitude in degrees.
    pub lon: f64,
    pub ctx: EventContext,
}

/// Distance driven by one OBU between two accepted fixes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Segment {
    pub obu_id: ObuId,
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// Geodesic length on the WGS-84 ellipsoid.
    pub metres: f64,
    /// Where the segment ends (the fix at `to_ms`): billing of the OBU
    /// resumes from here after a restart.
    pub to_lat: f64,
    pub to_lon: f64,
    /// The straight line the segment was measured on, which the next
    /// segment's curve correction needs (none for a checkpoint taken before
    /// the OBU's first segment).
    pub chord: Option<Chord>,
    /// A checkpoint bills nothing: it only records how far the distance
    /// filter got (fixes it refused, or an OBU's first fix), so that those
    /// fixes are not handed out again after a restart.
    pub checkpoint: bool,
    /// What the distance filter knew after this segment, for resuming.
    pub state: TrackState,
    pub ctx: EventContext,
}

/// The distance filter's knowledge of one OBU that must survive a restart
/// for the OBU to be judged exactly as without one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TrackState {
    /// The fix billing continues from: time, latitude, longitude.
    pub anchor: (Millis, f64, f64),
    /// Positions seen around the anchor while standing: count and sums of
    /// latitude and longitude.
    pub cluster: (f64, f64, f64),
    /// The last few positions decided, oldest first.
    pub recent: smallvec::SmallVec<[(f64, f64); 4]>,
}

/// A straight line between two accepted fixes, as the distance filter keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Chord {
    pub metres: f64,
    /// Bearing from north, degrees.
    pub bearing_deg: f64,
    /// Turn from the chord before it, when that one is known.
    pub turn_in_deg: Option<f64>,
}

/// Distance and amount that one commit added to an OBU's total for a billing
/// period (the running total is in the store).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Total {
    pub obu_id: ObuId,
    /// Billing period, `YYYY-MM`.
    pub period: CompactString,
    pub distance_m: f64,
    pub amount: f64,
    pub currency: CompactString,
}

/// The kinds of event a component can take or produce; the graph checks that
/// every edge joins matching kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Fix,
    Segment,
    Total,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fix => "fix",
            EventKind::Segment => "segment",
            EventKind::Total => "total",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events of one batch, all of one kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "events", rename_all = "lowercase")]
pub enum Events {
    Fixes(Vec<Fix>),
    Segments(Vec<Segment>),
    Totals(Vec<Total>),
}

impl Events {
    pub fn kind(&self) -> EventKind {
        match self {
            Events::Fixes(_) => EventKind::Fix,
            Events::Segments(_) => EventKind::Segment,
            Events::Totals(_) => EventKind::Total,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Events::Fixes(v) => v.len(),
            Events::Segments(v) => v.len(),
            Events::Totals(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the events of `other` to the end of `self`. Returns `other` back
    /// when the kinds differ.
    pub fn append(&mut self, other: Events) -> Result<(), Events> {
        match (self, other) {
            (Events::Fixes(a), Events::Fixes(mut b)) => a.append(&mut b),
            (Events::Segments(a), Events::Segments(mut b)) => a.append(&mut b),
            (Events::Totals(a), Events::Totals(mut b)) => a.append(&mut b),
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

/// A batch of events with the acknowledgements of the sources they came from.
///
/// Dropping a batch releases its share of the acknowledgements: a component
/// that is done with a batch simply drops it, and one that fails marks it
/// first with [`AckSet::fail`].
#[derive(Debug)]
pub struct Batch {
    pub events: Events,
    pub acks: AckSet,
}

impl Batch {
    pub fn new(events: Events, acks: AckSet) -> Self {
        Batch { events, acks }
    }

    /// A batch whose source does not wait for an acknowledgement.
    pub fn unacked(events: Events) -> Self {
        Batch { events, acks: AckSet::default() }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}
