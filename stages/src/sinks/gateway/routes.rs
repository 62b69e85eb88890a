//! The HTTP routes of the gateway: invoices behind a bearer token, health and
//! metrics in the open, and JSON errors for everything else.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tracing::{debug, warn};

use super::auth::{bearer_token, Grant, Tokens};
use super::error::ApiError;
use super::Ingest;
use crate::invoice::{Invoice, InvoiceBook};
use crate::telemetry::{ComponentState, Counter, Telemetry};

/// Longest OBU id accepted, in bytes.
pub use crate::event::MAX_OBU_ID_BYTES;

/// Book failures are logged at most once per this many milliseconds, so a
/// failing store under load does not flood the log.
const BOOK_WARN_INTERVAL_MS: i64 = 10_000;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub component: Arc<str>,
    pub book: Arc<dyn InvoiceBook>,
    pub tokens: Arc<Tokens>,
    pub telemetry: Telemetry,
    pub ingest: Arc<Ingest>,
    pub book_timeout: Duration,
    /// The component's error counter; book failures count there.
    pub errors: Counter,
    /// When a book failure was last logged, in milliseconds since the epoch.
    pub last_book_warn_ms: Arc<AtomicI64>,
}

/// The query parameters `/invoice/{obu_id}` takes; any other is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    /// `YYYY-MM`; the book's current period when absent.
    period: Option<String>,
}

/// The gateway's routes. `/health` answers `"status": "ok"`, or `"degraded"`
/// while any component of the pipeline has failed (still 200: the gateway
/// itself is serving).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/invoice/{obu_id}", get(invoice))
        .route("/invoice", get(invoice_without_obu))
        .route("/invoice/", get(invoice_without_obu))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::UnknownRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<InvoiceQuery>, QueryRejection>,
) -> Result<Json<Invoice>, ApiError> {
    // Authentication comes first, so an unknown client learns nothing about
    // which parameters or OBUs exist.
    let grant = authenticate(&state.tokens, &headers)?;

    if !percent_encoding_is_valid(uri.path()) {
        return Err(ApiError::BadRequest("the path has a % not followed by two hex digits"));
    }
    let Path(obu_id) = path.map_err(|_| ApiError::BadRequest("obu_id is not valid utf-8"))?;
    if !valid_obu_id(&obu_id) {
        return Err(ApiError::BadRequest(
            "obu_id must be 1 to 64 bytes without control characters",
        ));
    }
    let Query(query) = query.map_err(|_| {
        ApiError::BadRequest("the only query parameter accepted is period, given once")
    })?;
    let period = match query.period {
        Some(period) if valid_period(&period) => period,
        Some(_) => return Err(ApiError::BadRequest("period must be YYYY-MM with month 01 to 12")),
        None => state.book.current_period(),
    };
    if !grant.may_read(&obu_id) {
        return Err(ApiError::Forbidden);
    }

    let lookup = tokio::time::timeout(state.book_timeout, state.book.invoice(&obu_id, &period));
    match lookup.await {
        Ok(Ok(Some(invoice))) => Ok(Json(invoice)),
        Ok(Ok(None)) => Err(ApiError::NoInvoice),
        Ok(Err(error)) => Err(book_failed(&state, &error.to_string())),
        Err(_elapsed) => Err(book_failed(&state, "invoice book did not answer in time")),
    }
}

/// `/invoice` and `/invoice/`: the path lacks the OBU id.
async fn invoice_without_obu(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Invoice>, ApiError> {
    authenticate(&state.tokens, &headers)?;
    Err(ApiError::BadRequest("obu_id is required: /invoice/{obu_id}"))
}

/// The grant of the request's bearer token. Several Authorization headers
/// are refused like a wrong token: which one counts would be a guess.
fn authenticate<'a>(tokens: &'a Tokens, headers: &HeaderMap) -> Result<Grant<'a>, ApiError> {
    if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(ApiError::InvalidToken);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .ok_or(ApiError::MissingToken)?;
    tokens.authenticate(presented).ok_or(ApiError::InvalidToken)
}

/// Whether every `%` in a raw path starts an escape of two hex digits (the
/// router would otherwise take a broken escape as literal text).
fn percent_encoding_is_valid(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().filter(|(_, &b)| b == b'%').all(|(i, _)| {
        bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

fn book_failed(state: &AppState, error: &str) -> ApiError {
    state.errors.add(1);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let last_ms = state.last_book_warn_ms.load(Ordering::Relaxed);
    let due = now_ms - last_ms >= BOOK_WARN_INTERVAL_MS;
    if due && state.last_book_warn_ms.swap(now_ms, Ordering::Relaxed) == last_ms {
        warn!(component = %state.component, error, "invoice book failed");
    }
    ApiError::Unavailable
}

async fn health(State(state): State<AppState>) -> Response {
    let components = state.telemetry.states();
    let failed = components.values().any(|s| *s == ComponentState::Failed);
    let body = serde_json::json!({
        "status": if failed { "degraded" } else { "ok" },
        "components": components,
        "input": state.ingest.snapshot(),
        "reload": state.telemetry.last_reload(),
    });
    Json(body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.telemetry.render_prometheus();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Counts every request by route and status and logs it at debug level.
/// Headers are never logged: they carry the bearer token.
async fn observe(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_ref().map_or("unknown", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();

    let status = response.status();
    let labels = [("component", &*state.component), ("route", &route), ("status", status.as_str())];
    state.telemetry.counter("toll_gateway_requests_total", &labels).add(1);
    let labels = [
        ("component", &*state.component),
        ("http_route", &route),
        ("http_request_method", method.as_str()),
        ("http_response_status_code", status.as_str()),
    ];
    state.telemetry.histogram("http_server_request_duration_seconds", &labels).observe(elapsed);
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let status = status.as_u16();
    debug!(component = %state.component, route, status, latency_us, "request served");
    response
}

pub use crate::event::valid_obu_id;

/// A billing period `YYYY-MM` with a month from 01 to 12.
pub fn valid_period(period: &str) -> bool {
    let bytes = period.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    if bytes.len() != 7 || bytes[4] != b'-' || !digits(0..4) || !digits(5..7) {
        return false;
    }
    let month = (bytes[5] - b'0') * 10 + (bytes[6] - b'0');
    (1..=12).contains(&month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_needs_four_digit_year_and_month_01_to_12() {
        for good in ["2024-01", "2024-12", "1999-07"] {
            assert!(valid_period(good), "{good}");
        }
        for bad in ["2024-13", "2024-00", "2024-1", "abc", "2024/01", "24-01", "2024-01-01", ""] {
            assert!(!valid_period(bad), "{bad}");
        }
    }

    #[test]
    fn broken_percent_escapes_are_found_in_raw_paths() {
        assert!(percent_encoding_is_valid("/invoice/obu%2D1"));
        assert!(percent_encoding_is_valid("/invoice/obu-1"));
        for bad in ["/invoice/%ZZ", "/invoice/%", "/invoice/obu%2", "/invoice/%g1"] {
            assert!(!percent_encoding_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn obu_id_is_refused_when_empty_too_long_or_with_control_characters() {
        assert!(valid_obu_id("obu-1"));
        assert!(valid_obu_id(&"x".repeat(64)));
        assert!(!valid_obu_id(""));
        assert!(!valid_obu_id(&"x".repeat(65)));
        assert!(!valid_obu_id("obu\n1"));
    }
}
