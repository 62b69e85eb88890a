//! Shared setup of the gRPC tests: an aggregator's `grpc` source and a
//! distance process's `grpc` sink, each running on 127.0.0.1, plus an
//! in-memory invoice book standing in for the aggregate's.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stages::component::{
    BuildContext, Component, ComponentConfig, Context, Input, Output, Resources, RunResult,
    Shutdown,
};
use stages::event::{Batch, Chord, EventContext, Events, ObuId, Segment, TraceContext, TrackState};
use stages::invoice::SharedBook;
use stages::sinks::grpc::GrpcSinkConfig;
use stages::sources::grpc::GrpcSourceConfig;
use stages::telemetry::Telemetry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[path = "../common/book.rs"]
mod book;
// Each test file uses a different part of the shared book.
#[allow(unused_imports)]
pub use book::{invoice, MemoryBook, CURRENT_PERIOD};

/// The `n`th segment of `obu`, every field set and distinct; every third
/// one is traced and every fourth has no turn.
pub fn segment(obu: &str, n: i64) -> Segment {
    let trace = (n % 3 == 0).then_some(TraceContext {
        trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700 + n as u128,
        span_id: 0x00f0_67aa_0ba9_0200 + n as u64,
        sampled: n % 2 == 0,
    });
    Segment {
        obu_id: ObuId::from(obu),
        from_ms: 1_714_550_400_000 + n * 1000,
        to_ms: 1_714_550_401_000 + n * 1000,
        metres: 10.25 + n as f64,
        to_lat: 50.1 + n as f64 * 1e-5,
        to_lon: 11.9 - n as f64 * 1e-5,
        chord: Some(Chord {
            metres: 10.0 + n as f64,
            bearing_deg: (n * 37 % 360) as f64,
            turn_in_deg: (n % 4 != 0).then_some(-2.5 * n as f64),
        }),
        checkpoint: false,
        state: TrackState {
            anchor: (1_714_550_401_000 + n * 1000, 50.1 + n as f64 * 1e-5, 11.9),
            cluster: (1.0 + n as f64, 50.1, 11.9),
            recent: [(50.1, 11.9 - n as f64 * 1e-5)].into_iter().collect(),
        },
        ctx: EventContext { received_ms: 1_714_550_402_000 + n * 1000, trace },
    }
}

pub fn segments(obu: &str, range: std::ops::Range<i64>) -> Vec<Segment> {
    range.map(|n| segment(obu, n)).collect()
}

/// A running component and how to stop it.
pub struct Running {
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
}

/// An aggregator's `grpc` source and the batches it emits.
pub struct Server {
    pub addr: SocketAddr,
    pub batches: mpsc::Receiver<Batch>,
    pub telemetry: Telemetry,
    pub running: Running,
}

/// Starts a `grpc` source on `listen`; with a book, it serves its invoices
/// as those of an aggregate named `aggregate`.
pub fn start_server(listen: SocketAddr, book: Option<MemoryBook>) -> Server {
    let mut config = GrpcSourceConfig::parse(&format!("listen = \"{listen}\""));
    let mut resources = Resources::default();
    if let Some(book) = book {
        resources.publish("aggregate", Arc::new(SharedBook(Arc::new(book))));
        config.invoices_from = Some("aggregate".to_owned());
    }
    serve(&config, &mut resources)
}

/// Builds and runs a `grpc` source from `config`, finding books in `resources`.
pub fn serve(config: &GrpcSourceConfig, resources: &mut Resources) -> Server {
    let telemetry = Telemetry::new();
    let mut cx = build_context("aggregator", &telemetry, resources);
    let server = config.bind(&mut cx).expect("server builds");
    let addr = server.local_addr();

    let (tx, batches) = mpsc::channel(4);
    let output = Output::new(vec![tx], None);
    let (stop, cx) = context("aggregator", "source", &telemetry);
    let task = tokio::spawn(stages::component::Source::run(Box::new(server), output, cx));
    Server { addr, batches, telemetry, running: Running { stop, task } }
}

/// A distance process's `grpc` sink and the channel that feeds it.
pub struct Client {
    pub input: mpsc::Sender<Batch>,
    pub telemetry: Telemetry,
    pub running: Running,
}

/// Starts a `grpc` sink towards `addr`, with `extra` TOML keys.
pub fn start_sink(addr: SocketAddr, extra: &str) -> Client {
    let text = format!("url = \"http://{addr}\"\nretry_backoff_min_ms = 10\n{extra}");
    let config = GrpcSinkConfig::parse(&text);
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    let mut cx = build_context("sink", &telemetry, &mut resources);
    let Ok(Component::Sink(sink)) = config.build(&mut cx) else { panic!("sink builds") };

    let (input, rx) = mpsc::channel(4);
    let (stop, cx) = context("sink", "sink", &telemetry);
    let task = tokio::spawn(sink.run(Input::new(rx, None), cx));
    Client { input, telemetry, running: Running { stop, task } }
}

/// Parses a config from TOML as the runner would, refusing what it refuses.
pub trait ParseToml: Sized {
    fn parse(text: &str) -> Self;
}

impl<T: serde::de::DeserializeOwned + stages::registry::Validate> ParseToml for T {
    fn parse(text: &str) -> Self {
        let config: T = toml::from_str(text).expect("config parses");
        config.validate().expect("config is valid");
        config
    }
}

pub fn build_context<'a>(
    name: &'a str,
    telemetry: &'a Telemetry,
    resources: &'a mut Resources,
) -> BuildContext<'a> {
    BuildContext { name, inputs: Vec::new(), telemetry, resources }
}

pub fn context(name: &str, kind: &str, telemetry: &Telemetry) -> (watch::Sender<bool>, Context) {
    let (stop, shutdown) = Shutdown::new();
    let metrics = telemetry.component(name, kind, "grpc");
    (stop, Context { name: Arc::from(name), metrics, shutdown })
}

/// The segments of a batch.
pub fn segments_of(batch: &Batch) -> Vec<Segment> {
    match &batch.events {
        Events::Segments(segments) => segments.clone(),
        other => panic!("expected segments, got {:?}", other.kind()),
    }
}

/// Waits (bounded) until `done` holds; panics if it never does.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("bound address")
}
