//! Shell completions and the manual page, generated from the clap definition so
//! they always list the commands and flags this binary has.

use clap::CommandFactory;
use serde_json::json;

use crate::output::Rendered;
use crate::{Cli, CliError};

/// The shells `onboardctl completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`, printed as it is.
pub fn completions(shell: Shell) -> Rendered {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "onboardctl", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    Rendered::document(
        json!({ "shell": format!("{shell:?}").to_lowercase(), "script": script }),
        script,
    )
}

/// The manual page in roff: the top-level page, then one section per
/// subcommand (recursively), so `man` shows every command's flags.
pub fn man() -> Result<Rendered, CliError> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    render(&cmd, &mut out).map_err(|e| {
        CliError::Core(onboard_core::CoreError::Internal(format!(
            "cannot render the manual page: {e}"
        )))
    })?;
    let page = String::from_utf8_lossy(&out).into_owned();
    Ok(Rendered::document(json!({ "man": page }), page))
}

fn render(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render(out)?;
    let mut cmd = cmd.clone();
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{} {}", cmd.get_name(), sub.get_name());
        let sub = sub.clone().name(name.clone()).bin_name(name);
        render(&sub, out)?;
    }
    Ok(())
}
