//! Durations counted into fixed buckets, for latency histograms.
//!
//! The bucket bounds are the same for every histogram, so exporters and
//! dashboards can rely on them. Each bucket is an atomic counter: a component
//! records once per batch (or request) without taking a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the buckets, in seconds; one more bucket takes the rest.
pub const BOUNDS_S: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The same bounds in nanoseconds, for comparing without floating point.
const BOUNDS_NS: [u64; 19] = {
    let mut ns = [0; 19];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (BOUNDS_S[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

#[derive(Debug, Default)]
struct Cells {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS_S.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// A latency histogram with the buckets of [`BOUNDS_S`].
#[derive(Clone, Debug, Default)]
pub struct Histogram(Arc<Cells>);

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&bound| ns <= bound).unwrap_or(BOUNDS_NS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while others may record, so
    /// the count can be a few observations ahead of the buckets; exporters
    /// use the buckets' total as the count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let sum_s = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot { count: buckets.iter().sum(), sum_s, buckets }
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

/// A histogram's state at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_s: f64,
    /// Per bucket of [`BOUNDS_S`], plus the one above the last bound; not cumulative.
    pub buckets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(500));

        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], 1, "100 µs is at most the first bound");
        assert_eq!(snapshot.buckets[5], 1, "3 ms is above 2.5 ms, at most 5 ms");
        assert_eq!(snapshot.buckets[BOUNDS_S.len()], 1, "500 s is above every bound");
        assert!((snapshot.sum_s - 500.0031).abs() < 1e-9);
    }
}
