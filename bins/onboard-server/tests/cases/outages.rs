//! Dependencies going away under load, against the real binary: PostgreSQL stopped
//! and started again while devices register.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::faults::{acl_devices, create_key, wait_until};
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
    let unavailable = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let url = server.url("/public/v1/register");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (phase, stop, created, unavailable, answers, url, auth) = (
                phase.clone(),
                stop.clone(),
                created.clone(),
                unavailable.clone(),
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
                    let sent = if sent == Phase::Down && answered != Phase::Down {
                        Phase::Between
                    } else {
                        sent
                    };
                    match r.as_ref().map(|r| r.status) {
                        Some(201) => {
                            created.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(503) => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
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
    pg.stop();
    *phase.lock().unwrap() = Phase::Down;
    let during = unavailable.load(Ordering::SeqCst);
    wait_until("503 answers during the outage", limit, || {
        unavailable.load(Ordering::SeqCst) >= during + 2 * CLIENTS
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
    let uses = support::sql(&url, "SELECT SUM(uses) FROM bootstrap_keys");
    assert_eq!(uses[0][0], devices.len().to_string(), "key uses = devices");

    // The broker catches up: after a reconcile the ACL lists exactly the registry.
    let (ok_run, _, err) = onboardctl(d, &env, &["reconcile"]);
    assert!(ok_run, "{err}");
    let acl = std::fs::read_to_string(d.join("data/mosquitto/acl")).unwrap();
    let ids: BTreeSet<String> = support::sql(&url, "SELECT id FROM devices")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let granted: BTreeSet<String> = acl_devices(&acl).into_keys().collect();
    assert_eq!(granted, ids, "the ACL lists exactly the registry's devices");
    drop(server);
}
