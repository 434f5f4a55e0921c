//! Rotation of password devices (`docs/rotation.md`, ADR 6).
//!
//! The start gives the device a new secret: its hash replaces the old one in
//! `mqtt_credentials` (so the broker's password file and `/iot/token` take the new
//! one), and the old hash and the new secret are sealed with AES-256-GCM under
//! `rotation.secret_key` into the rotation's `old_secret_encrypted`, bound to the
//! device id. While PENDING, `/iot/token` also takes the old secret, so the device
//! can fetch the new one from `GET /iot/provisioning`; the broker takes the new
//! one only. An acknowledgment with a token of the new secret deletes the sealed
//! values; a timeout restores the old hash on the broker and for `/iot/token`.

use chrono::{DateTime, Utc};
use onboard_domain::{
    Device, DeviceId, Effect, EffectRepository, MqttCredential, MqttCredentialRepository,
    RotationRepository, RotationState, SecretString, Store,
};
use onboard_pki::SealKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::Onboard;
use crate::effects::Enqueued;
use crate::error::CoreError;

/// What a PENDING password rotation keeps, sealed.
#[derive(Serialize, Deserialize)]
struct Kept {
    old_hash: String,
    new_secret: String,
}

impl Drop for Kept {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.old_hash);
        zeroize::Zeroize::zeroize(&mut self.new_secret);
    }
}

fn aad(device: DeviceId) -> Vec<u8> {
    format!("onboard rotation secret {device}").into_bytes()
}

impl Onboard {
    fn seal_key(&self) -> Result<SealKey, CoreError> {
        let key = &self.settings().rotation.secret_key;
        if key.is_empty() {
            return Err(CoreError::Conflict(
                "password devices are rotated once rotation.secret_key is set".into(),
            ));
        }
        SealKey::from_hex(key.expose())
            .map_err(|_| CoreError::Setup("rotation.secret_key: must be 64 hex digits".into()))
    }

    fn open_kept(&self, device: DeviceId, sealed: &[u8]) -> Result<Kept, CoreError> {
        let plain = self.seal_key()?.open(&aad(device), sealed).map_err(|_| {
            CoreError::Setup(format!(
                "rotation.secret_key does not open the secrets kept for device {device}: was the key changed during a rotation?"
            ))
        })?;
        serde_json::from_slice(&plain)
            .map_err(|_| CoreError::Internal("the kept rotation secrets are unreadable".into()))
    }

    /// Inside a start's transaction: a new secret for `device`, the old hash and
    /// the new secret sealed into `sealed`, the broker told.
    pub(crate) fn start_password_rotation<T>(
        &self,
        tx: &mut T,
        device: &Device,
        now: DateTime<Utc>,
        effects: &mut Vec<Enqueued>,
    ) -> Result<Vec<u8>, CoreError>
    where
        T: MqttCredentialRepository + EffectRepository,
    {
        let key = self.seal_key()?;
        let Some(old) = tx.mqtt_credential(device.id)? else {
            return Err(CoreError::Conflict(format!(
                "password device {} has no secret to rotate",
                device.id
            )));
        };
        let secret = Zeroizing::new(
            onboard_pki::secrets::random_token()
                .map_err(|e| CoreError::Internal(format!("the random generator failed: {e}")))?,
        );
        let password_hash = onboard_broker::hash_password(&secret)
            .map_err(|e| CoreError::Internal(format!("cannot hash the secret: {e}")))?;
        let kept = Kept {
            old_hash: old.password_hash.clone(),
            new_secret: secret.to_string(),
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&kept)
                .map_err(|e| CoreError::Internal(format!("cannot encode the secrets: {e}")))?,
        );
        let sealed = key
            .seal(&aad(device.id), &plain)
            .map_err(|e| CoreError::Internal(format!("cannot seal the secrets: {e}")))?;
        tx.set_mqtt_credential(&MqttCredential {
            device_id: device.id,
            username: old.username,
            password_hash,
            created_at: old.created_at,
            updated_at: now,
        })?;
        self.enqueue(tx, &[Effect::BrokerDevice(device.id)], effects)?;
        Ok(sealed)
    }

    /// Inside a time-out's transaction: the old secret is the device's again.
    pub(crate) fn restore_password<T>(
        &self,
        tx: &mut T,
        device: DeviceId,
        sealed: &[u8],
        now: DateTime<Utc>,
        effects: &mut Vec<Enqueued>,
    ) -> Result<(), CoreError>
    where
        T: MqttCredentialRepository + EffectRepository,
    {
        let kept = self.open_kept(device, sealed)?;
        if let Some(current) = tx.mqtt_credential(device)? {
            tx.set_mqtt_credential(&MqttCredential {
                password_hash: kept.old_hash.clone(),
                updated_at: now,
                ..current
            })?;
            self.enqueue(tx, &[Effect::BrokerDevice(device)], effects)?;
        }
        Ok(())
    }

    /// The sealed values of the device's PENDING password rotation, opened.
    fn pending_kept(&self, device: DeviceId) -> Result<Option<Kept>, CoreError> {
        let r = self.store().read(|tx| tx.rotation(device))?;
        match r {
            Some(r) if r.state == RotationState::Pending => match &r.old_secret_encrypted {
                Some(sealed) => Ok(Some(self.open_kept(device, sealed)?)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// While the device's password rotation is PENDING: the old secret's hash,
    /// which `/iot/token` still takes.
    pub(crate) fn previous_secret_hash(
        &self,
        device: DeviceId,
    ) -> Result<Option<String>, CoreError> {
        Ok(self.pending_kept(device)?.map(|k| k.old_hash.clone()))
    }

    /// While the device's password rotation is PENDING: the new secret, for its
    /// provisioning.
    pub(crate) fn pending_new_secret(
        &self,
        device: DeviceId,
    ) -> Result<Option<SecretString>, CoreError> {
        Ok(self
            .pending_kept(device)?
            .map(|k| SecretString::new(k.new_secret.as_str())))
    }
}
