//! `build_images --out DIR`: writes the bundled images `oxlet agent`/`oxlet standalone` serve
//! offline (pause, busybox, echoserver) as OCI archives with fully qualified names, e.g.
//! `DIR/busybox.tar` holding `docker.io/library/busybox:{latest,1.35}`.
//!
//! `make standalone` runs it for `/var/lib/oxlet/agent/images`:
//!
//! ```text
//! cargo run --release -p oxlet-e2e --bin build_images -- --out /var/lib/oxlet/agent/images
//! ```
//!
//! The images are built (or taken from the build cache) by `oxlet_e2e::images`; files already
//! up to date are left alone, others are replaced atomically (temp file, then rename).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

/// Write the bundled OCI image archives into a directory.
#[derive(Debug, Parser)]
struct Cli {
    /// Directory to write `pause.tar`, `busybox.tar` and `echoserver.tar` into.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let built = oxlet_e2e::images::build_all().context("build the images")?;
    std::fs::create_dir_all(&cli.out).with_context(|| format!("create {}", cli.out.display()))?;
    for image in built.all() {
        let name = image
            .archive
            .file_name()
            .context("archive path without a file name")?;
        let dest = cli.out.join(name);
        let state = if install(&image.archive, &dest)? {
            "written"
        } else {
            "up to date"
        };
        println!("{}: {} ({state})", dest.display(), image.refs().join(", "));
    }
    Ok(())
}

/// Copies `src` to `dest` unless it already has the same bytes; returns whether it wrote.
fn install(src: &Path, dest: &Path) -> Result<bool> {
    let data = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    if std::fs::read(dest).is_ok_and(|d| d == data) {
        return Ok(false);
    }
    let tmp = dest.with_extension("tar.tmp");
    std::fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("rename to {}", dest.display()))?;
    Ok(true)
}
