//! Helpers of the Kafka end-to-end tests: the broker under test, unique
//! names, pipeline pieces, the group's offsets read from the broker, raw
//! messages, and waiting on a consumer runner's `/metrics`.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support;

mod broker;
mod runners;

pub use broker::*;
pub use runners::*;

/// What a test says when no broker was started for it.
pub const NO_BROKER: &str = "start a broker first: eval \"$(bash .ci/kafka.sh start)\"";
/// The gateway token every Kafka test writes to its tokens file.
pub const TOKEN: &str = "kafka-e2e-token";

/// The broker under test, from `KAFKA_BOOTSTRAP`; fails the test without one.
pub fn bootstrap() -> String {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!("{NO_BROKER}"),
    }
}

/// `prefix` with a suffix no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{:x}-{n}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// A small seeded generator (splitmix64): runs are repeatable from the seed printed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `env` when set, otherwise from the clock; prints the seed.
    pub fn from_env_or_clock(env: &str) -> Rng {
        let seed = std::env::var(env).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
        });
        println!("{env}={seed} (set it to repeat this run)");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `low..high`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low).mul_f64(unit)
    }
}

/// One topic and consumer group as the tests declare them.
#[derive(Clone, Debug)]
pub struct Topic {
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
    pub dead_letter: Option<String>,
    /// Extra librdkafka consumer settings, `(key, value)`.
    pub consumer_options: Vec<(String, String)>,
}

impl Topic {
    /// A fresh topic and group on the broker under test.
    pub fn fresh(name: &str, partitions: i32) -> Topic {
        Topic {
            bootstrap: bootstrap(),
            topic: unique(&format!("e2e.{name}")),
            group: unique(&format!("e2e-{name}")),
            partitions,
            dead_letter: None,
            consumer_options: Vec::new(),
        }
    }

    /// The same topic read by another, fresh group.
    pub fn with_fresh_group(&self, name: &str) -> Topic {
        Topic { group: unique(&format!("e2e-{name}")), ..self.clone() }
    }

    /// `[queues.fixes]` declaring this topic; `inputs` makes it produce.
    pub fn queue_toml(&self, inputs: Option<&str>) -> String {
        let mut text = format!(
            "[queues.fixes]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{}\"\n\
             group = \"{}\"\npartitions = {}\n",
            self.bootstrap, self.topic, self.group, self.partitions
        );
        if let Some(input) = inputs {
            text.push_str(&format!("inputs = [\"{input}\"]\n"));
        }
        if let Some(dead) = &self.dead_letter {
            text.push_str(&format!("dead_letter_topic = \"{dead}\"\n"));
        }
        if !self.consumer_options.is_empty() {
            let pairs: Vec<String> =
                self.consumer_options.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"")).collect();
            text.push_str(&format!("consumer_options = {{ {} }}\n", pairs.join(", ")));
        }
        text
    }

    /// Messages on the topic (the sum of its partitions' high watermarks).
    pub fn messages(&self) -> i64 {
        high_watermarks(&self.bootstrap, &self.topic).iter().sum()
    }

    /// Messages the group has not committed yet.
    pub fn uncommitted(&self) -> i64 {
        let high = high_watermarks(&self.bootstrap, &self.topic);
        let committed = committed_offsets(&self.bootstrap, &self.group, &self.topic);
        high.iter().zip(&committed).map(|(h, c)| h - c.unwrap_or(0)).sum()
    }
}

/// distance -> aggregate -> gateway, reading `fixes`: the consuming half.
pub fn billing_toml(store: &Path, distance_resumes: bool, gateway_port: u16, dir: &Path) -> String {
    let store = format!("sqlite://{}", store.display());
    let resume = if distance_resumes { format!("store = \"{store}\"\n") } else { String::new() };
    format!(
        r#"
[stages.distance]
type = "distance"
inputs = ["fixes"]
{resume}
[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = 0.19
currency = "EUR"
store = "{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{gateway_port}"
tokens_file = "{tokens}"
"#,
        tokens = tokens_file(dir).display()
    )
}

/// The gateway's tokens file in `dir`, written on first use.
pub fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    if !path.exists() {
        std::fs::write(&path, format!("{TOKEN}\n")).expect("tokens file is written");
    }
    path
}

/// A synthetic fleet with a fixed seed and start: the same fixes every run.
pub fn fleet_toml(trucks: usize, duration_s: u64, speedup: f64) -> String {
    format!(
        r#"[sources.fleet]
type = "obu_sim"
trucks = {trucks}
seed = 20260105
start = "2026-01-05T08:00:00Z"
duration_s = {duration_s}
speedup = {speedup}
"#
    )
}

/// Per-OBU differences between two totals tables, in millimetres (b - a).
pub fn differences(
    a: &std::collections::BTreeMap<(String, String), i64>,
    b: &std::collections::BTreeMap<(String, String), i64>,
) -> Vec<((String, String), i64, i64)> {
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).copied().unwrap_or(0), b.get(k).copied().unwrap_or(0)))
        .collect()
}

/// Prints the differences of [`differences`] with their size, relative to `a`.
pub fn print_differences(label: &str, diffs: &[((String, String), i64, i64)]) {
    for ((obu, period), a, b) in diffs {
        let relative = if *a == 0 { f64::INFINITY } else { (b - a) as f64 / *a as f64 };
        println!("{label}: {obu} {period}: {a} mm -> {b} mm ({:+} mm, {:+.6})", b - a, relative);
    }
}

/// Writes `dir/<name>`: a synthetic fleet producing to `topic`; returns its path.
pub fn fleet_producer(
    dir: &Path,
    name: &str,
    topic: &Topic,
    fleet: (usize, u64, f64),
) -> std::path::PathBuf {
    let (trucks, duration_s, speedup) = fleet;
    let text =
        format!("{}\n{}", fleet_toml(trucks, duration_s, speedup), topic.queue_toml(Some("fleet")));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("pipeline file is written");
    path
}

/// Starts a runner consuming `topic` into distance (resuming from `store`),
/// aggregate (`store`) and a gateway.
pub fn billing_consumer(dir: &Path, stem: &str, topic: &Topic, store: &Path) -> Gatewayed {
    Gatewayed::start(dir, stem, |port| {
        format!("{}\n{}", topic.queue_toml(None), billing_toml(store, true, port, dir))
    })
}

/// A billing consumer that, when stopped, leaves the fixes it still holds for
/// lookahead to whichever process takes its partitions over.
pub fn handing_over_consumer(dir: &Path, stem: &str, topic: &Topic, store: &Path) -> Gatewayed {
    Gatewayed::start(dir, stem, |port| {
        let distance = "[stages.distance]\ntype = \"distance\"\n";
        let billing = billing_toml(store, true, port, dir)
            .replace(distance, &format!("{distance}decide_held_on_stop = false\n"));
        format!("{}\n{}", topic.queue_toml(None), billing)
    })
}

/// Totals of an uninterrupted consumer of `fleet` (produced as fast as
/// possible into a fresh topic named after `name`).
pub fn reference_totals(
    dir: &Path,
    name: &str,
    partitions: i32,
    fleet: (usize, u64, f64),
) -> std::collections::BTreeMap<(String, String), i64> {
    let topic = Topic::fresh(name, partitions);
    create_topic(&topic.bootstrap, &topic.topic, partitions);
    let (trucks, duration_s, _) = fleet;
    let path =
        fleet_producer(dir, &format!("{name}-producer.toml"), &topic, (trucks, duration_s, 0.0));
    support::run_pipeline(path.to_str().expect("utf-8 path"), &[]);
    let store = dir.join(format!("{name}.db"));
    let mut consumer = billing_consumer(dir, &format!("{name}-consumer"), &topic, &store);
    drain(&mut consumer, &topic, topic.messages(), Duration::from_secs(60));
    support::totals(&store)
}

/// Runs interrupted mid-stream bill exactly what an uninterrupted run bills.
pub fn assert_same_totals(
    expected: &std::collections::BTreeMap<(String, String), i64>,
    got: &std::collections::BTreeMap<(String, String), i64>,
) {
    let diffs = differences(expected, got);
    assert!(expected.keys().eq(got.keys()), "the same OBU-periods are billed: {diffs:?}");
    assert!(diffs.is_empty(), "invoices differ from the uninterrupted run: {diffs:?}");
}
