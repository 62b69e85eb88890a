//! An invoice book in another process: reads through the aggregator's gRPC
//! service, so that a gateway there answers as one beside the aggregate.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use tonic::transport::Channel;

use crate::invoice::{BookError, Invoice, InvoiceBook};
use crate::telemetry::Counter;

use super::proto::aggregator_client::AggregatorClient;
use super::proto::{CurrentPeriodRequest, InvoiceRequest};

/// Reads invoices from a remote aggregator.
///
/// [`InvoiceBook::current_period`] cannot wait for the network, so it
/// answers the period the aggregator named last (refreshed by
/// [`RemoteBook::refresh_period`] and by every reply to a request for the
/// current period). Before the first answer it returns an empty period,
/// which the aggregator reads as its own current one: the invoice is then
/// still right, it only takes the remote clock's word for the month.
#[derive(Clone)]
pub struct RemoteBook {
    client: AggregatorClient<Channel>,
    current: Arc<RwLock<String>>,
    calls: Counter,
    errors: Counter,
}

impl RemoteBook {
    /// A book over `client`, counting its calls and failed calls.
    pub fn new(client: AggregatorClient<Channel>, calls: Counter, errors: Counter) -> Self {
        RemoteBook { client, current: Arc::default(), calls, errors }
    }

    /// Asks the aggregator for its current period and remembers it.
    pub async fn refresh_period(&self) -> Result<String, tonic::Status> {
        self.calls.add(1);
        let reply = self.client.clone().current_period(CurrentPeriodRequest {}).await;
        let period = reply.inspect_err(|_| self.errors.add(1))?.into_inner().period;
        self.remember(&period);
        Ok(period)
    }

    fn remember(&self, period: &str) {
        if period.is_empty() {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if *current != period {
            period.clone_into(&mut current);
        }
    }
}

impl InvoiceBook for RemoteBook {
    fn invoice<'a>(
        &'a self,
        obu_id: &'a str,
        period: &'a str,
    ) -> BoxFuture<'a, Result<Option<Invoice>, BookError>> {
        Box::pin(async move {
            self.calls.add(1);
            let request = InvoiceRequest { obu_id: obu_id.to_owned(), period: period.to_owned() };
            let reply = self.client.clone().get_invoice(request).await.map_err(|status| {
                self.errors.add(1);
                BookError(format!("aggregator answered {:?}: {}", status.code(), status.message()))
            })?;
            let reply = reply.into_inner();
            if period.is_empty() {
                self.remember(&reply.period);
            }
            Ok(reply.invoice.map(super::invoice_from_proto))
        })
    }

    fn current_period(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
