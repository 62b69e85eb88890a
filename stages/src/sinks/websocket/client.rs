//! The sink's loop: takes fixes in while the backlog has room, keeps a
//! connection up (reconnecting with backoff), sends frames, settles them by
//! the receiver's replies, and on shutdown drains for a bounded time.

use std::time::Duration;

use tokio::sync::mpsc::OwnedPermit;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::backlog::Backlog;
use super::encode::{Encoder, Throttle};
use super::link::{self, Backoff, ConnectError, Connection, Incoming, Link, LinkEvent, Reply};
use super::WebsocketSink;
use crate::component::{Context, Input, RunResult};
use crate::event::{Batch, Events};
use crate::telemetry::{Counter, Gauge};

/// How often a repeated warning (refused fixes, failed connects) is logged.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The error the source answers a frame with more fixes than it takes.
const TOO_MANY_FIXES: &str = "too many fixes";

/// What woke the loop.
enum Event {
    Input(Option<Batch>),
    Shutdown,
    GiveUp,
    Link(LinkEvent),
}

/// Counters registered once when the sink starts.
struct Metrics {
    frames: Counter,
    reconnects: Counter,
    backlog: Gauge,
    connected: Gauge,
    errors: Counter,
}

/// The running sink.
pub(super) struct Uplink {
    sink: WebsocketSink,
    backlog: Backlog,
    encoder: Encoder,
    metrics: Metrics,
    backoff: Backoff,
    /// Fixes per frame; lowered when the receiver finds frames too big.
    frame_limit: usize,
    /// A batch taken from the input that does not fit the backlog yet.
    waiting: Option<(Vec<Box<[u8]>>, Batch)>,
    input_open: bool,
    ever_connected: bool,
    failed_attempts: u64,
    connect_warnings: Throttle,
    nack_warnings: Throttle,
}

impl Uplink {
    pub fn new(sink: WebsocketSink, cx: &Context) -> Self {
        let m = &cx.metrics;
        let metrics = Metrics {
            frames: m.counter("toll_websocket_sink_frames_total"),
            reconnects: m.counter("toll_websocket_sink_reconnects_total"),
            backlog: m.gauge("toll_websocket_sink_backlog_fixes"),
            connected: m.gauge("toll_websocket_sink_connected"),
            errors: m.errors.clone(),
        };
        let config = &sink.config;
        let min = Duration::from_millis(config.reconnect_min_ms);
        Uplink {
            backlog: Backlog::new(config.backlog_fixes),
            encoder: Encoder::new(config.format, m, WARN_INTERVAL),
            backoff: Backoff::new(min, Duration::from_millis(config.reconnect_max_ms)),
            frame_limit: config.max_fixes_per_frame,
            sink,
            metrics,
            waiting: None,
            input_open: true,
            ever_connected: false,
            failed_attempts: 0,
            connect_warnings: Throttle::new(WARN_INTERVAL),
            nack_warnings: Throttle::new(WARN_INTERVAL),
        }
    }

    pub async fn run(mut self, mut input: Input, mut cx: Context) -> RunResult {
        let mut link = Link::Down { retry_at: Instant::now() };
        let mut deadline: Option<Instant> = None;
        while self.input_open || self.waiting.is_some() || !self.backlog.is_empty() {
            let taking = self.input_open && self.waiting.is_none();
            let sending = matches!(link, Link::Up(_)) && self.backlog.has_unsent();
            let drain_end = deadline.unwrap_or_else(far_future);
            let event = tokio::select! {
                batch = input.recv(), if taking => Event::Input(batch),
                _ = cx.shutdown.requested(), if deadline.is_none() => Event::Shutdown,
                _ = sleep_until(drain_end), if deadline.is_some() => Event::GiveUp,
                event = link.next_event(sending) => Event::Link(event),
            };

            match event {
                Event::Input(Some(batch)) => self.take(batch),
                Event::Input(None) => self.input_open = false,
                Event::Shutdown => {
                    let drain = Duration::from_millis(self.sink.config.drain_timeout_ms);
                    deadline = Some(Instant::now() + drain);
                    let (url, open_fixes) = (self.url(), self.backlog.open());
                    tracing::info!(url, open_fixes, "websocket sink draining");
                }
                Event::GiveUp => {
                    self.give_up(&mut input);
                    break;
                }
                Event::Link(LinkEvent::Retry) => {
                    let (endpoint, limit) = (self.sink.endpoint.clone(), self.connect_timeout());
                    link = Link::Connecting(Box::pin(link::connect(endpoint, limit)));
                }
                Event::Link(LinkEvent::Connected(result)) => link = self.on_connect(result),
                Event::Link(LinkEvent::Incoming(incoming)) => {
                    if let Some(lost) = self.on_incoming(incoming) {
                        link = self.on_lost(link, &lost);
                    }
                }
                Event::Link(LinkEvent::Writable(Some(permit))) => {
                    self.send_frame(&mut link, permit)
                }
                Event::Link(LinkEvent::Writable(None)) => {
                    link = self.on_lost(link, "writer stopped")
                }
            }
            self.admit_waiting();
            self.metrics.backlog.set(self.backlog.open() as i64);
        }

        if let Link::Up(connection) = link {
            connection.close().await;
            tracing::info!(url = %self.url(), "websocket sink disconnected");
        }
        self.metrics.connected.set(0);
        Ok(())
    }

    /// Encodes a batch's fixes; refused ones are counted and dropped here.
    fn take(&mut self, batch: Batch) {
        let Events::Fixes(fixes) = &batch.events else {
            self.metrics.errors.add(1);
            let kind = batch.events.kind();
            let events = batch.len();
            tracing::error!(%kind, events, "websocket sink dropped events that are not fixes");
            return;
        };
        let encoded = self.encoder.encode_all(fixes);
        self.waiting = Some((encoded, batch));
    }

    /// Moves the waiting batch into the backlog once it fits.
    fn admit_waiting(&mut self) {
        let fits =
            self.waiting.as_ref().is_some_and(|(fixes, _)| self.backlog.has_room(fixes.len()));
        if let Some((fixes, batch)) = self.waiting.take_if(|_| fits) {
            self.backlog.push(fixes, batch.acks);
        }
    }

    fn on_connect(&mut self, result: Result<Connection, ConnectError>) -> Link {
        let error = match result {
            Ok(connection) => {
                if self.ever_connected {
                    self.metrics.reconnects.add(1);
                }
                self.ever_connected = true;
                self.failed_attempts = 0;
                self.metrics.connected.set(1);
                tracing::info!(url = %self.url(), "websocket sink connected");
                return Link::Up(connection);
            }
            Err(error) => error,
        };
        self.failed_attempts += 1;
        let delay = self.backoff.next_delay();
        if let Some(suppressed) = self.connect_warnings.allow() {
            tracing::warn!(
                url = %self.url(),
                attempts = self.failed_attempts,
                next_delay_ms = delay.as_millis() as u64,
                error = crate::error_chain(&error),
                suppressed,
                "websocket sink cannot connect",
            );
        }
        Link::Down { retry_at: Instant::now() + delay }
    }

    /// Applies a reply; returns why the connection is lost, if it is.
    fn on_incoming(&mut self, incoming: Incoming) -> Option<String> {
        let reply = match incoming {
            Incoming::Reply(reply) => reply,
            Incoming::Closed(code) => {
                if code == Some(CloseCode::Size) {
                    self.lower_frame_limit(self.frame_limit);
                }
                return Some(code.map_or("closed".into(), |code| format!("closed with {code}")));
            }
            Incoming::Broken(error) => return Some(error),
        };
        match reply {
            Reply::Ack { frame, fixes } => {
                let settled = self.backlog.settle(frame);
                if settled != Some(fixes) {
                    tracing::debug!(
                        frame,
                        fixes,
                        ?settled,
                        "websocket sink ack does not match a frame"
                    );
                }
                self.backoff.reset();
            }
            Reply::Nack { frame } => {
                let reopened = self.backlog.reopen(frame);
                if let Some(suppressed) = self.nack_warnings.allow() {
                    tracing::warn!(
                        frame,
                        ?reopened,
                        suppressed,
                        "websocket sink frame refused by the receiver's pipeline; resending"
                    );
                }
            }
            Reply::Error { frame: Some(frame), error, .. } if error == TOO_MANY_FIXES => {
                if let Some(fixes) = self.backlog.reopen(frame) {
                    self.lower_frame_limit(fixes);
                }
            }
            Reply::Error { frame, error, detail } => {
                self.metrics.errors.add(1);
                let dropped = frame.and_then(|frame| self.backlog.settle(frame));
                tracing::error!(?frame, %error, %detail, ?dropped, "websocket sink frame refused");
            }
            Reply::Unknown(text) => tracing::debug!(%text, "websocket sink ignored a reply"),
        }
        None
    }

    /// Writes the next frame; `permit` guarantees the writer takes it.
    fn send_frame(&mut self, link: &mut Link, permit: OwnedPermit<Message>) {
        let Link::Up(connection) = link else { return };
        let number = connection.number_next_frame();
        let Some(frame) = self.backlog.next_frame(number, self.frame_limit) else { return };
        tracing::debug!(frame = number, fixes = frame.fixes, "websocket sink frame sent");
        permit.send(Message::text(frame.text));
        self.metrics.frames.add(1);
    }

    fn on_lost(&mut self, link: Link, reason: &str) -> Link {
        if let Link::Up(connection) = link {
            connection.abandon();
        }
        self.backlog.rewind();
        self.metrics.connected.set(0);
        let (url, unacknowledged) = (self.url(), self.backlog.open());
        tracing::info!(url, reason, unacknowledged, "websocket sink disconnected");
        Link::Down { retry_at: Instant::now() + self.backoff.next_delay() }
    }

    /// Halves the frame size after the receiver found a frame of `fixes` too big.
    /// The limit stays lowered for the life of the sink.
    fn lower_frame_limit(&mut self, fixes: usize) {
        self.frame_limit = (fixes / 2).max(1);
        tracing::warn!(
            max_fixes_per_frame = self.frame_limit,
            "websocket sink frames too big for the receiver; sending smaller ones"
        );
    }

    /// The drain time is over: fails the acknowledgements of every fix not delivered.
    fn give_up(&mut self, input: &mut Input) {
        let mut undelivered = self.backlog.abandon();
        let unread = self.waiting.take().map(|(_, batch)| batch).into_iter();
        for batch in unread.chain(std::iter::from_fn(|| input.try_recv())) {
            undelivered += batch.len();
            batch.acks.fail();
        }
        self.metrics.errors.add(1);
        self.metrics.backlog.set(0);
        let drain_timeout_ms = self.sink.config.drain_timeout_ms;
        let url = self.url();
        tracing::warn!(
            url,
            undelivered,
            drain_timeout_ms,
            "websocket sink gave up undelivered fixes"
        );
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.sink.config.connect_timeout_ms)
    }

    fn url(&self) -> &str {
        &self.sink.endpoint.url
    }
}

/// A deadline that never comes, for a disabled `select!` branch.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
