//! The grants last written to the files, held in memory for incremental
//! rewrites, and the check that keeps bad registry rows out of the files.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

/// One client id's grants and their rendered ACL block.
#[derive(Debug)]
struct ClientBlock {
    grants: BTreeMap<DeviceId, BrokerGrant>,
    text: String,
}

/// The grants last written, for incremental rewrites.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    /// Client id of every granted device.
    devices: HashMap<DeviceId, String>,
    blocks: BTreeMap<String, ClientBlock>,
    /// The password file's text last written.
    pub(super) passwords: Option<String>,
    /// The ACL file as this instance left it; `None`: read the whole fleet next.
    pub(super) written: Option<FileId>,
}

impl Fleet {
    pub(super) fn replace_all(&mut self, grants: Vec<BrokerGrant>) {
        self.devices.clear();
        self.blocks.clear();
        for g in grants {
            self.insert(g);
        }
    }

    pub(super) fn remove(&mut self, id: DeviceId) {
        let Some(client_id) = self.devices.remove(&id) else {
            return;
        };
        if let Some(block) = self.blocks.get_mut(&client_id) {
            block.grants.remove(&id);
            if block.grants.is_empty() {
                self.blocks.remove(&client_id);
            } else {
                block.text = acl::block(&block.grants.values().collect::<Vec<_>>());
            }
        }
    }

    /// A grant that passed [`usable`].
    pub(super) fn insert(&mut self, grant: BrokerGrant) {
        self.remove(grant.device_id);
        self.devices
            .insert(grant.device_id, grant.client_id.clone());
        let block = self
            .blocks
            .entry(grant.client_id.clone())
            .or_insert_with(|| ClientBlock {
                grants: BTreeMap::new(),
                text: String::new(),
            });
        block.grants.insert(grant.device_id, grant);
        block.text = acl::block(&block.grants.values().collect::<Vec<_>>());
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
            .flat_map(|b| b.grants.values())
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
