//! The `grpc_invoices` source: the invoice book of an aggregator in another
//! process, for a gateway in this one.
//!
//! It publishes a book that reads through the aggregator's gRPC service when
//! it is built, so a gateway that takes it as input serves those invoices.
//! It emits no events: while it runs it keeps the aggregator's current
//! period fresh, and it ends at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tracing::{info, warn};

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Kind, Output, RunResult,
    Signature, Source,
};
use crate::event::EventKind;
use crate::grpc::{self, RemoteBook, DEFAULT_MAX_MESSAGE_BYTES};
use crate::invoice::SharedBook;
use crate::registry::{self, ComponentType, FieldError, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "grpc_invoices",
    kind: Kind::Source,
    about: "publishes the invoice book of an aggregator in another process, read over gRPC",
    parse: registry::parse::<GrpcInvoicesConfig>,
};

/// `[sources.NAME] type = "grpc_invoices"`; a gateway takes it as input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcInvoicesConfig {
    /// The aggregator's `grpc` source, `http://HOST:PORT`.
    pub url: String,
    /// Longest wait for a connection or an answer, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the aggregator's current period is asked for, in
    /// milliseconds: "current" may lag its month change by this much.
    #[serde(default = "default_period_refresh_ms")]
    pub period_refresh_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_period_refresh_ms() -> u64 {
    10_000
}

impl Validate for GrpcInvoicesConfig {
    fn validate(&self) -> Result<(), FieldError> {
        grpc::check_url(&self.url).map_err(|e| FieldError::at("url", e.to_string()))?;
        if self.timeout_ms == 0 {
            return Err(FieldError::at("timeout_ms", "must be greater than 0"));
        }
        if self.period_refresh_ms == 0 {
            return Err(FieldError::at("period_refresh_ms", "must be greater than 0"));
        }
        Ok(())
    }
}

impl ComponentConfig for GrpcInvoicesConfig {
    /// Totals, so that the gateway (which takes totals) can take it as
    /// input; it never sends any.
    fn signature(&self) -> Signature {
        Signature::source(EventKind::Total)
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        let timeout = Duration::from_millis(self.timeout_ms);
        let client = grpc::channel(&self.url, timeout, DEFAULT_MAX_MESSAGE_BYTES).map_err(|e| {
            BuildError::with(format!("grpc_invoices '{}' has a bad url", cx.name), e)
        })?;
        let labels = [("component", cx.name)];
        let book = RemoteBook::new(
            client,
            cx.telemetry.counter("toll_grpc_calls_total", &labels),
            cx.telemetry.counter("toll_grpc_call_errors_total", &labels),
        );
        cx.resources.publish(cx.name, Arc::new(SharedBook(Arc::new(book.clone()))));
        Ok(Component::Source(Box::new(InvoiceLink {
            book,
            url: self.url.clone(),
            refresh: Duration::from_millis(self.period_refresh_ms),
        })))
    }
}

/// A built `grpc_invoices` source.
struct InvoiceLink {
    book: RemoteBook,
    url: String,
    refresh: Duration,
}

impl Source for InvoiceLink {
    fn run(self: Box<Self>, output: Output, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            // The gateway's input stays open for as long as this runs.
            let _output = output;
            let mut shutdown = cx.shutdown.clone();
            let mut reachable = None;
            loop {
                reachable = Some(self.refresh(&cx, reachable).await);
                tokio::select! {
                    () = shutdown.requested() => break,
                    () = tokio::time::sleep(self.refresh) => {}
                }
            }
            Ok(())
        })
    }
}

impl InvoiceLink {
    /// Asks for the current period; logs when the aggregator becomes
    /// reachable or unreachable. Returns whether it answered.
    async fn refresh(&self, cx: &Context, was_reachable: Option<bool>) -> bool {
        match self.book.refresh_period().await {
            Ok(period) => {
                if was_reachable != Some(true) {
                    info!(component = %cx.name, url = %self.url, %period, "aggregator reachable");
                }
                true
            }
            Err(status) => {
                cx.metrics.errors.add(1);
                if was_reachable != Some(false) {
                    let (url, error) = (&self.url, &status);
                    warn!(component = %cx.name, %url, %error, "aggregator unreachable");
                }
                false
            }
        }
    }
}
