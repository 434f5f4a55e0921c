//! Schemathesis (PyPI) against the real binary's `/api/openapi.json`, with an admin
//! token: no 5xx, every status the server gives is documented, every body matches
//! its documented schema and content type, and a method a route does not have is
//! 405. Bounded examples and a fixed seed keep the run short and repeatable.

use std::process::Command;

use onboard_registry::testing::{TestBackend, TestDb};

use crate::e2e::env_for;
use crate::support::Server;

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let db = TestDb::new(TestBackend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_for(&db);
    env.push(("ONBOARD__BROKER__KIND", "none".into()));
    let server = Server::start(dir.path(), &env);
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let out = Command::new("schemathesis")
        .current_dir(dir.path())
        .args([
            "run",
            &server.url("/api/openapi.json"),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method",
            "--max-examples",
            "15",
            "--seed",
            "20261202",
            "--workers",
            "2",
            "--no-color",
        ])
        .output()
        .expect("schemathesis (run the tests through scripts/test-services.sh)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
