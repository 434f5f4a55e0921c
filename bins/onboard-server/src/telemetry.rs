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

/// `onboard_registrations_total{outcome,reason}`,
/// `onboard_registration_step_seconds{step}`, and the gauges the alerts and the
/// dashboard read (CRL, CA, pending effects, devices, rotations).
#[derive(Debug, Clone)]
pub struct RegistrationMetrics {
    total: prometheus::IntCounterVec,
    steps: prometheus::HistogramVec,
    unactivated: prometheus::IntGauge,
    crl_next_update: prometheus::IntGauge,
    crl_this_update: prometheus::IntGauge,
    pending_effects: prometheus::IntGauge,
    ca_not_after: prometheus::IntGauge,
    devices: prometheus::IntGaugeVec,
    rotations: prometheus::IntGaugeVec,
    rotation_outcomes: prometheus::IntGaugeVec,
}

impl RegistrationMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, String> {
        let total = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "onboard_registrations_total",
                "Device self-registrations by outcome and reason",
            ),
            &["outcome", "reason"],
        )
        .map_err(|e| e.to_string())?;
        let steps = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "onboard_registration_step_seconds",
                "Time spent in each step of a successful registration",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["step"],
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(total.clone()))
            .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(steps.clone()))
            .map_err(|e| e.to_string())?;
        let unactivated = prometheus::IntGauge::new(
            "onboard_devices_unactivated",
            "Devices still registered after activation.report_after_hours",
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(unactivated.clone()))
            .map_err(|e| e.to_string())?;
        let crl_next_update = prometheus::IntGauge::new(
            "onboard_crl_next_update_timestamp_seconds",
            "nextUpdate of the CRL this server installed in the broker (Unix time); Mosquitto refuses every device after it",
        )
        .map_err(|e| e.to_string())?;
        let pending_effects = prometheus::IntGauge::new(
            "onboard_pending_effects",
            "Committed changes whose broker or cloud update is still pending",
        )
        .map_err(|e| e.to_string())?;
        let crl_this_update = prometheus::IntGauge::new(
            "onboard_crl_this_update_timestamp_seconds",
            "thisUpdate of the CRL this server installed in the broker (Unix time)",
        )
        .map_err(|e| e.to_string())?;
        let ca_not_after = prometheus::IntGauge::new(
            "onboard_ca_not_after_timestamp_seconds",
            "notAfter of the CA chain's certificate that expires first (Unix time)",
        )
        .map_err(|e| e.to_string())?;
        for g in [
            &crl_next_update,
            &crl_this_update,
            &pending_effects,
            &ca_not_after,
        ] {
            registry
                .register(Box::new(g.clone()))
                .map_err(|e| e.to_string())?;
        }
        let devices = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("onboard_devices", "Devices in the registry by status"),
            &["status"],
        )
        .map_err(|e| e.to_string())?;
        let rotations = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "onboard_rotations",
                "Devices by credential rotation state (OK, QUEUED, PENDING, TIMEOUT)",
            ),
            &["state"],
        )
        .map_err(|e| e.to_string())?;
        let rotation_outcomes = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "onboard_rotation_outcomes",
                "Credential rotations ended, by outcome (completed, timed_out), from the audit log",
            ),
            &["outcome"],
        )
        .map_err(|e| e.to_string())?;
        for g in [&devices, &rotations, &rotation_outcomes] {
            registry
                .register(Box::new(g.clone()))
                .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            total,
            steps,
            unactivated,
            crl_next_update,
            crl_this_update,
            pending_effects,
            ca_not_after,
            devices,
            rotations,
            rotation_outcomes,
        })
    }

    pub fn success(&self, timings: &[(&'static str, f64)], reregistered: bool) {
        let reason = if reregistered {
            "reregistered"
        } else {
            "registered"
        };
        self.total.with_label_values(&["success", reason]).inc();
        for (step, seconds) in timings {
            self.steps.with_label_values(&[step]).observe(*seconds);
        }
    }

    /// The CRL installed in the broker: its thisUpdate and nextUpdate.
    pub fn set_crl(
        &self,
        this_update: chrono::DateTime<chrono::Utc>,
        next_update: chrono::DateTime<chrono::Utc>,
    ) {
        self.crl_this_update.set(this_update.timestamp());
        self.crl_next_update.set(next_update.timestamp());
    }

    pub fn set_ca_not_after(&self, at: chrono::DateTime<chrono::Utc>) {
        self.ca_not_after.set(at.timestamp());
    }

    pub fn set_fleet(&self, counts: &onboard_core::FleetCounts) {
        for (status, n) in &counts.devices_by_status {
            self.devices.with_label_values(&[status]).set(*n);
        }
        for (state, n) in &counts.rotations_by_state {
            self.rotations.with_label_values(&[state]).set(*n);
        }
        for (outcome, n) in &counts.rotations_by_outcome {
            self.rotation_outcomes.with_label_values(&[outcome]).set(*n);
        }
    }

    pub fn set_pending_effects(&self, n: i64) {
        self.pending_effects.set(n);
    }

    pub fn set_unactivated(&self, n: usize) {
        self.unactivated.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn failure(&self, reason: &str) {
        self.total.with_label_values(&["failure", reason]).inc();
    }
}
