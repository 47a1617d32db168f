//! The agent's private containerd: every path under `<data-dir>/containerd` (socket, root,
//! state, config, CNI conf dir, registry mirrors, log), so it never touches a containerd the
//! host already runs.
//!
//! The config carries what this kind of host needs (measured, see DESIGN.md): the CRI plugin
//! with `restrict_oom_score_adj` (no CAP_SYS_RESOURCE in containers and VMs without it),
//! network namespaces under its own state dir, the Debian CNI plugin dir, the cgroupfs driver,
//! and `certs.d`-style registry mirrors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use oxlet_cri::containerd_config::ContainerdLayout;

use super::process::Managed;

/// Where Debian's containernetworking-plugins live.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The sandbox image (the kubelet's default, served by the bundled registry mirror).
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long containerd gets after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The layout of one private containerd.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<data-dir>/containerd`.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The CRI endpoint as kubelets spell it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The `certs.d` directory of registry mirrors (`registry.config_path`).
    pub fn certs_d(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    /// containerd's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The PID file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }

    /// Checks that the socket paths fit a unix socket address (a deep `--data-dir` can break
    /// this, and containerd's own error is obscure).
    pub fn check(&self) -> anyhow::Result<()> {
        let ttrpc = format!("{}.ttrpc", self.socket().display());
        if ttrpc.len() > MAX_SOCKET_PATH {
            bail!(
                "{ttrpc} is {} bytes, longer than a unix socket path may be ({MAX_SOCKET_PATH}); \
                 choose a shorter --data-dir",
                ttrpc.len()
            );
        }
        Ok(())
    }

    /// Creates the directories and writes `config.toml`.
    pub fn write(&self) -> anyhow::Result<()> {
        for sub in ["root", "state", "runc", "opt", "cni/net.d", "certs.d"] {
            let d = self.dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        let path = self.config();
        std::fs::write(&path, config_toml(&self.dir, &self.certs_d()))
            .with_context(|| format!("write {}", path.display()))
    }

    /// Starts containerd with this config (stopping one an earlier run left behind).
    pub async fn spawn(&self) -> anyhow::Result<Managed> {
        let config = self.config().display().to_string();
        Managed::spawn(
            "containerd",
            "containerd",
            &["--config".to_string(), config.clone()],
            &self.log(),
            &self.pid_file(),
            &config,
            STOP_GRACE,
        )
        .await
    }
}

/// containerd's config: the shared private-containerd layout under `dir`, with a header
/// saying who writes it.
pub fn config_toml(dir: &Path, certs_d: &Path) -> String {
    let body = oxlet_cri::containerd_config::config_toml(&ContainerdLayout {
        dir,
        sandbox_image: SANDBOX_IMAGE,
        cni_bin_dir: CNI_BIN_DIR,
        registry_config_dir: certs_d,
    });
    format!("# Written by oxlet agent at every start; edits are overwritten.\n{body}")
}

/// Waits until containerd accepts connections on its socket; fails with its log if it exits
/// first or stays silent past `timeout`.
pub async fn wait_ready(
    layout: &Layout,
    process: &mut Managed,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let socket = layout.socket();
    loop {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = process.try_exited() {
            bail!(
                "containerd exited ({status}) before it was ready; last lines of {}:\n{}",
                layout.log().display(),
                process.log_tail(20)
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "containerd's socket {} did not answer within {timeout:?}; last lines of {}:\n{}",
                socket.display(),
                layout.log().display(),
                process.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_path_under_the_data_dir() {
        let l = Layout::new("/var/lib/oxlet/agent/containerd");
        let text = config_toml(&l.dir, &l.certs_d());
        for line in text
            .lines()
            .filter(|l| l.contains('/') && !l.trim_start().starts_with('#'))
        {
            let inside = line.contains("/var/lib/oxlet/agent/containerd")
                || line.contains(CNI_BIN_DIR)
                || line.contains(SANDBOX_IMAGE);
            assert!(inside, "path outside the data dir: {line}");
        }
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains("SystemdCgroup = false"));
        assert!(text.contains(r#"config_path = "/var/lib/oxlet/agent/containerd/certs.d""#));
        assert!(text.contains(r#"conf_dir = "/var/lib/oxlet/agent/containerd/cni/net.d""#));
        assert_eq!(
            l.endpoint(),
            "unix:///var/lib/oxlet/agent/containerd/containerd.sock"
        );
    }

    #[test]
    fn overlong_socket_paths_are_refused() {
        assert!(Layout::new("/var/lib/oxlet/agent/containerd")
            .check()
            .is_ok());
        let deep = format!("/{}", "d".repeat(100));
        let err = Layout::new(deep).check().expect_err("too long");
        assert!(format!("{err}").contains("--data-dir"), "{err}");
    }
}
