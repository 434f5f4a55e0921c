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

/// The renewal marks (`certificates.renewed_at`) say at every step what grouping a
/// device's active certificates would: out-of-order inserts, a newer certificate
/// revoked again (a rotation that timed out), the last renewal retired; the
/// migration writes them for certificates stored before it; and the reconciler's
/// query reads them through the partial index, not the table.
pub fn renewal_marks_follow_the_active_certificates(backend: TestBackend) {
    use onboard_registry::schema::certificates;
    let t = TestDb::migrated(backend);
    let marks = |db: &Database| -> Vec<(String, Option<chrono::NaiveDateTime>)> {
        let mut conn = db.connection().unwrap();
        certificates::table
            .filter(certificates::renewed_at.is_not_null())
            .order(certificates::serial.asc())
            .select((certificates::serial, certificates::renewed_at))
            .load(&mut *conn)
            .unwrap()
    };
    let at = |h: i64| t0() + Duration::hours(h);
    let naive = |h: i64| Some(at(h).naive_utc());
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-marks", t0())));
    let cert = |serial: &str, h: i64, fp: &str| {
        let mut c = new_cert(d.id, serial, at(h));
        c.fingerprint = Fingerprint::parse(&fp.repeat(32)).unwrap();
        c
    };
    let (a, b, c3, e) = (
        cert("0B01", 0, "a1"),
        cert("0B02", 1, "b2"),
        cert("0B03", 3, "c3"),
        cert("0B04", 4, "d4"),
    );
    // The newer one first.
    tx(&t.db, |c| c.insert_certificate(&b));
    tx(&t.db, |c| c.insert_certificate(&a));
    assert_eq!(marks(&t.db), vec![("0B01".into(), naive(1))]);
    assert_eq!(
        tx(&t.db, |c| c.renewals_older_than(at(2))),
        vec![(d.id, b.id)]
    );
    // A newer certificate, then revoked: back to where it was.
    tx(&t.db, |c| c.insert_certificate(&c3));
    assert_eq!(
        marks(&t.db),
        vec![("0B01".into(), naive(3)), ("0B02".into(), naive(3))]
    );
    assert!(tx(&t.db, |c| c.renewals_older_than(at(2))).is_empty());
    tx(&t.db, |c| {
        c.revoke_certificate(c3.id, at(3), RevocationReason::CessationOfOperation)
    });
    assert_eq!(marks(&t.db), vec![("0B01".into(), naive(1))]);
    assert_eq!(
        tx(&t.db, |c| c.renewals_older_than(at(2))),
        vec![(d.id, b.id)]
    );
    // The renewal retired: no mark is left, nothing is found however late.
    tx(&t.db, |c| {
        c.revoke_certificate(a.id, at(2), RevocationReason::Superseded)
    });
    assert!(marks(&t.db).is_empty());
    assert!(tx(&t.db, |c| c.renewals_older_than(at(1000))).is_empty());

    // The query plan reads the partial index (the same query as the repository's).
    // Checked before the migration runs again below: PostgreSQL does not use an
    // index built over updated rows (`indcheckxmin`) until every older snapshot
    // of the server has ended, which other tests' transactions may delay.
    {
        let mut conn = t.db.connection().unwrap();
        let conn: &mut DbConnection = &mut conn;
        let plan: Vec<String> = match backend {
            TestBackend::Sqlite => diesel::sql_query(
                "EXPLAIN QUERY PLAN SELECT device_id FROM certificates WHERE renewed_at <= ?",
            )
            .bind::<diesel::sql_types::Timestamp, _>(at(5).naive_utc())
            .load::<PlanDetail>(conn)
            .unwrap()
            .into_iter()
            .map(|p| p.detail)
            .collect(),
            TestBackend::Postgres => {
                use diesel::connection::SimpleConnection;
                conn.batch_execute("SET enable_seqscan = off").unwrap();
                diesel::sql_query(
                    "EXPLAIN SELECT device_id FROM certificates \
                 WHERE renewed_at <= '2030-01-01 00:00:00'",
                )
                .load::<PlanLineQueryPlan>(conn)
                .unwrap()
                .into_iter()
                .map(|p| p.plan)
                .collect()
            }
        };
        assert!(
            plan.iter().any(|l| l.contains("certificates_renewed_idx")),
            "{plan:#?}"
        );
    }

    // Certificates stored before the migration get their marks from it.
    tx(&t.db, |c| c.insert_certificate(&e));
    assert_eq!(marks(&t.db), vec![("0B02".into(), naive(4))]);
    while t.db.revert_last_migration().unwrap() != "20261205000001" {}
    t.db.run_migrations().unwrap();
    assert_eq!(marks(&t.db), vec![("0B02".into(), naive(4))]);
    assert_eq!(
        tx(&t.db, |c| c.renewals_older_than(at(5))),
        vec![(d.id, e.id)]
    );
}

#[derive(QueryableByName)]
struct PlanDetail {
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct PlanLineQueryPlan {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    plan: String,
}

/// Two transactions change one device's certificates at once, each holding the
/// device's row first (`update_device_if`, as every use case does): a renewal
/// inserts a newer certificate while a second one revokes the middle one. The
/// second waits for the first and computes the marks from what it committed, so
/// the oldest certificate keeps its mark for the newest. (On PostgreSQL the row
/// locks the first one's marks take would make the second wait here even
/// without the device's row; the device's row is what orders two renewals, whose
/// inserts lock nothing the other reads.)
pub fn concurrent_changes_of_one_device_keep_the_marks(backend: TestBackend) {
    use onboard_registry::schema::certificates;
    let t = TestDb::migrated(backend);
    let at = |h: i64| t0() + Duration::hours(h);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-race", t0())));
    let cert = |serial: &str, h: i64, fp: &str| {
        let mut c = new_cert(d.id, serial, at(h));
        c.fingerprint = Fingerprint::parse(&fp.repeat(32)).unwrap();
        c
    };
    let (a, b, c3) = (
        cert("0C01", 0, "a1"),
        cert("0C02", 1, "b2"),
        cert("0C03", 2, "c3"),
    );
    tx(&t.db, |c| c.insert_certificate(&a));
    tx(&t.db, |c| c.insert_certificate(&b));
    let (device, when) = (d.id, at(2));
    let hold = move |c: &mut DbConnection| {
        c.update_device_if(device, DeviceStatus::ALL, &DeviceUpdate::default(), when)
            .map(|_| ())
    };
    let inserted = Arc::new(Barrier::new(2));
    let renewal = {
        let db = t.db.clone();
        let inserted = inserted.clone();
        let c3 = c3.clone();
        std::thread::spawn(move || {
            db.transaction(|c| -> Result<(), RepoError> {
                hold(c)?;
                c.insert_certificate(&c3)?;
                inserted.wait();
                // Long enough for the other transaction to be waiting on the row.
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(())
            })
            .unwrap();
        })
    };
    inserted.wait();
    tx(&t.db, |c| {
        hold(c)?;
        c.revoke_certificate(b.id, at(2), RevocationReason::Superseded)
    });
    renewal.join().unwrap();
    let mut conn = t.db.connection().unwrap();
    let marks: Vec<(String, Option<chrono::NaiveDateTime>)> = certificates::table
        .filter(certificates::renewed_at.is_not_null())
        .order(certificates::serial.asc())
        .select((certificates::serial, certificates::renewed_at))
        .load(&mut *conn)
        .unwrap();
    assert_eq!(marks, vec![("0C01".into(), Some(at(2).naive_utc()))]);
    assert_eq!(
        tx(&t.db, |c| c.renewals_older_than(at(3))),
        vec![(d.id, c3.id)]
    );
}
