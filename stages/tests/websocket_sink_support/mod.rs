//! A `websocket` sink fed through a channel, and the receivers it talks to:
//! the real `websocket` source on a chosen loopback address, or a scripted
//! server that closes after a few frames.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::component::{Context, Input, Output, RunResult, Shutdown, Sink, Source};
use stages::event::{Batch, EventContext, Events, Fix};
use stages::sinks::websocket::WebsocketSinkConfig;
use stages::sources::websocket::{wire, WebsocketConfig};
use stages::telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// An upper bound for any single wait, so a hang fails the test.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The fields a receiver can check: id, time, position (not the receive time).
pub type Key = (String, i64, f64, f64);

pub fn key(fix: &Fix) -> Key {
    (fix.obu_id.to_string(), fix.ts_ms, fix.lat, fix.lon)
}

/// Fix number `n` of `obu_id`: one second and a small step apart per number.
pub fn fix(obu_id: &str, n: u32) -> Fix {
    let ctx = EventContext { received_ms: 0, trace: None };
    let ts_ms = 1_714_564_800_000 + i64::from(n) * 1_000;
    Fix { obu_id: obu_id.into(), ts_ms, lat: 50.0 + f64::from(n) / 1024.0, lon: 11.5, ctx }
}

/// Fixes `from..to` alternating between two OBUs.
pub fn fixes(from: u32, to: u32) -> Vec<Fix> {
    (from..to).map(|n| fix(if n % 2 == 0 { "obu-a" } else { "obu-b" }, n)).collect()
}

/// A batch whose acknowledgement status the test can read.
pub fn acked(fixes: Vec<Fix>) -> (Batch, oneshot::Receiver<AckStatus>) {
    let (ack, status) = Ack::channel();
    (Batch::new(Events::Fixes(fixes), AckSet::one(ack)), status)
}

pub async fn status_of(status: oneshot::Receiver<AckStatus>) -> AckStatus {
    let status = tokio::time::timeout(PATIENCE, status).await.expect("ack within patience");
    status.expect("acknowledgement reported")
}

pub struct SinkHandle {
    pub input: mpsc::Sender<Batch>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
    pub telemetry: Telemetry,
}

/// Runs a sink sending to `url` with `extra` TOML keys; its input holds
/// `capacity` batches.
pub fn start_sink(url: &str, extra: &str, capacity: usize) -> SinkHandle {
    let text = format!("url = \"{url}\"\n{extra}");
    let config: WebsocketSinkConfig = toml::from_str(&text).expect("test config parses");
    let sink = config.sink().expect("valid sink");

    let telemetry = Telemetry::new();
    let metrics = telemetry.component("uplink", "sink", "websocket");
    let (input, rx) = mpsc::channel(capacity);
    let (stop, shutdown) = Shutdown::new();
    let cx = Context { name: "uplink".into(), metrics: metrics.clone(), shutdown };
    let task = tokio::spawn(Box::new(sink).run(Input::new(rx, Some(metrics)), cx));
    SinkHandle { input, stop, task, telemetry }
}

impl SinkHandle {
    pub async fn send(&self, batch: Batch) {
        let sent = tokio::time::timeout(PATIENCE, self.input.send(batch)).await;
        sent.expect("sink takes input within patience").expect("sink running");
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.telemetry.counter_sum(name, &[])
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.telemetry.counter_sum("toll_component_rejected_events_total", &[("reason", reason)])
    }

    /// Waits (bounded) until the backlog gauge reads `fixes`.
    pub async fn wait_for_backlog(&self, fixes: i64) {
        let gauge =
            self.telemetry.gauge("toll_websocket_sink_backlog_fixes", &[("component", "uplink")]);
        let reached = async {
            while gauge.get() != fixes {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(PATIENCE, reached).await.expect("backlog reaches the expected size");
    }

    /// Closes the input and waits for the sink to end.
    pub async fn finish(self) -> RunResult {
        drop(self.input);
        let ended = tokio::time::timeout(PATIENCE, self.task).await.expect("sink ends in time");
        ended.expect("sink task not panicked")
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub batches: mpsc::Receiver<Batch>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
}

/// Runs the real `websocket` source on `listen` (port 0 for any).
pub fn start_receiver(listen: SocketAddr, capacity: usize) -> Receiver {
    let config: WebsocketConfig =
        toml::from_str(&format!("listen = \"{listen}\"")).expect("receiver config parses");
    let source = config.bind().expect("loopback address binds");
    let addr = source.local_addr();

    let telemetry = Telemetry::new();
    let metrics = telemetry.component("obus", "source", "websocket");
    let (tx, batches) = mpsc::channel(capacity);
    let (stop, shutdown) = Shutdown::new();
    let cx = Context { name: "obus".into(), metrics: metrics.clone(), shutdown };
    let task = tokio::spawn(Box::new(source).run(Output::new(vec![tx], Some(metrics)), cx));
    Receiver { addr, batches, stop, task }
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Receives batches until they hold `count` fixes; the batches are kept,
    /// so none of them is acknowledged yet.
    pub async fn collect(&mut self, count: usize) -> (Vec<Fix>, Vec<Batch>) {
        let (mut fixes, mut batches) = (Vec::new(), Vec::new());
        while fixes.len() < count {
            let next = tokio::time::timeout(PATIENCE, self.batches.recv()).await;
            let batch = next.expect("a batch within patience").expect("receiver running");
            let Events::Fixes(got) = &batch.events else { panic!("receiver emits fixes") };
            fixes.extend(got.iter().cloned());
            batches.push(batch);
        }
        (fixes, batches)
    }

    /// Receives batches until they hold `count` fixes, acknowledging each
    /// batch as soon as it is read.
    pub async fn collect_acking(&mut self, count: usize) -> Vec<Fix> {
        let mut fixes = Vec::new();
        while fixes.len() < count {
            fixes.extend(self.collect(1).await.0);
        }
        fixes
    }

    /// Stops the source and waits until it has closed every connection.
    pub async fn shut_down(self) -> mpsc::Receiver<Batch> {
        self.stop.send(true).expect("receiver listens for shutdown");
        let ended = tokio::time::timeout(PATIENCE, self.task).await.expect("receiver stops");
        ended.expect("receiver not panicked").expect("receiver stops cleanly");
        self.batches
    }
}

/// A port on 127.0.0.1 that nothing listens on (free when this returns).
pub async fn vacant_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback binds");
    listener.local_addr().expect("bound address")
}

/// Accepts one connection on `listener`, reads `frames` data frames,
/// acknowledges the first `acked` of them, then closes the connection and the
/// listener. Returns the fixes of each frame read.
pub async fn scripted_receiver(listener: TcpListener, frames: u64, acked: u64) -> Vec<Vec<Fix>> {
    let (tcp, _) = listener.accept().await.expect("sink connects");
    drop(listener);
    let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
    let mut read = Vec::new();
    while (read.len() as u64) < frames {
        let message = ws.next().await.expect("sink keeps sending").expect("readable");
        let Message::Text(text) = message else { continue };
        let mut fixes = Vec::new();
        wire::parse_frame(text.as_bytes(), 0, usize::MAX, &mut fixes).expect("sink frame parses");
        read.push(fixes);
    }
    for frame in 1..=acked {
        let fixes = read[frame as usize - 1].len();
        let reply = wire::ack_reply(frame, fixes, AckStatus::Delivered);
        ws.send(Message::text(reply)).await.expect("ack sent");
    }
    // Reading on until the sink hangs up keeps the close from becoming a reset
    // that could swallow the acks.
    ws.close(None).await.expect("close sent");
    while let Some(Ok(_)) = ws.next().await {}
    read
}
