//! An invoice book kept in a map, for tests of the components that read
//! invoices (the gateway, the gRPC invoice service).

use std::collections::HashMap;

use futures::future::BoxFuture;
use stages::invoice::{BookError, Invoice, InvoiceBook, PriceLine};

/// The period every test book calls current.
pub const CURRENT_PERIOD: &str = "2024-05";

/// Invoices kept in a map; `failing` makes every lookup fail.
#[derive(Default)]
pub struct MemoryBook {
    pub invoices: HashMap<(String, String), Invoice>,
    pub failing: bool,
}

impl MemoryBook {
    pub fn with(invoices: Vec<Invoice>) -> Self {
        let invoices =
            invoices.into_iter().map(|i| ((i.obu_id.clone(), i.period.clone()), i)).collect();
        MemoryBook { invoices, failing: false }
    }
}

impl InvoiceBook for MemoryBook {
    fn invoice<'a>(
        &'a self,
        obu_id: &'a str,
        period: &'a str,
    ) -> BoxFuture<'a, Result<Option<Invoice>, BookError>> {
        let found = self.invoices.get(&(obu_id.to_owned(), period.to_owned())).cloned();
        let failing = self.failing;
        Box::pin(async move {
            if failing {
                return Err(BookError("store unreachable".to_owned()));
            }
            Ok(found)
        })
    }

    fn current_period(&self) -> String {
        CURRENT_PERIOD.to_owned()
    }
}

/// An invoice at 0.20 EUR per km.
pub fn invoice(obu_id: &str, period: &str, distance_m: f64) -> Invoice {
    Invoice {
        obu_id: obu_id.to_owned(),
        period: period.to_owned(),
        distance_m,
        distance_km: distance_m / 1000.0,
        amount: distance_m / 1000.0 * 0.2,
        currency: "EUR".to_owned(),
        segments: 3,
        first_fix: format!("{period}-01T08:00:00Z"),
        last_fix: format!("{period}-02T17:30:00Z"),
        lines: vec![PriceLine {
            price_per_km: 0.2,
            distance_km: distance_m / 1000.0,
            amount: distance_m / 1000.0 * 0.2,
        }],
    }
}
