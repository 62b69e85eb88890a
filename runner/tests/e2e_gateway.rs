//! The gateway's HTTP paths against the real runner: an invoice with the
//! bearer token, refusals without or with a wrong one, unknown OBUs and bad
//! periods, the open `/health` and `/metrics`, and a token that never reaches
//! the runner's output even when it logs everything.
//!
//! Data: one car's 1 Hz drive through Munich (BMW Car IT's barefoot project,
//! Apache 2.0; see ../shared/data/barefoot-munich-drive/README.md).

mod support;

use std::path::Path;
use std::time::Duration;

use geographiclib_rs::{Geodesic, InverseGeodesic};
use serde_json::Value;

const PRICE_PER_KM: f64 = 0.19;
const OBU: &str = "munich-1";
/// The drive took place on 2014-09-10 at 06:54 to 07:14 +02:00.
const PERIOD: &str = "2014-09";

fn trace() -> std::path::PathBuf {
    support::shared_data().join("barefoot-munich-drive/x0001-001.json")
}

fn pipeline(dir: &Path, port: u16) -> String {
    format!(
        r#"[sources.munich]
type = "obu_sim"

[sources.munich.replay]
path = "{trace}"
format = "json"
obu_id = "{OBU}"
time_field = "time"
point_field = "point"

[queues.fixes]
type = "memory"
inputs = ["munich"]

[stages.distance]
type = "distance"
inputs = ["fixes"]

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = {PRICE_PER_KM}
currency = "EUR"
store = "sqlite://{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{port}"
tokens_file = "{tokens}"
"#,
        trace = trace().display(),
        store = dir.join("munich.db").display(),
        tokens = dir.join("tokens").display(),
    )
}

/// The summed geodesic length of the raw trace, every fix included: an upper
/// bound for sane billing (the stage drops jitter, so it bills a bit less).
fn raw_length_m() -> f64 {
    let text = std::fs::read_to_string(trace()).expect("the Munich trace is readable");
    let fixes: Vec<Value> = serde_json::from_str(&text).expect("the trace is a json array");
    let points: Vec<(f64, f64)> = fixes
        .iter()
        .map(|fix| {
            let wkt = fix["point"].as_str().expect("point is WKT text");
            let inner = wkt.trim_start_matches("POINT(").trim_end_matches(')');
            let (lon, lat) = inner.split_once(' ').expect("POINT(lon lat)");
            (lat.parse().expect("latitude"), lon.parse().expect("longitude"))
        })
        .collect();
    let geodesic = Geodesic::wgs84();
    points.windows(2).map(|w| -> f64 { geodesic.inverse(w[0].0, w[0].1, w[1].0, w[1].1) }).sum()
}

/// A token nobody could guess and that appears nowhere else in the output.
fn secret_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("e2e-Secret-{}-{nanos:x}", std::process::id())
}

fn error_code(body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    json["error"].as_str().unwrap_or_else(|| panic!("no error code in {body}")).to_owned()
}

#[test]
fn gateway_serves_invoices_only_with_the_token_and_never_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = secret_token();
    // A second token may read another OBU only; it ends with the first one,
    // so the output check below covers both.
    let scoped = format!("scoped-{token}");
    let tokens = format!("# e2e\n{token}\n{scoped} someone-else\n");
    std::fs::write(dir.path().join("tokens"), tokens).unwrap();
    let env = [("RUST_LOG", "trace".to_owned())];
    let (mut runner, ports, _) = support::start_pipeline(
        dir.path(),
        "gateway",
        1,
        |ports| pipeline(dir.path(), ports[0]),
        |ports| ports[0],
        &env,
    );
    let base = format!("http://127.0.0.1:{}", ports[0]);
    support::wait_for_state(&mut runner, &base, "aggregate", "finished", Duration::from_secs(30));
    let http = support::http();
    let invoice_url = format!("{base}/invoice/{OBU}?period={PERIOD}");

    // 200 with the token: the invoice, its amount the rounded price of its kilometres.
    let (status, body) = support::get(&http, &invoice_url, Some(&token));
    assert_eq!(status, 200, "{body}");
    let invoice: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(invoice["obu_id"], OBU);
    assert_eq!(invoice["period"], PERIOD);
    assert_eq!(invoice["currency"], "EUR");
    let distance_m = invoice["distance_m"].as_f64().expect("distance_m is a number");
    let distance_km = invoice["distance_km"].as_f64().expect("distance_km is a number");
    let amount = invoice["amount"].as_f64().expect("amount is a number");
    assert!((distance_km * 1000.0 - distance_m).abs() < 1e-6, "{body}");
    assert_eq!(amount, (distance_km * PRICE_PER_KM * 100.0).round() / 100.0, "{body}");
    let raw_m = raw_length_m();
    assert!(
        (0.9 * raw_m..=raw_m).contains(&distance_m),
        "billed {distance_m} m of a {raw_m:.0} m raw trace"
    );

    // 401 without a header, with a wrong token and with another scheme, as JSON.
    let wrong = format!("{token}x");
    for presented in [None, Some(wrong.as_str()), Some("")] {
        let (status, body) = support::get(&http, &invoice_url, presented);
        assert_eq!(status, 401, "{presented:?}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
    }
    let basic = http.get(&invoice_url).basic_auth(&token, None::<&str>).send().unwrap();
    assert_eq!(basic.status().as_u16(), 401, "basic auth is not a bearer token");

    // 403 for a token scoped to other OBUs.
    let (status, body) = support::get(&http, &invoice_url, Some(&scoped));
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden"), "{body}");

    // 404 for an OBU without distance, 400 for a month that does not exist.
    let (status, body) =
        support::get(&http, &format!("{base}/invoice/nobody?period={PERIOD}"), Some(&token));
    assert_eq!((status, error_code(&body).as_str()), (404, "not_found"), "{body}");
    let (status, body) =
        support::get(&http, &format!("{base}/invoice/{OBU}?period=2024-13"), Some(&token));
    assert_eq!((status, error_code(&body).as_str()), (400, "bad_request"), "{body}");

    // /health and /metrics are open.
    let (status, body) = support::get(&http, &format!("{base}/health"), None);
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["components"]["gateway"], "running", "{body}");
    let (status, page) = support::get(&http, &format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    let served = support::sample_sum(&page, "toll_gateway_requests_total", &[("status", "200")]);
    assert!(served >= 2.0, "the invoice and /health were counted: {page}");

    let stopped = runner.terminate(Duration::from_secs(30));
    assert!(stopped.is_some_and(|s| s.success()), "runner stops cleanly on SIGTERM");
    let (stdout, stderr) = (runner.stdout(), runner.stderr());
    assert!(stderr.contains("TRACE") || stderr.contains("trace"), "trace logging was on");
    assert!(!stdout.contains(&token), "the token appears on stdout");
    assert!(!stderr.contains(&token), "the token appears on stderr");
    println!(
        "gateway: billed {distance_m:.1} m ({raw_m:.1} m raw), amount {amount}, stderr {} bytes",
        stderr.len()
    );
}
