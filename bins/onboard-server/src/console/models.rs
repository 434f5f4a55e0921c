//! Device models: topic templates, default configuration and the current firmware.

use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use onboard_core::Onboard;

use super::html::{esc, layout};
use super::{api_error_page, require};
use crate::admin::blocking;

async fn models(req: HttpRequest, onboard: web::Data<Onboard>) -> HttpResponse {
    let signed = match require(&req, &onboard).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let nav = signed.nav("models");
    let o = onboard.clone();
    let found = blocking(move || {
        let mut out = Vec::new();
        for m in o.models()? {
            let firmware = o.firmware_info(m.code.as_str())?;
            out.push((m, firmware));
        }
        Ok(out)
    })
    .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&nav)),
    };
    let mut body = String::from("<h1>Device models</h1>");
    if found.is_empty() {
        body.push_str(
            "<p>No models yet (<code>onboardctl models create</code> or the admin API).</p>",
        );
    }
    for (m, firmware) in &found {
        let list = |topics: &[String]| {
            topics
                .iter()
                .map(|t| format!("<code>{}</code>", esc(t)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let firmware = match firmware {
            Some(f) => format!(
                "{} ({} bytes, SHA-256 <code>{}</code>, uploaded {})",
                esc(&f.version),
                f.size,
                esc(&f.sha256.to_string()),
                f.uploaded_at.format("%Y-%m-%d %H:%M UTC")
            ),
            None => "none uploaded".into(),
        };
        let _ = write!(
            body,
            r#"<section class="card model" id="model-{code}" aria-labelledby="h-{code}"><h2 id="h-{code}">{code} · {name}</h2><dl>
<dt>Description</dt><dd>{description}</dd><dt>Publish</dt><dd>{publish}</dd><dt>Subscribe</dt><dd>{subscribe}</dd>
<dt>Max QoS</dt><dd>{qos}</dd><dt>Retain</dt><dd>{retain}</dd><dt>Credential</dt><dd>{credential}</dd>
<dt>Default configuration</dt><dd><code>{config}</code></dd><dt>Firmware</dt><dd class="firmware">{firmware}</dd></dl></section>"#,
            code = esc(m.code.as_str()),
            name = esc(&m.name),
            description = esc(&m.description),
            publish = list(&m.publish_topics),
            subscribe = list(&m.subscribe_topics),
            qos = m.max_qos,
            retain = if m.retain_allowed {
                "allowed"
            } else {
                "not allowed"
            },
            credential = esc(&m.credential.to_string()),
            config = esc(&m.config.to_string()),
        );
    }
    layout(StatusCode::OK, "Device models", Some(&nav), &body)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(models));
}
