//! The configuration of a private containerd (version 2 format, containerd 1.6/1.7) whose
//! files all live under one directory: what `oxlet agent` runs and what the tests run.

use std::path::Path;

/// Where a private containerd keeps its files and finds its helpers.
#[derive(Debug, Clone, Copy)]
pub struct ContainerdLayout<'a> {
    /// Root of everything: `root/`, `state/`, `containerd.sock`, `runc/`, `cni/net.d`.
    pub dir: &'a Path,
    /// The CRI sandbox (pause) image.
    pub sandbox_image: &'a str,
    /// The CNI plugin binaries.
    pub cni_bin_dir: &'a str,
    /// `certs.d`-style registry host configuration (`registry.config_path`).
    pub registry_config_dir: &'a Path,
}

/// The `config.toml` text for `layout`.
pub fn config_toml(layout: &ContainerdLayout<'_>) -> String {
    let d = layout.dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # Without CAP_SYS_RESOURCE every RunPodSandbox fails unless OOM scores are only raised.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  # The streaming server (exec, attach, port-forward) on loopback, any free port: several
  # private containerds may run side by side.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{reg}"
"#,
        sandbox = layout.sandbox_image,
        cni = layout.cni_bin_dir,
        reg = layout.registry_config_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_lives_under_the_directory() {
        let text = config_toml(&ContainerdLayout {
            dir: Path::new("/x/c"),
            sandbox_image: "pause:1",
            cni_bin_dir: "/usr/lib/cni",
            registry_config_dir: Path::new("/x/certs.d"),
        });
        for want in [
            "root = \"/x/c/root\"",
            "address = \"/x/c/containerd.sock\"",
            "sandbox_image = \"pause:1\"",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/x/c/cni/net.d\"",
            "config_path = \"/x/certs.d\"",
            "Root = \"/x/c/runc\"",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }
}
