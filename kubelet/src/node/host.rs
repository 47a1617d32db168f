//! What the host offers: capacity, allocatable, nodeInfo and addresses.
//!
//! Parsers are pure functions over file contents; [`HostReader`] is the thin shell that reads
//! `/proc`, `/sys` and `/etc` (its root is a parameter, so tests point it at a temp dir).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{NodeAddress, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::config::KubeletConfiguration;
use crate::error::{Error, Result};

/// Version reported as `nodeInfo.kubeletVersion` when the caller gives none.
pub const KUBELET_VERSION: &str = "v1.33.0-oxlet";

/// A resource amount in milli-units (`1` CPU = 1000, `1Ki` = 1_024_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(pub i128);

impl Quantity {
    /// A whole number of units (bytes, cores, pods).
    pub fn units(n: i128) -> Self {
        Self(n * 1000)
    }

    /// Parses a Kubernetes quantity (`"100m"`, `"1.5Gi"`, `"2"`, `"1e3"`, `"128974848"`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Quantity(s.to_string());
        let t = s.trim();
        let (neg, t) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let num_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        // value = digits * 10^-frac_len * multiplier; kept exact in milli-units.
        let digits: i128 = format!("{int_part}{frac_part}")
            .parse()
            .map_err(|_| bad())?;
        let frac_len = frac_part.len() as i32;
        let (base, exp): (i128, i32) = match suffix {
            "" => (1, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            s if s.starts_with(['e', 'E']) => (1, s[1..].parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        // Rounded up to milli precision, like upstream's RoundUp(Milli).
        let pow = exp + 3 - frac_len;
        let v = digits.checked_mul(base).ok_or_else(bad)?;
        let milli = if pow >= 0 {
            v.checked_mul(10i128.checked_pow(pow as u32).ok_or_else(bad)?)
                .ok_or_else(bad)?
        } else {
            let d = 10i128.checked_pow((-pow) as u32).ok_or_else(bad)?;
            (v + d - 1) / d
        };
        Ok(Self(if neg { -milli } else { milli }))
    }

    /// Renders in decimal-SI form for CPU-like values: `"2"`, `"1900m"`.
    pub fn to_decimal(self) -> String {
        if self.0 % 1000 == 0 {
            (self.0 / 1000).to_string()
        } else {
            format!("{}m", self.0)
        }
    }

    /// Renders in binary-SI form for byte values like upstream's canonical form: the largest
    /// binary suffix dividing the value exactly (`"16328104Ki"`, `"100Mi"`), else plain bytes.
    pub fn to_binary(self) -> String {
        if self.0 % 1000 != 0 {
            return format!("{}m", self.0);
        }
        let n = self.0 / 1000;
        if n == 0 {
            return "0".to_string();
        }
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            let unit = 1i128 << shift;
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
        n.to_string()
    }
}

/// Capacity figures read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapacity {
    /// Usable CPUs in milli-cores (cgroup quota applied).
    pub cpu_milli: i128,
    /// Memory in bytes (cgroup limit applied).
    pub memory_bytes: i128,
    /// Size of the filesystem holding the kubelet root dir, in bytes.
    pub ephemeral_storage_bytes: i128,
}

/// Resource maps for `status.capacity` and `status.allocatable`.
pub type ResourceList = BTreeMap<String, K8sQuantity>;

/// Capacity as the Node reports it: cpu, memory, ephemeral-storage, pods, hugepages-*.
pub fn capacity(host: &HostCapacity, max_pods: i32) -> ResourceList {
    let mut m = BTreeMap::new();
    m.insert(
        "cpu".into(),
        K8sQuantity(Quantity(host.cpu_milli).to_decimal()),
    );
    m.insert(
        "memory".into(),
        K8sQuantity(Quantity::units(host.memory_bytes).to_binary()),
    );
    m.insert(
        "ephemeral-storage".into(),
        K8sQuantity(Quantity::units(host.ephemeral_storage_bytes).to_binary()),
    );
    m.insert("pods".into(), K8sQuantity(max_pods.to_string()));
    m.insert("hugepages-1Gi".into(), K8sQuantity("0".into()));
    m.insert("hugepages-2Mi".into(), K8sQuantity("0".into()));
    m
}

/// Allocatable = capacity − systemReserved − kubeReserved − hard eviction thresholds
/// (upstream `GetNodeAllocatableAbsolute` + `evictionapi.GetThresholdQuantity`), never below 0.
pub fn allocatable(host: &HostCapacity, cfg: &KubeletConfiguration) -> Result<ResourceList> {
    let reserved = |name: &str| -> Result<i128> {
        let mut sum = 0;
        for map in [&cfg.system_reserved, &cfg.kube_reserved] {
            if let Some(v) = map.get(name) {
                sum += Quantity::parse(v)?.0;
            }
        }
        Ok(sum)
    };
    let eviction = |signal: &str, capacity_milli: i128| -> Result<i128> {
        Ok(match cfg.eviction_hard.get(signal) {
            None => 0,
            Some(v) => match v.strip_suffix('%') {
                Some(p) => {
                    let pct: f64 = p.parse().map_err(|_| Error::Quantity(v.clone()))?;
                    // Upstream: int64(float64(capacity.Value()) * percentage), in bytes.
                    let bytes = ((capacity_milli / 1000) as f64 * pct / 100.0) as i128;
                    bytes * 1000
                }
                None => Quantity::parse(v)?.0,
            },
        })
    };
    let cpu = (host.cpu_milli - reserved("cpu")?).max(0);
    let mem_cap = host.memory_bytes * 1000;
    let mem = (mem_cap - reserved("memory")? - eviction("memory.available", mem_cap)?).max(0);
    let eph_cap = host.ephemeral_storage_bytes * 1000;
    let eph =
        (eph_cap - reserved("ephemeral-storage")? - eviction("nodefs.available", eph_cap)?).max(0);
    // Bytes are whole: a fractional reservation is rounded so allocatable never exceeds it.
    let mut m = BTreeMap::new();
    m.insert("cpu".into(), K8sQuantity(Quantity(cpu).to_decimal()));
    m.insert(
        "memory".into(),
        K8sQuantity(Quantity(mem / 1000 * 1000).to_binary()),
    );
    m.insert(
        "ephemeral-storage".into(),
        K8sQuantity(Quantity(eph / 1000 * 1000).to_binary()),
    );
    m.insert("pods".into(), K8sQuantity(cfg.max_pods.to_string()));
    m.insert("hugepages-1Gi".into(), K8sQuantity("0".into()));
    m.insert("hugepages-2Mi".into(), K8sQuantity("0".into()));
    Ok(m)
}

/// Number of `processor` entries in `/proc/cpuinfo`.
pub fn parse_cpuinfo_count(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count()
}

/// CPU limit in milli-cores from cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
/// (`-1` = none).
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<i128> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| (q as i128 * 1000).div_euclid(p as i128))
}

/// CPU limit in milli-cores from cgroup v2 `cpu.max` (`"max 100000"` = none).
pub fn parse_cpu_max(text: &str) -> Option<i128> {
    let mut it = text.split_whitespace();
    let (q, p) = (it.next()?, it.next().unwrap_or("100000"));
    parse_cfs_quota(q, p)
}

/// `MemTotal` of `/proc/meminfo` in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<i128> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let mut it = rest.split_whitespace();
        let n: i128 = it.next()?.parse().ok()?;
        Some(match it.next() {
            Some("kB") | Some("KB") => n * 1024,
            _ => n,
        })
    })
}

/// A cgroup memory limit in bytes: v1 `memory.limit_in_bytes` (a huge number when unlimited)
/// or v2 `memory.max` (`"max"` when unlimited).
pub fn parse_memory_limit(text: &str) -> Option<i128> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let n: i128 = t.parse().ok()?;
    // v1 reports PAGE_COUNTER_MAX * page size (0x7FFFFFFFFFFFF000) when unlimited.
    (n > 0 && n < (1i128 << 62)).then_some(n)
}

/// `PRETTY_NAME` from `/etc/os-release`, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?.trim();
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// Local IPv4 addresses from `/proc/net/fib_trie` (`/32 host LOCAL` entries), in file order,
/// without duplicates.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Some(ip) = t.split_whitespace().next().and_then(|w| w.parse().ok()) {
            last = Some(ip);
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The first address usable as InternalIP: not loopback, link-local or unspecified.
pub fn pick_internal_ip(candidates: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    candidates
        .iter()
        .copied()
        .find(|ip| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified())
}

/// Kubernetes' name (`GOARCH`) for a Rust target architecture.
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Node addresses: InternalIP then Hostname (the order upstream's setter produces).
pub fn addresses(internal_ip: Option<Ipv4Addr>, hostname: &str) -> Vec<NodeAddress> {
    let mut v = Vec::new();
    if let Some(ip) = internal_ip {
        v.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    v.push(NodeAddress {
        type_: "Hostname".into(),
        address: hostname.to_string(),
    });
    v
}

/// Reads host facts below a root directory (`/` in production).
#[derive(Debug, Clone)]
pub struct HostReader {
    root: PathBuf,
}

impl Default for HostReader {
    fn default() -> Self {
        Self::new("/")
    }
}

impl HostReader {
    /// A reader of the files below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Result<String> {
        let path = self.path(p);
        std::fs::read_to_string(&path).map_err(|source| Error::Io {
            op: "read",
            path: path.display().to_string(),
            source,
        })
    }

    fn read_opt(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }

    /// Usable CPUs in milli-cores: `/proc/cpuinfo` (or the scheduler's view), capped by the
    /// cgroup quota (v1 `cpu` controller or v2 `cpu.max`).
    pub fn cpu_milli(&self) -> i128 {
        let count = self
            .read_opt("/proc/cpuinfo")
            .map(|t| parse_cpuinfo_count(&t))
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1) as i128;
        let mut milli = count * 1000;
        let quota = match (
            self.read_opt("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
            self.read_opt("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
        ) {
            (Some(q), Some(p)) => parse_cfs_quota(&q, &p),
            _ => self
                .read_opt("/sys/fs/cgroup/cpu.max")
                .and_then(|t| parse_cpu_max(&t)),
        };
        if let Some(q) = quota {
            milli = milli.min(q);
        }
        milli
    }

    /// Memory in bytes: `/proc/meminfo` MemTotal capped by the cgroup memory limit.
    pub fn memory_bytes(&self) -> Result<i128> {
        let text = self.read("/proc/meminfo")?;
        let total = parse_meminfo_total(&text).ok_or_else(|| Error::Io {
            op: "parse MemTotal in",
            path: self.path("/proc/meminfo").display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?;
        let limit = self
            .read_opt("/sys/fs/cgroup/memory/memory.limit_in_bytes")
            .or_else(|| self.read_opt("/sys/fs/cgroup/memory.max"))
            .and_then(|t| parse_memory_limit(&t));
        Ok(limit.map_or(total, |l| l.min(total)))
    }

    /// Size of the filesystem holding `dir`, in bytes (statvfs).
    pub fn filesystem_bytes(dir: &Path) -> Result<i128> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(|e| Error::Io {
            op: "statvfs",
            path: dir.display().to_string(),
            source: std::io::Error::from(e),
        })?;
        Ok(st.blocks() as i128 * st.fragment_size() as i128)
    }

    /// Capacity of this host, with ephemeral storage measured at `root_dir`.
    pub fn capacity(&self, root_dir: &Path) -> Result<HostCapacity> {
        Ok(HostCapacity {
            cpu_milli: self.cpu_milli(),
            memory_bytes: self.memory_bytes()?,
            ephemeral_storage_bytes: Self::filesystem_bytes(root_dir)?,
        })
    }

    /// The kernel's host name (`/proc/sys/kernel/hostname`), lowercased as upstream does.
    pub fn hostname(&self) -> Result<String> {
        Ok(self
            .read("/proc/sys/kernel/hostname")?
            .trim()
            .to_lowercase())
    }

    /// The node's InternalIP: the address the kernel would use for an outside destination
    /// (upstream `ChooseHostInterface` picks the default route's interface), else the first
    /// non-loopback local address in `/proc/net/fib_trie`.
    pub fn internal_ip(&self) -> Option<Ipv4Addr> {
        // A UDP connect only consults the routing table; no packet is sent.
        let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| {
                s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
                s.local_addr()
            })
            .ok()
            .and_then(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => pick_internal_ip(&[ip]),
                std::net::IpAddr::V6(_) => None,
            });
        routed.or_else(|| {
            self.read_opt("/proc/net/fib_trie")
                .and_then(|t| pick_internal_ip(&parse_fib_trie_local(&t)))
        })
    }

    /// `nodeInfo` for this host; `container_runtime_version` comes from CRI `Version`
    /// (`containerd://1.6.20`).
    pub fn node_info(
        &self,
        kubelet_version: Option<&str>,
        container_runtime_version: &str,
    ) -> NodeSystemInfo {
        let trimmed = |p: &str| self.read_opt(p).map(|s| s.trim().to_string());
        let machine_id = trimmed("/etc/machine-id").unwrap_or_default();
        NodeSystemInfo {
            architecture: goarch(std::env::consts::ARCH).to_string(),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            container_runtime_version: container_runtime_version.to_string(),
            kernel_version: trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: kubelet_version.unwrap_or(KUBELET_VERSION).to_string(),
            machine_id: machine_id.clone(),
            operating_system: "linux".to_string(),
            os_image: self
                .read_opt("/etc/os-release")
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".to_string()),
            system_uuid: trimmed("/sys/class/dmi/id/product_uuid")
                .filter(|s| !s.is_empty())
                .unwrap_or(machine_id),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> i128 {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}")).0
    }

    #[test]
    fn quantities_parse_and_render_like_upstream() {
        assert_eq!(q("100m"), 100);
        assert_eq!(q("2"), 2000);
        assert_eq!(q("1.5"), 1500);
        assert_eq!(q("100Mi"), 100 * 1024 * 1024 * 1000);
        assert_eq!(q("1Gi"), (1 << 30) * 1000);
        assert_eq!(q("1k"), 1_000_000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1n"), 1);
        assert!(Quantity::parse("lots").is_err());
        assert!(Quantity::parse("1Qi").is_err());
        assert_eq!(Quantity::units(16328104 * 1024).to_binary(), "16328104Ki");
        assert_eq!(Quantity::units(100 << 20).to_binary(), "100Mi");
        assert_eq!(Quantity::units(1000).to_binary(), "1000");
        assert_eq!(Quantity(2000).to_decimal(), "2");
        assert_eq!(Quantity(1900).to_decimal(), "1900m");
    }

    #[test]
    fn cpu_sources() {
        let cpuinfo = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n";
        assert_eq!(parse_cpuinfo_count(cpuinfo), 2);
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("150000", "100000"), Some(1500));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(500));
    }

    #[test]
    fn memory_sources() {
        let meminfo = "MemTotal:       16328104 kB\nMemFree:         1 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(16328104 * 1024));
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn os_release_and_arch() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(goarch("x86_64"), "amd64");
        assert_eq!(goarch("aarch64"), "arm64");
    }

    #[test]
    fn fib_trie_local_addresses() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                 \x20    +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.0\n           /24 link UNICAST\n\
                 \x20       |-- 10.0.2.15\n           /32 host LOCAL\n\
                 \x20 +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\n\
                 Local:\n  |-- 10.0.2.15\n     /32 host LOCAL\n";
        let ips = parse_fib_trie_local(t);
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(127, 0, 0, 1)]
        );
        assert_eq!(
            pick_internal_ip(&[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 2, 15)]),
            Some(Ipv4Addr::new(10, 0, 2, 15))
        );
        let a = addresses(Some(Ipv4Addr::new(10, 0, 2, 15)), "node-a");
        assert_eq!(a[0].type_, "InternalIP");
        assert_eq!(a[1].type_, "Hostname");
    }

    #[test]
    fn capacity_and_allocatable() {
        let host = HostCapacity {
            cpu_milli: 2000,
            memory_bytes: 16328104 * 1024,
            ephemeral_storage_bytes: 100 << 30,
        };
        let mut cfg = KubeletConfiguration::default();
        let cap = capacity(&host, cfg.max_pods);
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "16328104Ki");
        assert_eq!(cap["ephemeral-storage"].0, "100Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["hugepages-2Mi"].0, "0");
        let odd = HostCapacity {
            ephemeral_storage_bytes: 100_000_000_001,
            ..host.clone()
        };
        let alloc = allocatable(&odd, &cfg).expect("allocatable");
        assert_eq!(alloc["ephemeral-storage"].0, "90000000001");
        // Defaults: only the eviction thresholds (memory 100Mi, nodefs 10%).
        let alloc = allocatable(&host, &cfg).expect("allocatable");
        assert_eq!(alloc["cpu"].0, "2");
        assert_eq!(alloc["memory"].0, "16225704Ki");
        assert_eq!(alloc["ephemeral-storage"].0, "90Gi");
        cfg.system_reserved.insert("cpu".into(), "100m".into());
        cfg.kube_reserved.insert("memory".into(), "1Gi".into());
        cfg.system_reserved
            .insert("ephemeral-storage".into(), "1Gi".into());
        let alloc = allocatable(&host, &cfg).expect("allocatable");
        assert_eq!(alloc["cpu"].0, "1900m");
        assert_eq!(alloc["memory"].0, "15177128Ki");
        assert_eq!(alloc["ephemeral-storage"].0, "89Gi");
    }

    #[test]
    fn reader_uses_files_below_its_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |p: &str, s: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, s).expect("write");
        };
        w(
            "proc/cpuinfo",
            "processor : 0\nprocessor : 1\nprocessor : 2\nprocessor : 3\n",
        );
        w("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "200000\n");
        w("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        w("proc/meminfo", "MemTotal: 4096 kB\n");
        w("sys/fs/cgroup/memory.max", "2097152\n");
        w("etc/machine-id", "abc123\n");
        w("proc/sys/kernel/osrelease", "6.1.0-test\n");
        w("proc/sys/kernel/hostname", "Node-A\n");
        let r = HostReader::new(dir.path());
        assert_eq!(r.cpu_milli(), 2000);
        assert_eq!(r.memory_bytes().expect("memory"), 2 << 20);
        assert_eq!(r.hostname().expect("hostname"), "node-a");
        let info = r.node_info(None, "containerd://1.6.20");
        assert_eq!(info.machine_id, "abc123");
        assert_eq!(info.system_uuid, "abc123");
        assert_eq!(info.kernel_version, "6.1.0-test");
        assert_eq!(info.os_image, "Linux");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.operating_system, "linux");
    }
}
