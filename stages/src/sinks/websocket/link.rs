//! One connection to the receiver: the address, connecting with a timeout,
//! a writer task for frames, the replies read back, and the reconnect delay.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Frames queued for the writer; the backlog holds everything else.
const WRITER_QUEUE_FRAMES: usize = 2;

/// How long a finished sink waits for its close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the receiver listens, checked when the config is parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// Reads a `ws://host[:port]/path` URL; the port defaults to 80.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err("wss:// (TLS) is not supported yet; use ws://".into()),
            _ => return Err(format!("{url:?} must start with ws://")),
        }
        let host = uri.host().filter(|h| !h.is_empty());
        let host = host.ok_or_else(|| format!("{url:?} names no host"))?;
        // An IPv6 host comes with its brackets, which the socket address does not take.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Endpoint { url: url.to_owned(), host, port: uri.port_u16().unwrap_or(80) })
    }
}

/// A connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("tcp connect failed")]
    Tcp(#[source] std::io::Error),
    #[error("websocket handshake failed")]
    Handshake(#[source] WsError),
}

type Ws = WebSocketStream<TcpStream>;

/// An open connection: frames go to a writer task, replies are read here.
pub struct Connection {
    frames: mpsc::Sender<Message>,
    replies: SplitStream<Ws>,
    writer: JoinHandle<()>,
    /// Data frames sent so far; the receiver numbers them from 1 the same way.
    sent: u64,
}

/// Opens a connection to `endpoint`, giving up after `limit`.
pub async fn connect(endpoint: Endpoint, limit: Duration) -> Result<Connection, ConnectError> {
    let attempt = async {
        let addr = (endpoint.host.as_str(), endpoint.port);
        let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
        // Frames should leave at once, not wait to fill a packet.
        let _ = tcp.set_nodelay(true);
        let url = endpoint.url.as_str();
        let (ws, _) =
            tokio_tungstenite::client_async(url, tcp).await.map_err(ConnectError::Handshake)?;
        Ok(ws)
    };
    let ws =
        tokio::time::timeout(limit, attempt).await.map_err(|_| ConnectError::Timeout(limit))??;

    let (sink, replies) = ws.split();
    let (frames, queue) = mpsc::channel(WRITER_QUEUE_FRAMES);
    let writer = tokio::spawn(write_frames(sink, queue));
    Ok(Connection { frames, replies, writer, sent: 0 })
}

/// Writes queued frames until the queue closes or the socket fails, then closes.
async fn write_frames(mut sink: SplitSink<Ws, Message>, mut queue: mpsc::Receiver<Message>) {
    while let Some(message) = queue.recv().await {
        if let Err(error) = sink.send(message).await {
            tracing::debug!(%error, "websocket sink write failed");
            return;
        }
    }
    let _ = sink.close().await;
}

/// What the receiver said, or how the connection ended.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Reply(Reply),
    /// The receiver closed the connection, with its close code if it gave one.
    Closed(Option<CloseCode>),
    Broken(String),
}

impl Connection {
    /// The next reply or the end of the connection; pings are answered underneath.
    ///
    /// Missing: a reply timeout or keepalive ping. A receiver that vanishes
    /// without closing (a cut network) is only noticed when TCP gives up on
    /// our writes; until then the fixes in flight wait and, once the backlog
    /// is full, so does the pipeline in front of the sink.
    pub async fn incoming(&mut self) -> Incoming {
        loop {
            match self.replies.next().await {
                Some(Ok(Message::Text(text))) => return Incoming::Reply(Reply::parse(&text)),
                Some(Ok(Message::Close(close))) => {
                    return Incoming::Closed(close.map(|frame| frame.code))
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Incoming::Broken(error.to_string()),
                None => return Incoming::Closed(None),
            }
        }
    }

    /// Room for one more frame in the writer's queue; `None` once the writer is gone.
    /// The future owns its handle, so replies can be read while it waits.
    pub fn writable(&self) -> impl Future<Output = Option<OwnedPermit<Message>>> + 'static {
        let frames = self.frames.clone();
        async move { frames.reserve_owned().await.ok() }
    }

    /// The number the receiver will give the next frame sent.
    pub fn number_next_frame(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Lets the writer send what is queued and a close frame, for a bounded time.
    pub async fn close(self) {
        let Connection { frames, writer, .. } = self;
        drop(frames);
        let abort = writer.abort_handle();
        if tokio::time::timeout(CLOSE_TIMEOUT, writer).await.is_err() {
            abort.abort();
        }
    }

    /// Drops a broken connection without waiting for anything.
    pub fn abandon(self) {
        self.writer.abort();
    }
}

/// The connection, in whichever state it is.
pub enum Link {
    Down { retry_at: Instant },
    Connecting(BoxFuture<'static, Result<Connection, ConnectError>>),
    Up(Connection),
}

/// What the connection's state brought.
pub enum LinkEvent {
    /// The reconnect delay is over.
    Retry,
    Connected(Result<Connection, ConnectError>),
    Incoming(Incoming),
    /// Room for a frame in the writer's queue; `None` once the writer is gone.
    Writable(Option<OwnedPermit<Message>>),
}

impl Link {
    /// Waits for whatever the connection's state can bring; cancel-safe.
    pub async fn next_event(&mut self, sending: bool) -> LinkEvent {
        match self {
            Link::Down { retry_at } => {
                sleep_until(*retry_at).await;
                LinkEvent::Retry
            }
            Link::Connecting(attempt) => LinkEvent::Connected(attempt.await),
            Link::Up(connection) if sending => {
                let writable = connection.writable();
                tokio::select! {
                    incoming = connection.incoming() => LinkEvent::Incoming(incoming),
                    permit = writable => LinkEvent::Writable(permit),
                }
            }
            Link::Up(connection) => LinkEvent::Incoming(connection.incoming().await),
        }
    }
}

/// One reply of the `websocket` source.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Ack { frame: u64, fixes: usize },
    Nack { frame: u64 },
    Error { frame: Option<u64>, error: String, detail: String },
    Unknown(String),
}

/// The reply fields the source writes; which are present tells the kind.
#[derive(Deserialize)]
struct RawReply {
    ack: Option<u64>,
    nack: Option<u64>,
    fixes: Option<usize>,
    error: Option<String>,
    frame: Option<u64>,
    detail: Option<String>,
}

impl Reply {
    pub fn parse(text: &str) -> Reply {
        let Ok(raw) = serde_json::from_str::<RawReply>(text) else {
            return Reply::Unknown(text.to_owned());
        };
        match raw {
            RawReply { ack: Some(frame), nack: None, error: None, fixes, .. } => {
                Reply::Ack { frame, fixes: fixes.unwrap_or(0) }
            }
            RawReply { nack: Some(frame), ack: None, error: None, .. } => Reply::Nack { frame },
            RawReply { error: Some(error), frame, detail, .. } => {
                Reply::Error { frame, error, detail: detail.unwrap_or_default() }
            }
            _ => Reply::Unknown(text.to_owned()),
        }
    }
}

/// Exponential reconnect delay with jitter: each failure doubles the base up
/// to the maximum, and the delay is drawn between half the base and the base,
/// so that many OBUs cut off together do not come back in lockstep.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, base: min }
    }

    pub fn next_delay(&mut self) -> Duration {
        let half = self.base / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis() as u64);
        let delay = half + Duration::from_millis(jitter_ms);
        self.base = (self.base * 2).min(self.max);
        delay
    }

    /// Starts over from the minimum, once a connection proved healthy.
    pub fn reset(&mut self) {
        self.base = self.min;
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
