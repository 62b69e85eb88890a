//! Invoices as customers see them, and the read interface that serves them.
//!
//! The aggregate stage owns the totals; it publishes an [`InvoiceBook`] that a
//! gateway in the same process reads directly. A gateway in another process
//! reads through an implementation that asks the aggregate over the network.

use futures::future::BoxFuture;
use serde::Serialize;

/// What an OBU owes for one billing period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Invoice {
    pub obu_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub distance_m: f64,
    pub distance_km: f64,
    pub amount: f64,
    pub currency: String,
    /// Distance segments billed.
    pub segments: u64,
    /// Fix time of the first and last billed segment, RFC 3339.
    pub first_fix: String,
    pub last_fix: String,
    /// The share billed at each price in force during the period, lowest
    /// price first; more than one when the price changed within the period.
    pub lines: Vec<PriceLine>,
}

/// Distance billed at one price.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PriceLine {
    pub price_per_km: f64,
    pub distance_km: f64,
    /// Rounded to cents; the invoice's amount is the sum of its lines.
    pub amount: f64,
}

/// Reading the book failed (the store is unreachable or broken).
#[derive(Debug, thiserror::Error)]
#[error("invoice book unavailable: {0}")]
pub struct BookError(pub String);

/// Read access to invoices.
pub trait InvoiceBook: Send + Sync {
    /// The invoice of `obu_id` for `period` (`YYYY-MM`), `None` when the OBU
    /// has no billed distance in it.
    fn invoice<'a>(
        &'a self,
        obu_id: &'a str,
        period: &'a str,
    ) -> BoxFuture<'a, Result<Option<Invoice>, BookError>>;

    /// The billing period that contains the present moment, in the book's
    /// time zone.
    fn current_period(&self) -> String;
}

/// How a component publishes its book in [`crate::component::Resources`] for
/// the components that take it as input.
#[derive(Clone)]
pub struct SharedBook(pub std::sync::Arc<dyn InvoiceBook>);
