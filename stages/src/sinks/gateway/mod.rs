//! The gateway sink: the customer-facing JSON API over HTTP that serves the
//! invoices of the aggregate stage it takes as input.
//!
//! Routes: `GET /invoice/{obu_id}[?period=YYYY-MM]` (bearer token required),
//! `GET /health` and `GET /metrics` (open). The listener is bound when the
//! component is built, so a taken port fails the start, not the run. The
//! events it receives are only counted for `/health`: the invoices come from
//! the book the aggregate publishes.

mod auth;
mod error;
mod routes;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tracing::info;

pub use auth::{TokenError, Tokens};
pub use error::ApiError;
pub use routes::{valid_obu_id, valid_period, MAX_OBU_ID_BYTES};

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, ComponentError, Context, Input,
    KeptListener, Kind, RunResult, Signature, Sink,
};
use crate::event::{Batch, EventKind};
use crate::invoice::{InvoiceBook, SharedBook};
use crate::registry::{self, ComponentType, FieldError, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "gateway",
    kind: Kind::Sink,
    about: "serves invoices over an HTTP JSON API with bearer tokens",
    parse: registry::parse::<GatewayConfig>,
};

/// Declaration of a gateway sink.
///
/// Tokens never appear in the pipeline file: they come from `tokens_file`,
/// from the environment variable named by `tokens_env`, or from both. Each
/// token is `TOKEN` (may read every OBU) or `TOKEN OBU-ID...` separated by
/// spaces (may read only those OBUs; any other answers 403).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address and port the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File of bearer tokens, one per line; blank lines and lines starting
    /// with `#` are ignored.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Name (not value) of an environment variable holding comma-separated
    /// bearer tokens, in the same form as the lines of `tokens_file`.
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// How long a request waits for the invoice book before answering 503.
    #[serde(default = "default_book_timeout_ms")]
    pub book_timeout_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6000))
}

fn default_book_timeout_ms() -> u64 {
    5_000
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.tokens_file.is_none() && self.tokens_env.is_none() {
            return Err(FieldError {
                path: Vec::new(),
                message: "give tokens_file, tokens_env or both".to_owned(),
            });
        }
        if self.tokens_env.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::at("tokens_env", "must name an environment variable"));
        }
        if self.book_timeout_ms == 0 {
            return Err(FieldError::at("book_timeout_ms", "must be greater than 0"));
        }
        Ok(())
    }
}

impl ComponentConfig for GatewayConfig {
    fn signature(&self) -> Signature {
        Signature::sink(vec![EventKind::Total])
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        Ok(Component::Sink(Box::new(self.bind(cx)?)))
    }

    fn referenced_files(&self) -> Vec<PathBuf> {
        self.tokens_file.iter().cloned().collect()
    }

    fn binds_inputs(&self) -> bool {
        true
    }
}

impl GatewayConfig {
    /// Builds the gateway as its concrete type, whose bound address can be
    /// read (useful with port 0).
    pub fn bind(&self, cx: &mut BuildContext) -> Result<Gateway, BuildError> {
        let book = find_book(cx)?;
        let tokens = Tokens::load(self.tokens_file.as_deref(), self.tokens_env.as_deref())
            .map_err(|e| {
                BuildError::with(format!("gateway '{}' cannot load tokens", cx.name), e)
            })?;

        let kept = cx.take_over::<KeptListener>().filter(|k| k.asked == self.listen);
        let listener = match kept {
            Some(kept) => kept.listener,
            None => std::net::TcpListener::bind(self.listen).map_err(|e| {
                let message = format!("gateway '{}' cannot listen on {}", cx.name, self.listen);
                BuildError::with(message, e)
            })?,
        };
        // Tokio requires a non-blocking socket when it adopts the listener.
        listener.set_nonblocking(true).map_err(|e| {
            BuildError::with(format!("gateway '{}' cannot configure its listener", cx.name), e)
        })?;
        let local_addr = listener.local_addr().map_err(|e| {
            BuildError::with(format!("gateway '{}' cannot read its bound address", cx.name), e)
        })?;

        Ok(Gateway {
            listener,
            asked: self.listen,
            local_addr,
            book,
            tokens: Arc::new(tokens),
            book_timeout: Duration::from_millis(self.book_timeout_ms),
        })
    }
}

/// The book published by one of the inputs; exactly one input must publish.
fn find_book(cx: &BuildContext) -> Result<Arc<dyn InvoiceBook>, BuildError> {
    let mut found = cx
        .inputs
        .iter()
        .filter_map(|input| cx.resources.get::<SharedBook>(input).map(|book| (input, book)));
    let Some((_, book)) = found.next() else {
        return Err(BuildError::new(format!(
            "gateway '{}' needs an input that publishes invoices, such as an aggregate stage",
            cx.name
        )));
    };
    if let Some((second, _)) = found.next() {
        return Err(BuildError::new(format!(
            "gateway '{}' serves one invoice book, but input '{second}' publishes another",
            cx.name
        )));
    }
    Ok(Arc::clone(&book.0))
}

/// A built gateway: its listener is bound, it serves once run.
pub struct Gateway {
    listener: std::net::TcpListener,
    asked: SocketAddr,
    local_addr: SocketAddr,
    book: Arc<dyn InvoiceBook>,
    tokens: Arc<Tokens>,
    book_timeout: Duration,
}

impl Gateway {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("tokens", &self.tokens)
            .field("book_timeout", &self.book_timeout)
            .finish_non_exhaustive()
    }
}

impl Sink for Gateway {
    fn run(self: Box<Self>, input: Input, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.serve(input, cx))
    }
}

impl Gateway {
    /// Serves HTTP until shutdown is requested, draining the input meanwhile;
    /// serving goes on after the input closes.
    async fn serve(self, input: Input, cx: Context) -> RunResult {
        let spare = KeptListener::keep(self.asked, &self.listener);
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| ComponentError::with("gateway cannot adopt its listener", e))?;
        let ingest = Arc::new(Ingest::default());
        let state = routes::AppState {
            component: Arc::clone(&cx.name),
            book: self.book,
            tokens: self.tokens,
            telemetry: cx.metrics.telemetry().clone(),
            ingest: Arc::clone(&ingest),
            book_timeout: self.book_timeout,
            errors: cx.metrics.errors.clone(),
            last_book_warn_ms: Arc::new(AtomicI64::new(i64::MIN / 2)),
        };
        info!(component = %cx.name, address = %self.local_addr, "gateway listening");

        let mut shutdown = cx.shutdown.clone();
        // MISSING: a read timeout for request headers and a connection limit.
        // Until they exist, a client that opens many connections and sends
        // headers slowly holds sockets and memory for as long as it likes.
        let server = axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(async move { shutdown.requested().await });
        let (served, ()) = tokio::join!(server.into_future(), ingest.drain(input));

        info!(component = %cx.name, "gateway stopped");
        if let Some(spare) = spare {
            cx.shutdown.leave(spare);
        }
        served.map_err(|e| ComponentError::with("gateway server failed", e))
    }
}

/// What the gateway has received on its input, for `/health`.
#[derive(Debug, Default)]
pub(crate) struct Ingest {
    batches: AtomicU64,
    events: AtomicU64,
    last_batch_ms: AtomicI64,
    closed: AtomicBool,
}

impl Ingest {
    /// Receives and drops (so acknowledges) every batch until the input closes.
    async fn drain(&self, mut input: Input) {
        while let Some(batch) = input.recv().await {
            self.record(&batch);
        }
        self.closed.store(true, Ordering::Relaxed);
    }

    fn record(&self, batch: &Batch) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.last_batch_ms.store(now_ms, Ordering::Relaxed);
    }

    fn snapshot(&self) -> serde_json::Value {
        let last_ms = self.last_batch_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "open": !self.closed.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "events": self.events.load(Ordering::Relaxed),
            "last_batch_ms": (last_ms != 0).then_some(last_ms),
        })
    }
}
