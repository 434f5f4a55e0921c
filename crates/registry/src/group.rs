//! Group commit on SQLite ([`onboard_domain::Store::grouped_transaction`]).
//!
//! SQLite has one writer, and with `synchronous = FULL` each commit waits for the
//! disk (1 to 2 ms on the development machine), so one commit per registration caps
//! the rate at a few hundred a second whatever the CPU. Here concurrent callers share
//! a transaction: the first to arrive begins it (`BEGIN IMMEDIATE`) and runs its
//! writes; callers that arrive meanwhile queue and take the connection in turn, each
//! in a savepoint of its own; the caller that finds nobody queued after its turn
//! commits for all, and each caller whose writes stand returns once that commit is
//! done. Callers that arrive during a commit wait for it (SQLite's write lock is held
//! until then) and form the next group. A group is as large as the load makes it and
//! is one caller when there is no load: nobody waits for a timer.
//!
//! A caller whose `f` fails has its savepoint rolled back and returns its error at
//! once (it wrote nothing). A savepoint that cannot be released or rolled back, or an
//! `f` that panics, fails the whole group: it is rolled back, every caller in it gets
//! the error, and the panic goes on in its own thread.

use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use diesel::connection::TransactionManager;
use diesel::Connection;
use onboard_domain::RepoError;

use crate::db::{commit, rollback, Conn, DbConnection};
use crate::error::from_diesel;

/// The callers sharing one SQLite database's write transactions.
#[derive(Default)]
pub(crate) struct Group {
    state: Mutex<State>,
    /// Queued callers of the open group wait here for the connection. Each hand-over
    /// wakes one: every caller queued belongs to the open group (a group commits
    /// only once nobody is queued), so any of them may take it.
    turn: Condvar,
    /// Callers that wrote wait here for their group's commit.
    ended: Condvar,
    /// Callers that arrived during a commit wait here for it to end.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    phase: Phase,
    /// The number of the open (or committing) group.
    number: u64,
    /// The open group's connection while no caller has it.
    conn: Option<Conn>,
    /// Callers of the open group still waiting for their turn.
    queued: usize,
    /// Callers of the open group that wrote and wait for its commit.
    waiting: usize,
    /// Why the open group cannot commit.
    failed: Option<RepoError>,
    /// Callers of the open group whose writes stand so far.
    wrote: u64,
    /// How finished groups ended, kept until each of their waiting callers read it.
    ended: HashMap<u64, (Result<(), RepoError>, usize)>,
    stats: GroupStats,
}

/// What group commit has done so far (for the metrics and the tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups committed.
    pub commits: u64,
    /// Callers whose writes those commits made durable.
    pub writes: u64,
    /// Callers waiting for their turn in the open group right now.
    pub queued: usize,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    Open,
    Committing,
}

/// What one caller's turn came to.
enum Turn<T, E> {
    /// `f` returned `Ok` and its savepoint was released: it stands if the group
    /// commits.
    Wrote(T),
    /// `f` returned `Err` (its savepoint rolled back), or did not run because the
    /// group had failed.
    Refused(E),
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, on: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        on.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> GroupStats {
        let st = self.lock();
        GroupStats {
            queued: st.queued,
            ..st.stats
        }
    }

    /// Runs `f` in the open group, or opens one with `begin`; see the module
    /// documentation.
    pub(crate) fn run<T, E, F>(
        &self,
        begin: impl FnOnce() -> Result<Conn, RepoError>,
        f: F,
    ) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E>,
        E: From<RepoError>,
    {
        let (number, mut conn, failed) = match self.join(begin) {
            Ok(joined) => joined,
            Err(e) => return Err(E::from(e)),
        };
        let mut broke = None;
        let mut panicked = None;
        let turn = match failed {
            Some(e) => Turn::Refused(E::from(e)),
            None => {
                match <DbConnection as Connection>::TransactionManager::begin_transaction(&mut conn)
                {
                    Err(e) => {
                        let e = from_diesel(e, "transaction");
                        broke = Some(e.clone());
                        Turn::Refused(E::from(e))
                    }
                    Ok(()) => match catch_unwind(AssertUnwindSafe(|| f(&mut conn))) {
                        Ok(Ok(value)) => match commit(&mut conn) {
                            Ok(()) => Turn::Wrote(value),
                            Err(e) => {
                                broke = Some(e.clone());
                                Turn::Refused(E::from(e))
                            }
                        },
                        Ok(Err(err)) => {
                            if !rollback(&mut conn) {
                                broke = Some(RepoError::Database(
                                    "a savepoint could not be rolled back".into(),
                                ));
                            }
                            Turn::Refused(err)
                        }
                        Err(payload) => {
                            broke = Some(RepoError::Database(
                                "a writer sharing the transaction panicked".into(),
                            ));
                            panicked = Some(payload);
                            Turn::Refused(E::from(RepoError::Database(
                                "the writer panicked".into(),
                            )))
                        }
                    },
                }
            }
        };
        let result = self.after_turn(number, conn, broke, turn);
        if let Some(payload) = panicked {
            resume_unwind(payload);
        }
        result
    }

    /// Joins the open group and waits for this caller's turn, or opens a group.
    /// Returns the group's number, its connection and why it failed, if it did.
    fn join(
        &self,
        begin: impl FnOnce() -> Result<Conn, RepoError>,
    ) -> Result<(u64, Conn, Option<RepoError>), RepoError> {
        let mut st = self.lock();
        while st.phase == Phase::Committing {
            st = self.wait(&self.idle, st);
        }
        if st.phase == Phase::Idle {
            st.phase = Phase::Open;
            st.number += 1;
            st.failed = None;
            let number = st.number;
            drop(st);
            // Callers arriving while this waits for the write lock queue behind it.
            return match begin() {
                Ok(conn) => Ok((number, conn, None)),
                Err(e) => {
                    let mut st = self.lock();
                    let queued = std::mem::take(&mut st.queued);
                    if queued > 0 {
                        st.ended.insert(number, (Err(e.clone()), queued));
                    }
                    st.phase = Phase::Idle;
                    self.turn.notify_all();
                    self.idle.notify_all();
                    Err(e)
                }
            };
        }
        let number = st.number;
        st.queued += 1;
        loop {
            // A group ends with callers queued only when its `BEGIN` failed.
            if let Some(ended) = take_ended(&mut st, number) {
                return Err(ended.err().unwrap_or_else(|| {
                    RepoError::Database("the transaction ended before this write".into())
                }));
            }
            if let Some(conn) = st.conn.take() {
                st.queued -= 1;
                return Ok((number, conn, st.failed.clone()));
            }
            st = self.wait(&self.turn, st);
        }
    }

    /// Hands the connection to the next caller and waits for the commit, or, when
    /// nobody is queued, commits (or rolls back) the group.
    fn after_turn<T, E: From<RepoError>>(
        &self,
        number: u64,
        mut conn: Conn,
        broke: Option<RepoError>,
        turn: Turn<T, E>,
    ) -> Result<T, E> {
        let mut st = self.lock();
        if let Some(e) = broke {
            st.failed.get_or_insert(e);
        }
        if matches!(turn, Turn::Wrote(_)) {
            st.wrote += 1;
        }
        if st.queued > 0 {
            st.conn = Some(conn);
            self.turn.notify_one();
            let value = match turn {
                Turn::Refused(err) => return Err(err),
                Turn::Wrote(value) => value,
            };
            st.waiting += 1;
            loop {
                if let Some(ended) = take_ended(&mut st, number) {
                    return ended.map(|()| value).map_err(E::from);
                }
                st = self.wait(&self.ended, st);
            }
        }
        st.phase = Phase::Committing;
        let failed = st.failed.take();
        drop(st);
        let ended = match failed {
            Some(e) => {
                rollback(&mut conn);
                Err(e)
            }
            None => commit(&mut conn),
        };
        // Back to the pool before the next group begins.
        drop(conn);
        let mut st = self.lock();
        let wrote = std::mem::take(&mut st.wrote);
        if ended.is_ok() {
            st.stats.commits += 1;
            st.stats.writes += wrote;
        }
        let waiting = std::mem::take(&mut st.waiting);
        if waiting > 0 {
            st.ended.insert(number, (ended.clone(), waiting));
        }
        st.phase = Phase::Idle;
        self.ended.notify_all();
        self.idle.notify_all();
        drop(st);
        match turn {
            Turn::Refused(err) => Err(err),
            Turn::Wrote(value) => ended.map(|()| value).map_err(E::from),
        }
    }
}

/// The outcome of group `number`, counted as read by one of its callers.
fn take_ended(st: &mut State, number: u64) -> Option<Result<(), RepoError>> {
    let (outcome, readers) = st.ended.get_mut(&number)?;
    let outcome = outcome.clone();
    *readers -= 1;
    if *readers == 0 {
        st.ended.remove(&number);
    }
    Some(outcome)
}
