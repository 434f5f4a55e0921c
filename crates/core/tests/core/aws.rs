//! Registration with AWS IoT Core against a real moto server (the real SDK
//! client), on both backends: both certificate modes, revocation, decommission,
//! and the faults that must leave nothing behind.

use std::sync::Arc;

use onboard_aws_iot::testing::{Faults, MotoServer};
use onboard_aws_iot::{AwsIot, AMAZON_ROOT_CA_PEM, DEVICE_ID_ATTRIBUTE};
use onboard_core::domain::*;
use onboard_core::{Actor, CoreError, Onboard, Ports};
use onboard_registry::testing::TestBackend;

use super::register::{batch, devices, key_uses, openssl_csr, request};
use super::{fixture, Fixture};

fn with_aws(f: &Fixture, cloud: Arc<dyn CloudRegistrar>) -> Onboard {
    f.onboard.clone().with_ports(Ports {
        cloud,
        ..Ports::default()
    })
}

use onboard_aws_iot::testing::inventory;

/// (status, PEM) of a certificate in moto; `None` when it does not exist.
fn aws_certificate(aws: &AwsIot, id: &str) -> Option<(String, String)> {
    aws.block_on(async {
        let d = aws
            .client()
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .ok()?;
        let c = d.certificate_description()?;
        Some((
            c.status()?.as_str().to_owned(),
            c.certificate_pem()?.to_owned(),
        ))
    })
}

fn pending(f: &Fixture) -> i64 {
    f.onboard.pending_effects().unwrap().0
}

pub fn own_ca_registration_puts_our_certificate_in_aws_and_revoke_and_decommission_follow(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let aws = Arc::new(moto.registrar(|_| {}));
    let onboard = with_aws(&f, aws.clone());
    let key = batch(&f, 5);
    let r = onboard.register(request(&key, "SN-AWS-1", None)).unwrap();
    let cloud = r.cloud.clone().unwrap();
    assert!(cloud.endpoint.as_deref().is_some_and(|e| !e.is_empty()));
    let rec = &cloud.record;
    assert_eq!(rec.thing_name, r.device.id.to_string());
    assert_eq!(
        rec.certificate_fingerprint,
        r.certificate.fingerprint.to_string()
    );
    // AWS holds the very certificate our CA issued, ACTIVE, on the Thing.
    let (status, pem) = aws_certificate(&aws, &rec.certificate_id).unwrap();
    assert_eq!(status, "ACTIVE");
    assert_eq!(pem.trim(), r.certificate.pem.trim());
    assert!(r.ca_chain_pem.contains("BEGIN CERTIFICATE"));
    assert_ne!(r.ca_chain_pem, AMAZON_ROOT_CA_PEM);
    aws.block_on(async {
        let c = aws.client();
        let t = c
            .describe_thing()
            .thing_name(&rec.thing_name)
            .send()
            .await
            .unwrap();
        let attrs = t.attributes().unwrap();
        assert_eq!(attrs[DEVICE_ID_ATTRIBUTE], r.device.id.to_string());
        assert_eq!(attrs["serial"], "SN-AWS-1");
        assert_eq!(attrs["firmware"], "1.4.2");
        let p = c
            .list_thing_principals()
            .thing_name(&rec.thing_name)
            .send()
            .await
            .unwrap();
        assert_eq!(p.principals(), std::slice::from_ref(&rec.certificate_arn));
        let pol = c
            .list_attached_policies()
            .target(&rec.certificate_arn)
            .send()
            .await
            .unwrap();
        assert_eq!(pol.policies().len(), 1);
    });
    // Stored and shown with the device; the intent is gone.
    assert_eq!(onboard.device(r.device.id).unwrap().aws.as_ref(), Some(rec));
    assert_eq!(pending(&f), 0);
    assert_eq!(key_uses(&f), 1);

    onboard
        .revoke_device(&Actor::cli(), r.device.id, RevocationReason::KeyCompromise)
        .unwrap();
    assert_eq!(
        aws_certificate(&aws, &rec.certificate_id).unwrap().0,
        "REVOKED"
    );

    onboard
        .decommission_device(&Actor::cli(), r.device.id)
        .unwrap();
    assert_eq!(inventory(&aws), (vec![], vec![]));
    assert_eq!(onboard.device(r.device.id).unwrap().aws, None);
    assert_eq!(pending(&f), 0);
}

pub fn aws_issued_registration_hands_out_the_aws_certificate_and_amazons_root(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let aws = Arc::new(moto.registrar(|c| c.issue_certificates = true));
    let onboard = with_aws(&f, aws.clone());
    let key = batch(&f, 5);

    // Without a CSR: CreateKeysAndCertificate, the key goes to the device once.
    let r = onboard.register(request(&key, "SN-AWS-2", None)).unwrap();
    let rec = r.cloud.clone().unwrap().record;
    let (status, pem) = aws_certificate(&aws, &rec.certificate_id).unwrap();
    assert_eq!(status, "ACTIVE");
    assert_eq!(pem.trim(), r.certificate.pem.trim());
    assert!(r
        .private_key_pem
        .as_ref()
        .unwrap()
        .expose()
        .contains("PRIVATE KEY"));
    assert_eq!(r.ca_chain_pem, AMAZON_ROOT_CA_PEM);
    // The registry keeps AWS's certificate as the device's.
    let details = onboard.device(r.device.id).unwrap();
    assert_eq!(
        details.current_certificate.unwrap().fingerprint,
        r.certificate.fingerprint
    );

    // With a CSR: CreateCertificateFromCsr (moto answers for another key than the
    // CSR's, so only the calls and states are checked; docs/aws.md).
    let csr = openssl_csr(
        f.dir.path(),
        "aws",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let r2 = onboard
        .register(request(&key, "SN-AWS-3", Some(csr)))
        .unwrap();
    assert!(r2.private_key_pem.is_none());
    let rec2 = r2.cloud.unwrap().record;
    assert_eq!(
        aws_certificate(&aws, &rec2.certificate_id).unwrap().0,
        "ACTIVE"
    );
    assert_eq!(inventory(&aws).0.len(), 2);
    assert_eq!(key_uses(&f), 2);
}

/// Nothing in the registry, nothing in AWS, no key use, no intent left.
fn assert_nothing_left(f: &Fixture, aws: &AwsIot, what: &str) {
    assert!(devices(f).is_empty(), "{what}: a device row is left");
    assert_eq!(key_uses(f), 0, "{what}: the key use was taken");
    assert_eq!(
        inventory(aws),
        (vec![], vec![]),
        "{what}: AWS resources are left"
    );
    assert_eq!(pending(f), 0, "{what}: an intent is left");
}

/// A registrar that makes every AWS resource and then reports a failure: what the
/// core must undo itself (the adapter thinks it succeeded).
#[derive(Debug)]
struct FailsAfterAws(Arc<AwsIot>);

impl CloudRegistrar for FailsAfterAws {
    fn issues_certificates(&self) -> bool {
        self.0.issues_certificates()
    }
    fn register(&self, d: &CloudDevice) -> Result<CloudRegistration, PortError> {
        self.0.register(d)?;
        Err(PortError::Unavailable(
            "injected after the AWS calls".into(),
        ))
    }
    fn replace_certificate(&self, r: &CloudRecord, pem: &str) -> Result<CloudRecord, PortError> {
        self.0.replace_certificate(r, pem)
    }
    fn revoke(&self, r: &CloudRecord) -> Result<(), PortError> {
        self.0.revoke(r)
    }
    fn deregister(&self, d: DeviceId) -> Result<(), PortError> {
        self.0.deregister(d)
    }
    fn devices(&self) -> Result<Vec<DeviceId>, PortError> {
        self.0.devices()
    }
}

pub fn a_failing_aws_step_leaves_no_device_no_aws_resources_and_no_key_use(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let key = batch(&f, 5);
    for mode_aws_issued in [false, true] {
        for call in [
            "CreateThing",
            "AttachThingPrincipal",
            "AttachPolicy",
            "UpdateCertificate",
        ] {
            let faults = Faults::new();
            faults.fail(call);
            let aws = Arc::new(moto.registrar(|c| {
                c.issue_certificates = mode_aws_issued;
                c.interceptors.push(faults.interceptor());
            }));
            let err = with_aws(&f, aws.clone())
                .register(request(&key, "SN-FAULT", None))
                .unwrap_err();
            assert!(
                matches!(&err, CoreError::Cloud(m) if m.contains(call)),
                "{call}: {err:?}"
            );
            assert_nothing_left(&f, &moto.registrar(|_| {}), call);
        }
        // Every AWS step done, then a failure: the core removes them at once.
        let aws = Arc::new(moto.registrar(|c| c.issue_certificates = mode_aws_issued));
        let err = with_aws(&f, Arc::new(FailsAfterAws(aws.clone())))
            .register(request(&key, "SN-FAULT", None))
            .unwrap_err();
        assert!(matches!(err, CoreError::Cloud(_)), "{err:?}");
        assert_nothing_left(&f, &aws, "after the AWS calls");
    }
    // The audit log says why.
    let failure = super::register::last_audit(&f);
    assert_eq!(failure.outcome, AuditOutcome::Failure);
    assert_eq!(failure.reason.as_deref(), Some("aws_unavailable"));
}

pub fn aws_going_away_mid_registration_fails_fast_and_the_intent_finishes_later(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    let mut moto = MotoServer::start().unwrap();
    let key = batch(&f, 5);
    let faults = Faults::new();
    let aws = Arc::new(moto.registrar(|c| c.interceptors.push(faults.interceptor())));
    let onboard = with_aws(&f, aws.clone());
    onboard.register(request(&key, "SN-WARM", None)).unwrap();
    moto.stop();
    let err = onboard
        .register(request(&key, "SN-DOWN", None))
        .unwrap_err();
    // The error names the AWS call; no device row, no key use for it.
    assert!(
        matches!(&err, CoreError::Cloud(m) if m.contains("AWS IoT CreateThing failed")),
        "{err:?}"
    );
    assert_eq!(devices(&f).len(), 1);
    assert_eq!(key_uses(&f), 1);
    // AWS could not be asked to remove anything: the intent waits for the
    // reconciler, which keeps it while AWS is down.
    assert_eq!(pending(&f), 1);
    let report = onboard.reconcile(true).unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(pending(&f), 1);
    // AWS back (a fresh emulator: the stopped one's state is gone).
    let moto = MotoServer::start().unwrap();
    let back = with_aws(&f, Arc::new(moto.registrar(|_| {})));
    let report = back.reconcile(true).unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(pending(&f), 0);
}

pub fn a_crash_between_aws_steps_is_removed_by_the_reconciler(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let key = batch(&f, 5);
    for cut in [
        "RegisterCertificateWithoutCA",
        "AttachPolicy",
        "UpdateCertificate",
    ] {
        // From `cut` on nothing reaches AWS, the undo neither: as if the process
        // died there. Only the durable intent knows.
        let faults = Faults::new();
        faults.cut_from(cut);
        let aws = Arc::new(moto.registrar(|c| c.interceptors.push(faults.interceptor())));
        with_aws(&f, aws.clone())
            .register(request(&key, "SN-CRASH", None))
            .unwrap_err();
        assert!(devices(&f).is_empty());
        assert_eq!(key_uses(&f), 0);
        let clean = moto.registrar(|_| {});
        assert_eq!(inventory(&clean).0.len(), 1, "{cut}: the Thing was made");
        assert_eq!(pending(&f), 1, "{cut}: the intent is kept");
        // A restarted process: a new registrar, the reconciler's start-up pass.
        let restarted = with_aws(&f, Arc::new(moto.registrar(|_| {})));
        let report = restarted.reconcile(true).unwrap();
        assert_eq!((report.applied, report.failed), (1, 0), "{cut}: {report:?}");
        assert_nothing_left(&f, &clean, cut);
    }
}

pub fn the_sweep_removes_aws_resources_that_have_no_device(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let aws = Arc::new(moto.registrar(|_| {}));
    let onboard = with_aws(&f, aws.clone());
    let key = batch(&f, 5);
    let kept = onboard.register(request(&key, "SN-KEPT", None)).unwrap();
    // Resources marked as ours for a device id the registry never had, and no
    // intent (e.g. a database restored from an older backup).
    let stray = DeviceId(uuid::Uuid::new_v4());
    aws.register(&CloudDevice {
        device_id: stray,
        serial: Serial::parse("SN-STRAY").unwrap(),
        model: None,
        batch: None,
        firmware_version: "1".into(),
        certificate: CloudCertificate::Issue { csr: None },
    })
    .unwrap();
    assert_eq!(inventory(&aws).0.len(), 2);
    let report = onboard.reconcile(true).unwrap();
    assert_eq!(report.cloud_orphans_removed, 1, "{report:?}");
    let (things, certs) = inventory(&aws);
    assert_eq!(things, [kept.device.id.to_string()]);
    assert_eq!(certs.len(), 1);
    // A periodic pass does not list AWS.
    assert_eq!(onboard.reconcile(false).unwrap().cloud_orphans_removed, 0);
}

pub fn operator_registration_and_a_new_certificate_reach_aws_after_the_commit(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    let moto = MotoServer::start().unwrap();
    let aws = Arc::new(moto.registrar(|c| c.issue_certificates = true));
    let onboard = with_aws(&f, aws.clone());
    // Operator registration: our CA's certificate is registered after the commit,
    // in either mode.
    let op = onboard
        .register_device(
            &Actor::cli(),
            &onboard_core::NewDeviceRequest {
                name: "boiler".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let rec = onboard.device(op.device.id).unwrap().aws.unwrap();
    let (status, pem) = aws_certificate(&aws, &rec.certificate_id).unwrap();
    assert_eq!(status, "ACTIVE");
    let current = onboard
        .device(op.device.id)
        .unwrap()
        .current_certificate
        .unwrap();
    assert_eq!(pem.trim(), current.pem.trim());

    // A registration again with the device's own single-use key: the new
    // certificate replaces the old one on the Thing, the old one is deleted.
    let key = batch(&f, 1);
    let first = onboard.register(request(&key, "SN-AGAIN", None)).unwrap();
    let old = first.cloud.unwrap().record;
    let again = onboard.register(request(&key, "SN-AGAIN", None)).unwrap();
    assert!(again.reregistered);
    let new = onboard.device(again.device.id).unwrap().aws.unwrap();
    assert_ne!(new.certificate_id, old.certificate_id);
    assert_eq!(new.thing_name, old.thing_name);
    assert_eq!(aws_certificate(&aws, &old.certificate_id), None);
    let (status, pem) = aws_certificate(&aws, &new.certificate_id).unwrap();
    assert_eq!(status, "ACTIVE");
    assert_eq!(pem.trim(), again.certificate.pem.trim());
    assert_eq!(again.cloud.unwrap().record, new);
    assert_eq!(pending(&f), 0);
}
