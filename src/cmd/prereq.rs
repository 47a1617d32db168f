//! Checks `oxlet agent` and `oxlet standalone` make before starting anything, so a missing
//! package or a taken port is one clear message instead of a failure deep in a child process.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// EX_UNAVAILABLE: a prerequisite (privilege, package, free port, cgroups) is missing.
pub const EX_UNAVAILABLE: u8 = 69;

/// Programs a managed containerd and the bundled-image registry need.
pub const MANAGED_BINARIES: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
];
/// CNI plugins the bridge conflist uses (containerd adds loopback itself).
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

/// What is about to be started.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// A managed containerd and registry (binaries, CNI plugins).
    pub managed_runtime: bool,
    /// The proxy in nftables mode (`nft`).
    pub proxy: bool,
    /// Ports that must be free, with what uses them (`the API server (--secure-port)`).
    pub ports: Vec<(SocketAddr, String)>,
}

/// The environment the checks read; tests substitute their own.
#[derive(Debug, Clone)]
pub struct Host {
    /// Effective user ID.
    pub euid: u32,
    /// `$PATH`.
    pub path: String,
    /// `/proc/self/mounts`.
    pub mounts: String,
    /// Where CNI plugins are looked for.
    pub cni_bin_dir: String,
}

impl Host {
    /// The real host.
    pub fn current() -> Self {
        Self {
            euid: effective_uid(),
            path: std::env::var("PATH").unwrap_or_default(),
            mounts: std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(),
            cni_bin_dir: super::agent::containerd::CNI_BIN_DIR.to_string(),
        }
    }
}

/// The effective UID from `/proc/self/status` (`Uid:` real, effective, saved, fs); an
/// unreadable file counts as unprivileged.
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|e| e.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Every unmet prerequisite, one sentence each (empty when all is well).
pub fn check(host: &Host, needs: &Needs) -> Vec<String> {
    let mut problems = Vec::new();
    if host.euid != 0 {
        problems.push(
            "must run as root: it manages containerd, cgroups and pod networking (try sudo)"
                .to_string(),
        );
    }
    let cgroups = host.mounts.lines().any(|l| {
        matches!(
            l.split_whitespace().nth(2),
            Some("cgroup") | Some("cgroup2")
        )
    });
    if !cgroups {
        problems.push(
            "no cgroup filesystem is mounted (expected cgroup v1 or v2 under /sys/fs/cgroup); \
             containers cannot run without one"
                .to_string(),
        );
    }
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if needs.managed_runtime {
        missing.extend(
            MANAGED_BINARIES
                .iter()
                .filter(|(bin, _)| !in_path(&host.path, bin))
                .copied(),
        );
    }
    if needs.proxy && !in_path(&host.path, "nft") {
        missing.push(("nft", "nftables"));
    }
    if needs.managed_runtime && !in_path(&host.path, "iptables") {
        // The bridge plugin's ipMasq and portmap program iptables.
        missing.push(("iptables", "iptables"));
    }
    let plugins: Vec<&str> = if needs.managed_runtime {
        CNI_PLUGINS
            .iter()
            .filter(|p| !is_executable(&Path::new(&host.cni_bin_dir).join(p)))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    if !missing.is_empty() || !plugins.is_empty() {
        let mut what: Vec<String> = missing.iter().map(|(b, _)| b.to_string()).collect();
        what.extend(plugins.iter().map(|p| format!("{}/{p}", host.cni_bin_dir)));
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        if !plugins.is_empty() {
            packages.push("containernetworking-plugins");
        }
        let mut seen = std::collections::BTreeSet::new();
        packages.retain(|p| seen.insert(*p));
        problems.push(format!(
            "missing programs: {} (run `make setup`, or install the Debian packages {})",
            what.join(", "),
            packages.join(" ")
        ));
    }
    for (addr, user) in &needs.ports {
        if let Some(p) = port_problem(*addr, user) {
            problems.push(p);
        }
    }
    problems
}

/// Why `addr` cannot be bound, if it cannot.
fn port_problem(addr: SocketAddr, user: &str) -> Option<String> {
    match TcpListener::bind(addr) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(format!(
            "port {} on {} is already in use; {user} needs it (is another oxlet, kubelet or \
             API server running?)",
            addr.port(),
            addr.ip()
        )),
        Err(e) => Some(format!("cannot listen on {addr} for {user}: {e}")),
    }
}

fn in_path(path: &str, bin: &str) -> bool {
    path.split(':')
        .filter(|d| !d.is_empty())
        .any(|d| is_executable(&Path::new(d).join(bin)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Prints the problems under `oxlet <command>:` and returns the exit code.
pub fn report(command: &str, problems: &[String]) -> std::process::ExitCode {
    eprintln!("oxlet {command}: cannot start:");
    for p in problems {
        eprintln!("  - {p}");
    }
    std::process::ExitCode::from(EX_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            euid: 0,
            path: std::env::var("PATH").unwrap_or_default(),
            mounts: "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
        }
    }

    #[test]
    fn each_missing_prerequisite_is_named() {
        let mut h = host();
        h.euid = 1000;
        h.path = "/nonexistent".into();
        h.mounts = "proc /proc proc rw 0 0\n".into();
        h.cni_bin_dir = "/nonexistent".into();
        let needs = Needs {
            managed_runtime: true,
            proxy: true,
            ports: Vec::new(),
        };
        let p = check(&h, &needs);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("must run as root"), "{}", p[0]);
        assert!(p[1].contains("no cgroup filesystem"), "{}", p[1]);
        assert!(p[2].contains("run `make setup`"), "{}", p[2]);
        for bin in [
            "containerd",
            "runc",
            "docker-registry",
            "skopeo",
            "nft",
            "/nonexistent/bridge",
        ] {
            assert!(p[2].contains(bin), "{bin}: {}", p[2]);
        }
        assert!(p[2].contains("containernetworking-plugins"), "{}", p[2]);
    }

    #[test]
    fn a_taken_port_is_reported_with_its_user() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let needs = Needs {
            ports: vec![(addr, "the API server (--secure-port)".into())],
            ..Default::default()
        };
        let p = check(&host(), &needs);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains(&format!(
            "port {} on 127.0.0.1 is already in use",
            addr.port()
        )));
        assert!(p[0].contains("--secure-port"), "{}", p[0]);
        drop(taken);
        assert!(check(&host(), &needs).is_empty());
    }
}
