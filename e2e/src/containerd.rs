//! A private containerd for tests and standalone mode: its own socket, root, state and config.
//!
//! It never reuses or disturbs a containerd the host already runs. In tests it runs inside a
//! network namespace of the test's own, because the CNI bridge plugin rewires the namespace
//! containerd lives in. On drop it stops the pods it ran (so CNI, netns mounts and shims are torn
//! down by containerd itself), stops containerd by PID, then removes what containerd 1.6 leaves
//! outside its own dirs: pod cgroup parents, shim sockets in `/run/containerd/s` and CNI cache
//! entries in `/var/lib/cni/results`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oxlet_cri::containerd_config::ContainerdLayout;
use sha2::{Digest, Sha256};

use crate::netns::Netns;

/// Where containerd 1.6 puts shim sockets whatever its config says.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where libcni caches results whatever containerd's config says.
const CNI_CACHE_DIR: &str = "/var/lib/cni/results";

/// How a private containerd is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CRI sandbox (pause) image.
    pub sandbox_image: String,
    /// Pod subnet for the CNI bridge config; `None` writes no CNI config.
    pub pod_cidr: Option<String>,
    /// Directory with `certs.d`-style `hosts.toml` mirrors (`registry.config_path`).
    pub registry_config_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sandbox_image: "registry.k8s.io/pause:3.10".to_string(),
            pod_cidr: Some("10.88.0.0/16".to_string()),
            registry_config_dir: None,
        }
    }
}

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
    network_name: String,
    cgroup_root: String,
    stopped: bool,
}

impl Containerd {
    /// Starts containerd (inside `netns` when given) and waits until its socket accepts.
    pub fn start(netns: Option<&Netns>, opts: &Options) -> Result<Self> {
        // Unix socket paths are limited to 108 bytes: keep the dir short.
        let dir = tempfile::Builder::new()
            .prefix("oxt-ctd-")
            .tempdir_in("/tmp")
            .context("create containerd dir")?
            .keep();
        let tag = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("oxt-ctd")
            .trim_start_matches("oxt-ctd-")
            .to_lowercase();
        let network_name = format!("oxlet-test-{tag}");
        let cgroup_root = format!("/oxlet-test-{tag}");
        for sub in [
            "root",
            "state",
            "runc",
            "opt",
            "cni/net.d",
            "cni/ipam",
            "log",
        ] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        let registry_dir = match &opts.registry_config_dir {
            Some(p) => p.clone(),
            None => {
                let p = dir.join("certs.d");
                std::fs::create_dir_all(&p)?;
                p
            }
        };
        std::fs::write(
            dir.join("config.toml"),
            config_toml(&dir, opts, &registry_dir),
        )?;
        if let Some(cidr) = &opts.pod_cidr {
            let conf = cni_conflist(&network_name, cidr, &dir.join("cni/ipam"));
            std::fs::write(dir.join("cni/net.d/10-oxlet.conflist"), conf)?;
        }
        let log = std::fs::File::create(dir.join("log/containerd.log"))?;
        let mut cmd = match netns {
            Some(ns) => ns.command("containerd"),
            None => Command::new("containerd"),
        };
        cmd.arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("spawn containerd")?;
        let mut me = Self {
            dir,
            child: Some(child),
            network_name,
            cgroup_root,
            stopped: false,
        };
        me.wait_ready(Duration::from_secs(60))?;
        Ok(me)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let sock = self.socket();
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "containerd exited ({status}) before it was ready:\n{}",
                        self.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd socket {} not ready after {timeout:?}:\n{}",
                    sock.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The CRI endpoint as kubelets spell it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The private work dir (config, root, state, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CNI network name (unique per instance).
    pub fn network_name(&self) -> &str {
        &self.network_name
    }

    /// The cgroup root of this instance (`/oxlet-test-<tag>`); removed with everything below
    /// it on drop, so a kubelet given it as `--cgroup-root` leaves nothing behind.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// A cgroup parent for pods of this instance; removed, with everything below it, on drop.
    pub fn cgroup_parent(&self, pod: &str) -> String {
        format!("{}/{pod}", self.cgroup_root)
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("log/containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The containerd process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops containerd by PID (SIGTERM, then SIGKILL after 10 s) and removes its leftovers.
    /// Pods should be removed through CRI first so containerd tears down networking itself.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut problems = String::new();
        let mut sandboxes = match self.remove_all_pods() {
            Ok(ids) => ids,
            Err(e) => {
                let _ = writeln!(problems, "removing pods through CRI: {e:#}");
                Vec::new()
            }
        };
        sandboxes.extend(self.sandbox_ids());
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        // Shims outlive containerd by design; the ones still here belong to pods not removed.
        for pid in shim_pids(&self.socket()) {
            let _ = writeln!(problems, "killed leftover shim {pid}");
            kill_tree(pid);
        }
        for id in &sandboxes {
            let sock = shim_socket_path(&self.socket(), "k8s.io", id);
            if sock.exists() {
                let _ = std::fs::remove_file(&sock);
            }
        }
        remove_cni_cache(&self.network_name);
        remove_cgroup_tree(&self.cgroup_root);
        unmount_under(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            let _ = writeln!(problems, "remove {}: {e}", self.dir.display());
        }
        if !problems.is_empty() {
            eprintln!("containerd cleanup: {problems}");
        }
        Ok(())
    }

    /// Stops and removes every pod through CRI, so containerd itself tears down CNI, netns
    /// mounts and shims; returns the sandbox IDs it removed.
    pub fn remove_all_pods(&self) -> Result<Vec<String>> {
        if self.child.is_none() {
            return Ok(Vec::new());
        }
        let endpoint = self.endpoint();
        // Drop may run inside a tokio runtime: use a thread with a runtime of its own.
        let handle = std::thread::spawn(move || -> Result<Vec<String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                use oxlet_cri::RuntimeService as _;
                let timeouts = oxlet_cri::Timeouts {
                    request: Duration::from_secs(60),
                    ..Default::default()
                };
                let cri = oxlet_cri::RemoteRuntime::connect(&endpoint, timeouts).await?;
                let pods = cri.list_pod_sandbox(None).await?;
                let mut ids = Vec::new();
                for pod in pods {
                    cri.stop_pod_sandbox(&pod.id).await?;
                    cri.remove_pod_sandbox(&pod.id).await?;
                    ids.push(pod.id);
                }
                Ok(ids)
            })
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("pod removal thread panicked"))?
    }

    /// Sandbox IDs known to containerd's CRI state dir (their shim sockets are named from them).
    fn sandbox_ids(&self) -> Vec<String> {
        let dir = self.dir.join("state/io.containerd.runtime.v2.task/k8s.io");
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("containerd cleanup failed: {e:#}");
        }
    }
}

fn config_toml(dir: &Path, opts: &Options, registry_dir: &Path) -> String {
    oxlet_cri::containerd_config::config_toml(&ContainerdLayout {
        dir,
        sandbox_image: &opts.sandbox_image,
        cni_bin_dir: "/usr/lib/cni",
        registry_config_dir: registry_dir,
    })
}

/// bridge + host-local (private dataDir) + portmap, the same conflist the kubelet writes with
/// `--cni-config=auto`; containerd adds loopback itself.
pub fn cni_conflist(name: &str, cidr: &str, ipam_dir: &Path) -> String {
    oxlet_kubelet::cni::conflist(name, "cni0", cidr, ipam_dir)
}

/// containerd 1.6's shim socket: `/run/containerd/s/<sha256(address/namespace/id)>`.
pub fn shim_socket_path(address: &Path, namespace: &str, id: &str) -> PathBuf {
    let joined = address.join(namespace).join(id);
    let digest = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

fn terminate(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// PIDs of `containerd-shim-runc-v2` processes started by the containerd at `address`.
fn shim_pids(address: &Path) -> Vec<i32> {
    let want = address.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
        let ours = args.windows(2).any(|w| w[0] == "-address" && w[1] == want);
        if is_shim && ours {
            out.push(pid);
        }
    }
    out
}

/// Kills `pid` and all its descendants with SIGKILL (children first found, then the parent).
fn kill_tree(pid: i32) {
    let mut children = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
                // Field 4 (after the parenthesised comm) is the parent PID.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse::<i32>().ok())
                        == Some(pid)
                    {
                        children.push(p);
                    }
                }
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    for c in children {
        kill_tree(c);
    }
}

fn remove_cni_cache(network: &str) {
    let prefix = format!("{network}-");
    if let Ok(rd) = std::fs::read_dir(CNI_CACHE_DIR) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The mount points of every cgroup hierarchy (v1 controllers and the v2 unified one).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// Removes `rel` (e.g. `/oxlet-test-x`) and everything below it in every cgroup hierarchy.
/// runc never removes pod-level parents, so whoever created them must.
pub fn remove_cgroup_tree(rel: &str) {
    for mount in cgroup_mounts() {
        let root = mount.join(rel.trim_start_matches('/'));
        if root.exists() {
            rmdir_depth_first(&root);
        }
    }
}

fn rmdir_depth_first(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_depth_first(&e.path());
            }
        }
    }
    // cgroup dirs are removed with rmdir, never by deleting their control files.
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("rmdir {}: {e}", dir.display());
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
