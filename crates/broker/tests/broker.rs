//! Integration tests of the broker crate against real Mosquitto processes (each
//! test starts its own on free loopback ports; see `onboard_broker::testing`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onboard_broker::testing::{Auth, TestBroker, ROTATION_PREFIX, SERVICE_USER};
use onboard_broker::{hash_password, MosquittoDynsec, MosquittoFile, StatusConfig, StatusListener};
use onboard_domain::{BrokerAccess, PortError, RevocationReason, SecretString};
use onboard_pki::{CertificateAuthority, CrlParams, RevokedCertificate};
use rumqttc::SubscribeReasonCode;

use support::{broker, ca, grant, now, Device, Mqtt, Registry, WAIT};

/// A CRL listing these devices' certificates.
fn crl_revoking(ca: &CertificateAuthority, devices: &[&Device]) -> String {
    let revoked: Vec<RevokedCertificate> = devices
        .iter()
        .map(|d| RevokedCertificate {
            serial: d.cred.certificate.serial.clone(),
            revoked_at: now() - chrono::Duration::minutes(1),
            reason: RevocationReason::KeyCompromise,
        })
        .collect();
    ca.build_crl(&CrlParams {
        number: 2,
        this_update: now() - chrono::Duration::minutes(1),
        next_update: now() + chrono::Duration::days(1),
        revoked: &revoked,
    })
    .unwrap()
    .pem
}

fn granted_ok(codes: &[SubscribeReasonCode]) -> bool {
    codes
        .iter()
        .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
}

/// `conn` publishes a marker to its own topic and waits for it on its own
/// subscription: every message routed to `conn` before the marker has then
/// arrived too.
fn own_marker(conn: &mut Mqtt, dev: &Device, tag: &str) {
    let topic = dev.topic("marker");
    conn.publish(&topic, tag).unwrap();
    assert!(conn.expect(&topic, tag, WAIT), "marker {tag} not delivered");
}

/// The service account, subscribed to every device topic.
fn observer(broker: &TestBroker) -> Mqtt {
    let mut o = Mqtt::connect(&broker.service_endpoint()).unwrap();
    assert!(granted_ok(&o.subscribe("devices/#")));
    o
}

/// The broker refused a login: CONNACK return code 5, "not authorised" (what
/// Mosquitto 2.0 answers for an unknown user or a wrong password).
fn not_authorised(err: &str) -> bool {
    err.contains("ConnectionRefused(NotAuthorized)")
}

/// A new connection attempt with the device's certificate fails; the error text.
fn refused(dev: &Device, broker: &TestBroker) -> String {
    match Mqtt::connect(&dev.endpoint(broker)) {
        Ok(_) => panic!("device {} could connect", dev.client_id()),
        Err(e) => e,
    }
}

#[test]
fn file_devices_reach_only_their_own_topics() {
    let ca = ca();
    let broker = broker(&ca, Auth::Files, false);
    let (a, b) = (Device::new(&ca, 1), Device::new(&ca, 2));
    let registry = Registry::default();
    registry.add(&a.grant);
    registry.add(&b.grant);
    let files = MosquittoFile::new(broker.file_config(), registry.loader());
    files
        .grant_many(&[a.grant.clone(), b.grant.clone()])
        .unwrap();

    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    assert!(granted_ok(&ma.subscribe(&a.topic("#"))));
    assert!(granted_ok(&mb.subscribe(&b.topic("#"))));
    // A may ask for B's topics; whatever the SUBACK says, nothing of B's arrives.
    let _ = ma.subscribe(&b.topic("#"));

    // A reaches its own topic.
    ma.publish(&a.topic("hello"), "a1").unwrap();
    assert!(ma.expect(&a.topic("hello"), "a1", WAIT));

    // A's publish to B's topic is dropped.
    ma.publish(&b.topic("x"), "from-a").unwrap();
    own_marker(&mut mb, &b, "b-marker");
    assert!(!mb.has(&b.topic("x"), "from-a"));

    // B's messages never reach A's subscription to B's topics.
    mb.publish(&b.topic("data"), "b1").unwrap();
    own_marker(&mut ma, &a, "a-marker");
    assert!(ma
        .payloads_under(&format!("devices/{}/", b.client_id()))
        .is_empty());
    assert!(mb.has(&b.topic("data"), "b1"));
}

#[test]
fn file_revocation_cuts_an_open_connection_without_restarting_mosquitto() {
    let ca = ca();
    let mut broker = broker(&ca, Auth::Files, false);
    let pid = broker.pid();
    let (a, b) = (Device::new(&ca, 1), Device::new(&ca, 2));
    let registry = Registry::default();
    registry.add(&a.grant);
    registry.add(&b.grant);
    let mut config = broker.file_config();
    // The observer may also write, to test A's subscription after revocation.
    config.acl_preamble = format!("user {SERVICE_USER}\ntopic readwrite devices/#\n");
    let files = MosquittoFile::new(config, registry.loader());
    files
        .grant_many(&[a.grant.clone(), b.grant.clone()])
        .unwrap();

    let mut obs = observer(&broker);
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    assert!(granted_ok(&ma.subscribe(&a.topic("#"))));
    assert!(granted_ok(&mb.subscribe(&b.topic("#"))));
    ma.publish(&a.topic("t"), "before").unwrap();
    assert!(ma.expect(&a.topic("t"), "before", WAIT));
    assert!(obs.expect(&a.topic("t"), "before", WAIT));

    // Revoke: the registry drops A, then the broker access and the CRL.
    registry.remove(a.id());
    files.revoke(a.id()).unwrap();
    files.publish_crl(&crl_revoking(&ca, &[&a])).unwrap();

    // Once the calls return, A's open connection (still open: file mode cannot
    // disconnect it) can no longer receive on its subscription...
    obs.publish(&a.topic("cmd"), "to-a").unwrap();
    // ...nor publish. Mosquitto acknowledges a denied publish too; A's PUBACK
    // follows, on A's connection, anything the broker routed to A before it
    // (to-a, had it been delivered).
    ma.publish(&a.topic("t"), "after").unwrap();
    assert!(!ma.has(&a.topic("cmd"), "to-a"));
    // B publishes after A's publish was handled: once B's message reaches the
    // observer, A's would have arrived before it.
    mb.publish(&b.topic("t"), "b-after").unwrap();
    assert!(obs.expect(&b.topic("t"), "b-after", WAIT));
    assert!(!obs.has(&a.topic("t"), "after"));
    assert!(!ma.has(&a.topic("t"), "after"));
    obs.publish(&b.topic("cmd"), "to-b").unwrap();
    assert!(mb.expect(&b.topic("cmd"), "to-b", WAIT));

    // A new connection is refused at the TLS handshake: the certificate is revoked.
    let err = refused(&a, &broker);
    assert!(err.to_lowercase().contains("revoked"), "{err}");
    // B is unaffected, and Mosquitto is the same process.
    assert!(Mqtt::connect(&b.endpoint(&broker)).is_ok());
    assert!(broker.is_running());
    assert_eq!(broker.pid(), pid);
}

#[test]
fn dynsec_revocation_kicks_the_device_and_the_crl_refuses_it() {
    let ca = ca();
    let mut broker = broker(&ca, Auth::Dynsec, true);
    let pid = broker.pid();
    let (a, b) = (Device::new(&ca, 1), Device::new(&ca, 2));
    let dynsec = MosquittoDynsec::new(broker.dynsec_config().unwrap());
    dynsec.grant(&a.grant).unwrap();
    dynsec.grant(&b.grant).unwrap();

    let mut obs = observer(&broker);
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    assert!(granted_ok(&ma.subscribe(&a.topic("#"))));
    assert!(granted_ok(&mb.subscribe(&b.topic("#"))));
    ma.publish(&a.topic("t"), "a1").unwrap();
    assert!(ma.expect(&a.topic("t"), "a1", WAIT));
    assert!(obs.expect(&a.topic("t"), "a1", WAIT));
    // A cannot publish into B's topics.
    ma.publish(&b.topic("x"), "from-a").unwrap();
    own_marker(&mut mb, &b, "b-marker");
    assert!(!mb.has(&b.topic("x"), "from-a"));

    dynsec.revoke(a.id()).unwrap();
    dynsec.publish_crl(&crl_revoking(&ca, &[&a])).unwrap();
    // deleteClient disconnects A.
    let closed = ma.wait_closed(WAIT);
    assert!(closed.is_some(), "A is still connected");
    let err = refused(&a, &broker);
    assert!(err.to_lowercase().contains("revoked"), "{err}");
    // Revoking again is not an error.
    dynsec.revoke(a.id()).unwrap();

    // B still works; Mosquitto is the same process.
    own_marker(&mut mb, &b, "b-still");
    assert!(broker.is_running());
    assert_eq!(broker.pid(), pid);
}

#[test]
fn dynsec_sync_removes_unlisted_devices_and_leaves_unchanged_ones_connected() {
    let ca = ca();
    let broker = broker(&ca, Auth::Dynsec, true);
    let (a, b, c) = (
        Device::new(&ca, 1),
        Device::new(&ca, 2),
        Device::new(&ca, 3),
    );
    let dynsec = MosquittoDynsec::new(broker.dynsec_config().unwrap());
    // C watches A's telemetry topic, which A may not publish to yet.
    let telemetry = format!("telemetry/{}", a.client_id());
    let mut c_grant = c.grant.clone();
    c_grant.subscribe.push(telemetry.clone());
    dynsec
        .grant_many(&[a.grant.clone(), b.grant.clone(), c_grant.clone()])
        .unwrap();
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    let mut mc = Mqtt::connect(&c.endpoint(&broker)).unwrap();
    assert!(granted_ok(&ma.subscribe(&a.topic("#"))));
    assert!(granted_ok(&mb.subscribe(&b.topic("#"))));
    assert!(granted_ok(&mc.subscribe(&c.topic("#"))));
    assert!(granted_ok(&mc.subscribe(&telemetry)));
    // A may not subscribe to its telemetry topic: the SUBACK says so.
    assert_eq!(ma.subscribe(&telemetry), vec![SubscribeReasonCode::Failure]);

    // Before the re-grant, A's telemetry is dropped: C's own marker, published
    // after A's message was handled, arrives; A's message does not.
    ma.publish(&telemetry, "t0").unwrap();
    own_marker(&mut mc, &c, "c-0");
    assert!(!mc.has(&telemetry, "t0"));

    // Re-granting A with one more topic changes its role in place: A stays
    // connected and its next message to the new topic is delivered.
    let mut wider = a.grant.clone();
    wider.publish.push(telemetry.clone());
    dynsec.grant(&wider).unwrap();
    ma.publish(&telemetry, "t1").unwrap();
    assert!(mc.expect(&telemetry, "t1", WAIT));
    own_marker(&mut ma, &a, "a-1");
    assert!(ma.closed.is_none());

    // sync with A and C only: B is deleted (and kicked), A is untouched.
    dynsec.sync(&[wider, c_grant]).unwrap();
    assert!(mb.wait_closed(WAIT).is_some());
    own_marker(&mut ma, &a, "a-2");
    assert!(ma.closed.is_none());

    // B's certificate is still valid (no CRL here), but B has no client any more:
    // whatever it may connect as, it can publish nothing. The observer subscribes
    // first, then B tries, then A's marker (which the observer may receive) shows
    // that everything the broker routed before it has arrived.
    let mut obs = observer(&broker);
    match Mqtt::connect(&b.endpoint(&broker)) {
        Ok(mut again) => {
            if let Err(e) = again.publish(&b.topic("t"), "ghost") {
                // No PUBACK: the broker must have closed the connection instead
                // (a publish still in flight would defeat the marker).
                assert!(
                    again.closed.is_some(),
                    "ghost publish neither acknowledged nor refused: {e}"
                );
            }
        }
        Err(e) => assert!(e.contains("ConnectionRefused"), "{e}"),
    }
    own_marker(&mut ma, &a, "a-3");
    assert!(obs.expect(&a.topic("marker"), "a-3", WAIT));
    assert!(!obs.has(&b.topic("t"), "ghost"));
    // An empty sync removes A too.
    dynsec.sync(&[]).unwrap();
    assert!(ma.wait_closed(WAIT).is_some());
}

#[test]
fn password_devices_log_in_with_the_file_and_the_cli_and_wrong_passwords_fail() {
    let ca = ca();
    let broker = broker(&ca, Auth::Files, true);
    let port = broker.password_port.unwrap().to_string();
    let cafile = broker.ca_file();
    let registry = Registry::default();
    let id = "3f0c2a8e-0000-7000-8000-000000000077".parse().unwrap();
    let mut g = grant(id, 77);
    g.password_hash = Some(hash_password("correct horse").unwrap());
    registry.add(&g);
    let files = MosquittoFile::new(broker.file_config(), registry.loader());
    files.grant(&g).unwrap();

    let user = g.client_id.clone();
    let good = broker
        .password_endpoint(&user, &SecretString::new("correct horse"))
        .unwrap();
    let mut m = Mqtt::connect(&good).unwrap();
    assert!(granted_ok(&m.subscribe(&format!("devices/{user}/#"))));
    m.publish(&format!("devices/{user}/x"), "pw-ok").unwrap();
    assert!(m.expect(&format!("devices/{user}/x"), "pw-ok", WAIT));

    let bad = broker
        .password_endpoint(&user, &SecretString::new("wrong"))
        .unwrap();
    let err = Mqtt::connect(&bad)
        .err()
        .expect("a wrong password logged in");
    assert!(not_authorised(&err), "{err}");

    // The mosquitto command-line clients agree.
    let cli = |password: &str, topic: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-u",
                &user,
                "--cafile",
            ])
            .arg(&cafile)
            .args(["-P", password, "-t", topic, "-m", "cli"])
            .output()
            .unwrap()
    };
    assert!(cli("correct horse", &format!("devices/{user}/cli"))
        .status
        .success());
    assert!(m.expect(&format!("devices/{user}/cli"), "cli", WAIT));
    let wrong = cli("wrong", &format!("devices/{user}/cli"));
    assert!(!wrong.status.success());
    let text = String::from_utf8_lossy(&wrong.stderr);
    assert!(text.contains("not authorised"), "{text}");
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            &user,
            "-P",
            "wrong",
            "--cafile",
        ])
        .arg(&cafile)
        .args(["-t", "devices/#", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    assert!(!sub.status.success());
    let text = String::from_utf8_lossy(&sub.stderr);
    assert!(text.contains("not authorised"), "{text}");

    // Revoking removes the password line: a new login fails.
    registry.remove(id);
    files.revoke(id).unwrap();
    let err = Mqtt::connect(&good)
        .err()
        .expect("a revoked password logged in");
    assert!(not_authorised(&err), "{err}");
}

#[test]
fn dynsec_password_devices_get_their_password_at_grant_time() {
    let ca = ca();
    let broker = broker(&ca, Auth::Dynsec, true);
    let id = "3f0c2a8e-0000-7000-8000-000000000078".parse().unwrap();
    let g = grant(id, 78);
    let dynsec = MosquittoDynsec::new(broker.dynsec_config().unwrap());
    dynsec.grant(&g).unwrap();
    let password = SecretString::new("s3cret-token");
    dynsec.set_password(&g.client_id, &password).unwrap();

    let mut m = Mqtt::connect(&broker.password_endpoint(&g.client_id, &password).unwrap()).unwrap();
    let topic = format!("devices/{}/x", g.client_id);
    assert!(granted_ok(
        &m.subscribe(&format!("devices/{}/#", g.client_id))
    ));
    m.publish(&topic, "ok").unwrap();
    assert!(m.expect(&topic, "ok", WAIT));
    let wrong = broker
        .password_endpoint(&g.client_id, &SecretString::new("nope"))
        .unwrap();
    let err = Mqtt::connect(&wrong)
        .err()
        .expect("a wrong password logged in");
    assert!(not_authorised(&err), "{err}");
    // A client that was never granted has nothing to set a password on.
    match dynsec.set_password("not-granted", &SecretString::new("x")) {
        Err(PortError::Unavailable(m)) => assert!(
            m.contains("setClientPassword") && m.contains("not found"),
            "{m}"
        ),
        other => panic!("expected the plugin's \"not found\", got {other:?}"),
    }
}

/// A device's rotation topic under the test broker's prefix.
fn rotation_topic(dev: &Device) -> String {
    format!("{ROTATION_PREFIX}/{}/rotation", dev.client_id())
}

/// The grants Onboard writes: each device may also read its own rotation topic.
/// Then each device subscribes to its own (granted) and to the other's (refused);
/// the service account publishes to both and only the owner gets its notice (A
/// is subscribed to B's topic and to the wildcard all the while); a
/// device cannot publish into another device's rotation topic. Markers decide
/// what did not arrive.
fn devices_read_only_their_own_rotation_topic(auth: Auth) {
    let ca = ca();
    let broker = broker(&ca, auth, auth == Auth::Dynsec);
    let (mut a, mut b) = (Device::new(&ca, 1), Device::new(&ca, 2));
    for d in [&mut a, &mut b] {
        let topic = rotation_topic(d);
        d.grant.subscribe.push(topic);
    }
    let registry = Registry::default();
    registry.add(&a.grant);
    registry.add(&b.grant);
    let access: Box<dyn BrokerAccess> = match auth {
        Auth::Files => Box::new(MosquittoFile::new(broker.file_config(), registry.loader())),
        Auth::Dynsec => Box::new(MosquittoDynsec::new(broker.dynsec_config().unwrap())),
    };
    access
        .grant_many(&[a.grant.clone(), b.grant.clone()])
        .unwrap();

    let mut service = Mqtt::connect(&broker.service_endpoint()).unwrap();
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    assert!(granted_ok(&ma.subscribe(&rotation_topic(&a))));
    assert!(granted_ok(&mb.subscribe(&rotation_topic(&b))));
    // A asks for B's rotation topic and for every device's. The plugin refuses
    // both in the SUBACK; with the ACL file Mosquitto 2.0 grants the
    // subscription and checks `read` for each message it would deliver.
    for filter in [rotation_topic(&b), format!("{ROTATION_PREFIX}/+/rotation")] {
        let codes = ma.subscribe(&filter);
        match auth {
            Auth::Dynsec => assert!(
                matches!(codes.as_slice(), [SubscribeReasonCode::Failure]),
                "{filter}: {codes:?}"
            ),
            Auth::Files => assert!(granted_ok(&codes), "{filter}: {codes:?}"),
        }
    }

    // The service account publishes B's notice, then A's: A gets its own and,
    // once it has, would have had B's before it.
    service.publish(&rotation_topic(&b), "notice-b").unwrap();
    service.publish(&rotation_topic(&a), "notice-a").unwrap();
    assert!(ma.expect(&rotation_topic(&a), "notice-a", WAIT));
    assert!(mb.expect(&rotation_topic(&b), "notice-b", WAIT));
    assert!(!ma.has(&rotation_topic(&b), "notice-b"));
    assert!(ma.payloads_under(&rotation_topic(&b)).is_empty());

    // B cannot forge a notice for A: its publish (acknowledged, dropped) is
    // handled before the service's marker, which A receives alone.
    mb.publish(&rotation_topic(&a), "forged").unwrap();
    service.publish(&rotation_topic(&a), "marker").unwrap();
    assert!(ma.expect(&rotation_topic(&a), "marker", WAIT));
    assert!(!ma.has(&rotation_topic(&a), "forged"));
}

#[test]
fn file_devices_read_only_their_own_rotation_topic() {
    devices_read_only_their_own_rotation_topic(Auth::Files);
}

#[test]
fn dynsec_devices_read_only_their_own_rotation_topic() {
    devices_read_only_their_own_rotation_topic(Auth::Dynsec);
}

#[test]
fn concurrent_grants_share_rewrites_and_a_bulk_import_is_one() {
    let ca = ca();
    let broker = broker(&ca, Auth::Files, false);
    let registry = Registry::default();
    // The test holds the first rewrite in the loader while the other grants
    // arrive.
    let (loader, entered, release) = registry.gated_loader();
    let files = Arc::new(MosquittoFile::new(broker.file_config(), loader));

    let spawn = |n: u32| {
        let (files, registry) = (files.clone(), registry.clone());
        std::thread::spawn(move || {
            let id = format!("3f0c2a8e-0000-7000-8000-{:012}", 100 + n)
                .parse()
                .unwrap();
            let g = grant(id, 100 + n);
            registry.add(&g);
            files.grant(&g).unwrap();
        })
    };
    let mut threads = vec![spawn(0)];
    entered.recv_timeout(WAIT).unwrap();
    threads.extend((1..20).map(spawn));
    assert!(
        files.wait_for_waiting_calls(19, WAIT),
        "{} calls waiting",
        files.waiting_calls()
    );
    release.send(()).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // The held rewrite, and one for the 19 grants that waited behind it.
    let after_threads = files.rewrites();
    assert_eq!(after_threads, 2);
    let acl = std::fs::read_to_string(broker.acl_file()).unwrap();
    assert_eq!(acl.matches("\nuser 3f0c2a8e").count(), 20);

    let bulk: Vec<_> = (0..10_000u32)
        .map(|n| {
            let id = format!("3f0c2a8e-0000-7000-8001-{n:012}").parse().unwrap();
            grant(id, 10_000 + n)
        })
        .collect();
    for g in &bulk {
        registry.add(g);
    }
    files.grant_many(&bulk).unwrap();
    assert_eq!(files.rewrites(), after_threads + 1);
    let acl = std::fs::read_to_string(broker.acl_file()).unwrap();
    assert_eq!(acl.matches("\nuser 3f0c2a8e").count(), 10_020);

    // Mosquitto enforces the big file: the last imported device may connect to
    // its topic (it has a certificate issued for its id).
    let last = bulk.last().unwrap();
    let cred = ca
        .issue_with_new_key(
            onboard_domain::KeyAlgorithm::EcdsaP256,
            &onboard_pki::IssueParams {
                device_id: last.device_id,
                validity_days: 1,
                public_base_url: "https://onboard.test",
                now: now(),
            },
        )
        .unwrap();
    let ep = broker.device_endpoint(
        &last.client_id,
        &cred.certificate.pem,
        cred.private_key.expose_secret(),
    );
    let mut m = Mqtt::connect(&ep).unwrap();
    let topic = format!("devices/{}/x", last.client_id);
    assert!(granted_ok(&m.subscribe(&topic)));
    m.publish(&topic, "bulk").unwrap();
    assert!(m.expect(&topic, "bulk", WAIT));
}

/// A Files broker with these devices granted, and a status listener on it whose
/// batches arrive on the receiver; the listener's subscription is acknowledged.
fn status_setup(
    ca: &CertificateAuthority,
    devices: &[&Device],
) -> (TestBroker, StatusListener, Receiver<Vec<(String, Instant)>>) {
    let broker = broker(ca, Auth::Files, false);
    let registry = Registry::default();
    for d in devices {
        registry.add(&d.grant);
    }
    let files = MosquittoFile::new(broker.file_config(), registry.loader());
    files
        .grant_many(&devices.iter().map(|d| d.grant.clone()).collect::<Vec<_>>())
        .unwrap();
    let (broker, listener, rx) = start_listener(broker);
    (broker, listener, rx)
}

fn start_listener(
    broker: TestBroker,
) -> (TestBroker, StatusListener, Receiver<Vec<(String, Instant)>>) {
    let (tx, rx) = channel();
    let mut config = StatusConfig::new(broker.service_endpoint());
    config.max_delay = Duration::from_millis(50);
    let listener = StatusListener::start(config, move |batch| {
        let _ = tx.send(batch);
    })
    .unwrap();
    listener.wait_subscribed(WAIT).unwrap();
    assert!(listener.is_subscribed());
    (broker, listener, rx)
}

/// The client ids of the batches received until one holds `marker`, in order.
fn ids_until(rx: &Receiver<Vec<(String, Instant)>>, marker: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let batch = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no batch with {marker} ({e}); so far {ids:?}"));
        ids.extend(batch.into_iter().map(|(id, _)| id));
        if ids.iter().any(|id| id == marker) {
            return ids;
        }
    }
}

#[test]
fn status_listener_reports_the_client_id_of_a_status_message() {
    let ca = ca();
    let (a, b) = (Device::new(&ca, 5), Device::new(&ca, 6));
    let (broker, listener, rx) = status_setup(&ca, &[&a, &b]);

    // Subscribed: one status message is enough.
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    ma.publish(&a.topic("status"), "online").unwrap();
    let batch = rx.recv_timeout(WAIT).expect("no status batch");
    let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec![a.client_id()]);

    // Other topics of the device are no status. B's status message, published
    // after A's telemetry was handled, reaches the listener after it would have.
    ma.publish(&a.topic("telemetry"), "x").unwrap();
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    mb.publish(&b.topic("status"), "online").unwrap();
    assert_eq!(ids_until(&rx, b.client_id()), vec![b.client_id()]);
    listener.stop();
}

#[test]
fn status_listener_ignores_retained_status_messages() {
    let ca = ca();
    let (a, b) = (Device::new(&ca, 7), Device::new(&ca, 8));
    let broker = broker(&ca, Auth::Files, false);
    let registry = Registry::default();
    registry.add(&a.grant);
    registry.add(&b.grant);
    let files = MosquittoFile::new(broker.file_config(), registry.loader());
    files
        .grant_many(&[a.grant.clone(), b.grant.clone()])
        .unwrap();

    // A's retained status is on the broker before the listener subscribes...
    let mut ma = Mqtt::connect(&a.endpoint(&broker)).unwrap();
    ma.publish_retained(&a.topic("status"), "online").unwrap();
    // ...and the broker keeps it: a new subscriber gets it, flagged retained.
    let mut check = Mqtt::connect(&broker.service_endpoint()).unwrap();
    assert!(granted_ok(&check.subscribe(&a.topic("status"))));
    assert!(check.expect(&a.topic("status"), "online", WAIT));
    drop(check);

    let (broker, listener, rx) = start_listener(broker);
    // The broker sends retained messages right after the SUBACK, before routing
    // any later message: once B's live status is reported, A's retained one
    // has been seen and ignored.
    let mut mb = Mqtt::connect(&b.endpoint(&broker)).unwrap();
    mb.publish(&b.topic("status"), "online").unwrap();
    assert_eq!(ids_until(&rx, b.client_id()), vec![b.client_id()]);

    // A live message of A counts, even one sent with the retain flag.
    ma.publish_retained(&a.topic("status"), "online").unwrap();
    assert_eq!(ids_until(&rx, a.client_id()), vec![a.client_id()]);
    listener.stop();
}

/// A Mosquitto configuration as (option, value) lines: the global part, then one
/// part per `listener`.
fn conf_sections(conf: &str) -> Vec<Vec<(String, String)>> {
    let mut sections = vec![Vec::new()];
    for line in conf.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if key == "listener" {
            sections.push(Vec::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push((key.to_owned(), value.trim().to_owned()));
        }
    }
    sections
}

/// What must be the same: every option, and every value that is not a path,
/// port or log destination (those differ between a test's temp dir and the
/// compose volumes). `user` (the test runs Mosquitto as root) and the log
/// options are not security settings.
fn comparable(section: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = section
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "log_dest" | "log_type"))
        .map(|(k, v)| {
            let value = if v.starts_with('/') || k == "listener" {
                "<path or port>".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), value)
        })
        .collect();
    out.sort();
    out
}

/// deploy/compose/mosquitto.conf is the configuration the broker tests run:
/// the same global options and the same mTLS listener (CA, CRL, required
/// client certificates, identity as username and client id), in file mode.
#[test]
fn compose_mosquitto_conf_is_the_tested_one() {
    let ca = ca();
    let broker = broker(&ca, Auth::Files, false);
    let tested = std::fs::read_to_string(broker.dir().join("mosquitto.conf")).unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/compose/mosquitto.conf"
    ))
    .unwrap();
    let (tested, shipped) = (conf_sections(&tested), conf_sections(&shipped));
    assert_eq!(shipped.len(), 2, "one global part and the mTLS listener");
    assert_eq!(tested.len(), shipped.len());
    // The test writes acl_file/password_file after the listener: options
    // without a listener scope count as global either way
    // (per_listener_settings false).
    let scoped = [
        "cafile",
        "certfile",
        "keyfile",
        "crlfile",
        "require_certificate",
        "use_identity_as_username",
        "use_username_as_clientid",
        "listener",
    ];
    let split = |sections: &[Vec<(String, String)>]| {
        let all: Vec<(String, String)> = sections.iter().flatten().cloned().collect();
        let (listener, global): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(k, _)| scoped.contains(&k.as_str()));
        (comparable(&global), comparable(&listener))
    };
    let (tested_global, tested_listener) = split(&tested);
    let (shipped_global, shipped_listener) = split(&shipped);
    assert_eq!(shipped_global, tested_global, "global options");
    assert_eq!(shipped_listener, tested_listener, "the mTLS listener");
    for must in [
        "require_certificate",
        "use_identity_as_username",
        "crlfile",
        "cafile",
    ] {
        assert!(shipped_listener.iter().any(|(k, _)| k == must), "{must}");
    }
}
