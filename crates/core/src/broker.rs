//! The broker as settings choose it (`broker.kind`), the grants the registry
//! implies, `acl sync`, and activation from status messages.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use onboard_broker::{
    AclPatterns, DynsecConfig, FileConfig, MosquittoDynsec, MosquittoFile, MqttEndpoint, Reload,
    StatusConfig,
};
use onboard_domain::{
    AuditOutcome, AuditRepository, BrokerAccess, BrokerGrant, CredentialKind, DeviceFilter,
    DeviceId, DeviceModelRepository, DeviceRepository, DeviceStatus, DeviceUpdate,
    MqttCredentialRepository, NoBroker, PageRequest, PortError, RepoError, SecretString, Store,
};
use onboard_registry::Database;
use serde_json::json;

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::provision::{grant_of, mqtt_info};
use crate::settings::{BrokerKind, BrokerSettings, Settings};

/// Every grant the registry implies: devices that are registered or active, with
/// their model's topics and their rotation topic. The source of truth the broker files are written from.
pub fn grants_from_registry(
    db: &Database,
    settings: &Settings,
) -> Result<Vec<BrokerGrant>, RepoError> {
    Ok(registry_grants(db, settings, None)?.0)
}

/// As [`grants_from_registry`], leaving out (and counting) the grants `covered`
/// patterns give exactly: the file broker's pattern mode never names them, and
/// a fleet of them is not read into memory. Page by page, so the left-out
/// grants are never all held at once.
pub(crate) fn registry_grants(
    db: &Database,
    settings: &Settings,
    covered: Option<&AclPatterns>,
) -> Result<(Vec<BrokerGrant>, usize), RepoError> {
    let mut skipped = 0;
    let grants = db.read(|tx| {
        let models: HashMap<_, _> = tx
            .list_models()?
            .into_iter()
            .map(|m| (m.code.clone(), m))
            .collect();
        let passwords: HashMap<DeviceId, String> = tx
            .mqtt_credentials()?
            .into_iter()
            .map(|c| (c.device_id, c.password_hash))
            .collect();
        let mut grants = Vec::new();
        each_device(
            tx,
            &[DeviceStatus::Registered, DeviceStatus::Active],
            |device| {
                let model = device.model.as_ref().and_then(|c| models.get(c));
                let password = match device.credential {
                    CredentialKind::Password => passwords.get(&device.id).cloned(),
                    CredentialKind::Certificate => None,
                };
                let grant = grant_of(device, &mqtt_info(settings, model, device), password);
                if covered.is_some_and(|p| p.covers(&grant)) {
                    skipped += 1;
                } else {
                    grants.push(grant);
                }
            },
        )?;
        Ok::<_, RepoError>(grants)
    })?;
    Ok((grants, skipped))
}

/// The patterns when the broker is the file backend in pattern mode.
fn file_patterns(settings: &Settings) -> Result<Option<AclPatterns>, CoreError> {
    let b = &settings.broker;
    if b.kind == BrokerKind::MosquittoFile && b.acl_patterns {
        Ok(Some(acl_patterns(settings)?))
    } else {
        Ok(None)
    }
}

/// Pattern mode: the client ids of every device that lost its broker access
/// (revoked or decommissioned). A device row is never deleted, so the list is
/// complete; a revoked device never gets access again.
pub fn shut_out_from_registry(db: &Database) -> Result<Vec<String>, RepoError> {
    db.read(|tx| {
        let mut out = Vec::new();
        each_device(
            tx,
            &[DeviceStatus::Revoked, DeviceStatus::Decommissioned],
            |d| out.push(d.id.to_string()),
        )?;
        Ok(out)
    })
}

/// Hands `f` every device with one of `statuses`, a page at a time.
fn each_device<T: DeviceRepository>(
    tx: &mut T,
    statuses: &[DeviceStatus],
    mut f: impl FnMut(&onboard_domain::Device),
) -> Result<(), RepoError> {
    for status in statuses {
        let filter = DeviceFilter {
            status: Some(*status),
            ..DeviceFilter::default()
        };
        let mut page = PageRequest::first(onboard_domain::MAX_PAGE_SIZE)
            .map_err(|e| RepoError::Database(e.to_string()))?;
        loop {
            let found = tx.list_devices(&filter, &page)?;
            found.items.iter().for_each(&mut f);
            match found.next_cursor {
                Some(c) => {
                    page = PageRequest::new(onboard_domain::MAX_PAGE_SIZE, Some(c))
                        .map_err(|e| RepoError::Database(e.to_string()))?
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// The patterns of pattern mode: exactly the grant of a device without a model's
/// topics (`DEFAULT_TOPIC` both ways and its rotation topic, read), with `%u` for
/// the client id, which is the device id.
pub(crate) fn acl_patterns(settings: &Settings) -> Result<AclPatterns, CoreError> {
    let own = crate::register::DEFAULT_TOPIC.replace("{device_id}", "%u");
    let rotation = onboard_rotation::notification_topic(&settings.rotation.topic_prefix, "%u");
    AclPatterns::new(std::slice::from_ref(&own), &[own.clone(), rotation])
        .map_err(|e| CoreError::Setup(format!("broker.acl_patterns: {e}")))
}

/// The current grant of each of `devices`: `None` for a device that may not use
/// the broker (not registered or active, or gone). One read transaction.
pub fn grants_of_devices(
    db: &Database,
    settings: &Settings,
    devices: &[DeviceId],
) -> Result<Vec<(DeviceId, Option<BrokerGrant>)>, RepoError> {
    db.read(|tx| {
        let mut models: HashMap<onboard_domain::ModelCode, Option<onboard_domain::DeviceModel>> =
            HashMap::new();
        let mut out = Vec::with_capacity(devices.len());
        for id in devices {
            let device = match tx.device(*id) {
                Ok(d) => d,
                Err(RepoError::NotFound { .. }) => {
                    out.push((*id, None));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !matches!(
                device.status,
                DeviceStatus::Registered | DeviceStatus::Active
            ) {
                out.push((*id, None));
                continue;
            }
            let model = match &device.model {
                Some(code) => match models.get(code) {
                    Some(m) => m.clone(),
                    None => {
                        let m = match tx.model(code) {
                            Ok(m) => Some(m),
                            Err(RepoError::NotFound { .. }) => None,
                            Err(e) => return Err(e),
                        };
                        models.insert(code.clone(), m.clone());
                        m
                    }
                },
                None => None,
            };
            let password = match device.credential {
                CredentialKind::Password => tx.mqtt_credential(*id)?.map(|c| c.password_hash),
                CredentialKind::Certificate => None,
            };
            let mqtt = mqtt_info(settings, model.as_ref(), &device);
            out.push((*id, Some(grant_of(&device, &mqtt, password))));
        }
        Ok(out)
    })
}

fn read(path: &str, setting: &str) -> Result<String, CoreError> {
    std::fs::read_to_string(path)
        .map_err(|e| CoreError::Setup(format!("cannot read {setting} {path}: {}", e.kind())))
}

/// Onboard's own connection to the broker (`broker.mqtt_url` and its credentials).
pub fn service_endpoint(b: &BrokerSettings) -> Result<MqttEndpoint, CoreError> {
    let mut e = MqttEndpoint::from_url(&b.mqtt_url, b.service_client_id.clone())
        .map_err(|e| CoreError::Setup(format!("broker.mqtt_url: {e}")))?;
    if !b.ca_file.is_empty() {
        e.ca_pem = Some(read(&b.ca_file, "broker.ca_file")?);
    }
    if !b.client_cert_file.is_empty() {
        e.client_cert = Some((
            read(&b.client_cert_file, "broker.client_cert_file")?,
            SecretString::new(read(&b.client_key_file, "broker.client_key_file")?),
        ));
    }
    if !b.username.is_empty() {
        e.credentials = Some((b.username.clone(), SecretString::new(b.password.expose())));
    }
    Ok(e)
}

fn reload(b: &BrokerSettings) -> Reload {
    if b.reload_pid_file.is_empty() {
        Reload::None
    } else {
        Reload::Signal {
            pid_file: b.reload_pid_file.clone().into(),
        }
    }
}

fn optional(path: &str) -> Option<std::path::PathBuf> {
    (!path.is_empty()).then(|| path.into())
}

/// The ACL file's block for Onboard's service account (`broker.service_client_id`):
/// it reads `broker.status_topic` and writes every device's rotation topic.
pub(crate) fn service_acl(settings: &Settings) -> String {
    let b = &settings.broker;
    format!(
        "user {}\ntopic read {}\ntopic write {}\n",
        b.service_client_id,
        b.status_topic,
        onboard_rotation::notification_filter(&settings.rotation.topic_prefix)
    )
}

/// The broker integration `broker.kind` names.
pub(crate) fn broker_for(
    settings: &Settings,
    db: &Database,
) -> Result<Arc<dyn BrokerAccess>, CoreError> {
    let b = &settings.broker;
    Ok(match b.kind {
        BrokerKind::None => Arc::new(NoBroker),
        BrokerKind::MosquittoFile => {
            // The files (and their directory) appear with the first change.
            let mut config = FileConfig::new(&b.acl_file, "");
            config.reload = reload(b);
            config.password_file = optional(&b.password_file);
            config.crl_file = optional(&b.crl_file);
            // Onboard's own client reads the status topic (activation) and
            // publishes the rotation notifications.
            config.acl_preamble = service_acl(settings);
            let db3 = db.clone();
            let (db, all) = (db.clone(), settings.clone());
            let (db2, all2) = (db.clone(), settings.clone());
            // In pattern mode the grants the patterns cover are left out: the
            // file never names them (see `MosquittoFile::with_patterns`).
            let patterns = file_patterns(settings)?;
            let loader = Arc::new(move || {
                registry_grants(&db, &all, patterns.as_ref())
                    .map(|(grants, _)| grants)
                    .map_err(|e| PortError::Unavailable(e.to_string()))
            });
            // Rewrites read only the devices that changed (the fleet is held in
            // memory between them).
            let devices: onboard_broker::DeviceGrantLoader = Arc::new(move |ids: &[DeviceId]| {
                grants_of_devices(&db2, &all2, ids)
                    .map_err(|e| PortError::Unavailable(e.to_string()))
            });
            let file = MosquittoFile::new(config, loader).with_device_loader(devices);
            if b.acl_patterns {
                let shut_out: onboard_broker::ShutOutLoader = Arc::new(move || {
                    shut_out_from_registry(&db3).map_err(|e| PortError::Unavailable(e.to_string()))
                });
                Arc::new(file.with_patterns(acl_patterns(settings)?, shut_out))
            } else {
                Arc::new(file)
            }
        }
        BrokerKind::MosquittoDynsec => {
            let mut config = DynsecConfig::new(service_endpoint(b)?);
            config.crl_file = optional(&b.crl_file);
            config.reload = reload(b);
            Arc::new(MosquittoDynsec::new(config))
        }
    })
}

/// The status listener's configuration, when a service connection is set.
pub fn status_config(settings: &Settings) -> Result<Option<StatusConfig>, CoreError> {
    let b = &settings.broker;
    if b.mqtt_url.is_empty() {
        return Ok(None);
    }
    let mut config = StatusConfig::new(service_endpoint(b)?);
    config.topic_filter = b.status_topic.clone();
    Ok(Some(config))
}

/// What `acl sync` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSync {
    pub granted: usize,
    pub crl_number: i64,
}

impl Onboard {
    /// Rebuilds the broker's state from the registry (repairs drift): exactly the
    /// registered and active devices get access, and the current CRL is installed.
    /// With `broker.kind = "none"` nothing is written and the devices are only
    /// counted: the fleet is not read into memory.
    pub fn acl_sync(&self) -> Result<AclSync, CoreError> {
        let granted = if self.settings().broker.kind == BrokerKind::None {
            self.store()
                .read(|tx| tx.count_devices_by_status())?
                .into_iter()
                .filter(|(status, _)| {
                    [DeviceStatus::Registered, DeviceStatus::Active]
                        .iter()
                        .any(|s| s.as_str() == status)
                })
                .map(|(_, n)| usize::try_from(n).unwrap_or(0))
                .sum()
        } else {
            let patterns = file_patterns(self.settings())?;
            let (grants, covered) =
                registry_grants(self.store(), self.settings(), patterns.as_ref())?;
            let broker = &self.ports().broker;
            let unavailable = |e: PortError| CoreError::Unavailable(format!("broker: {e}"));
            broker.sync(&grants).map_err(unavailable)?;
            // A device revoked between the read above and the write: its own
            // rewrite may have run before this one, which then wrote its old
            // grant back. Read again and take those away.
            let (after, _) = registry_grants(self.store(), self.settings(), patterns.as_ref())?;
            let still: std::collections::HashSet<DeviceId> =
                after.iter().map(|g| g.device_id).collect();
            for g in grants.iter().filter(|g| !still.contains(&g.device_id)) {
                broker.revoke(g.device_id).map_err(unavailable)?;
            }
            grants.len() + covered
        };
        let crl = self.current_crl()?;
        self.install_crl(&crl)?;
        Ok(AclSync {
            granted,
            crl_number: crl.number,
        })
    }

    /// Devices seen on the status topic: the first message marks a registered
    /// device active; every message updates `last_seen_at`. One transaction for the
    /// batch; unknown, revoked and decommissioned client ids are ignored. Returns
    /// how many devices were activated.
    pub fn record_activity(&self, seen: &[(String, DateTime<Utc>)]) -> Result<usize, CoreError> {
        let mut latest: HashMap<DeviceId, DateTime<Utc>> = HashMap::new();
        for (client_id, at) in seen {
            if let Ok(id) = client_id.parse::<DeviceId>() {
                let e = latest.entry(id).or_insert(*at);
                *e = (*e).max(*at);
            }
        }
        let now = self.clock().now();
        self.store().transaction(|tx| -> Result<usize, CoreError> {
            let mut activated = 0;
            for (id, at) in &latest {
                let device = match tx.device(*id) {
                    Ok(d) => d,
                    Err(RepoError::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                let update = match device.status {
                    DeviceStatus::Registered => {
                        activated += 1;
                        let audit = Audit::new(
                            self.clock(),
                            &Actor::device(None),
                            "device.activate",
                            AuditOutcome::Success,
                        )
                        .device(*id)
                        .serial(device.serial.as_str())
                        .details(json!({"via": "mqtt"}));
                        tx.append_audit(audit.event())?;
                        DeviceUpdate {
                            status: Some(DeviceStatus::Active),
                            activated_at: Some(*at),
                            last_seen_at: Some(*at),
                            ..DeviceUpdate::default()
                        }
                    }
                    DeviceStatus::Active => DeviceUpdate {
                        last_seen_at: Some(*at),
                        ..DeviceUpdate::default()
                    },
                    DeviceStatus::Revoked | DeviceStatus::Decommissioned => continue,
                };
                tx.update_device(*id, &update, now)?;
            }
            Ok(activated)
        })
    }
}

/// Devices still `registered` long after registering.
#[derive(Debug, Clone)]
pub struct Unactivated {
    pub devices: Vec<onboard_domain::Device>,
    /// Those revoked now because they passed `activation.revoke_after_hours`.
    pub revoked: Vec<DeviceId>,
}

impl Onboard {
    /// Devices registered more than `activation.report_after_hours` ago that never
    /// reported in; with `revoke` and `activation.revoke_after_hours` set, those
    /// past that age are revoked (privilegeWithdrawn), as a rollback of credentials
    /// nobody took up.
    pub fn unactivated_devices(&self, revoke: bool) -> Result<Unactivated, CoreError> {
        let mut devices = Vec::new();
        let revoked = self.walk_unactivated(revoke, |d| devices.push(d))?;
        Ok(Unactivated { devices, revoked })
    }

    /// As [`Onboard::unactivated_devices`] with `revoke`, for the server's
    /// periodic check: the devices are counted page by page, not held (a fleet
    /// imported long before it is switched on may be most of the registry).
    /// Returns how many there are and the ids revoked.
    pub fn sweep_unactivated(&self) -> Result<(usize, Vec<DeviceId>), CoreError> {
        let mut count = 0;
        let revoked = self.walk_unactivated(true, |_| count += 1)?;
        Ok((count, revoked))
    }

    /// Hands `found` each unactivated device past `activation.report_after_hours`
    /// and, with `revoke`, revokes those past `activation.revoke_after_hours`
    /// (after the walk) and returns their ids.
    fn walk_unactivated(
        &self,
        revoke: bool,
        mut found: impl FnMut(onboard_domain::Device),
    ) -> Result<Vec<DeviceId>, CoreError> {
        let a = &self.settings().activation;
        if a.report_after_hours == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock().now();
        let report_before = now - chrono::Duration::hours(i64::from(a.report_after_hours));
        let revoke_before = (revoke && a.revoke_after_hours > 0)
            .then(|| now - chrono::Duration::hours(i64::from(a.revoke_after_hours)));
        let filter = DeviceFilter {
            status: Some(DeviceStatus::Registered),
            ..DeviceFilter::default()
        };
        let mut to_revoke = Vec::new();
        let mut page = PageRequest::first(onboard_domain::MAX_PAGE_SIZE)?;
        loop {
            let found_page = self.store().read(|tx| tx.list_devices(&filter, &page))?;
            for d in found_page.items {
                if d.created_at > report_before {
                    continue;
                }
                if revoke_before.is_some_and(|before| d.created_at <= before) {
                    to_revoke.push(d.id);
                }
                found(d);
            }
            match found_page.next_cursor {
                Some(c) => page = PageRequest::new(onboard_domain::MAX_PAGE_SIZE, Some(c))?,
                None => break,
            }
        }
        let system = Actor {
            name: "system".into(),
            remote_addr: None,
        };
        for id in &to_revoke {
            self.revoke_device(
                &system,
                *id,
                onboard_domain::RevocationReason::PrivilegeWithdrawn,
            )?;
        }
        Ok(to_revoke)
    }
}
