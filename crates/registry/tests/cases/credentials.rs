//! Password devices' secret hashes, the credential column, and renewals past their
//! grace period.

use super::*;

pub fn mqtt_credentials_are_one_per_device_and_replaced(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let mut nd = new_device("SN-pw", t0());
    nd.credential = CredentialKind::Password;
    let d = tx(&t.db, |c| c.insert_device(&nd));
    assert_eq!(d.credential, CredentialKind::Password);
    let other = tx(&t.db, |c| c.insert_device(&new_device("SN-cert", t0())));
    assert_eq!(other.credential, CredentialKind::Certificate);
    assert_eq!(tx(&t.db, |c| c.mqtt_credential(d.id)), None);
    let first = MqttCredential {
        device_id: d.id,
        username: d.id.to_string(),
        password_hash: "$7$101$c2FsdA==$aGFzaDE=".into(),
        created_at: t0(),
        updated_at: t0(),
    };
    tx(&t.db, |c| c.set_mqtt_credential(&first));
    assert_eq!(tx(&t.db, |c| c.mqtt_credential(d.id)), Some(first.clone()));
    let second = MqttCredential {
        password_hash: "$7$101$c2FsdA==$aGFzaDI=".into(),
        updated_at: t0() + Duration::minutes(1),
        ..first.clone()
    };
    tx(&t.db, |c| c.set_mqtt_credential(&second));
    assert_eq!(tx(&t.db, |c| c.mqtt_credential(d.id)), Some(second.clone()));
    assert_eq!(
        tx(&t.db, |c| c.mqtt_credentials()),
        vec![second],
        "replaced, not added"
    );
    // A credential row is the device's: deleting the device removes it.
    tx(&t.db, |c| c.delete_device(d.id));
    assert!(tx(&t.db, |c| c.mqtt_credentials()).is_empty());
}

pub fn renewals_are_found_once_their_newest_certificate_is_old_enough(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-renew", t0())));
    let single = tx(&t.db, |c| c.insert_device(&new_device("SN-single", t0())));
    let old = new_cert(d.id, "0A01", t0());
    let mut newer = new_cert(d.id, "0A02", t0() + Duration::hours(1));
    newer.fingerprint = Fingerprint::parse(&"cd".repeat(32)).unwrap();
    let mut lone = new_cert(single.id, "0A03", t0());
    lone.fingerprint = Fingerprint::parse(&"ef".repeat(32)).unwrap();
    tx(&t.db, |c| {
        c.insert_certificate(&old)?;
        c.insert_certificate(&newer)?;
        c.insert_certificate(&lone)
    });
    let before = t0() + Duration::minutes(59);
    assert!(tx(&t.db, |c| c.renewals_older_than(before)).is_empty());
    let after = t0() + Duration::hours(2);
    assert_eq!(
        tx(&t.db, |c| c.renewals_older_than(after)),
        vec![(d.id, newer.id)],
        "only the device with two active certificates, with its newest"
    );
    tx(&t.db, |c| {
        c.revoke_certificate(old.id, after, RevocationReason::Superseded)
    });
    assert!(tx(&t.db, |c| c.renewals_older_than(after)).is_empty());
}
