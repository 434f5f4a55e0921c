//! Pending effects, conditional status updates, the revocation count, named locks.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

pub fn pending_effects_queue_postpone_and_complete(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-eff", t0())));
    let (a, b, c_id) = (
        id_at(t0()),
        id_at(t0() + Duration::seconds(1)),
        id_at(t0() + Duration::seconds(2)),
    );
    tx(&t.db, |c| {
        c.enqueue_effect(a, Effect::BrokerDevice(d.id), t0(), t0())?;
        c.enqueue_effect(b, Effect::BrokerCrl, t0(), t0() + Duration::seconds(30))?;
        c.enqueue_effect(
            c_id,
            Effect::CloudDevice(d.id),
            t0(),
            t0() + Duration::seconds(60),
        )
    });
    assert_eq!(tx(&t.db, |c| c.pending_effects_summary()), (3, Some(t0())));
    let due = tx(&t.db, |c| c.due_effects(t0() + Duration::seconds(30), 10));
    assert_eq!(
        due.iter().map(|e| e.effect).collect::<Vec<_>>(),
        vec![Effect::BrokerDevice(d.id), Effect::BrokerCrl],
        "due ones only, oldest attempt first"
    );
    assert_eq!(
        tx(&t.db, |c| c.due_effects(t0() + Duration::seconds(90), 1)).len(),
        1,
        "limit"
    );

    tx(&t.db, |c| {
        c.postpone_effect(a, "broker down", t0() + Duration::seconds(120))
    });
    let later = tx(&t.db, |c| c.due_effects(t0() + Duration::seconds(120), 10));
    let postponed = later.iter().find(|e| e.id == a).unwrap();
    assert_eq!(postponed.attempts, 1);
    assert_eq!(postponed.last_error.as_deref(), Some("broker down"));
    assert_eq!(later.last().unwrap().id, a, "postponed to the back");

    tx(&t.db, |c| c.complete_effects(&[a, b, Uuid::nil()]));
    assert_eq!(tx(&t.db, |c| c.pending_effects_summary()).0, 1);
    // Rolled back with its transaction.
    let failed: Result<(), RepoError> = t.db.transaction(|c| {
        c.enqueue_effect(
            id_at(t0() + Duration::seconds(9)),
            Effect::BrokerCrl,
            t0(),
            t0(),
        )?;
        Err(RepoError::Database("boom".into()))
    });
    assert!(failed.is_err());
    assert_eq!(tx(&t.db, |c| c.pending_effects_summary()).0, 1);
}

pub fn conditional_updates_check_the_status(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-cond", t0())));
    let revoke = DeviceUpdate {
        status: Some(DeviceStatus::Revoked),
        ..DeviceUpdate::default()
    };
    let from = [DeviceStatus::Registered, DeviceStatus::Active];
    let done = tx(&t.db, |c| c.update_device_if(d.id, &from, &revoke, t0()));
    assert_eq!(done.unwrap().status, DeviceStatus::Revoked);
    assert_eq!(
        tx(&t.db, |c| c.update_device_if(d.id, &from, &revoke, t0())),
        None,
        "not in an expected status any more"
    );
    let missing = DeviceId(id_at(t0() + Duration::days(1)));
    assert!(matches!(
        t.db.transaction(|c| c.update_device_if(missing, &from, &revoke, t0())),
        Err(RepoError::NotFound { .. })
    ));
}

pub fn revocation_count_only_grows(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let d = tx(&t.db, |c| c.insert_device(&new_device("SN-count", t0())));
    let cert = tx(&t.db, |c| {
        c.insert_certificate(&new_cert(d.id, "0a01", t0()))
    });
    assert_eq!(tx(&t.db, |c| c.revocation_count()), 0);
    tx(&t.db, |c| {
        c.revoke_certificate(cert.id, t0(), RevocationReason::KeyCompromise)
    });
    tx(&t.db, |c| {
        c.revoke_certificate(cert.id, t0(), RevocationReason::KeyCompromise)
    });
    assert_eq!(
        tx(&t.db, |c| c.revocation_count()),
        1,
        "revoking twice counts once"
    );
}

pub fn exclusive_sections_do_not_overlap(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    // Two pools on one database: on PostgreSQL as two replicas would be.
    let other = match backend {
        TestBackend::Postgres => Database::open(&t.url, &Default::default()).unwrap(),
        TestBackend::Sqlite => t.db.clone(),
    };
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let db = if i % 2 == 0 {
                t.db.clone()
            } else {
                other.clone()
            };
            let (inside, overlaps) = (inside.clone(), overlaps.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    db.exclusive("test", || -> Result<(), RepoError> {
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        // Work inside the section that gives others time to enter.
                        db.transaction(|c| c.list_models().map(|_| ()))?;
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    // Another name is another lock: it can be taken inside the first.
    t.db.exclusive("outer", || {
        t.db.exclusive("inner", || Ok::<_, RepoError>(()))
    })
    .unwrap();
}

pub fn a_use_taken_in_a_rolled_back_transaction_is_not_spent(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let k = tx(&t.db, |c| {
        c.insert_bootstrap_keys(&[new_key("b", "rollbk01", 1, t0())])
    })
    .remove(0);
    let now = t0() + Duration::hours(1);
    let failed: Result<(), RepoError> = t.db.transaction(|c| {
        assert!(c.consume_bootstrap_key_use(k.id, now)?);
        Err(RepoError::Database("a later step failed".into()))
    });
    assert!(failed.is_err());
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 0);
    assert!(tx(&t.db, |c| c.consume_bootstrap_key_use(k.id, now)));
}
