//! The rotation notification against a real Mosquitto: Onboard writes the
//! broker's files (each device may read its own rotation topic, the service
//! account may publish to every device's), and the cycle publishes over the
//! broker's mutual-TLS listener with the service account's certificate. A
//! simulated device (an MQTT client with its certificate, and the device use
//! cases the HTTP routes call) takes the rotation through.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::SubsecRound;
use onboard_broker::testing::{Auth, Mqtt, SubscribeReasonCode, TestBroker, TestBrokerSpec};
use onboard_core::domain::*;
use onboard_core::{
    Actor, CoreError, DeviceAuth, DeviceSession, KeyBatchRequest, Onboard, PresentedCertificate,
    RegisterRequest, Settings,
};
use onboard_registry::testing::{TestBackend, TestDb};
use serde_json::Value;

/// How long a positive wait may take at most (a failure guard, not a bound).
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    onboard: Onboard,
    clock: Arc<ManualClock>,
    broker: TestBroker,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// Onboard on a manual clock that starts at the real time (Mosquitto checks
/// certificates against the system clock), with the file broker on a test
/// Mosquitto and the notifications on its mTLS listener.
fn setup(backend: TestBackend, configure: impl FnOnce(&mut Settings)) -> Setup {
    setup_listening(backend, false, configure)
}

/// As [`setup`]; with `password_listener`, the broker also takes password logins.
fn setup_listening(
    backend: TestBackend,
    password_listener: bool,
    configure: impl FnOnce(&mut Settings),
) -> Setup {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    // Whole seconds: the databases keep microseconds at most.
    let clock = Arc::new(ManualClock::new(SystemClock.now().trunc_subsecs(0)));
    let mut settings = Settings::default();
    settings.database.url = db.url.clone();
    settings.ca.dir = dir.path().join("ca").display().to_string();
    settings.broker.kind = onboard_core::settings::BrokerKind::None;
    settings.server.public_base_url = "https://onboard.example".into();
    let ca = {
        let first = Onboard::with_clock(settings.clone(), clock.clone()).unwrap();
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
    let path = |p: &Path| p.display().to_string();
    let b = &mut settings.broker;
    b.kind = onboard_core::settings::BrokerKind::MosquittoFile;
    b.acl_file = path(&broker.acl_file());
    b.password_file = path(&broker.password_file());
    b.crl_file = path(&broker.crl_file());
    b.reload_pid_file = path(&broker.pid_file());
    b.mqtt_url = format!("mqtts://127.0.0.1:{}", broker.tls_port);
    b.ca_file = path(&broker.ca_file());
    let (cert, key) = broker.service_cert_files();
    b.client_cert_file = path(&cert);
    b.client_key_file = path(&key);
    settings.rotation.max_in_flight = 1;
    configure(&mut settings);
    settings.validate().unwrap();
    let onboard = Onboard::with_clock(settings, clock.clone()).unwrap();
    Setup {
        onboard,
        clock,
        broker,
        _db: db,
        _dir: dir,
    }
}

/// A registered device with a server-generated key.
struct Dev {
    id: DeviceId,
    cert: Certificate,
    key: String,
}

fn register(onboard: &Onboard, serial: &str) -> Dev {
    let key = onboard
        .create_key_batch(
            &Actor::cli(),
            &KeyBatchRequest {
                batch: format!("b-{serial}"),
                count: 1,
                max_uses: 1,
                valid_days: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
        .secret;
    let r = onboard
        .register(RegisterRequest {
            key: Some(key),
            serial: serial.into(),
            ..Default::default()
        })
        .unwrap();
    Dev {
        id: r.device.id,
        cert: r.certificate,
        key: r.private_key_pem.unwrap().expose().to_owned(),
    }
}

fn session(onboard: &Onboard, c: &Certificate) -> DeviceSession {
    onboard
        .authenticate_certificate(&PresentedCertificate {
            serial: c.serial.clone(),
            fingerprint: c.fingerprint.clone(),
        })
        .unwrap()
}

fn connect(broker: &TestBroker, id: DeviceId, cert: &str, key: &str) -> Result<Mqtt, String> {
    Mqtt::connect(&broker.device_endpoint(&id.to_string(), cert, key))
}

/// The next message on `topic` as JSON, waiting up to [`WAIT`].
fn next_on(m: &mut Mqtt, topic: &str) -> Option<Value> {
    m.take(topic, WAIT)
        .map(|p| serde_json::from_slice(&p).unwrap())
}

fn rotation(onboard: &Onboard, id: DeviceId) -> onboard_core::RotationEntry {
    onboard.device_rotation(id).unwrap().unwrap()
}

fn rotation_actions(onboard: &Onboard, id: DeviceId) -> Vec<String> {
    let mut events = onboard
        .audit_events(
            &AuditFilter {
                device_id: Some(id),
                ..Default::default()
            },
            &PageRequest::first(500).unwrap(),
        )
        .unwrap()
        .items;
    events.reverse();
    events
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("rotation."))
        .collect()
}

pub fn a_device_is_notified_renews_reconnects_and_acknowledges(backend: TestBackend) {
    let s = setup(backend, |_| {});
    let (onboard, broker) = (&s.onboard, &s.broker);
    let a = register(onboard, "SN-NOTE-A");
    let b = register(onboard, "SN-NOTE-B");

    // The device learns its rotation topic from its provisioning and may
    // subscribe to it. B may ask for A's topic too (Mosquitto's ACL file checks
    // each delivery, not the subscription): nothing of A's reaches B below.
    let provisioning = onboard
        .provisioning_for(&session(onboard, &a.cert))
        .unwrap();
    let topic = provisioning.mqtt.rotation_topic.clone();
    assert_eq!(topic, format!("iotsupport/{}/rotation", a.id));
    let mut ma = connect(broker, a.id, &a.cert.pem, &a.key).unwrap();
    let mut mb = connect(broker, b.id, &b.cert.pem, &b.key).unwrap();
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    let _ = mb.subscribe(&topic);
    let b_topic = format!("iotsupport/{}/rotation", b.id);
    assert!(matches!(
        mb.subscribe(&b_topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));

    // The operator queues A; the cycle starts it and notifies it.
    onboard.trigger_rotation(&Actor::cli(), Some(a.id)).unwrap();
    let summary = onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (summary.started, summary.notified, summary.not_notified),
        (1, 1, 0),
        "{summary}"
    );
    assert_eq!(
        summary.to_string(),
        "rotation cycle: 0 timed out, 1 started, 1 notified, 1 pending (max 1)"
    );
    let started = rotation(onboard, a.id);
    assert_eq!(started.state, RotationState::Pending);
    assert_eq!(started.notified_at, Some(s.clock.now()));

    let notice = next_on(&mut ma, &topic).expect("no rotation notification arrived");
    let deadline = started.deadline_at.unwrap();
    assert_eq!(notice["type"], "rotation");
    assert_eq!(notice["device_id"], a.id.to_string());
    assert_eq!(notice["credential"], "certificate");
    assert_eq!(notice["attempt"], 1);
    assert_eq!(
        notice["deadline"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        deadline
    );
    assert_eq!(notice["renew_url"], "https://onboard.example/iot/renew");
    assert_eq!(
        notice["provisioning_url"],
        "https://onboard.example/iot/provisioning"
    );
    assert_eq!(
        notice["ack_url"],
        "https://onboard.example/iot/rotation/ack"
    );

    // A later cycle does not notify again.
    let again = onboard.run_rotation_cycle().unwrap();
    assert_eq!((again.notified, again.not_notified), (0, 0), "{again}");
    own_marker(&mut ma, onboard, &topic);
    assert!(ma.take(&topic, Duration::ZERO).is_none(), "notified twice");
    // B's subscription saw nothing of A's rotation (B gets its own marker).
    own_marker(&mut mb, onboard, &b_topic);
    assert!(mb.payloads_under(&topic).is_empty());

    // The device follows the notice: renews over its current certificate...
    let (new_key, csr) =
        onboard_pki::device_key_and_csr(KeyAlgorithm::EcdsaP256, &a.id.to_string()).unwrap();
    let renewed = onboard
        .renew_certificate(&session(onboard, &a.cert), &csr)
        .unwrap();
    // ...reconnects with the new certificate...
    drop(ma);
    let mut ma = connect(
        broker,
        a.id,
        &renewed.certificate.pem,
        new_key.expose_secret(),
    )
    .unwrap();
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    // ...and acknowledges over it.
    let acked = onboard
        .acknowledge_rotation(&session(onboard, &renewed.certificate))
        .unwrap();
    assert_eq!(acked.state, RotationState::Ok);
    assert_eq!(rotation(onboard, a.id).state, RotationState::Ok);

    // The old certificate is in the broker's CRL and the broker refuses it.
    let (ok, crl) = crate::openssl(&[
        "crl",
        "-in",
        &broker.crl_file().display().to_string(),
        "-noout",
        "-text",
    ]);
    assert!(ok, "{crl}");
    assert!(crl.contains(a.cert.serial.as_str()), "{crl}");
    assert!(!crl.contains(renewed.certificate.serial.as_str()), "{crl}");
    let refused = connect(broker, a.id, &a.cert.pem, &a.key)
        .err()
        .expect("the old certificate still connects");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    // The new one keeps working.
    own_marker(&mut ma, onboard, &topic);
    assert_eq!(
        rotation_actions(onboard, a.id),
        vec![
            "rotation.queue",
            "rotation.start",
            "rotation.notify",
            "rotation.complete"
        ]
    );
}

/// The service account publishes a marker to `topic`; once `m` has it, any
/// earlier message to `topic` has arrived too.
fn own_marker(m: &mut Mqtt, onboard: &Onboard, topic: &str) {
    let settings = onboard.settings();
    let endpoint = onboard_core::service_endpoint(&settings.broker).unwrap();
    let mut service = Mqtt::connect(&endpoint).unwrap();
    let marker = format!("marker-{}", new_id_text());
    service.publish(topic, &marker).unwrap();
    assert!(m.expect(topic, &marker, WAIT), "the marker did not arrive");
    m.received
        .retain(|(t, p)| !(t == topic && p == marker.as_bytes()));
}

fn new_id_text() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn a_broker_down_at_the_start_is_notified_by_a_later_cycle(backend: TestBackend) {
    let mut s = setup(backend, |s| s.rotation.notify_timeout_seconds = 2);
    let a = register(&s.onboard, "SN-DOWN-A");

    // Mosquitto is down: the start happens, the notification does not.
    s.broker.kill().unwrap();
    s.onboard
        .trigger_rotation(&Actor::cli(), Some(a.id))
        .unwrap();
    let summary = s.onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (
            summary.started,
            summary.notified,
            summary.not_notified,
            summary.pending
        ),
        (1, 0, 1, 1),
        "{summary}"
    );
    let line = summary.to_string();
    assert!(
        line.starts_with(
            "rotation cycle: 0 timed out, 1 started, 0 notified, 1 not notified (broker: "
        ),
        "{line}"
    );
    assert!(line.ends_with("), 1 pending (max 1)"), "{line}");
    assert!(!line.contains("BEGIN"), "{line}");
    let r = rotation(&s.onboard, a.id);
    assert_eq!(r.state, RotationState::Pending);
    assert_eq!(r.notified_at, None);
    // Still down: the next cycle tries again and fails again.
    s.clock.advance(chrono::Duration::seconds(30));
    let summary = s.onboard.run_rotation_cycle().unwrap();
    assert_eq!((summary.started, summary.not_notified), (0, 1), "{summary}");

    // Mosquitto is back: the device subscribes, the next cycle notifies it.
    s.broker.start_again().unwrap();
    let topic = format!("iotsupport/{}/rotation", a.id);
    let mut ma = connect(&s.broker, a.id, &a.cert.pem, &a.key).unwrap();
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    s.clock.advance(chrono::Duration::seconds(30));
    let summary = s.onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (summary.started, summary.notified, summary.not_notified),
        (0, 1, 0),
        "{summary}"
    );
    let notice = next_on(&mut ma, &topic).expect("no notification after the broker came back");
    assert_eq!(notice["device_id"], a.id.to_string());
    assert_eq!(
        notice["deadline"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        r.deadline_at.unwrap()
    );
    assert_eq!(rotation(&s.onboard, a.id).notified_at, Some(s.clock.now()));
    assert_eq!(
        rotation_actions(&s.onboard, a.id),
        vec!["rotation.queue", "rotation.start", "rotation.notify"]
    );
}

/// The AES-256-GCM key of the password rotation tests.
const SECRET_KEY: &str = "8f3a1c5e7b9d0f2a4c6e8a0b2d4f6a8c0e2b4d6f8a1c3e5a7b9d1f3a5c7e9b0d";

pub fn a_password_device_rotates_its_secret_and_a_timeout_restores_the_old_one(
    backend: TestBackend,
) {
    let s = setup_listening(backend, true, |s| {
        s.rotation.secret_key = SECRET_KEY.into();
        s.rotation.timeout_seconds = 300;
    });
    let (onboard, broker) = (&s.onboard, &s.broker);
    let done = onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "pw-rot".into(),
                credential: Some("password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let id = done.device.id;
    let client = id.to_string();
    let first = done.client_secret.unwrap();
    let login =
        |secret: &SecretString| Mqtt::connect(&broker.password_endpoint(&client, secret).unwrap());
    let token = |secret: &SecretString| {
        onboard
            .issue_access_token(&client, secret.expose(), None)
            .and_then(|t| onboard.authenticate_token(t.token.expose()))
    };
    let topic = format!("iotsupport/{id}/rotation");
    let mut m = login(&first).unwrap();
    assert!(matches!(
        m.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));

    // The start sets a new secret on the broker; the device is notified on its
    // open connection.
    onboard.trigger_rotation(&Actor::cli(), Some(id)).unwrap();
    let summary = onboard.run_rotation_cycle().unwrap();
    assert_eq!((summary.started, summary.notified), (1, 1), "{summary}");
    let notice = next_on(&mut m, &topic).expect("no notification");
    assert_eq!(notice["credential"], "password");
    // Then Mosquitto reads the new password file and drops the connection it
    // no longer authenticates.
    assert!(
        m.wait_closed(WAIT).is_some(),
        "the old secret's connection stays"
    );
    assert!(
        login(&first).is_err(),
        "the broker still takes the old secret"
    );
    // The old secret still gets a token, which fetches the new secret (and
    // cannot acknowledge).
    let old_session = token(&first).unwrap();
    assert!(matches!(old_session.via, DeviceAuth::PreviousSecretToken));
    let second = onboard
        .provisioning_for(&old_session)
        .unwrap()
        .client_secret
        .expect("no new secret during the rotation");
    assert_ne!(second.expose(), first.expose());
    let err = onboard.acknowledge_rotation(&old_session).unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    // Nor may an operator set yet another secret meanwhile.
    let err = onboard.admin_provisioning(&Actor::cli(), id).unwrap_err();
    assert!(
        matches!(&err, CoreError::Conflict(m) if m.contains("rotating")),
        "{err:?}"
    );
    assert_eq!(rotation(onboard, id).state, RotationState::Pending);
    // Kept sealed: neither secret is in the rotation record in clear.
    let kept = s
        ._db
        .db
        .read(|tx| tx.rotation(id))
        .unwrap()
        .unwrap()
        .old_secret_encrypted
        .unwrap();
    for secret in [&first, &second] {
        assert!(!kept
            .windows(secret.expose().len())
            .any(|w| w == secret.expose().as_bytes()));
    }

    // The device logs in with the new secret and acknowledges with its token:
    // OK, the old secret deleted, refused by the broker and by /iot/token.
    drop(m);
    let _m = login(&second).unwrap();
    let new_session = token(&second).unwrap();
    assert!(matches!(new_session.via, DeviceAuth::Token));
    let acked = onboard.acknowledge_rotation(&new_session).unwrap();
    assert_eq!(acked.state, RotationState::Ok);
    assert!(
        login(&first).is_err(),
        "the old secret logs in after the ack"
    );
    assert!(matches!(token(&first), Err(CoreError::Unauthorized(_))));
    assert!(onboard
        .provisioning_for(&new_session)
        .unwrap()
        .client_secret
        .is_none());
    let record = s._db.db.read(|tx| tx.rotation(id)).unwrap().unwrap();
    assert_eq!(record.old_secret_encrypted, None);

    // A second rotation that times out: the secret of the first stays (it works
    // again on the broker and for /iot/token), the one set at the start stops.
    onboard.trigger_rotation(&Actor::cli(), Some(id)).unwrap();
    let summary = onboard.run_rotation_cycle().unwrap();
    assert_eq!(summary.started, 1, "{summary}");
    let third = onboard
        .provisioning_for(&token(&second).unwrap())
        .unwrap()
        .client_secret
        .unwrap();
    assert!(login(&second).is_err());
    assert!(login(&third).is_ok());
    s.clock.advance(chrono::Duration::seconds(301));
    let summary = onboard.run_rotation_cycle().unwrap();
    assert_eq!((summary.timed_out, summary.started), (1, 0), "{summary}");
    assert_eq!(rotation(onboard, id).state, RotationState::Timeout);
    assert!(login(&second).is_ok(), "the old secret does not work again");
    assert!(login(&third).is_err(), "the abandoned secret still logs in");
    assert!(matches!(token(&second).unwrap().via, DeviceAuth::Token));
    assert!(matches!(token(&third), Err(CoreError::Unauthorized(_))));
    assert_eq!(
        rotation_actions(onboard, id),
        vec![
            "rotation.queue",
            "rotation.start",
            "rotation.notify",
            "rotation.complete",
            "rotation.queue",
            "rotation.start",
            "rotation.notify",
            "rotation.timeout",
        ]
    );
}

pub fn password_devices_wait_for_a_secret_key(backend: TestBackend) {
    let s = setup(backend, |_| {});
    let done = s
        .onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "pw-nokey".into(),
                credential: Some("password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let err = s
        .onboard
        .trigger_rotation(&Actor::cli(), Some(done.device.id))
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::Conflict(m) if m.contains("rotation.secret_key")),
        "{err:?}"
    );
    assert_eq!(s.onboard.device_rotation(done.device.id).unwrap(), None);
}

/// A certificate rotation that times out, on the real broker: the certificate
/// issued during it is revoked and refused by Mosquitto, the old one connects
/// again, and the next cycle retries (and notifies again) until the device
/// completes with a new certificate.
pub fn a_certificate_timeout_leaves_the_old_certificate_working_then_a_retry_completes(
    backend: TestBackend,
) {
    // Mosquitto checks certificates and the CRL against the real clock: Onboard's
    // starts two minutes behind it, so that moving it past the one-minute
    // deadline still gives a CRL (and certificates) valid in Mosquitto's eyes.
    let s = setup(backend, |s| s.rotation.timeout_seconds = 60);
    s.clock
        .set(SystemClock.now().trunc_subsecs(0) - chrono::Duration::seconds(120));
    let (onboard, broker) = (&s.onboard, &s.broker);
    let a = register(onboard, "SN-TIMEOUT-A");
    let topic = format!("iotsupport/{}/rotation", a.id);
    let mut ma = connect(broker, a.id, &a.cert.pem, &a.key).unwrap();
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    onboard.trigger_rotation(&Actor::cli(), Some(a.id)).unwrap();
    let first = onboard.run_rotation_cycle().unwrap();
    assert_eq!((first.started, first.notified), (1, 1), "{first}");
    assert_eq!(next_on(&mut ma, &topic).unwrap()["attempt"], 1);

    // The device renews but never uses the new certificate.
    let (abandoned_key, csr) =
        onboard_pki::device_key_and_csr(KeyAlgorithm::EcdsaP256, &a.id.to_string()).unwrap();
    let abandoned = onboard
        .renew_certificate(&session(onboard, &a.cert), &csr)
        .unwrap()
        .certificate;
    drop(ma);

    // The deadline passes: TIMEOUT, the abandoned certificate revoked and in the
    // broker's CRL; the old certificate works again on the broker.
    s.clock.advance(chrono::Duration::seconds(61));
    let timed_out = onboard.run_rotation_cycle().unwrap();
    assert_eq!(
        (timed_out.timed_out, timed_out.started),
        (1, 0),
        "{timed_out}"
    );
    assert_eq!(rotation(onboard, a.id).state, RotationState::Timeout);
    let refused = connect(broker, a.id, &abandoned.pem, abandoned_key.expose_secret())
        .err()
        .expect("the abandoned certificate still connects");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    let mut ma = connect(broker, a.id, &a.cert.pem, &a.key).expect("the old certificate");
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    own_marker(&mut ma, onboard, &topic);

    // The next cycle retries and notifies the second attempt.
    let retry = onboard.run_rotation_cycle().unwrap();
    assert_eq!((retry.started, retry.notified), (1, 1), "{retry}");
    let entry = rotation(onboard, a.id);
    assert_eq!((entry.state, entry.attempts), (RotationState::Pending, 2));
    assert_eq!(next_on(&mut ma, &topic).unwrap()["attempt"], 2);

    // This time the device completes: renew, reconnect with the new certificate,
    // acknowledge; the old certificate is then refused.
    let (new_key, csr) =
        onboard_pki::device_key_and_csr(KeyAlgorithm::EcdsaP256, &a.id.to_string()).unwrap();
    let renewed = onboard
        .renew_certificate(&session(onboard, &a.cert), &csr)
        .unwrap()
        .certificate;
    drop(ma);
    let mut ma = connect(broker, a.id, &renewed.pem, new_key.expose_secret()).unwrap();
    assert!(matches!(
        ma.subscribe(&topic).as_slice(),
        [SubscribeReasonCode::Success(_)]
    ));
    let acked = onboard
        .acknowledge_rotation(&session(onboard, &renewed))
        .unwrap();
    assert_eq!(acked.state, RotationState::Ok);
    let refused = connect(broker, a.id, &a.cert.pem, &a.key)
        .err()
        .expect("the old certificate still connects after the rotation");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    own_marker(&mut ma, onboard, &topic);
    assert_eq!(
        rotation_actions(onboard, a.id),
        vec![
            "rotation.queue",
            "rotation.start",
            "rotation.notify",
            "rotation.timeout",
            "rotation.start",
            "rotation.notify",
            "rotation.complete"
        ]
    );
}
