//! The split gateway (invoices asked of the aggregator service over gRPC)
//! answers every call exactly as the gateway of a one-process run of the
//! same fleet: 401 with a JSON body without a token or with a wrong one, 404
//! for an unknown OBU, 400 for a bad period, 200 with the token.

mod kafka_common;
mod split_common;
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use split_common::{Fleet, Stack};

/// A small fleet, sent as fast as possible; it starts on 2 November 2026 (UTC).
const FLEET: Fleet = Fleet::Synthetic { trucks: 5, duration_s: 300, speedup: 0.0 };
const PERIOD: &str = "2026-11";

/// A call: what it asks, with which token, and the status it must get.
struct Call {
    path: String,
    token: Option<&'static str>,
    status: u16,
}

fn calls() -> Vec<Call> {
    let invoice = format!("/invoice/obu-0001?period={PERIOD}");
    let call = |path: &str, token, status| Call { path: path.to_owned(), token, status };
    vec![
        call(&invoice, None, 401),
        call(&invoice, Some("not-the-token"), 401),
        call(&invoice, Some(kafka_common::TOKEN), 200),
        call(&format!("/invoice/obu-9999?period={PERIOD}"), Some(kafka_common::TOKEN), 404),
        call("/invoice/obu-0001?period=2026-13", Some(kafka_common::TOKEN), 400),
        call("/invoice/obu-0001?period=november", Some(kafka_common::TOKEN), 400),
        call("/invoice/obu-9999?period=2026-13", None, 401),
    ]
}

/// Status and body (JSON) of each call against `base`.
fn answers(base: &str, calls: &[Call]) -> Vec<(u16, Value)> {
    let http = support::http();
    calls
        .iter()
        .map(|call| {
            let url = format!("{base}{}", call.path);
            let (status, body) = support::get(&http, &url, call.token);
            let json = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{url}: body is not json ({e}): {body}"));
            (status, json)
        })
        .collect()
}

#[test]
fn split_gateway_refuses_and_answers_exactly_as_one_process() {
    kafka_common::bootstrap();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let calls = calls();
    let (mut one, one_base, _) = split_common::all_in_one(dir.path(), "one", FLEET);
    let expected = answers(&one_base, &calls);
    one.kill();

    let mut stack = Stack::start(dir.path(), "auth");
    let mut obu = stack.start_obu(FLEET);
    let (sent, _) = split_common::wait_obu_done(&mut obu, "fleet", Duration::from_secs(60));
    stack.wait_billed(sent as i64, Duration::from_secs(45));
    let split = answers(&stack.gateway_base(), &calls);

    for (call, (status, body)) in calls.iter().zip(&split) {
        println!("split gateway: {} (token {:?}) -> {status} {body}", call.path, call.token);
    }
    println!("split gateway: test {:.1} s", started.elapsed().as_secs_f64());
    for ((call, want), got) in calls.iter().zip(&expected).zip(&split) {
        assert_eq!(want.0, call.status, "one process: {} with {:?}", call.path, call.token);
        assert_eq!(got, want, "split as one process: {} with {:?}", call.path, call.token);
    }
    let refused = split.iter().filter(|(status, _)| *status == 401);
    for (_, body) in refused {
        assert!(body["error"].is_string(), "a refusal says why in json: {body}");
    }
    let billed = &split[2].1;
    assert!(billed["distance_m"].as_f64().is_some_and(|m| m > 0.0), "billed: {billed}");
}
