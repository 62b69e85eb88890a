//! A `websocket` source on a loopback port, and a client to talk to it.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stages::component::{Context, Output, RunResult, Shutdown, Source};
use stages::event::{Batch, Events, Fix};
use stages::sources::websocket::WebsocketConfig;
use stages::telemetry::Telemetry;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Client = WebSocketStream<TcpStream>;

/// A bound upper limit for any single wait, so a broken server fails the
/// test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Server {
    pub addr: SocketAddr,
    pub batches: mpsc::Receiver<Batch>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
    pub telemetry: Telemetry,
}

/// Starts a source on 127.0.0.1 port 0 with `extra` TOML keys, its output
/// channel holding `capacity` batches.
pub fn start(extra: &str, capacity: usize) -> Server {
    let text = format!("listen = \"127.0.0.1:0\"\n{extra}");
    let config: WebsocketConfig = toml::from_str(&text).expect("test config parses");
    let source = config.bind().expect("loopback port 0 binds");
    let addr = source.local_addr();

    let telemetry = Telemetry::new();
    let metrics = telemetry.component("obus", "source", "websocket");
    let (tx, batches) = mpsc::channel(capacity);
    let output = Output::new(vec![tx], Some(metrics.clone()));
    let (stop, shutdown) = Shutdown::new();
    let cx = Context { name: "obus".into(), metrics, shutdown };
    let task = tokio::spawn(Box::new(source).run(output, cx));
    Server { addr, batches, stop, task, telemetry }
}

impl Server {
    pub async fn next_batch(&mut self) -> Batch {
        let batch = tokio::time::timeout(PATIENCE, self.batches.recv()).await;
        batch.expect("a batch within patience").expect("source still running")
    }

    /// Rejections counted under `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.telemetry.counter_sum("toll_component_rejected_events_total", &[("reason", reason)])
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.telemetry.counter_sum(name, &[])
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    connect_to(addr, "/ws").await.expect("websocket handshake succeeds")
}

pub async fn connect_to(
    addr: SocketAddr,
    path: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await.expect("loopback connect");
    let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp).await?;
    Ok(client)
}

pub async fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("client sends");
}

/// The next message from the server, pings aside.
pub async fn next_message(client: &mut Client) -> Message {
    loop {
        let next = tokio::time::timeout(PATIENCE, client.next()).await.expect("within patience");
        match next.expect("connection open").expect("readable") {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => return message,
        }
    }
}

/// Reads until the server's close frame, finishes the closing handshake and
/// hangs up, as a well-behaved OBU does; returns the close code.
pub async fn expect_close(mut client: Client) -> CloseCode {
    let message = next_message(&mut client).await;
    let Message::Close(Some(close)) = message else { panic!("expected a close, got {message:?}") };
    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, client.next()).await {}
    close.code
}

/// The next text message, parsed as JSON.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    match next_message(client).await {
        Message::Text(text) => serde_json::from_str(&text).expect("server replies in JSON"),
        other => panic!("expected a text reply, got {other:?}"),
    }
}

pub fn fixes(batch: &Batch) -> &[Fix] {
    match &batch.events {
        Events::Fixes(fixes) => fixes,
        other => panic!("expected fixes, got {:?}", other.kind()),
    }
}

/// Milliseconds since the epoch, read independently of the source.
pub fn wall_clock_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_millis() as i64
}
