//! `onboardctl`, the admin CLI. It reads the same settings as the server and works on
//! the same database through `onboard_core` (no HTTP hop), so both always agree.
//!
//! Exit codes: 0 success; 1 the operation failed (not found, conflict, invalid
//! input); 2 usage or settings error; 3 a dependency (the database) is unavailable,
//! so retrying later may help; 4 the command ran to the end but part of it failed
//! (`devices import` with failed rows: the good rows are imported, the result is
//! printed, and the failed rows are listed); 5 a simulated device was revoked
//! (`device simulate`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use onboard_core::{CoreError, Onboard, Settings, SettingsError};
use serde_json::json;

mod ca;
mod docs;
mod fleet;
mod keys;
mod models;
pub mod output;
mod provisioning;
mod rotation;
pub mod simulate;
mod testdata;

use output::{OutputFormat, Rendered};

/// Onboard's admin CLI.
#[derive(Debug, Parser)]
#[command(name = "onboardctl", version, about)]
pub struct Cli {
    /// Settings file (TOML); see onboard.example.toml.
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// How results are printed.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations (the server does this on start unless
    /// database.run_migrations is false).
    Migrate {
        /// List the pending migrations without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// The certificate authority: create or import it, show it, get its CRL.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Bootstrap key batches.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Devices.
    Devices {
        #[command(subcommand)]
        command: fleet::DevicesCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: fleet::AuditCommand,
    },
    /// Device models and their topic templates.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Broker permissions.
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Apply once what the server's reconciler does continuously: sign a new CRL
    /// when the newest is past half its validity, install it in the broker, and
    /// apply every pending broker and cloud change (after a crash or an outage).
    /// Exits 3 when something is still pending afterwards.
    Reconcile,
    /// Credential rotation (docs/rotation.md).
    Rotation {
        #[command(subcommand)]
        command: rotation::RotationCommand,
    },
    /// Admin API credentials.
    Admin {
        #[command(subcommand)]
        command: fleet::AdminCommand,
    },
    /// Print a shell completion script: `onboardctl completions bash >
    /// /etc/bash_completion.d/onboardctl` (zsh: a file `_onboardctl` on $fpath;
    /// fish: ~/.config/fish/completions/onboardctl.fish). Reads no settings.
    Completions {
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Fill an empty development database with sample data: device models with
    /// topic templates and default configuration, a bootstrap key batch (`demo`,
    /// its key printed once) and a few devices registered with it. Refused when
    /// the database already holds devices, unless --force.
    LoadTestData {
        /// Add the sample data to a database that already holds devices (existing
        /// models and sample serials are left as they are).
        #[arg(long)]
        force: bool,
    },
    /// A reference device: registers over HTTP, connects to the broker, reports
    /// its status. Reads no settings and no database.
    Device {
        #[command(subcommand)]
        command: simulate::DeviceCommand,
    },
    /// Print the manual page (roff): `onboardctl man > onboardctl.1; man
    /// ./onboardctl.1`. Reads no settings.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Rebuild broker permissions from the registry (repairs drift): registered and
    /// active devices get their topics, everything else loses access, and the
    /// current CRL is installed.
    Sync,
}

/// `devices import` finished, but some rows failed (they are listed).
pub const EXIT_PARTIAL: u8 = 4;
/// `device simulate`: the broker refused a simulated device as revoked.
pub const EXIT_REVOKED: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Core(#[from] CoreError),
    /// A simulated device failed (`device simulate`).
    #[error("{0}")]
    Simulate(#[from] simulate::SimulateError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Settings(_) => 2,
            CliError::Core(CoreError::Setup(_)) => 2,
            CliError::Core(
                CoreError::Unavailable(_) | CoreError::Pending { .. } | CoreError::Cloud(_),
            ) => 3,
            CliError::Core(_) => 1,
            CliError::Simulate(e) => e.exit_code(),
        }
    }
}

/// Runs one command with settings from the process environment and `--config`.
pub fn run(cli: &Cli) -> Result<Rendered, CliError> {
    // Generated from the CLI definition alone: no settings, no database.
    match &cli.command {
        Command::Completions { shell } => return Ok(docs::completions(*shell)),
        Command::Man => return docs::man(),
        Command::Device { command } => return simulate::run(command),
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    init_logging();
    execute(&cli.command, settings)
}

/// Runs one command with the given settings.
pub fn execute(command: &Command, settings: Settings) -> Result<Rendered, CliError> {
    match command {
        // These need no database.
        Command::Admin { command } => return fleet::admin(command),
        Command::Completions { shell } => return Ok(docs::completions(*shell)),
        Command::Man => return docs::man(),
        Command::Device { command } => return simulate::run(command),
        _ => {}
    }
    let onboard = Onboard::open(settings)?;
    if !matches!(command, Command::Migrate { .. }) {
        onboard.ensure_schema()?;
    }
    match command {
        Command::Migrate { dry_run: true } => {
            let pending = onboard.pending_migrations()?;
            Ok(migrations(&pending, "pending", onboard.backend()))
        }
        Command::Migrate { dry_run: false } => {
            let applied = onboard.migrate()?;
            Ok(migrations(&applied, "applied", onboard.backend()))
        }
        Command::Ca { command } => ca::run(command, &onboard),
        Command::Keys { command } => keys::run(command, &onboard),
        Command::Devices { command } => fleet::devices(command, &onboard),
        Command::Audit { command } => fleet::audit(command, &onboard),
        Command::Admin { command } => fleet::admin(command),
        Command::Completions { shell } => Ok(docs::completions(*shell)),
        Command::Man => docs::man(),
        Command::Device { command } => simulate::run(command),
        Command::LoadTestData { force } => testdata::load(&onboard, *force),
        Command::Models { command } => models::run(command, &onboard),
        Command::Rotation { command } => rotation::run(command, &onboard),
        Command::Reconcile => {
            let r = onboard.reconcile(true)?;
            let (pending, _) = onboard.pending_effects()?;
            let crl = r
                .installed_crl
                .as_ref()
                .map(|c| json!({"number": c.number, "next_update": c.next_update.to_rfc3339()}));
            if !r.errors.is_empty() {
                return Err(CliError::Core(CoreError::Unavailable(format!(
                    "{} change(s) applied, {} still pending: {}",
                    r.applied,
                    pending,
                    r.errors.join("; ")
                ))));
            }
            Ok(Rendered::table(
                json!({"applied": r.applied, "pending": pending, "crl_refreshed": r.crl_refreshed, "installed_crl": crl}),
                vec![],
                vec![],
            )
            .with_note(format!(
                "{} pending change(s) applied; CRL {} installed{}",
                r.applied,
                r.installed_crl.map(|c| c.number).unwrap_or_default(),
                if r.crl_refreshed { " (newly signed)" } else { "" }
            )))
        }
        Command::Acl {
            command: AclCommand::Sync,
        } => {
            let done = onboard.acl_sync()?;
            Ok(Rendered::table(
                json!({"granted": done.granted, "crl_number": done.crl_number}),
                vec![],
                vec![],
            )
            .with_note(format!(
                "broker permissions rebuilt: {} device(s) granted; CRL number {} installed",
                done.granted, done.crl_number
            )))
        }
    }
}

/// Tells a person where the next page starts (JSON carries `next_cursor`).
pub(crate) fn page_note(out: Rendered, empty: bool, next: &Option<String>) -> Rendered {
    match (empty, next) {
        (true, _) => out.with_note("nothing found"),
        (false, Some(cursor)) => out.with_note(format!("more: --after {cursor}")),
        (false, None) => out,
    }
}

fn migrations(versions: &[String], state: &'static str, backend: &str) -> Rendered {
    let rows = versions
        .iter()
        .map(|v| vec![v.clone(), state.to_owned()])
        .collect();
    let note = if versions.is_empty() {
        format!("{backend}: the database is up to date")
    } else {
        format!("{backend}: {} migration(s) {state}", versions.len())
    };
    Rendered::table(
        json!({ "backend": backend, state: versions }),
        vec!["VERSION", "STATE"],
        rows,
    )
    .with_note(note)
}

/// Results go to stdout; the libraries' warnings and errors to stderr.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_separate_usage_failure_and_unavailability() {
        let settings = SettingsError::Invalid {
            setting: "x",
            reason: "y".into(),
        };
        assert_eq!(CliError::from(settings).exit_code(), 2);
        assert_eq!(
            CliError::from(CoreError::Unavailable("db".into())).exit_code(),
            3
        );
        assert_eq!(
            CliError::from(CoreError::NotFound { entity: "device" }).exit_code(),
            1
        );
    }

    #[test]
    fn outputs_render_as_table_and_json() {
        let out = migrations(&["20261123000001".into()], "applied", "sqlite");
        let table = out.to_text(OutputFormat::Table).unwrap();
        assert!(table.contains("20261123000001"), "{table}");
        assert!(table.contains("sqlite: 1 migration(s) applied"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&out.to_text(OutputFormat::Json).unwrap()).unwrap();
        assert_eq!(json["applied"][0], "20261123000001");
        assert_eq!(json["backend"], "sqlite");
    }
}
