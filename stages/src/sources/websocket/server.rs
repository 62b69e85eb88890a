//! The listening socket, the accept loop and the orderly stop of every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection;
use super::WebsocketConfig;
use crate::component::{
    BuildError, ComponentError, Context, KeptListener, Output, RunResult, Shutdown, Source,
};
use crate::otel::Tracer;
use crate::telemetry::{ComponentMetrics, Counter, Gauge, Histogram};

/// Connections the kernel queues before they are accepted; thousands of OBUs
/// reconnect at once after a restart.
const ACCEPT_BACKLOG: i32 = 4096;

/// Pause after a failed accept (out of file descriptors, for example), so the
/// loop does not spin while the cause lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Socket read buffer of one connection; frames larger than this still fit, the
/// buffer only sets how much is read per system call.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A bound, not yet serving `websocket` source.
#[derive(Debug)]
pub struct WebsocketSource {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    config: WebsocketConfig,
}

impl WebsocketConfig {
    /// Binds the listening socket, so that a taken or invalid address fails at
    /// startup; serving begins in [`Source::run`].
    pub fn bind(&self) -> Result<WebsocketSource, BuildError> {
        self.bind_or_keep(None)
    }

    /// Binds, or serves on the listener a predecessor left if it was bound
    /// for the same address.
    pub fn bind_or_keep(&self, kept: Option<KeptListener>) -> Result<WebsocketSource, BuildError> {
        let fail = |e| BuildError::with(format!("cannot listen on {}", self.listen), e);
        let listener = match kept.filter(|k| k.asked == self.listen) {
            Some(kept) => kept.listener,
            None => listen(self.listen).map_err(fail)?,
        };
        let local_addr = listener.local_addr().map_err(fail)?;
        Ok(WebsocketSource { listener, local_addr, config: self.clone() })
    }
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted server bind while old connections linger in TIME_WAIT;
    // a port another process listens on is still refused.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl WebsocketSource {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Source for WebsocketSource {
    fn run(self: Box<Self>, output: Output, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.serve(output, cx))
    }
}

/// What every connection of one server shares.
pub(super) struct Shared {
    pub output: Output,
    pub path: String,
    pub ws_config: WebSocketConfig,
    pub idle_timeout: Duration,
    pub max_fixes_per_frame: usize,
    pub metrics: Metrics,
    /// Raised by a connection that found every consumer of the output gone.
    pub downstream_gone: Notify,
}

/// The counters connections report to, registered once per server.
pub(super) struct Metrics {
    pub open: Gauge,
    pub frames: Counter,
    pub malformed: Counter,
    pub too_many_fixes: Counter,
    pub too_large: Counter,
    pub refused: Counter,
    pub errors: Counter,
    pub processing: Histogram,
    pub tracer: Tracer,
}

impl Metrics {
    fn new(metrics: &ComponentMetrics) -> Self {
        Metrics {
            open: metrics.gauge("toll_websocket_connections"),
            frames: metrics.counter("toll_websocket_frames_total"),
            malformed: metrics.rejected("malformed_frame"),
            too_many_fixes: metrics.rejected("too_many_fixes"),
            too_large: metrics.rejected("frame_too_large"),
            refused: metrics.counter("toll_websocket_refused_connections_total"),
            errors: metrics.errors.clone(),
            processing: metrics.processing.clone(),
            tracer: metrics.telemetry().tracer().clone(),
        }
    }
}

impl WebsocketSource {
    async fn serve(self, output: Output, mut cx: Context) -> RunResult {
        let WebsocketSource { listener, local_addr, config } = self;
        let spare = KeptListener::keep(config.listen, &listener);
        let listener = TcpListener::from_std(listener).map_err(|e| {
            ComponentError::with(format!("cannot serve websocket on {local_addr}"), e)
        })?;
        let shared = Arc::new(Shared {
            output,
            path: config.path.clone(),
            ws_config: WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .max_frame_size(Some(config.max_frame_bytes))
                .max_message_size(Some(config.max_frame_bytes)),
            idle_timeout: Duration::from_secs(config.idle_timeout_s),
            max_fixes_per_frame: config.max_fixes_per_frame,
            metrics: Metrics::new(&cx.metrics),
            downstream_gone: Notify::new(),
        });
        // Validation keeps max_connections within u32.
        let max = u32::try_from(connection_limit(config.max_connections)).unwrap_or(u32::MAX);
        let permits = Arc::new(Semaphore::new(max as usize));
        let (stop_tx, stop) = Shutdown::new();
        tracing::info!(address = %local_addr, path = %config.path, "websocket source listening");

        let result = loop {
            tokio::select! {
                _ = cx.shutdown.requested() => break Ok(()),
                _ = shared.downstream_gone.notified() => {
                    let message = "every consumer of the websocket source stopped";
                    break Err(ComponentError::new(message));
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => admit(stream, peer, &shared, &permits, &stop),
                    Err(error) => {
                        tracing::warn!(%error, "websocket accept failed");
                        shared.metrics.errors.add(1);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        };

        // Stop accepting, tell every connection to finish its frame and close,
        // and wait until each has given its permit back.
        drop(listener);
        let _ = stop_tx.send(true);
        let _ = permits.acquire_many(max).await;
        tracing::info!(address = %local_addr, "websocket source stopped");
        if let Some(spare) = spare {
            cx.shutdown.leave(spare);
        }
        result
    }
}

/// Starts a connection's task, or refuses the connection when the server is full.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    stop: &Shutdown,
) {
    // Missing: an HTTP 503 answer. A refused OBU sees its TCP connection
    // closed before the handshake and cannot tell "full" from "broken".
    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
        tracing::debug!(%peer, "websocket connection refused at the connection limit");
        shared.metrics.refused.add(1);
        return;
    };
    // Replies are small and must not wait for more data to fill a packet.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "websocket nodelay not set");
    }
    let shared = Arc::clone(shared);
    let stop = stop.clone();
    tokio::spawn(async move {
        connection::serve(stream, peer, &shared, stop).await;
        // The output goes with the last connection, before the server may return.
        drop(shared);
        drop(permit);
    });
}

/// File descriptors kept free for everything but OBU connections (the
/// gateway's clients, the store, log files).
const RESERVED_FDS: u64 = 1_024;

/// The configured limit, lowered so that connections can never use up the
/// process's file descriptors: running out would stop every other listener
/// in the process too.
fn connection_limit(configured: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let affordable =
        usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).max(1);
    if affordable < configured {
        tracing::warn!(
            configured,
            limit = affordable,
            open_files = soft,
            "max_connections lowered to fit the open-file limit; raise `ulimit -n` for more",
        );
    }
    configured.min(affordable)
}
