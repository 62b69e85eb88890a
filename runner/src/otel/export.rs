//! Sending OTLP requests to a collector over gRPC or HTTP (protobuf).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client as metrics_client;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

use crate::config::telemetry::{Endpoint, Protocol};

/// Longest an export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An export did not reach the collector, or the collector refused it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("`{url}` cannot be used as a collector address")]
    Endpoint {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the http client cannot be built")]
    Client(#[source] reqwest::Error),
    #[error("the collector refused the export over grpc")]
    Grpc(#[source] tonic::Status),
    #[error("the export over http failed")]
    Http(#[source] reqwest::Error),
    #[error("the collector answered http {0}")]
    Status(u16),
    #[error("the collector took more than {0:?}")]
    Timeout(Duration),
}

/// A client of one collector.
#[derive(Clone)]
pub enum Exporter {
    Grpc(Box<GrpcClients>),
    Http { client: reqwest::Client, metrics_url: String, traces_url: String },
}

/// The two OTLP services of one gRPC connection.
#[derive(Clone)]
pub struct GrpcClients {
    metrics: metrics_client::MetricsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
}

impl Exporter {
    /// A client that connects at its first export; must be made inside a
    /// Tokio runtime.
    pub fn new(endpoint: &Endpoint) -> Result<Exporter, ExportError> {
        match endpoint.protocol {
            Protocol::Grpc => {
                let channel = GrpcEndpoint::from_shared(endpoint.url.clone())
                    .map_err(|source| ExportError::Endpoint { url: endpoint.url.clone(), source })?
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                Ok(Exporter::Grpc(Box::new(GrpcClients {
                    metrics: metrics_client::MetricsServiceClient::new(channel.clone()),
                    traces: TraceServiceClient::new(channel),
                })))
            }
            Protocol::Http => {
                let client = reqwest::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .no_proxy()
                    .build()
                    .map_err(ExportError::Client)?;
                Ok(Exporter::Http {
                    client,
                    metrics_url: format!("{}/v1/metrics", endpoint.url),
                    traces_url: format!("{}/v1/traces", endpoint.url),
                })
            }
        }
    }

    /// Sends metrics; returns how many data points the collector refused.
    pub async fn metrics(
        &mut self,
        request: ExportMetricsServiceRequest,
    ) -> Result<i64, ExportError> {
        match self {
            Exporter::Grpc(clients) => {
                let reply = clients.metrics.export(request).await.map_err(ExportError::Grpc)?;
                Ok(reply.into_inner().partial_success.map_or(0, |p| p.rejected_data_points))
            }
            Exporter::Http { client, metrics_url, .. } => {
                post(client, metrics_url, request.encode_to_vec()).await.map(|()| 0)
            }
        }
    }

    /// Sends spans; returns how many the collector refused.
    pub async fn traces(&mut self, request: ExportTraceServiceRequest) -> Result<i64, ExportError> {
        match self {
            Exporter::Grpc(clients) => {
                let reply = clients.traces.export(request).await.map_err(ExportError::Grpc)?;
                Ok(reply.into_inner().partial_success.map_or(0, |p| p.rejected_spans))
            }
            Exporter::Http { client, traces_url, .. } => {
                post(client, traces_url, request.encode_to_vec()).await.map(|()| 0)
            }
        }
    }
}

/// Missing: reading a partial success from the HTTP answer. Data points the
/// collector refuses over HTTP are not counted, only over gRPC.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), ExportError> {
    let sent = client.post(url).header("content-type", "application/x-protobuf").body(body).send();
    let response = tokio::time::timeout(EXPORT_TIMEOUT, sent)
        .await
        .map_err(|_| ExportError::Timeout(EXPORT_TIMEOUT))?
        .map_err(ExportError::Http)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ExportError::Status(status.as_u16()));
    }
    Ok(())
}
