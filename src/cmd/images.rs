//! `oxlet images`: import image archives into containerd's k8s.io namespace.

use std::process::ExitCode;

/// Flags of `oxlet images`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs one images verb.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("images: not implemented yet")
}
