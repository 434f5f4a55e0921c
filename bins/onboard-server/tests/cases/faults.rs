//! Faults against the real binaries: SIGKILL under registration load, proof of
//! possession for a registration again, and two servers sharing one PostgreSQL
//! database while revoking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::e2e::env_for;
use crate::support::{self, onboardctl, openssl, p256_csr, sql, try_post_json, Rng, Server};

/// A bootstrap key as `onboardctl keys create` prints it.
pub(crate) struct Key {
    pub(crate) secret: String,
    pub(crate) id: String,
}

pub(crate) fn create_key(
    dir: &Path,
    env: &[(&'static str, String)],
    batch: &str,
    max_uses: u32,
) -> Key {
    let max = max_uses.to_string();
    let (ok, stdout, stderr) = onboardctl(
        dir,
        env,
        &[
            "--output",
            "json",
            "keys",
            "create",
            "--batch",
            batch,
            "--max-uses",
            &max,
        ],
    );
    assert!(ok, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let key = &created["keys"][0];
    Key {
        secret: key["key"].as_str().unwrap().to_owned(),
        id: key["id"].as_str().unwrap().to_owned(),
    }
}

/// `uses` of every key of `batch`, by key id, as `onboardctl keys list` reports.
fn key_uses(dir: &Path, env: &[(&'static str, String)], batch: &str) -> BTreeMap<String, u64> {
    let (ok, stdout, stderr) = onboardctl(
        dir,
        env,
        &["--output", "json", "keys", "list", "--batch", batch],
    );
    assert!(ok, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                k["uses"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn register_body(serial: &str, csr: Option<&str>) -> serde_json::Value {
    match csr {
        Some(csr) => json!({"serial": serial, "csr": csr}),
        None => json!({"serial": serial}),
    }
}

/// Polls `done` until it holds; panics with `what` after `limit` (a failure guard,
/// not a timing assertion).
pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        sleep(Duration::from_millis(20));
    }
}

/// The devices of Mosquitto's ACL file as Onboard writes it (`# device ID` then
/// `user CLIENT_ID`; see crates/broker/src/acl.rs), by device id with its user.
pub(crate) fn acl_devices(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(id) = line.strip_prefix("# device ") {
            let user = lines
                .next()
                .and_then(|l| l.strip_prefix("user "))
                .unwrap_or_else(|| panic!("a device comment without its user line: {text}"));
            assert!(
                out.insert(id.to_owned(), user.to_owned()).is_none(),
                "device {id} listed twice: {text}"
            );
        }
    }
    out
}

/// The devices of `registry` (device ids) that the ACL file gives broker
/// access: with the pattern lines (pattern mode, the default) every device not
/// shut out, and those with a block; without them, those with a block.
pub(crate) fn acl_access(text: &str, registry: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = acl_devices(text).into_keys().collect();
    if text.contains(PATTERN) {
        let shut_out: BTreeSet<&str> = text
            .split("\n# shut out\nuser ")
            .skip(1)
            .filter_map(|rest| rest.strip_suffix('\n').unwrap_or(rest).split_once('\n'))
            .filter(|(_, lines)| lines.starts_with("topic deny #"))
            .map(|(user, _)| user)
            .collect();
        out.extend(
            registry
                .iter()
                .filter(|id| !shut_out.contains(id.as_str()))
                .cloned(),
        );
    }
    out
}

// ---- 1. SIGKILL under load ------------------------------------------------------

/// The ACL file's pattern line for every device's own topics (pattern mode).
const PATTERN: &str = "\npattern readwrite devices/%u/#\n";

const CLIENTS: usize = 4;

/// Devices registered under the kills: 300, or 1,000 with `ONBOARD_TEST_HEAVY=1`.
fn devices() -> usize {
    if support::heavy() {
        1_000
    } else {
        300
    }
}

/// Kills per run: 3, or 10 with `ONBOARD_TEST_HEAVY=1`.
fn kills_per_run() -> usize {
    if support::heavy() {
        10
    } else {
        3
    }
}

/// The server, as the clients see it: its address and how many times it started.
struct Current {
    base: String,
    generation: usize,
}

/// With `patterns` (the default, `broker.acl_patterns`) the devices have the
/// default topics, which the ACL's pattern lines give them: the file names none
/// of them. Without, each has its own block, and the file must list exactly the
/// committed devices.
fn kill9_under_registration_load_converges(backend: TestBackend, patterns: bool) {
    let (device_count, kill_count) = (devices(), kills_per_run());
    let mut rng = Rng::seeded(&format!("kill9 {backend:?}"));
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_for(&db);
    env.push(("ONBOARD__BROKER__RECONCILE_SECONDS", "1".into()));
    env.push(("ONBOARD__BROKER__ACL_PATTERNS", patterns.to_string()));
    let mut server = Server::start(dir.path(), &env);
    let key = create_key(dir.path(), &env, "faults", 100_000);
    let auth = format!("Bearer {}", key.secret);

    // Every device's own key pair, up front.
    let csr_dir = dir.path().join("csrs");
    std::fs::create_dir(&csr_dir).unwrap();
    let csrs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let csr_dir = &csr_dir;
                s.spawn(move || {
                    (0..device_count)
                        .filter(|i| i % 2 == t)
                        .map(|i| (i, p256_csr(csr_dir, &format!("d{i:03}"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.into_iter().map(|(_, c)| c).collect()
    });
    let serial = |i: usize| format!("SN-K{i:04}");

    let current = RwLock::new(Current {
        base: server.base.clone(),
        generation: 0,
    });
    let next = AtomicUsize::new(0);
    let created = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    // Serial -> the certificate serial of its 201.
    let answered: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    // Serials whose first request got no answer (answered later by a retry).
    let lost: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let unexpected: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut kills = 0;
    let mut pending_at_kills = 0;
    let acl_file = dir.path().join("data/mosquitto/acl");

    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            let (current, next, created, finished) = (&current, &next, &created, &finished);
            let (answered, lost, unexpected, csrs, auth) =
                (&answered, &lost, &unexpected, &csrs, &auth);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= device_count {
                        break;
                    }
                    let body = register_body(&serial(i), Some(&csrs[i]));
                    // A request cut off by a kill is sent again, same serial and
                    // CSR, once the server is back: a lost answer, retried.
                    for attempt in 0.. {
                        assert!(attempt < 10, "{}: no answer after 10 starts", serial(i));
                        let (url, generation) = {
                            let c = current.read().unwrap();
                            (format!("{}/public/v1/register", c.base), c.generation)
                        };
                        match try_post_json(&url, &[("Authorization", auth)], &body) {
                            Some(r) if r.status == 201 => {
                                let v = r.json();
                                assert_eq!(v["serial"], serial(i), "{}", r.body);
                                let cert = v["certificate_serial"].as_str().unwrap().to_owned();
                                answered.lock().unwrap().insert(serial(i), cert);
                                created.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Some(r) => {
                                unexpected.lock().unwrap().push(format!(
                                    "{}: {} {}",
                                    serial(i),
                                    r.status,
                                    r.body
                                ));
                                break;
                            }
                            None => {
                                lost.lock().unwrap().insert(serial(i));
                                wait_until(
                                    "the server to be restarted",
                                    Duration::from_secs(120),
                                    || current.read().unwrap().generation > generation,
                                );
                            }
                        }
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }

        // The killer: SIGKILL after a random number of registrations since the
        // last start and a random extra delay, then start again on the same
        // database and data directory.
        for generation in 1..=kill_count {
            let target = created.load(Ordering::SeqCst) + rng.range(20, 60) as usize;
            wait_until(
                "registrations to progress",
                Duration::from_secs(120),
                || {
                    created.load(Ordering::SeqCst) >= target
                        || finished.load(Ordering::SeqCst) == CLIENTS
                },
            );
            if finished.load(Ordering::SeqCst) == CLIENTS {
                break;
            }
            sleep(Duration::from_millis(rng.range(0, 40)));
            let status = server.kill();
            assert!(!status.success(), "killed: {status}");
            kills += 1;
            // With the server dead the database holds still: what it committed,
            // and what it had not applied yet.
            let committed: BTreeSet<String> = sql(&db.url, "SELECT id FROM devices")
                .into_iter()
                .map(|r| r[0].clone())
                .collect();
            let pending = sql(&db.url, "SELECT count(*) FROM pending_effects");
            pending_at_kills += pending[0][0].parse::<usize>().unwrap();
            server = Server::start(dir.path(), &env);
            // The restarted server brings the broker in line with the registry.
            wait_until(
                "the ACL to list every device committed before the kill",
                Duration::from_secs(60),
                || {
                    let acl = std::fs::read_to_string(&acl_file).unwrap_or_default();
                    if patterns {
                        return acl.contains(PATTERN);
                    }
                    let listed = acl_devices(&acl);
                    committed.iter().all(|id| listed.contains_key(id))
                },
            );
            *current.write().unwrap() = Current {
                base: server.base.clone(),
                generation,
            };
        }
    });
    let unexpected = unexpected.into_inner().unwrap();
    assert!(
        unexpected.is_empty(),
        "answers other than 201: {unexpected:#?}"
    );
    assert_eq!(kills, kill_count, "the load ended before every kill");
    let answered = answered.into_inner().unwrap();
    assert_eq!(answered.len(), device_count, "every device got its answer");
    let lost = lost.into_inner().unwrap();
    let retried = sql(
        &db.url,
        "SELECT count(*) FROM audit_events WHERE action = 'device.register' \
         AND outcome = 'success' AND details LIKE '%\"retry\":true%'",
    );
    eprintln!(
        "{backend:?}: {} registrations, {} answered only on a retry after a kill \
         ({} of them committed before it), {} effects left pending by the kills",
        answered.len(),
        lost.len(),
        retried[0][0],
        pending_at_kills
    );

    // Once more from a kill, then one reconciler pass by the CLI.
    server.kill();
    let server = Server::start(dir.path(), &env);
    let (ok, stdout, stderr) = onboardctl(dir.path(), &env, &["reconcile"]);
    assert!(ok, "{stdout}{stderr}");
    wait_until("no pending effects", Duration::from_secs(60), || {
        sql(&db.url, "SELECT count(*) FROM pending_effects") == [["0"]]
    });

    // Every answer stands: the device with that certificate, active, audited.
    let certs: BTreeMap<String, (String, String)> = sql(
        &db.url,
        "SELECT d.serial, c.serial, c.status FROM devices d JOIN certificates c ON c.device_id = d.id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
    .collect();
    let audited: BTreeSet<String> = sql(
        &db.url,
        "SELECT serial FROM audit_events WHERE action = 'device.register' AND outcome = 'success'",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    for (serial, cert) in &answered {
        assert_eq!(
            certs.get(serial),
            Some(&(cert.clone(), "active".to_owned())),
            "{serial}"
        );
        assert!(
            audited.contains(serial),
            "{serial}: no device.register success"
        );
    }
    // Every device has exactly one certificate, active; no certificate without
    // its device.
    let per_device = sql(
        &db.url,
        "SELECT d.id, d.serial, d.status, \
         (SELECT count(*) FROM certificates c WHERE c.device_id = d.id), \
         (SELECT count(*) FROM certificates c WHERE c.device_id = d.id AND c.status = 'active') \
         FROM devices d",
    );
    assert_eq!(per_device.len(), device_count, "{per_device:?}");
    for row in &per_device {
        assert_eq!(row[2], "registered", "{row:?}");
        assert_eq!((row[3].as_str(), row[4].as_str()), ("1", "1"), "{row:?}");
    }
    assert_eq!(
        sql(
            &db.url,
            "SELECT count(*) FROM certificates WHERE device_id NOT IN (SELECT id FROM devices)"
        ),
        [["0"]]
    );
    // The broker's ACL lists exactly the devices, each as its own user, or
    // none of them and the patterns that give each its topics.
    let acl = std::fs::read_to_string(&acl_file).unwrap();
    let in_acl = acl_devices(&acl);
    let devices: BTreeSet<&String> = per_device.iter().map(|r| &r[0]).collect();
    if patterns {
        assert!(acl.contains(PATTERN) && in_acl.is_empty(), "{acl}");
    } else {
        assert_eq!(
            in_acl.keys().collect::<BTreeSet<_>>(),
            devices,
            "ACL devices differ from the registry"
        );
    }
    for (id, user) in &in_acl {
        assert_eq!(id, user);
    }
    let crl = std::fs::read_to_string(dir.path().join("data/mosquitto/crl.pem")).unwrap();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    // Each key's uses are its devices, no more and no less.
    let uses: BTreeMap<String, String> = sql(
        &db.url,
        "SELECT key_id, SUM(uses) FROM bootstrap_key_uses GROUP BY key_id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    let owned: BTreeMap<String, String> = sql(
        &db.url,
        "SELECT bootstrap_key_id, count(*) FROM devices GROUP BY bootstrap_key_id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(uses, owned);
    assert_eq!(
        uses.get(&key.id).map(String::as_str),
        Some(device_count.to_string().as_str())
    );
    drop(server);
}

#[test]
fn sqlite_kill9_under_registration_load_converges() {
    kill9_under_registration_load_converges(TestBackend::Sqlite, false);
}

#[test]
fn postgres_kill9_under_registration_load_converges() {
    kill9_under_registration_load_converges(TestBackend::Postgres, true);
}

// ---- 2. proof of possession -------------------------------------------------------

fn a_registration_again_needs_proof_of_possession(backend: TestBackend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&db);
    let server = Server::start(dir.path(), &env);
    let own = create_key(dir.path(), &env, "pop", 1);
    let shared = create_key(dir.path(), &env, "pop", 5);
    let device_csr = p256_csr(dir.path(), "device");
    let thief_csr = p256_csr(dir.path(), "thief");
    let url = server.url("/public/v1/register");
    let bearer = |k: &Key| format!("Bearer {}", k.secret);

    let first = try_post_json(
        &url,
        &[("Authorization", &bearer(&own))],
        &register_body("SN-POP-1", Some(&device_csr)),
    )
    .unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();

    // The same request again (its answer was lost): the same certificate, no use.
    let again = try_post_json(
        &url,
        &[("Authorization", &bearer(&own))],
        &register_body("SN-POP-1", Some(&device_csr)),
    )
    .unwrap();
    assert_eq!(again.status, 201, "{}", again.body);
    let again = again.json();
    for field in ["device_id", "certificate_serial", "certificate_pem"] {
        assert_eq!(first[field], again[field], "{field}");
    }
    let uses = key_uses(dir.path(), &env, "pop");
    assert_eq!((uses[&own.id], uses[&shared.id]), (1, 0));

    // Another key pair for that serial, with the batch's other key or the spent
    // one, or no CSR with the shared key: a possible takeover.
    for (key, csr) in [
        (&shared, Some(thief_csr.as_str())),
        (&own, Some(thief_csr.as_str())),
        (&shared, None),
    ] {
        let r = try_post_json(
            &url,
            &[("Authorization", &bearer(key))],
            &register_body("SN-POP-1", csr),
        )
        .unwrap();
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.json()["error"], "serial_taken", "{}", r.body);
    }
    let uses = key_uses(dir.path(), &env, "pop");
    assert_eq!((uses[&own.id], uses[&shared.id]), (1, 0), "nothing spent");
    assert_eq!(
        sql(
            &db.url,
            "SELECT count(*) FROM audit_events WHERE action = 'device.register' \
             AND outcome = 'failure' AND reason = 'possible_takeover' AND serial = 'SN-POP-1'"
        ),
        [["3"]]
    );
    let device_id = first["device_id"].as_str().unwrap();
    assert_eq!(
        sql(
            &db.url,
            &format!("SELECT serial, status FROM certificates WHERE device_id = '{device_id}'")
        ),
        [[first["certificate_serial"].as_str().unwrap(), "active"]]
    );

    // Without a CSR, the single-use key spent on that very serial registers it
    // again before it activates: a new certificate, the old one superseded.
    let single = create_key(dir.path(), &env, "pop-own", 1);
    let mut issued = Vec::new();
    for _ in 0..2 {
        let r = try_post_json(
            &url,
            &[("Authorization", &bearer(&single))],
            &register_body("SN-POP-2", None),
        )
        .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        issued.push(r.json()["certificate_serial"].as_str().unwrap().to_owned());
    }
    assert_ne!(issued[0], issued[1]);
    assert_eq!(key_uses(dir.path(), &env, "pop-own")[&single.id], 1);
    assert_eq!(
        sql(
            &db.url,
            "SELECT c.serial, c.status, c.revocation_reason FROM certificates c \
             JOIN devices d ON d.id = c.device_id WHERE d.serial = 'SN-POP-2' ORDER BY c.status DESC"
        ),
        [
            [issued[0].as_str(), "revoked", "superseded"],
            [issued[1].as_str(), "active", ""]
        ]
    );

    // The victim's certificate still verifies, against the published CRL too.
    std::fs::write(
        dir.path().join("device.crt"),
        first["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let chain = support::get(&server.url("/public/v1/ca"));
    assert_eq!(chain.status, 200);
    std::fs::write(dir.path().join("chain.pem"), &chain.body).unwrap();
    let crl = support::get(&server.url("/public/v1/crl"));
    assert_eq!(crl.status, 200);
    std::fs::write(dir.path().join("crl.pem"), &crl.body).unwrap();
    let (ok, out) = openssl(
        dir.path(),
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "chain.pem",
            "-CRLfile",
            "crl.pem",
            "device.crt",
        ],
    );
    assert!(ok && out.contains("device.crt: OK"), "{out}");
}

#[test]
fn sqlite_a_registration_again_needs_proof_of_possession() {
    a_registration_again_needs_proof_of_possession(TestBackend::Sqlite);
}

#[test]
fn postgres_a_registration_again_needs_proof_of_possession() {
    a_registration_again_needs_proof_of_possession(TestBackend::Postgres);
}

// ---- 3. two servers, one database ------------------------------------------------

/// The serial numbers a CRL lists (`openssl crl -text`), upper-case hex.
pub(crate) fn crl_serials(dir: &Path, pem: &str, name: &str) -> BTreeSet<String> {
    std::fs::write(dir.join(name), pem).unwrap();
    let (ok, out) = openssl(
        dir,
        &[
            "crl",
            "-in",
            name,
            "-CAfile",
            "chain.pem",
            "-verify",
            "-noout",
            "-text",
        ],
    );
    assert!(ok && out.contains("verify OK"), "{out}");
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number:"))
        .map(|s| s.trim().to_uppercase())
        .collect()
}

/// The serial of a certificate (PEM) as openssl prints it.
pub(crate) fn cert_serial(dir: &Path, pem: &str, name: &str) -> String {
    std::fs::write(dir.join(name), pem).unwrap();
    let (ok, out) = openssl(dir, &["x509", "-in", name, "-noout", "-serial"]);
    assert!(ok, "{out}");
    out.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("{out}"))
        .to_uppercase()
}

#[test]
fn postgres_two_servers_on_one_database_publish_every_revocation() {
    const N: usize = 20;
    let db = TestDb::postgres();
    let root = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    let mut env = env_for(&db);
    env.push((
        "ONBOARD__CA__DIR",
        root.path().join("shared-ca").display().to_string(),
    ));
    let (ok, stdout, stderr) = onboardctl(
        root.path(),
        &env,
        &[
            "--output", "json", "admin", "token", "create", "--name", "ops",
        ],
    );
    assert!(ok, "{stderr}");
    let token: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    env.push((
        "ONBOARD__ADMIN__TOKEN_HASHES",
        token["hash"].as_str().unwrap().to_owned(),
    ));
    let admin = format!("Bearer {}", token["token"].as_str().unwrap());
    for args in [&["migrate"][..], &["ca", "init"]] {
        let (ok, stdout, stderr) = onboardctl(root.path(), &env, args);
        assert!(ok, "{args:?}: {stdout}{stderr}");
    }
    let servers = [Server::start(&a_dir, &env), Server::start(&b_dir, &env)];
    let key = create_key(root.path(), &env, "two", 100);
    let auth = format!("Bearer {}", key.secret);

    let chain = support::get(&servers[0].url("/public/v1/ca")).body;
    assert_eq!(
        chain,
        support::get(&servers[1].url("/public/v1/ca")).body,
        "one CA"
    );
    std::fs::write(root.path().join("chain.pem"), &chain).unwrap();

    // Registered through either server.
    let devices: Vec<(String, String)> = (0..N)
        .map(|i| {
            let r = try_post_json(
                &servers[i % 2].url("/public/v1/register"),
                &[("Authorization", &auth)],
                &register_body(&format!("SN-TWO-{i:02}"), None),
            )
            .unwrap();
            assert_eq!(r.status, 201, "{}", r.body);
            let v = r.json();
            let serial = cert_serial(
                root.path(),
                v["certificate_pem"].as_str().unwrap(),
                &format!("d{i}.crt"),
            );
            (v["device_id"].as_str().unwrap().to_owned(), serial)
        })
        .collect();

    // Revoked all at once, half through each server.
    let barrier = Arc::new(Barrier::new(N));
    std::thread::scope(|s| {
        for (i, (id, _)) in devices.iter().enumerate() {
            let (barrier, url, admin) = (
                barrier.clone(),
                servers[i % 2].url(&format!("/private/v1/admin/devices/{id}/revoke")),
                &admin,
            );
            s.spawn(move || {
                barrier.wait();
                let r = try_post_json(
                    &url,
                    &[("Authorization", admin)],
                    &json!({"reason": "keyCompromise"}),
                )
                .unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                assert_eq!(r.json()["status"], "revoked", "{}", r.body);
            });
        }
    });

    let revoked: BTreeSet<String> = devices.iter().map(|(_, s)| s.clone()).collect();
    for (n, server) in servers.iter().enumerate() {
        let mut listed = BTreeSet::new();
        wait_until(
            &format!("server {n}'s CRL to list every revocation"),
            Duration::from_secs(60),
            || {
                let crl = support::get(&server.url("/public/v1/crl"));
                assert_eq!(crl.status, 200, "{}", crl.body);
                listed = crl_serials(root.path(), &crl.body, &format!("crl{n}.pem"));
                revoked.is_subset(&listed)
            },
        );
        assert_eq!(listed, revoked, "server {n}: only the revoked ones");
        // A client checking with that CRL refuses devices revoked through either
        // server.
        for d in [0, 1] {
            let (crl, crt) = (format!("crl{n}.pem"), format!("d{d}.crt"));
            let (ok, out) = openssl(
                root.path(),
                &[
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    "chain.pem",
                    "-CRLfile",
                    &crl,
                    &crt,
                ],
            );
            assert!(!ok && out.contains("certificate revoked"), "{out}");
        }
    }
    // Every CRL stored lists every revocation committed before it: the newest
    // lists them all, as checked above; each one's number is unique.
    let numbers = sql(&db.url, "SELECT count(*), count(DISTINCT number) FROM crls");
    assert_eq!(numbers[0][0], numbers[0][1]);
}
