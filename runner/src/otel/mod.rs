//! Telemetry leaving the process: metrics and spans exported over OTLP to a
//! collector, and an optional Prometheus scrape endpoint.
//!
//! The in-process registry ([`Telemetry`]) stays the source of truth: the
//! exporter reads it every `export_interval_ms` and sends cumulative totals,
//! and drains the tracer's finished spans every second (sooner when its
//! buffer is half full). A collector that is down costs warnings and
//! `toll_telemetry_export_errors_total`, never the pipeline's progress.
//!
//! - `encode`: registry samples and spans as OTLP requests.
//! - `export`: the gRPC and HTTP clients.
//! - `prometheus`: the scrape endpoint.

pub mod encode;
pub mod export;
mod prometheus;

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::resource::v1::Resource;
use stages::grpc::WarnLimiter;
use stages::telemetry::{Counter, Telemetry};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::TelemetrySettings;
use export::{ExportError, Exporter};

/// How often finished spans are sent.
const SPAN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Most spans in one export request.
const MAX_SPANS_PER_REQUEST: usize = 4_096;

/// Export failures are logged at most this often per signal.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The outcomes `toll_reloads_total` counts (see [`Telemetry::reload`]).
pub const RELOAD_OUTCOMES: [&str; 4] = ["applied", "unchanged", "rejected", "failed"];

/// How long stopping waits for the last export.
const FINAL_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("cannot listen on {address} for prometheus scrapes")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the otlp exporter")]
    Exporter(#[source] ExportError),
}

/// The running exporters; [`Otel::shutdown`] sends what is left.
pub struct Otel {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Otel {
    /// Configures the tracer and starts the exporters the settings ask for.
    /// Must run inside a Tokio runtime.
    pub async fn start(
        settings: &TelemetrySettings,
        telemetry: &Telemetry,
    ) -> Result<Otel, OtelError> {
        // Every outcome is a series from the start, so a dashboard shows
        // zero reloads rather than no data.
        for outcome in RELOAD_OUTCOMES {
            telemetry.counter("toll_reloads_total", &[("outcome", outcome)]);
        }
        let tracer = telemetry.tracer();
        tracer.set_buffer_capacity(settings.max_queued_spans);
        tracer.configure(settings.endpoint.is_some(), &settings.sampling);

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if let Some(listen) = settings.prometheus_listen {
            let listener = prometheus::bind(listen)
                .await
                .map_err(|source| OtelError::Listen { address: listen, source })?;
            tasks.spawn(prometheus::serve(listener, telemetry.clone(), stopped.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            let exporter = Exporter::new(endpoint).map_err(OtelError::Exporter)?;
            let resource = encode::resource(&settings.service_name, &instance_id());
            let loops = Loops { telemetry: telemetry.clone(), exporter, resource };
            tasks.spawn(loops.clone().metrics(settings.export_interval, stopped.clone()));
            tasks.spawn(loops.spans(stopped));
            tracing::info!(
                endpoint = %endpoint.url,
                protocol = ?endpoint.protocol,
                service_name = %settings.service_name,
                sampling_ratio = settings.sampling.ratio,
                always_traced = settings.sampling.always_trace.len(),
                "exporting telemetry over otlp",
            );
        }
        Ok(Otel { stop, tasks })
    }

    /// Sends what is left and stops the exporters, waiting a few seconds at most.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(FINAL_EXPORT_TIMEOUT, drained).await.is_err() {
            tracing::warn!("last telemetry export timed out");
            self.tasks.abort_all();
        }
    }
}

/// Applies a reloaded `[telemetry]` table: what can change while running
/// (the sampling ratio and the always-traced OBUs) changes at once; other
/// keys (endpoint, protocol, service name, intervals, the scrape address)
/// are read at start, which a warning says. True when the table changed.
pub fn retune(
    telemetry: &Telemetry,
    current: &TelemetrySettings,
    next: &TelemetrySettings,
) -> bool {
    if current == next {
        return false;
    }
    let tracer = telemetry.tracer();
    tracer.configure(tracer.is_recording(), &next.sampling);
    tracing::info!("trace sampling settings reloaded");
    if !current.same_except_sampling(next) {
        tracing::warn!(
            "telemetry settings other than sampling_ratio and always_trace take effect \
             at the next start",
        );
    }
    true
}

/// A random id for this process's `service.instance.id`.
fn instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What both export loops share.
#[derive(Clone)]
struct Loops {
    telemetry: Telemetry,
    exporter: Exporter,
    resource: Resource,
}

impl Loops {
    async fn metrics(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let errors = self.errors("metrics");
        let mut limiter = WarnLimiter::new(WARN_EVERY);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            let samples = self.telemetry.samples();
            let request = encode::metrics_request(
                &self.resource,
                &samples,
                self.telemetry.started(),
                SystemTime::now(),
            );
            let sent = self.exporter.metrics(request).await;
            report("metrics", sent, &errors, &mut limiter);
            if last {
                return;
            }
        }
    }

    async fn spans(mut self, mut stop: watch::Receiver<bool>) {
        let errors = self.errors("traces");
        let mut limiter = WarnLimiter::new(WARN_EVERY);
        let tracer = self.telemetry.tracer().clone();
        let mut tick = tokio::time::interval(SPAN_FLUSH_INTERVAL);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = tracer.filling() => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            let finished = tracer.take_finished();
            for chunk in finished.chunks(MAX_SPANS_PER_REQUEST) {
                let request = encode::trace_request(&self.resource, chunk);
                let sent = self.exporter.traces(request).await;
                report("traces", sent, &errors, &mut limiter);
            }
            if last {
                return;
            }
        }
    }

    fn errors(&self, signal: &str) -> Counter {
        self.telemetry.counter("toll_telemetry_export_errors_total", &[("signal", signal)])
    }
}

fn report(
    signal: &str,
    sent: Result<i64, ExportError>,
    errors: &Counter,
    limiter: &mut WarnLimiter,
) {
    let error = match sent {
        Ok(0) => return,
        Ok(refused) => format!("the collector refused {refused} items"),
        Err(error) => stages::error_chain(&error),
    };
    errors.add(1);
    if let Some(held_back) = limiter.allow() {
        tracing::warn!(signal, %error, held_back, "telemetry export failed");
    }
}
