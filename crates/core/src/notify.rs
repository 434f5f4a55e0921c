//! The rotation notification (`docs/rotation.md`): when a rotation is PENDING, a
//! cycle publishes to the device's `<rotation.topic_prefix>/<client id>/rotation`
//! (QoS 1, Onboard's service account on `broker.mqtt_url`) what to do and by when.
//!
//! The start is committed first; the notification follows and its
//! acknowledgment by the broker is recorded as `notified_at`. When the broker
//! cannot be reached the start stands, and every later cycle publishes again to
//! each PENDING rotation whose `notified_at` is still empty. A cycle never waits
//! longer than `rotation.notify_timeout_seconds` for the broker.

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use onboard_broker::{MqttPublisher, PublisherConfig};
use onboard_domain::{
    AuditOutcome, AuditRepository, DeviceRepository, Notice, Notifier, RepoError, Rotation,
    RotationRepository, Store,
};
use serde_json::json;

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::rotation::CycleSummary;

/// How many PENDING rotations one cycle notifies at most (PENDING rotations
/// are at most `rotation.max_in_flight`).
const NOTIFY_BATCH: i64 = 1000;

impl Onboard {
    /// The notifier of the ports, or one on the service connection; `None` while
    /// `broker.mqtt_url` is empty (notifications off).
    fn notifier(&self) -> Result<Option<Arc<dyn Notifier>>, CoreError> {
        if let Some(n) = &self.ports().notifier {
            return Ok(Some(n.clone()));
        }
        let s = self.settings();
        if s.broker.mqtt_url.is_empty() {
            return Ok(None);
        }
        let mut endpoint = crate::broker::service_endpoint(&s.broker)?;
        // Not the status listener's client id: on a listener that keeps client
        // ids, two sessions with one id would take each other over.
        endpoint.client_id = format!("{}-rotation", s.broker.service_client_id);
        let mut config = PublisherConfig::new(endpoint);
        config.timeout = Duration::from_secs(s.rotation.notify_timeout_seconds);
        Ok(Some(Arc::new(MqttPublisher::new(config))))
    }

    /// The notification of one PENDING rotation.
    fn rotation_notice(&self, r: &Rotation, credential: onboard_domain::CredentialKind) -> Notice {
        let s = self.settings();
        let base = &s.server.public_base_url;
        let client_id = r.device_id.to_string();
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        };
        let payload = json!({
            "type": "rotation",
            "device_id": client_id,
            "credential": credential,
            "attempt": r.attempts,
            "started_at": at(r.started_at),
            "deadline": at(r.deadline_at),
            "renew_url": format!("{base}/iot/renew"),
            "provisioning_url": format!("{base}/iot/provisioning"),
            "ack_url": format!("{base}/iot/rotation/ack"),
        });
        Notice {
            topic: onboard_rotation::notification_topic(&s.rotation.topic_prefix, &client_id),
            payload: payload.to_string(),
        }
    }

    /// Publishes the notification of every PENDING rotation not notified yet and
    /// records each one the broker acknowledged (`notified_at`, audited
    /// `rotation.notify`). A broker that is down is counted in `summary`, not an
    /// error: the next cycle tries again.
    pub(crate) fn notify_pending(&self, summary: &mut CycleSummary) -> Result<(), CoreError> {
        let Some(notifier) = self.notifier()? else {
            return Ok(());
        };
        let due = self.store().read(|tx| -> Result<_, RepoError> {
            let mut out = Vec::new();
            for r in tx.pending_unnotified(NOTIFY_BATCH)? {
                let device = tx.device(r.device_id)?;
                out.push((r, device));
            }
            Ok(out)
        })?;
        if due.is_empty() {
            return Ok(());
        }
        let notices: Vec<Notice> = due
            .iter()
            .map(|(r, d)| self.rotation_notice(r, d.credential))
            .collect();
        let delivery = notifier.notify(&notices);
        let now = self.clock().now();
        for (((r, device), notice), acked) in due.iter().zip(&notices).zip(
            delivery
                .acknowledged
                .iter()
                .copied()
                .chain(std::iter::repeat(false)),
        ) {
            let Some(started) = r.started_at.filter(|_| acked) else {
                summary.not_notified += 1;
                continue;
            };
            let marked = self.store().transaction(|tx| -> Result<_, CoreError> {
                if !tx.mark_rotation_notified(r.device_id, started, now)? {
                    return Ok(false);
                }
                let audit = Audit::new(
                    self.clock(),
                    &Actor::system(),
                    "rotation.notify",
                    AuditOutcome::Success,
                )
                .device(device.id)
                .serial(device.serial.as_str())
                .details(json!({"topic": notice.topic, "attempt": r.attempts, "deadline": r.deadline_at}));
                tx.append_audit(audit.event())?;
                Ok(true)
            })?;
            if marked {
                summary.notified += 1;
            }
        }
        if summary.not_notified > 0 {
            summary.notify_error = Some(match delivery.error {
                Some(e) => format!("broker: {e}"),
                None => "broker: no acknowledgment".into(),
            });
        }
        Ok(())
    }
}
