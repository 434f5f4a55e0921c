//! `onboardctl devices list|show`, `onboardctl audit list`, `onboardctl admin token create`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use onboard_core::domain::{AuditFilter, Device, DeviceFilter, DeviceId, ModelCode, PageRequest};
use onboard_core::{CoreError, Onboard};
use serde_json::json;

use crate::output::Rendered;
use crate::{page_note, CliError};

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List devices.
    List {
        /// registered, active, revoked or decommissioned.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        /// Text in serial, name or location.
        #[arg(long)]
        q: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        after: Option<String>,
    },
    /// One device with its certificates.
    Show { id: String },
    /// Register a device: the server generates its key and certificate; the
    /// encrypted bundle is written to --out (0600) and its password printed once.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        location: Option<String>,
        #[arg(long)]
        firmware: Option<String>,
        /// The hardware serial (default: the device id).
        #[arg(long)]
        serial: Option<String>,
        /// certificate or password (default: the model's, else certificate).
        #[arg(long)]
        credential: Option<String>,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Register many devices from a CSV (columns: name, model, location, firmware,
    /// optional serial, optional credential). Writes one bundle per device and a manifest with the
    /// passwords (0600) to --out; reports bad rows and goes on; running it again on
    /// the same file adds nothing.
    Import {
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "bundles")]
        out: PathBuf,
    },
    /// Revoke a device's certificates (CRL) and broker access.
    Revoke {
        id: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
        /// affiliationChanged, superseded, cessationOfOperation, certificateHold,
        /// privilegeWithdrawn, aACompromise.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Decommission a device: revoke it and keep its record as decommissioned.
    Delete { id: String },
    /// Devices still `registered` after activation.report_after_hours; with
    /// --revoke, revoke those past activation.revoke_after_hours.
    Unactivated {
        #[arg(long)]
        revoke: bool,
    },
    /// Change a device's name or location.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        location: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit events, newest first.
    List {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// success or failure.
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339 time, e.g. 2026-11-23T00:00:00Z.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin tokens for the HTTP API.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new admin token (once) and the hash to add to admin.token_hashes.
    Create {
        /// Names the operator in the audit log: 1 to 32 of a-z 0-9 - _.
        #[arg(long, default_value = "admin")]
        name: String,
    },
}

fn device_row(d: &Device) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.serial.to_string(),
        d.status.to_string(),
        d.model.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        d.batch.clone().unwrap_or_default(),
        d.created_at.to_rfc3339(),
    ]
}

const DEVICE_HEADERS: [&str; 6] = ["ID", "SERIAL", "STATUS", "MODEL", "BATCH", "CREATED"];

fn invalid(e: onboard_core::domain::InvalidValue) -> CliError {
    CliError::Core(CoreError::Invalid(e))
}

pub fn devices(command: &DevicesCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    match command {
        DevicesCommand::List {
            status,
            model,
            batch,
            q,
            limit,
            after,
        } => {
            let filter = DeviceFilter {
                status: status
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(invalid)?,
                model: model
                    .as_deref()
                    .map(ModelCode::parse)
                    .transpose()
                    .map_err(invalid)?,
                batch: batch.clone(),
                q: q.clone(),
            };
            let page = PageRequest::new(*limit, after.clone()).map_err(invalid)?;
            let found = onboard.devices(&filter, &page)?;
            let out = Rendered::table(
                json!({"items": found.items, "next_cursor": found.next_cursor}),
                DEVICE_HEADERS.to_vec(),
                found.items.iter().map(device_row).collect(),
            );
            Ok(page_note(out, found.items.is_empty(), &found.next_cursor))
        }
        DevicesCommand::Show { id } => {
            let id: DeviceId = id.parse().map_err(invalid)?;
            let d = onboard.device(id)?;
            let certs: Vec<_> = d
                .certificates
                .iter()
                .map(|c| {
                    json!({
                        "serial": c.serial, "status": c.status, "not_before": c.not_before,
                        "not_after": c.not_after, "revoked_at": c.revoked_at,
                        "revocation_reason": c.revocation_reason, "fingerprint_sha256": c.fingerprint,
                    })
                })
                .collect();
            let mut json = serde_json::to_value(&d.device)
                .map_err(|e| CliError::Core(CoreError::Internal(e.to_string())))?;
            json["current_certificate"] = json!(d.current_certificate.as_ref().map(|c| &c.serial));
            json["certificates"] = json!(certs);
            let mut note = match &d.current_certificate {
                Some(c) => format!(
                    "current certificate {} (until {})",
                    c.serial,
                    c.not_after.to_rfc3339()
                ),
                None => "no valid certificate".into(),
            };
            if let Some(a) = &d.aws {
                json["aws"] = json!({
                    "thing_name": a.thing_name, "thing_arn": a.thing_arn,
                    "certificate_id": a.certificate_id, "certificate_arn": a.certificate_arn,
                });
                note.push_str(&format!(
                    "\nAWS IoT: thing {} ({})\n         certificate {} ({})",
                    a.thing_name, a.thing_arn, a.certificate_id, a.certificate_arn
                ));
            }
            Ok(
                Rendered::table(json, DEVICE_HEADERS.to_vec(), vec![device_row(&d.device)])
                    .with_note(note),
            )
        }
        DevicesCommand::Register {
            name,
            model,
            location,
            firmware,
            serial,
            credential,
            out,
        } => crate::provisioning::register(
            onboard,
            &crate::provisioning::RegisterArgs {
                name,
                model: model.as_deref(),
                location: location.as_deref(),
                firmware: firmware.as_deref(),
                serial: serial.as_deref(),
                credential: credential.as_deref(),
                out,
            },
        ),
        DevicesCommand::Import { csv, out } => crate::provisioning::import(onboard, csv, out),
        DevicesCommand::Revoke { id, reason } => crate::provisioning::revoke(onboard, id, reason),
        DevicesCommand::Delete { id } => crate::provisioning::delete(onboard, id),
        DevicesCommand::Unactivated { revoke } => {
            let found = onboard.unactivated_devices(*revoke)?;
            let out = Rendered::table(
                json!({"items": found.devices, "revoked": found.revoked}),
                DEVICE_HEADERS.to_vec(),
                found.devices.iter().map(device_row).collect(),
            );
            Ok(out.with_note(format!(
                "{} device(s) not activated; {} revoked now",
                found.devices.len(),
                found.revoked.len()
            )))
        }
        DevicesCommand::Update { id, name, location } => {
            crate::provisioning::update(onboard, id, name.as_deref(), location.as_deref())
        }
    }
}

pub fn audit(command: &AuditCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    let AuditCommand::List {
        device,
        action,
        outcome,
        since,
        limit,
        after,
    } = command;
    let filter = AuditFilter {
        device_id: device
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid)?,
        action: action.clone(),
        outcome: outcome
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(invalid)?,
        since: *since,
        until: None,
    };
    let page = PageRequest::new(*limit, after.clone()).map_err(invalid)?;
    let found = onboard.audit_events(&filter, &page)?;
    let rows = found
        .items
        .iter()
        .map(|e| {
            vec![
                e.occurred_at.to_rfc3339(),
                e.actor.clone(),
                e.action.clone(),
                e.outcome.to_string(),
                e.reason.clone().unwrap_or_default(),
                e.serial.clone().unwrap_or_default(),
                e.key_prefix.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let out = Rendered::table(
        json!({"items": found.items, "next_cursor": found.next_cursor}),
        vec![
            "TIME", "ACTOR", "ACTION", "OUTCOME", "REASON", "SERIAL", "KEY",
        ],
        rows,
    );
    Ok(page_note(out, found.items.is_empty(), &found.next_cursor))
}

pub fn admin(command: &AdminCommand) -> Result<Rendered, CliError> {
    let AdminCommand::Token(TokenCommand::Create { name }) = command;
    let token = onboard_core::secrets::new_admin_token(name)?;
    Ok(Rendered::table(
        json!({"name": token.name, "token": token.token.expose(), "hash": token.hash}),
        vec!["NAME", "TOKEN", "HASH"],
        vec![vec![
            token.name.clone(),
            token.token.expose().to_owned(),
            token.hash.clone(),
        ]],
    )
    .with_note("add the hash to admin.token_hashes; the token is shown once"))
}
