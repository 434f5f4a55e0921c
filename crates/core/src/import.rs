//! Bulk operator registration (`onboardctl devices import`). Rows are checked one by
//! one (a bad row is reported and skipped; each model is read once), then
//! provisioned in chunks: certificates issued and bundles built on every core, one
//! transaction per chunk for the rows (devices, certificates, audit events,
//! pending effects), one broker change per chunk. Building a chunk overlaps
//! storing the one before. A chunk that cannot be stored as a whole falls back to
//! one device at a time, so one bad row never costs its neighbours. Devices whose
//! serial already exists are skipped, so an import can be run again on the same
//! file.

use std::collections::{HashMap, HashSet};

use onboard_domain::{
    new_id, CertificateIssuer, CredentialKind, DeviceId, DeviceRepository, IssuedCert,
    SecretString, Serial, Store,
};
use onboard_pki::BundleWriter;
use serde_json::json;

use crate::app::Onboard;
use crate::audit::Actor;
use crate::error::CoreError;
use crate::operator::{ModelCache, NewDeviceRequest, OperatorRegistered};
use crate::provision::{DeviceSpec, Prepared};

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

/// A bundle's ZIP and its password.
type Bundle = (Vec<u8>, SecretString);

/// A chunk with its certificates issued and its bundles built, ready to store.
struct Built<'a> {
    rows: usize,
    /// Rows already settled: existing serials and failures.
    results: Vec<ImportResult>,
    ready: Vec<(&'a Pending, Prepared, Bundle)>,
}

impl Onboard {
    /// Imports `rows`; `progress` is called with the number of rows done so far.
    pub fn import_devices(
        &self,
        actor: &Actor,
        rows: &[ImportRow],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<ImportResult>, CoreError> {
        let mut all = Vec::with_capacity(rows.len());
        self.import_devices_streaming(actor, rows, &mut |done, results| {
            all.extend(results);
            progress(done);
        })?;
        all.sort_by_key(|r| r.line);
        Ok(all)
    }

    /// As [`Onboard::import_devices`], handing over the results as they are
    /// settled, with the number of rows done so far: first the rows refused
    /// before provisioning, then each chunk (in line order) once it is stored, so
    /// that a caller writes one chunk's bundles while the next chunk is built.
    ///
    /// Two stages overlap: a thread checks, issues and bundles chunk `n + 1` (on
    /// every core) while this one stores chunk `n` and hands it over. At most one
    /// built chunk waits between them.
    pub fn import_devices_streaming(
        &self,
        actor: &Actor,
        rows: &[ImportRow],
        on_results: &mut dyn FnMut(usize, Vec<ImportResult>),
    ) -> Result<(), CoreError> {
        let mut results = Vec::new();
        let mut pending = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut models = ModelCache::default();
        for row in rows {
            match self.operator_spec_with(actor, &row.request, &mut models) {
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
        on_results(done, results);
        if pending.is_empty() {
            return Ok(());
        }
        let issuer = self.issuer()?;
        let writer = crate::operator::bundle_writer(&issuer.ca_chain_pem())?;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Built<'_>, CoreError>>(1);
            let (issuer, writer, pending) = (issuer.as_ref(), &writer, &pending);
            let builder = s.spawn(move || {
                for chunk in pending.chunks(IMPORT_CHUNK) {
                    let built = self.build_chunk(issuer, writer, chunk);
                    let failed = built.is_err();
                    // A closed channel: the storing side stopped on an error.
                    if tx.send(built).is_err() || failed {
                        break;
                    }
                }
            });
            let mut outcome = Ok(());
            for built in rx.iter() {
                match built {
                    Ok(built) => {
                        done += built.rows;
                        let mut results = self.store_chunk(built);
                        results.sort_by_key(|r| r.line);
                        on_results(done, results);
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            drop(rx);
            if builder.join().is_err() {
                // Nothing of the chunk it was building was stored: a re-run
                // creates those rows.
                outcome = outcome.and(Err(CoreError::Internal("an import worker failed".into())));
            }
            outcome
        })
    }

    /// Checks which serials exist, issues the certificates and builds the bundles
    /// of one chunk. Nothing is stored.
    fn build_chunk<'a>(
        &self,
        issuer: &dyn CertificateIssuer,
        writer: &BundleWriter,
        chunk: &'a [Pending],
    ) -> Result<Built<'a>, CoreError> {
        let mut results = Vec::new();
        // Skip what an earlier run created.
        let serials: Vec<Serial> = chunk.iter().map(|p| p.spec.serial.clone()).collect();
        let existing: HashSet<Serial> = self
            .store()
            .read(|tx| tx.existing_serials(&serials))?
            .into_iter()
            .collect();
        let mut fresh: Vec<&Pending> = Vec::with_capacity(chunk.len());
        for p in chunk {
            if existing.contains(&p.spec.serial) {
                results.push(ImportResult {
                    line: p.line,
                    serial: Some(p.spec.serial.to_string()),
                    outcome: ImportOutcome::Exists,
                });
            } else {
                fresh.push(p);
            }
        }

        let (with_cert, with_password): (Vec<&Pending>, Vec<&Pending>) = fresh
            .into_iter()
            .partition(|p| p.spec.credential == CredentialKind::Certificate);
        let issued = issue_all(issuer, &with_cert, self.clock().now());
        let mut prepared = Vec::new();
        for (p, cert) in with_cert.into_iter().zip(issued) {
            match cert {
                Ok((c, key)) => prepared.push((p, self.prepare(&p.spec, p.id, &c, Some(key)))),
                Err(e) => results.push(failed(p.line, Some(p.spec.serial.to_string()), e)),
            }
        }
        for p in with_password {
            match self.prepare_password(&p.spec, p.id) {
                Ok(prep) => prepared.push((p, prep)),
                Err(e) => results.push(failed(
                    p.line,
                    Some(p.spec.serial.to_string()),
                    e.to_string(),
                )),
            }
        }
        // The bundles before the rows: a device is stored only with its bundle.
        let mut ready = Vec::new();
        for (p, prep, bundle) in self.bundle_all(prepared, writer) {
            match bundle {
                Ok(b) => ready.push((p, prep, b)),
                Err(e) => results.push(failed(p.line, Some(p.spec.serial.to_string()), e)),
            }
        }
        Ok(Built {
            rows: chunk.len(),
            results,
            ready,
        })
    }

    /// Stores a built chunk in one transaction, or, when that fails as a whole,
    /// one device at a time, so one bad row never costs its neighbours.
    fn store_chunk(&self, built: Built<'_>) -> Vec<ImportResult> {
        let Built {
            mut results, ready, ..
        } = built;
        if ready.is_empty() {
            return results;
        }
        let mut effects = Vec::new();
        let items: Vec<_> = ready.iter().map(|(p, prep, _)| (&p.spec, prep)).collect();
        let stored = self.store().transaction(|tx| {
            self.store_new_many(tx, &items, &json!({"import": true}), &mut effects)
        });
        drop(items);
        match stored {
            Ok(rows) => {
                // One broker change for the chunk.
                self.apply_or_defer(&effects);
                for ((p, prep, (zip, password)), (device, certificate)) in
                    ready.into_iter().zip(rows)
                {
                    results.push(created(p, device, certificate, prep, zip, password));
                }
            }
            // The chunk as a whole failed (a serial taken meanwhile, say): one by one.
            Err(e) => {
                tracing::warn!(error = %e, "an import chunk failed as a whole; storing its rows one by one");
                for (p, prep, (zip, password)) in ready {
                    let mut effects = Vec::new();
                    let one = self.store().transaction(|tx| {
                        self.store_new(tx, &p.spec, &prep, json!({"import": true}), &mut effects)
                    });
                    results.push(match one {
                        Ok((device, certificate)) => {
                            self.apply_or_defer(&effects);
                            created(p, device, certificate, prep, zip, password)
                        }
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
        results
    }

    /// Builds the bundles on every core: each one derives a WinZip AES key per entry
    /// (PBKDF2, 1,000 rounds), which is most of an import's CPU time.
    fn bundle_all<'a>(
        &self,
        prepared: Vec<(&'a Pending, Prepared)>,
        writer: &BundleWriter,
    ) -> Vec<(&'a Pending, Prepared, Result<Bundle, String>)> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        let per = prepared.len().div_ceil(workers).max(1);
        let mut parts: Vec<Vec<(&Pending, Prepared)>> = Vec::new();
        let mut items = prepared.into_iter().peekable();
        while items.peek().is_some() {
            parts.push(items.by_ref().take(per).collect());
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    s.spawn(move || {
                        part.into_iter()
                            .map(|(p, prep)| {
                                let bundle = self
                                    .bundle(&prep, writer)
                                    .map_err(|e| format!("bundle: {e}"));
                                (p, prep, bundle)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // A worker panicking loses its rows' results: nothing of them was
            // stored, so those rows are simply not created (a re-run creates them).
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

fn created(
    p: &Pending,
    device: onboard_domain::Device,
    certificate: Option<onboard_domain::Certificate>,
    prep: Prepared,
    zip: Vec<u8>,
    password: SecretString,
) -> ImportResult {
    ImportResult {
        line: p.line,
        serial: Some(p.spec.serial.to_string()),
        outcome: ImportOutcome::Created(Box::new(OperatorRegistered {
            device,
            certificate,
            client_secret: prep.secret.map(|(s, _)| s),
            bundle_zip: zip,
            bundle_password: password,
        })),
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
