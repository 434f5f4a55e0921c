//! Hostile HTTP clients against the real binary, over raw TCP so that every byte
//! is the test's: slow clients that never finish their headers, malformed request
//! lines and headers, and path traversal in every path parameter.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use onboard_registry::testing::{TestBackend, TestDb};

use crate::e2e::env_for;
use crate::support::{self, Server};

/// Sends `request` as is and reads the answer until the server closes or 10 s
/// pass (a failure guard); the status, or 0 when nothing came back.
fn raw(server: &Server, request: &[u8]) -> (u16, String) {
    let addr = server.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").into_bytes()
}

#[test]
fn slow_clients_are_cut_off_and_others_are_served() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &env_for(&db));
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Forty connections that send a header byte now and then and never finish.
    let slow: Vec<_> = (0..40)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let head = format!("GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
                s.write_all(head.as_bytes()).unwrap();
                let mut answer = Vec::new();
                // A failure guard: 60 rounds of at least 0.7 s, far beyond the
                // server's request timeout.
                for _ in 0..60 {
                    std::thread::sleep(Duration::from_millis(500));
                    if s.write_all(b"a").is_err() {
                        return (true, answer);
                    }
                    let mut buf = [0u8; 512];
                    match s.read(&mut buf) {
                        Ok(0) => return (true, answer),
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return (true, answer),
                    }
                }
                (false, answer)
            })
        })
        .collect();

    // Meanwhile everybody else is served.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let r = support::get(&server.url("/api/health"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (i, t) in slow.into_iter().enumerate() {
        let (closed, answer) = t.join().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(closed, "slow connection {i} was never closed: {answer}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "slow connection {i} got {answer}"
        );
    }
    assert_eq!(support::get(&server.url("/api/health")).status, 200);
}

#[test]
fn malformed_requests_and_traversal_get_clear_refusals() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &env_for(&db));
    let token = std::fs::read_to_string(d.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = format!("Authorization: Bearer {token}\r\n");

    // Malformed request lines and headers: a 4xx, never a 5xx or a hang.
    let long_header = format!("X-Long: {}\r\n", "a".repeat(1024 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"HELLO\r\n\r\n".to_vec()),
        (
            "bad HTTP version",
            b"GET /api/health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "header without a colon",
            get("/api/health", "Broken header line\r\n"),
        ),
        (
            "control character in a header",
            get("/api/health", "X-Bad: a\u{1}b\r\n"),
        ),
        ("a 1 MiB header", get("/api/health", &long_header)),
        (
            "two Content-Length headers",
            b"POST /public/v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}".to_vec(),
        ),
        (
            "a negative Content-Length",
            b"POST /public/v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "a path of 20,000 characters",
            get(&format!("/public/v1/bundles/{}", "a".repeat(20_000)), ""),
        ),
    ];
    for (what, request) in cases {
        let (status, text) = raw(&server, &request);
        assert!(
            (400..500).contains(&status),
            "{what}: {status} {}",
            text.chars().take(300).collect::<String>()
        );
    }

    // Traversal and odd bytes in every path parameter: a JSON 4xx, nothing
    // outside the data directory touched.
    let evil = [
        "..%2f..%2f..%2fetc%2fpasswd",
        "..%252f..%252fetc",
        "%2e%2e%2f%2e%2e%2f",
        "a%00b",
        "%ff%fe",
        "..",
        "%2F",
    ];
    let templates = [
        ("GET", "/public/v1/bundles/{}", false),
        ("GET", "/private/v1/admin/devices/{}", true),
        ("PATCH", "/private/v1/admin/devices/{}", true),
        ("DELETE", "/private/v1/admin/devices/{}", true),
        ("POST", "/private/v1/admin/devices/{}/revoke", true),
        ("GET", "/private/v1/admin/devices/{}/provisioning", true),
        ("POST", "/private/v1/admin/devices/{}/rotate", true),
        ("GET", "/private/v1/admin/bootstrap-keys/{}", true),
        ("DELETE", "/private/v1/admin/bootstrap-keys/{}", true),
        ("POST", "/private/v1/admin/bootstrap-keys/{}/activate", true),
        ("GET", "/private/v1/admin/models/{}", true),
        ("DELETE", "/private/v1/admin/models/{}", true),
        ("GET", "/private/v1/admin/models/{}/firmware", true),
        ("PUT", "/private/v1/admin/models/{}/firmware", true),
    ];
    let mut checked = 0;
    for (method, template, needs_admin) in templates {
        for e in evil {
            let path = template.replace("{}", e);
            let auth = if needs_admin { admin.as_str() } else { "" };
            let body = if method == "GET" || method == "DELETE" {
                String::new()
            } else if method == "PUT" {
                "Content-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n\u{e9}AAA"
                    .to_owned()
            } else {
                "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".to_owned()
            };
            let request = if body.is_empty() {
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n")
            } else {
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{body}")
            };
            let (status, text) = raw(&server, request.as_bytes());
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {}",
                text.chars().take(400).collect::<String>()
            );
            let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
            let body: serde_json::Value = serde_json::from_str(json.trim())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
            assert!(body["error"].is_string(), "{method} {path}: {text}");
            checked += 1;
        }
    }
    assert_eq!(checked, 14 * 7);
    // Nothing was written outside the server's own directories.
    let mut top: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert!(
        top.iter()
            .all(|n| n == "data" || n == "server.log" || n.starts_with("ca")),
        "{top:?}"
    );
    let assets = d.join("data/assets");
    if assets.exists() {
        let n = walk(&assets);
        assert_eq!(n, 0, "no firmware was stored by a traversal");
    }
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}
