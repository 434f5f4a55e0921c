//! The broker going away while devices register and are revoked, against the real
//! binaries and a real Mosquitto, in file mode and in dynamic-security mode (both
//! backends). What ADR 3 and docs/mosquitto.md promise:
//!
//! - a registration while the broker is down is answered 201, and the device's
//!   grant is in force once the broker is back (file mode: the files were written
//!   and Mosquitto reads them when it starts; dynamic security: the reconciler
//!   creates the client once the plugin answers);
//! - a revocation while the broker is down is recorded and answered 503 ("recorded;
//!   reaches the broker when it is back"), and it is in force once the broker is
//!   back: the CRL file was written, so the device's certificate is refused at the
//!   handshake, and the reconciler removes its grant;
//! - every pending effect is applied without a server restart;
//! - `onboardctl acl sync` repairs a broker whose state was changed behind
//!   Onboard's back (grants removed, an older CRL put back).

use std::time::{Duration, Instant};

use onboard_broker::testing::{Auth, Mqtt, TestBroker, TestBrokerSpec};
use onboard_core::domain::{Clock, SystemClock};
use onboard_core::{Onboard, Settings};
use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::json;

use crate::faults::{create_key, Key};
use crate::support::{onboardctl, post_json, sql, Server};

/// A failure guard for waits that must end (not a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

/// How the broker goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// `SIGTERM`: Mosquitto exits and removes its pid file.
    Stopped,
    /// `SIGKILL`: the pid file stays, naming a process that is gone, so every
    /// reload Onboard asks for fails until Mosquitto runs again.
    Killed,
}

/// Settings (as environment) for the server and `onboardctl`: the test broker's
/// files and pid file, the reconciler every second. File mode needs no MQTT
/// connection (and has none here: the test's observer is the service account).
/// With dynamic security Onboard logs in as the plugin's admin on the password
/// listener, under a client id of its own.
fn broker_env(db: &TestDb, broker: &TestBroker) -> Vec<(&'static str, String)> {
    let p = |f: std::path::PathBuf| f.display().to_string();
    let mut env = crate::e2e::env_for(db);
    env.extend([
        ("ONBOARD__BROKER__CRL_FILE", p(broker.crl_file())),
        ("ONBOARD__BROKER__RELOAD_PID_FILE", p(broker.pid_file())),
        ("ONBOARD__BROKER__PUBLIC_HOST", "127.0.0.1".into()),
        ("ONBOARD__BROKER__PUBLIC_PORT", broker.tls_port.to_string()),
        ("ONBOARD__BROKER__RECONCILE_SECONDS", "1".into()),
    ]);
    match broker.password_port {
        None => env.extend([
            ("ONBOARD__BROKER__KIND", "mosquitto-file".into()),
            ("ONBOARD__BROKER__ACL_FILE", p(broker.acl_file())),
            ("ONBOARD__BROKER__PASSWORD_FILE", p(broker.password_file())),
        ]),
        Some(port) => {
            let (user, password) = broker.dynsec_admin();
            env.extend([
                ("ONBOARD__BROKER__KIND", "mosquitto-dynsec".into()),
                (
                    "ONBOARD__BROKER__MQTT_URL",
                    format!("mqtts://127.0.0.1:{port}"),
                ),
                ("ONBOARD__BROKER__CA_FILE", p(broker.ca_file())),
                ("ONBOARD__BROKER__USERNAME", user.into()),
                ("ONBOARD__BROKER__PASSWORD", password.expose().into()),
                (
                    "ONBOARD__BROKER__SERVICE_CLIENT_ID",
                    "onboard-server".into(),
                ),
            ]);
        }
    }
    env
}

/// A device registered over HTTP with a server-generated key pair.
struct Device {
    id: String,
    cert: String,
    key: String,
}

fn register(server: &Server, key: &Key, serial: &str) -> (u16, serde_json::Value) {
    let r = post_json(
        &server.url("/public/v1/register"),
        &[("Authorization", &format!("Bearer {}", key.secret))],
        &json!({"serial": serial}),
    );
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(json!(r.body)),
    )
}

fn registered(server: &Server, key: &Key, serial: &str) -> Device {
    let (status, v) = register(server, key, serial);
    assert_eq!(status, 201, "{v}");
    device_of(&v)
}

fn device_of(v: &serde_json::Value) -> Device {
    Device {
        id: v["device_id"].as_str().unwrap().to_owned(),
        cert: v["certificate_pem"].as_str().unwrap().to_owned(),
        key: v["private_key_pem"].as_str().unwrap().to_owned(),
    }
}

fn connect(broker: &TestBroker, d: &Device) -> Result<Mqtt, String> {
    Mqtt::connect(&broker.device_endpoint(&d.id, &d.cert, &d.key))
}

/// The service account, subscribed to every device's status topic (what both
/// modes let it read): it sees what the broker lets a device publish there.
fn observer(broker: &TestBroker) -> Mqtt {
    let mut m = Mqtt::connect(&broker.service_endpoint()).unwrap();
    m.subscribe("devices/+/status");
    m
}

/// Whether the broker routes a publish of `d` on its own status topic: `d`
/// publishes (QoS 1: after its PUBACK the broker has routed or dropped it), then
/// the `marker` device publishes on its own; once the observer has the marker it
/// would have had the first message too.
fn publishes(broker: &TestBroker, d: &Device, marker: &Device, tag: &str) -> bool {
    let mut seen = observer(broker);
    let Ok(mut m) = connect(broker, d) else {
        return false;
    };
    let topic = format!("devices/{}/status", d.id);
    if m.publish(&topic, tag).is_err() {
        return false;
    }
    let mut mk = connect(broker, marker).unwrap();
    let marker_topic = format!("devices/{}/status", marker.id);
    let marker_tag = format!("marker-{tag}");
    mk.publish(&marker_topic, &marker_tag).unwrap();
    assert!(
        seen.expect(&marker_topic, &marker_tag, WAIT),
        "the marker device must reach its topic; ACL file:\n{}\nbroker log:\n{}",
        std::fs::read_to_string(broker.acl_file()).unwrap_or_default(),
        broker.log()
    );
    seen.has(&topic, tag)
}

/// Retries `publishes` until it holds (a grant applied by the reconciler).
fn wait_publishes(broker: &TestBroker, d: &Device, marker: &Device, what: &str) {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        if publishes(broker, d, marker, &format!("{what}-{n}")) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: never allowed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn refused_as_revoked(broker: &TestBroker, d: &Device) -> bool {
    connect(broker, d).is_err_and(|e| e.to_lowercase().contains("revoked"))
}

fn pending_effects(db: &TestDb) -> usize {
    sql(&db.url, "SELECT count(*) FROM pending_effects")[0][0]
        .parse()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn device_status(db: &TestDb, id: &str) -> String {
    sql(
        &db.url,
        &format!("SELECT status FROM devices WHERE id = '{id}'"),
    )[0][0]
        .clone()
}

fn broker_down_then_back(backend: TestBackend, auth: Auth, down: Down) {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = [("ONBOARD__DATABASE__URL", db.url.clone())];
    let (ok, out, err) = onboardctl(d, &base, &["ca", "init"]);
    assert!(ok, "{out}{err}");
    let ca = {
        let mut settings = Settings::default();
        settings.database.url = db.url.clone();
        settings.ca.dir = d.join("data/ca").display().to_string();
        settings.broker.kind = onboard_core::settings::BrokerKind::None;
        Onboard::open(settings).unwrap().ca().unwrap()
    };
    let mut broker = TestBroker::start(&TestBrokerSpec {
        ca: &ca,
        now: SystemClock.now(),
        auth,
        password_listener: auth == Auth::Dynsec,
        env: &[],
    })
    .unwrap();
    let env = broker_env(&db, &broker);
    let server = Server::start(d, &env);
    let admin = format!(
        "Bearer {}",
        std::fs::read_to_string(d.join("data/admin.token"))
            .unwrap()
            .trim()
    );
    let key = create_key(d, &env, "outage", 100);

    // Before the outage: B (revoked during it) and C (never touched) work.
    let b = registered(&server, &key, "SN-OUT-B");
    let c = registered(&server, &key, "SN-OUT-C");
    wait_publishes(&broker, &b, &c, "b-before");
    wait_publishes(&broker, &c, &b, "c-before");
    wait_until("the effects of B and C applied", || {
        pending_effects(&db) == 0
    });
    // The CRL as it is now, without B: put back later to diverge the broker.
    let crl_before = std::fs::read_to_string(broker.crl_file()).unwrap();

    match down {
        Down::Stopped => broker.stop().unwrap(),
        Down::Killed => broker.kill().unwrap(),
    }
    assert_eq!(
        broker.pid_file().exists(),
        down == Down::Killed,
        "a clean stop removes the pid file, a kill leaves it"
    );

    // A registers while the broker is down: answered 201 all the same.
    let (status, v) = register(&server, &key, "SN-OUT-A");
    assert_eq!(status, 201, "a registration while the broker is down: {v}");
    let a = device_of(&v);
    // B is revoked while the broker is down: recorded in the registry. A broker
    // Onboard cannot reach (a reload that fails, a plugin that does not answer)
    // makes the answer 503, saying it is recorded; a stopped file broker is no
    // error at all: the files are written and Mosquitto reads them at start.
    let unreachable = !(auth == Auth::Files && down == Down::Stopped);
    let revoke = || {
        post_json(
            &server.url(&format!("/private/v1/admin/devices/{}/revoke", b.id)),
            &[("Authorization", &admin)],
            &json!({"reason": "keyCompromise"}),
        )
    };
    let r = revoke();
    assert_eq!(device_status(&db, &b.id), "revoked");
    if unreachable {
        assert_eq!(r.status, 503, "{}", r.body);
        let body = r.json();
        assert_eq!(body["error"], "unavailable", "{}", r.body);
        assert!(
            body["message"].as_str().unwrap().contains("recorded"),
            "{}",
            r.body
        );
        assert!(pending_effects(&db) > 0, "the broker changes wait");
        // Revoking again while the broker is down: the same answer.
        let again = revoke();
        assert_eq!(again.status, 503, "{}", again.body);
    } else {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(pending_effects(&db), 0, "nothing waits");
    }
    assert_eq!(device_status(&db, &b.id), "revoked");

    broker.start_again().unwrap();

    // The revocation is in force as soon as the broker runs: the CRL file it
    // reads at start lists B.
    assert!(
        refused_as_revoked(&broker, &b),
        "a device revoked while the broker was down connects"
    );
    match auth {
        // The ACL file holding A was written during the outage and read at start.
        Auth::Files => assert!(
            publishes(&broker, &a, &c, "a-at-start"),
            "A's grant is not in the files Mosquitto read at start"
        ),
        // The plugin learns of A from the reconciler.
        Auth::Dynsec => wait_publishes(&broker, &a, &c, "a-after"),
    }
    assert!(publishes(&broker, &c, &a, "c-after"), "C is untouched");
    wait_until("every pending effect applied after the outage", || {
        pending_effects(&db) == 0
    });
    if auth == Auth::Dynsec {
        let clients = broker.dynsec_clients().unwrap();
        assert!(clients.contains(&a.id), "{clients:?}");
        assert!(clients.contains(&c.id), "{clients:?}");
        assert!(
            !clients.contains(&b.id),
            "B's client is deleted: {clients:?}"
        );
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());

    // Someone changes the broker behind Onboard's back: A's grant is gone and
    // the CRL from before B's revocation is back, so B connects again.
    match auth {
        Auth::Files => {
            // A and C have the default topics, which the pattern lines give
            // them; B (revoked) is shut out. The edit keeps the service account,
            // gives C a block of its own, and drops the patterns: A is left out.
            let acl = std::fs::read_to_string(broker.acl_file()).unwrap();
            assert!(
                acl.contains(&format!("\nuser {}\ntopic deny #\n", b.id))
                    && !acl.contains(&a.id)
                    && !acl.contains(&c.id),
                "the preamble, the patterns and B shut out: {acl}"
            );
            let preamble = acl.split("\n# Every device's own topics").next().unwrap();
            let edited = format!(
                "{preamble}\nuser {c}\ntopic readwrite devices/{c}/#\n",
                c = c.id
            );
            std::fs::write(broker.acl_file(), edited).unwrap();
        }
        Auth::Dynsec => broker
            .dynsec_commands(vec![json!({"command": "deleteClient", "username": a.id})])
            .unwrap(),
    }
    std::fs::write(broker.crl_file(), &crl_before).unwrap();
    broker.reload().unwrap();
    wait_until("the broker to read the old CRL", || {
        connect(&broker, &b).is_ok()
    });
    assert!(
        !publishes(&broker, &a, &c, "a-diverged"),
        "A's grant was removed behind Onboard's back"
    );

    let (ok, out, err) = onboardctl(d, &env, &["--output", "json", "acl", "sync"]);
    assert!(ok, "{out}{err}");
    let synced: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(synced["granted"], 2, "A and C: {out}");
    assert!(refused_as_revoked(&broker, &b), "acl sync put the CRL back");
    assert!(
        publishes(&broker, &a, &c, "a-synced"),
        "acl sync granted A again"
    );
    assert!(publishes(&broker, &c, &a, "c-synced"));
    drop(server);
}

#[test]
fn sqlite_file_broker_killed_during_registration_and_revocation() {
    broker_down_then_back(TestBackend::Sqlite, Auth::Files, Down::Killed);
}

#[test]
fn postgres_file_broker_killed_during_registration_and_revocation() {
    broker_down_then_back(TestBackend::Postgres, Auth::Files, Down::Killed);
}

#[test]
fn sqlite_dynsec_broker_stopped_during_registration_and_revocation() {
    broker_down_then_back(TestBackend::Sqlite, Auth::Dynsec, Down::Stopped);
}

#[test]
fn postgres_dynsec_broker_stopped_during_registration_and_revocation() {
    broker_down_then_back(TestBackend::Postgres, Auth::Dynsec, Down::Stopped);
}

#[test]
fn sqlite_file_broker_stopped_during_registration_and_revocation() {
    broker_down_then_back(TestBackend::Sqlite, Auth::Files, Down::Stopped);
}
