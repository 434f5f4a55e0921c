//! The console's pages: overview, devices and a device's page with its actions.

use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use onboard_core::domain::{
    AuditFilter, DeviceFilter, DeviceId, DeviceStatus, ModelCode, PageRequest, RevocationReason,
};
use onboard_core::{CoreError, Onboard};
use serde::Deserialize;

use super::html::{code_lines, csrf_field, esc, layout, url, Nav};
use super::{api_error_page, require, require_post, see_other};
use crate::admin::blocking;
use crate::error::ApiError;
use crate::views::{AuditView, CertificateView, DeviceView};

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "—".into())
}

async fn overview(req: HttpRequest, onboard: web::Data<Onboard>) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("overview");
    let o = onboard.clone();
    let found = blocking(move || {
        let counts = o.fleet_counts()?;
        let day = o.registrations_last_day()?;
        let chain = o
            .ca()?
            .chain_info()
            .map_err(|e| CoreError::Internal(format!("CA chain: {e}")))?;
        Ok((counts, day, chain, o.installed_crl()))
    })
    .await;
    let (counts, day, chain, crl) = match found {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let mut body = String::from("<h1>Overview</h1><div class=\"cards\">");
    let _ = write!(
        body,
        r#"<section class="card" aria-labelledby="h-status"><h2 id="h-status">Devices by status</h2><table><tbody>"#
    );
    for (status, n) in &counts.devices_by_status {
        let _ = write!(
            body,
            r#"<tr><th scope="row"><a href="/admin/devices?status={s}">{s}</a></th><td data-count="{s}">{n}</td></tr>"#,
            s = esc(status)
        );
    }
    body.push_str("</tbody></table></section>");
    let _ = write!(
        body,
        r#"<section class="card" aria-labelledby="h-day"><h2 id="h-day">Last 24 hours</h2><p>Registrations: <strong id="registrations-day">{}</strong></p><h3>Failures by reason</h3>"#,
        day.registrations
    );
    if day.failures.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        body.push_str("<table><tbody>");
        for (reason, n) in &day.failures {
            let _ = write!(
                body,
                r#"<tr><th scope="row">{}</th><td>{n}</td></tr>"#,
                esc(reason)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    let _ = write!(
        body,
        r#"<section class="card" aria-labelledby="h-ca"><h2 id="h-ca">CA and CRL</h2><dl>"#
    );
    for c in &chain {
        let _ = write!(
            body,
            "<dt>{}</dt><dd>expires {}</dd>",
            esc(&c.subject),
            time(c.not_after)
        );
    }
    match crl {
        Some(crl) => {
            let _ = write!(
                body,
                "<dt>Installed CRL #{}</dt><dd>nextUpdate {}</dd>",
                crl.number,
                time(crl.next_update)
            );
        }
        None => body.push_str("<dt>Installed CRL</dt><dd>not installed yet</dd>"),
    }
    body.push_str("</dl></section>");
    let _ = write!(
        body,
        r#"<section class="card" aria-labelledby="h-rot"><h2 id="h-rot">Rotation</h2><table><tbody>"#
    );
    for (state, n) in counts
        .rotations_by_state
        .iter()
        .chain(counts.rotations_by_outcome.iter())
    {
        let _ = write!(
            body,
            r#"<tr><th scope="row">{}</th><td>{n}</td></tr>"#,
            esc(state)
        );
    }
    body.push_str("</tbody></table></section></div>");
    layout(StatusCode::OK, "Overview", Some(&nav), &body)
}

#[derive(Debug, Default, Deserialize)]
pub struct DeviceQuery {
    status: Option<String>,
    model: Option<String>,
    batch: Option<String>,
    q: Option<String>,
    after: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn device_filter(q: &DeviceQuery) -> Result<DeviceFilter, ApiError> {
    Ok(DeviceFilter {
        status: non_empty(&q.status)
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        model: non_empty(&q.model)
            .map(ModelCode::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        batch: non_empty(&q.batch).map(str::to_owned),
        q: non_empty(&q.q).map(str::to_owned),
    })
}

async fn devices(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    query: web::Query<DeviceQuery>,
) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("devices");
    let q = query.into_inner();
    let mut body = String::from("<h1>Devices</h1>");
    let status = non_empty(&q.status).unwrap_or("");
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in DeviceStatus::ALL {
        let selected = if s.as_str() == status {
            " selected"
        } else {
            ""
        };
        let _ = write!(options, r#"<option{selected}>{}</option>"#, s.as_str());
    }
    let _ = write!(
        body,
        r#"<form class="filters" method="get" action="/admin/devices" role="search">
<label for="f-q">Serial, name or location<input id="f-q" name="q" value="{}"></label>
<label for="f-status">Status<select id="f-status" name="status">{options}</select></label>
<label for="f-model">Model<input id="f-model" name="model" value="{}"></label>
<label for="f-batch">Batch<input id="f-batch" name="batch" value="{}"></label>
<button type="submit">Search</button></form>"#,
        esc(non_empty(&q.q).unwrap_or("")),
        esc(non_empty(&q.model).unwrap_or("")),
        esc(non_empty(&q.batch).unwrap_or("")),
    );
    let found = match device_filter(&q).and_then(|filter| {
        let page = PageRequest::new(
            PageRequest::DEFAULT_LIMIT,
            non_empty(&q.after).map(str::to_owned),
        )
        .map_err(|e| ApiError::from(CoreError::Invalid(e)))?;
        Ok((filter, page))
    }) {
        Ok((filter, page)) => {
            let o = onboard.clone();
            blocking(move || o.devices(&filter, &page)).await
        }
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            let _ = write!(
                body,
                r#"<p class="error" role="alert">{}</p>"#,
                esc(e.message())
            );
            return layout(e.status(), "Devices", Some(&nav), &body);
        }
    };
    if found.items.is_empty() {
        body.push_str("<p>No devices match.</p>");
    } else {
        body.push_str(r#"<div class="table-wrap"><table><thead><tr><th scope="col">Serial</th><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Model</th><th scope="col">Batch</th><th scope="col">Registered</th></tr></thead><tbody>"#);
        for d in found.items.iter().map(DeviceView::from) {
            let _ = write!(
                body,
                r#"<tr><td><a href="/admin/devices/{id}">{serial}</a></td><td>{name}</td><td>{status}</td><td>{model}</td><td>{batch}</td><td>{created}</td></tr>"#,
                id = esc(&d.id),
                serial = esc(&d.serial),
                name = esc(&d.name),
                status = esc(&d.status),
                model = esc(d.model.as_deref().unwrap_or("—")),
                batch = esc(d.batch.as_deref().unwrap_or("—")),
                created = time(d.created_at),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = &found.next_cursor {
        let mut link = format!("/admin/devices?after={}", url(next));
        for (k, v) in [
            ("q", &q.q),
            ("status", &q.status),
            ("model", &q.model),
            ("batch", &q.batch),
        ] {
            if let Some(v) = non_empty(v) {
                let _ = write!(link, "&{k}={}", url(v));
            }
        }
        let _ = write!(
            body,
            r#"<p><a rel="next" href="{}">Next page</a></p>"#,
            esc(&link)
        );
    }
    layout(StatusCode::OK, "Devices", Some(&nav), &body)
}

fn parse_device(raw: &str) -> Result<DeviceId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("device not found"))
}

async fn device_page(
    onboard: &web::Data<Onboard>,
    nav: &Nav<'_>,
    id: DeviceId,
    notice: Option<&str>,
) -> HttpResponse {
    let o = onboard.clone();
    let found = blocking(move || {
        let details = o.device(id)?;
        let rotation = o.device_rotation(id)?;
        let grant = o.device_grant(id)?;
        let audit = o.audit_events(
            &AuditFilter {
                device_id: Some(id),
                ..AuditFilter::default()
            },
            &PageRequest::new(PageRequest::DEFAULT_LIMIT, None).map_err(CoreError::Invalid)?,
        )?;
        Ok((details, rotation, grant, audit))
    })
    .await;
    let (details, rotation, grant, audit) = match found {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(nav)),
    };
    let d = DeviceView::from(&details.device);
    let mut body = format!("<h1>Device {}</h1>", esc(&d.serial));
    if let Some(notice) = notice {
        let _ = write!(
            body,
            r#"<p class="notice" role="status">{}</p>"#,
            esc(notice)
        );
    }
    let _ = write!(
        body,
        r#"<dl><dt>Status</dt><dd id="device-status">{}</dd><dt>Name</dt><dd>{}</dd><dt>Location</dt><dd>{}</dd><dt>Model</dt><dd>{}</dd><dt>Batch</dt><dd>{}</dd><dt>Firmware</dt><dd>{}</dd><dt>Credential</dt><dd>{}</dd><dt>Registered</dt><dd>{}</dd><dt>Last seen</dt><dd>{}</dd><dt>Configuration</dt><dd><code>{}</code></dd></dl>"#,
        esc(&d.status),
        esc(&d.name),
        esc(&d.location),
        esc(d.model.as_deref().unwrap_or("—")),
        esc(d.batch.as_deref().unwrap_or("—")),
        esc(&d.firmware_version),
        esc(&d.credential),
        time(d.created_at),
        opt_time(d.last_seen_at),
        esc(&d.config.to_string()),
    );
    body.push_str("<h2>Rotation</h2>");
    match rotation {
        Some(r) => {
            let _ = write!(
                body,
                "<p>State <strong>{}</strong>, attempts {}, queued {}, deadline {}</p>",
                esc(r.state.as_str()),
                r.attempts,
                opt_time(r.queued_at),
                opt_time(r.deadline_at)
            );
        }
        None => body.push_str("<p>Never rotated.</p>"),
    }
    body.push_str(r#"<h2>Broker grants</h2>"#);
    match grant {
        Some(g) => {
            let list = code_lines;
            let _ = write!(
                body,
                r#"<dl id="grants"><dt>Client id and user</dt><dd><code>{}</code></dd><dt>Publish</dt><dd>{}</dd><dt>Subscribe</dt><dd>{}</dd><dt>Max QoS</dt><dd>{}</dd><dt>Retain</dt><dd>{}</dd></dl>"#,
                esc(&g.client_id),
                list(&g.publish),
                list(&g.subscribe),
                g.max_qos,
                if g.retain_allowed {
                    "allowed"
                } else {
                    "not allowed"
                },
            );
        }
        None => body.push_str(
            r#"<p id="grants">None: a revoked or decommissioned device has no broker access.</p>"#,
        ),
    }
    body.push_str(r#"<h2>Certificates</h2><div class="table-wrap"><table><thead><tr><th scope="col">Serial</th><th scope="col">Status</th><th scope="col">Valid until</th><th scope="col">Revoked</th></tr></thead><tbody>"#);
    for c in details.certificates.iter().map(CertificateView::from) {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(&c.serial),
            esc(&c.status),
            time(c.not_after),
            opt_time(c.revoked_at),
            esc(c.revocation_reason.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table></div>");
    if details.device.status != DeviceStatus::Revoked
        && details.device.status != DeviceStatus::Decommissioned
    {
        let mut reasons = String::new();
        for r in RevocationReason::ALL {
            let _ = write!(reasons, "<option>{}</option>", r.as_str());
        }
        let _ = write!(
            body,
            r#"<h2>Revoke</h2><form class="inline" method="post" action="/admin/devices/{id}/revoke" data-confirm="Revoke this device? Its certificates go into the CRL.">{csrf}
<label for="reason">Reason<select id="reason" name="reason">{reasons}</select></label>
<button type="submit" class="danger">Revoke device</button></form>"#,
            id = esc(&d.id),
            csrf = csrf_field(nav.csrf),
        );
        let _ = write!(
            body,
            r#"<h2>Edit</h2><form class="inline" method="post" action="/admin/devices/{id}/edit">{csrf}
<label for="e-name">Name<input id="e-name" name="name" value="{name}"></label>
<label for="e-location">Location<input id="e-location" name="location" value="{location}"></label>
<label for="e-config">Configuration (JSON object)<textarea id="e-config" name="config" rows="3" cols="40">{config}</textarea></label>
<button type="submit">Save</button></form>
<h2>Other actions</h2><form class="inline" method="post" action="/admin/devices/{id}/rotate">{csrf}<button type="submit">Rotate its certificate</button></form>
<form class="inline" method="post" action="/admin/devices/{id}/decommission" data-confirm="Decommission this device? It is revoked and loses broker and cloud access.">{csrf}<button type="submit" class="danger">Decommission</button></form>"#,
            id = esc(&d.id),
            csrf = csrf_field(nav.csrf),
            name = esc(&d.name),
            location = esc(&d.location),
            config = esc(&d.config.to_string()),
        );
    }
    body.push_str(r#"<h2>Audit trail</h2><div class="table-wrap"><table><thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Reason</th></tr></thead><tbody>"#);
    for e in audit.items.iter().map(AuditView::from) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(e.occurred_at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.outcome),
            esc(e.reason.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table></div>");
    layout(
        StatusCode::OK,
        &format!("Device {}", d.serial),
        Some(nav),
        &body,
    )
}

async fn device(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("devices");
    match parse_device(&id) {
        Ok(id) => device_page(&onboard, &nav, id, None).await,
        Err(e) => api_error_page(&e, Some(&nav)),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    reason: Option<String>,
}

async fn revoke(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    id: web::Path<String>,
    form: web::Form<RevokeForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("devices");
    let id = match parse_device(&id) {
        Ok(id) => id,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let reason: RevocationReason = match form.reason.as_deref().map(str::parse).transpose() {
        Ok(r) => r.unwrap_or(RevocationReason::Unspecified),
        Err(e) => return api_error_page(&ApiError::from(CoreError::Invalid(e)), Some(&nav)),
    };
    let o = onboard.clone();
    let actor = signed.actor.clone();
    match blocking(move || o.revoke_device(&actor, id, reason)).await {
        Ok(_) => device_page(&onboard, &nav, id, Some("The device is revoked.")).await,
        Err(e) => api_error_page(&e, Some(&nav)),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(|| async { see_other("/admin/") }))
        .route("/", web::get().to(overview))
        .route("/devices", web::get().to(devices))
        .route("/devices/{id}", web::get().to(device))
        .route("/devices/{id}/revoke", web::post().to(revoke));
}
