//! The split pipeline's link with the real aggregate stage behind the
//! `grpc` source: a delivery is confirmed only after the SQLite commit, a
//! redelivery is billed once, and the invoice reads back over gRPC.

mod grpc_support;

use grpc_support::{build_context, context, segments, serve, start_sink, ParseToml};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::component::{Component, ComponentConfig, Input, Output, Resources};
use stages::event::{Batch, Events};
use stages::invoice::SharedBook;
use stages::sources::grpc::GrpcSourceConfig;
use stages::sources::grpc_invoices::GrpcInvoicesConfig;
use stages::stages::aggregate::AggregateConfig;
use stages::telemetry::Telemetry;

#[tokio::test]
async fn delivery_is_confirmed_after_the_commit_and_billed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("totals.sqlite");
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();

    // A pipeline builds the source first; here the aggregate publishes its
    // book before the server looks for it, which works without late lookups.
    let aggregate = AggregateConfig::parse(&format!(
        "price_per_km = 0.2\nstore = \"sqlite://{}\"",
        store.display()
    ));
    let mut cx = build_context("aggregate", &telemetry, &mut resources);
    let Ok(Component::Stage(aggregate)) = aggregate.build(&mut cx) else { panic!("stage") };
    let source = GrpcSourceConfig::parse("listen = \"127.0.0.1:0\"\ninvoices_from = \"aggregate\"");
    let server = serve(&source, &mut resources);
    let (_stop, cx) = context("aggregate", "stage", &telemetry);
    tokio::spawn(aggregate.run(
        Input::new(server.batches, None),
        Output::new(Vec::new(), None),
        cx,
    ));
    let addr = server.addr;
    let client = start_sink(addr, "");

    // Segments 0..5 of obu-1 on 2024-05-01: 10.25 + n metres each.
    for _ in 0..2 {
        let (ack, status) = Ack::channel();
        let batch = Batch::new(Events::Segments(segments("obu-1", 0..5)), AckSet::one(ack));
        client.input.send(batch).await.unwrap();
        assert_eq!(status.await.unwrap(), AckStatus::Delivered);
    }

    let remote = GrpcInvoicesConfig::parse(&format!("url = \"http://{addr}\""));
    let mut cx = build_context("book", &telemetry, &mut resources);
    let _book_source = remote.build(&mut cx).expect("grpc_invoices builds");
    let book = resources.get::<SharedBook>("book").expect("published");
    let invoice = book.0.invoice("obu-1", "2024-05").await.unwrap().expect("billed");
    let expected_m: f64 = (0..5).map(|n| 10.25 + f64::from(n)).sum();
    assert_eq!(invoice.distance_m, expected_m);
    assert_eq!(invoice.segments, 5);
    assert_eq!(invoice.currency, "EUR");
}
