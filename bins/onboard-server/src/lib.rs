//! Onboard's HTTP server. Handlers are a few lines that call `onboard_core`; this
//! crate owns only HTTP: routing, extractors, error bodies, metrics and docs.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_prom::PrometheusMetrics;
use onboard_core::secrets::AdminTokens;
use onboard_core::{CoreError, Onboard, Settings};
use telemetry::RegistrationMetrics;

pub mod admin;
pub mod auth;
pub mod console;
pub mod devices;
pub mod docs;
pub mod error;
pub mod est;
pub mod firmware;
pub mod health;
pub mod iot;
pub mod models;
pub mod ocsp;
pub mod public;
pub mod ratelimit;
pub mod register;
pub mod rotation;
pub mod telemetry;
pub mod tls;
pub mod views;

use error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What every worker shares.
#[derive(Clone)]
pub struct AppState {
    pub onboard: Onboard,
    pub metrics: PrometheusMetrics,
    pub registrations: RegistrationMetrics,
    pub admin_tokens: AdminTokens,
    pub guard: PublicGuard,
    /// The OCSP responder certificate in use.
    pub ocsp: onboard_core::OcspResponderCache,
}

/// The rate limits in front of the public routes.
#[derive(Debug, Clone)]
pub struct PublicGuard {
    pub limiter: ratelimit::RateLimiter,
    pub trust_forwarded_for: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("onboard", &self.onboard)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Loads (or, on first start with SQLite, creates) the CA: a server without its
    /// CA key does not start, and on PostgreSQL it never creates one.
    pub fn new(onboard: Onboard) -> Result<Self, ServerError> {
        onboard.ca()?;
        let admin = onboard.admin_tokens()?;
        if let Some(path) = &admin.created {
            tracing::warn!(
                path = %path.display(),
                "no admin.token_hashes configured: created an admin token in this file (mode 0600)"
            );
        }
        let metrics = telemetry::metrics().map_err(ServerError::Metrics)?;
        let registrations =
            RegistrationMetrics::new(&metrics.registry).map_err(ServerError::Metrics)?;
        let chain = onboard
            .ca()?
            .chain_info()
            .map_err(|e| ServerError::Metrics(format!("CA chain: {e}")))?;
        if let Some(first) = chain.iter().map(|c| c.not_after).min() {
            registrations.set_ca_not_after(first);
        }
        let rl = &onboard.settings().rate_limit;
        let guard = PublicGuard {
            limiter: ratelimit::RateLimiter::new(&ratelimit::Limits {
                requests_per_minute: rl.requests_per_minute,
                burst: rl.burst,
                failures_per_hour: rl.failures_per_hour,
                failure_burst: rl.failure_burst,
            }),
            trust_forwarded_for: rl.trust_forwarded_for,
        };
        Ok(Self {
            onboard,
            metrics,
            registrations,
            admin_tokens: admin.tokens,
            guard,
            ocsp: onboard_core::OcspResponderCache::default(),
        })
    }
}

/// Opens the registry, migrates when configured, and serves until SIGTERM/SIGINT,
/// then lets in-flight requests finish for `server.shutdown_timeout_seconds`.
pub fn run(settings: Settings) -> Result<(), ServerError> {
    let onboard = Onboard::open(settings)?;
    if onboard.settings().database.run_migrations {
        onboard.migrate()?;
    }
    // The CA before anything else: on PostgreSQL it must have been made by
    // `onboardctl ca init` (replicas never make their own), and the broker's CRL
    // is signed with it.
    onboard.ca()?;
    start_broker(&onboard);
    let state = AppState::new(onboard)?;
    let _listener = start_activation(&state.onboard)?;
    actix_web::rt::System::new().block_on(serve(state))
}

/// Writes the broker's ACL, password and CRL files from the registry (Mosquitto
/// needs them to start; a Mosquitto that is not running yet is not an error) and
/// applies every effect a previous run left pending. Failures are logged; the
/// reconciler keeps trying.
pub fn start_broker(onboard: &Onboard) {
    match onboard.acl_sync() {
        Ok(done) => {
            tracing::info!(
                granted = done.granted,
                crl = done.crl_number,
                "broker files written"
            )
        }
        Err(e) => tracing::error!(error = %e, "could not write the broker's files at start"),
    }
    match onboard.reconcile(true) {
        Ok(r) if r.applied + r.failed > 0 => {
            tracing::info!(
                applied = r.applied,
                failed = r.failed,
                "applied pending effects"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not apply pending effects at start"),
    }
}

/// One reconciler pass, off the async runtime; updates the CRL and effect gauges.
async fn reconcile_once(onboard: Onboard, metrics: telemetry::RegistrationMetrics) {
    let result = web::block(move || {
        let report = onboard.reconcile(false);
        let pending = onboard.pending_effects();
        (report, pending, onboard.installed_crl())
    })
    .await;
    match result {
        Ok((report, pending, installed)) => {
            if let Some(crl) = installed {
                metrics.set_crl(crl.this_update, crl.next_update);
            }
            if let Ok((n, _)) = pending {
                metrics.set_pending_effects(n);
            }
            match report {
                Ok(r) if r.applied > 0 || r.crl_refreshed => {
                    tracing::info!(
                        applied = r.applied,
                        failed = r.failed,
                        crl_refreshed = r.crl_refreshed,
                        "reconciled"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the reconciler could not run"),
            }
        }
        Err(_) => tracing::warn!("the reconciler task failed"),
    }
}

/// With `broker.mqtt_url` set, listens on `broker.status_topic`: a device's first
/// message marks it active, later ones update `last_seen_at`, in batches. The
/// listener runs on its own thread until it is dropped.
pub fn start_activation(
    onboard: &Onboard,
) -> Result<Option<onboard_core::StatusListener>, ServerError> {
    let Some(config) = onboard_core::status_config(onboard.settings())? else {
        return Ok(None);
    };
    let topic = config.topic_filter.clone();
    let recorder = onboard.clone();
    let listener = onboard_core::StatusListener::start(config, move |batch| {
        // Instants from the listener become wall-clock times through the Clock.
        let now = recorder.clock().now();
        let seen: Vec<(String, chrono::DateTime<chrono::Utc>)> = batch
            .into_iter()
            .map(|(client_id, at)| {
                let age = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
                (client_id, now - age)
            })
            .collect();
        match recorder.record_activity(&seen) {
            Ok(0) => {}
            Ok(n) => tracing::info!(activated = n, "devices reported in"),
            Err(e) => tracing::warn!(error = %e, "could not record device activity"),
        }
    })
    .map_err(|e| ServerError::Core(CoreError::Setup(format!("status listener: {e}"))))?;
    tracing::info!(%topic, "listening for device status messages");
    Ok(Some(listener))
}

pub async fn serve(state: AppState) -> Result<(), ServerError> {
    let server_settings = state.onboard.settings().server.clone();
    let bind = server_settings.bind.clone();
    let factory_state = state.clone();
    let mut server = HttpServer::new(move || app(factory_state.clone()))
        .on_connect(tls::on_connect)
        // A client has 5 s to send its request head (slow clients are answered
        // 408 and closed) and 1 s to close after the answer.
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .shutdown_timeout(server_settings.shutdown_timeout_seconds)
        .bind(&bind)
        .map_err(|source| ServerError::Bind {
            bind: bind.clone(),
            source,
        })?;
    if !server_settings.tls_bind.is_empty() {
        let identity = tls::TlsIdentity::load(&state.onboard)?;
        let acceptor = identity.acceptor(&state.onboard)?;
        let tls_bind = server_settings.tls_bind.clone();
        server = server
            .bind_openssl(&tls_bind, acceptor)
            .map_err(|source| ServerError::Bind {
                bind: tls_bind.clone(),
                source,
            })?;
        tracing::info!(bind = %tls_bind, not_after = %identity.not_after(), "TLS listener (client certificates optional, verified against the CA)");
        // Hourly: replace the server certificate before it expires, or reload
        // changed certificate files.
        let onboard = state.onboard.clone();
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let (o, id) = (onboard.clone(), identity.clone());
                let now = o.clock().now();
                match web::block(move || id.refresh(&o, now)).await {
                    Ok(Ok(true)) => tracing::info!("TLS server certificate replaced"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "could not replace the TLS server certificate")
                    }
                    Err(_) => tracing::warn!("the TLS certificate task failed"),
                }
            }
        });
    }
    // Once a minute (and at start): count devices by status and rotation state
    // for the metrics, forget idle clients of the rate limiter (bounded memory) and
    // drop the content of expired credential bundles (no private key outlives its
    // download link).
    // Every ten minutes: report (and, when configured, revoke) devices that never
    // reported in.
    // Every `broker.reconcile_seconds`: the reconciler (CRL kept fresh and
    // installed, pending broker and cloud effects applied).
    let reconciler = state.onboard.clone();
    let metrics = state.registrations.clone();
    let every =
        std::time::Duration::from_secs(reconciler.settings().broker.reconcile_seconds.max(1));
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(every);
        loop {
            tick.tick().await;
            reconcile_once(reconciler.clone(), metrics.clone()).await;
        }
    });
    let limiter = state.guard.limiter.clone();
    let sweeper = state.onboard.clone();
    let unactivated = state.registrations.clone();
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(std::time::Duration::from_secs(60));
        let mut minutes: u64 = 0;
        loop {
            tick.tick().await;
            minutes += 1;
            if minutes % 10 == 1 {
                let onboard = sweeper.clone();
                match web::block(move || onboard.sweep_unactivated()).await {
                    Ok(Ok((count, revoked))) => {
                        unactivated.set_unactivated(count);
                        if count > 0 {
                            tracing::warn!(
                                devices = count,
                                revoked = revoked.len(),
                                "devices registered but never activated"
                            );
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not check for unactivated devices")
                    }
                    Err(_) => tracing::warn!("the activation check task failed"),
                }
            }
            limiter.retain_recent();
            // Only when asked: the CronJob (`onboardctl rotation run-job`) is
            // otherwise the one scheduler of rotations.
            if sweeper.settings().rotation.run_in_server {
                let onboard = sweeper.clone();
                match web::block(move || onboard.run_rotation_cycle()).await {
                    Ok(Ok(summary)) => tracing::info!(%summary, "rotation cycle"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "the rotation cycle failed"),
                    Err(_) => tracing::warn!("the rotation cycle task failed"),
                }
            }
            let onboard = sweeper.clone();
            match web::block(move || onboard.fleet_counts()).await {
                Ok(Ok(counts)) => unactivated.set_fleet(&counts),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not count devices for the metrics"),
                Err(_) => tracing::warn!("the device count task failed"),
            }
            let onboard = sweeper.clone();
            match web::block(move || onboard.purge_expired_bundles()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(bundles = n, "dropped expired credential bundles"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not drop expired credential bundles")
                }
                Err(_) => tracing::warn!("the bundle sweep task failed"),
            }
        }
    });
    for addr in server.addrs() {
        tracing::info!(
            %addr,
            database = state.onboard.backend(),
            public_base_url = %server_settings.public_base_url,
            "onboard-server listening"
        );
    }
    server.run().await?;
    tracing::info!("onboard-server stopped");
    Ok(())
}

/// The application: every route, extractor setting and middleware. Tests build it
/// with `actix_web::test::init_service(app(state))`.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.onboard.settings().server.max_body_bytes;
    App::new()
        .app_data(web::Data::new(state.onboard.clone()))
        .app_data(web::Data::new(state.admin_tokens.clone()))
        .app_data(web::Data::new(state.registrations.clone()))
        .app_data(web::Data::new(state.guard.clone()))
        .app_data(web::Data::new(state.ocsp.clone()))
        .app_data(web::Data::new(BodyLimit {
            default: limit,
            firmware: usize::try_from(state.onboard.settings().assets.max_firmware_bytes)
                .unwrap_or(usize::MAX),
        }))
        .app_data(web::Data::new(iot::ProxyTrust::from_settings(
            &state.onboard.settings().server,
        )))
        .app_data(
            web::FormConfig::default()
                .limit(limit)
                .error_handler(error::extractors::form),
        )
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(error::extractors::json),
        )
        .app_data(web::PayloadConfig::new(limit))
        .app_data(web::QueryConfig::default().error_handler(error::extractors::query))
        .app_data(web::PathConfig::default().error_handler(error::extractors::path))
        .service(health::health)
        .service(health::ready)
        .service(public_routes(state.guard.clone()))
        .configure(admin::routes)
        .configure(console::routes)
        .service(est::cacerts)
        .service(est::simpleenroll)
        .service(est::simplereenroll)
        .service(est::csrattrs)
        .service(est::labelled_cacerts)
        .service(est::labelled_simpleenroll)
        .service(est::labelled_simplereenroll)
        .service(est::labelled_csrattrs)
        .service(iot::token)
        .service(iot::config)
        .service(iot::provisioning)
        .service(iot::activate)
        .service(iot::renew)
        .service(rotation::acknowledge)
        .service(iot::firmware)
        .service(iot::jwks)
        .service(iot::openid_configuration)
        .service(docs::openapi_json)
        .service(docs::docs_redirect)
        .service(docs::swagger_ui())
        .default_service(web::to(not_found))
        .wrap(from_fn(limit_body))
        .wrap(state.metrics.clone())
        .wrap(from_fn(telemetry::log_request))
}

/// `/public/v1`: rate limited per client address.
fn public_routes(
    guard: PublicGuard,
) -> actix_web::Scope<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/public/v1")
        .service(register::register)
        .service(devices::download_bundle)
        .service(public::ca_chain)
        .service(public::crl)
        .service(ocsp::ocsp_post)
        .service(ocsp::ocsp_get)
        .wrap(from_fn(move |req, next| {
            ratelimit::enforce(guard.limiter.clone(), guard.trust_forwarded_for, req, next)
        }))
}

#[derive(Debug, Clone, Copy)]
struct BodyLimit {
    /// `server.max_body_bytes`.
    default: usize,
    /// Firmware uploads: `assets.max_firmware_bytes`.
    firmware: usize,
}

/// Refuses a declared body above the limit before any handler runs, so every route
/// answers 413 the same way; bodies without a length are cut by the extractors.
async fn limit_body(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<BodyLimit>>()
        .map(|l| {
            if firmware::is_upload(&req) {
                l.firmware
            } else if console::models::is_upload(&req) {
                // The console's upload form answers its own 413 as a console page.
                usize::MAX
            } else {
                l.default
            }
        })
        .unwrap_or(usize::MAX);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        let response =
            actix_web::ResponseError::error_response(&ApiError::payload_too_large(limit));
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// No route: 405 with `Allow` when the path is a route of ours with other methods
/// (HEAD is GET's), else 404.
async fn not_found(req: HttpRequest) -> HttpResponse {
    if let Some(allowed) = docs::allowed_methods(req.path()).filter(|m| !m.is_empty()) {
        let e = ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} {} is not a route; allowed: {}",
                req.method(),
                req.path(),
                allowed.join(", ")
            ),
        );
        let mut res = actix_web::ResponseError::error_response(&e);
        if let Ok(v) = header::HeaderValue::from_str(&allowed.join(", ")) {
            res.headers_mut().insert(header::ALLOW, v);
        }
        return res;
    }
    let e = ApiError::not_found(format!("no route for {} {}", req.method(), req.path()));
    actix_web::ResponseError::error_response(&e)
}
