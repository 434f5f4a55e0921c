//! Side effects outside the database, driven from durable state.
//!
//! A use case commits its rows, its audit event and the effects it implies
//! ([`Effect`]) in one transaction. After the commit the same call applies those
//! effects; whatever it could not apply (a crash, the broker down) stays in
//! `pending_effects`, and [`Onboard::reconcile`] applies it later: the server runs
//! it continuously, `onboardctl reconcile` once. An effect names what to bring in
//! line with the registry (this device's broker access, the broker's CRL), not a
//! step to replay, so applying one late, twice, or after a newer change is safe,
//! and there is no undo to run in the right order: a change that did not commit
//! left nothing outside the database, and one that committed is completed.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use onboard_domain::{
    new_id, CrlRepository, DeviceId, Effect, EffectRepository, PendingEffect, RepoError, Store,
};

use crate::app::Onboard;
use crate::ca::CrlStatus;
use crate::error::CoreError;

/// How long the reconciler leaves an effect to the call that enqueued it, which
/// applies it right after its commit.
pub const EFFECT_GRACE_SECONDS: i64 = 30;
/// The longest wait between two attempts at a failing effect.
const MAX_BACKOFF_SECONDS: i64 = 300;
/// Effects applied per reconciler pass.
const RECONCILE_BATCH: u32 = 500;

/// An effect enqueued by a transaction, to apply after its commit.
pub(crate) type Enqueued = (uuid::Uuid, Effect);

/// What one reconciler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub applied: usize,
    pub failed: usize,
    /// Why effects or the CRL refresh failed (they are retried).
    pub errors: Vec<String>,
    /// A new CRL was signed because the last one was past half its validity.
    pub crl_refreshed: bool,
    /// The CRL the broker has now, when one is installed.
    pub installed_crl: Option<CrlStatus>,
    /// Certificates revoked as superseded because their renewal's grace period
    /// (`device.renew_grace_hours`) was over.
    pub renewals_retired: usize,
    /// Devices whose AWS resources were removed because no device (or a
    /// decommissioned one) owned them (full passes only).
    pub cloud_orphans_removed: usize,
}

/// The CRL this process last installed in the broker.
#[derive(Debug, Default)]
pub(crate) struct InstalledCrl(Mutex<Option<CrlStatus>>);

impl InstalledCrl {
    pub(crate) fn get(&self) -> Option<CrlStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Held while installing, so installs of one process happen one at a time.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CrlStatus>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 10)).unwrap_or(10);
    Duration::seconds((5_i64 << exp).min(MAX_BACKOFF_SECONDS))
}

impl Onboard {
    /// Records `effects` in the transaction `tx`, to apply after it commits. A
    /// cloud effect while the cloud registry is off, and a device's broker effect
    /// with broker `none`, are not recorded: applying them would do nothing. (The
    /// broker's CRL effect always is: it signs the CRL the server serves.)
    /// Whether [`Onboard::enqueue`] writes a row for `effect`: not for a device's
    /// cloud or broker state when that component is off.
    pub(crate) fn enqueues(&self, effect: &Effect) -> bool {
        match effect {
            Effect::CloudDevice(_) => self.ports().cloud.enabled(),
            Effect::BrokerDevice(_) => self.ports().broker.enabled(),
            _ => true,
        }
    }

    pub(crate) fn enqueue<T: EffectRepository>(
        &self,
        tx: &mut T,
        effects: &[Effect],
        out: &mut Vec<Enqueued>,
    ) -> Result<(), RepoError> {
        let now = self.clock().now();
        let start = out.len();
        for effect in effects {
            if self.enqueues(effect) {
                out.push((new_id(self.clock()), *effect));
            }
        }
        let due = now + Duration::seconds(EFFECT_GRACE_SECONDS);
        match &out[start..] {
            [] => Ok(()),
            [(id, effect)] => tx.enqueue_effect(*id, *effect, now, due),
            many => tx.enqueue_effects(many, now, due),
        }
    }

    /// Applies effects committed by this call. What fails stays pending for the
    /// reconciler; the first failure is returned.
    pub(crate) fn apply_effects(&self, effects: &[Enqueued]) -> Result<(), CoreError> {
        if effects.is_empty() {
            return Ok(());
        }
        let pending: Vec<PendingEffect> = effects
            .iter()
            .map(|(id, effect)| PendingEffect {
                id: *id,
                effect: *effect,
                created_at: self.clock().now(),
                attempts: 0,
                last_error: None,
                next_attempt_at: self.clock().now(),
            })
            .collect();
        let (_, failed) = self.apply_pending(&pending);
        match failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Applies a batch: device effects grouped so the file broker rewrites once,
    /// one CRL for every CRL effect. Removes the applied rows and postpones the
    /// others. Returns how many were applied and the errors.
    fn apply_pending(&self, pending: &[PendingEffect]) -> (usize, Vec<CoreError>) {
        let mut broker_devices = BTreeSet::new();
        let mut cloud_devices = BTreeSet::new();
        let mut crl = false;
        for p in pending {
            match p.effect {
                Effect::BrokerDevice(d) => {
                    broker_devices.insert(d);
                }
                Effect::CloudDevice(d) => {
                    cloud_devices.insert(d);
                }
                Effect::BrokerCrl => crl = true,
            }
        }
        let broker = (!broker_devices.is_empty()).then(|| self.converge_broker(&broker_devices));
        let crl = crl.then(|| self.publish_and_install_crl().map(|_| ()));
        let cloud: Vec<(DeviceId, Result<(), CoreError>)> = cloud_devices
            .iter()
            .map(|d| (*d, self.converge_cloud(*d)))
            .collect();

        let mut done = Vec::new();
        let mut errors = Vec::new();
        let now = self.clock().now();
        for p in pending {
            let outcome: Result<(), &CoreError> = match p.effect {
                Effect::BrokerDevice(_) => {
                    broker.as_ref().map_or(Ok(()), |r| r.as_ref().map(|_| ()))
                }
                Effect::BrokerCrl => crl.as_ref().map_or(Ok(()), |r| r.as_ref().map(|_| ())),
                Effect::CloudDevice(d) => cloud
                    .iter()
                    .find(|(id, _)| *id == d)
                    .map_or(Ok(()), |(_, r)| r.as_ref().map(|_| ())),
            };
            match outcome {
                Ok(()) => done.push(p.id),
                Err(e) => {
                    let message = e.to_string();
                    let retry_at = now + backoff(p.attempts);
                    tracing::warn!(effect = p.effect.kind(), device = ?p.effect.device(), attempts = p.attempts + 1, error = %message, %retry_at, "an effect could not be applied; it is retried");
                    if let Err(e) = self
                        .store()
                        .transaction(|tx| tx.postpone_effect(p.id, &message, retry_at))
                    {
                        tracing::error!(error = %e, "could not postpone an effect");
                    }
                }
            }
        }
        for r in [broker, crl].into_iter().flatten() {
            if let Err(e) = r {
                errors.push(e);
            }
        }
        errors.extend(cloud.into_iter().filter_map(|(_, r)| r.err()));
        if !done.is_empty() {
            // Concurrent registrations remove their applied effects in one commit
            // on SQLite (`Store::grouped_transaction`).
            if let Err(e) = self
                .store()
                .grouped_transaction(|tx| tx.complete_effects(&done))
            {
                // Applied but still listed: applying them again is harmless.
                tracing::warn!(error = %e, "could not remove applied effects");
            }
        }
        (done.len(), errors)
    }

    /// Grants broker access to each device that is registered or active and
    /// removes it from the others, as the registry says after the change. Checks
    /// the statuses again afterwards: a change committed while the broker was
    /// being updated is applied too, so a stale grant never outlives a revocation.
    fn converge_broker(&self, devices: &BTreeSet<DeviceId>) -> Result<(), CoreError> {
        let broker = &self.ports().broker;
        let unavailable =
            |e: onboard_domain::PortError| CoreError::Unavailable(format!("broker: {e}"));
        let mut applied: Vec<(DeviceId, bool)> = Vec::new();
        for _ in 0..3 {
            let wanted = self.broker_wanted(devices)?;
            if wanted
                .iter()
                .map(|(id, g)| (*id, g.is_some()))
                .eq(applied.iter().copied())
            {
                return Ok(());
            }
            let grants: Vec<_> = wanted.iter().filter_map(|(_, g)| g.clone()).collect();
            if !grants.is_empty() {
                broker.grant_many(&grants).map_err(unavailable)?;
            }
            for (id, grant) in &wanted {
                if grant.is_none() {
                    broker.revoke(*id).map_err(unavailable)?;
                }
            }
            applied = wanted.iter().map(|(id, g)| (*id, g.is_some())).collect();
        }
        Ok(())
    }

    /// For each device, its grant when it may use the broker, `None` otherwise.
    pub(crate) fn broker_wanted(
        &self,
        devices: &BTreeSet<DeviceId>,
    ) -> Result<Vec<(DeviceId, Option<onboard_domain::BrokerGrant>)>, CoreError> {
        let ids: Vec<DeviceId> = devices.iter().copied().collect();
        Ok(crate::broker::grants_of_devices(
            self.store(),
            self.settings(),
            &ids,
        )?)
    }

    /// Signs a new CRL (every revocation committed so far) and installs it.
    pub(crate) fn publish_and_install_crl(&self) -> Result<CrlStatus, CoreError> {
        let crl = self.publish_crl()?;
        self.install_crl(&crl)
    }

    /// Installs `crl` in the broker unless this process installed a newer one:
    /// two calls that signed CRLs n and n+1 may reach this point in either
    /// order, and the older must not replace the newer.
    pub(crate) fn install_crl(
        &self,
        crl: &crate::ca::PublishedCrl,
    ) -> Result<CrlStatus, CoreError> {
        let mut installed = self.installed_crl_cell().lock();
        if let Some(newer) = installed.as_ref().filter(|s| s.number > crl.number) {
            return Ok(newer.clone());
        }
        self.ports()
            .broker
            .publish_crl(&crl.pem)
            .map_err(|e| CoreError::Unavailable(format!("broker CRL: {e}")))?;
        let status = CrlStatus {
            number: crl.number,
            this_update: crl.this_update,
            next_update: crl.next_update,
        };
        *installed = Some(status.clone());
        Ok(status)
    }

    /// The CRL this process installed in the broker last, if any.
    pub fn installed_crl(&self) -> Option<CrlStatus> {
        self.installed_crl_cell().get()
    }

    /// Keeps the broker's CRL valid: signs a new one once the newest is past half
    /// its validity (one publisher at a time across replicas), and installs the
    /// newest when this process has not installed it yet. Warns when the
    /// installed CRL has less than a quarter of its validity left.
    pub fn refresh_crl(&self) -> Result<(bool, CrlStatus), CoreError> {
        let before = self.store().read(|tx| tx.latest_crl())?.map(|c| c.number);
        let crl = self.current_crl()?;
        let refreshed = before != Some(crl.number);
        let installed = match self.installed_crl() {
            Some(s) if s.number == crl.number => s,
            _ => self.install_crl(&crl)?,
        };
        let now = self.clock().now();
        let validity = installed.next_update - installed.this_update;
        if installed.next_update - now < validity / 4 {
            tracing::warn!(next_update = %installed.next_update, number = installed.number, "the broker's CRL is close to its nextUpdate; after it Mosquitto refuses every device");
        }
        Ok((refreshed, installed))
    }

    /// One pass of the reconciler: the CRL kept fresh and installed, then every
    /// effect that is due (all of them with `all`, as at start-up); with `all`
    /// also the sweep for AWS resources that have no device.
    pub fn reconcile(&self, all: bool) -> Result<Reconciled, CoreError> {
        let mut report = Reconciled::default();
        // Before the CRL: a certificate retired here is in the CRL this pass
        // installs, if its own effect did not already install it.
        match self.retire_renewed_certificates() {
            Ok(n) => report.renewals_retired = n,
            Err(e) => report.errors.push(format!("renewals: {e}")),
        }
        match self.refresh_crl() {
            Ok((refreshed, installed)) => {
                report.crl_refreshed = refreshed;
                report.installed_crl = Some(installed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the broker's CRL");
                report.errors.push(format!("CRL: {e}"));
            }
        }
        // A far but ordinary time: SQLite compares timestamps as text, which
        // only works for four-digit years.
        let horizon = if all {
            self.clock().now() + Duration::days(365 * 100)
        } else {
            self.clock().now()
        };
        loop {
            let due = self
                .store()
                .read(|tx| tx.due_effects(horizon, RECONCILE_BATCH))?;
            if due.is_empty() {
                break;
            }
            let n = due.len();
            let (applied, errors) = self.apply_pending(&due);
            report.applied += applied;
            report.failed += n - applied;
            report.errors.extend(errors.iter().map(ToString::to_string));
            // Failed ones were postponed past `now`; with `all` they would come
            // back at once, so a pass tries each effect once.
            if applied < n || (n as u32) < RECONCILE_BATCH {
                break;
            }
        }
        if all {
            match self.sweep_cloud() {
                Ok(n) => report.cloud_orphans_removed = n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for AWS resources without a device");
                    report.errors.push(e.to_string());
                }
            }
        }
        Ok(report)
    }

    /// How many effects wait, and since when (for metrics and `reconcile`).
    pub fn pending_effects(&self) -> Result<(i64, Option<DateTime<Utc>>), CoreError> {
        Ok(self.store().read(|tx| tx.pending_effects_summary())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::seconds(5));
        assert_eq!(backoff(1), Duration::seconds(10));
        assert_eq!(backoff(3), Duration::seconds(40));
        assert_eq!(backoff(50), Duration::seconds(MAX_BACKOFF_SECONDS));
        assert_eq!(backoff(-1), Duration::seconds(5));
    }
}
