//! `onboardctl load-test-data [--force]`: sample data for a development database,
//! made through the same core use cases as everything else (models, a key batch,
//! self-registrations with that batch's key).

use onboard_core::domain::{DeviceFilter, PageRequest, SecretString};
use onboard_core::{Actor, CoreError, KeyBatchRequest, ModelRequest, Onboard, RegisterRequest};
use serde_json::{json, Value};

use crate::output::Rendered;
use crate::CliError;

/// The batch of the sample bootstrap key.
pub const BATCH: &str = "demo";
/// How many registrations the sample key allows (the sample devices take a few;
/// the rest are for `onboardctl device simulate`).
pub const KEY_USES: u32 = 100;
/// Days the sample key is valid.
pub const KEY_DAYS: u32 = 30;

/// Code, name, publish templates, subscribe templates, default configuration.
type SampleModel = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    Vec<&'static str>,
    Value,
);

/// The sample device models: code, name, publish and subscribe templates, default
/// configuration. Every model keeps `devices/{device_id}/#`, where the status
/// topic (`broker.status_topic`, `devices/+/status`) is, so its devices activate.
fn models() -> Vec<SampleModel> {
    vec![
        (
            "tempsensor",
            "Temperature sensor",
            vec!["devices/{device_id}/#"],
            vec!["devices/{device_id}/#"],
            json!({"report_interval_seconds": 60, "unit": "celsius"}),
        ),
        (
            "smartplug",
            "Smart plug",
            vec!["devices/{device_id}/#"],
            vec!["devices/{device_id}/#", "fleet/{model}/commands"],
            json!({"max_load_watts": 2300, "report_interval_seconds": 30}),
        ),
        (
            "gateway",
            "Site gateway",
            vec!["devices/{device_id}/#", "sites/{serial}/telemetry"],
            vec!["devices/{device_id}/#"],
            json!({"uplink": "ethernet", "report_interval_seconds": 10}),
        ),
    ]
}

/// The sample devices: serial and model.
pub const DEVICES: [(&str, &str); 5] = [
    ("DEMO-0001", "tempsensor"),
    ("DEMO-0002", "tempsensor"),
    ("DEMO-0003", "smartplug"),
    ("DEMO-0004", "smartplug"),
    ("DEMO-0005", "gateway"),
];

fn has_devices(onboard: &Onboard) -> Result<bool, CliError> {
    let page = PageRequest::new(1, None).map_err(|e| CliError::Core(CoreError::Invalid(e)))?;
    Ok(!onboard
        .devices(&DeviceFilter::default(), &page)?
        .items
        .is_empty())
}

fn serial_taken(onboard: &Onboard, serial: &str) -> Result<bool, CliError> {
    let page = PageRequest::new(100, None).map_err(|e| CliError::Core(CoreError::Invalid(e)))?;
    let filter = DeviceFilter {
        q: Some(serial.to_owned()),
        ..DeviceFilter::default()
    };
    Ok(onboard
        .devices(&filter, &page)?
        .items
        .iter()
        .any(|d| d.serial.as_str() == serial))
}

pub fn load(onboard: &Onboard, force: bool) -> Result<Rendered, CliError> {
    if has_devices(onboard)? && !force {
        return Err(CliError::Core(CoreError::Conflict(
            "the database already holds devices: load-test-data is for an empty development database (--force adds the sample data anyway)".into(),
        )));
    }
    let actor = Actor::cli();
    let mut created_models = Vec::new();
    for (code, name, publish, subscribe, config) in models() {
        match onboard.model(code) {
            Ok(_) => continue, // --force: an existing model is left as it is
            Err(CoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        onboard.create_model(
            &actor,
            code,
            &ModelRequest {
                name: Some(name.into()),
                description: Some(format!("{name} (sample data)")),
                publish_topics: Some(publish.into_iter().map(str::to_owned).collect()),
                subscribe_topics: Some(subscribe.into_iter().map(str::to_owned).collect()),
                max_qos: Some(1),
                retain_allowed: Some(false),
                config: Some(config),
                credential: None,
            },
        )?;
        created_models.push(code);
    }
    let mut keys = onboard.create_key_batch(
        &actor,
        &KeyBatchRequest {
            batch: BATCH.into(),
            count: 1,
            max_uses: KEY_USES,
            valid_days: Some(KEY_DAYS),
            ..KeyBatchRequest::default()
        },
    )?;
    let key = keys.pop().ok_or_else(|| {
        CliError::Core(CoreError::Internal("the key batch came back empty".into()))
    })?;
    let mut devices = Vec::new();
    for (serial, model) in DEVICES {
        if force && serial_taken(onboard, serial)? {
            continue;
        }
        // Self-registration with the batch's key, as a device would do it. The
        // generated private key is dropped: these devices are rows to look at;
        // `device simulate` makes live ones.
        let done = onboard.register(RegisterRequest {
            key: Some(SecretString::new(key.secret.expose())),
            serial: serial.into(),
            model: Some(model.into()),
            firmware_version: Some("1.0.0".into()),
            metadata: Some(json!({"sample": true})),
            ..RegisterRequest::default()
        })?;
        devices.push(done.device);
    }
    let rows = devices
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.serial.to_string(),
                d.model.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                d.status.to_string(),
            ]
        })
        .collect();
    Ok(Rendered::table(
        json!({
            "models": created_models,
            "batch": BATCH,
            "key": {"id": key.key.id, "prefix": key.key.prefix, "key": key.secret.expose(),
                    "max_uses": key.key.max_uses, "expires_at": key.key.expires_at},
            "devices": devices,
        }),
        vec!["DEVICE", "SERIAL", "MODEL", "STATUS"],
        rows,
    )
    .with_note(format!(
        "{} model(s) and {} device(s) created; bootstrap key of batch {BATCH} ({} uses, shown once): {}",
        created_models.len(),
        devices.len(),
        key.key.max_uses,
        key.secret.expose()
    )))
}
