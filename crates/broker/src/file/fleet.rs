//! The grants last written to the files, held in memory for incremental
//! rewrites, and the check that keeps bad registry rows out of the files.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use onboard_domain::{BrokerGrant, DeviceId};

use crate::error::BrokerError;
use crate::{acl, passwd};

/// What identifies the file this instance wrote: another writer's file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_nsec: i64,
    mtime: i64,
}

pub(super) fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// One client id's grants (sorted by device id; nearly always one) and their
/// rendered ACL block.
#[derive(Debug)]
struct ClientBlock {
    grants: Vec<BrokerGrant>,
    text: String,
}

impl ClientBlock {
    fn new(grants: Vec<BrokerGrant>) -> Self {
        let text = acl::block(&grants);
        Self { grants, text }
    }
}

/// The grants last written, for incremental rewrites.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    /// Client id of every granted device (the same allocation as its block's key).
    devices: HashMap<DeviceId, Arc<str>>,
    blocks: BTreeMap<Arc<str>, ClientBlock>,
    /// The password file's text last written.
    pub(super) passwords: Option<String>,
    /// The ACL file as this instance left it; `None`: read the whole fleet next.
    pub(super) written: Option<FileId>,
}

impl Fleet {
    /// Holds exactly `grants` (which passed [`usable`]); of two grants of one
    /// device the last wins, as with [`Fleet::insert`] one after the other.
    pub(super) fn replace_all(&mut self, mut grants: Vec<BrokerGrant>) {
        // Reversed, a stable sort puts each device's last grant first.
        grants.reverse();
        grants.sort_by_key(|g| g.device_id);
        grants.dedup_by_key(|g| g.device_id);
        grants.sort_unstable_by(|a, b| {
            (a.client_id.as_str(), a.device_id).cmp(&(b.client_id.as_str(), b.device_id))
        });
        let mut devices = HashMap::with_capacity(grants.len());
        let mut blocks = Vec::with_capacity(grants.len());
        let mut grants = grants.into_iter().peekable();
        while let Some(first) = grants.next() {
            let client_id: Arc<str> = Arc::from(first.client_id.as_str());
            let mut group = vec![first];
            while let Some(next) = grants.next_if(|g| *g.client_id == *client_id) {
                group.push(next);
            }
            for g in &group {
                devices.insert(g.device_id, client_id.clone());
            }
            blocks.push((client_id, ClientBlock::new(group)));
        }
        self.devices = devices;
        // Already sorted by client id: built in one pass.
        self.blocks = blocks.into_iter().collect();
    }

    pub(super) fn remove(&mut self, id: DeviceId) {
        let Some(client_id) = self.devices.remove(&id) else {
            return;
        };
        if let Some(block) = self.blocks.get_mut(&client_id) {
            block.grants.retain(|g| g.device_id != id);
            if block.grants.is_empty() {
                self.blocks.remove(&client_id);
            } else {
                block.text = acl::block(&block.grants);
            }
        }
    }

    /// A grant that passed [`usable`].
    pub(super) fn insert(&mut self, grant: BrokerGrant) {
        self.remove(grant.device_id);
        match self.blocks.get_key_value(grant.client_id.as_str()) {
            Some((client_id, _)) => {
                let client_id = client_id.clone();
                self.devices.insert(grant.device_id, client_id.clone());
                if let Some(block) = self.blocks.get_mut(&client_id) {
                    let at = block
                        .grants
                        .partition_point(|g| g.device_id < grant.device_id);
                    block.grants.insert(at, grant);
                    block.text = acl::block(&block.grants);
                }
            }
            None => {
                let client_id: Arc<str> = Arc::from(grant.client_id.as_str());
                self.devices.insert(grant.device_id, client_id.clone());
                self.blocks.insert(client_id, ClientBlock::new(vec![grant]));
            }
        }
    }

    pub(super) fn acl(&self, preamble: &str) -> String {
        let mut out = acl::header(preamble);
        out.reserve(self.blocks.values().map(|b| b.text.len()).sum());
        for block in self.blocks.values() {
            out.push_str(&block.text);
        }
        out
    }

    /// The password file: `preamble`, then the grants that have a password hash.
    pub(super) fn passwords(&self, preamble: &str) -> Result<String, BrokerError> {
        let with_passwords: Vec<BrokerGrant> = self
            .blocks
            .values()
            .flat_map(|b| &b.grants)
            .filter(|g| g.password_hash.is_some())
            .cloned()
            .collect();
        passwd::render(preamble, &with_passwords)
    }
}

/// Drops what cannot be written (with a warning naming the device): one bad row in
/// the registry must not block every other device's change. Calls that take a
/// grant check it first and refuse it instead.
pub(super) fn usable(grants: Vec<BrokerGrant>) -> Vec<BrokerGrant> {
    grants
        .into_iter()
        .filter_map(|mut g| {
            if let Err(e) = acl::check_grant(&g) {
                tracing::warn!(device = %g.device_id, error = %e, "grant skipped");
                return None;
            }
            if let Some(hash) = &g.password_hash {
                if let Err(e) = passwd::check_password(&g.client_id, hash, &g) {
                    tracing::warn!(device = %g.device_id, error = %e, "password skipped");
                    g.password_hash = None;
                }
            }
            Some(g)
        })
        .collect()
}

pub(super) fn check(grant: &BrokerGrant) -> Result<(), BrokerError> {
    acl::check_grant(grant)?;
    match &grant.password_hash {
        Some(hash) => passwd::check_password(&grant.client_id, hash, grant),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::acl::tests::grant;

    #[test]
    fn replacing_all_holds_what_inserting_one_by_one_does() {
        // Every third device shares another's client id.
        let mut grants: Vec<BrokerGrant> = (0..40u32)
            .map(|n| {
                let mut g = grant(n);
                if n % 3 == 0 {
                    g.client_id = grant(n / 7).client_id;
                }
                g
            })
            .collect();
        // Two devices listed twice, one of them under another client id: the
        // last grant wins.
        let mut again = grant(5);
        again.publish = vec!["again".into()];
        grants.push(again);
        grants.push(grant(6));
        let mut bulk = Fleet::default();
        bulk.replace_all(grants.clone());
        let mut one_by_one = Fleet::default();
        for g in grants {
            one_by_one.insert(g);
        }
        assert_eq!(bulk.acl("user x"), one_by_one.acl("user x"));
        let text = bulk.acl("");
        assert!(text.contains("topic write again\n"), "{text}");
        assert!(text.contains(&format!("user {}\n", grant(6).client_id)));
        assert_eq!(bulk.devices.len(), 40);
        for n in 0..40 {
            bulk.remove(grant(n).device_id);
        }
        assert!(bulk.blocks.is_empty() && bulk.devices.is_empty());
    }
}
