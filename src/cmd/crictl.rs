//! `oxlet crictl`: the everyday crictl verbs over the CRI client.

use std::process::ExitCode;

/// Flags of `oxlet crictl`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs one crictl verb.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("crictl: not implemented yet")
}
