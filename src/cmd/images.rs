//! `oxlet images`: import image archives into containerd's k8s.io namespace, list images.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use oxlet_cri::import::{import_archive_with, ImportOptions};
use oxlet_cri::{ImageService, RemoteRuntime, Timeouts};

/// Flags of `oxlet images`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Import OCI-layout or `docker save` archives (tar or tar.gz) and unpack them, like
    /// `ctr -n k8s.io images import` and k3s's air-gap images.
    Import {
        /// Archive files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// containerd's gRPC socket.
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        address: PathBuf,
        /// containerd namespace (the CRI plugin uses k8s.io).
        #[arg(long, default_value = "k8s.io")]
        namespace: String,
        /// Snapshotter to unpack for.
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        /// Only store the content and image records.
        #[arg(long)]
        no_unpack: bool,
        /// Repository for OCI `ref.name` annotations that are only a tag (e.g. `latest`).
        #[arg(long)]
        base_name: Option<String>,
    },
    /// List images through CRI, like `crictl images`.
    Ls {
        /// CRI endpoint of the container runtime.
        #[arg(
            long,
            env = "CONTAINER_RUNTIME_ENDPOINT",
            default_value = oxlet_cri::DEFAULT_ENDPOINT
        )]
        runtime_endpoint: String,
    },
}

/// Runs one images verb.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.verb {
        Verb::Import {
            files,
            address,
            namespace,
            snapshotter,
            no_unpack,
            base_name,
        } => {
            let opts = ImportOptions {
                namespace,
                snapshotter,
                unpack: !no_unpack,
                base_name,
            };
            for file in files {
                let images = import_archive_with(&address, &file, &opts).await?;
                for image in images {
                    writeln!(out, "{}\t{}", image.name, image.digest)?;
                }
            }
        }
        Verb::Ls { runtime_endpoint } => {
            let rt = RemoteRuntime::connect(&runtime_endpoint, Timeouts::default()).await?;
            let mut images = rt.list_images(None).await?;
            images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags));
            writeln!(out, "IMAGE\tID\tSIZE")?;
            for image in images {
                let name = image
                    .repo_tags
                    .first()
                    .or(image.repo_digests.first())
                    .cloned()
                    .unwrap_or_else(|| "<none>".to_string());
                writeln!(out, "{name}\t{}\t{}", image.id, image.size)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
