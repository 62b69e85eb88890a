//! Invoices read through a `grpc_invoices` source from the invoice book that
//! an aggregator's `grpc` source serves, over a real gRPC connection.

mod grpc_support;

use std::sync::Arc;

use grpc_support::{
    build_context, context, eventually, invoice, start_server, MemoryBook, ParseToml,
    CURRENT_PERIOD,
};
use stages::component::{Component, ComponentConfig, Resources};
use stages::invoice::{InvoiceBook, SharedBook};
use stages::sources::grpc_invoices::GrpcInvoicesConfig;
use stages::telemetry::Telemetry;

/// Builds a `grpc_invoices` source towards `addr` and returns the book it
/// publishes, and the source itself, not yet running.
fn remote_book(addr: std::net::SocketAddr) -> (Arc<dyn InvoiceBook>, Component, Telemetry) {
    let config = GrpcInvoicesConfig::parse(&format!("url = \"http://{addr}\""));
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    let mut cx = build_context("book", &telemetry, &mut resources);
    let component = config.build(&mut cx).expect("grpc_invoices builds");
    let book = resources.get::<SharedBook>("book").expect("a published book");
    (Arc::clone(&book.0), component, telemetry)
}

#[tokio::test]
async fn remote_book_returns_what_the_aggregators_book_holds() {
    let held = invoice("obu-1", "2024-04", 12_345.0);
    let server =
        start_server("127.0.0.1:0".parse().unwrap(), Some(MemoryBook::with(vec![held.clone()])));
    let (book, _source, _) = remote_book(server.addr);

    let found = book.invoice("obu-1", "2024-04").await.expect("book answers");

    assert_eq!(found, Some(held));
}

#[tokio::test]
async fn remote_book_answers_none_for_an_invoice_it_does_not_hold() {
    let held = invoice("obu-1", "2024-04", 500.0);
    let server = start_server("127.0.0.1:0".parse().unwrap(), Some(MemoryBook::with(vec![held])));
    let (book, _source, _) = remote_book(server.addr);

    assert_eq!(book.invoice("obu-1", "2024-03").await.expect("book answers"), None);
    assert_eq!(book.invoice("obu-2", "2024-04").await.expect("book answers"), None);
}

#[tokio::test]
async fn current_period_is_the_aggregators_once_the_source_runs() {
    let held = invoice("obu-9", CURRENT_PERIOD, 700.0);
    let server =
        start_server("127.0.0.1:0".parse().unwrap(), Some(MemoryBook::with(vec![held.clone()])));
    let (book, source, telemetry) = remote_book(server.addr);
    let Component::Source(source) = source else { panic!("a source") };
    assert_eq!(book.current_period(), "", "unknown before the first answer");

    // An empty period asks for the aggregator's current one.
    assert_eq!(book.invoice("obu-9", "").await.expect("book answers"), Some(held));
    let (stop, cx) = context("book", "source", &telemetry);
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(source.run(stages::component::Output::new(vec![tx], None), cx));
    eventually("the period refreshed", || book.current_period() == CURRENT_PERIOD).await;

    stop.send(true).unwrap();
    task.await.unwrap().expect("source ends at shutdown");
}

#[tokio::test]
async fn failing_aggregator_book_is_an_error_not_a_missing_invoice() {
    let failing = MemoryBook { failing: true, ..MemoryBook::default() };
    let server = start_server("127.0.0.1:0".parse().unwrap(), Some(failing));
    let (book, _source, telemetry) = remote_book(server.addr);

    let error = book.invoice("obu-1", "2024-04").await.expect_err("the store is down");

    assert!(error.to_string().contains("store unreachable"), "{error}");
    assert_eq!(telemetry.counter_sum("toll_grpc_call_errors_total", &[("component", "book")]), 1);
}

#[tokio::test]
async fn server_without_invoices_refuses_invoice_calls() {
    let server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let (book, _source, _) = remote_book(server.addr);

    let error = book.invoice("obu-1", "2024-04").await.expect_err("no book is served");

    assert!(error.to_string().contains("Unimplemented"), "{error}");
}

#[tokio::test]
async fn unreachable_aggregator_is_an_error() {
    let (book, _source, _) = remote_book(grpc_support::free_addr());

    assert!(book.invoice("obu-1", "2024-04").await.is_err());
}
