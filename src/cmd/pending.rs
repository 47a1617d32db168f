//! Subcommands whose component is not built yet say so plainly instead of pretending to run.

use std::process::ExitCode;

/// Arguments are accepted and ignored until the component exists, so scripts get one clear error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for the future component.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

/// Reports that `name` is not implemented yet and exits with EX_UNAVAILABLE (69).
pub fn run(name: &str, issue: &str) -> anyhow::Result<ExitCode> {
    eprintln!("oxlet {name}: not implemented yet (arrives with {issue}); nothing was started");
    Ok(ExitCode::from(69))
}
