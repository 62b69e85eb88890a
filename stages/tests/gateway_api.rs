//! The gateway's HTTP API over a real socket: invoices, tokens, errors,
//! health and metrics.

mod gateway_support;

use gateway_support::{
    invoice, start, MemoryBook, Running, ALL_TOKEN, CURRENT_PERIOD, SCOPED_TOKEN,
};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::event::{Batch, Events, Total};
use stages::telemetry::ComponentState;

fn book() -> MemoryBook {
    MemoryBook::with(vec![
        invoice("obu-1", CURRENT_PERIOD, 12_500.0),
        invoice("obu-1", "2024-04", 3_000.0),
        invoice("obu-2", CURRENT_PERIOD, 800.0),
        invoice("obu-9", CURRENT_PERIOD, 42_000.0),
    ])
}

async fn get(gateway: &Running, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(gateway.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request reaches the gateway");
    let status = response.status();
    let body = response.json().await.expect("body is JSON");
    (status, body)
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn current_period_invoice_is_served_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (status, body) = get(&gateway, "/invoice/obu-1", Some(ALL_TOKEN)).await;

    assert_eq!(status, StatusCode::OK);
    let expected = json!({
        "obu_id": "obu-1", "period": "2024-05", "distance_m": 12_500.0, "distance_km": 12.5,
        "amount": 2.5, "currency": "EUR", "segments": 3,
        "first_fix": "2024-05-01T08:00:00Z", "last_fix": "2024-05-02T17:30:00Z",
        "lines": [{"price_per_km": 0.2, "distance_km": 12.5, "amount": 2.5}],
    });
    assert_eq!(body, expected);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn explicit_period_invoice_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (status, body) = get(&gateway, "/invoice/obu-1?period=2024-04", Some(ALL_TOKEN)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["period"], "2024-04");
    assert_eq!(body["distance_m"], 3_000.0);
    assert_eq!(body["first_fix"], "2024-04-01T08:00:00Z");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn invoice_without_a_valid_bearer_token_is_401_with_a_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;
    let client = reqwest::Client::new();
    let url = gateway.url("/invoice/obu-1");
    let attempts = [
        client.get(&url),
        client.get(&url).basic_auth("user", Some(ALL_TOKEN)),
        client.get(&url).header(header::AUTHORIZATION, ALL_TOKEN),
        client.get(&url).bearer_auth("tok-not-a-real-one"),
        client.get(&url).bearer_auth(format!("{ALL_TOKEN}x")),
        // Two headers, a good one among them: which counts would be a guess.
        client
            .get(&url)
            .header(header::AUTHORIZATION, format!("Bearer {ALL_TOKEN}"))
            .header(header::AUTHORIZATION, "Bearer tok-not-a-real-one"),
        client
            .get(&url)
            .header(header::AUTHORIZATION, "Bearer tok-not-a-real-one")
            .header(header::AUTHORIZATION, format!("Bearer {ALL_TOKEN}")),
    ];

    for attempt in attempts {
        let response = attempt.send().await.unwrap();

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_error(&response.json().await.unwrap(), "unauthorized");
    }
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn scoped_token_reads_its_obus_and_is_403_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (own, _) = get(&gateway, "/invoice/obu-2", Some(SCOPED_TOKEN)).await;
    let (other, body) = get(&gateway, "/invoice/obu-9", Some(SCOPED_TOKEN)).await;
    let (bare, _) = get(&gateway, "/invoice/obu-9", Some(ALL_TOKEN)).await;

    assert_eq!(own, StatusCode::OK);
    assert_eq!(other, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden");
    assert_eq!(bare, StatusCode::OK);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn obu_without_data_in_the_period_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (unknown, body) = get(&gateway, "/invoice/obu-404", Some(ALL_TOKEN)).await;
    let (no_period, _) = get(&gateway, "/invoice/obu-2?period=2024-04", Some(ALL_TOKEN)).await;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    assert_eq!(no_period, StatusCode::NOT_FOUND);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_parameters_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;
    let long_id = "x".repeat(65);
    let paths = [
        "/invoice/obu-1?period=2024-13".to_owned(),
        "/invoice/obu-1?period=abc".to_owned(),
        "/invoice/obu-1?period=2024-1".to_owned(),
        "/invoice/obu-1?period=2024-00".to_owned(),
        "/invoice/obu-1?period=".to_owned(),
        "/invoice/obu-1?month=2024-04".to_owned(),
        "/invoice/obu-1?period=2024-04&period=2024-05".to_owned(),
        format!("/invoice/{long_id}"),
        "/invoice/obu%0A1".to_owned(),
        "/invoice/obu%FF".to_owned(),
        "/invoice/%ZZ".to_owned(),
        "/invoice/obu%2".to_owned(),
        "/invoice/".to_owned(),
    ];

    for path in &paths {
        let (status, body) = get(&gateway, path, Some(ALL_TOKEN)).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_error(&body, "bad_request");
    }
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn bad_parameters_without_a_token_are_401_not_400() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (status, _) = get(&gateway, "/invoice/obu-1?period=abc", None).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn failing_book_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut failing = book();
    failing.failing = true;
    let gateway = start(dir.path(), failing).await;

    let (status, body) = get(&gateway, "/invoice/obu-1", Some(ALL_TOKEN)).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&body, "unavailable");
    assert!(!body.to_string().contains("store unreachable"), "internal cause stays internal");
    let errors = gateway.telemetry.counter_sum("toll_component_errors_total", &[]);
    assert_eq!(errors, 1);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_route_and_wrong_method_answer_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;

    let (unknown, body) = get(&gateway, "/invoices/obu-1", Some(ALL_TOKEN)).await;
    let posted = reqwest::Client::new().post(gateway.url("/health")).send().await.unwrap();

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&posted.json().await.unwrap(), "method_not_allowed");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn health_needs_no_token_and_lists_component_states() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;
    gateway.telemetry.set_state("aggregate", ComponentState::Running);
    gateway.telemetry.set_state("gateway", ComponentState::Running);

    let (status, body) = get(&gateway, "/health", None).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["components"], json!({"aggregate": "running", "gateway": "running"}));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_need_no_token_and_count_requests_by_route_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), book()).await;
    get(&gateway, "/invoice/obu-1", Some(ALL_TOKEN)).await;
    get(&gateway, "/invoice/obu-1", None).await;
    get(&gateway, "/invoice/obu-1", None).await;

    let response = reqwest::get(gateway.url("/metrics")).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let line = "toll_gateway_requests_total{component=\"gateway\",route=\"/invoice/{obu_id}\",\
                status=\"401\"} 2";
    assert!(text.contains(line), "{text}");
    assert!(text.contains("status=\"200\"} 1"), "{text}");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn input_batches_are_acknowledged_and_serving_outlives_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = start(dir.path(), book()).await;
    let (ack, delivered) = Ack::channel();
    let total = Total {
        obu_id: "obu-1".into(),
        period: CURRENT_PERIOD.into(),
        distance_m: 12_500.0,
        amount: 2.5,
        currency: "EUR".into(),
    };
    let batch = Batch::new(Events::Totals(vec![total]), AckSet::one(ack));

    let input = gateway.input.take().unwrap();
    input.send(batch).await.unwrap();
    drop(input);

    assert_eq!(delivered.await.unwrap(), AckStatus::Delivered);
    let (status, _) = get(&gateway, "/invoice/obu-1", Some(ALL_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, health) = get(&gateway, "/health", None).await;
    assert_eq!(health["input"]["events"], 1);
    assert_eq!(health["input"]["open"], false);
    gateway.stop().await.expect("gateway stops cleanly on shutdown");
}
