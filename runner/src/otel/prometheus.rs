//! A Prometheus scrape endpoint for set-ups without a collector.

use std::net::SocketAddr;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use stages::telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds the endpoint, so that a taken address fails the start.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Answers `GET /metrics` with the registry until `stop` turns true.
pub async fn serve(listener: TcpListener, telemetry: Telemetry, mut stop: watch::Receiver<bool>) {
    let address = listener.local_addr().ok();
    let app =
        Router::new().route(
            "/metrics",
            get(move || {
                let text = telemetry.render_prometheus();
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                }
            }),
        );
    tracing::info!(address = ?address, "prometheus endpoint listening");
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!(%error, "prometheus endpoint failed");
    }
}
