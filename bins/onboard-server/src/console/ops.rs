//! Rotation (devices per state, trigger the fleet or one device), the audit log
//! (filters by device, action, outcome, time) and a device's other actions
//! (decommission, rotate, edit name, location and configuration).

use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDateTime, Utc};
use onboard_core::domain::{AuditFilter, DeviceId, PageRequest};
use onboard_core::{CoreError, DevicePatch, Onboard};
use serde::Deserialize;

use super::html::{csrf_field, esc, layout, url};
use super::{api_error_page, require, require_post, see_other};
use crate::admin::blocking;
use crate::error::ApiError;
use crate::views::AuditView;

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

async fn rotation(req: HttpRequest, onboard: web::Data<Onboard>) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("rotation");
    let o = onboard.clone();
    let status = match blocking(move || o.rotation_status()).await {
        Ok(s) => s,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let mut body = String::from("<h1>Rotation</h1>");
    let _ = write!(
        body,
        "<p>Last scheduled run: {}</p>",
        status
            .last_scheduled_run
            .map(time)
            .unwrap_or_else(|| "never".into())
    );
    let _ = write!(
        body,
        r#"<form class="inline" method="post" action="/admin/rotation/trigger" data-confirm="Queue every certificate device for rotation?">{}<button type="submit">Rotate the whole fleet</button></form>"#,
        csrf_field(&signed.csrf)
    );
    body.push_str(r#"<div class="table-wrap"><table id="rotation"><thead><tr><th scope="col">State</th><th scope="col">Devices</th><th scope="col">Some of them</th></tr></thead><tbody>"#);
    for s in &status.states {
        let mut some = String::new();
        for d in &s.devices {
            let id = d.device_id.to_string();
            let _ = write!(
                some,
                r#"<a href="/admin/devices/{id}">{id}</a> "#,
                id = esc(&id)
            );
        }
        let _ = write!(
            body,
            r#"<tr><th scope="row">{}</th><td data-state="{}">{}</td><td>{some}</td></tr>"#,
            esc(s.state.as_str()),
            esc(s.state.as_str()),
            s.count
        );
    }
    body.push_str("</tbody></table></div>");
    layout(StatusCode::OK, "Rotation", Some(&nav), &body)
}

async fn trigger(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    form: web::Form<super::CsrfForm>,
) -> HttpResponse {
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let o = onboard.clone();
    let actor = signed.actor.clone();
    match blocking(move || o.trigger_rotation(&actor, None)).await {
        Ok(_) => see_other("/admin/rotation"),
        Err(e) => api_error_page(&e, Some(&signed.nav("rotation"))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    device: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// RFC 3339, or the `YYYY-MM-DDTHH:MM` of a `datetime-local` field (UTC).
fn instant(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .map(|t| Some(t.and_utc()))
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("{field} must be a time such as 2026-12-03T08:00 (UTC)"),
            )
        })
}

fn audit_filter(q: &AuditQuery) -> Result<AuditFilter, ApiError> {
    Ok(AuditFilter {
        device_id: given(&q.device)
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        action: given(&q.action).map(str::to_owned),
        outcome: given(&q.outcome)
            .map(str::parse)
            .transpose()
            .map_err(CoreError::Invalid)?,
        since: instant("since", given(&q.since))?,
        until: instant("until", given(&q.until))?,
    })
}

async fn audit(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    q: web::Query<AuditQuery>,
) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("audit");
    let q = q.into_inner();
    let outcome = given(&q.outcome).unwrap_or("");
    let mut options = String::from(r#"<option value="">any</option>"#);
    for o in ["success", "failure"] {
        let selected = if o == outcome { " selected" } else { "" };
        let _ = write!(options, "<option{selected}>{o}</option>");
    }
    let mut body = format!(
        r#"<h1>Audit log</h1><form class="filters" method="get" action="/admin/audit" role="search">
<label for="a-device">Device id<input id="a-device" name="device" value="{}"></label>
<label for="a-action">Action<input id="a-action" name="action" value="{}" placeholder="device.revoke"></label>
<label for="a-outcome">Outcome<select id="a-outcome" name="outcome">{options}</select></label>
<label for="a-since">Since (UTC)<input id="a-since" name="since" type="datetime-local" value="{}"></label>
<label for="a-until">Until (UTC)<input id="a-until" name="until" type="datetime-local" value="{}"></label>
<button type="submit">Filter</button></form>"#,
        esc(given(&q.device).unwrap_or("")),
        esc(given(&q.action).unwrap_or("")),
        esc(given(&q.since).unwrap_or("")),
        esc(given(&q.until).unwrap_or("")),
    );
    let found = match audit_filter(&q).and_then(|f| {
        let page = PageRequest::new(
            PageRequest::DEFAULT_LIMIT,
            given(&q.after).map(str::to_owned),
        )
        .map_err(|e| ApiError::from(CoreError::Invalid(e)))?;
        Ok((f, page))
    }) {
        Ok((filter, page)) => {
            let o = onboard.clone();
            blocking(move || o.audit_events(&filter, &page)).await
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
            return layout(e.status(), "Audit log", Some(&nav), &body);
        }
    };
    body.push_str(r#"<div class="table-wrap"><table id="audit"><thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Reason</th><th scope="col">Device</th></tr></thead><tbody>"#);
    for e in found.items.iter().map(AuditView::from) {
        let device = match (&e.device_id, &e.serial) {
            (Some(id), serial) => format!(
                r#"<a href="/admin/devices/{}">{}</a>"#,
                esc(id),
                esc(serial.as_deref().unwrap_or(id))
            ),
            (None, Some(serial)) => esc(serial),
            (None, None) => String::new(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{device}</td></tr>",
            time(e.occurred_at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.outcome),
            esc(e.reason.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table></div>");
    if let Some(next) = &found.next_cursor {
        let mut link = format!("/admin/audit?after={}", url(next));
        for (k, v) in [
            ("device", &q.device),
            ("action", &q.action),
            ("outcome", &q.outcome),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = given(v) {
                let _ = write!(link, "&{k}={}", url(v));
            }
        }
        let _ = write!(
            body,
            r#"<p><a rel="next" href="{}">Next page</a></p>"#,
            esc(&link)
        );
    }
    layout(StatusCode::OK, "Audit log", Some(&nav), &body)
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    name: Option<String>,
    location: Option<String>,
    config: Option<String>,
}

/// A device's other actions: `decommission`, `rotate`, `edit`.
async fn device_action(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    path: web::Path<(String, String)>,
    form: web::Form<EditForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("devices");
    let (raw, action) = path.into_inner();
    let Ok(id) = raw.parse::<DeviceId>() else {
        return api_error_page(&ApiError::not_found("device not found"), Some(&nav));
    };
    let o = onboard.clone();
    let actor = signed.actor.clone();
    let done = match action.as_str() {
        "decommission" => blocking(move || o.decommission_device(&actor, id).map(|_| ())).await,
        "rotate" => blocking(move || o.trigger_rotation(&actor, Some(id)).map(|_| ())).await,
        "edit" => {
            let config = match given(&form.config).map(serde_json::from_str).transpose() {
                Ok(c) => c,
                Err(e) => {
                    let e = ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!("config is not JSON: {e}"),
                    );
                    return api_error_page(&e, Some(&nav));
                }
            };
            let patch = DevicePatch {
                name: form.name.map(|s| s.trim().to_owned()),
                location: form.location.map(|s| s.trim().to_owned()),
                config,
                metadata: None,
            };
            blocking(move || o.update_device(&actor, id, &patch).map(|_| ())).await
        }
        _ => Err(ApiError::not_found(format!(
            "no route for POST {}",
            req.path()
        ))),
    };
    match done {
        Ok(()) => see_other(&format!("/admin/devices/{id}")),
        Err(e) => api_error_page(&e, Some(&nav)),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/rotation", web::get().to(rotation))
        .route("/rotation/trigger", web::post().to(trigger))
        .route("/audit", web::get().to(audit))
        .route("/devices/{id}/{action}", web::post().to(device_action));
}
