//! Bulk operator registration (`onboardctl devices import`). Rows are checked one by
//! one (a bad row is reported and skipped), then provisioned in chunks: certificates
//! issued on every core, one transaction per chunk for the rows, one broker change
//! per chunk. A chunk that cannot be stored as a whole falls back to one device at a
//! time, so one bad row never costs its neighbours. Devices whose serial already
//! exists are skipped, so an import can be run again on the same file.

use std::collections::HashMap;

use onboard_domain::{
    new_id, AuditOutcome, AuditRepository, BrokerGrant, CertificateIssuer, CertificateRepository,
    CloudDevice, DeviceId, DeviceRepository, IssuedCert, NewDevice, SecretString, Store,
};
use serde_json::json;

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::operator::{NewDeviceRequest, OperatorRegistered};
use crate::provision::{grant_of, DeviceSpec, Provisioned, Trail};

/// Devices per transaction and broker change.
pub const IMPORT_CHUNK: usize = 250;

/// One row of an import, with its line number for messages.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub line: usize,
    pub request: NewDeviceRequest,
}

#[derive(Debug)]
pub enum ImportOutcome {
    Created(Box<OperatorRegistered>),
    /// A device with this serial exists already (an earlier run).
    Exists,
    Failed(String),
}

#[derive(Debug)]
pub struct ImportResult {
    pub line: usize,
    pub serial: Option<String>,
    pub outcome: ImportOutcome,
}

struct Pending {
    line: usize,
    spec: DeviceSpec,
    id: DeviceId,
}

impl Onboard {
    /// Imports `rows`; `progress` is called with the number of rows done so far.
    pub fn import_devices(
        &self,
        actor: &Actor,
        rows: &[ImportRow],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<ImportResult>, CoreError> {
        let mut results = Vec::with_capacity(rows.len());
        let mut pending = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for row in rows {
            match self.operator_spec(actor, &row.request) {
                Ok(spec) => {
                    let serial = spec.serial.to_string();
                    if let Some(first) = seen.insert(serial.clone(), row.line) {
                        results.push(failed(
                            row.line,
                            Some(serial),
                            format!("serial repeats line {first}"),
                        ));
                    } else {
                        let id = spec
                            .device_id
                            .unwrap_or_else(|| DeviceId(new_id(self.clock())));
                        pending.push(Pending {
                            line: row.line,
                            id,
                            spec,
                        });
                    }
                }
                Err(e) => results.push(failed(row.line, None, e.to_string())),
            }
        }
        let mut done = results.len();
        progress(done);
        let issuer = self.issuer()?;
        for chunk in pending.chunks(IMPORT_CHUNK) {
            let n = chunk.len();
            results.extend(self.import_chunk(issuer.as_ref(), chunk)?);
            done += n;
            progress(done);
        }
        results.sort_by_key(|r| r.line);
        Ok(results)
    }

    fn import_chunk(
        &self,
        issuer: &dyn CertificateIssuer,
        chunk: &[Pending],
    ) -> Result<Vec<ImportResult>, CoreError> {
        let mut results = Vec::new();
        // Skip what an earlier run created.
        let existing: Vec<bool> = self.store().read(|tx| -> Result<_, CoreError> {
            chunk
                .iter()
                .map(|p| Ok(tx.device_by_serial(&p.spec.serial)?.is_some()))
                .collect()
        })?;
        let fresh: Vec<&Pending> = chunk
            .iter()
            .zip(&existing)
            .filter_map(|(p, exists)| {
                if *exists {
                    results.push(ImportResult {
                        line: p.line,
                        serial: Some(p.spec.serial.to_string()),
                        outcome: ImportOutcome::Exists,
                    });
                    None
                } else {
                    Some(p)
                }
            })
            .collect();

        let issued = issue_all(issuer, &fresh, self.clock().now());
        let mut ready = Vec::new();
        for (p, cert) in fresh.into_iter().zip(issued) {
            match cert {
                Ok(c) => ready.push((p, c)),
                Err(e) => results.push(failed(p.line, Some(p.spec.serial.to_string()), e)),
            }
        }
        if ready.is_empty() {
            return Ok(results);
        }
        match self.store_chunk(&ready) {
            Ok(provisioned) => {
                let grants: Vec<BrokerGrant> = provisioned
                    .iter()
                    .map(|(_, done)| grant_of(&done.device, &done.mqtt))
                    .collect();
                if let Err(e) = self.ports().broker.grant_many(&grants) {
                    self.undo_chunk(provisioned.iter().map(|(_, d)| d.device.id));
                    for (p, _) in &ready {
                        results.push(failed(
                            p.line,
                            Some(p.spec.serial.to_string()),
                            format!("broker: {e}"),
                        ));
                    }
                    return Ok(results);
                }
                let mut bundled = Vec::new();
                for (p, done) in provisioned {
                    match self.register_in_cloud(&done) {
                        Ok(()) => bundled.push((p, done)),
                        Err(e) => results.push(failed(p.line, Some(p.spec.serial.to_string()), e)),
                    }
                }
                results.extend(self.bundle_all(bundled));
            }
            // The chunk as a whole failed (a serial taken meanwhile, say): one by one.
            Err(e) => {
                tracing::warn!(error = %e, "an import chunk failed as a whole; retrying its rows one by one");
                for (p, _) in ready {
                    let mut trail = Trail::default();
                    let outcome = self
                        .provision(&p.spec, &mut trail, &mut Vec::new())
                        .and_then(|done| self.bundle(done));
                    results.push(match outcome {
                        Ok(r) => ImportResult {
                            line: p.line,
                            serial: Some(p.spec.serial.to_string()),
                            outcome: ImportOutcome::Created(Box::new(r)),
                        },
                        Err(CoreError::Conflict(_)) => ImportResult {
                            line: p.line,
                            serial: Some(p.spec.serial.to_string()),
                            outcome: ImportOutcome::Exists,
                        },
                        Err(e) => failed(p.line, Some(p.spec.serial.to_string()), e.to_string()),
                    });
                }
            }
        }
        Ok(results)
    }

    /// The cloud step for one stored, granted device; undone on failure.
    fn register_in_cloud(&self, done: &Provisioned) -> Result<(), String> {
        let cloud = CloudDevice {
            device_id: done.device.id,
            serial: done.device.serial.clone(),
            certificate_pem: done.certificate.pem.clone(),
        };
        self.ports().cloud.register(&cloud).map_err(|e| {
            let _ = self.ports().broker.revoke(done.device.id);
            self.undo_chunk([done.device.id]);
            format!("cloud: {e}")
        })
    }

    /// Builds the bundles on every core: each one derives a WinZip AES key per entry
    /// (PBKDF2, 1,000 rounds), which is most of an import's CPU time.
    fn bundle_all(&self, provisioned: Vec<(&Pending, Provisioned)>) -> Vec<ImportResult> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        let per = provisioned.len().div_ceil(workers).max(1);
        let mut parts: Vec<Vec<(&Pending, Provisioned)>> = Vec::new();
        let mut items = provisioned.into_iter().peekable();
        while items.peek().is_some() {
            parts.push(items.by_ref().take(per).collect());
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    let lines: Vec<(usize, String)> = part
                        .iter()
                        .map(|(p, _)| (p.line, p.spec.serial.to_string()))
                        .collect();
                    let handle = s.spawn(move || {
                        part.into_iter()
                            .map(|(p, done)| {
                                let serial = Some(p.spec.serial.to_string());
                                let id = done.device.id;
                                match self.bundle(done) {
                                    Ok(r) => ImportResult {
                                        line: p.line,
                                        serial,
                                        outcome: ImportOutcome::Created(Box::new(r)),
                                    },
                                    Err(e) => {
                                        // A device without its bundle is unusable: undo it.
                                        let _ = self.ports().broker.revoke(id);
                                        self.undo_chunk([id]);
                                        failed(p.line, serial, e.to_string())
                                    }
                                }
                            })
                            .collect::<Vec<_>>()
                    });
                    (lines, handle)
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|(lines, h)| {
                    h.join().unwrap_or_else(|_| {
                        lines
                            .into_iter()
                            .map(|(line, serial)| {
                                failed(line, Some(serial), "bundle: a worker failed".into())
                            })
                            .collect()
                    })
                })
                .collect()
        })
    }

    /// Devices, certificates and audit events of a chunk in one transaction.
    fn store_chunk<'a>(
        &self,
        ready: &[(&'a Pending, (IssuedCert, SecretString))],
    ) -> Result<Vec<(&'a Pending, Provisioned)>, CoreError> {
        let now = self.clock().now();
        let chain = self.issuer()?.ca_chain_pem();
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let mut out = Vec::with_capacity(ready.len());
            for (p, (issued, key)) in ready {
                let s = &p.spec;
                let device = tx.insert_device(&NewDevice {
                    id: p.id,
                    serial: s.serial.clone(),
                    name: s.name.clone(),
                    model: s.model_code.clone(),
                    location: s.location.clone(),
                    firmware_version: s.firmware_version.clone(),
                    bootstrap_key_id: None,
                    batch: None,
                    config: s.config.clone(),
                    metadata: s.metadata.clone(),
                    created_at: now,
                })?;
                let certificate = tx.insert_certificate(&self.certificate_row(p.id, issued))?;
                let audit = Audit::new(self.clock(), &s.actor, s.action, AuditOutcome::Success)
                    .device(p.id)
                    .serial(s.serial.as_str())
                    .details(json!({"import": true, "certificate_serial": certificate.serial}));
                tx.append_audit(audit.event())?;
                let mqtt = self.mqtt_info(&s.model, &device);
                out.push((
                    *p,
                    Provisioned {
                        config: self.device_config(&s.model, &device),
                        device,
                        certificate,
                        private_key_pem: Some(key.clone()),
                        ca_chain_pem: chain.clone(),
                        mqtt,
                        reregistered: false,
                    },
                ));
            }
            Ok(out)
        })
    }

    fn undo_chunk(&self, ids: impl IntoIterator<Item = DeviceId>) {
        let ids: Vec<DeviceId> = ids.into_iter().collect();
        let result = self
            .store()
            .transaction(|tx| ids.iter().try_for_each(|id| tx.delete_device(*id)));
        if let Err(e) = result {
            tracing::error!(error = %e, "could not undo imported rows");
        }
    }
}

fn failed(line: usize, serial: Option<String>, message: String) -> ImportResult {
    ImportResult {
        line,
        serial,
        outcome: ImportOutcome::Failed(message),
    }
}

/// Issues every certificate of a chunk, spread over the machine's cores.
fn issue_all(
    issuer: &dyn CertificateIssuer,
    pending: &[&Pending],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Result<(IssuedCert, SecretString), String>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let per = pending.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = pending
            .chunks(per)
            .map(|part| {
                let handle = s.spawn(move || {
                    part.iter()
                        .map(|p| {
                            issuer
                                .issue_with_new_key(p.id, now)
                                .map_err(|e| format!("issue: {e}"))
                        })
                        .collect::<Vec<_>>()
                });
                (part.len(), handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("issue: a worker failed".into()); len])
            })
            .collect()
    })
}
