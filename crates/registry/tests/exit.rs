//! A process that uses PostgreSQL over TLS exits cleanly while other threads are
//! still talking to the database.
//!
//! libpq (under diesel) speaks TLS through OpenSSL. If libpq is the first to
//! initialise OpenSSL, OpenSSL registers a clean-up that runs at process exit and
//! frees its tables while other threads (the pool's, a server's workers) may still
//! be inside a TLS read or write: the process then dies of SIGSEGV after its work
//! is done, as a CI run once did after a test had passed. `Database::open`
//! initialises OpenSSL first, without that clean-up. And libpq's default
//! `gssencmode=prefer` looks up Kerberos credentials on each connect; a thread in
//! that lookup during exit aborts in libkrb5's clean-up, so Onboard's connections
//! (`pg_connect`) disable it unless the URL asks for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use diesel::prelude::*;
use onboard_registry::testing::pg_admin_url;
use onboard_registry::{Database, PoolOptions};

const CHILD_URL: &str = "ONBOARD_EXIT_TEST_URL";

/// Whether the test server offers TLS (`ssl = on`): then the child requires it.
fn server_has_tls(admin_url: &str) -> bool {
    let mut conn = onboard_registry::pg_connect(admin_url).expect("postgres for tests");
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        ssl: String,
    }
    let rows: Vec<Setting> = diesel::sql_query("SHOW ssl")
        .load(&mut conn)
        .expect("show ssl");
    rows.first().is_some_and(|r| r.ssl == "on")
}

fn with_sslmode(url: &str, mode: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode={mode}")
}

#[test]
fn a_process_exits_cleanly_while_threads_use_the_database_over_tls() {
    let admin = pg_admin_url();
    let tls = server_has_tls(&admin);
    if !tls {
        eprintln!("the test server has no TLS: the child connects without it");
    }
    let url = with_sslmode(&admin, if tls { "require" } else { "prefer" });
    let exe = std::env::current_exe().unwrap();
    let runs = 20;
    for run in 0..runs {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "child_exits_while_its_threads_query",
                "--ignored",
            ])
            .args(["--test-threads", "1", "--nocapture"])
            .env(CHILD_URL, &url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run} of {runs}: the child ended with {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran (and was not filtered out).
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}

/// Run by the test above as a process of its own: opens the pool (which must
/// initialise OpenSSL before libpq does), starts threads that query over TLS in a
/// loop, and returns while they are still at it, so the process exits under them.
#[test]
#[ignore = "the child process of a_process_exits_cleanly_while_threads_use_the_database_over_tls"]
fn child_exits_while_its_threads_query() {
    let url = std::env::var(CHILD_URL).expect("run by the parent test only");
    let db = Database::open(
        &url,
        &PoolOptions {
            max_connections: 8,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    db.check(Duration::from_secs(10)).unwrap();
    for _ in 0..6 {
        let (db, url) = (db.clone(), url.clone());
        std::thread::spawn(move || loop {
            // Pooled connections, and new ones with their TLS handshakes.
            let _ = db.check(Duration::from_secs(10));
            if let Ok(mut c) = onboard_registry::pg_connect(&url) {
                let _ = diesel::sql_query("SELECT 1").execute(&mut c);
            }
        });
    }
    std::thread::sleep(Duration::from_millis(150));
}
