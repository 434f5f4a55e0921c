//! Logging (tracing, text or JSON on stderr), request logs, Prometheus metrics.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use onboard_core::settings::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests) keep the first.
pub fn init(log: &LogSettings) {
    // The level was validated with the settings; a filter tracing still refuses
    // falls back to `info` rather than silencing the service.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The Prometheus registry and its HTTP middleware: request counters and latency
/// histograms per route pattern, method and status, served at `/metrics`. Unmatched
/// paths count as one `UNKNOWN` route so scanners cannot blow up the label set.
pub fn metrics() -> Result<PrometheusMetrics, String> {
    PrometheusMetricsBuilder::new("onboard")
        .endpoint("/metrics")
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(|e| e.to_string())
}

/// One structured log line per request. It names the route pattern, not the path,
/// because some paths carry secrets (a bundle download token).
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(target: "onboard::http", %method, %route, status, duration_ms, %peer, "request");
    } else {
        tracing::info!(target: "onboard::http", %method, %route, status, duration_ms, %peer, "request");
    }
    Ok(res)
}
