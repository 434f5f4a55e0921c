//! Proof of possession on a taken serial, effects that converge after the commit,
//! and a CRL that never lapses.

use std::sync::{mpsc, Arc, Barrier};

use chrono::Duration;
use onboard_core::domain::*;
use onboard_core::{Actor, CoreError, InternalIssuer, Onboard, Ports};
use onboard_registry::testing::TestBackend;

use super::register::{batch, devices, key_uses, last_audit, openssl_csr, request, Flaky};
use super::{fixture, openssl, write, Fixture};

fn p256_csr(f: &Fixture, name: &str) -> String {
    openssl_csr(
        f.dir.path(),
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
}

/// The CSR of the key `openssl_csr` wrote for `name`, made again (same key).
fn same_key_csr(f: &Fixture, name: &str) -> String {
    let key = f
        .dir
        .path()
        .join(format!("{name}.key"))
        .display()
        .to_string();
    let out = f
        .dir
        .path()
        .join(format!("{name}-again.csr"))
        .display()
        .to_string();
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        "/CN=again",
        "-out",
        &out,
    ]);
    assert!(ok, "{text}");
    std::fs::read_to_string(&out).unwrap()
}

fn crl_text(f: &Fixture) -> String {
    let crl = f.onboard.current_crl().unwrap();
    let file = write(f.dir.path(), "crl.pem", &crl.pem);
    let (ok, text) = openssl(&["crl", "-in", &file, "-noout", "-text"]);
    assert!(ok, "{text}");
    text
}

fn certificate_rows(f: &Fixture, device: DeviceId) -> Vec<Certificate> {
    f.db.db
        .transaction(|tx| tx.certificates_of_device(device))
        .unwrap()
}

pub fn a_lost_answer_is_answered_again_with_the_same_certificate(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    // A single-use key: the retry must not need a second use.
    let key = batch(&f, 1);
    let csr = p256_csr(&f, "dev");
    let first = f
        .onboard
        .register(request(&key, "SN-lost", Some(csr.clone())))
        .unwrap();
    assert_eq!(key_uses(&f), 1);
    for retry_csr in [csr, same_key_csr(&f, "dev")] {
        let again = f
            .onboard
            .register(request(&key, "SN-lost", Some(retry_csr)))
            .unwrap();
        assert_eq!(again.device.id, first.device.id);
        assert_eq!(again.certificate.serial, first.certificate.serial);
        assert!(!again.reregistered);
        assert_eq!(key_uses(&f), 1, "a retry takes no use");
        let audit = last_audit(&f);
        assert_eq!(audit.outcome, AuditOutcome::Success);
        assert_eq!(audit.details["retry"], true);
    }
    assert_eq!(certificate_rows(&f, first.device.id).len(), 1);
    assert!(!crl_text(&f).contains(first.certificate.serial.as_str()));
}

pub fn another_key_pair_for_a_taken_serial_is_a_possible_takeover(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 100);
    let victim = f
        .onboard
        .register(request(&key, "SN-victim", Some(p256_csr(&f, "victim"))))
        .unwrap();
    let uses = key_uses(&f);
    for attacker in [Some(p256_csr(&f, "attacker")), None] {
        let err = f
            .onboard
            .register(request(&key, "SN-victim", attacker))
            .unwrap_err();
        assert!(matches!(err, CoreError::Takeover(_)), "{err:?}");
        let audit = last_audit(&f);
        assert_eq!(
            (audit.outcome, audit.reason.as_deref()),
            (AuditOutcome::Failure, Some("possible_takeover"))
        );
        assert_eq!(audit.device_id, Some(victim.device.id));
    }
    assert_eq!(key_uses(&f), uses, "refusals take no use");
    let rows = certificate_rows(&f, victim.device.id);
    assert_eq!(rows.len(), 1, "nothing was issued to the attacker");
    assert_eq!(rows[0].status, CertificateStatus::Active);
    assert!(!crl_text(&f).contains(victim.certificate.serial.as_str()));
}

pub fn a_single_use_key_re_registers_its_own_serial_until_activation(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 1);
    let first = f.onboard.register(request(&key, "SN-again", None)).unwrap();
    let second = f.onboard.register(request(&key, "SN-again", None)).unwrap();
    assert!(second.reregistered);
    assert!(second.private_key_pem.is_some());
    assert_eq!(second.device.id, first.device.id);
    assert_ne!(second.certificate.serial, first.certificate.serial);
    assert_eq!(key_uses(&f), 1);
    let rows = certificate_rows(&f, first.device.id);
    assert_eq!(rows.len(), 2);
    let old = rows
        .iter()
        .find(|c| c.serial == first.certificate.serial)
        .unwrap();
    assert_eq!(old.status, CertificateStatus::Revoked);
    assert_eq!(old.revocation_reason, Some(RevocationReason::Superseded));
    let text = crl_text(&f);
    assert!(text.contains(first.certificate.serial.as_str()), "{text}");
    assert!(text.contains("Superseded"), "{text}");

    // Another key of the same batch is not the device's own key.
    let other = batch(&f, 1);
    assert!(matches!(
        f.onboard
            .register(request(&other, "SN-again", None))
            .unwrap_err(),
        CoreError::Takeover(_)
    ));
    // Once active, the serial is taken for good.
    f.db.db
        .transaction(|tx| {
            tx.update_device(
                first.device.id,
                &DeviceUpdate {
                    status: Some(DeviceStatus::Active),
                    ..Default::default()
                },
                f.clock.now(),
            )
        })
        .unwrap();
    assert!(matches!(
        f.onboard
            .register(request(&key, "SN-again", None))
            .unwrap_err(),
        CoreError::Conflict(_)
    ));
    assert_eq!(certificate_rows(&f, first.device.id).len(), 2);
}

fn flaky_onboard(f: &Fixture, flaky: &Arc<Flaky>) -> Onboard {
    let s = f.onboard.settings();
    *flaky.inner.lock().unwrap() = Some(InternalIssuer {
        ca: f.onboard.ca().unwrap(),
        validity_days: s.ca.validity_days,
        public_base_url: s.server.public_base_url.clone(),
        key_algorithm: s.ca.key_algorithm,
    });
    f.onboard.clone().with_ports(Ports {
        issuer: Some(flaky.clone()),
        broker: flaky.clone(),
        cloud: flaky.clone(),
        notifier: None,
    })
}

pub fn a_failure_before_the_commit_leaves_nothing(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 1);
    let flaky = Arc::new(Flaky {
        fail_issue: true,
        ..Flaky::default()
    });
    let err = flaky_onboard(&f, &flaky)
        .register(request(&key, "SN-flaky", None))
        .unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    assert!(devices(&f).is_empty());
    assert_eq!(key_uses(&f), 0, "no use was taken");
    assert_eq!(f.onboard.pending_effects().unwrap().0, 0);
    assert!(flaky.granted.lock().unwrap().is_empty());
    let audit = last_audit(&f);
    assert_eq!(
        (audit.outcome, audit.reason.as_deref()),
        (AuditOutcome::Failure, Some("unavailable"))
    );
    // A key use refused inside the transaction rolls the rows back too.
    f.onboard.register(request(&key, "SN-first", None)).unwrap();
    let other = request(&key, "SN-second", None);
    assert!(matches!(
        f.onboard.register(other).unwrap_err(),
        CoreError::Unauthorized("key_used_up")
    ));
    assert_eq!(devices(&f).len(), 1);
    assert_eq!(f.onboard.pending_effects().unwrap().0, 0);
}

pub fn broker_and_cloud_failures_after_the_commit_converge_later(backend: TestBackend) {
    for step in ["broker", "cloud"] {
        let f = fixture(backend, |_| {});
        let key = batch(&f, 1);
        let healthy = Arc::new(Flaky::default());
        let down = Arc::new(Flaky {
            fail_grant: step == "broker",
            fail_cloud: step == "cloud",
            ..Flaky::default()
        });
        let r = if step == "broker" {
            // The identity is committed and answered; the broker catches up.
            flaky_onboard(&f, &down)
                .register(request(&key, "SN-later", None))
                .unwrap()
        } else {
            // The cloud registry is part of the registration itself (before the
            // commit); after it, a decommission has to reach it.
            let r = flaky_onboard(&f, &healthy)
                .register(request(&key, "SN-later", None))
                .unwrap();
            assert!(healthy.clouded.lock().unwrap().contains(&r.device.id));
            let err = flaky_onboard(&f, &down)
                .decommission_device(&Actor::cli(), r.device.id)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    CoreError::Pending {
                        action: "device.decommission",
                        ..
                    }
                ),
                "{err:?}"
            );
            r
        };
        assert_eq!(key_uses(&f), 1, "{step}");
        assert_eq!(last_audit(&f).outcome, AuditOutcome::Success, "{step}");
        let (pending, _) = f.onboard.pending_effects().unwrap();
        assert_eq!(pending, 1, "{step}: the failed effect waits");
        // Still down: the reconciler keeps it.
        let report = flaky_onboard(&f, &down).reconcile(true).unwrap();
        assert_eq!(report.failed, 1, "{step}");
        assert!(!report.errors.is_empty(), "{step}");
        assert_eq!(f.onboard.pending_effects().unwrap().0, 1, "{step}");
        // Back: one pass applies it and the queue is empty.
        let report = flaky_onboard(&f, &healthy).reconcile(true).unwrap();
        assert_eq!((report.applied, report.failed), (1, 0), "{step}");
        match step {
            "broker" => assert!(healthy.granted.lock().unwrap().contains(&r.device.id)),
            _ => assert!(!healthy.clouded.lock().unwrap().contains(&r.device.id)),
        }
        assert_eq!(f.onboard.pending_effects().unwrap().0, 0, "{step}");
    }
}

pub fn revocation_racing_a_re_registration_never_leaves_an_active_certificate(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    for round in 0..5 {
        let key = batch(&f, 1);
        let serial = format!("SN-race-{round}");
        let first = f.onboard.register(request(&key, &serial, None)).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        std::thread::scope(|s| {
            let (b1, o1, k1, s1) = (
                barrier.clone(),
                f.onboard.clone(),
                key.clone(),
                serial.clone(),
            );
            s.spawn(move || {
                b1.wait();
                let _ = o1.register(request(&k1, &s1, None));
            });
            let (b2, o2) = (barrier.clone(), f.onboard.clone());
            s.spawn(move || {
                b2.wait();
                let _ = o2.revoke_device(
                    &Actor::cli(),
                    first.device.id,
                    RevocationReason::KeyCompromise,
                );
            });
        });
        let device = f.onboard.device(first.device.id).unwrap();
        assert_eq!(device.device.status, DeviceStatus::Revoked, "{round}");
        let rows = certificate_rows(&f, first.device.id);
        assert!(
            rows.iter().all(|c| c.status == CertificateStatus::Revoked),
            "{round}: {rows:?}"
        );
        let text = crl_text(&f);
        for c in &rows {
            assert!(
                text.contains(c.serial.as_str()),
                "{round}: {} not in the CRL",
                c.serial
            );
        }
    }
}

pub fn the_crl_is_refreshed_before_half_its_validity(backend: TestBackend) {
    let f = fixture(backend, |s| s.ca.crl_validity_hours = 24);
    let first = f.onboard.reconcile(true).unwrap();
    let installed = first.installed_crl.unwrap();
    let crl_file = f.onboard.settings().broker.crl_file.clone();
    let on_disk = || std::fs::read_to_string(&crl_file).unwrap();
    let number_on_disk = || {
        let (ok, text) = openssl(&[
            "crl",
            "-in",
            &crl_file,
            "-noout",
            "-crlnumber",
            "-nextupdate",
        ]);
        assert!(ok, "{text}");
        text
    };
    assert!(on_disk().contains("BEGIN X509 CRL"));
    // Before half the validity nothing is signed again.
    f.clock.advance(Duration::hours(11));
    let r = f.onboard.reconcile(false).unwrap();
    assert!(!r.crl_refreshed);
    assert_eq!(r.installed_crl.unwrap().number, installed.number);
    // Past half: a new CRL, installed where the broker reads it, with a
    // nextUpdate a full validity ahead.
    for day in 1..=3 {
        f.clock.advance(Duration::hours(13));
        let r = f.onboard.reconcile(false).unwrap();
        assert!(r.crl_refreshed, "day {day}");
        let now_installed = r.installed_crl.unwrap();
        assert!(now_installed.number > installed.number);
        assert_eq!(
            now_installed.next_update,
            f.clock.now() + Duration::hours(24)
        );
        assert_eq!(f.onboard.installed_crl(), Some(now_installed.clone()));
        let text = number_on_disk();
        assert!(
            text.contains(&format!("crlNumber=0x{:X}", now_installed.number))
                || text.contains(&format!("crlNumber=0x{:02X}", now_installed.number)),
            "{text}"
        );
    }
}

pub fn concurrent_revocations_all_reach_the_crl(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 100);
    let ids: Vec<_> = (0..12)
        .map(|i| {
            f.onboard
                .register(request(&key, &format!("SN-rev-{i}"), None))
                .unwrap()
        })
        .collect();
    // Two "replicas": separate pools on the same database.
    let second = Onboard::with_clock(f.onboard.settings().clone(), f.clock.clone()).unwrap();
    let barrier = Arc::new(Barrier::new(ids.len()));
    std::thread::scope(|s| {
        for (i, r) in ids.iter().enumerate() {
            let onboard = if i % 2 == 0 {
                f.onboard.clone()
            } else {
                second.clone()
            };
            let (barrier, id) = (barrier.clone(), r.device.id);
            s.spawn(move || {
                barrier.wait();
                onboard
                    .revoke_device(&Actor::cli(), id, RevocationReason::KeyCompromise)
                    .unwrap();
            });
        }
    });
    let latest = f.onboard.current_crl().unwrap();
    let file = write(f.dir.path(), "final.pem", &latest.pem);
    let (ok, text) = openssl(&["crl", "-in", &file, "-noout", "-text"]);
    assert!(ok, "{text}");
    for r in &ids {
        assert!(
            text.contains(r.certificate.serial.as_str()),
            "{} missing from the newest CRL",
            r.certificate.serial
        );
    }
    // And what the broker has is that CRL (or a newer one).
    let on_disk = std::fs::read_to_string(&f.onboard.settings().broker.crl_file).unwrap();
    let disk_file = write(f.dir.path(), "disk.pem", &on_disk);
    let (ok, disk) = openssl(&["crl", "-in", &disk_file, "-noout", "-text"]);
    assert!(ok, "{disk}");
    for r in &ids {
        assert!(
            disk.contains(r.certificate.serial.as_str()),
            "broker CRL misses {}",
            r.certificate.serial
        );
    }
}

pub fn serials_shaped_like_device_ids_are_refused(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 10);
    let victim = f.onboard.register(request(&key, "SN-1", None)).unwrap();
    for serial in [victim.device.id.to_string(), uuid::Uuid::nil().to_string()] {
        match f
            .onboard
            .register(request(&key, &serial, None))
            .unwrap_err()
        {
            CoreError::Invalid(v) => assert_eq!(v.field, "serial"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(devices(&f).len(), 1);
    // An operator-registered device without a serial gets its own id as serial.
    let own = f
        .onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "no serial".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(own.device.serial.as_str(), own.device.id.to_string());
}

/// A broker whose first CRL install waits at a gate the test opens; it records
/// every CRL it was given, in order.
#[derive(Debug, Default)]
struct GatedCrl {
    gate: std::sync::Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    installed: std::sync::Mutex<Vec<String>>,
}

impl BrokerAccess for GatedCrl {
    fn grant(&self, _: &BrokerGrant) -> Result<(), PortError> {
        Ok(())
    }
    fn revoke(&self, _: DeviceId) -> Result<(), PortError> {
        Ok(())
    }
    fn sync(&self, _: &[BrokerGrant]) -> Result<(), PortError> {
        Ok(())
    }
    fn publish_crl(&self, pem: &str) -> Result<(), PortError> {
        let first = self.gate.lock().unwrap().take();
        if let Some((entered, release)) = first {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        self.installed.lock().unwrap().push(pem.to_owned());
        Ok(())
    }
}

/// Two revocations whose CRLs are signed in one order and would reach the
/// broker in the other: the first one's install is held at the broker until the
/// second one's CRL is stored. The broker ends with the newer CRL, listing both.
pub fn an_older_crl_never_replaces_a_newer_one_in_the_broker(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let key = batch(&f, 10);
    let first = f.onboard.register(request(&key, "SN-old", None)).unwrap();
    let second = f.onboard.register(request(&key, "SN-new", None)).unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let broker = Arc::new(GatedCrl::default());
    *broker.gate.lock().unwrap() = Some((entered_tx, release_rx));
    let onboard = f.onboard.clone().with_ports(Ports {
        issuer: None,
        broker: broker.clone(),
        cloud: Arc::new(Flaky::default()),
        notifier: None,
    });
    let latest = || {
        f.db.db
            .transaction(|tx| tx.latest_crl())
            .unwrap()
            .map(|c| c.number)
    };
    std::thread::scope(|s| {
        let o1 = onboard.clone();
        let t1 = s.spawn(move || {
            o1.revoke_device(
                &Actor::cli(),
                first.device.id,
                RevocationReason::KeyCompromise,
            )
        });
        entered.recv().unwrap();
        let older = latest().unwrap();
        let o2 = onboard.clone();
        let t2 = s.spawn(move || {
            o2.revoke_device(
                &Actor::cli(),
                second.device.id,
                RevocationReason::KeyCompromise,
            )
        });
        // The second CRL is signed and stored while the first waits at the
        // broker (a bounded wait for another thread, not a timing check).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while latest() == Some(older) {
            assert!(std::time::Instant::now() < deadline, "no second CRL");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        release.send(()).unwrap();
        t1.join().unwrap().unwrap();
        t2.join().unwrap().unwrap();
    });
    let installed = broker.installed.lock().unwrap();
    let last = installed.last().expect("a CRL reached the broker");
    let file = write(f.dir.path(), "last.pem", last);
    let (ok, text) = openssl(&["crl", "-in", &file, "-noout", "-text"]);
    assert!(ok, "{text}");
    for serial in [&first.certificate.serial, &second.certificate.serial] {
        assert!(text.contains(serial.as_str()), "{serial} missing: {text}");
    }
    assert_eq!(
        onboard.installed_crl().map(|c| c.number),
        latest(),
        "the process knows the newest CRL is installed"
    );
}

/// `POST /iot/renew`'s rules with time moved through the Clock: the old certificate
/// stays until the grace period is over, then the reconciler revokes it as
/// superseded and the CRL lists it; an unused renewal is replaced by the next one.
pub fn a_renewal_retires_the_old_certificate_after_the_grace_period(backend: TestBackend) {
    let f = fixture(backend, |s| s.device.renew_grace_hours = 24);
    let key = batch(&f, 5);
    let r = f
        .onboard
        .register(request(&key, "SN-RENEW", Some(p256_csr(&f, "first"))))
        .unwrap();
    let presented = |c: &Certificate| onboard_core::PresentedCertificate {
        serial: c.serial.clone(),
        fingerprint: c.fingerprint.clone(),
    };
    let session = f
        .onboard
        .authenticate_certificate(&presented(&r.certificate))
        .unwrap();
    f.clock.advance(chrono::Duration::minutes(1));
    let unused = f
        .onboard
        .renew_certificate(&session, &p256_csr(&f, "second"))
        .unwrap();
    f.clock.advance(chrono::Duration::minutes(1));
    // A second renewal before the first was used supersedes the unused one.
    let renewed = f
        .onboard
        .renew_certificate(&session, &p256_csr(&f, "third"))
        .unwrap();
    let status = |c: &Certificate| {
        f.onboard
            .device(r.device.id)
            .unwrap()
            .certificates
            .into_iter()
            .find(|x| x.id == c.id)
            .unwrap()
            .status
    };
    assert_eq!(status(&unused.certificate), CertificateStatus::Revoked);
    assert_eq!(status(&r.certificate), CertificateStatus::Active);
    assert_eq!(status(&renewed.certificate), CertificateStatus::Active);
    assert_eq!(
        renewed.previous_valid_until,
        f.clock.now() + chrono::Duration::hours(24)
    );

    // Within the grace period nothing changes; after it the old one is retired.
    f.clock.advance(chrono::Duration::hours(23));
    assert_eq!(f.onboard.reconcile(false).unwrap().renewals_retired, 0);
    assert!(f
        .onboard
        .authenticate_certificate(&presented(&r.certificate))
        .is_ok());
    f.clock.advance(chrono::Duration::hours(2));
    assert_eq!(f.onboard.reconcile(false).unwrap().renewals_retired, 1);
    assert_eq!(status(&r.certificate), CertificateStatus::Revoked);
    assert!(matches!(
        f.onboard
            .authenticate_certificate(&presented(&r.certificate)),
        Err(onboard_core::CoreError::Unauthorized(_))
    ));
    assert!(crl_text(&f).contains(r.certificate.serial.as_str()));
    assert_eq!(
        f.onboard.reconcile(false).unwrap().renewals_retired,
        0,
        "once"
    );
    let d = f.onboard.device(r.device.id).unwrap();
    assert_eq!(d.current_certificate.unwrap().id, renewed.certificate.id);
    let retired = f
        .onboard
        .audit_events(
            &AuditFilter {
                action: Some("certificate.supersede".into()),
                ..Default::default()
            },
            &PageRequest::first(5).unwrap(),
        )
        .unwrap()
        .items;
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].reason.as_deref(), Some("renewal_grace_elapsed"));

    // A renewal needs a new key, and the device's own current certificate.
    let same = same_key_csr(&f, "third");
    let session = f
        .onboard
        .authenticate_certificate(&presented(&renewed.certificate))
        .unwrap();
    assert!(matches!(
        f.onboard.renew_certificate(&session, &same),
        Err(onboard_core::CoreError::Invalid(_))
    ));
}
