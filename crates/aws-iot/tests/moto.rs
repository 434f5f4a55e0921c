//! The registrar against a real moto server with the real SDK client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use aws_sdk_iot::types::CertificateStatus;
use onboard_aws_iot::testing::{Faults, MotoServer};
use onboard_aws_iot::{AwsIot, DEVICE_ID_ATTRIBUTE};
use onboard_domain::{CloudCertificate, CloudDevice, CloudRegistrar, DeviceId, Serial};

fn device(certificate: CloudCertificate) -> CloudDevice {
    CloudDevice {
        device_id: DeviceId(uuid::Uuid::new_v4()),
        serial: Serial::parse("SN-0001.A").unwrap(),
        model: Some("tempsensor".into()),
        batch: Some("line7".into()),
        firmware_version: "1.4.2".into(),
        certificate,
    }
}

/// A self-signed certificate made by the openssl CLI.
fn openssl_cert(dir: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(dir.join("c.pem"))
        .args(["-days", "2", "-subj", "/CN=test-device"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("c.pem")).unwrap()
}

fn openssl_csr(dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join("csr-k.pem"))
        .args(["-subj", "/CN=test-device"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

use onboard_aws_iot::testing::inventory;

fn certificate_status(aws: &AwsIot, id: &str) -> Option<CertificateStatus> {
    aws.block_on(async {
        aws.client()
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .ok()
            .and_then(|d| {
                d.certificate_description()
                    .and_then(|c| c.status().cloned())
            })
    })
}

#[test]
fn own_ca_registration_creates_thing_active_certificate_and_policy_and_decommission_removes_them() {
    let moto = MotoServer::start().unwrap();
    let aws =
        moto.registrar(|c| c.thing_groups = vec!["model-{model}".into(), "batch-{batch}".into()]);
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_cert(dir.path());
    let d = device(CloudCertificate::Own { pem: pem.clone() });
    let reg = aws.register(&d).unwrap();
    assert!(reg.issued.is_none());
    assert!(!reg.endpoint.is_empty());
    let r = &reg.record;
    assert_eq!(r.thing_name, d.device_id.to_string());
    assert!(
        r.thing_arn.ends_with(&format!("thing/{}", r.thing_name)),
        "{}",
        r.thing_arn
    );
    assert!(r.certificate_arn.ends_with(&r.certificate_id));

    aws.block_on(async {
        let c = aws.client();
        let thing = c
            .describe_thing()
            .thing_name(&r.thing_name)
            .send()
            .await
            .unwrap();
        let attrs = thing.attributes().unwrap();
        assert_eq!(attrs[DEVICE_ID_ATTRIBUTE], d.device_id.to_string());
        assert_eq!(attrs["serial"], "SN-0001.A");
        assert_eq!(attrs["model"], "tempsensor");
        assert_eq!(attrs["firmware"], "1.4.2");
        assert_eq!(thing.thing_type_name(), Some("onboard-device"));
        let cert = c
            .describe_certificate()
            .certificate_id(&r.certificate_id)
            .send()
            .await
            .unwrap();
        let cert = cert.certificate_description().unwrap();
        assert_eq!(cert.status(), Some(&CertificateStatus::Active));
        // AWS holds the very certificate we registered.
        assert_eq!(cert.certificate_pem().unwrap().trim(), pem.trim());
        let principals = c
            .list_thing_principals()
            .thing_name(&r.thing_name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            principals.principals(),
            std::slice::from_ref(&r.certificate_arn)
        );
        let policies = c
            .list_attached_policies()
            .target(&r.certificate_arn)
            .send()
            .await
            .unwrap();
        let names: Vec<_> = policies
            .policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect();
        assert_eq!(names, ["onboard-device"]);
        let doc = c
            .get_policy()
            .policy_name("onboard-device")
            .send()
            .await
            .unwrap();
        assert!(doc
            .policy_document()
            .unwrap()
            .contains("${iot:Connection.Thing.ThingName}"));
        for group in ["model-tempsensor", "batch-line7"] {
            let members = c
                .list_things_in_thing_group()
                .thing_group_name(group)
                .send()
                .await
                .unwrap();
            assert_eq!(
                members.things(),
                std::slice::from_ref(&r.thing_name),
                "{group}"
            );
        }
    });
    assert_eq!(aws.devices().unwrap(), vec![d.device_id]);

    aws.revoke(r).unwrap();
    assert_eq!(
        certificate_status(&aws, &r.certificate_id),
        Some(CertificateStatus::Revoked)
    );

    aws.deregister(d.device_id).unwrap();
    assert_eq!(inventory(&aws), (vec![], vec![]));
    assert!(aws.devices().unwrap().is_empty());
    // Removing nothing is not an error.
    aws.deregister(d.device_id).unwrap();
}

#[test]
fn aws_issued_without_csr_returns_the_key_and_an_active_certificate() {
    let moto = MotoServer::start().unwrap();
    let aws = moto.registrar(|c| c.issue_certificates = true);
    assert!(aws.issues_certificates());
    let d = device(CloudCertificate::Issue { csr: None });
    let reg = aws.register(&d).unwrap();
    let issued = reg.issued.unwrap();
    assert!(issued.certificate_pem.contains("BEGIN CERTIFICATE"));
    assert!(issued.private_key.unwrap().expose().contains("PRIVATE KEY"));
    assert!(issued.ca_chain_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        certificate_status(&aws, &reg.record.certificate_id),
        Some(CertificateStatus::Active)
    );
    aws.deregister(d.device_id).unwrap();
    assert_eq!(inventory(&aws), (vec![], vec![]));
}

/// moto answers CreateCertificateFromCsr with a certificate for another key than
/// the CSR's (docs/aws.md): this checks the calls and the states, not the key.
#[test]
fn aws_issued_from_a_csr_makes_an_active_certificate_attached_to_the_thing() {
    let moto = MotoServer::start().unwrap();
    let faults = Faults::new();
    let aws = moto.registrar(|c| {
        c.issue_certificates = true;
        c.interceptors.push(faults.interceptor());
    });
    let dir = tempfile::tempdir().unwrap();
    let d = device(CloudCertificate::Issue {
        csr: Some(openssl_csr(dir.path())),
    });
    let reg = aws.register(&d).unwrap();
    let issued = reg.issued.unwrap();
    assert!(issued.private_key.is_none());
    assert!(
        faults
            .calls()
            .contains(&"CreateCertificateFromCsr".to_owned()),
        "{:?}",
        faults.calls()
    );
    assert!(!faults
        .calls()
        .contains(&"CreateKeysAndCertificate".to_owned()));
    assert_eq!(
        certificate_status(&aws, &reg.record.certificate_id),
        Some(CertificateStatus::Active)
    );
}

#[test]
fn a_failing_step_undoes_the_steps_before_it_and_names_the_call() {
    let moto = MotoServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for call in [
        "CreateThing",
        "RegisterCertificateWithoutCA",
        "AttachThingPrincipal",
        "AttachPolicy",
        "UpdateCertificate",
    ] {
        let faults = Faults::new();
        faults.fail(call);
        let aws = moto.registrar(|c| c.interceptors.push(faults.interceptor()));
        let d = device(CloudCertificate::Own {
            pem: openssl_cert(dir.path()),
        });
        let err = aws.register(&d).unwrap_err();
        assert!(err.to_string().contains(call), "{call}: {err}");
        let clean = moto.registrar(|_| {});
        assert_eq!(
            inventory(&clean),
            (vec![], vec![]),
            "after a failing {call}"
        );
    }
}

#[test]
fn an_unreachable_endpoint_fails_within_the_timeouts_naming_the_call() {
    let mut moto = MotoServer::start().unwrap();
    let aws = moto.registrar(|_| {});
    moto.stop();
    let err = aws
        .register(&device(CloudCertificate::Issue { csr: None }))
        .unwrap_err();
    assert!(
        err.to_string().contains("AWS IoT CreateThingType failed"),
        "{err}"
    );
    let err = aws.deregister(DeviceId(uuid::Uuid::new_v4())).unwrap_err();
    assert!(err.to_string().contains("ListThings"), "{err}");
}
