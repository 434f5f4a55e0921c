//! Dependencies going away under load, against the real binary: PostgreSQL stopped
//! and started again while devices register.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::faults::{acl_access, create_key, wait_until};
use crate::support::{self, onboardctl, try_get, try_post_json, PgCluster, Server};

/// When a request was sent, relative to the outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Before,
    /// Sent after PostgreSQL had stopped and answered before it was started.
    Down,
    /// Sent after readiness came back.
    Recovered,
    /// In between: the database was coming back, readiness not yet seen (or the
    /// exchange began while it was down and ended after).
    Between,
}

struct Answer {
    serial: String,
    phase: Phase,
    /// None: the exchange did not complete.
    status: Option<u16>,
    body: String,
}

const CLIENTS: usize = 4;

#[test]
fn postgres_outage_under_load_fails_fast_and_recovers_without_a_restart() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = vec![
        ("ONBOARD__DATABASE__URL", pg.url()),
        ("ONBOARD__DATABASE__CONNECT_TIMEOUT_SECONDS", "1".to_owned()),
        ("ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE", "0".to_owned()),
        ("ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR", "0".to_owned()),
        ("ONBOARD__BROKER__RECONCILE_SECONDS", "1".to_owned()),
    ];
    let server = Server::start(d, &env);
    let key = create_key(d, &env, "outage", 100_000);
    let auth = format!("Bearer {}", key.secret);

    let phase = Arc::new(Mutex::new(Phase::Before));
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let url = server.url("/public/v1/register");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (phase, stop, created, answers, url, auth) = (
                phase.clone(),
                stop.clone(),
                created.clone(),
                answers.clone(),
                url.clone(),
                auth.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let serial = format!("SN-OUT-{c}-{n}");
                    let sent = *phase.lock().unwrap();
                    let r = try_post_json(
                        &url,
                        &[("Authorization", &auth)],
                        &json!({"serial": serial}),
                    );
                    // Down only when the whole exchange happened while the
                    // database was down (a request may wait for a connection
                    // through `connect_timeout_seconds` and see it come back).
                    let answered = *phase.lock().unwrap();
                    // Likewise Recovered: the next outage (heavy runs) may
                    // begin while a request sent after recovery is in flight.
                    let sent = if matches!(sent, Phase::Down | Phase::Recovered) && answered != sent
                    {
                        Phase::Between
                    } else {
                        sent
                    };
                    if r.as_ref().is_some_and(|r| r.status == 201) {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    answers.lock().unwrap().push(Answer {
                        serial,
                        phase: sent,
                        status: r.as_ref().map(|r| r.status),
                        body: r.map(|r| r.body).unwrap_or_default(),
                    });
                }
            })
        })
        .collect();
    let limit = Duration::from_secs(120);
    let ready =
        |code: u16| try_get(&server.url("/api/health/ready")).is_some_and(|r| r.status == code);

    wait_until("registrations before the outage", limit, || {
        created.load(Ordering::SeqCst) >= 20
    });
    // One outage, or three in a row with `ONBOARD_TEST_HEAVY=1`.
    let outages = if support::heavy() { 3 } else { 1 };
    for _ in 0..outages {
        *phase.lock().unwrap() = Phase::Before;
        pg.stop();
        *phase.lock().unwrap() = Phase::Down;
        // Counted by the phase they were sent in: a request in flight when the
        // database stopped may be answered 503 too, but it is no Down answer.
        let down_answers = || {
            answers
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.phase == Phase::Down && a.status == Some(503))
                .count()
        };
        let during = down_answers();
        wait_until("503 answers during the outage", limit, || {
            down_answers() >= during + 2 * CLIENTS
        });
        assert!(ready(503), "readiness follows the database");
        *phase.lock().unwrap() = Phase::Between;
        pg.resume();
        wait_until("readiness after the database is back", limit, || ready(200));
        *phase.lock().unwrap() = Phase::Recovered;
        let after = created.load(Ordering::SeqCst);
        wait_until("registrations after the outage", limit, || {
            created.load(Ordering::SeqCst) >= after + 20
        });
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let mut ok = BTreeSet::new();
    for a in answers.iter() {
        let status = a.status.unwrap_or(0);
        match a.phase {
            // Sent while the database was down: a clear 503, never a hang into
            // another error, never a success.
            Phase::Down => {
                assert_eq!(
                    status, 503,
                    "{} sent during the outage: {}",
                    a.serial, a.body
                );
                let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                assert!(body["error"].is_string(), "our JSON body: {}", a.body);
            }
            // After readiness came back: nothing but successes.
            Phase::Recovered => {
                assert_eq!(status, 201, "{} after recovery: {}", a.serial, a.body);
            }
            // In flight when the database went or came: a success or a 503.
            Phase::Before | Phase::Between => {
                assert!(
                    status == 201 || status == 503,
                    "{} ({:?}): {status} {}",
                    a.serial,
                    a.phase,
                    a.body
                );
            }
        }
        if status == 201 {
            ok.insert(a.serial.clone());
        }
    }
    let attempted: BTreeSet<String> = answers.iter().map(|a| a.serial.clone()).collect();
    let down = answers.iter().filter(|a| a.phase == Phase::Down).count();
    assert!(down >= 2 * CLIENTS, "{down} requests during the outage");
    eprintln!(
        "outage: {} answered 201, {down} sent and answered while the database was down (all 503), {} requests in all",
        ok.len(),
        answers.len()
    );

    // Nothing acknowledged is lost and nothing is invented: every 201 is a device
    // with one active certificate; every device is one the clients asked for (an
    // answer lost with the connection may still have committed); the key's uses
    // count the devices.
    let url = pg.url();
    let devices: BTreeSet<String> = support::sql(&url, "SELECT serial FROM devices")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let missing: Vec<_> = ok.difference(&devices).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let invented: Vec<_> = devices.difference(&attempted).collect();
    assert!(invented.is_empty(), "never asked for: {invented:?}");
    let single = support::sql(
        &url,
        "SELECT d.serial FROM devices d WHERE (SELECT COUNT(*) FROM certificates c \
         WHERE c.device_id = d.id AND c.revoked_at IS NULL) <> 1",
    );
    assert!(
        single.is_empty(),
        "devices without exactly one active certificate: {single:?}"
    );
    let orphans = support::sql(
        &url,
        "SELECT COUNT(*) FROM certificates c WHERE NOT EXISTS \
         (SELECT 1 FROM devices d WHERE d.id = c.device_id)",
    );
    assert_eq!(orphans[0][0], "0");
    let uses = support::sql(&url, "SELECT SUM(uses) FROM bootstrap_key_uses");
    assert_eq!(uses[0][0], devices.len().to_string(), "key uses = devices");

    // The broker catches up: after a reconcile the ACL lists exactly the registry.
    let (ok_run, _, err) = onboardctl(d, &env, &["reconcile"]);
    assert!(ok_run, "{err}");
    let acl = std::fs::read_to_string(d.join("data/mosquitto/acl")).unwrap();
    let ids: BTreeSet<String> = support::sql(&url, "SELECT id FROM devices")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        acl_access(&acl, &ids),
        ids,
        "the ACL gives exactly the registry's devices access"
    );
    drop(server);
}

/// A small tmpfs mounted over a test's directory; unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (make test runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_owned())
    }

    fn remount(&self, mode: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system under `dir` with one file, until the disk says no.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Smaller writes take the last blocks too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn sqlite_a_full_or_read_only_disk_gives_clear_errors_and_keeps_the_data_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = SmallDisk::mount(&d.join("data"), "16m");
    let env = vec![
        ("ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE", "0".to_owned()),
        ("ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR", "0".to_owned()),
    ];
    let server = Server::start(d, &env);
    let key = create_key(d, &env, "disk", 1000);
    let auth = format!("Bearer {}", key.secret);
    let register = |serial: &str| {
        try_post_json(
            &server.url("/public/v1/register"),
            &[("Authorization", &auth)],
            &json!({"serial": serial}),
        )
        .expect("an answer")
    };
    let db = format!("sqlite://{}", d.join("data/onboard.db").display());
    let count =
        |table: &str| support::sql(&db, &format!("SELECT COUNT(*) FROM {table}"))[0][0].clone();
    assert_eq!(register("SN-DISK-1").status, 201);

    // Full: a clear 503, nothing half-written, and the same request works once
    // there is room again.
    let acl = std::fs::read_to_string(d.join("data/mosquitto/acl")).unwrap();
    let filler = fill(&d.join("data"));
    let before = (
        count("devices"),
        count("certificates"),
        count("audit_events"),
    );
    let mut refused = 0;
    for n in 0..5 {
        let r = register(&format!("SN-DISK-FULL-{n}"));
        assert_eq!(r.status, 503, "{}", r.body);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "unavailable", "{}", r.body);
        refused += 1;
    }
    assert_eq!(refused, 5);
    std::fs::remove_file(&filler).unwrap();
    let integrity = support::sql(&db, "PRAGMA integrity_check");
    assert_eq!(integrity[0][0], "ok");
    assert_eq!(
        (count("devices"), count("certificates")),
        (before.0.clone(), before.1.clone()),
        "no device or certificate from the refused requests"
    );
    assert!(
        server.log().contains("storage: database or disk is full"),
        "the log says why: {}",
        server.log()
    );
    let acl_after = std::fs::read_to_string(d.join("data/mosquitto/acl")).unwrap();
    assert!(
        acl_after.starts_with(acl.lines().next().unwrap_or("")),
        "the ACL file is whole"
    );
    let r = register("SN-DISK-FULL-0");
    assert_eq!(r.status, 201, "{}", r.body);

    // A read-only data directory: the server does not start, and says why.
    drop(server);
    disk.remount("ro");
    let (status, out) = support::run_to_exit(d, &env);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("is not writable") && out.contains("Read-only file system"),
        "{out}"
    );
    disk.remount("rw");
    let server = Server::start(d, &env);
    let r = try_post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &auth)],
        &json!({"serial": "SN-DISK-AFTER"}),
    )
    .expect("an answer");
    assert_eq!(r.status, 201, "{}", r.body);
    let uses = support::sql(&db, "SELECT SUM(uses) FROM bootstrap_key_uses");
    assert_eq!(uses[0][0], count("devices"), "key uses = devices");
    drop(server);
}
