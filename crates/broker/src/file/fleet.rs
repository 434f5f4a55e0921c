//! The grants last written to the files, held in memory for incremental
//! rewrites, and the check that keeps bad registry rows out of the files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use onboard_domain::{BrokerGrant, DeviceId};

use crate::acl::AclPatterns;
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
/// rendered ACL block: empty when the patterns give exactly these topics.
#[derive(Debug)]
struct ClientBlock {
    grants: Vec<BrokerGrant>,
    text: String,
}

impl ClientBlock {
    fn new(grants: Vec<BrokerGrant>, patterns: Option<&AclPatterns>) -> Self {
        let mut block = Self {
            grants,
            text: String::new(),
        };
        block.render(patterns);
        block
    }

    fn render(&mut self, patterns: Option<&AclPatterns>) {
        let covered = match (patterns, self.grants.first()) {
            (Some(p), Some(first)) => p.cover(&first.client_id, &acl::topics(&self.grants)),
            _ => false,
        };
        self.text = if covered {
            String::new()
        } else {
            acl::block(&self.grants)
        };
    }
}

/// The grants last written, for incremental rewrites.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    /// Client id of every granted device (the same allocation as its block's key).
    devices: HashMap<DeviceId, Arc<str>>,
    /// Client ids with grants the file names (a block; empty text when the
    /// patterns happen to give exactly their topics).
    blocks: BTreeMap<Arc<str>, ClientBlock>,
    /// Pattern mode: how many devices hold each client id with a grant the
    /// patterns give exactly and no password. Such a grant is kept only here (a
    /// fleet of them costs a few dozen bytes a device): the file never names it.
    covered: HashMap<Arc<str>, u32>,
    /// Pattern mode: the topics every client id holds without a block.
    patterns: Option<AclPatterns>,
    /// Pattern mode: client ids of devices that lost their access and hold no
    /// other device's grant; each gets a block that denies everything.
    shut_out: BTreeSet<Arc<str>>,
    /// Counts the changes of the ACL file's text.
    revision: u64,
    /// The password file's text last written.
    pub(super) passwords: Option<String>,
    /// Counts the changes of grants with a password, and its value when
    /// `passwords` was last set: the password file is rendered again only after
    /// such a change, not on every rewrite (most devices have none).
    password_revision: u64,
    written_password_revision: Option<u64>,
    /// The ACL file as this instance left it; `None`: read the whole fleet next.
    pub(super) written: Option<FileId>,
    /// [`Fleet::revision`] when the ACL file was last written.
    written_revision: Option<u64>,
}

impl Fleet {
    pub(super) fn new(patterns: Option<AclPatterns>) -> Self {
        Self {
            patterns,
            ..Self::default()
        }
    }

    /// Pattern mode: the patterns give `grant` (checked) exactly its topics and
    /// nothing in the file names its client id (no block, not shut out), so a new
    /// device with it needs no change of the file.
    pub(super) fn covers_new(&self, grant: &BrokerGrant) -> bool {
        let Some(patterns) = &self.patterns else {
            return false;
        };
        !self.blocks.contains_key(grant.client_id.as_str())
            && !self.shut_out.contains(grant.client_id.as_str())
            && patterns.covers(grant)
    }

    /// Whether a grant here holds `client_id`.
    fn held(&self, client_id: &str) -> bool {
        self.blocks.contains_key(client_id) || self.covered.contains_key(client_id)
    }

    /// Whether this fleet holds the device.
    pub(super) fn knows(&self, id: DeviceId) -> bool {
        self.devices.contains_key(&id)
    }

    /// Pattern mode: shuts out each of `client_ids` that no grant here holds.
    pub(super) fn add_shut_out(&mut self, client_ids: Vec<String>) {
        if self.patterns.is_none() {
            return;
        }
        for c in client_ids {
            if self.held(&c)
                || self.shut_out.contains(c.as_str())
                || acl::check_client_id(&c).is_err()
            {
                continue;
            }
            self.shut_out.insert(Arc::from(c));
            self.revision += 1;
        }
    }

    /// Whether the ACL file's text is the one last written.
    pub(super) fn acl_unchanged(&self) -> bool {
        self.written_revision == Some(self.revision)
    }

    /// The password file last written (`passwords`) is this fleet's.
    pub(super) fn passwords_unchanged(&self) -> bool {
        self.passwords.is_some() && self.written_password_revision == Some(self.password_revision)
    }

    /// `text` is the password file on disk now.
    pub(super) fn set_passwords(&mut self, text: String) {
        self.passwords = Some(text);
        self.written_password_revision = Some(self.password_revision);
    }

    /// The ACL file now holds this fleet's text.
    pub(super) fn mark_written(&mut self) {
        self.written_revision = Some(self.revision);
    }

    /// Holds exactly `grants` (which passed [`usable`]), and in pattern mode
    /// shuts out `shut_out` (client ids) except those `grants` name; of two
    /// grants of one device the last wins, as with [`Fleet::insert`] one after
    /// the other.
    pub(super) fn replace_all(&mut self, mut grants: Vec<BrokerGrant>, shut_out: Vec<String>) {
        self.revision += 1;
        self.password_revision += 1;
        // Reversed, a stable sort puts each device's last grant first.
        grants.reverse();
        grants.sort_by_key(|g| g.device_id);
        grants.dedup_by_key(|g| g.device_id);
        let mut devices = HashMap::with_capacity(grants.len());
        let mut covered: HashMap<Arc<str>, u32> = HashMap::new();
        if let Some(patterns) = &self.patterns {
            grants.retain(|g| {
                if !patterns.covers(g) {
                    return true;
                }
                let client_id = match covered.get_key_value(g.client_id.as_str()) {
                    Some((c, _)) => c.clone(),
                    None => Arc::from(g.client_id.as_str()),
                };
                *covered.entry(client_id.clone()).or_default() += 1;
                devices.insert(g.device_id, client_id);
                false
            });
        }
        grants.sort_unstable_by(|a, b| {
            (a.client_id.as_str(), a.device_id).cmp(&(b.client_id.as_str(), b.device_id))
        });
        let mut blocks = Vec::with_capacity(grants.len());
        let mut grants = grants.into_iter().peekable();
        while let Some(first) = grants.next() {
            let client_id: Arc<str> = match covered.get_key_value(first.client_id.as_str()) {
                Some((c, _)) => c.clone(),
                None => Arc::from(first.client_id.as_str()),
            };
            let mut group = vec![first];
            while let Some(next) = grants.next_if(|g| *g.client_id == *client_id) {
                group.push(next);
            }
            for g in &group {
                devices.insert(g.device_id, client_id.clone());
            }
            blocks.push((client_id, ClientBlock::new(group, self.patterns.as_ref())));
        }
        self.devices = devices;
        self.covered = covered;
        // Already sorted by client id: built in one pass.
        self.blocks = blocks.into_iter().collect();
        self.shut_out = match self.patterns {
            Some(_) => shut_out
                .into_iter()
                .filter(|c| !self.held(c) && acl::check_client_id(c).is_ok())
                .map(Arc::from)
                .collect(),
            None => BTreeSet::new(),
        };
    }

    /// The device no longer has access. In pattern mode its client id is shut
    /// out unless another device's grant holds it.
    pub(super) fn remove(&mut self, id: DeviceId) {
        self.take(id, true);
    }

    /// The device's grant is no longer written (it cannot be), but the device
    /// did not lose its access: not shut out.
    pub(super) fn forget(&mut self, id: DeviceId) {
        self.take(id, false);
    }

    fn take(&mut self, id: DeviceId, shut_out: bool) {
        let Some(client_id) = self.devices.remove(&id) else {
            return;
        };
        let in_block = self
            .blocks
            .get(&client_id)
            .is_some_and(|b| b.grants.iter().any(|g| g.device_id == id));
        if !in_block {
            // A covered grant: the file named it nowhere.
            if let Some(n) = self.covered.get_mut(&client_id) {
                *n -= 1;
                if *n == 0 {
                    self.covered.remove(&client_id);
                }
            }
            if shut_out && self.patterns.is_some() && !self.held(&client_id) {
                self.shut_out.insert(client_id);
                self.revision += 1;
            }
            return;
        }
        let Some(block) = self.blocks.get_mut(&client_id) else {
            return;
        };
        let before = std::mem::take(&mut block.text);
        if block
            .grants
            .iter()
            .any(|g| g.device_id == id && g.password_hash.is_some())
        {
            self.password_revision += 1;
        }
        block.grants.retain(|g| g.device_id != id);
        if block.grants.is_empty() {
            self.blocks.remove(&client_id);
            if shut_out && self.patterns.is_some() && !self.held(&client_id) {
                self.shut_out.insert(client_id);
                self.revision += 1;
            } else if !before.is_empty() {
                self.revision += 1;
            }
        } else {
            block.render(self.patterns.as_ref());
            if block.text != before {
                self.revision += 1;
            }
        }
    }

    /// A grant that passed [`usable`].
    pub(super) fn insert(&mut self, grant: BrokerGrant) {
        // Its old place loses it; a grant that moves to another client id does
        // not shut the old one out (the device goes on).
        self.take(grant.device_id, false);
        if self.shut_out.remove(grant.client_id.as_str()) {
            self.revision += 1;
        }
        let device_id = grant.device_id;
        if grant.password_hash.is_some() {
            self.password_revision += 1;
        }
        let known = self
            .blocks
            .get_key_value(grant.client_id.as_str())
            .map(|(c, _)| c)
            .or_else(|| {
                self.covered
                    .get_key_value(grant.client_id.as_str())
                    .map(|(c, _)| c)
            });
        let client_id = match known {
            Some(c) => c.clone(),
            None => Arc::from(grant.client_id.as_str()),
        };
        if self.patterns.as_ref().is_some_and(|p| p.covers(&grant)) {
            *self.covered.entry(client_id.clone()).or_default() += 1;
            self.devices.insert(device_id, client_id);
            return;
        }
        let patterns = self.patterns.as_ref();
        let changed = match self.blocks.get_mut(&client_id) {
            Some(block) => {
                let before = std::mem::take(&mut block.text);
                let at = block.grants.partition_point(|g| g.device_id < device_id);
                block.grants.insert(at, grant);
                block.render(patterns);
                block.text != before
            }
            None => {
                let block = ClientBlock::new(vec![grant], patterns);
                let changed = !block.text.is_empty();
                self.blocks.insert(client_id.clone(), block);
                changed
            }
        };
        if changed {
            self.revision += 1;
        }
        self.devices.insert(device_id, client_id);
    }

    pub(super) fn acl(&self, preamble: &str) -> String {
        let mut out = acl::header(preamble);
        if let Some(p) = &self.patterns {
            out.push_str(&p.lines());
        }
        out.reserve(self.blocks.values().map(|b| b.text.len()).sum());
        for block in self.blocks.values() {
            out.push_str(&block.text);
        }
        for client_id in &self.shut_out {
            out.push_str(&acl::shut_out_block(client_id));
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
        let mut bulk = Fleet::new(None);
        bulk.replace_all(grants.clone(), Vec::new());
        let mut one_by_one = Fleet::new(None);
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
