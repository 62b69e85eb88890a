//! Messages on the topic that are not fixes ("poison") are counted by the
//! consumer as rejected(`poison_message`), copied unchanged to the dead-letter
//! topic, and do not hold up the fixes behind them, which are billed.

mod kafka_common;
mod support;

use std::time::{Duration, Instant};

use geographiclib_rs::{Geodesic, InverseGeodesic};
use kafka_common::{Gatewayed, Raw, Topic};

/// 2026-01-05T08:00:00Z.
const T0_MS: i64 = 1_767_600_000_000;
/// Metres each OBU moves north between fixes, one second apart.
const STEP_M: f64 = 25.0;
const DEG_PER_M: f64 = 1.0 / 111_200.0;
const FIXES_PER_OBU: usize = 12;
const OBUS: [&str; 3] = ["poison-a", "poison-b", "poison-c"];

fn rfc3339(ms: i64) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).expect("time in range");
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn start(obu: usize) -> (f64, f64) {
    (50.30 + obu as f64 * 0.01, 11.90)
}

fn fix(obu: usize, k: usize) -> Raw {
    let (lat0, lon) = start(obu);
    let ts = T0_MS + k as i64 * 1000;
    let lat = lat0 + k as f64 * STEP_M * DEG_PER_M;
    let value = serde_json::json!({"obu_id": OBUS[obu], "ts": rfc3339(ts), "lat": lat, "lon": lon});
    Raw { key: OBUS[obu].to_owned(), value: value.to_string().into_bytes(), received_ms: Some(ts) }
}

/// Payloads that are not fixes, each sent under an OBU's key among its fixes.
fn garbage() -> Vec<Vec<u8>> {
    vec![
        b"this is not json".to_vec(),
        br#"{"obu_id": "poison-a", "ts": "2026-01-05T08:00:03Z", "lat": "north"}"#.to_vec(),
        Vec::new(),
        vec![0xff, 0xfe, 0x00, 0x01],
        br#"[1, 2, 3]"#.to_vec(),
        br#"{"obu_id": "poison-b", "ts": "yesterday", "lat": 50.3, "lon": 11.9}"#.to_vec(),
    ]
}

/// The fixes of every OBU with a poison message after every other fix
/// (never last, so each poison message has fixes behind it).
fn messages() -> Vec<Raw> {
    let mut poison = garbage().into_iter();
    let mut out = Vec::new();
    for k in 0..FIXES_PER_OBU {
        for (obu, id) in OBUS.iter().enumerate() {
            out.push(fix(obu, k));
            if k % 2 == 1 && k + 1 < FIXES_PER_OBU {
                if let Some(value) = poison.next() {
                    out.push(Raw { key: (*id).to_owned(), value, received_ms: Some(T0_MS) });
                }
            }
        }
    }
    assert_eq!(poison.next(), None, "every poison message is placed");
    out
}

fn expected_m(obu: usize) -> f64 {
    let (lat0, lon) = start(obu);
    let at = |k: usize| lat0 + k as f64 * STEP_M * DEG_PER_M;
    let geodesic = Geodesic::wgs84();
    (1..FIXES_PER_OBU).map(|k| -> f64 { geodesic.inverse(at(k - 1), lon, at(k), lon) }).sum()
}

#[test]
fn poison_messages_are_counted_dead_lettered_and_do_not_block_the_fixes_behind_them() {
    let started = Instant::now();
    let mut topic = Topic::fresh("poison", 2);
    topic.dead_letter = Some(format!("{}.dead", topic.topic));
    kafka_common::create_topic(&topic.bootstrap, &topic.topic, topic.partitions);
    kafka_common::produce_raw(&topic.bootstrap, &topic.topic, &messages());
    let poison = garbage();
    let fixes = (OBUS.len() * FIXES_PER_OBU) as i64;
    assert_eq!(topic.messages(), fixes + poison.len() as i64);

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("poison.db");
    let mut consumer = Gatewayed::start(dir.path(), "poison", |port| {
        format!(
            "{}\n{}",
            topic.queue_toml(None),
            kafka_common::billing_toml(&store, true, port, dir.path())
        )
    });
    consumer.wait_distance_received(fixes as f64, Duration::from_secs(60));
    let poison_reason = [("component", "fixes"), ("reason", "poison_message")];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counted = 0.0;
    while Instant::now() < deadline {
        counted = consumer.metric("toll_component_rejected_events_total", &poison_reason);
        if counted >= poison.len() as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted, poison.len() as f64, "every poison message is counted once");
    let sent = consumer.metric("toll_component_sent_events_total", &[("component", "fixes")]);
    assert_eq!(sent, fixes as f64, "only fixes are passed on");
    kafka_common::drain(&mut consumer, &topic, fixes, Duration::from_secs(5));

    let dead = kafka_common::read_all(&topic.bootstrap, topic.dead_letter.as_ref().unwrap());
    let mut dead_values: Vec<Vec<u8>> = dead.iter().map(|(_, value, _)| value.clone()).collect();
    let mut want = poison.clone();
    dead_values.sort();
    want.sort();
    assert_eq!(dead_values, want, "the dead-letter topic holds each poison message unchanged");

    let billed = support::billed_m(&store);
    for (obu, id) in OBUS.iter().enumerate() {
        let metres = billed.get(*id).copied().unwrap_or(0.0);
        let want = expected_m(obu);
        assert!((metres - want).abs() < 0.01, "{id} billed {metres} m, expected {want:.3} m");
    }
    println!(
        "poison: {} poison messages among {fixes} fixes, dead letters {}, test {:.1} s",
        poison.len(),
        dead.len(),
        started.elapsed().as_secs_f64()
    );
}
