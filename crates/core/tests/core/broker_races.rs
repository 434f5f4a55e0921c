//! The broker port where the real adapters cannot be stopped at the right
//! moment: a recording broker that lists the calls Onboard makes, and can run
//! something in the middle of `sync`.

use std::sync::{Arc, Mutex};

use onboard_core::domain::*;
use onboard_core::{Actor, Onboard, Ports};
use onboard_registry::testing::TestBackend;

use super::fixture;
use super::register::{batch, request};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<String>>,
    /// What `enforces_new_device` answers.
    enforces: bool,
    /// Runs once, at the start of the first `sync`.
    during_sync: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl Recording {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl BrokerAccess for Recording {
    fn grant(&self, g: &BrokerGrant) -> Result<(), PortError> {
        self.push(format!("grant {}", g.device_id));
        Ok(())
    }
    fn revoke(&self, device: DeviceId) -> Result<(), PortError> {
        self.push(format!("revoke {device}"));
        Ok(())
    }
    fn sync(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        let hook = self.during_sync.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.push(format!("sync {}", grants.len()));
        Ok(())
    }
    fn publish_crl(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    fn enforces_new_device(&self, _: &BrokerGrant) -> bool {
        self.enforces
    }
}

fn recording(onboard: &Onboard, broker: &Arc<Recording>) -> Onboard {
    onboard.clone().with_ports(Ports {
        broker: broker.clone(),
        ..Ports::default()
    })
}

/// A device revoked after `acl sync` read the registry and before it wrote:
/// the sync writes the device's old grant, then takes it away again.
pub fn a_device_revoked_while_acl_sync_writes_loses_its_grant(backend: TestBackend) {
    let f = fixture(backend, |s| s.broker.acl_patterns = false);
    let key = batch(&f, 2);
    let d = f
        .onboard
        .register(request(&key, "SN-race-1", None))
        .unwrap();
    let keep = f
        .onboard
        .register(request(&key, "SN-race-2", None))
        .unwrap();
    let broker = Arc::new(Recording::default());
    let revoker = f.onboard.clone();
    let id = d.device.id;
    *broker.during_sync.lock().unwrap() = Some(Box::new(move || {
        revoker
            .revoke_device(&Actor::cli(), id, RevocationReason::KeyCompromise)
            .unwrap();
    }));
    let synced = recording(&f.onboard, &broker).acl_sync().unwrap();
    assert_eq!(synced.granted, 2, "both were granted when it read");
    let calls = broker.calls();
    let sync_at = calls.iter().position(|c| c == "sync 2").expect("synced");
    let revoke_at = calls
        .iter()
        .position(|c| *c == format!("revoke {id}"))
        .unwrap_or_else(|| panic!("{id} was not revoked: {calls:?}"));
    assert!(sync_at < revoke_at, "{calls:?}");
    assert!(
        !calls.contains(&format!("revoke {}", keep.device.id)),
        "{calls:?}"
    );
}

/// Where the broker already enforces a new device's grant, a device without a
/// model records no broker effect (no call after the commit); a device with a
/// model always does, since its topics were read before the transaction.
pub fn only_a_device_without_a_model_skips_its_broker_effect(backend: TestBackend) {
    let f = fixture(backend, |_| {});
    f.onboard
        .create_model(&Actor::cli(), "plainsensor", &Default::default())
        .unwrap();
    let broker = Arc::new(Recording {
        enforces: true,
        ..Recording::default()
    });
    let onboard = recording(&f.onboard, &broker);
    let key = batch(&f, 2);
    let plain = onboard.register(request(&key, "SN-plain", None)).unwrap();
    let mut with_model = request(&key, "SN-model", None);
    with_model.model = Some("plainsensor".into());
    let modelled = onboard.register(with_model).unwrap();
    let calls = broker.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.ends_with(&plain.device.id.to_string())),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("grant {}", modelled.device.id)),
        "{calls:?}"
    );
    assert_eq!(onboard.pending_effects().unwrap().0, 0);
}
