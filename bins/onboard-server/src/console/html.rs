//! HTML building: every value goes through [`esc`]; pages share [`layout`].

use std::fmt::Write;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes a query-string component.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The signed-in operator, for the page header.
#[derive(Debug)]
pub struct Nav<'a> {
    pub token_name: &'a str,
    pub csrf: &'a str,
    pub current: &'a str,
}

const PAGES: [(&str, &str, &str); 6] = [
    ("overview", "/admin/", "Overview"),
    ("devices", "/admin/devices", "Devices"),
    ("keys", "/admin/keys", "Bootstrap keys"),
    ("models", "/admin/models", "Models"),
    ("rotation", "/admin/rotation", "Rotation"),
    ("audit", "/admin/audit", "Audit log"),
];

/// Topics (or any list) as `<code>` lines.
pub fn code_lines(items: &[String]) -> String {
    items
        .iter()
        .map(|t| format!("<code>{}</code>", esc(t)))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// A hidden CSRF field for a state-changing form.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

pub fn layout(status: StatusCode, title: &str, nav: Option<&Nav<'_>>, body: &str) -> HttpResponse {
    let mut head = String::new();
    if let Some(nav) = nav {
        head.push_str(r#"<header><span class="brand">Onboard</span><nav aria-label="Console">"#);
        for (key, href, label) in PAGES {
            let current = if key == nav.current {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(head, r#"<a href="{href}"{current}>{label}</a>"#);
        }
        let _ = write!(
            head,
            r#"</nav><form method="post" action="/admin/sign-out">{}<span class="who">{} </span><button type="submit">Sign out</button></form></header>"#,
            csrf_field(nav.csrf),
            esc(nav.token_name)
        );
    }
    let html = format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Onboard console</title><link rel="stylesheet" href="/admin/assets/console.css"><script src="/admin/assets/console.js" defer></script></head>
<body><a class="skip" href="#main">Skip to content</a>{head}<main id="main">{body}</main></body></html>"##,
        esc(title)
    );
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(html)
}

/// A page with one error message (the API's message text).
pub fn error_page(status: StatusCode, message: &str, nav: Option<&Nav<'_>>) -> HttpResponse {
    let body = format!(
        r#"<h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/admin/">Back to the overview</a></p>"#,
        esc(status.canonical_reason().unwrap_or("Error")),
        esc(message)
    );
    layout(status, "Error", nav, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn url_encodes_reserved_characters() {
        assert_eq!(url("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
