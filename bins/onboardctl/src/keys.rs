//! `onboardctl keys ...`: bootstrap key batches.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use onboard_core::domain::{BootstrapKey, BootstrapKeyFilter, BootstrapKeyId, PageRequest};
use onboard_core::{Actor, CoreError, KeyBatchRequest, Onboard};
use serde_json::json;

use crate::output::Rendered;
use crate::{page_note, CliError};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a batch of bootstrap keys. The keys are shown once: on stdout, or in
    /// --out (a 0600 CSV file) with only their prefixes on stdout.
    Create {
        #[arg(long)]
        batch: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        /// Valid from now for this many days (default 30).
        #[arg(long)]
        valid_days: Option<u32>,
        /// Bind the keys to a device model.
        #[arg(long)]
        model: Option<String>,
        /// Write `id,prefix,key,max_uses,not_before,expires_at,model` rows here
        /// (created with mode 0600; refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        batch: Option<String>,
        /// Only active (true) or inactive (false) keys.
        #[arg(long)]
        active: Option<bool>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The cursor printed under the previous page.
        #[arg(long)]
        after: Option<String>,
    },
    Show {
        id: String,
    },
    Activate {
        id: String,
    },
    Deactivate {
        id: String,
    },
    Delete {
        id: String,
    },
}

fn key_json(k: &BootstrapKey) -> serde_json::Value {
    json!({
        "id": k.id, "batch": k.batch, "prefix": k.prefix, "model": k.model,
        "max_uses": k.max_uses, "uses": k.uses, "not_before": k.not_before,
        "expires_at": k.expires_at, "active": k.active,
        "created_at": k.created_at, "updated_at": k.updated_at,
    })
}

fn key_row(k: &BootstrapKey) -> Vec<String> {
    vec![
        k.id.to_string(),
        k.batch.clone(),
        k.prefix.clone(),
        format!("{}/{}", k.uses, k.max_uses),
        k.expires_at.to_rfc3339(),
        if k.active { "yes" } else { "no" }.into(),
    ]
}

const HEADERS: [&str; 6] = ["ID", "BATCH", "PREFIX", "USES", "EXPIRES", "ACTIVE"];

fn parse_id(id: &str) -> Result<BootstrapKeyId, CliError> {
    id.parse()
        .map_err(|e| CliError::Core(CoreError::Invalid(e)))
}

fn one(k: &BootstrapKey) -> Rendered {
    Rendered::table(key_json(k), HEADERS.to_vec(), vec![key_row(k)])
}

pub fn run(command: &KeysCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    let actor = Actor::cli();
    match command {
        KeysCommand::Create {
            batch,
            count,
            max_uses,
            valid_days,
            model,
            out,
        } => {
            // Open the file first: a batch is never created without a place to put it.
            let mut file = out.as_ref().map(|p| create_private(p)).transpose()?;
            let created = onboard.create_key_batch(
                &actor,
                &KeyBatchRequest {
                    batch: batch.clone(),
                    count: *count,
                    max_uses: *max_uses,
                    valid_days: *valid_days,
                    model: model.clone(),
                    ..KeyBatchRequest::default()
                },
            )?;
            let keys: Vec<_> = created
                .iter()
                .map(|c| {
                    json!({
                        "id": c.key.id, "prefix": c.key.prefix, "key": c.secret.expose(),
                        "max_uses": c.key.max_uses, "not_before": c.key.not_before,
                        "expires_at": c.key.expires_at, "model": c.key.model,
                    })
                })
                .collect();
            if let (Some(file), Some(path)) = (file.as_mut(), out.as_ref()) {
                let mut csv = String::from("id,prefix,key,max_uses,not_before,expires_at,model\n");
                for c in &created {
                    csv.push_str(&format!(
                        "{},{},{},{},{},{},{}\n",
                        c.key.id,
                        c.key.prefix,
                        c.secret.expose(),
                        c.key.max_uses,
                        c.key.not_before.to_rfc3339(),
                        c.key.expires_at.to_rfc3339(),
                        c.key.model.as_ref().map(|m| m.as_str()).unwrap_or("")
                    ));
                }
                file.write_all(csv.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error("write", path, e))?;
                let rows = created.iter().map(|c| key_row(&c.key)).collect();
                let listed: Vec<_> = created.iter().map(|c| key_json(&c.key)).collect();
                return Ok(Rendered::table(
                    json!({"batch": batch, "keys": listed, "out": path}),
                    HEADERS.to_vec(),
                    rows,
                )
                .with_note(format!(
                    "{} key(s) written to {} (keep it secret; the keys are not shown again)",
                    created.len(),
                    path.display()
                )));
            }
            let rows = created
                .iter()
                .map(|c| {
                    vec![
                        c.key.id.to_string(),
                        c.key.prefix.clone(),
                        c.secret.expose().to_owned(),
                    ]
                })
                .collect();
            Ok(Rendered::table(
                json!({"batch": batch, "keys": keys}),
                vec!["ID", "PREFIX", "KEY"],
                rows,
            )
            .with_note("the keys are shown once: store them now"))
        }
        KeysCommand::List {
            batch,
            active,
            limit,
            after,
        } => {
            let page = PageRequest::new(*limit, after.clone()).map_err(CoreError::Invalid)?;
            let found = onboard.list_keys(
                &BootstrapKeyFilter {
                    batch: batch.clone(),
                    active: *active,
                },
                &page,
            )?;
            let rows = found.items.iter().map(key_row).collect();
            let items: Vec<_> = found.items.iter().map(key_json).collect();
            let out = Rendered::table(
                json!({"items": items, "next_cursor": found.next_cursor}),
                HEADERS.to_vec(),
                rows,
            );
            Ok(page_note(out, found.items.is_empty(), &found.next_cursor))
        }
        KeysCommand::Show { id } => Ok(one(&onboard.key(parse_id(id)?)?)),
        KeysCommand::Activate { id } => {
            Ok(one(&onboard.set_key_active(&actor, parse_id(id)?, true)?))
        }
        KeysCommand::Deactivate { id } => Ok(one(&onboard.set_key_active(
            &actor,
            parse_id(id)?,
            false,
        )?)),
        KeysCommand::Delete { id } => {
            let id = parse_id(id)?;
            onboard.delete_key(&actor, id)?;
            Ok(Rendered::table(json!({"deleted": id}), vec![], vec![])
                .with_note(format!("bootstrap key {id} deleted")))
        }
    }
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> CliError {
    CliError::Core(CoreError::Setup(format!(
        "cannot {what} {}: {}",
        path.display(),
        e.kind()
    )))
}

/// A new file only its owner can read; an existing file is never overwritten.
pub(crate) fn create_private(path: &std::path::Path) -> Result<std::fs::File, CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| io_error("create", path, e))
}
