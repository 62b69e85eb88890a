//! The one sampling decision a fix gets, where it enters the pipeline.

use crate::event::TraceContext;

/// How entries decide which fixes to trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    /// Share of fixes traced, 0 to 1, when their OBU did not decide.
    pub ratio: f64,
    /// OBU ids whose fixes are always traced.
    pub always_trace: Vec<String>,
}

/// The entry decision, fixed for as long as one frame or batch is handled.
#[derive(Debug)]
pub struct Sampler {
    /// Whether any fix can start a trace or be forced into one: the tracer
    /// records, and the ratio or the always-traced list can pick a fix.
    active: bool,
    /// A fix is sampled when a random `u64` is below this.
    threshold: u64,
    /// Every fix is sampled (ratio 1).
    everything: bool,
    always: ahash::HashSet<String>,
}

impl Sampler {
    /// Starts no trace and passes on what fixes bring along.
    pub fn off() -> Self {
        Sampler { active: false, threshold: 0, everything: false, always: Default::default() }
    }

    pub fn new(sampling: &Sampling) -> Self {
        let ratio = if sampling.ratio.is_finite() { sampling.ratio.clamp(0.0, 1.0) } else { 0.0 };
        let threshold = (ratio * u64::MAX as f64) as u64;
        let always: ahash::HashSet<String> = sampling.always_trace.iter().cloned().collect();
        Sampler {
            // At ratio 0 without always-traced OBUs, deciding is passing on.
            active: threshold > 0 || !always.is_empty(),
            threshold,
            everything: ratio >= 1.0,
            always,
        }
    }

    /// The trace context a fix of `obu_id` goes on with. A context the fix
    /// brought (from its OBU) is kept with its own decision, unless the OBU
    /// is always traced; otherwise a new trace starts when the OBU is always
    /// traced or the ratio draws it. A new trace's context names no span yet
    /// (span id 0): the entry's span becomes its root.
    #[inline]
    pub fn decide(&self, obu_id: &str, brought: Option<TraceContext>) -> Option<TraceContext> {
        if !self.active {
            return brought;
        }
        let forced = !self.always.is_empty() && self.always.contains(obu_id);
        match brought {
            Some(context) => Some(TraceContext { sampled: context.sampled || forced, ..context }),
            None if forced || self.draw() => Some(new_root()),
            None => None,
        }
    }

    /// Whether this sampler can start (or force) traces at all; when not,
    /// [`Sampler::decide`] passes contexts on unchanged.
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn draw(&self) -> bool {
        self.everything || (self.threshold > 0 && rand::random::<u64>() < self.threshold)
    }
}

fn new_root() -> TraceContext {
    let trace_id = loop {
        let id = rand::random::<u128>();
        if id != 0 {
            break id;
        }
    };
    TraceContext { trace_id, span_id: 0, sampled: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(ratio: f64, always: &[&str]) -> Sampling {
        Sampling { ratio, always_trace: always.iter().map(|s| (*s).to_owned()).collect() }
    }

    #[test]
    fn always_traced_obus_are_sampled_at_ratio_zero() {
        let sampler = Sampler::new(&sampling(0.0, &["obu-7"]));
        let root = sampler.decide("obu-7", None).expect("always traced");
        assert!(root.sampled && root.trace_id != 0 && root.span_id == 0);
        assert_eq!(sampler.decide("obu-8", None), None);
    }

    #[test]
    fn a_context_from_the_obu_keeps_its_decision() {
        let sampler = Sampler::new(&sampling(1.0, &["obu-7"]));
        let unsampled = TraceContext { trace_id: 9, span_id: 3, sampled: false };
        assert_eq!(sampler.decide("obu-8", Some(unsampled)), Some(unsampled));
        let forced = sampler.decide("obu-7", Some(unsampled)).expect("kept");
        assert!(forced.sampled && forced.trace_id == 9 && forced.span_id == 3);
    }

    #[test]
    fn the_ratio_samples_about_its_share() {
        let sampler = Sampler::new(&sampling(0.25, &[]));
        let sampled = (0..40_000).filter(|_| sampler.decide("obu", None).is_some()).count();
        // 40,000 draws at 0.25: the standard deviation is about 87.
        assert!((9_500..10_500).contains(&sampled), "{sampled}");
        assert!(Sampler::new(&sampling(1.0, &[])).decide("obu", None).is_some());
    }

    #[test]
    fn an_inactive_sampler_starts_nothing_and_passes_contexts_on() {
        let sampler = Sampler::off();
        assert_eq!(sampler.decide("obu", None), None);
        let brought = TraceContext { trace_id: 1, span_id: 2, sampled: true };
        assert_eq!(sampler.decide("obu", Some(brought)), Some(brought));
    }
}
