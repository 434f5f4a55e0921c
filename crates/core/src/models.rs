//! Device models: per-model topic templates (`{device_id}`, `{serial}`, `{model}`),
//! QoS and retain policy, and default configuration.

use onboard_domain::{
    AuditOutcome, AuditRepository, CredentialKind, DeviceModel, DeviceModelRepository, ModelCode,
    Store,
};
use serde_json::{json, Value};

use crate::app::Onboard;
use crate::audit::{Actor, Audit};
use crate::error::CoreError;
use crate::operator::{check_object, check_text};
use crate::provision::invalid;
use crate::register::DEFAULT_TOPIC;

/// A model to create, or the fields to change (`None` keeps a field).
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub publish_topics: Option<Vec<String>>,
    pub subscribe_topics: Option<Vec<String>>,
    pub max_qos: Option<u8>,
    pub retain_allowed: Option<bool>,
    pub config: Option<Value>,
    /// `certificate` or `password`: what the model's devices get by default.
    pub credential: Option<String>,
}

/// A topic template: levels separated by `/`, `+` only as a whole level, `#` only
/// as the last level, placeholders only `{device_id}`, `{serial}` and `{model}`.
/// A publish template must name the device (`{device_id}` or `{serial}`), so that
/// no device can write where another one does.
pub fn check_topic_template(
    field: &'static str,
    template: &str,
    publish: bool,
) -> Result<(), CoreError> {
    if template.is_empty() || template.len() > 256 {
        return Err(invalid(
            field,
            "a topic template must be 1 to 256 characters",
        ));
    }
    let levels: Vec<&str> = template.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(invalid(
                field,
                format!("{template}: # only as the whole last level"),
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(invalid(
                field,
                format!("{template}: + only as a whole level"),
            ));
        }
        let stripped = level
            .replace("{device_id}", "")
            .replace("{serial}", "")
            .replace("{model}", "");
        if stripped.contains(['{', '}']) || stripped.chars().any(|c| c.is_control() || c == '\0') {
            return Err(invalid(
                field,
                format!(
                    "{template}: the only placeholders are {{device_id}}, {{serial}} and {{model}}"
                ),
            ));
        }
    }
    if publish && !(template.contains("{device_id}") || template.contains("{serial}")) {
        return Err(invalid(
            field,
            format!("{template}: a publish template must contain {{device_id}} or {{serial}}"),
        ));
    }
    Ok(())
}

fn check(req: &ModelRequest) -> Result<(), CoreError> {
    if let Some(name) = &req.name {
        check_text("name", name, 128, true)?;
    }
    if let Some(d) = &req.description {
        check_text("description", d, 1024, false)?;
    }
    for (field, list, publish) in [
        ("publish_topics", &req.publish_topics, true),
        ("subscribe_topics", &req.subscribe_topics, false),
    ] {
        if let Some(list) = list {
            if list.len() > 32 {
                return Err(invalid(field, "at most 32 templates"));
            }
            for t in list {
                check_topic_template(field, t, publish)?;
            }
        }
    }
    if req.max_qos.is_some_and(|q| q > 2) {
        return Err(invalid("max_qos", "must be 0, 1 or 2"));
    }
    if let Some(c) = &req.config {
        check_object("config", c)?;
    }
    credential_of(req)?;
    Ok(())
}

fn credential_of(req: &ModelRequest) -> Result<Option<CredentialKind>, CoreError> {
    req.credential
        .as_deref()
        .map(|c| c.parse::<CredentialKind>().map_err(CoreError::Invalid))
        .transpose()
}

impl Onboard {
    pub fn create_model(
        &self,
        actor: &Actor,
        code: &str,
        req: &ModelRequest,
    ) -> Result<DeviceModel, CoreError> {
        let code = ModelCode::parse(code)?;
        check(req)?;
        let now = self.clock().now();
        let model = DeviceModel {
            name: req.name.clone().unwrap_or_else(|| code.to_string()),
            description: req.description.clone().unwrap_or_default(),
            publish_topics: req
                .publish_topics
                .clone()
                .unwrap_or_else(|| vec![DEFAULT_TOPIC.into()]),
            subscribe_topics: req
                .subscribe_topics
                .clone()
                .unwrap_or_else(|| vec![DEFAULT_TOPIC.into()]),
            max_qos: req.max_qos.unwrap_or(1),
            retain_allowed: req.retain_allowed.unwrap_or(false),
            config: req.config.clone().unwrap_or_else(|| json!({})),
            credential: credential_of(req)?.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            code,
        };
        self.store().transaction(|tx| -> Result<_, CoreError> {
            let created = tx.insert_model(&model)?;
            let audit = Audit::new(self.clock(), actor, "model.create", AuditOutcome::Success)
                .details(json!({"code": created.code}));
            tx.append_audit(audit.event())?;
            Ok(created)
        })
    }

    pub fn models(&self) -> Result<Vec<DeviceModel>, CoreError> {
        Ok(self.store().read(|tx| tx.list_models())?)
    }

    pub fn model(&self, code: &str) -> Result<DeviceModel, CoreError> {
        let code = ModelCode::parse(code).map_err(|_| CoreError::NotFound {
            entity: "device model",
        })?;
        Ok(self.store().read(|tx| tx.model(&code))?)
    }

    /// Changes a model; the broker permissions of its devices follow (the broker is
    /// re-synchronised from the registry).
    pub fn update_model(
        &self,
        actor: &Actor,
        code: &str,
        req: &ModelRequest,
    ) -> Result<DeviceModel, CoreError> {
        check(req)?;
        let mut model = self.model(code)?;
        if let Some(v) = &req.name {
            model.name = v.clone();
        }
        if let Some(v) = &req.description {
            model.description = v.clone();
        }
        if let Some(v) = &req.publish_topics {
            model.publish_topics = v.clone();
        }
        if let Some(v) = &req.subscribe_topics {
            model.subscribe_topics = v.clone();
        }
        if let Some(v) = req.max_qos {
            model.max_qos = v;
        }
        if let Some(v) = req.retain_allowed {
            model.retain_allowed = v;
        }
        if let Some(v) = &req.config {
            model.config = v.clone();
        }
        if let Some(v) = credential_of(req)? {
            model.credential = v;
        }
        model.updated_at = self.clock().now();
        let updated = self.store().transaction(|tx| -> Result<_, CoreError> {
            let updated = tx.update_model(&model)?;
            let audit = Audit::new(self.clock(), actor, "model.update", AuditOutcome::Success)
                .details(json!({"code": updated.code}));
            tx.append_audit(audit.event())?;
            Ok(updated)
        })?;
        if req.publish_topics.is_some() || req.subscribe_topics.is_some() {
            self.acl_sync()?;
        }
        Ok(updated)
    }

    /// Deletes a model no device or key refers to (409 otherwise).
    pub fn delete_model(&self, actor: &Actor, code: &str) -> Result<(), CoreError> {
        let model = self.model(code)?;
        self.store().transaction(|tx| -> Result<_, CoreError> {
            tx.delete_model(&model.code).map_err(|e| match e {
                onboard_domain::RepoError::Conflict { .. } => {
                    CoreError::Conflict(format!("device model {} is in use", model.code))
                }
                other => other.into(),
            })?;
            let audit = Audit::new(self.clock(), actor, "model.delete", AuditOutcome::Success)
                .details(json!({"code": model.code}));
            tx.append_audit(audit.event())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_topic_template;

    #[test]
    fn topic_templates() {
        for ok in [
            "devices/{device_id}/#",
            "telemetry/{model}/{serial}",
            "cmd/+/{device_id}",
        ] {
            assert!(check_topic_template("t", ok, true).is_ok(), "{ok}");
        }
        assert!(check_topic_template("t", "fleet/{model}/announce", false).is_ok());
        for bad in [
            "",
            "a/#/b",
            "a/b#",
            "a+/x/{device_id}",
            "x/{id}/y",
            "fleet/{model}/all",
        ] {
            assert!(check_topic_template("t", bad, true).is_err(), "{bad}");
        }
    }
}
