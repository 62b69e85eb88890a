//! The services' pipeline files as the tests run them: the shipped
//! pipelines/*.toml with loopback ports, a fresh topic and group, a temp
//! store and tokens file, and the distance settings every run shares.

use std::path::{Path, PathBuf};

use toml_edit::{value, DocumentMut, Item};

use crate::kafka_common::Topic;
use crate::support;

/// How long a fix waits for late ones, by receive time, in every run.
///
/// The default (30 s, plus 120 s of idle flush) would hold each OBU's last
/// fixes for 150 s of wall time once the stream stops, because the split
/// distance service's receive clock is the receiver's wall clock. The
/// all-in-one runs use the same values, and on both the Hof replay and the
/// synthetic fleet the idle flush was measured not to change what is billed
/// (the memory-queue replay bills the same with 1+1 s, 30+120 s and 1e8 s).
pub const REORDER_WINDOW_S: i64 = 1;
/// Receive-clock time after which a quiet OBU's last fixes are decided.
pub const IDLE_FLUSH_S: i64 = 1;
/// Fixes dated up to this long before their receipt are taken: the split
/// receiver stamps fixes with today's time, the Hof recording is from 2019
/// and the fleet starts at a fixed date, both older than the 7-day default.
pub const MAX_PAST_S: i64 = 1_000_000_000;
/// Longest wait between reconnects (OBU uplink) and retries (distance ->
/// aggregator), in milliseconds, so that a restarted service is used soon.
pub const RETRY_MAX_MS: i64 = 500;

/// What the OBU service sends.
#[derive(Clone, Copy, Debug)]
pub enum Fleet {
    /// The Hof floating-car data (263 tracks, 14,651 fixes) in time order,
    /// as fast as possible.
    Hof,
    /// The synthetic fleet with a fixed seed and start: the same fixes every run.
    Synthetic { trucks: usize, duration_s: u64, speedup: f64 },
}

impl Fleet {
    /// Trucks of the fleet the interruption tests stream.
    pub const STREAMED_TRUCKS: usize = 30;

    /// The fleet the interruption tests stream: 30 trucks, one fix a second
    /// for 900 simulated seconds (26,506 fixes with its signal gaps); at
    /// `speedup` 45 it streams in about 20 s, at 0 as fast as possible.
    pub fn streamed(speedup: f64) -> Fleet {
        Fleet::Synthetic { trucks: Fleet::STREAMED_TRUCKS, duration_s: 900, speedup }
    }
}

/// Where the services of one split run find each other and keep their state.
#[derive(Clone, Debug)]
pub struct Wiring {
    pub topic: Topic,
    pub store: PathBuf,
    pub tokens: PathBuf,
}

/// The Hof recording.
pub fn hof_points() -> PathBuf {
    support::shared_data().join("hof-fcd-oberfranken/points.csv")
}

fn shipped(name: &str) -> DocumentMut {
    let path = support::repo_root().join("pipelines").join(name);
    let text = std::fs::read_to_string(&path).expect("shipped pipeline is readable");
    text.parse().unwrap_or_else(|e| panic!("{} parses: {e}", path.display()))
}

/// Sets `key` of the table at `table` (which the shipped file must declare).
fn set(doc: &mut DocumentMut, table: &[&str], key: &str, item: Item) {
    let mut at = doc.as_table_mut();
    for name in table {
        at = at
            .get_mut(name)
            .and_then(Item::as_table_mut)
            .unwrap_or_else(|| panic!("the shipped pipeline declares [{}]", table.join(".")));
    }
    at.insert(key, item);
}

fn sqlite(path: &Path) -> Item {
    value(format!("sqlite://{}", path.display()))
}

fn loopback(port: u16) -> Item {
    value(format!("127.0.0.1:{port}"))
}

/// The kafka queue keys of receiver.toml and distance.toml, for `topic`.
fn queue(doc: &mut DocumentMut, topic: &Topic) {
    let table = ["queues", "fixes"];
    set(doc, &table, "brokers", value(topic.bootstrap.as_str()));
    set(doc, &table, "topic", value(topic.topic.as_str()));
    set(doc, &table, "group", value(topic.group.as_str()));
    set(doc, &table, "partitions", value(i64::from(topic.partitions)));
}

/// The distance settings shared by split and all-in-one runs.
fn distance_settings(doc: &mut DocumentMut) {
    let table = ["stages", "distance"];
    set(doc, &table, "reorder_window_s", value(REORDER_WINDOW_S));
    set(doc, &table, "idle_flush_s", value(IDLE_FLUSH_S));
    set(doc, &table, "max_past_s", value(MAX_PAST_S));
}

/// pipelines/aggregator.toml listening on `grpc_port`.
pub fn aggregator(wiring: &Wiring, grpc_port: u16) -> String {
    let mut doc = shipped("aggregator.toml");
    set(&mut doc, &["sources", "segments"], "listen", loopback(grpc_port));
    set(&mut doc, &["stages", "aggregate"], "store", sqlite(&wiring.store));
    doc.to_string()
}

/// pipelines/distance.toml consuming the test's topic into the aggregator on `grpc_port`.
pub fn distance(wiring: &Wiring, grpc_port: u16) -> String {
    let mut doc = shipped("distance.toml");
    queue(&mut doc, &wiring.topic);
    let dead_letters = format!("{}.dead", wiring.topic.topic);
    set(&mut doc, &["queues", "fixes"], "dead_letter_topic", value(dead_letters));
    set(&mut doc, &["stages", "distance"], "store", sqlite(&wiring.store));
    distance_settings(&mut doc);
    let sink = ["sinks", "aggregator"];
    set(&mut doc, &sink, "url", value(format!("http://127.0.0.1:{grpc_port}")));
    set(&mut doc, &sink, "retry_backoff_max_ms", value(RETRY_MAX_MS));
    doc.to_string()
}

/// pipelines/receiver.toml listening on `ws_port` and producing to the test's topic.
pub fn receiver(wiring: &Wiring, ws_port: u16) -> String {
    let mut doc = shipped("receiver.toml");
    set(&mut doc, &["sources", "obus"], "listen", loopback(ws_port));
    queue(&mut doc, &wiring.topic);
    doc.to_string()
}

/// pipelines/gateway.toml on `port`, asking the aggregator on `grpc_port`.
pub fn gateway(wiring: &Wiring, grpc_port: u16, port: u16) -> String {
    let mut doc = shipped("gateway.toml");
    let url = value(format!("http://127.0.0.1:{grpc_port}"));
    set(&mut doc, &["sources", "invoices"], "url", url);
    set(&mut doc, &["sinks", "gateway"], "listen", loopback(port));
    let tokens = value(wiring.tokens.display().to_string());
    set(&mut doc, &["sinks", "gateway"], "tokens_file", tokens);
    doc.to_string()
}

/// The `[sources.fleet]` table sending `fleet`.
fn fleet_table(fleet: Fleet) -> Item {
    let text = match fleet {
        Fleet::Hof => format!(
            "type = \"obu_sim\"\n[replay]\npath = \"{}\"\nformat = \"csv\"\n\
             obu_id_field = \"id\"\nobu_id_prefix = \"hof-\"\ntime_field = \"time\"\n\
             point_field = \"geometry\"\norder = \"time\"\n",
            hof_points().display()
        ),
        Fleet::Synthetic { trucks, duration_s, speedup } => format!(
            "type = \"obu_sim\"\ntrucks = {trucks}\nseed = 20260105\n\
             start = \"2026-11-02T08:00:00Z\"\nduration_s = {duration_s}\nspeedup = {speedup:?}\n"
        ),
    };
    let doc: DocumentMut = text.parse().expect("fleet table parses");
    Item::Table(doc.as_table().clone())
}

/// pipelines/obu.toml sending `fleet` to the receiver on `ws_port`.
pub fn obu(fleet: Fleet, ws_port: u16) -> String {
    let mut doc = shipped("obu.toml");
    set(&mut doc, &["sources"], "fleet", fleet_table(fleet));
    let uplink = ["sinks", "uplink"];
    set(&mut doc, &uplink, "url", value(format!("ws://127.0.0.1:{ws_port}/ws")));
    set(&mut doc, &uplink, "reconnect_max_ms", value(RETRY_MAX_MS));
    doc.to_string()
}

/// The same fleet in one process: memory queue, distance and aggregate into
/// `store`, and a gateway on `port` (the all-in-one run of the comparisons).
pub fn all_in_one(fleet: Fleet, store: &Path, tokens: &Path, port: u16) -> String {
    let mut doc = shipped("replay-hof.toml");
    let sources = doc["sources"].as_table_mut().expect("[sources] is a table");
    sources.remove("hof");
    sources.insert("fleet", fleet_table(fleet));
    set(&mut doc, &["queues", "fixes"], "inputs", value(toml_edit::Array::from_iter(["fleet"])));
    set(&mut doc, &["stages", "aggregate"], "store", sqlite(store));
    distance_settings(&mut doc);
    let gateway = format!(
        "type = \"gateway\"\ninputs = [\"aggregate\"]\nlisten = \"127.0.0.1:{port}\"\n\
         tokens_file = \"{}\"\n",
        tokens.display()
    );
    let gateway: DocumentMut = gateway.parse().expect("gateway table parses");
    let mut sinks = toml_edit::Table::new();
    sinks.set_implicit(true);
    sinks.insert("gateway", Item::Table(gateway.as_table().clone()));
    doc.as_table_mut().insert("sinks", Item::Table(sinks));
    doc.to_string()
}
