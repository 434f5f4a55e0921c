//! Operator registration, bundles, revocation, decommissioning, bulk import.

use std::process::Command;

use chrono::Duration;
use onboard_core::domain::*;
use onboard_core::{Actor, CoreError, DevicePatch, ImportOutcome, ImportRow, NewDeviceRequest};
use onboard_registry::testing::TestBackend;

use super::{fixture, openssl, write, Fixture};

/// A fixture with the `tempsensor` model the operator requests name (an unknown
/// model is refused).
fn with_model(
    backend: TestBackend,
    configure: impl FnOnce(&mut onboard_core::Settings),
) -> Fixture {
    let f = fixture(backend, configure);
    f.onboard
        .create_model(&Actor::cli(), "tempsensor", &Default::default())
        .unwrap();
    f
}

fn python() -> String {
    // scripts/test-services.sh puts the test virtualenv first on PATH.
    "python3".into()
}

/// Opens a ZIP with pyzipper (an independent implementation) and returns the
/// names and contents, or the error text.
pub fn pyzipper_open(
    dir: &std::path::Path,
    zip: &[u8],
    password: &str,
) -> Result<Vec<(String, String)>, String> {
    let path = write(dir, "bundle.zip", "");
    std::fs::write(&path, zip).unwrap();
    let script = r#"
import sys, json, pyzipper
with pyzipper.AESZipFile(sys.argv[1]) as z:
    z.setpassword(sys.argv[2].encode())
    out = [[n, z.read(n).decode()] for n in z.namelist()]
print(json.dumps(out))
"#;
    let out = Command::new(python())
        .args(["-c", script, &path, password])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn request(name: &str) -> NewDeviceRequest {
    NewDeviceRequest {
        name: name.into(),
        model: Some("tempsensor".into()),
        location: Some("hall 7".into()),
        firmware_version: Some("1.0.0".into()),
        ..Default::default()
    }
}

fn register(f: &Fixture, name: &str) -> onboard_core::OperatorRegistered {
    f.onboard
        .register_device(&Actor::cli(), &request(name))
        .unwrap()
}

pub fn operator_registration_makes_a_bundle_an_independent_tool_opens(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    let r = register(&f, "boiler");
    assert_eq!(
        r.device.serial.as_str(),
        r.device.id.to_string(),
        "the serial defaults to the id"
    );
    assert_eq!(r.device.name, "boiler");
    let files = pyzipper_open(f.dir.path(), &r.bundle_zip, r.bundle_password.expose()).unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["device.crt", "device.key", "ca.crt", "connection.json"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    for (name, text) in &files {
        write(f.dir.path(), name, text);
    }
    let at = f.clock.now().timestamp().to_string();
    let (ok, out) = openssl(&[
        "verify",
        "-attime",
        &at,
        "-CAfile",
        &f.dir.path().join("ca.crt").display().to_string(),
        "-purpose",
        "sslclient",
        &f.dir.path().join("device.crt").display().to_string(),
    ]);
    assert!(ok, "{out}");
    let connection: serde_json::Value = serde_json::from_str(
        &files
            .iter()
            .find(|(n, _)| n == "connection.json")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(connection["device_id"], r.device.id.to_string());
    // pyzipper says why: the password, not a damaged file.
    let refused = pyzipper_open(f.dir.path(), &r.bundle_zip, "wrong password!!").unwrap_err();
    assert!(refused.contains("Bad password"), "{refused}");
    for bad in [
        NewDeviceRequest {
            name: "".into(),
            ..Default::default()
        },
        NewDeviceRequest {
            name: "x".repeat(129),
            ..Default::default()
        },
        NewDeviceRequest {
            name: "ok".into(),
            firmware_version: Some("1 0".into()),
            ..Default::default()
        },
        NewDeviceRequest {
            name: "ok".into(),
            serial: Some("bad serial".into()),
            ..Default::default()
        },
        NewDeviceRequest {
            name: "ok".into(),
            model: Some("Bad".into()),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                f.onboard.register_device(&Actor::cli(), &bad),
                Err(CoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let dup = NewDeviceRequest {
        name: "again".into(),
        serial: Some(r.device.serial.to_string()),
        ..Default::default()
    };
    // The first device's serial is its id: as another device's serial it could
    // name the first one's topics.
    assert!(matches!(
        f.onboard.register_device(&Actor::cli(), &dup),
        Err(CoreError::Invalid(_))
    ));
    let named = NewDeviceRequest {
        name: "named".into(),
        serial: Some("SN-OP-1".into()),
        ..Default::default()
    };
    f.onboard.register_device(&Actor::cli(), &named).unwrap();
    assert!(matches!(
        f.onboard.register_device(&Actor::cli(), &named),
        Err(CoreError::Conflict(_))
    ));
}

pub fn bundle_links_work_once_and_expire(backend: TestBackend) {
    let f = with_model(backend, |s| s.delivery.download_expiry_minutes = 30);
    let (r, link) = f
        .onboard
        .register_device_with_link(&Actor::cli(), &request("a"))
        .unwrap();
    assert!(link
        .url
        .starts_with("http://localhost:8080/public/v1/bundles/"));
    assert_eq!(link.expires_at, f.clock.now() + Duration::minutes(30));
    let token = link.url.rsplit('/').next().unwrap().to_owned();
    let mut tampered = token.clone();
    tampered.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
    for bad in [tampered.as_str(), "", "nope", &"A".repeat(43)] {
        assert!(
            matches!(
                f.onboard.download_bundle(bad),
                Err(CoreError::NotFound { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(f.onboard.download_bundle(&token).unwrap(), r.bundle_zip);
    assert!(
        matches!(
            f.onboard.download_bundle(&token),
            Err(CoreError::NotFound { .. })
        ),
        "only once"
    );

    let (_, late_link) = f
        .onboard
        .register_device_with_link(&Actor::cli(), &request("b"))
        .unwrap();
    let late_token = late_link.url.rsplit('/').next().unwrap().to_owned();
    f.clock.advance(Duration::minutes(31));
    assert!(
        matches!(
            f.onboard.download_bundle(&late_token),
            Err(CoreError::NotFound { .. })
        ),
        "expired"
    );
    assert_eq!(f.onboard.purge_expired_bundles().unwrap(), 1);
    // No private key is left in the database.
    let left: i64 = {
        use diesel::prelude::*;
        use onboard_registry::schema::credential_bundles as b;
        let mut conn = f.db.db.connection().unwrap();
        b::table
            .filter(b::content.is_not_null())
            .count()
            .get_result(&mut *conn)
            .unwrap()
    };
    assert_eq!(left, 0);
}

pub fn revocation_puts_the_serial_in_the_crl_and_is_idempotent(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    let r = register(&f, "victim");
    let ops = Actor::admin("ops", Some("10.1.2.3".into()));
    let d = f
        .onboard
        .revoke_device(&ops, r.device.id, RevocationReason::KeyCompromise)
        .unwrap();
    assert_eq!(d.device.status, DeviceStatus::Revoked);
    assert!(d.current_certificate.is_none());
    assert_eq!(
        d.certificates[0].revocation_reason,
        Some(RevocationReason::KeyCompromise)
    );
    let crl = f.onboard.current_crl().unwrap();
    let chain = write(
        f.dir.path(),
        "chain.pem",
        f.onboard.ca().unwrap().chain_pem(),
    );
    let crl_file = write(f.dir.path(), "crl.pem", &crl.pem);
    let (ok, text) = openssl(&[
        "crl", "-in", &crl_file, "-CAfile", &chain, "-verify", "-noout", "-text",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(r.certificate.as_ref().unwrap().serial.as_str()),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");

    let again = f
        .onboard
        .revoke_device(&ops, r.device.id, RevocationReason::Superseded)
        .unwrap();
    assert_eq!(
        again.certificates[0].revocation_reason,
        Some(RevocationReason::KeyCompromise),
        "the first reason stands"
    );
    let audit = f
        .onboard
        .audit_events(
            &AuditFilter {
                action: Some("device.revoke".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .unwrap()
        .items;
    assert_eq!(audit.len(), 1, "a repeated revocation records nothing new");
    assert_eq!(audit[0].actor, "admin:ops");
    assert_eq!(audit[0].remote_addr.as_deref(), Some("10.1.2.3"));

    let err = f
        .onboard
        .revoke_device(
            &ops,
            DeviceId(uuid::Uuid::nil()),
            RevocationReason::Unspecified,
        )
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { .. }));
}

pub fn decommissioning_keeps_the_record_and_edits_are_validated(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    let r = register(&f, "old");
    let updated = f
        .onboard
        .update_device(
            &Actor::cli(),
            r.device.id,
            &DevicePatch {
                name: Some("older".into()),
                metadata: Some(serde_json::json!({"rack": 2})),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.location.as_str()),
        ("older", "hall 7")
    );
    for bad in [
        DevicePatch {
            name: Some("".into()),
            ..Default::default()
        },
        DevicePatch {
            config: Some(serde_json::json!([1])),
            ..Default::default()
        },
        DevicePatch {
            location: Some("x\u{7}".into()),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            f.onboard.update_device(&Actor::cli(), r.device.id, &bad),
            Err(CoreError::Invalid(_))
        ));
    }
    let d = f
        .onboard
        .decommission_device(&Actor::cli(), r.device.id)
        .unwrap();
    assert_eq!(d.device.status, DeviceStatus::Decommissioned);
    assert_eq!(d.device.decommissioned_at, Some(f.clock.now()));
    assert_eq!(
        d.certificates[0].revocation_reason,
        Some(RevocationReason::CessationOfOperation)
    );
    assert!(
        f.onboard
            .decommission_device(&Actor::cli(), r.device.id)
            .is_ok(),
        "idempotent"
    );
    assert!(matches!(
        f.onboard.update_device(
            &Actor::cli(),
            r.device.id,
            &DevicePatch {
                name: Some("x".into()),
                ..Default::default()
            }
        ),
        Err(CoreError::Conflict(_))
    ));
    let trail = f
        .onboard
        .audit_events(
            &AuditFilter {
                device_id: Some(r.device.id),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .unwrap()
        .items;
    let actions: Vec<_> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["device.decommission", "device.update", "device.create"]
    );
}

pub fn import_of_a_thousand_rows_with_ten_bad_ones(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    let rows: Vec<ImportRow> = (0..1000)
        .map(|i| ImportRow {
            line: i + 2,
            request: NewDeviceRequest {
                name: format!("dev{i}"),
                model: Some(if i % 100 == 7 {
                    "Bad Model".into()
                } else {
                    "tempsensor".into()
                }),
                location: Some(format!("hall {}", i % 7)),
                firmware_version: Some("1.0.0".into()),
                serial: Some(format!("IMP-{i:05}")),
                ..Default::default()
            },
        })
        .collect();
    let mut calls = 0;
    let results = f
        .onboard
        .import_devices(&Actor::cli(), &rows, &mut |_| calls += 1)
        .unwrap();
    assert!(calls >= 2, "progress is reported");
    let created = results
        .iter()
        .filter(|r| matches!(r.outcome, ImportOutcome::Created(_)))
        .count();
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            ImportOutcome::Failed(m) => Some((r.line, m.clone())),
            _ => None,
        })
        .collect();
    assert_eq!((created, failed.len()), (990, 10), "{failed:?}");
    assert!(failed
        .iter()
        .all(|(line, m)| (line - 2) % 100 == 7 && m.contains("model")));
    let again = f
        .onboard
        .import_devices(&Actor::cli(), &rows, &mut |_| {})
        .unwrap();
    let existing = again
        .iter()
        .filter(|r| matches!(r.outcome, ImportOutcome::Exists))
        .count();
    assert_eq!(existing, 990, "a second run adds nothing");
    let all = f
        .onboard
        .devices(&DeviceFilter::default(), &PageRequest::first(500).unwrap())
        .unwrap();
    assert!(all.next_cursor.is_some());
    // A repeated serial inside one file is a row error.
    let dup = vec![
        rows[0].clone(),
        ImportRow {
            line: 99,
            ..rows[0].clone()
        },
    ];
    let r = f
        .onboard
        .import_devices(&Actor::cli(), &dup, &mut |_| {})
        .unwrap();
    assert!(
        matches!(&r[1].outcome, ImportOutcome::Failed(m) if m.contains("repeats line 2")),
        "{r:?}"
    );
}

pub fn unactivated_devices_are_reported_then_rolled_back(backend: TestBackend) {
    let f = with_model(backend, |s| {
        s.activation.report_after_hours = 24;
        s.activation.revoke_after_hours = 48;
    });
    let quiet = register(&f, "quiet");
    let lively = register(&f, "lively");
    f.onboard
        .record_activity(&[(lively.device.id.to_string(), f.clock.now())])
        .unwrap();
    assert!(
        f.onboard
            .unactivated_devices(true)
            .unwrap()
            .devices
            .is_empty(),
        "too early"
    );
    f.clock.advance(Duration::hours(25));
    let found = f.onboard.unactivated_devices(true).unwrap();
    assert_eq!(
        found.devices.iter().map(|d| d.id).collect::<Vec<_>>(),
        [quiet.device.id]
    );
    assert!(found.revoked.is_empty(), "reported, not yet revoked");
    // The server's sweep counts the same devices.
    assert_eq!(f.onboard.sweep_unactivated().unwrap(), (1, vec![]));
    f.clock.advance(Duration::hours(24));
    let found = f.onboard.unactivated_devices(true).unwrap();
    assert_eq!(found.revoked, [quiet.device.id]);
    let d = f.onboard.device(quiet.device.id).unwrap();
    assert_eq!(d.device.status, DeviceStatus::Revoked);
    assert_eq!(
        d.certificates[0].revocation_reason,
        Some(RevocationReason::PrivilegeWithdrawn)
    );
    assert_eq!(
        f.onboard.device(lively.device.id).unwrap().device.status,
        DeviceStatus::Active
    );
    assert!(f
        .onboard
        .unactivated_devices(true)
        .unwrap()
        .devices
        .is_empty());
    assert_eq!(f.onboard.sweep_unactivated().unwrap(), (0, vec![]));
}

pub fn model_templates_shape_grants_and_follow_updates(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    let ops = Actor::cli();
    let bad = onboard_core::ModelRequest {
        publish_topics: Some(vec!["fleet/all".into()]),
        ..Default::default()
    };
    assert!(matches!(
        f.onboard.create_model(&ops, "tempsensor", &bad),
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        f.onboard
            .create_model(&ops, "Bad Code", &Default::default()),
        Err(CoreError::Invalid(_))
    ));
    let m = f
        .onboard
        .create_model(
            &ops,
            "tempsensor",
            &onboard_core::ModelRequest {
                publish_topics: Some(vec!["telemetry/{model}/{serial}".into()]),
                subscribe_topics: Some(vec![
                    "cmd/{device_id}/#".into(),
                    "fleet/{model}/announce".into(),
                ]),
                max_qos: Some(2),
                config: Some(serde_json::json!({"interval": 60})),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(m.name, "tempsensor");
    let r = register(&f, "sensor 1");
    let d = f.onboard.device(r.device.id).unwrap().device;
    assert_eq!(d.model.as_ref().map(|m| m.as_str()), Some("tempsensor"));
    let acl = std::fs::read_to_string(&f.onboard.settings().broker.acl_file).unwrap();
    assert!(
        acl.contains(&format!("telemetry/tempsensor/{}", d.serial)),
        "{acl}"
    );
    assert!(acl.contains(&format!("cmd/{}/#", d.id)), "{acl}");
    // The bundle's connection settings carry the model's topics and configuration.
    let files = pyzipper_open(f.dir.path(), &r.bundle_zip, r.bundle_password.expose()).unwrap();
    let conn: serde_json::Value = serde_json::from_str(
        &files
            .iter()
            .find(|(n, _)| n == "connection.json")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(conn["mqtt"]["max_qos"], 2);
    assert_eq!(conn["config"]["interval"], 60);

    f.onboard
        .update_model(
            &ops,
            "tempsensor",
            &onboard_core::ModelRequest {
                publish_topics: Some(vec!["v2/{device_id}/up".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let acl = std::fs::read_to_string(&f.onboard.settings().broker.acl_file).unwrap();
    assert!(
        acl.contains(&format!("v2/{}/up", d.id)) && !acl.contains("telemetry/tempsensor"),
        "{acl}"
    );
    assert!(matches!(
        f.onboard.delete_model(&ops, "tempsensor"),
        Err(CoreError::Conflict(_))
    ));
    assert!(matches!(
        f.onboard.model("nope"),
        Err(CoreError::NotFound { .. })
    ));
}

pub fn a_bundle_link_downloaded_concurrently_is_taken_once(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    let (r, link) = f
        .onboard
        .register_device_with_link(&Actor::cli(), &request("race"))
        .unwrap();
    let token = link.url.rsplit('/').next().unwrap().to_owned();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let results: Vec<Result<Vec<u8>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (onboard, token, barrier) = (f.onboard.clone(), token.clone(), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    onboard.download_bundle(&token).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(got.len(), 1, "{results:?}");
    assert_eq!(got[0], &r.bundle_zip);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.contains("not found")),
        "{results:?}"
    );
}

/// Password devices through import and a model's default: a client id and secret
/// (shown once, stored hashed), no certificate, and a bundle with `ca.crt` and a
/// `connection.json` holding the credentials, which pyzipper opens.
pub fn password_devices_from_import_and_a_model_default(backend: TestBackend) {
    let f = with_model(backend, |_| {});
    f.onboard
        .create_model(
            &Actor::cli(),
            "pwmodel",
            &onboard_core::ModelRequest {
                credential: Some("password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let bad = f.onboard.create_model(
        &Actor::cli(),
        "badmodel",
        &onboard_core::ModelRequest {
            credential: Some("token".into()),
            ..Default::default()
        },
    );
    assert!(
        matches!(&bad, Err(onboard_core::CoreError::Invalid(v)) if v.to_string().contains("credential")),
        "{bad:?}"
    );
    let row = |i: usize, model: &str, credential: Option<&str>| ImportRow {
        line: i + 2,
        request: NewDeviceRequest {
            name: format!("pw{i}"),
            model: Some(model.into()),
            serial: Some(format!("PW-{i:03}")),
            credential: credential.map(str::to_owned),
            ..Default::default()
        },
    };
    let rows = vec![
        row(0, "tempsensor", Some("password")),
        row(1, "pwmodel", None),
        row(2, "pwmodel", Some("certificate")),
        row(3, "tempsensor", Some("bogus")),
    ];
    let results = f
        .onboard
        .import_devices(&Actor::cli(), &rows, &mut |_| {})
        .unwrap();
    assert_eq!(results.len(), 4);
    let mut secrets = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match (i, r.outcome) {
            (0 | 1, ImportOutcome::Created(done)) => {
                assert_eq!(done.device.credential, CredentialKind::Password);
                assert!(done.certificate.is_none());
                let secret = done.client_secret.as_ref().unwrap().expose().to_owned();
                let files = pyzipper_open(
                    f.dir.path(),
                    &done.bundle_zip,
                    done.bundle_password.expose(),
                )
                .unwrap();
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, vec!["ca.crt", "connection.json"]);
                let connection: serde_json::Value = serde_json::from_str(&files[1].1).unwrap();
                assert_eq!(connection["client_id"], done.device.id.to_string());
                assert_eq!(connection["client_secret"], secret.as_str());
                assert_eq!(connection["mqtt"]["password"], secret.as_str());
                secrets.push((done.device.id, secret));
            }
            (2, ImportOutcome::Created(done)) => {
                assert_eq!(done.device.credential, CredentialKind::Certificate);
                assert!(done.certificate.is_some() && done.client_secret.is_none());
            }
            (3, ImportOutcome::Failed(m)) => assert!(m.contains("credential"), "{m}"),
            (i, other) => panic!("row {i}: {other:?}"),
        }
    }
    // Each secret gets a token; the hash in the registry is not the secret.
    for (id, secret) in &secrets {
        let token = f
            .onboard
            .issue_access_token(&id.to_string(), secret, None)
            .unwrap();
        let session = f.onboard.authenticate_token(token.token.expose()).unwrap();
        assert_eq!(session.device.id, *id);
    }
    let audit = f
        .onboard
        .audit_events(&AuditFilter::default(), &PageRequest::first(200).unwrap())
        .unwrap();
    let text = serde_json::to_string(&audit.items).unwrap();
    for (_, secret) in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "no secret in the audit log"
        );
    }
}

/// The dynamic-security plugin takes only clear passwords, which Onboard never
/// keeps: a password device is refused there, and nothing is created.
pub fn password_devices_are_refused_with_the_dynsec_broker(backend: TestBackend) {
    let f = with_model(backend, |s| {
        s.broker.kind = onboard_core::settings::BrokerKind::MosquittoDynsec;
        s.broker.mqtt_url = "mqtts://127.0.0.1:1".into();
    });
    let r = f.onboard.register_device(
        &Actor::cli(),
        &NewDeviceRequest {
            name: "pw".into(),
            credential: Some("password".into()),
            ..Default::default()
        },
    );
    assert!(
        matches!(&r, Err(onboard_core::CoreError::Invalid(v)) if v.to_string().contains("mosquitto-file")),
        "{r:?}"
    );
    let devices = f
        .onboard
        .devices(&DeviceFilter::default(), &PageRequest::first(10).unwrap())
        .unwrap();
    assert!(devices.items.is_empty());
}
