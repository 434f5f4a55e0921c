//! Bootstrap keys: create a batch (the keys shown once, or downloaded once as CSV),
//! list them by batch with uses and validity, activate, deactivate, delete.

use std::fmt::Write;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use onboard_core::domain::{BootstrapKeyFilter, BootstrapKeyId, ModelCode, PageRequest};
use onboard_core::{CoreError, KeyBatchRequest, Onboard};
use serde::Deserialize;

use super::html::{csrf_field, esc, layout, url, Nav};
use super::{api_error_page, require, require_post, see_other, Signed};
use crate::admin::blocking;
use crate::error::ApiError;
use crate::views::KeyView;

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[derive(Debug, Default, Deserialize)]
pub struct KeyQuery {
    batch: Option<String>,
    after: Option<String>,
}

const CREATE_FORM: &str = r#"<h2>Create a batch</h2><form class="inline" method="post" action="/admin/keys">{csrf}
<label for="k-batch">Batch<input id="k-batch" name="batch" required maxlength="64"></label>
<label for="k-count">Keys<input id="k-count" name="count" type="number" min="1" max="10000" value="1"></label>
<label for="k-uses">Uses per key<input id="k-uses" name="max_uses" type="number" min="1" value="1"></label>
<label for="k-days">Valid days<input id="k-days" name="valid_days" type="number" min="1" max="3650" value="30"></label>
<label for="k-model">Model (optional)<input id="k-model" name="model"></label>
<button type="submit" name="format" value="html">Create and show</button>
<button type="submit" name="format" value="csv">Create and download CSV</button></form>"#;

async fn list_page(
    onboard: &web::Data<Onboard>,
    signed: &Signed,
    q: KeyQuery,
    status: StatusCode,
    top: &str,
) -> HttpResponse {
    let nav = signed.nav("keys");
    let batch = q.batch.as_deref().map(str::trim).filter(|b| !b.is_empty());
    let mut body = String::from("<h1>Bootstrap keys</h1>");
    body.push_str(top);
    body.push_str(&CREATE_FORM.replace("{csrf}", &csrf_field(&signed.csrf)));
    let _ = write!(
        body,
        r#"<h2>Keys</h2><form class="filters" method="get" action="/admin/keys" role="search"><label for="f-batch">Batch<input id="f-batch" name="batch" value="{}"></label><button type="submit">Show</button></form>"#,
        esc(batch.unwrap_or(""))
    );
    let page = match PageRequest::new(
        PageRequest::DEFAULT_LIMIT,
        q.after.clone().filter(|a| !a.is_empty()),
    ) {
        Ok(p) => p,
        Err(e) => return api_error_page(&ApiError::from(CoreError::Invalid(e)), Some(&nav)),
    };
    let filter = BootstrapKeyFilter {
        batch: batch.map(str::to_owned),
        active: None,
    };
    let o = onboard.clone();
    let found = match blocking(move || o.list_keys(&filter, &page)).await {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    if found.items.is_empty() {
        body.push_str("<p>No keys.</p>");
    } else {
        body.push_str(r#"<div class="table-wrap"><table id="keys"><thead><tr><th scope="col">Prefix</th><th scope="col">Batch</th><th scope="col">Uses</th><th scope="col">Valid</th><th scope="col">Active</th><th scope="col">Actions</th></tr></thead><tbody>"#);
        for k in found.items.iter().map(KeyView::from) {
            let toggle = if k.active { "deactivate" } else { "activate" };
            let _ = write!(
                body,
                r#"<tr><td><code>{prefix}</code></td><td><a href="/admin/keys?batch={batch_q}">{batch}</a></td><td>{uses} / {max}</td><td>{from} – {to}</td><td>{active}</td><td><form class="inline" method="post" action="/admin/keys/{id}/{toggle}">{csrf}<button type="submit">{toggle_label}</button></form> <form class="inline" method="post" action="/admin/keys/{id}/delete" data-confirm="Delete this key?">{csrf}<button type="submit" class="danger">Delete</button></form></td></tr>"#,
                prefix = esc(&k.prefix),
                batch_q = esc(&url(&k.batch)),
                batch = esc(&k.batch),
                uses = k.uses,
                max = k.max_uses,
                from = time(k.not_before),
                to = time(k.expires_at),
                active = if k.active { "yes" } else { "no" },
                id = esc(&k.id),
                csrf = csrf_field(&signed.csrf),
                toggle_label = if k.active { "Deactivate" } else { "Activate" },
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = &found.next_cursor {
        let mut link = format!("/admin/keys?after={}", url(next));
        if let Some(b) = batch {
            let _ = write!(link, "&batch={}", url(b));
        }
        let _ = write!(
            body,
            r#"<p><a rel="next" href="{}">Next page</a></p>"#,
            esc(&link)
        );
    }
    layout(status, "Bootstrap keys", Some(&nav), &body)
}

async fn keys(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    q: web::Query<KeyQuery>,
) -> HttpResponse {
    match require(&req, &onboard).await {
        Ok(signed) => list_page(&onboard, &signed, q.into_inner(), StatusCode::OK, "").await,
        Err(answer) => answer,
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    batch: String,
    count: Option<String>,
    max_uses: Option<String>,
    valid_days: Option<String>,
    model: Option<String>,
    format: Option<String>,
}

fn number(field: &str, raw: &Option<String>) -> Result<Option<u32>, String> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{field} must be a whole number")),
    }
}

fn batch_request(f: &CreateForm) -> Result<KeyBatchRequest, String> {
    let model = f
        .model
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(m) = &model {
        ModelCode::parse(m).map_err(|e| e.to_string())?;
    }
    Ok(KeyBatchRequest {
        batch: f.batch.trim().to_owned(),
        count: number("count", &f.count)?.unwrap_or(1),
        max_uses: number("max_uses", &f.max_uses)?.unwrap_or(1),
        valid_days: number("valid_days", &f.valid_days)?,
        not_before: None,
        expires_at: None,
        model,
    })
}

fn csv_field(s: &str) -> String {
    // Quoted, and a leading formula character neutralised for spreadsheets.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn create(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    form: web::Form<CreateForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let error = |message: &str| format!(r#"<p class="error" role="alert">{}</p>"#, esc(message));
    let request = match batch_request(&form) {
        Ok(r) => r,
        Err(m) => {
            return list_page(
                &onboard,
                &signed,
                KeyQuery::default(),
                StatusCode::UNPROCESSABLE_ENTITY,
                &error(&m),
            )
            .await
        }
    };
    let o = onboard.clone();
    let actor = signed.actor.clone();
    let created = match blocking(move || o.create_key_batch(&actor, &request)).await {
        Ok(c) => c,
        Err(e) => {
            return list_page(
                &onboard,
                &signed,
                KeyQuery::default(),
                e.status(),
                &error(e.message()),
            )
            .await
        }
    };
    let batch = form.batch.trim().to_owned();
    if form.format.as_deref() == Some("csv") {
        let mut csv = String::from("batch,id,prefix,key,max_uses,not_before,expires_at,model\r\n");
        for c in &created {
            let _ = write!(
                csv,
                "{},{},{},{},{},{},{},{}\r\n",
                csv_field(&batch),
                c.key.id,
                c.key.prefix,
                c.secret.expose(),
                c.key.max_uses,
                c.key.not_before.to_rfc3339(),
                c.key.expires_at.to_rfc3339(),
                csv_field(
                    &c.key
                        .model
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                ),
            );
        }
        let name: String = batch
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"bootstrap-keys-{name}.csv\""),
            ))
            .body(csv);
    }
    let mut top = format!(
        r#"<section class="notice" role="status" aria-labelledby="h-new"><h2 id="h-new">Batch {} created</h2><p>Copy these keys now: they are shown only this once.</p><div class="table-wrap"><table id="new-keys"><thead><tr><th scope="col">Prefix</th><th scope="col">Key</th><th scope="col">Expires</th></tr></thead><tbody>"#,
        esc(&batch)
    );
    for c in &created {
        let _ = write!(
            top,
            r#"<tr><td><code>{}</code></td><td class="secret">{}</td><td>{}</td></tr>"#,
            esc(&c.key.prefix),
            esc(c.secret.expose()),
            time(c.key.expires_at)
        );
    }
    top.push_str("</tbody></table></div></section>");
    let q = KeyQuery {
        batch: Some(batch),
        after: None,
    };
    list_page(&onboard, &signed, q, StatusCode::CREATED, &top).await
}

async fn key_action(
    req: HttpRequest,
    onboard: web::Data<Onboard>,
    path: web::Path<(String, String)>,
    form: web::Form<super::CsrfForm>,
) -> HttpResponse {
    let signed = match require_post(&req, &onboard, &form.csrf).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav: Nav<'_> = signed.nav("keys");
    let (id, action) = path.into_inner();
    let Ok(id) = id.parse::<BootstrapKeyId>() else {
        return api_error_page(&ApiError::not_found("bootstrap key not found"), Some(&nav));
    };
    let o = onboard.clone();
    let actor = signed.actor.clone();
    let done = match action.as_str() {
        "activate" => blocking(move || o.set_key_active(&actor, id, true).map(|_| ())).await,
        "deactivate" => blocking(move || o.set_key_active(&actor, id, false).map(|_| ())).await,
        "delete" => blocking(move || o.delete_key(&actor, id)).await,
        _ => Err(ApiError::not_found(format!(
            "no route for POST {}",
            req.path()
        ))),
    };
    match done {
        Ok(()) => see_other("/admin/keys"),
        Err(e) => api_error_page(&e, Some(&nav)),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(keys))
        .route("/keys", web::post().to(create))
        .route("/keys/{id}/{action}", web::post().to(key_action));
}
