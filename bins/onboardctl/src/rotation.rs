//! `onboardctl rotation`: the CronJob's cycle, the operator's trigger and status.

use clap::Subcommand;
use onboard_core::domain::DeviceId;
use onboard_core::{Actor, CoreError, Onboard};
use serde_json::json;

use crate::output::Rendered;
use crate::CliError;

#[derive(Debug, Subcommand)]
pub enum RotationCommand {
    /// Run exactly one rotation cycle, as the Kubernetes CronJob does: time out
    /// PENDING rotations past rotation.timeout_seconds (the old credential stays),
    /// queue the fleet when rotation.cron came due since the last scheduled run,
    /// and start rotations while fewer than rotation.max_in_flight are PENDING.
    /// Prints one summary line; exits 0 when the cycle ran, 1 when it failed, 2
    /// on a settings error, 3 when the database is unavailable.
    RunJob,
    /// Counts per rotation state and the devices in each.
    Status,
    /// Queue every certificate device in service that is OK, or one device
    /// (OK or TIMEOUT) with --device.
    Trigger {
        /// The device id.
        #[arg(long)]
        device: Option<String>,
    },
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

pub fn run(command: &RotationCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    match command {
        RotationCommand::RunJob => {
            let summary = onboard.run_rotation_cycle()?;
            Ok(Rendered::table(json!(summary), vec![], vec![]).with_note(summary.to_string()))
        }
        RotationCommand::Status => {
            let status = onboard.rotation_status()?;
            let mut rows = Vec::new();
            for s in &status.states {
                for d in &s.devices {
                    rows.push(vec![
                        s.state.to_string(),
                        d.device_id.to_string(),
                        d.attempts.to_string(),
                        time(d.started_at),
                        time(d.deadline_at),
                    ]);
                }
            }
            let counts: Vec<String> = status
                .states
                .iter()
                .map(|s| format!("{} {}", s.state, s.count))
                .collect();
            Ok(Rendered::table(
                json!(status),
                vec!["STATE", "DEVICE", "ATTEMPTS", "STARTED", "DEADLINE"],
                rows,
            )
            .with_note(format!(
                "{}; last scheduled run {}",
                counts.join(", "),
                status
                    .last_scheduled_run
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "none".into())
            )))
        }
        RotationCommand::Trigger { device } => {
            let id = device
                .as_deref()
                .map(|d| d.parse::<DeviceId>())
                .transpose()
                .map_err(|e| CliError::Core(CoreError::Invalid(e)))?;
            let n = onboard.trigger_rotation(&Actor::cli(), id)?;
            Ok(
                Rendered::table(json!({"queued": n}), vec![], vec![]).with_note(match id {
                    Some(id) => format!("device {id} queued for rotation"),
                    None => format!("{n} device(s) queued for rotation"),
                }),
            )
        }
    }
}
