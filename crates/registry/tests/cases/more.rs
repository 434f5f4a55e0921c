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

/// PostgreSQL: the statements of a registration (the device, certificate and audit
/// inserts, the key-use update) are prepared once per connection and reused, not
/// parsed and planned again for every device. An insert that wrote `DEFAULT` for
/// a `None` would be sent unnamed each time and never appear here.
pub fn registration_statements_stay_prepared() {
    #[derive(QueryableByName)]
    struct Prepared {
        #[diesel(sql_type = Text)]
        statement: String,
    }
    let t = TestDb::migrated(TestBackend::Postgres);
    let mut conn = t.db.connection().unwrap();
    let c: &mut DbConnection = &mut conn;
    let key = new_key("prep", "obprep01", 10, t0());
    c.insert_bootstrap_keys(std::slice::from_ref(&key)).unwrap();
    for n in 0..3 {
        let at = t0() + Duration::seconds(n);
        let device = c
            .insert_device(&new_device(&format!("SN-prep-{n}"), at))
            .unwrap();
        c.insert_certificate(&new_cert(device.id, &format!("0{}", n + 1), at))
            .unwrap();
        // `None` in its optional columns (reason, serial, key prefix, address).
        let mut event = audit("device.register", AuditOutcome::Success, None, at);
        event.reason = None;
        event.serial = None;
        event.key_prefix = None;
        event.remote_addr = None;
        c.append_audit(&event).unwrap();
        assert!(c.consume_bootstrap_key_use(key.id, at).unwrap());
        assert!(c.bootstrap_key_by_prefix("obprep01").unwrap().is_some());
        let serial = Serial::parse(&format!("SN-prep-{n}")).unwrap();
        let (_, found) = c
            .bootstrap_key_and_device("obprep01", &serial)
            .unwrap()
            .unwrap();
        assert_eq!(found.map(|d| d.serial), Some(serial));
        // A registration's rows and use in one statement.
        let at = at + Duration::milliseconds(500);
        let d = new_device(&format!("SN-prep-one-{n}"), at);
        let cert = new_cert(d.id, &format!("1{}", n + 1), at);
        let mut event = audit("device.register", AuditOutcome::Success, Some(d.id), at);
        event.reason = None;
        let registration = NewRegistration {
            device: &d,
            certificate: &cert,
            audit: &event,
            key: key.id,
            now: at,
        };
        assert!(c.insert_registration(&registration).unwrap().is_some());
    }
    let prepared: Vec<String> = diesel::sql_query("SELECT statement FROM pg_prepared_statements")
        .load::<Prepared>(c)
        .unwrap()
        .into_iter()
        .map(|p| p.statement)
        .collect();
    for (start, with) in [
        ("INSERT INTO \"devices\"", ""),
        ("INSERT INTO \"certificates\"", ""),
        ("INSERT INTO \"audit_events\"", ""),
        ("UPDATE bootstrap_key_uses SET uses = uses + 1", ""),
        (
            "WITH k AS (UPDATE bootstrap_key_uses SET uses = uses + 1",
            "",
        ),
        // The key by its prefix, with its uses summed over its shards.
        (
            "SELECT \"bootstrap_keys\".\"id\"",
            "FROM \"bootstrap_keys\" WHERE (\"bootstrap_keys\".\"prefix\" = $1)",
        ),
        // A registration's first read: the key and the serial's device.
        (
            "SELECT \"bootstrap_keys\".\"id\"",
            "LEFT OUTER JOIN \"devices\"",
        ),
    ] {
        let n = prepared
            .iter()
            .filter(|s| s.starts_with(start) && s.contains(with))
            .count();
        assert_eq!(n, 1, "{start}: {n} prepared statements in {prepared:#?}");
    }
}

/// What `rows.rs` relies on when it binds `None` as `NULL` instead of writing
/// `DEFAULT`: no nullable column of the migrated schema has a default other than
/// `NULL`, so the two store the same. A migration that adds one fails here.
pub fn nullable_columns_default_to_null(backend: TestBackend) {
    #[derive(QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let t = TestDb::migrated(backend);
    let mut conn = t.db.connection().unwrap();
    let c: &mut DbConnection = &mut conn;
    let found: Vec<Column> = match backend {
        TestBackend::Postgres => diesel::sql_query(
            "SELECT table_name || '.' || column_name AS name FROM information_schema.columns \
             WHERE table_schema = 'public' AND is_nullable = 'YES' \
             AND column_default IS NOT NULL AND column_default NOT LIKE 'NULL%'",
        )
        .load(c)
        .unwrap(),
        TestBackend::Sqlite => diesel::sql_query(
            "SELECT m.name || '.' || p.name AS name FROM sqlite_master m, \
             pragma_table_info(m.name) p WHERE m.type = 'table' \
             AND m.name NOT LIKE 'sqlite_%' AND p.\"notnull\" = 0 AND p.pk = 0 \
             AND p.dflt_value IS NOT NULL AND upper(p.dflt_value) <> 'NULL'",
        )
        .load(c)
        .unwrap(),
    };
    let found: Vec<String> = found.into_iter().map(|c| c.name).collect();
    assert!(
        found.is_empty(),
        "nullable columns with a default: {found:?}"
    );
    // The query sees columns at all: a nullable column without a default exists.
    let probe: Vec<Column> = match backend {
        TestBackend::Postgres => diesel::sql_query(
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_name = 'certificates' AND column_name = 'renewed_at' \
             AND is_nullable = 'YES' AND column_default IS NULL",
        )
        .load(c)
        .unwrap(),
        TestBackend::Sqlite => diesel::sql_query(
            "SELECT name FROM pragma_table_info('certificates') \
             WHERE name = 'renewed_at' AND \"notnull\" = 0 AND dflt_value IS NULL",
        )
        .load(c)
        .unwrap(),
    };
    assert_eq!(
        probe.into_iter().map(|c| c.name).collect::<Vec<_>>(),
        vec!["renewed_at".to_owned()]
    );
}
