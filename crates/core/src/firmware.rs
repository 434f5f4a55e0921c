//! Device models' firmware: ESP32 application images, validated by
//! `onboard_firmware` (header, segments, checksum, appended SHA-256, application
//! descriptor), stored as `<assets.dir>/firmware/<sha256>.bin`.
//!
//! An upload is written to a staging file in that directory while it arrives (cut
//! at `assets.max_firmware_bytes`), validated, renamed to its content-addressed
//! name, and only then recorded on the model with its audit event in one
//! transaction. A rejected or abandoned upload removes its staging file, so it
//! leaves nothing; a file whose transaction failed is an unreferenced image that
//! costs only its space (like a signed but unstored certificate, it has no effect
//! until the registry points at it). File names come only from the digest we
//! computed, never from a caller.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use onboard_domain::{
    check_firmware_version, AuditOutcome, AuditRepository, DeviceModelRepository,
    FirmwareRepository, InvalidValue, ModelCode, ModelFirmware, Sha256Digest, Store,
};
use onboard_firmware::AppImage;
use serde_json::json;

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;

/// An upload being received: a file in the firmware directory that is removed
/// unless [`Onboard::install_firmware`] gives it its final name.
#[derive(Debug)]
pub struct StagedFirmware {
    file: File,
    path: PathBuf,
    written: u64,
    limit: u64,
    kept: bool,
}

impl StagedFirmware {
    /// Appends the next part of the image; refuses to go past the size limit.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), CoreError> {
        let next = self.written.saturating_add(chunk.len() as u64);
        if next > self.limit {
            return Err(CoreError::TooLarge {
                what: "firmware image",
                setting: "assets.max_firmware_bytes",
                limit: self.limit,
            });
        }
        self.file
            .write_all(chunk)
            .map_err(|e| io_error("cannot write the firmware upload", &e))?;
        self.written = next;
        Ok(())
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

impl Drop for StagedFirmware {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A model's firmware, opened for reading.
#[derive(Debug)]
pub struct FirmwareFile {
    pub firmware: ModelFirmware,
    pub file: File,
}

fn io_error(what: &str, e: &std::io::Error) -> CoreError {
    CoreError::Internal(format!("{what}: {e}"))
}

fn model_code(code: &str) -> Result<ModelCode, CoreError> {
    ModelCode::parse(code).map_err(|_| CoreError::NotFound {
        entity: "device model",
    })
}

impl Onboard {
    /// `<assets.dir>/firmware`.
    pub fn firmware_dir(&self) -> PathBuf {
        Path::new(&self.settings().assets.dir).join("firmware")
    }

    fn firmware_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.firmware_dir().join(format!("{digest}.bin"))
    }

    /// Starts an upload (see [`StagedFirmware`]).
    pub fn stage_firmware(&self) -> Result<StagedFirmware, CoreError> {
        let dir = self.firmware_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CoreError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!(".upload-{}.part", uuid::Uuid::new_v4()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| CoreError::Setup(format!("cannot create {}: {e}", path.display())))?;
        Ok(StagedFirmware {
            file,
            path,
            written: 0,
            limit: self.settings().assets.max_firmware_bytes,
            kept: false,
        })
    }

    /// Validates a received upload and makes it the model's firmware; the model's
    /// version, SHA-256 and size come from the image. Any error leaves the model
    /// and the firmware directory as they were.
    pub fn install_firmware(
        &self,
        actor: &Actor,
        code: &str,
        mut staged: StagedFirmware,
    ) -> Result<ModelFirmware, CoreError> {
        let code = model_code(code)?;
        self.store().read(|tx| tx.model(&code))?;
        staged
            .file
            .sync_all()
            .map_err(|e| io_error("cannot write the firmware upload", &e))?;
        let mut bytes = Vec::with_capacity(usize::try_from(staged.written).unwrap_or(0));
        File::open(&staged.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io_error("cannot read the firmware upload", &e))?;
        let image = AppImage::parse(&bytes, staged.limit)?;
        check_firmware_version(&image.app.version, false).map_err(|e| {
            CoreError::Invalid(InvalidValue::new(
                "firmware image",
                format!("the application descriptor's version: {}", e.reason),
            ))
        })?;
        let digest = Sha256Digest::parse(&image.sha256_hex())?;
        let firmware = ModelFirmware {
            model: code.clone(),
            version: image.app.version.clone(),
            sha256: digest.clone(),
            size: image.size,
            project: image.app.project_name.clone(),
            idf_version: image.app.idf_version.clone(),
            uploaded_at: self.clock().now(),
        };

        let target = self.firmware_path(&digest);
        std::fs::rename(&staged.path, &target)
            .map_err(|e| io_error("cannot store the firmware image", &e))?;
        staged.kept = true;
        if let Ok(dir) = File::open(self.firmware_dir()) {
            let _ = dir.sync_all();
        }

        self.store().transaction(|tx| -> Result<_, CoreError> {
            let previous = tx.model_firmware(&code)?;
            tx.set_model_firmware(&firmware)?;
            let audit = Audit::new(
                self.clock(),
                actor,
                "model.firmware.upload",
                AuditOutcome::Success,
            )
            .details(json!({
                "code": code,
                "version": firmware.version,
                "sha256": firmware.sha256,
                "size": firmware.size,
                "project": firmware.project,
                "idf_version": firmware.idf_version,
                "previous_version": previous.as_ref().map(|p| p.version.clone()),
                "previous_sha256": previous.map(|p| p.sha256),
            }));
            tx.append_audit(audit.event())?;
            Ok(())
        })?;
        tracing::info!(
            model = %code,
            version = %firmware.version,
            sha256 = %firmware.sha256,
            size = firmware.size,
            "firmware uploaded"
        );
        Ok(firmware)
    }

    /// [`Onboard::install_firmware`] from a file (the CLI's upload).
    pub fn upload_firmware_file(
        &self,
        actor: &Actor,
        code: &str,
        path: &Path,
    ) -> Result<ModelFirmware, CoreError> {
        let mut source = File::open(path).map_err(|e| {
            CoreError::Invalid(InvalidValue::new(
                "file",
                format!("cannot read {}: {e}", path.display()),
            ))
        })?;
        let mut staged = self.stage_firmware()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = source.read(&mut buf).map_err(|e| {
                CoreError::Invalid(InvalidValue::new(
                    "file",
                    format!("cannot read {}: {e}", path.display()),
                ))
            })?;
            if n == 0 {
                break;
            }
            staged.write(&buf[..n])?;
        }
        self.install_firmware(actor, code, staged)
    }

    /// The model's firmware record; `None` when it has none.
    pub fn firmware_info(&self, code: &str) -> Result<Option<ModelFirmware>, CoreError> {
        let code = model_code(code)?;
        Ok(self.store().read(|tx| {
            tx.model(&code)?;
            tx.model_firmware(&code)
        })?)
    }

    /// Every model's firmware record, by model code.
    pub fn firmware_of_models(&self) -> Result<Vec<ModelFirmware>, CoreError> {
        Ok(self.store().read(|tx| tx.list_model_firmware())?)
    }

    /// The model's firmware with its file opened; `NotFound` when the model or
    /// its firmware does not exist.
    pub fn model_firmware(&self, code: &str) -> Result<FirmwareFile, CoreError> {
        let firmware = self.firmware_info(code)?.ok_or(CoreError::NotFound {
            entity: "model firmware",
        })?;
        let path = self.firmware_path(&firmware.sha256);
        let file = File::open(&path).map_err(|e| {
            io_error(
                &format!("firmware image {} is unreadable", path.display()),
                &e,
            )
        })?;
        Ok(FirmwareFile { firmware, file })
    }
}
