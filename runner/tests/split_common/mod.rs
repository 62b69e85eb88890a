//! Helpers of the split-service tests: the toll system as five runner
//! processes on loopback (OBU -> WebSocket -> receiver -> Kafka -> distance
//! -> gRPC -> aggregator <- gRPC <- gateway), each with its own pipeline file
//! derived from pipelines/*.toml, and the all-in-one runs they are compared to.

#![allow(dead_code)] // Each test file uses a different part of this module.

pub mod pipelines;
mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kafka_common::{self, Topic};
use crate::support;

pub use pipelines::{Fleet, Wiring};
pub use service::{Ready, Service};

/// Partitions of every split test's topic, as pipelines/receiver.toml declares.
pub const PARTITIONS: i32 = 12;
/// Billed millimetres per OBU and period.
pub type Totals = BTreeMap<(String, String), i64>;

/// The four long-running services of one split run; the OBU service is
/// started separately ([`Stack::start_obu`]) once they are ready.
pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub wiring: Wiring,
    pub aggregator: Service,
    pub distance: Service,
    pub receiver: Service,
    pub gateway: Service,
    pub ws_port: u16,
    pub gateway_port: u16,
}

impl Stack {
    /// Starts aggregator, distance, receiver and gateway in that order, each
    /// until ready, on a fresh topic named after `name`; files go to `dir`.
    pub fn start(dir: &Path, name: &str) -> Stack {
        let topic = Topic::fresh(name, PARTITIONS);
        kafka_common::create_topic(&topic.bootstrap, &topic.topic, topic.partitions);
        let store = dir.join(format!("{name}.db"));
        let wiring = Wiring { topic, store, tokens: kafka_common::tokens_file(dir) };

        let (aggregator, grpc_port) = Service::start_listening(
            dir,
            &format!("{name}-aggregator"),
            |port| pipelines::aggregator(&wiring, port),
            Ready::Listening,
        );
        let distance = Service::start(
            dir,
            &format!("{name}-distance"),
            &pipelines::distance(&wiring, grpc_port),
            Ready::Assigned(PARTITIONS),
        );
        let (receiver, ws_port) = Service::start_listening(
            dir,
            &format!("{name}-receiver"),
            |port| pipelines::receiver(&wiring, port),
            Ready::Listening,
        );
        let (gateway, gateway_port) = Service::start_listening(
            dir,
            &format!("{name}-gateway"),
            |port| pipelines::gateway(&wiring, grpc_port, port),
            Ready::Health,
        );
        let (name, dir) = (name.to_owned(), dir.to_owned());
        Stack { name, dir, wiring, aggregator, distance, receiver, gateway, ws_port, gateway_port }
    }

    /// Starts the OBU service sending `fleet` to the receiver; it ends by itself.
    pub fn start_obu(&self, fleet: Fleet) -> Service {
        let stem = format!("{}-obu", self.name);
        Service::start(&self.dir, &stem, &pipelines::obu(fleet, self.ws_port), Ready::Started)
    }

    pub fn topic(&self) -> &Topic {
        &self.wiring.topic
    }

    pub fn gateway_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    pub fn totals(&self) -> Totals {
        support::totals(&self.wiring.store)
    }

    /// Waits (bounded) until everything sent is billed and returns the
    /// messages on the topic. The condition: the topic holds at least
    /// `fixes` messages, the distance group has committed all of them, and
    /// the store's totals did not change since the previous poll. The grpc
    /// sink releases a fix's Kafka acknowledgement only once the aggregator
    /// confirmed its segments persisted, and the distance stage holds the
    /// acknowledgement of every fix it has not decided yet, so a fully
    /// committed topic means every fix is billed; the stable totals check it.
    pub fn wait_billed(&mut self, fixes: i64, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        let mut previous: Option<Totals> = None;
        loop {
            for service in [&mut self.aggregator, &mut self.distance, &mut self.receiver] {
                service.assert_running();
            }
            let (messages, uncommitted) = (self.topic().messages(), self.topic().uncommitted());
            let totals = self.totals();
            if messages >= fixes && uncommitted == 0 && previous.as_ref() == Some(&totals) {
                return messages;
            }
            previous = Some(totals);
            assert!(
                Instant::now() < deadline,
                "not billed within {within:?}: {messages} of {fixes} messages, \
                 {uncommitted} uncommitted; distance log:\n{}",
                kafka_common::tail(&self.distance.runner.stderr())
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Waits (bounded) for the OBU service to end successfully and returns the
/// fixes its source sent and its uplink delivered (the uplink's received).
pub fn wait_obu_done(obu: &mut Service, source: &str, within: Duration) -> (u64, u64) {
    kafka_common::wait_success(&mut obu.runner, "the OBU service", within);
    let (_, sent, _) = obu.summary(source);
    let (delivered, _, line) = obu.summary("uplink");
    assert!(line.contains(" errors=0 "), "the uplink failed no frame: {line}");
    (sent, delivered)
}

/// Totals of `fleet` sent as fast as possible through five fresh services:
/// the uninterrupted run the interrupted ones are compared to. Also returns
/// the fixes the fleet sent.
pub fn uninterrupted(dir: &Path, name: &str, fleet: Fleet) -> (Totals, u64) {
    let mut stack = Stack::start(dir, name);
    let mut obu = stack.start_obu(fleet);
    let (sent, delivered) = wait_obu_done(&mut obu, "fleet", Duration::from_secs(60));
    assert_eq!(delivered, sent, "the uplink delivered every fix");
    stack.wait_billed(sent as i64, Duration::from_secs(45));
    (stack.totals(), sent)
}

/// An all-in-one run of `fleet` (memory queue, same distance settings) with
/// a gateway, started and waited on until its aggregate finished; returns
/// it (still serving) with its gateway base URL.
pub fn all_in_one(dir: &Path, name: &str, fleet: Fleet) -> (support::Background, String, PathBuf) {
    let store = dir.join(format!("{name}.db"));
    let tokens = kafka_common::tokens_file(dir);
    let (mut runner, ports, _) = support::start_pipeline(
        dir,
        name,
        1,
        |p| pipelines::all_in_one(fleet, &store, &tokens, p[0]),
        |p| p[0],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let within = Duration::from_secs(45);
    support::wait_for_state(&mut runner, &base, "aggregate", "finished", within);
    (runner, base, store)
}

/// Status and JSON body of `GET {base}/invoice/{obu}?period={period}` with the test token.
pub fn invoice(base: &str, obu: &str, period: &str) -> (u16, Value) {
    let url = format!("{base}/invoice/{obu}?period={period}");
    let (status, body) = support::get(&support::http(), &url, Some(kafka_common::TOKEN));
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{url}: body {body}")))
}

/// Every `step`-th track of the Hof file with the UTC month of its first
/// fix, read from the file itself (track ids are numbers, times UTC).
pub fn hof_sample(step: usize) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(pipelines::hof_points()).expect("points.csv is readable");
    let mut first_month = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.splitn(3, ',');
        let (id, time) = (fields.next().expect("id"), fields.next().expect("time"));
        let id: u32 = id.parse().expect("track ids are numbers");
        assert!(time.ends_with("+00:00"), "time {time} is UTC");
        first_month.entry(id).or_insert_with(|| time[..7].to_owned());
    }
    assert_eq!(first_month.len(), 263, "every track of the file is read");
    let sample = first_month.into_iter().step_by(step);
    sample.map(|(id, month)| (format!("hof-{id}"), month)).collect()
}

/// Committed offsets of the distance group, one per partition.
pub fn committed(topic: &Topic) -> Vec<Option<i64>> {
    kafka_common::committed_offsets(&topic.bootstrap, &topic.group, &topic.topic)
}
