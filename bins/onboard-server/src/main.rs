//! `onboard-server`: read settings, set up logging, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Onboard's HTTP server: device self-registration, the admin API, CA and CRL.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Settings file (TOML); see onboard.example.toml.
    #[arg(long, env = "ONBOARD_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match onboard_core::Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("onboard-server: {e}");
            return ExitCode::from(2);
        }
    };
    onboard_server::telemetry::init(&settings.log);
    match onboard_server::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "onboard-server stopped");
            eprintln!("onboard-server: {e}");
            ExitCode::FAILURE
        }
    }
}
