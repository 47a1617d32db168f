//! `oxlet version`: what was built, from which commit, for which Kubernetes API.

use std::process::ExitCode;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("OXLET_GIT_COMMIT");
/// The Kubernetes API version oxlet targets (k8s-openapi feature `v1_33`).
pub const KUBERNETES_API: &str = "v1.33";

/// Flags of `oxlet version`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long, short = 'o', value_parser = ["json", "text"], default_value = "text")]
    output: String,
}

/// Prints the version information.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.output == "json" {
        let v = serde_json::json!({
            "version": VERSION,
            "gitCommit": GIT_COMMIT,
            "kubernetesApi": KUBERNETES_API,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("oxlet {VERSION}");
        println!("git commit: {GIT_COMMIT}");
        println!("kubernetes api: {KUBERNETES_API}");
    }
    Ok(ExitCode::SUCCESS)
}
