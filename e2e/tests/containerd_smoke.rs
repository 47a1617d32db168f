//! The private containerd starts inside a test netns and leaves nothing behind.

use oxlet_e2e::containerd::{Containerd, Options};
use oxlet_e2e::netns::Netns;

#[test]
fn private_containerd_starts_and_cleans_up() -> anyhow::Result<()> {
    let ns = Netns::new("smoke")?;
    let mut ctd = Containerd::start(Some(&ns), &Options::default())?;
    let dir = ctd.dir().to_path_buf();
    assert!(ctd.socket().exists(), "socket {}", ctd.socket().display());
    let pid = ctd.pid().expect("running");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    ctd.stop()?;
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}
