//! `MosquittoFile`: broker access through Mosquitto's ACL file, password file and
//! CRL, rewritten atomically and reloaded.
//!
//! The files always hold every granted device as the registry says, so the
//! server, `onboardctl` and any number of processes over time can change grants:
//! an exclusive `flock` on `<acl file>.lock` orders reading the registry and
//! writing across processes (a writer that read before another's change cannot
//! write after it).
//!
//! With a [`DeviceGrantLoader`] ([`MosquittoFile::with_device_loader`]) the
//! files are kept incrementally: the grants last written are held in memory
//! (one rendered block per client id), and a rewrite reads from the registry
//! only the devices its calls named, under the file lock, so its cost does not
//! grow with the fleet beyond writing the file out. The whole fleet is read
//! again through the [`GrantLoader`] on the first rewrite, after a failed one,
//! and whenever the ACL file is not the one this instance wrote last (another
//! process rewrote it). Without a device loader every rewrite reads the whole
//! fleet.
//!
//! Within a process, rewrites are coalesced: a call waits for a rewrite that
//! started after the call, and while one rewrite runs, every call that arrives
//! meanwhile is served by the single next one.

mod fleet;
#[cfg(test)]
mod patterns;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use onboard_domain::{BrokerAccess, BrokerGrant, DeviceId, PortError};

use crate::acl::AclPatterns;
use crate::atomic::{lock_beside, write_atomic};
use crate::error::BrokerError;
use crate::reload::{Reload, Reloader, DEFAULT_CONFIRM_TIMEOUT};
use fleet::{check, file_id, usable, FileId, Fleet};

/// Lists every grant the registry holds (the source of truth for the files).
pub type GrantLoader = Arc<dyn Fn() -> Result<Vec<BrokerGrant>, PortError> + Send + Sync>;

/// The registry's current grant of each of the given devices; `None` for a
/// device that may not use the broker (revoked, decommissioned, deleted).
pub type DeviceGrantLoader = Arc<
    dyn Fn(&[DeviceId]) -> Result<Vec<(DeviceId, Option<BrokerGrant>)>, PortError> + Send + Sync,
>;

/// Pattern mode: the client ids of every device that lost its broker access
/// (revoked, decommissioned), each shut out by a block that denies everything.
pub type ShutOutLoader = Arc<dyn Fn() -> Result<Vec<String>, PortError> + Send + Sync>;

/// Where the files are and how Mosquitto is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// Mosquitto's `acl_file`. Written with mode 0644.
    pub acl_file: PathBuf,
    /// Mosquitto's `password_file`, for devices that log in with a password.
    /// `None`: no password file is written.
    pub password_file: Option<PathBuf>,
    /// Mode of the password file: 0600 by default, which needs Onboard and
    /// Mosquitto to run as the same user; use 0640 with a shared group otherwise.
    pub password_file_mode: u32,
    /// The listener's `crlfile`. Written with mode 0644. `None`:
    /// [`BrokerAccess::publish_crl`] does nothing.
    pub crl_file: Option<PathBuf>,
    pub reload: Reload,
    /// How long to wait for Mosquitto to read a new file after the reload request
    /// (see [`crate::Reload`]); `None` returns without waiting.
    pub confirm_timeout: Option<Duration>,
    /// Copied verbatim to the top of the ACL file: Onboard's own service accounts,
    /// e.g. `user onboard-service` / `topic read devices/+/status`.
    pub acl_preamble: String,
    /// Copied verbatim to the top of the password file (`user:$7$...` lines of
    /// service accounts that log in with a password).
    pub password_preamble: String,
}

impl FileConfig {
    /// Only an ACL file, reloaded by `SIGHUP` to the pid in `pid_file`.
    pub fn new(acl_file: impl Into<PathBuf>, pid_file: impl Into<PathBuf>) -> Self {
        Self {
            acl_file: acl_file.into(),
            password_file: None,
            password_file_mode: 0o600,
            crl_file: None,
            reload: Reload::Signal {
                pid_file: pid_file.into(),
            },
            confirm_timeout: Some(DEFAULT_CONFIRM_TIMEOUT),
            acl_preamble: String::new(),
            password_preamble: String::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Coordination {
    /// Generations of loader-based rewrites: the last one started and finished.
    started: u64,
    finished: u64,
    /// A rewrite (loader-based or `sync`) is running.
    running: bool,
    last_ok: u64,
    last_err: Option<PortError>,
    /// Calls waiting for a running rewrite to finish.
    waiting: usize,
    /// Devices named by calls since the last rewrite started.
    changed: BTreeSet<DeviceId>,
}

/// [`BrokerAccess`] through Mosquitto's files. Every call returns once Mosquitto
/// has read the new file (or fails with [`PortError::Unavailable`]); before
/// Mosquitto runs (no pid file, see [`Reload::Signal`]) once the files are
/// written.
pub struct MosquittoFile {
    config: FileConfig,
    loader: GrantLoader,
    device_loader: Option<DeviceGrantLoader>,
    shut_out_loader: Option<ShutOutLoader>,
    fleet: Mutex<Fleet>,
    reloader: Reloader,
    coordination: Mutex<Coordination>,
    changed: Condvar,
    /// Signalled when a call starts waiting (for [`MosquittoFile::wait_for_waiting_calls`]).
    arrived: Condvar,
    rewrites: AtomicU64,
}

impl fmt::Debug for MosquittoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MosquittoFile")
            .field("config", &self.config)
            .field("rewrites", &self.rewrites())
            .finish_non_exhaustive()
    }
}

impl MosquittoFile {
    /// `loader` returns every grant the registry holds; it is called for each
    /// rewrite (once per coalesced batch of calls).
    pub fn new(config: FileConfig, loader: GrantLoader) -> Self {
        let reloader = Reloader {
            reload: config.reload.clone(),
            confirm_timeout: config.confirm_timeout,
        };
        Self {
            config,
            loader,
            device_loader: None,
            shut_out_loader: None,
            fleet: Mutex::new(Fleet::new(None)),
            reloader,
            coordination: Mutex::new(Coordination::default()),
            changed: Condvar::new(),
            arrived: Condvar::new(),
            rewrites: AtomicU64::new(0),
        }
    }

    /// Keeps the files incrementally: a rewrite reads only the devices its calls
    /// named through `loader` (see the module documentation).
    pub fn with_device_loader(mut self, loader: DeviceGrantLoader) -> Self {
        self.device_loader = Some(loader);
        self
    }

    /// Pattern mode (see the module documentation of `acl` and
    /// `docs/mosquitto.md`): `patterns` give every device its own topics, a
    /// device whose grant is exactly that gets no block, and `shut_out` lists the
    /// client ids that lost their access, each written as a block that denies
    /// everything. A grant the patterns already cover changes no file and needs
    /// no reload.
    ///
    /// The grant loader may leave out the grants the patterns cover (the file
    /// never names them; a fleet of them then costs no memory here). A device
    /// this instance does not hold that loses its access is named by the
    /// `shut_out` list, which therefore must not list a client id that a granted
    /// device holds.
    pub fn with_patterns(mut self, patterns: AclPatterns, shut_out: ShutOutLoader) -> Self {
        self.fleet = Mutex::new(Fleet::new(Some(patterns)));
        self.shut_out_loader = Some(shut_out);
        self
    }

    fn shut_out(&self) -> Result<Vec<String>, BrokerError> {
        match &self.shut_out_loader {
            Some(load) => load().map_err(BrokerError::Loader),
            None => Ok(Vec::new()),
        }
    }

    /// How many times this instance has written the ACL (and password) file.
    pub fn rewrites(&self) -> u64 {
        self.rewrites.load(Ordering::Relaxed)
    }

    /// How many calls are waiting for a running rewrite to finish (they will be
    /// served together by the next one).
    pub fn waiting_calls(&self) -> usize {
        self.lock().waiting
    }

    /// Waits up to `timeout` until at least `calls` calls are waiting for a
    /// running rewrite; true if they are. For tests that hold a rewrite (in
    /// their loader) and need the other calls queued behind it.
    pub fn wait_for_waiting_calls(&self, calls: usize, timeout: Duration) -> bool {
        let c = self.lock();
        let (c, _) = self
            .arrived
            .wait_timeout_while(c, timeout, |c| c.waiting < calls)
            .unwrap_or_else(PoisonError::into_inner);
        c.waiting >= calls
    }

    fn lock(&self) -> MutexGuard<'_, Coordination> {
        self.coordination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the running rewrite to finish, counted in `waiting`.
    fn wait<'a>(&self, mut guard: MutexGuard<'a, Coordination>) -> MutexGuard<'a, Coordination> {
        guard.waiting += 1;
        self.arrived.notify_all();
        let mut guard = self
            .changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner);
        guard.waiting -= 1;
        guard
    }

    /// Waits for a loader-based rewrite that starts after this call, running it
    /// if no one else does; `devices` are the ones whose grants changed.
    fn rewrite_from_loader(
        &self,
        devices: impl IntoIterator<Item = DeviceId>,
    ) -> Result<(), PortError> {
        let mut c = self.lock();
        c.changed.extend(devices);
        let target = c.started + 1;
        loop {
            if c.finished >= target {
                if c.last_ok >= target {
                    return Ok(());
                }
                return Err(c.last_err.clone().unwrap_or_else(|| {
                    PortError::Unavailable("the broker files were not written".into())
                }));
            }
            if c.running {
                c = self.wait(c);
                continue;
            }
            c.running = true;
            c.started += 1;
            let generation = c.started;
            let changed: Vec<DeviceId> = std::mem::take(&mut c.changed).into_iter().collect();
            drop(c);
            let result = guarded(|| self.write_changes(&changed));
            c = self.lock();
            c.running = false;
            c.finished = generation;
            match result {
                Ok(()) => c.last_ok = generation,
                Err(e) => {
                    tracing::warn!(error = %e, "rewriting the Mosquitto files failed");
                    c.last_err = Some(e.into());
                }
            }
            self.changed.notify_all();
        }
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the file lock, brings the grants in line with the registry (the
    /// devices in `changed`, or the whole fleet), writes the files and reloads.
    fn write_changes(&self, changed: &[DeviceId]) -> Result<(), BrokerError> {
        let _lock = lock_beside(&self.config.acl_file)?;
        let mut fleet = self.fleet();
        let current = match &self.device_loader {
            Some(_) => fleet.written.is_some() && fleet.written == file_id(&self.config.acl_file),
            None => false,
        };
        // Read the whole fleet again unless this rewrite succeeds.
        let was = fleet.written.take();
        match (&self.device_loader, current) {
            (Some(load), true) => {
                // A device that lost its access but was never in this fleet (a
                // registration the patterns covered, see `enforces_new_device`):
                // its client id comes from the shut-out list.
                let mut unknown_gone = false;
                for (id, grant) in load(changed).map_err(BrokerError::Loader)? {
                    match grant.map(|g| usable(vec![g]).pop()) {
                        Some(Some(g)) if g.device_id == id => fleet.insert(g),
                        // Granted, but its grant cannot be written: dropped as a
                        // full read drops it (not shut out).
                        Some(_) => fleet.forget(id),
                        None => {
                            unknown_gone |= !fleet.knows(id);
                            fleet.remove(id);
                        }
                    }
                }
                if unknown_gone && self.shut_out_loader.is_some() {
                    let shut_out = self.shut_out()?;
                    fleet.add_shut_out(shut_out);
                }
            }
            _ => {
                let all = usable((self.loader)().map_err(BrokerError::Loader)?);
                let shut_out = self.shut_out()?;
                fleet.replace_all(all, shut_out);
            }
        }
        self.write_fleet(&mut fleet, was.filter(|_| current))
    }

    /// Writes the files from `fleet` and reloads (under the file lock). With
    /// `current` (the ACL file Mosquitto last read is this instance's), nothing
    /// is written when neither file's text changed.
    fn write_fleet(&self, fleet: &mut Fleet, current: Option<FileId>) -> Result<(), BrokerError> {
        // Unchanged since this instance wrote it (and nobody else did, or the
        // fleet would have been read again): not written again. Rendered only
        // after a change of a grant with a password.
        let passwords = match &self.config.password_file {
            Some(path) if fleet.passwords_unchanged() && path.exists() => Some((path, None, true)),
            Some(path) => {
                let text = fleet.passwords(&self.config.password_preamble)?;
                let same = fleet.passwords.as_deref() == Some(text.as_str()) && path.exists();
                Some((path, Some(text), same))
            }
            None => None,
        };
        let passwords_same = passwords.as_ref().is_none_or(|(_, _, same)| *same);
        if let Some(id) = current {
            if passwords_same && fleet.acl_unchanged() {
                // What Mosquitto enforces already holds the change (a grant the
                // patterns cover): nothing to write or reload.
                fleet.written = Some(id);
                return Ok(());
            }
        }
        let acl = fleet.acl(&self.config.acl_preamble);
        if let Some((path, Some(text), same)) = passwords {
            fleet.passwords = None;
            if !same {
                write_atomic(path, text.as_bytes(), self.config.password_file_mode)?;
            }
            fleet.set_passwords(text);
        }
        // The ACL file last: it is the one watched for Mosquitto's read.
        write_atomic(&self.config.acl_file, acl.as_bytes(), 0o644)?;
        self.rewrites.fetch_add(1, Ordering::Relaxed);
        let written = file_id(&self.config.acl_file);
        let reloaded = self.reloader.reload(&self.config.acl_file);
        if reloaded.is_ok() {
            fleet.written = written;
            fleet.mark_written();
        }
        reloaded
    }
}

/// The texts a rewrite that reads the whole fleet renders from `grants`, without
/// writing them: the ACL file, and the password file if `config` has one. For the
/// benchmarks (`crates/broker/benches/acl.rs`).
#[cfg(feature = "test-support")]
pub fn render_files(
    config: &FileConfig,
    grants: Vec<BrokerGrant>,
) -> Result<(String, Option<String>), BrokerError> {
    let mut fleet = Fleet::new(None);
    fleet.replace_all(usable(grants), Vec::new());
    let passwords = match &config.password_file {
        Some(_) => Some(fleet.passwords(&config.password_preamble)?),
        None => None,
    };
    Ok((fleet.acl(&config.acl_preamble), passwords))
}

/// Runs a rewrite; a panic (in the loader, say) becomes an error so that the
/// waiting callers are released instead of waiting forever.
fn guarded(f: impl FnOnce() -> Result<(), BrokerError>) -> Result<(), BrokerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(BrokerError::Internal(
            "the rewrite of the Mosquitto files panicked".into(),
        ))
    })
}

/// Writes `crl_pem` to `crl_file` atomically (under `<crl file>.lock`) and
/// reloads, waiting for Mosquitto to read it.
pub(crate) fn install_crl(
    crl_file: &std::path::Path,
    reloader: &Reloader,
    crl_pem: &str,
) -> Result<(), BrokerError> {
    if !crl_pem.trim_start().starts_with("-----BEGIN X509 CRL-----") {
        return Err(BrokerError::InvalidCrl);
    }
    let _lock = lock_beside(crl_file)?;
    write_atomic(crl_file, crl_pem.as_bytes(), 0o644)?;
    reloader.reload(crl_file)
}

impl BrokerAccess for MosquittoFile {
    /// The registry already holds `grant`: rewrites the files from the registry.
    fn grant(&self, grant: &BrokerGrant) -> Result<(), PortError> {
        check(grant)?;
        self.rewrite_from_loader([grant.device_id])
    }

    /// One rewrite for all of `grants` (which the registry already holds).
    fn grant_many(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        grants.iter().try_for_each(check)?;
        self.rewrite_from_loader(grants.iter().map(|g| g.device_id))
    }

    /// The registry no longer lists the device: rewrites the files from the
    /// registry.
    fn revoke(&self, device: DeviceId) -> Result<(), PortError> {
        self.rewrite_from_loader([device])
    }

    /// Writes exactly `grants` (not the loader's list); in pattern mode with the
    /// shut-out list the loader gives.
    fn sync(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        let mut c = self.lock();
        while c.running {
            c = self.wait(c);
        }
        c.running = true;
        drop(c);
        let result = guarded(|| {
            let _lock = lock_beside(&self.config.acl_file)?;
            let shut_out = self.shut_out()?;
            let mut fleet = self.fleet();
            fleet.written = None;
            fleet.replace_all(usable(grants.to_vec()), shut_out);
            self.write_fleet(&mut fleet, None)
        });
        let mut c = self.lock();
        c.running = false;
        self.changed.notify_all();
        drop(c);
        result.map_err(PortError::from)
    }

    fn publish_crl(&self, crl_pem: &str) -> Result<(), PortError> {
        match &self.config.crl_file {
            Some(path) => install_crl(path, &self.reloader, crl_pem).map_err(PortError::from),
            None => Ok(()),
        }
    }

    /// Pattern mode: the patterns give the grant exactly its topics, its client
    /// id is in no block and not shut out, and the ACL file on disk is the one
    /// this instance wrote and Mosquitto read (any pattern-mode writer's file
    /// covers the device too). The device is then not added to this instance's
    /// fleet; a later change of it reads the shut-out list (see `write_changes`).
    /// False while a rewrite holds the fleet.
    fn enforces_new_device(&self, grant: &BrokerGrant) -> bool {
        let Ok(fleet) = self.fleet.try_lock() else {
            return false;
        };
        fleet.covers_new(grant)
            && fleet.written.is_some()
            && fleet.written == file_id(&self.config.acl_file)
    }
}

#[cfg(test)]
mod tests;
