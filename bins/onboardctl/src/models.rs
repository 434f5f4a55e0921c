//! `onboardctl models create|list|show|update|delete`.

use clap::{Args, Subcommand};
use onboard_core::domain::DeviceModel;
use onboard_core::{Actor, ModelRequest, Onboard};
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

fn row(m: &DeviceModel) -> Vec<String> {
    vec![
        m.code.to_string(),
        m.name.clone(),
        m.publish_topics.join(" "),
        m.subscribe_topics.join(" "),
        m.max_qos.to_string(),
    ]
}

const HEADERS: [&str; 5] = ["CODE", "NAME", "PUBLISH", "SUBSCRIBE", "MAX QOS"];

fn one(m: &DeviceModel) -> Rendered {
    Rendered::table(json!(m), HEADERS.to_vec(), vec![row(m)])
}

pub fn run(command: &ModelsCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    let actor = Actor::cli();
    match command {
        ModelsCommand::Create { code, fields } => Ok(one(&onboard.create_model(
            &actor,
            code,
            &fields.request(),
        )?)),
        ModelsCommand::List => {
            let all = onboard.models()?;
            Ok(Rendered::table(
                json!(all),
                HEADERS.to_vec(),
                all.iter().map(row).collect(),
            ))
        }
        ModelsCommand::Show { code } => Ok(one(&onboard.model(code)?)),
        ModelsCommand::Update { code, fields } => Ok(one(&onboard.update_model(
            &actor,
            code,
            &fields.request(),
        )?)),
        ModelsCommand::Delete { code } => {
            onboard.delete_model(&actor, code)?;
            Ok(Rendered::table(json!({"deleted": code}), vec![], vec![])
                .with_note(format!("device model {code} deleted")))
        }
    }
}
