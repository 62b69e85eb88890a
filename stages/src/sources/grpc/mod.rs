//! The `grpc` source: the server side of an aggregator process. Distance
//! processes deliver segments to it with the `toll.v1.Aggregator` service, and
//! gateway processes read invoices from it.
//!
//! Each `Deliver` call becomes one batch with an acknowledgement, and is
//! answered only once the aggregate has committed the batch (the aggregate
//! releases acknowledgements after its commit); a failed commit answers
//! UNAVAILABLE so that the client sends the batch again. When the output is
//! full the call waits, which holds the client back. The listener is bound
//! when the component is built, so a taken port fails the start.

mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, ComponentError, Context, Kind, Output,
    RunResult, Signature, Source,
};
use crate::event::EventKind;
use crate::grpc::proto::aggregator_server::AggregatorServer;
use crate::grpc::DEFAULT_MAX_MESSAGE_BYTES;
use crate::invoice::{InvoiceBook, SharedBook};
use crate::registry::{self, ComponentType, FieldError, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "grpc",
    kind: Kind::Source,
    about: "receives segments over gRPC, confirmed once persisted, and serves invoices",
    parse: registry::parse::<GrpcSourceConfig>,
};

/// `[sources.NAME] type = "grpc"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSourceConfig {
    /// Address and port the gRPC server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Name of the aggregate stage whose invoices `GetInvoice` and
    /// `CurrentPeriod` serve; without it they answer UNIMPLEMENTED.
    #[serde(default)]
    pub invoices_from: Option<String>,
    /// Largest request accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Validate for GrpcSourceConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.invoices_from.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::at("invoices_from", "must name an aggregate stage"));
        }
        if self.max_message_bytes < 4096 {
            return Err(FieldError::at("max_message_bytes", "must be at least 4096"));
        }
        Ok(())
    }
}

impl ComponentConfig for GrpcSourceConfig {
    fn signature(&self) -> Signature {
        Signature::source(EventKind::Segment)
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        Ok(Component::Source(Box::new(self.bind(cx)?)))
    }
}

/// Finds the invoice book once every component is built.
type BookLookup = Box<dyn FnOnce() -> Option<SharedBook> + Send>;

impl GrpcSourceConfig {
    /// Builds the server as its concrete type, whose bound address can be
    /// read (useful with port 0).
    pub fn bind(&self, cx: &mut BuildContext) -> Result<GrpcServer, BuildError> {
        let listener = std::net::TcpListener::bind(self.listen).map_err(|e| {
            BuildError::with(
                format!("grpc source '{}' cannot listen on {}", cx.name, self.listen),
                e,
            )
        })?;
        // Tokio requires a non-blocking socket when it adopts the listener.
        listener.set_nonblocking(true).map_err(|e| {
            BuildError::with(format!("grpc source '{}' cannot configure its listener", cx.name), e)
        })?;
        let local_addr = listener.local_addr().map_err(|e| {
            BuildError::with(format!("grpc source '{}' cannot read its bound address", cx.name), e)
        })?;

        let book = self.invoices_from.clone().map(|owner| (owner.clone(), book_lookup(cx, owner)));
        Ok(GrpcServer { listener, local_addr, book, max_message_bytes: self.max_message_bytes })
    }
}

/// How the server finds the book of `owner`, which is built after it: the
/// aggregate takes this source's segments, so it comes later in build order.
/// The lookup runs when the server starts, after every component was built.
fn book_lookup(cx: &BuildContext, owner: String) -> BookLookup {
    let later = cx.resources.clone();
    Box::new(move || later.get::<SharedBook>(&owner).map(|book| (*book).clone()))
}

/// A built `grpc` source: its listener is bound, it serves once run.
pub struct GrpcServer {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    /// The aggregate named by `invoices_from`, and how to find its book.
    book: Option<(String, BookLookup)>,
    max_message_bytes: usize,
}

impl GrpcServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Source for GrpcServer {
    fn run(self: Box<Self>, output: Output, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.serve(output, cx))
    }
}

impl GrpcServer {
    /// Serves until shutdown is requested; calls in flight then finish.
    async fn serve(mut self, output: Output, cx: Context) -> RunResult {
        let book = self.find_book(&cx)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| ComponentError::with("grpc source cannot adopt its listener", e))?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let service = service::AggregatorService::new(output, book, &cx);
        let service =
            AggregatorServer::new(service).max_decoding_message_size(self.max_message_bytes);
        info!(component = %cx.name, address = %self.local_addr, "grpc server listening");

        let mut shutdown = cx.shutdown.clone();
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.requested().await })
            .await;
        info!(component = %cx.name, "grpc server stopped");
        served.map_err(|e| ComponentError::with("grpc server failed", e))
    }

    /// Every component is built once this runs, so the book must be there.
    fn find_book(&mut self, cx: &Context) -> Result<Option<Arc<dyn InvoiceBook>>, ComponentError> {
        let Some((owner, lookup)) = self.book.take() else {
            return Ok(None);
        };
        match lookup() {
            Some(book) => Ok(Some(book.0)),
            None => Err(ComponentError::new(format!(
                "grpc source '{}' serves the invoices of '{owner}', which publishes no invoice \
                 book (it must be an aggregate stage)",
                cx.name
            ))),
        }
    }
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("invoices_from", &self.book.as_ref().map(|(owner, _)| owner))
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}
