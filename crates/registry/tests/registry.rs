//! Every repository test runs on both backends, each on its own fresh database:
//! `sqlite::<test>` and `postgres::<test>` in the output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use chrono::{DateTime, Duration, TimeZone, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use onboard_domain::*;
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_registry::{Database, DbConnection};
use uuid::Uuid;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::TestBackend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::TestBackend::Postgres) })*
        }
    };
}

#[path = "cases/batches.rs"]
mod batches;
#[path = "cases/credentials.rs"]
mod credentials;
#[path = "cases/effects.rs"]
mod effects;
#[path = "cases/firmware.rs"]
mod firmware;
#[path = "cases/group.rs"]
mod group;
#[path = "cases/keys.rs"]
mod keys;
#[path = "cases/more.rs"]
mod more;
use batches::batches_insert_in_order_and_fail_as_a_whole;
use credentials::{
    concurrent_changes_of_one_device_keep_the_marks,
    mqtt_credentials_are_one_per_device_and_replaced, renewal_marks_follow_the_active_certificates,
    renewals_are_found_once_their_newest_certificate_is_old_enough,
};
use effects::{
    a_use_taken_in_a_rolled_back_transaction_is_not_spent, conditional_updates_check_the_status,
    exclusive_sections_do_not_overlap, pending_effects_queue_postpone_and_complete,
    revocation_count_only_grows,
};
use firmware::model_firmware_is_set_replaced_and_cascades;
use group::grouped_writers_share_a_commit_and_fail_alone;
use keys::{
    bootstrap_key_uses_are_atomic_under_concurrency, bootstrap_key_uses_respect_every_rule,
    bootstrap_keys_batch_is_all_or_nothing, bootstrap_keys_list_toggle_delete,
    key_uses_are_split_into_shards_and_summed, keys_are_read_with_the_serials_device,
    keys_used_before_the_shards_keep_their_uses, registrations_are_stored_whole_or_not_at_all,
};
use more::{
    bundles_are_taken_once_and_purged_when_expired, crl_numbers_only_grow,
    failed_transactions_leave_nothing, nullable_columns_default_to_null,
    registration_statements_stay_prepared,
};

on_both_backends!(
    migrations_run_up_down_up,
    schema_rs_matches_the_migrated_tables,
    nullable_columns_default_to_null,
    devices_insert_get_and_unique_serial,
    batches_insert_in_order_and_fail_as_a_whole,
    devices_list_filters_and_pages,
    devices_update_and_delete,
    certificates_revoke_once_and_feed_the_crl,
    bootstrap_keys_batch_is_all_or_nothing,
    bootstrap_keys_list_toggle_delete,
    bootstrap_key_uses_respect_every_rule,
    bootstrap_key_uses_are_atomic_under_concurrency,
    key_uses_are_split_into_shards_and_summed,
    keys_used_before_the_shards_keep_their_uses,
    registrations_are_stored_whole_or_not_at_all,
    keys_are_read_with_the_serials_device,
    models_crud_and_in_use_protection,
    model_firmware_is_set_replaced_and_cascades,
    audit_filters_and_newest_first_pages,
    crl_numbers_only_grow,
    failed_transactions_leave_nothing,
    bundles_are_taken_once_and_purged_when_expired,
    pending_effects_queue_postpone_and_complete,
    conditional_updates_check_the_status,
    revocation_count_only_grows,
    exclusive_sections_do_not_overlap,
    a_use_taken_in_a_rolled_back_transaction_is_not_spent,
    mqtt_credentials_are_one_per_device_and_replaced,
    renewals_are_found_once_their_newest_certificate_is_old_enough,
    renewal_marks_follow_the_active_certificates,
    concurrent_changes_of_one_device_keep_the_marks,
    grouped_writers_share_a_commit_and_fail_alone,
);

#[test]
fn postgres_registration_statements_stay_prepared() {
    registration_statements_stay_prepared();
}

#[test]
fn sqlite_a_panicking_writer_fails_its_group_and_the_next_one_commits() {
    group::a_panicking_writer_fails_its_group_and_the_next_one_commits();
}

/// SQLite: a writer that waits out the busy timeout for another's lock is told the
/// database is unavailable (503, retry), not an internal error, and nothing is
/// written; once the lock is free the same write succeeds.
#[test]
fn sqlite_a_writer_that_waits_out_the_busy_timeout_is_unavailable() {
    use diesel::connection::SimpleConnection;
    let t = TestDb::migrated(TestBackend::Sqlite);
    let db = Database::open(
        &t.url,
        &onboard_registry::PoolOptions {
            sqlite_busy_timeout: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap();
    let mut holder = db.connection().unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();
    let key = new_key("busy", "obbusy01", 1, t0());
    let err = db
        .transaction(|tx| tx.insert_bootstrap_keys(std::slice::from_ref(&key)))
        .unwrap_err();
    assert!(
        matches!(&err, RepoError::Unavailable(m) if m.contains("database is locked")),
        "{err:?}"
    );
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(tx(&db, |c| c.bootstrap_key_by_prefix("obbusy01")), None);
    tx(&db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&key)));
    assert!(tx(&db, |c| c.bootstrap_key_by_prefix("obbusy01")).is_some());
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

fn id_at(at: DateTime<Utc>) -> Uuid {
    new_id(&ManualClock::new(at))
}

fn new_device(serial: &str, at: DateTime<Utc>) -> NewDevice {
    NewDevice {
        id: DeviceId(id_at(at)),
        serial: Serial::parse(serial).unwrap(),
        name: format!("device {serial}"),
        model: None,
        location: "hall 7".into(),
        firmware_version: "1.0.0".into(),
        credential: CredentialKind::Certificate,
        bootstrap_key_id: None,
        batch: None,
        config: serde_json::json!({"interval": 30}),
        metadata: serde_json::json!({}),
        created_at: at,
    }
}

fn new_key(batch: &str, prefix: &str, max_uses: i32, at: DateTime<Utc>) -> NewBootstrapKey {
    NewBootstrapKey {
        id: BootstrapKeyId(id_at(at)),
        batch: batch.into(),
        prefix: prefix.into(),
        key_hash: format!("hash-of-{prefix}"),
        model: None,
        max_uses,
        not_before: at,
        expires_at: at + Duration::days(30),
        created_at: at,
    }
}

fn new_cert(device: DeviceId, serial: &str, at: DateTime<Utc>) -> NewCertificate {
    NewCertificate {
        id: CertificateId(id_at(at)),
        device_id: device,
        serial: CertSerial::parse(serial).unwrap(),
        fingerprint: Fingerprint::parse(&"ab".repeat(32)).unwrap(),
        subject: format!("CN={device}"),
        issuer: "CN=Onboard CA".into(),
        key_algorithm: KeyAlgorithm::EcdsaP256,
        not_before: at,
        not_after: at + Duration::days(365),
        pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        created_at: at,
    }
}

fn model(code: &str, at: DateTime<Utc>) -> DeviceModel {
    DeviceModel {
        code: ModelCode::parse(code).unwrap(),
        name: format!("Model {code}"),
        description: String::new(),
        publish_topics: vec!["devices/{device_id}/#".into()],
        subscribe_topics: vec!["devices/{device_id}/#".into()],
        max_qos: 1,
        retain_allowed: false,
        config: serde_json::json!({"interval": 60}),
        credential: CredentialKind::Certificate,
        created_at: at,
        updated_at: at,
    }
}

fn audit(
    action: &str,
    outcome: AuditOutcome,
    device: Option<DeviceId>,
    at: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        id: id_at(at),
        occurred_at: at,
        actor: "admin:ops".into(),
        action: action.into(),
        outcome,
        reason: (outcome == AuditOutcome::Failure).then(|| "key_expired".into()),
        device_id: device,
        serial: None,
        key_prefix: Some("obk_abcd".into()),
        remote_addr: Some("127.0.0.1".into()),
        details: serde_json::json!({"n": 1}),
    }
}

/// Runs `f` in a committed transaction, failing the test on any error.
fn tx<T>(db: &Database, f: impl FnOnce(&mut DbConnection) -> Result<T, RepoError>) -> T {
    db.transaction(f).unwrap()
}

fn migrations_run_up_down_up(backend: TestBackend) {
    let t = TestDb::new(backend);
    let up = t.db.run_migrations().unwrap();
    assert!(!up.is_empty());
    assert!(t.db.pending_migrations().unwrap().is_empty());
    let down = t.db.revert_all_migrations().unwrap();
    assert_eq!(down.len(), up.len());
    assert_eq!(t.db.pending_migrations().unwrap().len(), up.len());
    assert_eq!(t.db.run_migrations().unwrap(), up);
    // The tables are really back.
    tx(&t.db, |c| c.insert_device(&new_device("SN-1", t0())));
}

#[derive(QueryableByName)]
struct ColumnName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The columns each table has in the migrated database, in order.
fn db_columns(conn: &mut DbConnection, table: &str) -> Vec<String> {
    let rows: Vec<ColumnName> = match conn {
        DbConnection::Pg(_) => diesel::sql_query(
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind::<Text, _>(table)
        .load(conn)
        .unwrap(),
        DbConnection::Sqlite(_) => {
            diesel::sql_query("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind::<Text, _>(table)
                .load(conn)
                .unwrap()
        }
    };
    rows.into_iter().map(|r| r.name).collect()
}

fn schema_rs_matches_the_migrated_tables(backend: TestBackend) {
    use onboard_registry::schema::*;
    let t = TestDb::migrated(backend);
    let mut conn = t.db.connection().unwrap();
    let conn: &mut DbConnection = &mut conn;
    // For each table: the columns schema.rs declares (read off the SELECT diesel
    // generates from it) are exactly the migrated table's columns, in order, and a
    // select of all of them runs, so their types are readable on this backend.
    macro_rules! check {
        ($($table:ident),*) => {$(
            let query = $table::table.select($table::all_columns).limit(0);
            query.execute(conn).unwrap();
            let sql = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
            assert_eq!(
                db_columns(conn, stringify!($table)),
                declared_columns(&sql, stringify!($table)),
                "table {}", stringify!($table)
            );
        )*};
    }
    check!(
        device_models,
        bootstrap_keys,
        devices,
        certificates,
        credential_bundles,
        mqtt_credentials,
        rotations,
        audit_events,
        crls,
        pending_effects,
        model_firmware,
        console_sessions
    );
}

/// The column names in `SELECT "t"."a", "t"."b" FROM "t"`.
fn declared_columns(sql: &str, table: &str) -> Vec<String> {
    let marker = format!("\"{table}\".\"");
    sql.split(&marker)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

fn devices_insert_get_and_unique_serial(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let nd = new_device("SN-000123", t0());
    let d = tx(&t.db, |c| c.insert_device(&nd));
    assert_eq!(d.id, nd.id);
    assert_eq!(d.serial.as_str(), "SN-000123");
    assert_eq!(d.status, DeviceStatus::Registered);
    assert_eq!(d.config, serde_json::json!({"interval": 30}));
    assert_eq!(d.created_at, t0());
    assert_eq!(tx(&t.db, |c| c.device(nd.id)), d);
    assert_eq!(
        tx(&t.db, |c| c.device_by_serial(&nd.serial)),
        Some(d.clone())
    );
    assert_eq!(
        tx(&t.db, |c| c
            .device_by_serial(&Serial::parse("nope").unwrap())),
        None
    );
    let dup = new_device("SN-000123", t0() + Duration::seconds(1));
    let err = t.db.transaction(|c| c.insert_device(&dup)).unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::Conflict {
                entity: "device",
                ..
            }
        ),
        "{err:?}"
    );
    let err =
        t.db.transaction(|c| c.device(DeviceId(Uuid::nil())))
            .unwrap_err();
    assert_eq!(err, RepoError::NotFound { entity: "device" });
}

fn devices_list_filters_and_pages(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    tx(&t.db, |c| c.insert_model(&model("tempsensor", t0())));
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut d = new_device(&format!("SN-{i:03}"), t0() + Duration::seconds(i));
        if i % 2 == 0 {
            d.model = Some(ModelCode::parse("tempsensor").unwrap());
            d.batch = Some("line7".into());
        }
        if i == 5 {
            d.name = "Boiler_Room 100%".into();
        }
        ids.push(tx(&t.db, |c| c.insert_device(&d)).id);
    }
    tx(&t.db, |c| {
        c.update_device(
            ids[1],
            &DeviceUpdate {
                status: Some(DeviceStatus::Active),
                ..Default::default()
            },
            t0(),
        )
    });

    // Pages of 3 walk every device in creation order, exactly once.
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3).unwrap();
    loop {
        let p = tx(&t.db, |c| c.list_devices(&DeviceFilter::default(), &page));
        assert!(p.items.len() <= 3);
        seen.extend(p.items.iter().map(|d| d.id));
        match p.next_cursor {
            Some(cursor) => page = PageRequest::new(3, Some(cursor)).unwrap(),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let list = |f: DeviceFilter| -> Vec<String> {
        tx(&t.db, |c| {
            c.list_devices(&f, &PageRequest::first(100).unwrap())
        })
        .items
        .into_iter()
        .map(|d| d.serial.to_string())
        .collect()
    };
    assert_eq!(
        list(DeviceFilter {
            model: Some(ModelCode::parse("tempsensor").unwrap()),
            ..Default::default()
        }),
        ["SN-000", "SN-002", "SN-004", "SN-006"]
    );
    assert_eq!(
        list(DeviceFilter {
            batch: Some("line7".into()),
            status: Some(DeviceStatus::Registered),
            ..Default::default()
        }),
        ["SN-000", "SN-002", "SN-004", "SN-006"]
    );
    assert_eq!(
        list(DeviceFilter {
            status: Some(DeviceStatus::Active),
            ..Default::default()
        }),
        ["SN-001"]
    );
    // Text search is case-insensitive and treats % and _ literally.
    assert_eq!(
        list(DeviceFilter {
            q: Some("boiler_ROOM 100%".into()),
            ..Default::default()
        }),
        ["SN-005"]
    );
    assert_eq!(
        list(DeviceFilter {
            q: Some("sn-00".into()),
            ..Default::default()
        })
        .len(),
        7
    );
    assert!(list(DeviceFilter {
        q: Some("%".into()),
        ..Default::default()
    })
    .iter()
    .all(|s| s == "SN-005"));
}

fn devices_update_and_delete(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let nd = new_device("SN-9", t0());
    tx(&t.db, |c| c.insert_device(&nd));
    tx(&t.db, |c| {
        c.insert_certificate(&new_cert(nd.id, "0A", t0()))
    });
    let later = t0() + Duration::hours(1);
    let d = tx(&t.db, |c| {
        c.update_device(
            nd.id,
            &DeviceUpdate {
                name: Some("renamed".into()),
                metadata: Some(serde_json::json!({"rack": 4})),
                status: Some(DeviceStatus::Active),
                activated_at: Some(later),
                last_seen_at: Some(later),
                ..Default::default()
            },
            later,
        )
    });
    assert_eq!(d.name, "renamed");
    assert_eq!(d.location, "hall 7", "untouched fields stay");
    assert_eq!(d.metadata, serde_json::json!({"rack": 4}));
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.activated_at, Some(later));
    assert_eq!(d.updated_at, later);
    let err = t
        .db
        .transaction(|c| c.update_device(DeviceId(Uuid::nil()), &DeviceUpdate::default(), later))
        .unwrap_err();
    assert_eq!(err, RepoError::NotFound { entity: "device" });

    tx(&t.db, |c| c.delete_device(nd.id));
    assert_eq!(tx(&t.db, |c| c.certificates_of_device(nd.id)), vec![]);
    assert_eq!(tx(&t.db, |c| c.device_by_serial(&nd.serial)), None);
}

fn certificates_revoke_once_and_feed_the_crl(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-1", t0())));
    let first = tx(&t.db, |c| {
        c.insert_certificate(&new_cert(d.id, "01AB", t0()))
    });
    let second = tx(&t.db, |c| {
        c.insert_certificate(&new_cert(d.id, "02CD", t0() + Duration::seconds(1)))
    });
    assert_eq!(first.status, CertificateStatus::Active);
    let dup = new_cert(d.id, "01ab", t0() + Duration::seconds(2));
    assert!(matches!(
        t.db.transaction(|c| c.insert_certificate(&dup))
            .unwrap_err(),
        RepoError::Conflict { .. }
    ));
    // Newest first.
    let all = tx(&t.db, |c| c.certificates_of_device(d.id));
    assert_eq!(
        all.iter().map(|c| c.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );

    let at = t0() + Duration::hours(2);
    let r = tx(&t.db, |c| {
        c.revoke_certificate(first.id, at, RevocationReason::KeyCompromise)
    });
    assert_eq!(r.status, CertificateStatus::Revoked);
    assert_eq!(r.revoked_at, Some(at));
    assert_eq!(r.revocation_reason, Some(RevocationReason::KeyCompromise));
    // Revoking again keeps the first time and reason.
    let again = tx(&t.db, |c| {
        c.revoke_certificate(
            first.id,
            at + Duration::hours(1),
            RevocationReason::Superseded,
        )
    });
    assert_eq!(again, r);
    assert_eq!(
        tx(&t.db, |c| c
            .certificate_by_serial(&CertSerial::parse("01AB").unwrap())),
        Some(r)
    );

    let crl = tx(&t.db, |c| c.revoked_certificates(at));
    assert_eq!(
        crl,
        vec![(
            CertSerial::parse("01AB").unwrap(),
            at,
            RevocationReason::KeyCompromise
        )]
    );
    // An expired certificate no longer needs to be listed.
    assert_eq!(
        tx(&t.db, |c| c
            .revoked_certificates(t0() + Duration::days(366))),
        vec![]
    );
}

fn models_crud_and_in_use_protection(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let m = model("tempsensor", t0());
    assert_eq!(tx(&t.db, |c| c.insert_model(&m)), m);
    assert!(matches!(
        t.db.transaction(|c| c.insert_model(&m)).unwrap_err(),
        RepoError::Conflict { .. }
    ));
    tx(&t.db, |c| c.insert_model(&model("aircon", t0())));
    let codes: Vec<_> = tx(&t.db, |c| c.list_models())
        .into_iter()
        .map(|m| m.code.to_string())
        .collect();
    assert_eq!(codes, ["aircon", "tempsensor"]);

    let mut changed = m.clone();
    changed.name = "Temperature sensor".into();
    changed.max_qos = 2;
    changed.publish_topics.push("telemetry/{serial}".into());
    changed.updated_at = t0() + Duration::hours(1);
    assert_eq!(tx(&t.db, |c| c.update_model(&changed)), changed);

    let mut d = new_device("SN-1", t0());
    d.model = Some(m.code.clone());
    tx(&t.db, |c| c.insert_device(&d));
    assert!(matches!(
        t.db.transaction(|c| c.delete_model(&m.code)).unwrap_err(),
        RepoError::Conflict { .. }
    ));
    tx(&t.db, |c| {
        c.delete_model(&ModelCode::parse("aircon").unwrap())
    });
    assert_eq!(tx(&t.db, |c| c.list_models()).len(), 1);
}

fn audit_filters_and_newest_first_pages(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let dev = DeviceId(Uuid::new_v4());
    let events = [
        audit("device.register", AuditOutcome::Failure, Some(dev), t0()),
        audit(
            "device.register",
            AuditOutcome::Success,
            Some(dev),
            t0() + Duration::seconds(1),
        ),
        audit(
            "bootstrap_key.create",
            AuditOutcome::Success,
            None,
            t0() + Duration::seconds(2),
        ),
        audit(
            "device.revoke",
            AuditOutcome::Success,
            Some(dev),
            t0() + Duration::seconds(3),
        ),
    ];
    for e in &events {
        tx(&t.db, |c| c.append_audit(e));
    }
    let list = |f: AuditFilter| -> Vec<Uuid> {
        tx(&t.db, |c| {
            c.list_audit(&f, &PageRequest::first(50).unwrap())
        })
        .items
        .into_iter()
        .map(|e| e.id)
        .collect()
    };
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        list(AuditFilter::default()),
        [ids[3], ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        list(AuditFilter {
            device_id: Some(dev),
            action: Some("device.register".into()),
            ..Default::default()
        }),
        [ids[1], ids[0]]
    );
    assert_eq!(
        list(AuditFilter {
            outcome: Some(AuditOutcome::Failure),
            ..Default::default()
        }),
        [ids[0]]
    );
    assert_eq!(
        list(AuditFilter {
            since: Some(t0() + Duration::seconds(1)),
            until: Some(t0() + Duration::seconds(3)),
            ..Default::default()
        }),
        [ids[2], ids[1]]
    );
    let first = tx(&t.db, |c| {
        c.list_audit(&AuditFilter::default(), &PageRequest::first(3).unwrap())
    });
    let rest = tx(&t.db, |c| {
        c.list_audit(
            &AuditFilter::default(),
            &PageRequest::new(3, first.next_cursor.clone()).unwrap(),
        )
    });
    assert_eq!(
        rest.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[0]]
    );
    assert_eq!(rest.next_cursor, None);
    assert_eq!(first.items[0], events[3]);
}
