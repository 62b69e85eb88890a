//! Declarations of the gRPC components that cannot work are refused, with
//! the key or the address at fault.

mod grpc_support;

use grpc_support::{build_context, context, ParseToml};
use stages::component::{Component, ComponentConfig, Output, Resources};
use stages::registry::{self, FieldError};
use stages::sinks::grpc::GrpcSinkConfig;
use stages::sources::grpc::GrpcSourceConfig;
use stages::sources::grpc_invoices::GrpcInvoicesConfig;
use stages::telemetry::Telemetry;

fn refusal<T>(text: &str) -> FieldError
where
    T: serde::de::DeserializeOwned + ComponentConfig + registry::Validate,
{
    let value: toml::Value = toml::from_str(text).expect("valid TOML");
    registry::parse::<T>(value).expect_err("refused")
}

#[test]
fn sink_refuses_urls_it_cannot_call() {
    for url in ["127.0.0.1:50051", "https://127.0.0.1:50051", "http://127.0.0.1", "http://a b:1"] {
        let error = refusal::<GrpcSinkConfig>(&format!("url = \"{url}\""));
        assert_eq!(error.path, ["url"], "{url}: {}", error.message);
    }
    let error = refusal::<GrpcInvoicesConfig>("url = \"ftp://127.0.0.1:1\"");
    assert_eq!(error.path, ["url"]);
}

#[test]
fn sink_refuses_limits_out_of_range() {
    let url = "url = \"http://127.0.0.1:50051\"";
    let cases = [
        ("max_batch_segments = 0", "max_batch_segments"),
        ("max_batch_segments = 65537", "max_batch_segments"),
        ("timeout_ms = 0", "timeout_ms"),
        ("retry_backoff_min_ms = 0", "retry_backoff_min_ms"),
        ("retry_backoff_min_ms = 500\nretry_backoff_max_ms = 100", "retry_backoff_max_ms"),
        ("unknown_key = 1", "unknown_key"),
    ];
    for (extra, key) in cases {
        let error = refusal::<GrpcSinkConfig>(&format!("{url}\n{extra}"));
        let mentions = error.path == [key] || error.message.contains(key);
        assert!(mentions, "{extra}: {error:?}");
    }
}

#[test]
fn source_refuses_an_empty_aggregate_name_and_unknown_keys() {
    let error = refusal::<GrpcSourceConfig>("invoices_from = \"\"");
    assert_eq!(error.path, ["invoices_from"]);
    let error = refusal::<GrpcSourceConfig>("listen = \"127.0.0.1:0\"\nport = 1");
    assert!(error.message.contains("port"), "{error:?}");
    let error = refusal::<GrpcSourceConfig>("listen = \"not an address\"");
    assert_eq!(error.path, ["listen"]);
}

#[test]
fn taken_port_fails_the_build_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = GrpcSourceConfig::parse(&format!("listen = \"{addr}\""));
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();

    let Err(error) = config.build(&mut build_context("aggregator", &telemetry, &mut resources))
    else {
        panic!("the port is taken");
    };

    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[test]
fn client_outside_a_runtime_fails_the_build() {
    let config = GrpcSinkConfig::parse("url = \"http://127.0.0.1:50051\"");
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();

    let result = config.build(&mut build_context("sink", &telemetry, &mut resources));

    assert!(result.is_err());
}

#[tokio::test]
async fn server_serving_a_missing_book_fails_when_it_starts() {
    let config = GrpcSourceConfig::parse("listen = \"127.0.0.1:0\"\ninvoices_from = \"billing\"");
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    let mut cx = build_context("aggregator", &telemetry, &mut resources);
    let Ok(Component::Source(source)) = config.build(&mut cx) else { panic!("source builds") };

    let (_stop, cx) = context("aggregator", "source", &telemetry);
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let error = source.run(Output::new(vec![tx], None), cx).await.expect_err("no book");

    assert!(error.to_string().contains("'billing'"), "{error}");
}
