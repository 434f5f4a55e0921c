//! The whole chain against a real Mosquitto: a device registers through Onboard,
//! reaches its own topics and no other's, is marked active by its first status
//! message, and is cut off by revocation without a broker restart.

use std::time::{Duration, Instant};

use onboard_broker::testing::{Auth, Mqtt, TestBroker, TestBrokerSpec};
use onboard_core::domain::*;
use onboard_core::{Actor, KeyBatchRequest, Onboard, RegisterRequest, Settings, StatusListener};
use onboard_registry::testing::{TestBackend, TestDb};

/// Onboard (system clock: Mosquitto checks certificates against the real time)
/// and a Mosquitto that trusts Onboard's CA and reads Onboard's broker files.
fn onboard_with_broker(backend: TestBackend) -> (Onboard, TestBroker, TestDb, tempfile::TempDir) {
    onboard_with_broker_reloaded_by(backend, None)
}

/// As [`onboard_with_broker`], with Onboard signalling the pid in `pid_file`
/// instead of the broker's own pid file.
fn onboard_with_broker_reloaded_by(
    backend: TestBackend,
    pid_file: Option<&std::path::Path>,
) -> (Onboard, TestBroker, TestDb, tempfile::TempDir) {
    onboard_with_broker_listening(backend, pid_file, false)
}

/// As [`onboard_with_broker_reloaded_by`]; with `password_listener`, the broker
/// also takes username/password logins.
fn onboard_with_broker_listening(
    backend: TestBackend,
    pid_file: Option<&std::path::Path>,
    password_listener: bool,
) -> (Onboard, TestBroker, TestDb, tempfile::TempDir) {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.database.url = db.url.clone();
    settings.ca.dir = dir.path().join("ca").display().to_string();
    settings.broker.kind = onboard_core::settings::BrokerKind::None;
    let ca = {
        let first = Onboard::open(settings.clone()).unwrap();
        crate::shared_ca(&first, backend);
        first.ca().unwrap()
    };
    let broker = TestBroker::start(&TestBrokerSpec {
        ca: &ca,
        now: SystemClock.now(),
        auth: Auth::Files,
        password_listener,
        env: &[],
    })
    .unwrap();
    settings.broker.kind = onboard_core::settings::BrokerKind::MosquittoFile;
    settings.broker.acl_file = broker.acl_file().display().to_string();
    settings.broker.password_file = broker.password_file().display().to_string();
    settings.broker.crl_file = broker.crl_file().display().to_string();
    settings.broker.reload_pid_file = pid_file
        .map(std::path::Path::to_path_buf)
        .unwrap_or(broker.pid_file())
        .display()
        .to_string();
    let onboard = Onboard::open(settings).unwrap();
    (onboard, broker, db, dir)
}

/// One bootstrap key of batch `b`.
fn batch_key(onboard: &Onboard, max_uses: u32, valid_days: u32) -> SecretString {
    onboard
        .create_key_batch(
            &Actor::cli(),
            &KeyBatchRequest {
                batch: "b".into(),
                count: 1,
                max_uses,
                valid_days: Some(valid_days),
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
        .secret
}

/// How long a positive wait may take at most (a failure guard, not a bound).
const WAIT: Duration = Duration::from_secs(10);

fn register(onboard: &Onboard, key: &str, serial: &str) -> (DeviceId, String, String) {
    let r = onboard
        .register(RegisterRequest {
            key: Some(SecretString::new(key)),
            serial: serial.into(),
            ..Default::default()
        })
        .unwrap();
    (
        r.device.id,
        r.certificate.pem,
        r.private_key_pem.unwrap().expose().to_owned(),
    )
}

fn connect(broker: &TestBroker, id: DeviceId, cert: &str, key: &str) -> Result<Mqtt, String> {
    Mqtt::connect(&broker.device_endpoint(&id.to_string(), cert, key))
}

pub fn devices_reach_their_topics_activate_and_are_cut_off_by_revocation(backend: TestBackend) {
    let (onboard, broker, _db, _dir) = onboard_with_broker(backend);
    let pid = broker.pid();
    let key = batch_key(&onboard, 5, 1);
    let (a, a_cert, a_key) = register(&onboard, key.expose(), "SN-A");
    let (b, b_cert, b_key) = register(&onboard, key.expose(), "SN-B");

    let mut ma = connect(&broker, a, &a_cert, &a_key).unwrap();
    let mut mb = connect(&broker, b, &b_cert, &b_key).unwrap();
    ma.subscribe(&format!("devices/{a}/#"));
    mb.subscribe(&format!("devices/{b}/#"));
    // A's own topic works; A's publish to B's topic never reaches B.
    ma.publish(&format!("devices/{a}/telemetry"), "a1").unwrap();
    assert!(ma.expect(
        &format!("devices/{a}/telemetry"),
        "a1",
        Duration::from_secs(5)
    ));
    ma.publish(&format!("devices/{b}/cmd"), "intrusion")
        .unwrap();
    mb.publish(&format!("devices/{b}/marker"), "m").unwrap();
    assert!(mb.expect(&format!("devices/{b}/marker"), "m", Duration::from_secs(5)));
    assert!(!mb.has(&format!("devices/{b}/cmd"), "intrusion"));

    // Activation from the first status message.
    let recorder = onboard.clone();
    let listener = StatusListener::start(
        {
            let mut c = onboard_core::StatusConfig::new(broker.service_endpoint());
            c.max_delay = Duration::from_millis(100);
            c
        },
        move |batch| {
            let now = recorder.clock().now();
            let seen: Vec<_> = batch.into_iter().map(|(id, _)| (id, now)).collect();
            recorder.record_activity(&seen).unwrap();
        },
    )
    .unwrap();
    // Subscribed first, then one status message.
    listener.wait_subscribed(WAIT).unwrap();
    ma.publish(&format!("devices/{a}/status"), "online")
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while onboard.device(a).unwrap().device.status != DeviceStatus::Active {
        assert!(
            Instant::now() < deadline,
            "device A was never marked active"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    listener.stop();
    assert_eq!(
        onboard.device(b).unwrap().device.status,
        DeviceStatus::Registered
    );

    // Revocation: once it returns, A's open connection can no longer use its
    // topics, and a new connection is refused; Mosquitto keeps running.
    onboard
        .revoke_device(&Actor::cli(), a, RevocationReason::KeyCompromise)
        .unwrap();
    let topic = format!("devices/{a}/telemetry");
    // The PUBACK follows, on A's connection, anything the broker routed to A
    // for this publish (A is subscribed to its own topics).
    ma.publish(&topic, "after").unwrap();
    assert!(
        !ma.has(&topic, "after"),
        "a revoked device still reaches its topic"
    );
    let refused = connect(&broker, a, &a_cert, &a_key)
        .err()
        .expect("a revoked device could connect");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    // B is untouched.
    mb.publish(&format!("devices/{b}/marker"), "m2").unwrap();
    assert!(mb.expect(&format!("devices/{b}/marker"), "m2", Duration::from_secs(5)));
    assert_eq!(broker.pid(), pid);

    // acl sync writes the same state from scratch: B has the default topics,
    // which the patterns give it; A is shut out.
    let synced = onboard.acl_sync().unwrap();
    assert_eq!(synced.granted, 1);
    let acl = std::fs::read_to_string(broker.acl_file()).unwrap();
    assert!(
        acl.contains("\npattern readwrite devices/%u/#\n")
            && acl.contains(&format!("\nuser {a}\ntopic deny #\n"))
            && !acl.contains(&b.to_string()),
        "{acl}"
    );
}

/// libfaketime, preloaded into Mosquitto: its clock is real time plus the offset
/// written in `file` (`+30h`), read again on every call.
fn faketime_env(file: &std::path::Path) -> Vec<(&'static str, String)> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing (Debian package faketime; scripts/test-services.sh installs it)"
    );
    vec![
        ("LD_PRELOAD", lib.into()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// Mosquitto refuses every client certificate once its CRL is past nextUpdate.
/// With Mosquitto's clock and Onboard's both moved 30 hours on (more than the
/// 24-hour CRL validity), a device is refused until the reconciler has signed and
/// installed a new CRL, and accepted after it, without restarting Mosquitto.
pub fn the_broker_accepts_devices_after_more_than_one_crl_validity(backend: TestBackend) {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut settings = Settings::default();
    settings.database.url = db.url.clone();
    settings.ca.dir = dir.path().join("ca").display().to_string();
    settings.ca.crl_validity_hours = 24;
    settings.broker.kind = onboard_core::settings::BrokerKind::None;
    let clock = std::sync::Arc::new(ManualClock::new(SystemClock.now()));
    let ca = {
        let first = Onboard::with_clock(settings.clone(), clock.clone()).unwrap();
        crate::shared_ca(&first, backend);
        first.ca().unwrap()
    };
    let env = faketime_env(&offset);
    let broker = TestBroker::start(&TestBrokerSpec {
        ca: &ca,
        now: clock.now(),
        auth: Auth::Files,
        password_listener: false,
        env: &env,
    })
    .unwrap();
    settings.broker.kind = onboard_core::settings::BrokerKind::MosquittoFile;
    settings.broker.acl_file = broker.acl_file().display().to_string();
    settings.broker.password_file = broker.password_file().display().to_string();
    settings.broker.crl_file = broker.crl_file().display().to_string();
    settings.broker.reload_pid_file = broker.pid_file().display().to_string();
    let onboard = Onboard::with_clock(settings, clock.clone()).unwrap();
    let pid = broker.pid();

    // The server's start: files written, the CRL installed.
    onboard.acl_sync().unwrap();
    let key = batch_key(&onboard, 5, 30);
    let (a, a_cert, a_key) = register(&onboard, key.expose(), "SN-T");
    drop(connect(&broker, a, &a_cert, &a_key).unwrap());

    std::fs::write(&offset, "+30h\n").unwrap();
    clock.advance(chrono::Duration::hours(30));
    let refused = connect(&broker, a, &a_cert, &a_key)
        .err()
        .expect("Mosquitto accepted a device with a CRL past its nextUpdate");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    let pass = onboard.reconcile(false).unwrap();
    assert!(pass.crl_refreshed);
    let installed = pass.installed_crl.unwrap();
    // A full validity ahead of the moved clock (CRL times have whole seconds).
    assert!(installed.next_update > clock.now() + chrono::Duration::hours(23));
    drop(connect(&broker, a, &a_cert, &a_key).unwrap());
    assert_eq!(broker.pid(), pid, "no restart");
}

/// The real file broker failing after the commit: a registration stands and is
/// answered; its grant is in the ACL file but Mosquitto was not told, so the
/// device cannot use its topics; once the broker can be reloaded, one reconciler
/// pass applies it and the device works. A registration refused inside the
/// transaction leaves no trace in the broker's files.
pub fn a_broker_failure_after_the_commit_is_repaired_by_the_reconciler(backend: TestBackend) {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("mosquitto.pid");
    std::fs::write(&pid_file, "not a pid\n").unwrap();
    let (onboard, broker, _db, _dir) = onboard_with_broker_reloaded_by(backend, Some(&pid_file));
    let key = batch_key(&onboard, 1, 1);
    let (a, a_cert, a_key) = register(&onboard, key.expose(), "SN-R");
    assert_eq!(onboard.pending_effects().unwrap().0, 1, "the grant waits");
    let mut ma = connect(&broker, a, &a_cert, &a_key).unwrap();
    ma.subscribe(&format!("devices/{a}/#"));
    let topic = format!("devices/{a}/telemetry");
    ma.publish(&topic, "before").unwrap();
    assert!(
        !ma.has(&topic, "before"),
        "Mosquitto never loaded the grant"
    );

    // Refused inside the transaction (the single use is spent): nothing reaches
    // the files.
    let acl_before = std::fs::read_to_string(broker.acl_file()).unwrap();
    let refused = onboard.register(RegisterRequest {
        key: Some(SecretString::new(key.expose())),
        serial: "SN-R2".into(),
        ..Default::default()
    });
    assert!(refused.is_err());
    assert_eq!(
        std::fs::read_to_string(broker.acl_file()).unwrap(),
        acl_before
    );
    assert_eq!(
        acl_before.matches("\nuser ").count() + usize::from(acl_before.starts_with("user ")),
        1,
        "the service account; A has the default topics, which the patterns give: {acl_before}"
    );
    assert!(acl_before.contains("\npattern readwrite devices/%u/#\n"));

    // The broker can be reloaded again: one pass, and A's topics work.
    std::fs::write(&pid_file, format!("{}\n", broker.pid())).unwrap();
    let pass = onboard.reconcile(true).unwrap();
    assert_eq!((pass.applied, pass.failed), (1, 0), "{:?}", pass.errors);
    assert_eq!(onboard.pending_effects().unwrap().0, 0);
    ma.publish(&topic, "after").unwrap();
    assert!(ma.expect(&topic, "after", WAIT));
}

/// The `conf` blocks of docs/mosquitto.md's "Listeners" and "File mode"
/// sections, as written there.
fn documented_config() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/mosquitto.md"
    ))
    .unwrap();
    let block_after = |heading: &str| {
        let at = doc
            .find(heading)
            .unwrap_or_else(|| panic!("{heading} is gone"));
        let start = doc[at..].find("```conf\n").unwrap() + at + "```conf\n".len();
        let end = doc[start..].find("```").unwrap() + start;
        doc[start..end].to_owned()
    };
    block_after("## Listeners") + &block_after("## File mode")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh install, in the order docs/mosquitto.md gives: Onboard writes the
/// broker's files while Mosquitto is not running (no pid file yet: not an
/// error), then Mosquitto starts with the documented configuration and a device
/// registered through Onboard reaches its topics.
pub fn mosquitto_starts_on_a_fresh_install_with_the_documented_config(backend: TestBackend) {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut settings = Settings::default().with_files_under(d);
    settings.database.url = db.url.clone();
    settings.broker.reload_pid_file = d.join("run/mosquitto.pid").display().to_string();
    let onboard = Onboard::open(settings.clone()).unwrap();
    crate::shared_ca(&onboard, backend);
    let written = onboard.acl_sync().unwrap();
    assert_eq!(written.granted, 0);
    let b = &settings.broker;
    for file in [&b.acl_file, &b.crl_file] {
        assert!(
            std::path::Path::new(file).exists(),
            "{file} was not written"
        );
    }
    let server = onboard
        .issue_server_certificate(
            "localhost",
            &["localhost".into()],
            &[std::net::Ipv4Addr::LOCALHOST.into()],
            2,
        )
        .unwrap();
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("broker.crt"), &server.certificate_pem).unwrap();
    std::fs::write(certs.join("broker.key"), server.private_key_pem.expose()).unwrap();
    std::fs::create_dir_all(d.join("run")).unwrap();
    let chain = settings.ca_dir().join("chain.pem");
    assert!(
        chain.exists(),
        "the documented cafile {} is missing",
        chain.display()
    );
    let (tls, password) = (free_port(), free_port());
    let conf = documented_config()
        .replace("/var/lib/onboard/ca/chain.pem", &chain.display().to_string())
        .replace("/etc/mosquitto/certs/", &format!("{}/", certs.display()))
        .replace("/var/lib/onboard/mosquitto/crl.pem", &b.crl_file)
        .replace("/var/lib/onboard/mosquitto/acl", &b.acl_file)
        .replace("/var/lib/onboard/mosquitto/passwd", &b.password_file)
        .replace("/run/mosquitto/mosquitto.pid", &b.reload_pid_file)
        .replace("listener 8883", &format!("listener {tls} 127.0.0.1"))
        .replace("listener 8884", &format!("listener {password} 127.0.0.1"))
        // A throwaway broker run by the test's user, logging to a file.
        + &format!("user root\nlog_dest file {}\n", d.join("mosquitto.log").display());
    std::fs::write(d.join("mosquitto.conf"), &conf).unwrap();
    let mut child = std::process::Command::new(onboard_broker::testing::mosquitto_binary())
        .arg("-c")
        .arg(d.join("mosquitto.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(d.join("mosquitto.log")).unwrap_or_default();
            panic!("Mosquitto exited with {status}:\n{log}\n{conf}");
        }
        assert!(Instant::now() < deadline, "Mosquitto never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Mosquitto runs now: the next grant signals it through the pid file.
    let key = batch_key(&onboard, 1, 1);
    let (a, a_cert, a_key) = register(&onboard, key.expose(), "SN-F");
    assert_eq!(onboard.pending_effects().unwrap().0, 0);
    let mut endpoint =
        onboard_broker::MqttEndpoint::from_url(&format!("mqtts://127.0.0.1:{tls}"), a.to_string())
            .unwrap();
    endpoint.ca_pem = Some(onboard.ca_chain().unwrap().0);
    endpoint.client_cert = Some((a_cert, SecretString::new(a_key)));
    let mut ma = Mqtt::connect(&endpoint).unwrap();
    ma.subscribe(&format!("devices/{a}/#"));
    ma.publish(&format!("devices/{a}/t"), "hello").unwrap();
    assert!(ma.expect(&format!("devices/{a}/t"), "hello", WAIT));
    let _ = child.kill();
    let _ = child.wait();
}

/// A password device's secret is its MQTT password on a real Mosquitto (password
/// file); a new secret replaces it at once; decommissioning ends it.
pub fn a_password_device_logs_in_with_its_secret_and_a_new_one_replaces_it(backend: TestBackend) {
    let (onboard, broker, _db, _dir) = onboard_with_broker_listening(backend, None, true);

    let done = onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "pw".into(),
                credential: Some("password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let id = done.device.id.to_string();
    let secret = done.client_secret.unwrap();
    let passwd = std::fs::read_to_string(broker.password_file()).unwrap();
    assert!(passwd.contains(&format!("{id}:$7$")), "{passwd}");
    assert!(!passwd.contains(secret.expose()), "only the hash");

    let login = |s: &SecretString| Mqtt::connect(&broker.password_endpoint(&id, s).unwrap());
    let mut m = login(&secret).unwrap();
    m.subscribe(&format!("devices/{id}/#"));
    m.publish(&format!("devices/{id}/telemetry"), "t1").unwrap();
    assert!(m.expect(&format!("devices/{id}/telemetry"), "t1", WAIT));
    drop(m);
    let wrong = SecretString::new(format!("{}x", secret.expose()));
    let refused = login(&wrong).err().unwrap_or_default();
    assert!(
        refused.to_lowercase().contains("not authorized")
            || refused.contains("BadUserNamePassword")
            || refused.contains("NotAuthorized"),
        "{refused}"
    );

    // The admin provisioning download sets a new secret: the old one stops.
    let p = onboard
        .admin_provisioning(&Actor::cli(), done.device.id)
        .unwrap();
    let fresh = p.client_secret.unwrap();
    assert!(login(&secret).is_err(), "the old secret no longer logs in");
    assert!(login(&fresh).is_ok());

    onboard
        .decommission_device(&Actor::cli(), done.device.id)
        .unwrap();
    assert!(
        login(&fresh).is_err(),
        "a decommissioned device cannot log in"
    );
    assert!(!std::fs::read_to_string(broker.password_file())
        .unwrap()
        .contains(&id));
}
