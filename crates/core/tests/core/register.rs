//! Self-registration through `Onboard::register`, on both backends.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Mutex};

use chrono::Duration;
use onboard_core::domain::*;
use onboard_core::{Actor, CoreError, InternalIssuer, KeyBatchRequest, RegisterRequest};
use onboard_registry::testing::TestBackend;

use super::{fixture, openssl, write, Fixture};

/// Makes a key and CSR with the openssl CLI; returns the CSR PEM.
pub fn openssl_csr(dir: &std::path::Path, name: &str, newkey: &[&str]) -> String {
    let key = dir.join(format!("{name}.key")).display().to_string();
    let csr = dir.join(format!("{name}.csr")).display().to_string();
    let mut args = vec![
        "req",
        "-new",
        "-nodes",
        "-subj",
        "/CN=whatever-the-device-says",
    ];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    let (ok, out) = openssl(&args);
    assert!(ok, "{out}");
    std::fs::read_to_string(&csr).unwrap()
}

pub fn batch(f: &Fixture, max_uses: u32) -> String {
    let keys = f
        .onboard
        .create_key_batch(
            &Actor::cli(),
            &KeyBatchRequest {
                batch: "line7".into(),
                count: 1,
                max_uses,
                valid_days: Some(30),
                ..Default::default()
            },
        )
        .unwrap();
    keys[0].secret.expose().to_owned()
}

pub fn request(key: &str, serial: &str, csr: Option<String>) -> RegisterRequest {
    RegisterRequest {
        key: Some(SecretString::new(key)),
        serial: serial.into(),
        model: None,
        firmware_version: Some("1.4.2".into()),
        csr,
        metadata: Some(serde_json::json!({"line": "7"})),
        remote_addr: Some("127.0.0.1".into()),
        batch: None,
    }
}

pub fn key_uses(f: &Fixture) -> i32 {
    let keys = f
        .onboard
        .list_keys(&BootstrapKeyFilter::default(), &PageRequest::default())
        .unwrap();
    keys.items.iter().map(|k| k.uses).sum()
}

pub fn devices(f: &Fixture) -> Vec<Device> {
    f.onboard
        .devices(&DeviceFilter::default(), &PageRequest::first(500).unwrap())
        .unwrap()
        .items
}

pub fn last_audit(f: &Fixture) -> AuditEvent {
    f.onboard
        .audit_events(&AuditFilter::default(), &PageRequest::first(1).unwrap())
        .unwrap()
        .items
        .remove(0)
}

pub fn a_device_registers_with_a_csr_and_the_certificate_verifies(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 5);
    let csr = openssl_csr(
        f.dir.path(),
        "dev",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let r = f
        .onboard
        .register(request(&key, "SN-000123", Some(csr)))
        .unwrap();
    assert!(r.private_key_pem.is_none());
    assert_eq!(r.device.serial.as_str(), "SN-000123");
    assert_eq!(r.device.status, DeviceStatus::Registered);
    assert_eq!(r.device.batch.as_deref(), Some("line7"));
    assert_eq!(r.certificate.subject, format!("CN={}", r.device.id));
    assert_eq!(r.mqtt.client_id, r.device.id.to_string());
    assert_eq!(r.mqtt.publish, vec![format!("devices/{}/#", r.device.id)]);
    let chain = write(f.dir.path(), "chain.pem", &r.ca_chain_pem);
    let cert = write(f.dir.path(), "dev.crt", &r.certificate.pem);
    // At the fixture's time, not today's: the clock is fixed.
    let at = f.clock.now().timestamp().to_string();
    let (ok, out) = openssl(&[
        "verify",
        "-attime",
        &at,
        "-CAfile",
        &chain,
        "-purpose",
        "sslclient",
        &cert,
    ]);
    assert!(ok, "{out}");
    assert_eq!(key_uses(&f), 1);
    let audit = last_audit(&f);
    assert_eq!(
        (audit.action.as_str(), audit.outcome),
        ("device.register", AuditOutcome::Success)
    );
    assert_eq!(audit.device_id, Some(r.device.id));
    assert_eq!(audit.remote_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(audit.actor, "device");
    let audit_json = serde_json::to_string(&audit).unwrap();
    assert!(
        !audit_json.contains(&key),
        "the key never reaches the audit log"
    );
}

pub fn without_a_csr_the_server_generates_the_key(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 1);
    let r = f
        .onboard
        .register(request(&key, "SN-genkey", None))
        .unwrap();
    let pem = r.private_key_pem.expect("a generated key");
    let key_file = write(f.dir.path(), "gen.key", pem.expose());
    let cert_file = write(f.dir.path(), "gen.crt", &r.certificate.pem);
    let (_, from_key) = openssl(&["pkey", "-in", &key_file, "-pubout"]);
    let (_, from_cert) = openssl(&["x509", "-in", &cert_file, "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert, "the key belongs to the certificate");
}

/// The counts behind `onboard_devices` and `onboard_rotations`: every status and
/// rotation state, zeros included, from the registry.
pub fn fleet_counts_list_every_status_and_rotation_state(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let empty = f.onboard.fleet_counts().unwrap();
    assert!(empty.devices_by_status.iter().all(|(_, n)| *n == 0));
    assert_eq!(empty.devices_by_status.len(), DeviceStatus::ALL.len());
    assert_eq!(empty.rotations_by_state.len(), 4);
    let key = batch(&f, 2);
    f.onboard
        .register(request(&key, "SN-count-1", None))
        .unwrap();
    f.onboard
        .register(request(&key, "SN-count-2", None))
        .unwrap();
    let counts = f.onboard.fleet_counts().unwrap();
    let of = |name: &str| {
        counts
            .devices_by_status
            .iter()
            .find(|(s, _)| *s == name)
            .map(|(_, n)| *n)
    };
    assert_eq!(of("registered"), Some(2), "{counts:?}");
    assert_eq!(of("active"), Some(0), "{counts:?}");
    assert!(counts
        .rotations_by_state
        .iter()
        .any(|(s, _)| *s == "TIMEOUT"));
}

/// `acl sync` with `broker.kind = "none"`: no broker file is written and the
/// devices with broker access (registered or active, not revoked) are counted.
pub fn acl_sync_without_a_broker_counts_the_granted_devices(backend: TestBackend) {
    let f = fixture(backend, |s| {
        s.broker.kind = onboard_core::settings::BrokerKind::None;
    });
    let key = batch(&f, 3);
    let ids: Vec<_> = ["SN-sync-1", "SN-sync-2", "SN-sync-3"]
        .into_iter()
        .map(|s| {
            f.onboard
                .register(request(&key, s, None))
                .unwrap()
                .device
                .id
        })
        .collect();
    f.onboard
        .revoke_device(
            &onboard_core::Actor::cli(),
            ids[0],
            onboard_domain::RevocationReason::KeyCompromise,
        )
        .unwrap();
    let synced = f.onboard.acl_sync().unwrap();
    assert_eq!(synced.granted, 2);
    assert!(!std::path::Path::new(&f.onboard.settings().broker.acl_file).exists());
}

/// A `%` in the rotation topic prefix cannot go into the ACL's pattern lines:
/// start-up stops and names the setting, unless pattern mode is off.
pub fn a_percent_in_the_topic_prefix_stops_pattern_mode(backend: TestBackend) {
    let db = onboard_registry::testing::TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = onboard_core::settings::Settings::default().with_files_under(dir.path());
    settings.database.url = db.url.clone();
    settings.rotation.topic_prefix = "io%t".into();
    let err = onboard_core::Onboard::open(settings.clone()).unwrap_err();
    assert!(err.to_string().contains("broker.acl_patterns"), "{err}");
    settings.broker.acl_patterns = false;
    onboard_core::Onboard::open(settings).unwrap();
}

pub fn every_key_failure_is_401_with_its_reason_audited(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 1);
    let fail = |req: RegisterRequest| f.onboard.register(req).unwrap_err();
    let mut missing = request(&key, "SN-1", None);
    missing.key = None;
    assert!(matches!(
        fail(missing),
        CoreError::Unauthorized("key_missing")
    ));
    assert!(matches!(
        fail(request("garbage", "SN-1", None)),
        CoreError::Unauthorized("key_unknown")
    ));
    // Right shape and prefix, wrong secret.
    let forged = format!("{}.{}", key.split_once('.').unwrap().0, "A".repeat(43));
    assert!(matches!(
        fail(request(&forged, "SN-1", None)),
        CoreError::Unauthorized("key_unknown")
    ));
    assert_eq!(last_audit(&f).reason.as_deref(), Some("key_unknown"));
    // An EST label names the batch: the right key under another batch's label is
    // refused and costs no use; under its own label it registers.
    let mut other = request(&key, "SN-1", None);
    other.batch = Some("line8".into());
    assert!(matches!(
        fail(other),
        CoreError::Unauthorized("key_other_batch")
    ));
    assert_eq!(last_audit(&f).reason.as_deref(), Some("key_other_batch"));
    assert_eq!(key_uses(&f), 0);

    let mut own = request(&key, "SN-1", None);
    own.batch = Some("line7".into());
    f.onboard.register(own).unwrap();
    assert!(matches!(
        fail(request(&key, "SN-2", None)),
        CoreError::Unauthorized("key_used_up")
    ));
    let audit = last_audit(&f);
    assert_eq!(audit.outcome, AuditOutcome::Failure);
    assert_eq!(audit.serial.as_deref(), Some("SN-2"));
    assert_eq!(
        audit.key_prefix.as_deref(),
        Some(key.split_once('.').unwrap().0)
    );

    let key2 = batch(&f, 10);
    let id = f
        .onboard
        .list_keys(&BootstrapKeyFilter::default(), &PageRequest::default())
        .unwrap()
        .items[1]
        .id;
    f.onboard.set_key_active(&Actor::cli(), id, false).unwrap();
    assert!(matches!(
        fail(request(&key2, "SN-3", None)),
        CoreError::Unauthorized("key_inactive")
    ));
    f.onboard.set_key_active(&Actor::cli(), id, true).unwrap();
    f.clock.advance(Duration::days(31));
    assert!(matches!(
        fail(request(&key2, "SN-3", None)),
        CoreError::Unauthorized("key_expired")
    ));
    assert!(matches!(
        f.onboard
            .set_key_active(&Actor::cli(), id, true)
            .unwrap_err(),
        CoreError::Conflict(_)
    ));
    assert_eq!(devices(&f).len(), 1);
}

pub fn bad_input_costs_no_key_use_and_leaves_nothing(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 3);
    let rsa1024 = openssl_csr(f.dir.path(), "weak", &["-newkey", "rsa:1024"]);
    let mut tampered = openssl_csr(
        f.dir.path(),
        "ok",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    // Flip one character of the signature (the end of the base64 body).
    let end = tampered.find("\n-----END").unwrap();
    let i = end - 5;
    let flipped = if &tampered[i..i + 1] == "A" { "B" } else { "A" };
    tampered.replace_range(i..i + 1, flipped);
    let mut bad_meta = request(&key, "SN-1", None);
    bad_meta.metadata = Some(serde_json::json!(["not", "an", "object"]));
    for (req, field) in [
        (request(&key, "SN-1", Some(rsa1024)), "csr"),
        (request(&key, "SN-1", Some(tampered)), "csr"),
        (request(&key, "SN-1", Some("garbage".into())), "csr"),
        (request(&key, "bad/serial", None), "serial"),
        (request(&key, "", None), "serial"),
        (bad_meta, "metadata"),
    ] {
        match f.onboard.register(req).unwrap_err() {
            CoreError::Invalid(v) => assert_eq!(v.field, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(last_audit(&f).reason.as_deref(), Some("invalid_input"));
    }
    assert_eq!(key_uses(&f), 0);
    assert!(devices(&f).is_empty());
}

/// Ports that fail on demand and record what was granted.
#[derive(Debug, Default)]
pub struct Flaky {
    pub fail_issue: bool,
    pub fail_grant: bool,
    pub fail_cloud: bool,
    pub granted: Mutex<BTreeSet<DeviceId>>,
    pub clouded: Mutex<BTreeSet<DeviceId>>,
    pub inner: Mutex<Option<InternalIssuer>>,
}

impl CertificateIssuer for Flaky {
    fn issue_from_csr(
        &self,
        d: DeviceId,
        csr: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<IssuedCert, PortError> {
        if self.fail_issue {
            return Err(PortError::Unavailable("issuer down".into()));
        }
        self.inner
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .issue_from_csr(d, csr, now)
    }
    fn issue_with_new_key(
        &self,
        d: DeviceId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(IssuedCert, SecretString), PortError> {
        if self.fail_issue {
            return Err(PortError::Unavailable("issuer down".into()));
        }
        self.inner
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .issue_with_new_key(d, now)
    }
    fn ca_chain_pem(&self) -> String {
        self.inner.lock().unwrap().as_ref().unwrap().ca_chain_pem()
    }
}

impl BrokerAccess for Flaky {
    fn grant(&self, g: &BrokerGrant) -> Result<(), PortError> {
        if self.fail_grant {
            return Err(PortError::Unavailable("broker down".into()));
        }
        self.granted.lock().unwrap().insert(g.device_id);
        Ok(())
    }
    fn revoke(&self, d: DeviceId) -> Result<(), PortError> {
        self.granted.lock().unwrap().remove(&d);
        Ok(())
    }
    fn sync(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        *self.granted.lock().unwrap() = grants.iter().map(|g| g.device_id).collect();
        Ok(())
    }
    fn publish_crl(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
}

/// A cloud registry in memory: `clouded` holds the devices registered there.
impl CloudRegistrar for Flaky {
    fn register(&self, d: &CloudDevice) -> Result<CloudRegistration, PortError> {
        if self.fail_cloud {
            return Err(PortError::Unavailable("cloud down".into()));
        }
        self.clouded.lock().unwrap().insert(d.device_id);
        Ok(CloudRegistration {
            record: CloudRecord {
                device_id: d.device_id,
                thing_name: d.device_id.to_string(),
                thing_arn: format!("arn:test:thing/{}", d.device_id),
                certificate_id: "c0ffee".into(),
                certificate_arn: "arn:test:cert/c0ffee".into(),
                certificate_fingerprint: String::new(),
            },
            endpoint: "iot.test".into(),
            issued: None,
        })
    }
    fn replace_certificate(&self, r: &CloudRecord, _: &str) -> Result<CloudRecord, PortError> {
        if self.fail_cloud {
            return Err(PortError::Unavailable("cloud down".into()));
        }
        Ok(r.clone())
    }
    fn revoke(&self, _: &CloudRecord) -> Result<(), PortError> {
        Ok(())
    }
    fn deregister(&self, d: DeviceId) -> Result<(), PortError> {
        if self.fail_cloud {
            return Err(PortError::Unavailable("cloud down".into()));
        }
        self.clouded.lock().unwrap().remove(&d);
        Ok(())
    }
    fn devices(&self) -> Result<Vec<DeviceId>, PortError> {
        Ok(self.clouded.lock().unwrap().iter().copied().collect())
    }
}

pub fn fifty_concurrent_registrations_take_exactly_max_uses(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 20);
    let barrier = Arc::new(Barrier::new(50));
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (barrier, onboard, key) = (barrier.clone(), f.onboard.clone(), key.clone());
                s.spawn(move || {
                    barrier.wait();
                    onboard
                        .register(request(&key, &format!("SN-{i:03}"), None))
                        .map(|_| ())
                        .map_err(|e| e.reason_code().to_owned())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let used_up = results
        .iter()
        .filter(|r| r.as_ref().err().map(String::as_str) == Some("key_used_up"))
        .count();
    assert_eq!((ok, used_up), (20, 30), "{results:?}");
    assert_eq!(devices(&f).len(), 20);
    assert_eq!(key_uses(&f), 20);
}

pub fn ten_concurrent_registrations_of_one_serial_make_one_device(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 100);
    let barrier = Arc::new(Barrier::new(10));
    let outcomes: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let (barrier, onboard, key) = (barrier.clone(), f.onboard.clone(), key.clone());
                s.spawn(move || {
                    barrier.wait();
                    onboard
                        .register(request(&key, "SN-same", None))
                        .map(|_| ())
                        .map_err(|e| e.reason_code().to_owned())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A shared batch key without a CSR proves nothing: one registration wins,
    // every other is refused as a possible takeover and takes no use.
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|r| r.as_ref().err().map(String::as_str) == Some("possible_takeover"))
        .count();
    assert_eq!((ok, refused), (1, 9), "{outcomes:?}");
    assert_eq!(key_uses(&f), 1);
    let all = devices(&f);
    assert_eq!(all.len(), 1);
    let shown = f.onboard.device(all[0].id).unwrap();
    assert!(
        shown.current_certificate.is_some(),
        "the newest certificate stays active"
    );
    let active = shown
        .certificates
        .iter()
        .filter(|c| c.status == CertificateStatus::Active)
        .count();
    assert_eq!(active, 1, "exactly one active certificate");
    assert_eq!(
        shown.certificates.len(),
        1,
        "no certificate row was left behind"
    );
}
