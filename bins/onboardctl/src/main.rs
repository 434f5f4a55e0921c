//! `onboardctl`: parse, run, print, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = onboardctl::Cli::parse();
    match onboardctl::run(&cli) {
        Ok(out) => {
            if let Err(e) = onboardctl::output::print(&out, cli.output) {
                eprintln!("onboardctl: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::from(out.exit_code)
        }
        Err(e) => {
            // One line, whatever the underlying error put in it.
            let message = e.to_string();
            let line: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("onboardctl: {}", line.join(" "));
            ExitCode::from(e.exit_code())
        }
    }
}
