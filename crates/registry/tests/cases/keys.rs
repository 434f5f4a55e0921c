//! A key's uses, counted in shards (`bootstrap_key_uses`): how they are split,
//! what the migration makes of the uses taken before it, and on PostgreSQL who
//! waits for whom.

use std::sync::mpsc;

use diesel::sql_types::{BigInt, Integer};
use onboard_registry::schema::bootstrap_key_uses as u;
use onboard_registry::{key_use_shards, KEY_USE_SHARDS};

use super::*;

pub fn bootstrap_keys_batch_is_all_or_nothing(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let keys: Vec<_> = (0..3)
        .map(|i| {
            new_key(
                "b1",
                &format!("obk_{i}"),
                5,
                t0() + Duration::milliseconds(i),
            )
        })
        .collect();
    let stored = tx(&t.db, |c| c.insert_bootstrap_keys(&keys));
    assert_eq!(stored.len(), 3);
    assert!(stored
        .iter()
        .all(|k| k.uses == 0 && k.active && k.batch == "b1"));
    assert_eq!(stored[0].key_hash, "hash-of-obk_0");

    // A batch with one taken prefix adds none of its keys.
    let clash = vec![
        new_key("b2", "obk_new", 5, t0() + Duration::seconds(10)),
        new_key("b2", "obk_1", 5, t0() + Duration::seconds(11)),
    ];
    let err =
        t.db.transaction(|c| c.insert_bootstrap_keys(&clash))
            .unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err:?}");
    assert_eq!(tx(&t.db, |c| c.bootstrap_key_by_prefix("obk_new")), None);
    let found = tx(&t.db, |c| c.bootstrap_key_by_prefix("obk_2")).unwrap();
    assert_eq!(found.id, keys[2].id);
}

pub fn bootstrap_keys_list_toggle_delete(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let a: Vec<_> = (0..4)
        .map(|i| {
            new_key(
                "a",
                &format!("obk_a{i}"),
                1,
                t0() + Duration::milliseconds(i),
            )
        })
        .collect();
    let b = vec![new_key("b", "obk_b0", 1, t0() + Duration::seconds(1))];
    tx(&t.db, |c| c.insert_bootstrap_keys(&a));
    tx(&t.db, |c| c.insert_bootstrap_keys(&b));
    let later = t0() + Duration::minutes(5);
    let off = tx(&t.db, |c| c.set_bootstrap_key_active(a[1].id, false, later));
    assert!(!off.active);
    assert_eq!(off.updated_at, later);

    let list = |f: BootstrapKeyFilter, limit: u32| {
        tx(&t.db, |c| {
            c.list_bootstrap_keys(&f, &PageRequest::first(limit).unwrap())
        })
    };
    let batch_a = list(
        BootstrapKeyFilter {
            batch: Some("a".into()),
            active: None,
        },
        2,
    );
    assert_eq!(batch_a.items.len(), 2);
    assert_eq!(batch_a.next_cursor, Some(a[1].id.to_string()));
    let inactive = list(
        BootstrapKeyFilter {
            batch: None,
            active: Some(false),
        },
        10,
    );
    assert_eq!(
        inactive.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        [a[1].id]
    );
    assert_eq!(list(BootstrapKeyFilter::default(), 10).items.len(), 5);

    tx(&t.db, |c| c.delete_bootstrap_key(a[0].id));
    assert_eq!(
        t.db.transaction(|c| c.bootstrap_key(a[0].id)).unwrap_err(),
        RepoError::NotFound {
            entity: "bootstrap key"
        }
    );
    assert_eq!(
        t.db.transaction(|c| c.delete_bootstrap_key(a[0].id))
            .unwrap_err(),
        RepoError::NotFound {
            entity: "bootstrap key"
        }
    );
}

pub fn bootstrap_key_uses_respect_every_rule(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let k = new_key("b", "obk_x", 2, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::hours(1);
    assert!(
        !tx(&t.db, |c| c.consume_bootstrap_key_use(
            k.id,
            t0() - Duration::seconds(1)
        )),
        "not yet valid"
    );
    assert!(
        !tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, k.expires_at)),
        "expired"
    );
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    assert!(
        !tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)),
        "used up"
    );
    let used = tx(&t.db, |c| c.bootstrap_key(k.id));
    assert_eq!(used.uses, 2);
    assert_eq!(
        used.updated_at, k.created_at,
        "a use leaves the key's row alone (its uses are counted in its shards)"
    );
    assert_eq!(used.check_usable(now), Err(KeyRejection::UsedUp));

    tx(&t.db, |c| c.set_bootstrap_key_active(k.id, false, now));
    assert!(
        !tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)),
        "inactive"
    );
}

pub fn bootstrap_key_uses_are_atomic_under_concurrency(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let k = new_key("b", "obk_race", 20, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::minutes(1);
    let barrier = Arc::new(Barrier::new(50));
    let taken: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let barrier = barrier.clone();
                let db = t.db.clone();
                s.spawn(move || {
                    barrier.wait();
                    // Read first, then write, as a registration does: the write lock
                    // taken at BEGIN keeps SQLite from failing the upgrade.
                    db.transaction(|c| {
                        let _ = c.bootstrap_key(k.id)?;
                        c.consume_bootstrap_key_use(k.id, now)
                    })
                    .unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap() as usize)
            .sum()
    });
    assert_eq!(taken, 20);
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 20);
}

/// `(shard, uses, max_uses)` of a key, in shard order.
fn shards(db: &Database, key: BootstrapKeyId) -> Vec<(i32, i32, i32)> {
    let mut conn = db.connection().unwrap();
    u::table
        .filter(u::key_id.eq(key.to_string()))
        .order(u::shard.asc())
        .select((u::shard, u::uses, u::max_uses))
        .load(&mut *conn)
        .unwrap()
}

pub fn key_uses_are_split_into_shards_and_summed(backend: TestBackend) {
    for (max, n) in [(1, 1_i32), (5, 5), (16, 16), (37, 16), (1_000_000, 16)] {
        let split = key_use_shards(max);
        assert_eq!(split.len(), n as usize, "{max}");
        assert_eq!(split.iter().map(|s| s.1).sum::<i32>(), max);
        assert!(split.iter().all(|s| s.1 >= max / n && s.1 <= max / n + 1));
    }
    assert_eq!(KEY_USE_SHARDS, 16);

    let t = TestDb::migrated(backend);
    let k = new_key("b", "obk_shard", 37, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let stored = shards(&t.db, k.id);
    assert_eq!(stored.len(), 16);
    assert_eq!(stored.iter().map(|s| s.2).sum::<i32>(), 37);
    let now = t0() + Duration::hours(1);
    for _ in 0..30 {
        assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    }
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 30);
    let stored = shards(&t.db, k.id);
    assert_eq!(stored.iter().map(|s| s.1).sum::<i32>(), 30);
    assert!(stored.iter().all(|s| s.1 <= s.2));
    let listed = tx(&t.db, |c| {
        c.list_bootstrap_keys(
            &BootstrapKeyFilter::default(),
            &PageRequest::first(10).unwrap(),
        )
    });
    assert_eq!(listed.items[0].uses, 30);
    for _ in 0..7 {
        assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    }
    assert!(!tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 37);
    // A deleted key takes its shards with it.
    tx(&t.db, |c| c.delete_bootstrap_key(k.id));
    assert!(shards(&t.db, k.id).is_empty());
}

/// Keys created before the shards keep the uses they had: the migration splits
/// each key's `max_uses` the way new keys are split and fills the shards in order
/// with the uses taken; going down sums them back.
pub fn keys_used_before_the_shards_keep_their_uses(backend: TestBackend) {
    #[derive(QueryableByName)]
    struct Uses {
        #[diesel(sql_type = Integer)]
        uses: i32,
    }
    let t = TestDb::migrated(backend);
    while t.db.revert_last_migration().unwrap() != "20261206000001" {}
    let keys = [
        ("obk_m1", 1, 1),
        ("obk_m5", 5, 3),
        ("obk_m37", 37, 20),
        ("obk_mbig", 1_000_000, 999_999),
    ];
    {
        let mut conn = t.db.connection().unwrap();
        for (n, (prefix, max, used)) in keys.iter().enumerate() {
            diesel::sql_query(format!(
                "INSERT INTO bootstrap_keys (id, batch, prefix, key_hash, max_uses, uses, \
                 not_before, expires_at, active, created_at, updated_at) VALUES \
                 ('00000000-0000-4000-8000-00000000000{n}', 'old', '{prefix}', 'h', {max}, {used}, \
                 '2026-11-23 08:00:00', '2026-12-23 08:00:00', TRUE, \
                 '2026-11-23 08:00:00', '2026-11-23 08:00:00')"
            ))
            .execute(&mut *conn)
            .unwrap();
        }
    }
    t.db.run_migrations().unwrap();
    let now = t0() + Duration::hours(1);
    for (prefix, max, used) in keys {
        let key = tx(&t.db, |c| c.bootstrap_key_by_prefix(prefix)).unwrap();
        assert_eq!((key.uses, key.max_uses), (used, max), "{prefix}");
        let stored = shards(&t.db, key.id);
        let split = key_use_shards(max);
        assert_eq!(
            stored.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(),
            split,
            "{prefix}"
        );
        // Filled in order: full shards, at most one partly used, then unused ones.
        let mut left = used;
        for (shard, uses, max_uses) in &stored {
            assert_eq!(*uses, left.min(*max_uses), "{prefix} shard {shard}");
            left -= uses;
        }
    }
    let small = tx(&t.db, |c| c.bootstrap_key_by_prefix("obk_m5")).unwrap();
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(small.id, now)));
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(small.id, now)));
    assert!(!tx(&t.db, |c| c.consume_bootstrap_key_use(small.id, now)));
    let single = tx(&t.db, |c| c.bootstrap_key_by_prefix("obk_m1")).unwrap();
    assert!(!tx(&t.db, |c| c.consume_bootstrap_key_use(single.id, now)));

    // Down again: the key's column holds the sum.
    while t.db.revert_last_migration().unwrap() != "20261206000001" {}
    let mut conn = t.db.connection().unwrap();
    let back: Vec<i32> = diesel::sql_query("SELECT uses FROM bootstrap_keys ORDER BY prefix")
        .load::<Uses>(&mut *conn)
        .unwrap()
        .into_iter()
        .map(|r| r.uses)
        .collect();
    // obk_m1, obk_m37, obk_m5, obk_mbig
    assert_eq!(back, vec![1, 20, 5, 999_999]);
}

/// Runs `f` in a transaction on a thread of its own and keeps it open until
/// told to finish: `true` commits, `false` rolls back.
fn open_transaction<T: Send + 'static>(
    db: &Database,
    f: impl FnOnce(&mut DbConnection) -> T + Send + 'static,
) -> (T, mpsc::Sender<bool>, std::thread::JoinHandle<()>) {
    let db = db.clone();
    let (done_tx, done_rx) = mpsc::channel::<T>();
    let (finish_tx, finish_rx) = mpsc::channel::<bool>();
    let handle = std::thread::spawn(move || {
        let _ = db.transaction(|c| -> Result<(), RepoError> {
            done_tx.send(f(c)).unwrap();
            if finish_rx.recv().unwrap() {
                Ok(())
            } else {
                Err(RepoError::Unavailable("rolled back by the test".into()))
            }
        });
    });
    (done_rx.recv().unwrap(), finish_tx, handle)
}

/// Waits until some session of the test's database waits for a lock.
fn wait_for_a_lock_wait(db: &Database) {
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = db.connection().unwrap();
    for _ in 0..3000 {
        let w = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result::<Waiting>(&mut *conn)
        .unwrap();
        if w.n > 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no session ever waited for a lock");
}

/// Two registrations with one batch key hold a use each at the same time: the
/// second takes another shard instead of waiting for the first one's commit
/// (it would fail on its `lock_timeout` if it waited).
#[test]
fn postgres_uses_of_one_key_do_not_wait_for_each_other() {
    use diesel::connection::SimpleConnection;
    let t = TestDb::migrated(TestBackend::Postgres);
    let k = new_key("b", "obk_par", 100, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::hours(1);
    let (first, finish, handle) = open_transaction(&t.db, move |c| {
        c.consume_bootstrap_key_use(k.id, now).unwrap()
    });
    assert!(first);
    let second =
        t.db.transaction(|c| {
            c.batch_execute("SET LOCAL lock_timeout = '20s'")
                .map_err(|e| RepoError::Unavailable(e.to_string()))?;
            c.consume_bootstrap_key_use(k.id, now)
        })
        .unwrap();
    assert!(second);
    finish.send(true).unwrap();
    handle.join().unwrap();
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 2);
    let used: Vec<i32> = shards(&t.db, k.id).iter().map(|s| s.1).collect();
    assert_eq!(used.iter().filter(|u| **u == 1).count(), 2, "{used:?}");
}

/// The last use of a key, held by a registration that has not committed: another
/// waits for it and takes the use only if the holder rolled back.
#[test]
fn postgres_the_last_use_waits_for_its_holder() {
    let t = TestDb::migrated(TestBackend::Postgres);
    let now = t0() + Duration::hours(1);
    for commit in [false, true] {
        let k = new_key("b", &format!("obk_last{commit}"), 1, t0());
        tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
        let (first, finish, handle) = open_transaction(&t.db, move |c| {
            c.consume_bootstrap_key_use(k.id, now).unwrap()
        });
        assert!(first);
        let db = t.db.clone();
        let second =
            std::thread::spawn(move || tx(&db, |c| c.consume_bootstrap_key_use(k.id, now)));
        wait_for_a_lock_wait(&t.db);
        finish.send(commit).unwrap();
        handle.join().unwrap();
        assert_eq!(
            second.join().unwrap(),
            !commit,
            "holder committed: {commit}"
        );
        assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 1);
    }
}

/// A deactivation waits for the registrations holding a use of the key; once it
/// has returned, no use can be taken.
#[test]
fn postgres_a_deactivation_waits_for_the_uses_in_flight() {
    let t = TestDb::migrated(TestBackend::Postgres);
    let k = new_key("b", "obk_deact", 100, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::hours(1);
    let (first, finish, handle) = open_transaction(&t.db, move |c| {
        c.consume_bootstrap_key_use(k.id, now).unwrap()
    });
    assert!(first);
    let db = t.db.clone();
    let (returned_tx, returned_rx) = mpsc::channel();
    let deactivation = std::thread::spawn(move || {
        let key = tx(&db, |c| c.set_bootstrap_key_active(k.id, false, now));
        returned_tx.send(()).unwrap();
        key
    });
    wait_for_a_lock_wait(&t.db);
    assert!(returned_rx.try_recv().is_err(), "the deactivation waits");
    finish.send(true).unwrap();
    handle.join().unwrap();
    let key = deactivation.join().unwrap();
    assert!(!key.active);
    assert_eq!(key.uses, 1);
    assert!(!tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
    tx(&t.db, |c| c.set_bootstrap_key_active(k.id, true, now));
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
}

/// A registration written by `insert_registration` (one statement on PostgreSQL)
/// stores what the separate inserts store, takes exactly one use, writes nothing
/// that survives a refusal, and reports a taken serial as a conflict.
pub fn registrations_are_stored_whole_or_not_at_all(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let k = new_key("b", "obk_reg", 1, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let at = t0() + Duration::hours(1);
    let mut device = new_device("SN-reg-1", at);
    device.bootstrap_key_id = Some(k.id);
    device.batch = Some("b".into());
    device.metadata = serde_json::json!({"line": 7});
    let certificate = new_cert(device.id, "0D01", at);
    let mut event = audit(
        "device.register",
        AuditOutcome::Success,
        Some(device.id),
        at,
    );
    event.serial = Some("SN-reg-1".into());
    let registration = NewRegistration {
        device: &device,
        certificate: &certificate,
        audit: &event,
        key: k.id,
        now: at,
    };
    let (stored, cert) = tx(&t.db, |c| c.insert_registration(&registration)).unwrap();
    // What it answers is what a read finds.
    assert_eq!(tx(&t.db, |c| c.device(device.id)), stored);
    assert_eq!(stored.serial.as_str(), "SN-reg-1");
    assert_eq!(stored.bootstrap_key_id, Some(k.id));
    assert_eq!(stored.metadata, serde_json::json!({"line": 7}));
    assert_eq!(
        tx(&t.db, |c| c.certificates_of_device(device.id)),
        vec![cert.clone()]
    );
    assert_eq!(cert.serial.as_str(), "0D01");
    let events = tx(&t.db, |c| {
        c.list_audit(&AuditFilter::default(), &PageRequest::first(10).unwrap())
    });
    assert_eq!(events.items, vec![event.clone()]);
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 1);

    // The key's only use is gone: nothing of a second registration is kept.
    let mut other = new_device("SN-reg-2", at + Duration::seconds(1));
    other.bootstrap_key_id = Some(k.id);
    let other_cert = new_cert(other.id, "0D02", at);
    let mut other_event = event.clone();
    other_event.id = id_at(at + Duration::seconds(1));
    let refused = NewRegistration {
        device: &other,
        certificate: &other_cert,
        audit: &other_event,
        key: k.id,
        now: at,
    };
    let outcome =
        t.db.transaction(|c| match c.insert_registration(&refused)? {
            Some(_) => Ok(true),
            None => Err(RepoError::Unavailable("no use: rolled back".into())),
        });
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(tx(&t.db, |c| c.device_by_serial(&other.serial)).is_none());
    assert!(tx(&t.db, |c| c.certificates_of_device(other.id)).is_empty());
    let events = tx(&t.db, |c| {
        c.list_audit(&AuditFilter::default(), &PageRequest::first(10).unwrap())
    });
    assert_eq!(events.items.len(), 1);

    // A serial that is taken: a conflict, and the use it would have taken stays.
    let k2 = new_key("b", "obk_reg2", 5, t0());
    tx(&t.db, |c| {
        c.insert_bootstrap_keys(std::slice::from_ref(&k2))
    });
    let mut again = new_device("SN-reg-1", at + Duration::seconds(2));
    again.bootstrap_key_id = Some(k2.id);
    let again_cert = new_cert(again.id, "0D03", at);
    let mut again_event = event.clone();
    again_event.id = id_at(at + Duration::seconds(2));
    let clash = NewRegistration {
        device: &again,
        certificate: &again_cert,
        audit: &again_event,
        key: k2.id,
        now: at,
    };
    let err =
        t.db.transaction(|c| c.insert_registration(&clash))
            .unwrap_err();
    assert!(matches!(err, RepoError::Conflict { .. }), "{err:?}");
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k2.id)).uses, 0);
}

/// Reads without a transaction of their own (`Store::read_each`, PostgreSQL in
/// autocommit) survive pooled connections the database has closed (a restart):
/// the read runs again on a new connection. A failure on a live connection is
/// the caller's, not retried.
#[test]
fn postgres_reads_each_survive_closed_pooled_connections() {
    #[derive(QueryableByName)]
    struct Killed {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let t = TestDb::migrated(TestBackend::Postgres);
    let k = new_key("b", "obk_each", 3, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    // Pooled connections that the database then closes.
    for _ in 0..3 {
        assert!(t
            .db
            .read_each(|c| c.bootstrap_key_by_prefix("obk_each"))
            .unwrap()
            .is_some());
    }
    let mut other = diesel::PgConnection::establish(&t.url).unwrap();
    let killed = diesel::sql_query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .get_result::<Killed>(&mut other)
    .unwrap();
    assert!(killed.n >= 1, "{}", killed.n);
    let key =
        t.db.read_each(|c| c.bootstrap_key_by_prefix("obk_each"))
            .unwrap()
            .unwrap();
    assert_eq!(key.id, k.id);
    let missing =
        t.db.read_each(|c| c.bootstrap_key(BootstrapKeyId(Uuid::nil())))
            .unwrap_err();
    assert!(matches!(missing, RepoError::NotFound { .. }), "{missing:?}");
}

/// A registration's first read: the key by its prefix and the serial's device, in
/// one statement, with the key's uses summed as in every other read.
pub fn keys_are_read_with_the_serials_device(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let serial = Serial::parse("SN-both").unwrap();
    assert_eq!(
        tx(&t.db, |c| c.bootstrap_key_and_device("obk_both", &serial)),
        None
    );
    let k = new_key("b", "obk_both", 4, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, t0())));
    let (key, device) = tx(&t.db, |c| c.bootstrap_key_and_device("obk_both", &serial)).unwrap();
    assert_eq!(key, tx(&t.db, |c| c.bootstrap_key(k.id)));
    assert_eq!((key.uses, device), (1, None));
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-both", t0())));
    tx(&t.db, |c| {
        c.insert_device(&new_device("SN-other", t0() + Duration::seconds(1)))
    });
    let (key, device) = tx(&t.db, |c| c.bootstrap_key_and_device("obk_both", &serial)).unwrap();
    assert_eq!(key.uses, 1);
    assert_eq!(device, Some(d));
}
