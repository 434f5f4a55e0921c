//! CRLs, rollback and credential bundles (split from registry.rs).

use super::*;

pub fn crl_numbers_only_grow(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    assert_eq!(tx(&t.db, |c| c.latest_crl()), None);
    let crl = |n: i64| CrlRecord {
        number: n,
        this_update: t0(),
        next_update: t0() + Duration::days(1),
        der: vec![0x30, n as u8],
    };
    tx(&t.db, |c| c.insert_crl(&crl(1)));
    tx(&t.db, |c| c.insert_crl(&crl(2)));
    assert_eq!(tx(&t.db, |c| c.latest_crl()), Some(crl(2)));
    for stale in [1, 2] {
        assert!(matches!(
            t.db.transaction(|c| c.insert_crl(&crl(stale))).unwrap_err(),
            RepoError::Conflict { .. }
        ));
    }
}

pub fn failed_transactions_leave_nothing(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let nd = new_device("SN-rollback", t0());
    let result: Result<(), RepoError> = t.db.transaction(|c| {
        c.insert_device(&nd)?;
        c.append_audit(&audit(
            "device.register",
            AuditOutcome::Success,
            Some(nd.id),
            t0(),
        ))?;
        Err(RepoError::Database("a later step failed".into()))
    });
    assert!(result.is_err());
    assert_eq!(tx(&t.db, |c| c.device_by_serial(&nd.serial)), None);
    assert!(tx(&t.db, |c| c
        .list_audit(&AuditFilter::default(), &PageRequest::default()))
    .items
    .is_empty());
}

pub fn bundles_are_taken_once_and_purged_when_expired(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-b", t0())));
    let bundle = |hash: &str, expires: DateTime<Utc>| NewCredentialBundle {
        id: Uuid::new_v4(),
        device_id: d.id,
        token_hash: hash.into(),
        content: vec![0x50, 0x4b, 3, 4],
        expires_at: expires,
        created_at: t0(),
    };
    tx(&t.db, |c| {
        c.insert_bundle(&bundle("h1", t0() + Duration::minutes(30)))
    });
    tx(&t.db, |c| {
        c.insert_bundle(&bundle("h2", t0() + Duration::minutes(30)))
    });
    tx(&t.db, |c| {
        c.insert_bundle(&bundle("h3", t0() + Duration::minutes(5)))
    });
    let now = t0() + Duration::minutes(10);
    assert_eq!(tx(&t.db, |c| c.take_bundle("nope", now)), None);
    assert_eq!(
        tx(&t.db, |c| c.take_bundle("h1", now)),
        Some(vec![0x50, 0x4b, 3, 4])
    );
    assert_eq!(tx(&t.db, |c| c.take_bundle("h1", now)), None, "only once");
    assert_eq!(tx(&t.db, |c| c.take_bundle("h3", now)), None, "expired");
    assert_eq!(tx(&t.db, |c| c.purge_expired_bundles(now)), 1);
    assert_eq!(tx(&t.db, |c| c.purge_expired_bundles(now)), 0);
    assert!(matches!(
        t.db.transaction(|c| c.insert_bundle(&bundle("h2", now)))
            .unwrap_err(),
        RepoError::Conflict { .. }
    ));
    // Nothing of a taken or purged bundle is left to read.
    let left: i64 = {
        use onboard_registry::schema::credential_bundles as b;
        let mut conn = t.db.connection().unwrap();
        b::table
            .filter(b::content.is_not_null())
            .count()
            .get_result(&mut *conn)
            .unwrap()
    };
    assert_eq!(left, 1, "only h2 still holds its content");
}
