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
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.database.url = db.url.clone();
    settings.ca.dir = dir.path().join("ca").display().to_string();
    settings.broker.kind = onboard_core::settings::BrokerKind::None;
    let ca = Onboard::open(settings.clone()).unwrap().ca().unwrap();
    let broker = TestBroker::start(&TestBrokerSpec {
        ca: &ca,
        now: SystemClock.now(),
        auth: Auth::Files,
        password_listener: false,
    })
    .unwrap();
    settings.broker.kind = onboard_core::settings::BrokerKind::MosquittoFile;
    settings.broker.acl_file = broker.acl_file().display().to_string();
    settings.broker.password_file = broker.password_file().display().to_string();
    settings.broker.crl_file = broker.crl_file().display().to_string();
    settings.broker.reload_pid_file = broker.pid_file().display().to_string();
    let onboard = Onboard::open(settings).unwrap();
    (onboard, broker, db, dir)
}

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
    let key = onboard
        .create_key_batch(
            &Actor::cli(),
            &KeyBatchRequest {
                batch: "b".into(),
                count: 1,
                max_uses: 5,
                valid_days: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
        .secret;
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ma.publish(&format!("devices/{a}/status"), "online")
            .unwrap();
        if onboard.device(a).unwrap().device.status == DeviceStatus::Active {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "device A was never marked active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    listener.stop();
    assert_eq!(
        onboard.device(b).unwrap().device.status,
        DeviceStatus::Registered
    );

    // Revocation: within a second A's open connection can no longer use its topics,
    // and a new connection is refused; Mosquitto keeps running.
    onboard
        .revoke_device(&Actor::cli(), a, RevocationReason::KeyCompromise)
        .unwrap();
    let topic = format!("devices/{a}/telemetry");
    let _ = ma.publish(&topic, "after");
    assert!(
        !ma.expect(&topic, "after", Duration::from_secs(1)),
        "a revoked device still reaches its topic"
    );
    let refused = connect(&broker, a, &a_cert, &a_key)
        .err()
        .expect("a revoked device could connect");
    assert!(
        refused.to_lowercase().contains("revoked") || refused.contains("certificate"),
        "{refused}"
    );
    // B is untouched.
    mb.publish(&format!("devices/{b}/marker"), "m2").unwrap();
    assert!(mb.expect(&format!("devices/{b}/marker"), "m2", Duration::from_secs(5)));
    assert_eq!(broker.pid(), pid);

    // acl sync writes the same state from scratch.
    let synced = onboard.acl_sync().unwrap();
    assert_eq!(synced.granted, 1);
    let acl = std::fs::read_to_string(broker.acl_file()).unwrap();
    assert!(
        acl.contains(&b.to_string()) && !acl.contains(&a.to_string()),
        "{acl}"
    );
}
