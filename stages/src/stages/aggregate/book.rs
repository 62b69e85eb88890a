//! Invoices read straight from the aggregate's store.

use std::sync::Arc;

use chrono_tz::Tz;
use futures::future::BoxFuture;

use crate::invoice::{BookError, Invoice, InvoiceBook, PriceLine};
use crate::store::{SqliteStore, StoredTotal};

/// The invoice book of an aggregate in this process.
pub struct StoreBook {
    store: Arc<SqliteStore>,
    tz: Tz,
}

impl StoreBook {
    pub fn new(store: Arc<SqliteStore>, tz: Tz) -> Self {
        StoreBook { store, tz }
    }
}

impl InvoiceBook for StoreBook {
    fn invoice<'a>(
        &'a self,
        obu_id: &'a str,
        period: &'a str,
    ) -> BoxFuture<'a, Result<Option<Invoice>, BookError>> {
        let store = self.store.clone();
        let (obu, label) = (obu_id.to_owned(), period.to_owned());
        Box::pin(async move {
            let rows = tokio::task::spawn_blocking(move || store.totals(&obu, &label))
                .await
                .map_err(|e| BookError(e.to_string()))?
                .map_err(|e| BookError(crate::error_chain(&e)))?;
            Ok(invoice_from(obu_id, period, &rows))
        })
    }

    fn current_period(&self) -> String {
        super::period::current_label(self.tz)
    }
}

/// Sums the price rows of one period into an invoice; `None` without rows.
pub fn invoice_from(obu_id: &str, period: &str, rows: &[StoredTotal]) -> Option<Invoice> {
    let first = rows.first()?;
    let distance_mm: i64 = rows.iter().map(|r| r.distance_mm).sum();
    let lines = price_lines(rows);
    // Each price's share is rounded to cents; the invoice adds the shares up.
    let amount: f64 = lines.iter().map(|l| l.amount).sum();
    let first_ms = rows.iter().map(|r| r.first_fix_ms).min().unwrap_or(first.first_fix_ms);
    let last_ms = rows.iter().map(|r| r.last_fix_ms).max().unwrap_or(first.last_fix_ms);
    Some(Invoice {
        obu_id: obu_id.to_owned(),
        period: period.to_owned(),
        distance_m: distance_mm as f64 / 1e3,
        distance_km: distance_mm as f64 / 1e6,
        amount: cents(amount),
        currency: first.currency.clone(),
        segments: rows.iter().map(|r| r.segments as u64).sum(),
        first_fix: rfc3339(first_ms),
        last_fix: rfc3339(last_ms),
        lines,
    })
}

fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// One line per price, summing rows of the same price (other currencies
/// included, which a currency change would leave behind).
fn price_lines(rows: &[StoredTotal]) -> Vec<PriceLine> {
    let mut by_price: Vec<(f64, i64)> = Vec::new();
    for row in rows {
        match by_price.iter_mut().find(|(p, _)| *p == row.price_per_km) {
            Some((_, mm)) => *mm += row.distance_mm,
            None => by_price.push((row.price_per_km, row.distance_mm)),
        }
    }
    by_price.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_price
        .into_iter()
        .map(|(price_per_km, mm)| PriceLine {
            price_per_km,
            distance_km: mm as f64 / 1e6,
            amount: cents(mm as f64 / 1e6 * price_per_km),
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
