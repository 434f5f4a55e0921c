//! `onboardctl devices register | import | revoke | delete | update`.

use std::io::Write;
use std::path::Path;

use onboard_core::domain::{DeviceId, RevocationReason};
use onboard_core::{
    Actor, CoreError, DevicePatch, ImportOutcome, ImportRow, NewDeviceRequest, Onboard,
};
use serde_json::json;

use crate::keys::create_private;
use crate::output::Rendered;
use crate::CliError;

fn setup(message: String) -> CliError {
    CliError::Core(CoreError::Setup(message))
}

fn invalid(e: onboard_core::domain::InvalidValue) -> CliError {
    CliError::Core(CoreError::Invalid(e))
}

fn ensure_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| setup(format!("cannot create {}: {}", dir.display(), e.kind())))
}

/// Writes bytes to a new 0600 file; refuses to overwrite.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_new(path, bytes, true)
}

/// Writes bytes to a new 0600 file, refusing to overwrite; flushed to disk before
/// returning when `sync`.
fn write_new(path: &Path, bytes: &[u8], sync: bool) -> Result<(), CliError> {
    let mut file = create_private(path)?;
    file.write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .map_err(|e| setup(format!("cannot write {}: {}", path.display(), e.kind())))
}

/// Many new files in one directory, made durable together. On Linux they are
/// written to the page cache and [`DurableBatch::commit`] flushes the directory's
/// file system once (`syncfs`, which reports write-back errors since the
/// directory was opened): one device flush rather than one a file, which for
/// 10,000 bundles was most of an import's time. Elsewhere each file is flushed as
/// it is written.
struct DurableBatch {
    dir: std::fs::File,
}

impl DurableBatch {
    fn open(dir: &Path) -> Result<Self, CliError> {
        let dir = std::fs::File::open(dir)
            .map_err(|e| setup(format!("cannot open {}: {}", dir.display(), e.kind())))?;
        Ok(Self { dir })
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), CliError> {
        write_new(path, bytes, !cfg!(target_os = "linux"))
    }

    /// Everything written through the batch (and the directory's entries) is on
    /// disk when this returns `Ok`.
    fn commit(self, what: &Path) -> Result<(), CliError> {
        #[cfg(target_os = "linux")]
        let synced = nix::unistd::syncfs(&self.dir).map_err(std::io::Error::from);
        #[cfg(not(target_os = "linux"))]
        let synced = self.dir.sync_all();
        synced.map_err(|e| {
            setup(format!(
                "cannot flush {} to disk: {}",
                what.display(),
                e.kind()
            ))
        })
    }
}

pub struct RegisterArgs<'a> {
    pub name: &'a str,
    pub model: Option<&'a str>,
    pub location: Option<&'a str>,
    pub firmware: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub credential: Option<&'a str>,
    pub out: &'a Path,
}

pub fn register(onboard: &Onboard, a: &RegisterArgs<'_>) -> Result<Rendered, CliError> {
    ensure_dir(a.out)?;
    let req = NewDeviceRequest {
        name: a.name.to_owned(),
        model: a.model.map(str::to_owned),
        location: a.location.map(str::to_owned),
        firmware_version: a.firmware.map(str::to_owned),
        serial: a.serial.map(str::to_owned),
        config: None,
        metadata: None,
        credential: a.credential.map(str::to_owned),
    };
    // Check the target first: a device is never created without a place for its bundle.
    let done = onboard.register_device(&Actor::cli(), &req)?;
    let path = a.out.join(format!("{}.zip", done.device.serial));
    if let Err(e) = write_private(&path, &done.bundle_zip) {
        // The key exists only in this bundle: without it the device is unusable.
        let _ = onboard.decommission_device(&Actor::cli(), done.device.id);
        return Err(e);
    }
    let password = done.bundle_password.expose().to_owned();
    let cert_serial = done
        .certificate
        .as_ref()
        .map(|c| c.serial.to_string())
        .unwrap_or_default();
    let mut value = json!({
        "device_id": done.device.id, "serial": done.device.serial,
        "credential": done.device.credential,
        "certificate_serial": done.certificate.as_ref().map(|c| c.serial.to_string()),
        "bundle_file": path, "bundle_password": password,
    });
    if let Some(secret) = &done.client_secret {
        value["client_id"] = json!(done.device.id);
        value["client_secret"] = json!(secret.expose());
    }
    Ok(Rendered::table(
        value,
        vec!["DEVICE", "SERIAL", "CERTIFICATE", "BUNDLE", "PASSWORD"],
        vec![vec![
            done.device.id.to_string(),
            done.device.serial.to_string(),
            cert_serial,
            path.display().to_string(),
            password,
        ]],
    )
    .with_note(if done.client_secret.is_some() {
        "the bundle password is shown once; the device's client id and secret are in the bundle's connection.json"
    } else {
        "the bundle password is shown once"
    }))
}

/// The CSV columns: name, model, location, firmware, and optionally serial.
#[derive(Debug, serde::Deserialize)]
struct CsvRow {
    name: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    /// certificate or password; the model's default when empty.
    #[serde(default)]
    credential: Option<String>,
}

/// Without a serial column, a row's serial is derived from its contents, so that
/// running the same file again finds the devices it created.
fn derived_serial(row: &CsvRow) -> String {
    let text = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        row.name,
        row.model.as_deref().unwrap_or(""),
        row.location.as_deref().unwrap_or(""),
        row.firmware.as_deref().unwrap_or("")
    );
    let digest = onboard_core::secrets::digest_hex(text.as_bytes());
    format!("IMP-{}", &digest[..20])
}

pub fn import(onboard: &Onboard, csv_path: &Path, out: &Path) -> Result<Rendered, CliError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(csv_path)
        .map_err(|e| setup(format!("cannot read {}: {e}", csv_path.display())))?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, record) in reader.deserialize::<CsvRow>().enumerate() {
        let line = i + 2; // the header is line 1
        match record {
            Ok(row) => {
                let serial = row
                    .serial
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| derived_serial(&row));
                rows.push(ImportRow {
                    line,
                    request: NewDeviceRequest {
                        name: row.name,
                        model: row.model.filter(|m| !m.is_empty()),
                        location: row.location,
                        firmware_version: row.firmware.filter(|f| !f.is_empty()),
                        serial: Some(serial),
                        config: None,
                        metadata: None,
                        credential: row.credential.filter(|c| !c.is_empty()),
                    },
                });
            }
            Err(e) => errors.push((line, None, format!("unreadable row: {e}"))),
        }
    }
    ensure_dir(out)?;
    let stamp = onboard.clock().now().format("%Y%m%dT%H%M%SZ");
    // Never overwrite an earlier manifest: its passwords exist nowhere else.
    let mut n = 1;
    let (manifest_path, mut manifest) = loop {
        let name = if n == 1 {
            format!("manifest-{stamp}.csv")
        } else {
            format!("manifest-{stamp}-{n}.csv")
        };
        let path = out.join(name);
        if !path.exists() {
            break (path.clone(), create_private(&path)?);
        }
        n += 1;
    };

    let batch = DurableBatch::open(out)?;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(rows.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let mut text = String::from("device_id,serial,certificate_serial,bundle_file,password\n");
    let (mut created, mut existing) = (0usize, 0usize);
    // Each chunk's bundles are written while the next chunk is being built.
    onboard.import_devices_streaming(&Actor::cli(), &rows, &mut |rows_done, results| {
        for r in results {
            match r.outcome {
                ImportOutcome::Created(done) => {
                    let file = format!("{}.zip", done.device.serial);
                    match batch.write(&out.join(&file), &done.bundle_zip) {
                        Ok(()) => {
                            created += 1;
                            text.push_str(&format!(
                                "{},{},{},{},{}\n",
                                done.device.id,
                                done.device.serial,
                                done.certificate
                                    .as_ref()
                                    .map(|c| c.serial.to_string())
                                    .unwrap_or_default(),
                                file,
                                done.bundle_password.expose()
                            ));
                        }
                        Err(e) => {
                            let _ = onboard.decommission_device(&Actor::cli(), done.device.id);
                            errors.push((r.line, r.serial, e.to_string()));
                        }
                    }
                }
                ImportOutcome::Exists => existing += 1,
                ImportOutcome::Failed(message) => errors.push((r.line, r.serial, message)),
            }
        }
        bar.set_position(rows_done as u64);
    })?;
    bar.finish_and_clear();

    manifest
        .write_all(text.as_bytes())
        .and_then(|()| {
            if cfg!(target_os = "linux") {
                Ok(())
            } else {
                manifest.sync_all()
            }
        })
        .map_err(|e| {
            setup(format!(
                "cannot write {}: {}",
                manifest_path.display(),
                e.kind()
            ))
        })?;
    // The bundles and the manifest reach the disk together, before the answer.
    batch.commit(out)?;
    errors.sort_by_key(|(line, _, _)| *line);
    let rows_out = errors
        .iter()
        .map(|(line, serial, message)| {
            vec![
                line.to_string(),
                serial.clone().unwrap_or_default(),
                message.clone(),
            ]
        })
        .collect();
    let json_errors: Vec<_> = errors
        .iter()
        .map(|(line, serial, message)| json!({"line": line, "serial": serial, "error": message}))
        .collect();
    let exit_code = if errors.is_empty() {
        0
    } else {
        crate::EXIT_PARTIAL
    };
    Ok(Rendered::table(
        json!({"created": created, "existing": existing, "failed": errors.len(),
               "manifest": manifest_path, "errors": json_errors}),
        vec!["LINE", "SERIAL", "ERROR"],
        rows_out,
    )
    .with_note(format!(
        "{created} created, {existing} already registered, {} failed; bundles and {} in {}",
        errors.len(),
        manifest_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        out.display()
    ))
    .with_exit_code(exit_code))
}

pub fn revoke(onboard: &Onboard, id: &str, reason: &str) -> Result<Rendered, CliError> {
    let id: DeviceId = id.parse().map_err(invalid)?;
    let reason: RevocationReason = reason.parse().map_err(invalid)?;
    let d = onboard.revoke_device(&Actor::cli(), id, reason)?;
    Ok(Rendered::table(
        json!({"device_id": id, "status": d.device.status, "reason": reason}),
        vec![],
        vec![],
    )
    .with_note(format!("device {id} is {} ({reason})", d.device.status)))
}

pub fn delete(onboard: &Onboard, id: &str) -> Result<Rendered, CliError> {
    let id: DeviceId = id.parse().map_err(invalid)?;
    let d = onboard.decommission_device(&Actor::cli(), id)?;
    Ok(Rendered::table(
        json!({"device_id": id, "status": d.device.status}),
        vec![],
        vec![],
    )
    .with_note(format!("device {id} is {}", d.device.status)))
}

pub fn update(
    onboard: &Onboard,
    id: &str,
    name: Option<&str>,
    location: Option<&str>,
) -> Result<Rendered, CliError> {
    let id: DeviceId = id.parse().map_err(invalid)?;
    let d = onboard.update_device(
        &Actor::cli(),
        id,
        &DevicePatch {
            name: name.map(str::to_owned),
            location: location.map(str::to_owned),
            ..DevicePatch::default()
        },
    )?;
    Ok(Rendered::table(json!(d), vec![], vec![]).with_note(format!("device {id} updated")))
}
