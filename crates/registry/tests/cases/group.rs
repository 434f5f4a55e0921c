//! `Store::grouped_transaction`: group commit on SQLite, a transaction per caller
//! on PostgreSQL; the same outcome for each caller on both.

use std::sync::{Arc, Barrier};
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use onboard_domain::*;
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_registry::{Database, DbConnection};

use super::{new_device, new_key, t0, tx};

/// On SQLite, holds the first caller's turn until `others` callers have queued
/// behind it, so they all share its group (PostgreSQL has no queue).
fn hold_until_queued(db: &Database, others: usize) {
    if db.backend() != "sqlite" {
        return;
    }
    let deadline = Instant::now() + StdDuration::from_secs(60);
    while db.group_stats().queued < others {
        assert!(Instant::now() < deadline, "{:?}", db.group_stats());
        std::thread::sleep(StdDuration::from_millis(2));
    }
}

/// Runs `n` writers at once, each `body(i, tx)` in `grouped_transaction`; writer 0
/// keeps its turn until the others have queued behind it (on SQLite), so all share
/// one group. Each writer's outcome, a panic as `Err`.
fn writers(
    db: &Database,
    n: usize,
    body: impl Fn(usize, &mut DbConnection) -> Result<(), RepoError> + Sync,
) -> Vec<std::thread::Result<Result<(), RepoError>>> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (db, barrier, body) = (db.clone(), barrier.clone(), &body);
                s.spawn(move || {
                    if i > 0 {
                        barrier.wait();
                    }
                    db.grouped_transaction(|c| {
                        let done = body(i, c);
                        if i == 0 {
                            barrier.wait();
                            hold_until_queued(&db, n - 1);
                        }
                        done
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// Eight writers at once, each taking a key use and inserting a device: one fails
/// on purpose and two insert the same serial. Every writer gets its own outcome
/// and only the writes of those answered `Ok` are there; on SQLite all eight
/// shared one commit.
pub fn grouped_writers_share_a_commit_and_fail_alone(backend: TestBackend) {
    let t = TestDb::migrated(backend);
    let k = new_key("b", "obgroup1", 100, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::minutes(1);
    let before = t.db.group_stats();
    let outcomes: Vec<Result<(), RepoError>> = writers(&t.db, 8, |i, c| {
        assert!(c.consume_bootstrap_key_use(k.id, now)?);
        let serial = if i == 6 {
            "g5".to_owned()
        } else {
            format!("g{i}")
        };
        c.insert_device(&new_device(&serial, now))?;
        if i == 3 {
            return Err(RepoError::Database("writer 3 gives up".into()));
        }
        Ok(())
    })
    .into_iter()
    .map(|o| o.unwrap())
    .collect();
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(ok, 6, "{outcomes:?}");
    assert!(matches!(&outcomes[3], Err(RepoError::Database(m)) if m.contains("writer 3")));
    let conflicts = [&outcomes[5], &outcomes[6]]
        .iter()
        .filter(|o| matches!(o, Err(RepoError::Conflict { .. })))
        .count();
    assert_eq!(conflicts, 1, "{outcomes:?}");
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 6);
    for i in [0, 1, 2, 4, 5, 7] {
        let serial = Serial::parse(&format!("g{i}")).unwrap();
        assert!(tx(&t.db, |c| c.device_by_serial(&serial)).is_some(), "g{i}");
    }
    let g3 = Serial::parse("g3").unwrap();
    assert!(tx(&t.db, |c| c.device_by_serial(&g3)).is_none());
    let after = t.db.group_stats();
    if backend == TestBackend::Sqlite {
        assert_eq!(after.commits - before.commits, 1, "{after:?}");
        assert_eq!(after.writes - before.writes, 6, "{after:?}");
    } else {
        assert_eq!(after, before);
    }
}

/// SQLite: a writer that panics in a shared transaction fails its whole group: no
/// write of it stands, the others are told, the panic goes on in its own thread,
/// and the next group commits as usual.
pub fn a_panicking_writer_fails_its_group_and_the_next_one_commits() {
    let t = TestDb::migrated(TestBackend::Sqlite);
    let k = new_key("b", "obgroup2", 100, t0());
    tx(&t.db, |c| c.insert_bootstrap_keys(std::slice::from_ref(&k)));
    let now = t0() + Duration::minutes(1);
    let outcomes = writers(&t.db, 3, |i, c| {
        assert!(c.consume_bootstrap_key_use(k.id, now)?);
        if i == 1 {
            panic!("writer 1 panics");
        }
        Ok(())
    });
    assert!(outcomes[1].is_err(), "the panic reaches its own thread");
    for i in [0, 2] {
        assert!(
            matches!(&outcomes[i], Ok(Err(RepoError::Database(_)))),
            "{i}: {:?}",
            outcomes[i]
        );
    }
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 0);
    t.db.grouped_transaction(|c| c.consume_bootstrap_key_use(k.id, now))
        .unwrap();
    assert_eq!(tx(&t.db, |c| c.bootstrap_key(k.id)).uses, 1);
}
