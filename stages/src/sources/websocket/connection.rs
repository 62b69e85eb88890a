//! One OBU connection: the handshake, frames in, confirmations out, and a clean close.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::server::Shared;
use super::wire::{self, FrameError};
use crate::ack::{Ack, AckSet, AckStatus};
use crate::component::Shutdown;
use crate::event::{Batch, Events, Fix, Millis, TraceContext};
use crate::otel::{Span, SpanKind};
use crate::telemetry::Gauge;

/// How long a closing connection waits for the client to hang up.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Serves one accepted TCP connection until it ends.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mut stop: Shutdown,
) {
    let (ws, upgrade_trace) = tokio::select! {
        _ = stop.requested() => return,
        handshake = timeout(HANDSHAKE_TIMEOUT, handshake(stream, shared)) => match handshake {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "websocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "websocket handshake timed out");
                return;
            }
        },
    };

    let _open = OpenConnection::new(&shared.metrics.open);
    tracing::debug!(%peer, "websocket connection opened");
    let (replies_tx, replies) = mpsc::unbounded_channel();
    let mut connection =
        Connection { ws, peer, shared, replies_tx, replies, frames: 0, upgrade_trace };
    let end = connection.run(stop).await;
    connection.finish(end).await;
    tracing::debug!(%peer, "websocket connection closed");
}

/// Time a client gets to complete the WebSocket upgrade. Sockets that never
/// upgrade would otherwise hold a file descriptor for the whole idle timeout.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Upgrades the connection; returns it with the trace context of the
/// upgrade request's `traceparent` header, which every fix of the
/// connection that brings none of its own continues.
async fn handshake(
    stream: TcpStream,
    shared: &Shared,
) -> Result<(Ws, Option<TraceContext>), WsError> {
    let path = shared.path.as_str();
    let mut upgrade_trace = None;
    // The size of the refusal is fixed by tungstenite's callback signature.
    #[allow(clippy::result_large_err)]
    let check_path = |request: &Request, response: Response| {
        let header = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
        upgrade_trace = header.and_then(crate::grpc::parse_traceparent);
        if request.uri().path() == path {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some("no websocket endpoint at this path".into()));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        Err(refusal)
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(shared.ws_config))
            .await?;
    Ok((ws, upgrade_trace))
}

type Ws = WebSocketStream<TcpStream>;

/// A confirmation waiting to be written: frame number, fixes, outcome.
type Reply = (u64, usize, AckStatus);

/// How a connection ends.
enum End {
    /// The client is gone or the socket broke; nothing more can be written.
    Gone,
    /// Say goodbye with a close frame.
    Close(CloseCode, &'static str),
}

struct Connection<'s> {
    ws: Ws,
    peer: SocketAddr,
    shared: &'s Shared,
    /// Cloned into every frame's acknowledgement callback.
    replies_tx: mpsc::UnboundedSender<Reply>,
    replies: mpsc::UnboundedReceiver<Reply>,
    /// Data frames received so far; numbers the frames from 1.
    frames: u64,
    /// The context of the upgrade request's `traceparent`, if it had one.
    upgrade_trace: Option<TraceContext>,
}

impl Connection<'_> {
    async fn run(&mut self, mut stop: Shutdown) -> End {
        let idle = tokio::time::sleep(self.shared.idle_timeout);
        tokio::pin!(idle);
        loop {
            // Confirmations go first so that a busy client still hears about
            // its earlier frames.
            let message = tokio::select! {
                biased;
                Some(reply) = self.replies.recv() => {
                    if let Err(end) = self.confirm(reply).await {
                        return end;
                    }
                    continue;
                }
                _ = stop.requested() => return End::Close(CloseCode::Away, "server shutting down"),
                _ = &mut idle => return End::Close(CloseCode::Normal, "idle timeout"),
                message = self.ws.next() => message,
            };
            let handled = match message {
                None => Err(End::Gone),
                Some(Ok(Message::Text(text))) => self.on_frame(text.as_bytes()).await,
                Some(Ok(Message::Binary(bytes))) => self.on_frame(&bytes).await,
                // Pings and the client's close are answered by the protocol layer.
                Some(Ok(_)) => Ok(()),
                Some(Err(error)) => Err(self.on_error(error)),
            };
            if let Err(end) = handled {
                return end;
            }
            // Counted from the end of handling: a frame that waited for a
            // full pipeline must not make its client look idle.
            idle.as_mut().reset(Instant::now() + self.shared.idle_timeout);
        }
    }

    /// Parses a data frame and sends its fixes on, or answers with an error.
    async fn on_frame(&mut self, payload: &[u8]) -> Result<(), End> {
        let started = std::time::Instant::now();
        let handled = self.handle_frame(payload).await;
        self.shared.metrics.processing.observe(started.elapsed());
        handled
    }

    async fn handle_frame(&mut self, payload: &[u8]) -> Result<(), End> {
        self.frames += 1;
        let frame = self.frames;
        self.shared.metrics.frames.add(1);

        let mut fixes = Vec::new();
        let max = self.shared.max_fixes_per_frame;
        if let Err(error) = wire::parse_frame(payload, now_ms(), max, &mut fixes) {
            let counter = match error {
                FrameError::TooManyFixes { .. } => &self.shared.metrics.too_many_fixes,
                FrameError::Malformed(_) => &self.shared.metrics.malformed,
            };
            counter.add(1);
            // Missing: a rate-limited warning. Refusals are logged at debug so
            // that one broken OBU cannot flood the log; operators see them
            // only in the rejection counters.
            tracing::debug!(peer = %self.peer, frame, %error, "websocket frame refused");
            return self.send_text(wire::error_reply(frame, &error)).await;
        }
        if fixes.is_empty() {
            return self.send_text(wire::ack_reply(frame, 0, AckStatus::Delivered)).await;
        }
        self.forward(frame, fixes).await
    }

    /// Sends the fixes of one frame downstream as one acknowledged batch,
    /// waiting while the pipeline is full (the client waits meanwhile).
    async fn forward(&mut self, frame: u64, mut fixes: Vec<Fix>) -> Result<(), End> {
        let count = fixes.len();
        let spans = self.sample(frame, &mut fixes);
        let replies = self.replies_tx.clone();
        let ack = Ack::new(move |status| {
            // The connection may be gone; its client then never hears of it.
            let _ = replies.send((frame, count, status));
        });

        // Holding a clone while sending means a batch the channels refused is
        // reported as failed when dropped, not as delivered.
        let batch = Batch::new(Events::Fixes(fixes), AckSet::one(ack.clone()));
        let sent = self.shared.output.send(batch).await;
        if sent.is_err() {
            ack.fail();
        }
        drop(ack);
        for mut span in spans {
            if sent.is_err() {
                span.fail("pipeline stopped");
            }
            span.end();
        }

        if sent.is_err() {
            self.shared.metrics.errors.add(1);
            self.shared.downstream_gone.notify_one();
            return Err(End::Close(CloseCode::Error, "pipeline stopped"));
        }
        Ok(())
    }

    /// Makes the entry's sampling decision for each fix and opens the
    /// receive span of each one sampled.
    fn sample(&self, frame: u64, fixes: &mut [Fix]) -> Vec<Span> {
        let tracer = &self.shared.metrics.tracer;
        let sampler = tracer.sampler();
        let mut spans = Vec::new();
        for fix in fixes {
            fix.ctx.trace = sampler.decide(&fix.obu_id, fix.ctx.trace.or(self.upgrade_trace));
            if let Some(mut span) =
                tracer.start(&mut fix.ctx, "websocket.receive", SpanKind::Server)
            {
                span.set("obu.id", fix.obu_id.as_str());
                span.set("toll.fix.time_ms", fix.ts_ms);
                span.set("toll.websocket.frame", frame as i64);
                span.set("client.address", self.peer.ip().to_string());
                spans.push(span);
            }
        }
        spans
    }

    fn on_error(&self, error: WsError) -> End {
        let peer = self.peer;
        match error {
            WsError::Capacity(error) => {
                self.shared.metrics.too_large.add(1);
                tracing::debug!(%peer, %error, "websocket frame too large");
                End::Close(CloseCode::Size, "frame too large")
            }
            WsError::Io(error) => {
                tracing::debug!(%peer, %error, "websocket connection broken");
                End::Gone
            }
            error => {
                tracing::debug!(%peer, %error, "websocket protocol error");
                End::Close(CloseCode::Protocol, "protocol error")
            }
        }
    }

    async fn confirm(&mut self, (frame, fixes, status): Reply) -> Result<(), End> {
        self.send_text(wire::ack_reply(frame, fixes, status)).await
    }

    /// Writes a reply; a client that does not read for the idle timeout is dropped.
    async fn send_text(&mut self, text: String) -> Result<(), End> {
        match timeout(self.shared.idle_timeout, self.ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "websocket reply failed");
                Err(End::Gone)
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "websocket reply timed out");
                Err(End::Gone)
            }
        }
    }

    /// Sends the confirmations already due, then a close frame, and waits
    /// (bounded) for the client to hang up, so that unread bytes in our socket
    /// do not turn the close into a reset that could swallow the close frame.
    async fn finish(mut self, end: End) {
        let End::Close(code, reason) = end else { return };
        // Missing: a grace period for confirmations still on their way. A
        // frame sent on but not yet confirmed when the server stops gets no
        // ack; its OBU resends it and the pipeline sees those fixes twice
        // (the distance stage drops them as duplicates). Waiting here is
        // unsafe until the runner guarantees downstream drains while sources stop.
        while let Ok(reply) = self.replies.try_recv() {
            if self.confirm(reply).await.is_err() {
                return;
            }
        }

        let close = CloseFrame { code, reason: reason.into() };
        let linger = async {
            if self.ws.close(Some(close)).await.is_err() {
                return;
            }
            let socket = self.ws.get_mut();
            let _ = socket.shutdown().await;
            let mut discard = [0u8; 4096];
            while matches!(socket.read(&mut discard).await, Ok(n) if n > 0) {}
        };
        let _ = timeout(CLOSE_LINGER, linger).await;
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection<'g>(&'g Gauge);

impl<'g> OpenConnection<'g> {
    fn new(gauge: &'g Gauge) -> Self {
        gauge.add(1);
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
