//! `onboardctl models create|list|show|update|delete` and
//! `onboardctl models firmware upload|show|download`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use onboard_core::domain::{DeviceModel, ModelFirmware};
use onboard_core::{Actor, CoreError, ModelRequest, Onboard};
use serde_json::json;

use crate::output::Rendered;
use crate::CliError;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Create a device model.
    Create {
        /// 1 to 64 of a-z 0-9 - _.
        code: String,
        #[command(flatten)]
        fields: ModelFields,
    },
    List,
    Show {
        code: String,
    },
    /// Change a model; its devices' broker permissions follow.
    Update {
        code: String,
        #[command(flatten)]
        fields: ModelFields,
    },
    /// Delete a model no device or key uses.
    Delete {
        code: String,
    },
    /// The model's firmware: ESP32 application images.
    Firmware {
        #[command(subcommand)]
        command: FirmwareCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Upload an ESP32 application image (as `idf.py build` writes it) as the
    /// model's firmware. It is validated (image header, segments, checksum,
    /// appended SHA-256, application descriptor); version, project and ESP-IDF
    /// version are read from it. An invalid image changes nothing.
    Upload {
        code: String,
        /// The image file (at most assets.max_firmware_bytes).
        file: PathBuf,
    },
    /// Show the model's firmware: version, SHA-256, size, project, ESP-IDF version.
    Show { code: String },
    /// Write the model's firmware image to a file.
    Download {
        code: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ModelFields {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A publish topic template (repeat for several), e.g. 'devices/{device_id}/#'.
    #[arg(long = "publish", value_name = "TEMPLATE")]
    publish: Vec<String>,
    /// A subscribe topic template (repeat for several).
    #[arg(long = "subscribe", value_name = "TEMPLATE")]
    subscribe: Vec<String>,
    #[arg(long)]
    max_qos: Option<u8>,
    /// Allow retained messages (true or false).
    #[arg(long)]
    retain: Option<bool>,
    /// What the model's devices get by default: certificate or password.
    #[arg(long)]
    credential: Option<String>,
}

impl ModelFields {
    fn request(&self) -> ModelRequest {
        ModelRequest {
            name: self.name.clone(),
            description: self.description.clone(),
            publish_topics: (!self.publish.is_empty()).then(|| self.publish.clone()),
            subscribe_topics: (!self.subscribe.is_empty()).then(|| self.subscribe.clone()),
            max_qos: self.max_qos,
            retain_allowed: self.retain,
            config: None,
            credential: self.credential.clone(),
        }
    }
}

fn row(m: &DeviceModel, fw: Option<&ModelFirmware>) -> Vec<String> {
    vec![
        m.code.to_string(),
        m.name.clone(),
        m.publish_topics.join(" "),
        m.subscribe_topics.join(" "),
        m.max_qos.to_string(),
        fw.map_or_else(|| "-".to_owned(), |f| f.version.clone()),
    ]
}

const HEADERS: [&str; 6] = [
    "CODE",
    "NAME",
    "PUBLISH",
    "SUBSCRIBE",
    "MAX QOS",
    "FIRMWARE",
];

/// The model as JSON, with its firmware (null until uploaded).
fn model_json(m: &DeviceModel, fw: Option<&ModelFirmware>) -> serde_json::Value {
    let mut v = json!(m);
    v["firmware"] = json!(fw);
    v
}

fn one(onboard: &Onboard, m: &DeviceModel) -> Result<Rendered, CliError> {
    let fw = onboard.firmware_info(m.code.as_str())?;
    Ok(Rendered::table(
        model_json(m, fw.as_ref()),
        HEADERS.to_vec(),
        vec![row(m, fw.as_ref())],
    ))
}

const FIRMWARE_HEADERS: [&str; 7] = [
    "MODEL", "VERSION", "SHA256", "SIZE", "PROJECT", "IDF", "UPLOADED",
];

fn firmware_table(fw: &ModelFirmware) -> Rendered {
    Rendered::table(
        json!(fw),
        FIRMWARE_HEADERS.to_vec(),
        vec![vec![
            fw.model.to_string(),
            fw.version.clone(),
            fw.sha256.to_string(),
            fw.size.to_string(),
            fw.project.clone(),
            fw.idf_version.clone(),
            fw.uploaded_at.to_rfc3339(),
        ]],
    )
}

fn firmware(command: &FirmwareCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    match command {
        FirmwareCommand::Upload { code, file } => {
            let fw = onboard.upload_firmware_file(&Actor::cli(), code, file)?;
            Ok(firmware_table(&fw).with_note(format!(
                "firmware {} uploaded for device model {code}",
                fw.version
            )))
        }
        FirmwareCommand::Show { code } => {
            let fw = onboard.firmware_info(code)?.ok_or(CoreError::NotFound {
                entity: "model firmware",
            })?;
            Ok(firmware_table(&fw))
        }
        FirmwareCommand::Download { code, out } => {
            let mut opened = onboard.model_firmware(code)?;
            let written = std::fs::File::create(out)
                .and_then(|mut f| std::io::copy(&mut opened.file, &mut f))
                .map_err(|e| CoreError::Setup(format!("cannot write {}: {e}", out.display())))?;
            Ok(firmware_table(&opened.firmware)
                .with_note(format!("wrote {written} bytes to {}", out.display())))
        }
    }
}

pub fn run(command: &ModelsCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    let actor = Actor::cli();
    match command {
        ModelsCommand::Create { code, fields } => one(
            onboard,
            &onboard.create_model(&actor, code, &fields.request())?,
        ),
        ModelsCommand::List => {
            let all = onboard.models()?;
            let firmware = onboard.firmware_of_models()?;
            let of = |m: &DeviceModel| firmware.iter().find(|f| f.model == m.code);
            Ok(Rendered::table(
                all.iter().map(|m| model_json(m, of(m))).collect(),
                HEADERS.to_vec(),
                all.iter().map(|m| row(m, of(m))).collect(),
            ))
        }
        ModelsCommand::Show { code } => one(onboard, &onboard.model(code)?),
        ModelsCommand::Update { code, fields } => one(
            onboard,
            &onboard.update_model(&actor, code, &fields.request())?,
        ),
        ModelsCommand::Firmware { command } => firmware(command, onboard),
        ModelsCommand::Delete { code } => {
            onboard.delete_model(&actor, code)?;
            Ok(Rendered::table(json!({"deleted": code}), vec![], vec![])
                .with_note(format!("device model {code} deleted")))
        }
    }
}
