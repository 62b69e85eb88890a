//! The distance stage driven directly: parked jitter, straight drives,
//! acknowledgements held until every fix of a batch is decided.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::event::TrackState;
use stages::event::{Batch, EventContext, Events, Fix};
use stages::stages::distance::{Decided, Distance, DistanceConfig};
use stages::store::{BilledEnd, Durability, SqliteStore};
use stages::telemetry::Telemetry;

const LAT: f64 = 50.31;
const LON: f64 = 11.91;
/// Metres per degree near 50.3 N (only used to place test fixes).
const M_PER_DEG_LAT: f64 = 111_200.0;

fn m_per_deg_lon() -> f64 {
    111_320.0 * LAT.to_radians().cos()
}

fn fix(obu: &str, ts_ms: i64, lat: f64, lon: f64) -> Fix {
    let ctx = EventContext { received_ms: ts_ms, trace: None };
    Fix { obu_id: obu.into(), ts_ms, lat, lon, ctx }
}

struct Harness {
    stage: Distance,
    telemetry: Telemetry,
    out: Decided,
}

impl Harness {
    fn new(config: &str) -> Self {
        let config: DistanceConfig = toml::from_str(config).unwrap();
        let telemetry = Telemetry::new();
        let metrics = telemetry.component("distance", "stage", "distance");
        Harness { stage: Distance::new(&config, &metrics), telemetry, out: Decided::default() }
    }

    fn send(&mut self, fixes: Vec<Fix>, acks: AckSet) {
        let batch = Batch::new(Events::Fixes(fixes), acks);
        self.stage.ingest(batch, &mut self.out);
    }

    fn finish(&mut self) {
        self.stage.flush(&mut self.out);
    }

    fn billed_m(&self) -> f64 {
        self.out.segments.iter().map(|s| s.metres).fold(0.0, |a, b| a + b)
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.telemetry.counter_sum("toll_component_rejected_events_total", &[("reason", reason)])
    }
}

#[test]
fn a_parked_obu_jittering_for_eight_hours_is_billed_less_than_fifty_metres() {
    for seed in 0..6 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sigma_m = [3.0, 4.0, 5.0][seed as usize % 3];
        let noise = Normal::new(0.0, sigma_m).unwrap();
        let mut harness = Harness::new("");
        let (mut t_ms, end_ms) = (1_700_000_000_000_i64, 1_700_000_000_000 + 8 * 3_600_000);
        let mut batch = Vec::new();
        while t_ms < end_ms {
            // Mostly gaussian noise, and one fix in a hundred a 20-30 m outlier.
            let (north, east) = if rng.random_bool(0.01) {
                let (r, a) =
                    (rng.random_range(20.0..30.0), rng.random_range(0.0..std::f64::consts::TAU));
                (r * a.cos(), r * a.sin())
            } else {
                (noise.sample(&mut rng), noise.sample(&mut rng))
            };
            batch.push(fix(
                "parked",
                t_ms,
                LAT + north / M_PER_DEG_LAT,
                LON + east / m_per_deg_lon(),
            ));
            if batch.len() == 512 {
                harness.send(std::mem::take(&mut batch), AckSet::default());
            }
            t_ms += rng.random_range(1..=10) * 1000;
        }
        harness.send(batch, AckSet::default());
        harness.finish();
        let billed = harness.billed_m();
        println!("parked seed {seed} sigma {sigma_m} m: billed {billed:.1} m");
        assert!(billed < 50.0, "seed {seed}: a parked OBU was billed {billed:.1} m");
    }
}

#[test]
fn a_straight_drive_is_billed_its_length() {
    let mut harness = Harness::new("");
    // 20 m/s due north for ten minutes, one fix a second: 12,000 m.
    let fixes: Vec<Fix> = (0..=600)
        .map(|s| fix("car", 1_000 * s, LAT + 20.0 * s as f64 / M_PER_DEG_LAT, LON))
        .collect();
    harness.send(fixes, AckSet::default());
    harness.finish();
    let billed = harness.billed_m();
    assert!((billed - 12_000.0).abs() < 12_000.0 * 0.005, "billed {billed:.1} m");
}

#[test]
fn a_lone_spike_is_rejected_and_not_billed() {
    let mut harness = Harness::new("");
    let mut fixes: Vec<Fix> = (0..=60)
        .map(|s| fix("car", 1_000 * s, LAT + 15.0 * s as f64 / M_PER_DEG_LAT, LON))
        .collect();
    // One fix 300 m to the east, then straight back on the road.
    fixes[30].lon += 300.0 / m_per_deg_lon();
    harness.send(fixes, AckSet::default());
    harness.finish();
    let billed = harness.billed_m();
    assert!((billed - 900.0).abs() < 5.0, "billed {billed:.1} m instead of 900 m");
    assert_eq!(harness.rejected("spike") + harness.rejected("implausible_speed"), 1);
}

#[test]
fn late_fix_within_the_window_is_put_in_order() {
    let mut in_order = Harness::new("reorder_window_s = 60");
    let mut shuffled = Harness::new("reorder_window_s = 60");
    let fixes: Vec<Fix> = (0..=40)
        .map(|s| fix("car", 1_000 * s, LAT + 15.0 * s as f64 / M_PER_DEG_LAT, LON))
        .collect();
    let mut late = fixes.clone();
    late.swap(10, 20);
    // A late fix is received after the one that overtook it.
    late[20].ctx.received_ms = late[19].ctx.received_ms + 1;
    in_order.send(fixes, AckSet::default());
    shuffled.send(late, AckSet::default());
    in_order.finish();
    shuffled.finish();
    let key = |h: &Harness| -> Vec<(i64, i64, f64)> {
        h.out.segments.iter().map(|s| (s.from_ms, s.to_ms, s.metres)).collect()
    };
    assert_eq!(key(&in_order), key(&shuffled));
    assert_eq!(shuffled.rejected("too_late"), 0);
}

#[test]
fn bad_coordinates_and_duplicates_are_counted_by_reason() {
    let mut harness = Harness::new("");
    let good = fix("car", 10_000, LAT, LON);
    let fixes = vec![
        good.clone(),
        good.clone(),
        fix("car", 10_000, LAT + 0.001, LON),
        fix("car", 11_000, f64::NAN, LON),
        fix("car", 12_000, 91.0, LON),
        fix("car", 13_000, 0.0, 0.0),
    ];
    harness.send(fixes, AckSet::default());
    harness.finish();
    for reason in ["duplicate", "same_time", "non_finite", "out_of_range", "null_island"] {
        assert_eq!(harness.rejected(reason), 1, "{reason}");
    }
}

#[test]
fn a_batch_is_acknowledged_only_once_all_its_fixes_are_decided() {
    let mut harness = Harness::new("reorder_window_s = 30");
    let (ack, mut status) = Ack::channel();
    let fixes: Vec<Fix> =
        (0..5).map(|s| fix("car", 1_000 * s, LAT + 15.0 * s as f64 / M_PER_DEG_LAT, LON)).collect();
    harness.send(fixes, AckSet::one(ack));
    assert!(harness.out.acks.is_empty(), "fixes are still waiting in the reorder window");
    harness.finish();
    assert_eq!(harness.out.acks.len(), 1);
    harness.out.acks = AckSet::default();
    assert_eq!(status.try_recv().unwrap(), AckStatus::Delivered);
}

#[test]
fn an_obu_resumes_from_its_last_billed_fix_so_redelivered_fixes_bill_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("toll.db"), Durability::Normal).unwrap();
    // An earlier run billed the car up to its fix at 20 s.
    let lat_at = |s: i64| LAT + 15.0 * s as f64 / M_PER_DEG_LAT;
    let state = TrackState {
        anchor: (20_000, lat_at(20), LON),
        cluster: (1.0, lat_at(20), LON),
        recent: [(lat_at(20), LON)].into_iter().collect(),
    };
    let end = BilledEnd { ts_ms: 20_000, lat: lat_at(20), lon: LON, chord: None, state };
    store.apply(&[], &[("car", end)]).unwrap();

    let mut harness = Harness::new("");
    harness.stage.resume_from(std::sync::Arc::new(store));
    // Everything is delivered again, from the start.
    let fixes: Vec<Fix> = (0..=40).map(|s| fix("car", 1_000 * s, lat_at(s), LON)).collect();
    harness.send(fixes, AckSet::default());
    harness.finish();

    let first = harness.out.segments.first().expect("billing resumed");
    assert_eq!(first.from_ms, 20_000, "the first segment starts where billing stopped");
    let billed = harness.billed_m();
    assert!((billed - 300.0).abs() < 1.0, "billed {billed:.2} m for the 20 s after the restart");
    assert_eq!(harness.rejected("too_late"), 20);
    assert_eq!(harness.rejected("duplicate"), 1);
}

/// What the store keeps of the last segment (or checkpoint) a run emitted.
fn persisted_end(segments: &[stages::event::Segment]) -> Option<BilledEnd> {
    let last = segments.last()?;
    Some(BilledEnd {
        ts_ms: last.to_ms,
        lat: last.to_lat,
        lon: last.to_lon,
        chord: last.chord,
        state: last.state.clone(),
    })
}

#[test]
fn a_restart_anywhere_bills_exactly_what_an_uninterrupted_run_bills() {
    // A car that stands for a minute with GPS jitter (the parked cluster is
    // at work), then drives a circle of 300 m radius at 15 m/s (the curve
    // correction is at work), one fix a second.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let noise = Normal::new(0.0, 5.0).unwrap();
    let all: Vec<Fix> = (0..=140)
        .map(|s: i64| {
            let angle = 15.0 * (s - 60).max(0) as f64 / 300.0;
            let (mut north, mut east) = (300.0 * angle.sin(), 300.0 * (1.0 - angle.cos()));
            if s < 60 {
                north += noise.sample(&mut rng);
                east += noise.sample(&mut rng);
            }
            fix("car", 1_000 * s, LAT + north / M_PER_DEG_LAT, LON + east / m_per_deg_lon())
        })
        .collect();
    let config = "reorder_window_s = 0";
    let mut uninterrupted = Harness::new(config);
    uninterrupted.send(all.clone(), AckSet::default());
    uninterrupted.finish();
    let expected = uninterrupted.billed_m();

    for killed_after in 2..140 {
        // The first run dies: what it emitted was persisted, its state is lost.
        let mut first = Harness::new(config);
        first.send(all[..killed_after].to_vec(), AckSet::default());
        let Some(end) = persisted_end(&first.out.segments) else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("toll.db"), Durability::Normal).unwrap();
        store.apply(&[], &[("car", end)]).unwrap();

        // The restart gets everything again; what was decided is refused.
        let mut second = Harness::new(config);
        second.stage.resume_from(std::sync::Arc::new(store));
        second.send(all.clone(), AckSet::default());
        second.finish();

        let resumed = first.billed_m() + second.billed_m();
        assert!(
            (resumed - expected).abs() < 1e-6,
            "killed after {killed_after} fixes: {resumed} m, uninterrupted {expected} m"
        );
    }
}
