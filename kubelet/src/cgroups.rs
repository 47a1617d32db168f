//! Pod and QoS cgroups with the cgroupfs driver, on cgroup v1 (including hybrid hosts) and
//! v2, as upstream's pkg/kubelet/cm (qos_container_manager_linux.go,
//! pod_container_manager_linux.go, helpers_linux.go ResourceConfigForPod,
//! cgroup_manager_linux.go).
//!
//! Layout (cgroupfs names, relative to every hierarchy's root):
//! `<cgroup_root>/kubepods/pod<uid>` for Guaranteed pods,
//! `<cgroup_root>/kubepods/burstable/pod<uid>` and `<cgroup_root>/kubepods/besteffort/pod<uid>`.
//! The pod cgroup path is the sandbox's cgroup parent; runc creates container cgroups below it
//! but never removes the pod level, so the kubelet does.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::container::qos::{self, QosClass};
use crate::container::resources::{
    self, milli_cpu_to_quota, milli_cpu_to_shares, MIN_SHARES, QUOTA_PERIOD,
};

/// A failure to read or change cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A cgroup still holds processes, so it cannot be removed yet.
    #[error("cgroup {path} is busy: processes are still inside")]
    Busy {
        /// The cgroup directory.
        path: String,
    },
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted (read {0})")]
    NoHierarchies(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.display().to_string();
    move |source| CgroupError::Io { op, path, source }
}

/// Name of the top-level cgroup all pods live under.
pub const KUBEPODS: &str = "kubepods";

/// `a` and `b` joined as cgroup paths, always absolute, without doubled or trailing slashes.
fn join(a: &str, b: &str) -> String {
    let parts: Vec<&str> = a
        .split('/')
        .chain(b.split('/'))
        .filter(|s| !s.is_empty())
        .collect();
    format!("/{}", parts.join("/"))
}

/// The cgroup of a QoS class: `<root>/kubepods`, `<root>/kubepods/burstable` or
/// `<root>/kubepods/besteffort`.
pub fn qos_cgroup(cgroup_root: &str, qos: QosClass) -> String {
    let kubepods = join(cgroup_root, KUBEPODS);
    match qos {
        QosClass::Guaranteed => kubepods,
        QosClass::Burstable => join(&kubepods, "burstable"),
        QosClass::BestEffort => join(&kubepods, "besteffort"),
    }
}

/// The pod's cgroup parent as the CRI expects with cgroupfs:
/// `<cgroup_root>/kubepods[/burstable|/besteffort]/pod<uid>` (Guaranteed pods sit directly
/// under kubepods); `cgroup_root` is usually `/`.
pub fn pod_cgroup_parent(cgroup_root: &str, qos: QosClass, pod_uid: &str) -> String {
    join(&qos_cgroup(cgroup_root, qos), &format!("pod{pod_uid}"))
}

/// Pod-level cgroup settings, as upstream's ResourceConfigForPod with CPU limits enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodResourceConfig {
    /// cpu.shares (v1 units; v2 converts to cpu.weight).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds (0: no quota).
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Hugepage limits: (page size as in `hugetlb.<size>.*`, bytes).
    pub hugepage_limits: Vec<(String, u64)>,
}

/// The pod cgroup's limits: shares from the summed requests; for Guaranteed pods quota and
/// memory from the summed limits; for Burstable pods quota / memory only when every container
/// sets a CPU / memory limit; BestEffort pods get the minimum shares only.
pub fn pod_resource_config(pod: &Pod) -> PodResourceConfig {
    let reqs = resources::pod_requests(pod, false);
    let lims = resources::pod_limits(pod, false);
    let (cpu_declared, mem_declared) = resources::pod_limits_declared(pod);
    let shares = milli_cpu_to_shares(reqs.get("cpu").copied().unwrap_or(0)) as u64;
    let quota = milli_cpu_to_quota(lims.get("cpu").copied().unwrap_or(0), QUOTA_PERIOD);
    let mem =
        i64::try_from((lims.get("memory").copied().unwrap_or(0) + 999) / 1000).unwrap_or(i64::MAX);
    let period = QUOTA_PERIOD as u64;
    let hugepage_limits = reqs
        .iter()
        .filter_map(|(k, v)| {
            let size = crate::node::host::Quantity::parse(k.strip_prefix("hugepages-")?).ok()?;
            let unit = resources::hugepage_unit_size((size.0 + 999) / 1000)?;
            Some((unit, u64::try_from((v + 999) / 1000).ok()?))
        })
        .collect();
    let mut cfg = PodResourceConfig {
        hugepage_limits,
        ..Default::default()
    };
    match qos::qos_class(pod) {
        QosClass::Guaranteed => {
            cfg.cpu_shares = Some(shares);
            cfg.cpu_quota = Some(quota);
            cfg.cpu_period = Some(period);
            cfg.memory_limit = Some(mem);
        }
        QosClass::Burstable => {
            cfg.cpu_shares = Some(shares);
            if cpu_declared {
                cfg.cpu_quota = Some(quota);
                cfg.cpu_period = Some(period);
            }
            if mem_declared {
                cfg.memory_limit = Some(mem);
            }
        }
        QosClass::BestEffort => cfg.cpu_shares = Some(MIN_SHARES as u64),
    }
    cfg
}

/// cgroup v1 cpu.shares → v2 cpu.weight, as runc's ConvertCPUSharesToCgroupV2Value.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// Which cgroup API the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Separate v1 hierarchies per controller (possibly with an empty v2 hierarchy beside them).
    V1,
    /// The single v2 hierarchy.
    V2,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup path of the mount's root (`/` unless the mount shows a sub-tree).
    pub root: String,
    /// Controllers attached (`cpu`, `memory`, …; `name=systemd` for named v1 hierarchies).
    pub controllers: Vec<String>,
    /// True for a cgroup2 mount.
    pub unified: bool,
}

impl Hierarchy {
    /// The directory of cgroup `path` in this hierarchy.
    pub fn dir(&self, path: &str) -> PathBuf {
        let root = self.root.trim_end_matches('/');
        let rel = if root.is_empty() {
            path
        } else {
            path.strip_prefix(root)
                .filter(|r| r.is_empty() || r.starts_with('/'))
                .unwrap_or(path)
        };
        let mut p = self.mount.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p.push(part);
        }
        p
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// v1 controllers a hierarchy may carry; anything else in the super options is a mount flag.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup hierarchies in a `/proc/self/mountinfo` text, first mount of each kept, and the
/// host's cgroup version: v2 when a cgroup2 mount exists and no v1 hierarchy carries a
/// controller.
pub fn parse_mountinfo(text: &str) -> (CgroupVersion, Vec<Hierarchy>) {
    let mut hs: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (fstype, super_opts) = (post[0], post[2]);
        let unified = match fstype {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let controllers: Vec<String> = if unified {
            Vec::new()
        } else {
            super_opts
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_string)
                .collect()
        };
        let h = Hierarchy {
            mount: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            controllers,
            unified,
        };
        if !hs
            .iter()
            .any(|o| o.unified == h.unified && o.controllers == h.controllers)
        {
            hs.push(h);
        }
    }
    let v1 = hs.iter().any(|h| !h.unified && !h.controllers.is_empty());
    if v1 {
        (CgroupVersion::V1, hs)
    } else {
        (
            CgroupVersion::V2,
            hs.into_iter().filter(|h| h.unified).collect(),
        )
    }
}

/// Limits read back from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// v1 cpu.shares.
    pub cpu_shares: Option<u64>,
    /// v2 cpu.weight.
    pub cpu_weight: Option<u64>,
    /// CFS quota in microseconds; None when unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes; None when unlimited.
    pub memory_limit: Option<i64>,
}

/// Creates, sizes, lists and removes pod cgroups with the cgroupfs driver.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    cgroup_root: String,
    version: CgroupVersion,
    hierarchies: Vec<Hierarchy>,
}

/// Controllers the kubelet enables for its subtree on cgroup v2.
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

impl CgroupManager {
    /// Finds the mounted hierarchies from /proc/self/mountinfo.
    pub fn detect(cgroup_root: &str) -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        let (version, hierarchies) = parse_mountinfo(&text);
        Self::new(cgroup_root, version, hierarchies)
    }

    /// A manager over the given hierarchies (for hosts where detection is done elsewhere).
    pub fn new(
        cgroup_root: &str,
        version: CgroupVersion,
        hierarchies: Vec<Hierarchy>,
    ) -> Result<Self, CgroupError> {
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchies("/proc/self/mountinfo".into()));
        }
        Ok(Self {
            cgroup_root: join(cgroup_root, ""),
            version,
            hierarchies,
        })
    }

    /// The host's cgroup version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The hierarchies pod cgroups are created in.
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The pod's cgroup parent under this manager's root.
    pub fn pod_cgroup_parent(&self, qos: QosClass, pod_uid: &str) -> String {
        pod_cgroup_parent(&self.cgroup_root, qos, pod_uid)
    }

    /// The directories of cgroup `path`, one per hierarchy.
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.dir(path)).collect()
    }

    /// Creates kubepods, kubepods/burstable and kubepods/besteffort in every hierarchy
    /// (idempotent); BestEffort gets the minimum CPU weight so it yields to everything else.
    pub fn ensure_qos_cgroups(&self) -> Result<(), CgroupError> {
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            self.create(&qos_cgroup(&self.cgroup_root, qos))?;
        }
        let besteffort = PodResourceConfig {
            cpu_shares: Some(MIN_SHARES as u64),
            ..Default::default()
        };
        self.apply(
            &qos_cgroup(&self.cgroup_root, QosClass::BestEffort),
            &besteffort,
        )
    }

    /// Creates the pod cgroup `parent` in every hierarchy and sets the pod-level limits of
    /// [`pod_resource_config`].
    pub fn ensure_pod(&self, parent: &str, pod: &Pod) -> Result<(), CgroupError> {
        self.create(parent)?;
        self.apply(parent, &pod_resource_config(pod))
    }

    /// Removes the pod cgroup `parent` in every hierarchy, container cgroups left below it
    /// first. A cgroup already gone is fine; one still holding processes is
    /// [`CgroupError::Busy`] (after the other hierarchies were tried).
    pub fn remove_pod(&self, parent: &str) -> Result<(), CgroupError> {
        let mut first_err = None;
        for dir in self.dirs(parent) {
            if let Err(e) = remove_tree(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// UIDs of pods that have a pod cgroup in any hierarchy, sorted.
    pub fn pod_uids(&self) -> Result<Vec<String>, CgroupError> {
        let mut uids = BTreeSet::new();
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            for dir in self.dirs(&qos_cgroup(&self.cgroup_root, qos)) {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("list", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_err("list", &dir))?;
                    let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(uid) = name.strip_prefix("pod").filter(|u| is_dir && !u.is_empty())
                    {
                        uids.insert(uid.to_string());
                    }
                }
            }
        }
        Ok(uids.into_iter().collect())
    }

    /// Reads the CPU and memory limits of cgroup `path` (a pod or container cgroup).
    pub fn read_limits(&self, path: &str) -> Result<CgroupLimits, CgroupError> {
        let mut l = CgroupLimits::default();
        match self.version {
            CgroupVersion::V1 => {
                if let Some(h) = self.hierarchies.iter().find(|h| h.has("cpu")) {
                    let d = h.dir(path);
                    l.cpu_shares = read_trimmed(&d.join("cpu.shares"))?.parse().ok();
                    l.cpu_quota = read_trimmed(&d.join("cpu.cfs_quota_us"))?
                        .parse()
                        .ok()
                        .filter(|q: &i64| *q >= 0);
                    l.cpu_period = read_trimmed(&d.join("cpu.cfs_period_us"))?.parse().ok();
                }
                if let Some(h) = self.hierarchies.iter().find(|h| h.has("memory")) {
                    // v1 reports "unlimited" as a huge page-aligned number.
                    l.memory_limit = read_trimmed(&h.dir(path).join("memory.limit_in_bytes"))?
                        .parse()
                        .ok()
                        .filter(|m: &i64| *m < (1i64 << 62));
                }
            }
            CgroupVersion::V2 => {
                let Some(h) = self.hierarchies.first() else {
                    return Ok(l);
                };
                let d = h.dir(path);
                let opt = |p: PathBuf| match std::fs::read_to_string(&p) {
                    Ok(s) => Ok(Some(s.trim().to_string())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err("read", &p)(e)),
                };
                l.cpu_weight = opt(d.join("cpu.weight"))?.and_then(|s| s.parse().ok());
                if let Some(max) = opt(d.join("cpu.max"))? {
                    let mut it = max.split_whitespace();
                    l.cpu_quota = it.next().and_then(|q| q.parse().ok());
                    l.cpu_period = it.next().and_then(|p| p.parse().ok());
                }
                l.memory_limit = opt(d.join("memory.max"))?.and_then(|s| s.parse().ok());
            }
        }
        Ok(l)
    }

    /// Creates cgroup `path` and its missing ancestors in every hierarchy.
    fn create(&self, path: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let mut cur = String::new();
            for part in path.split('/').filter(|s| !s.is_empty()) {
                let parent = h.dir(if cur.is_empty() { "/" } else { &cur });
                cur = format!("{cur}/{part}");
                let dir = h.dir(&cur);
                if dir.is_dir() {
                    continue;
                }
                if h.unified && self.version == CgroupVersion::V2 {
                    enable_controllers(&parent)?;
                }
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &dir)(e)),
                }
                if h.has("cpuset") {
                    init_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the limits of `cfg` into cgroup `path` in the hierarchies that carry them.
    fn apply(&self, path: &str, cfg: &PodResourceConfig) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => {
                for h in &self.hierarchies {
                    let d = h.dir(path);
                    if h.has("cpu") {
                        if let Some(s) = cfg.cpu_shares {
                            write(&d.join("cpu.shares"), &s.to_string())?;
                        }
                        // The period first: a quota is checked against the current period.
                        if let Some(p) = cfg.cpu_period {
                            write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                        }
                        if let Some(q) = cfg.cpu_quota {
                            let q = if q > 0 { q } else { -1 };
                            write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                        }
                    }
                    if h.has("memory") {
                        if let Some(m) = cfg.memory_limit.filter(|m| *m > 0) {
                            write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                        }
                    }
                    if h.has("hugetlb") {
                        for (size, limit) in &cfg.hugepage_limits {
                            write(
                                &d.join(format!("hugetlb.{size}.limit_in_bytes")),
                                &limit.to_string(),
                            )?;
                        }
                    }
                }
            }
            CgroupVersion::V2 => {
                for h in self.hierarchies.iter().filter(|h| h.unified) {
                    let d = h.dir(path);
                    if let Some(s) = cfg.cpu_shares {
                        write(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
                    }
                    if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
                        let period = cfg.cpu_period.unwrap_or(QUOTA_PERIOD as u64);
                        let quota = match cfg.cpu_quota {
                            Some(q) if q > 0 => q.to_string(),
                            _ => "max".to_string(),
                        };
                        write(&d.join("cpu.max"), &format!("{quota} {period}"))?;
                    }
                    if let Some(m) = cfg.memory_limit.filter(|m| *m > 0) {
                        write(&d.join("memory.max"), &m.to_string())?;
                    }
                    for (size, limit) in &cfg.hugepage_limits {
                        write(&d.join(format!("hugetlb.{size}.max")), &limit.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_trimmed(p: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(io_err("read", p))
}

fn write(p: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(p, value).map_err(io_err("write", p))
}

/// A new v1 cpuset cgroup starts with no CPUs or memory nodes and cannot take tasks; give it
/// its parent's, as runc does for the levels it creates.
fn init_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if read_trimmed(&own)?.is_empty() {
            let value = read_trimmed(&parent.join(file))?;
            write(&own, &value)?;
        }
    }
    Ok(())
}

/// On v2 a child only gets the controllers its parent delegates; delegate the ones the kubelet
/// sets limits with (those the parent has).
fn enable_controllers(parent: &Path) -> Result<(), CgroupError> {
    let available = read_trimmed(&parent.join("cgroup.controllers"))?;
    let enabled = read_trimmed(&parent.join("cgroup.subtree_control"))?;
    let want: Vec<String> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c) && !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    write(&parent.join("cgroup.subtree_control"), &want.join(" "))
}

/// Removes cgroup directory `dir` and every cgroup below it, deepest first.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Busy {
            path: dir.display().to_string(),
        }),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn pod(uid: &str, containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"containers": containers}
        }))
        .expect("pod")
    }

    #[test]
    fn names() {
        assert_eq!(
            pod_cgroup_parent("/", QosClass::Guaranteed, "u1"),
            "/kubepods/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("/", QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("", QosClass::BestEffort, "u1"),
            "/kubepods/besteffort/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("/oxlet/", QosClass::BestEffort, "u1"),
            "/oxlet/kubepods/besteffort/podu1"
        );
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn mountinfo_parsing() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
99 31 0:32 / /mnt/memory\\040again rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let (v, hs) = parse_mountinfo(hybrid);
        assert_eq!(v, CgroupVersion::V1);
        let names: Vec<Vec<String>> = hs.iter().map(|h| h.controllers.clone()).collect();
        assert_eq!(
            names,
            vec![
                vec!["cpu".to_string(), "cpuacct".to_string()],
                vec!["memory".to_string()],
                vec!["name=systemd".to_string()],
                vec![]
            ]
        );
        assert!(hs[3].unified);
        assert_eq!(
            hs[0].dir("/kubepods/podx"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/podx")
        );

        let v2 = "25 20 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let (v, hs) = parse_mountinfo(v2);
        assert_eq!(v, CgroupVersion::V2);
        assert_eq!(hs.len(), 1);
        assert_eq!(
            hs[0].dir("/kubepods"),
            PathBuf::from("/sys/fs/cgroup/kubepods")
        );

        let nested = "25 20 0:23 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let (_, hs) = parse_mountinfo(nested);
        assert_eq!(
            hs[0].dir("/docker/abc/kubepods"),
            PathBuf::from("/sys/fs/cgroup/memory/kubepods")
        );
        assert_eq!(unescape("a\\040b"), "a b");
    }

    #[test]
    fn pod_resource_configs() {
        let g = pod(
            "g",
            json!([{"name": "a", "resources": {
            "requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}},
            {"name": "b", "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "64Mi"}}}]),
        );
        assert_eq!(
            pod_resource_config(&g),
            PodResourceConfig {
                cpu_shares: Some(768),
                cpu_quota: Some(75_000),
                cpu_period: Some(100_000),
                memory_limit: Some(192 << 20),
                hugepage_limits: vec![],
            }
        );
        let b = pod(
            "b",
            json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
                                {"name": "b", "resources": {"limits": {"memory": "32Mi", "cpu": "1"}}}]),
        );
        assert_eq!(
            pod_resource_config(&b),
            PodResourceConfig {
                cpu_shares: Some(102),
                memory_limit: Some(96 << 20),
                ..Default::default()
            }
        );
        let b = pod(
            "b",
            json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}, {"name": "b"}]),
        );
        assert_eq!(
            pod_resource_config(&b),
            PodResourceConfig {
                cpu_shares: Some(102),
                ..Default::default()
            }
        );
        let be = pod("be", json!([{"name": "a"}]));
        assert_eq!(
            pod_resource_config(&be),
            PodResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
    }

    /// Removes the test's cgroup root in every hierarchy and kills its helper process, even
    /// when an assertion fails.
    struct Cleanup {
        mgr: CgroupManager,
        root: String,
        child: Option<Child>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for d in self.mgr.dirs(&self.root) {
                let _ = remove_tree(&d);
            }
        }
    }

    /// cgroup v2 file formats, on a plain directory tree laid out like cgroupfs (this host
    /// is v1, so the kernel side of v2 is exercised on other machines only).
    #[test]
    fn v2_files_on_a_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mount = tmp.path().to_path_buf();
        let h = Hierarchy {
            mount: mount.clone(),
            root: "/".into(),
            controllers: vec![],
            unified: true,
        };
        std::fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .expect("controllers");
        std::fs::write(mount.join("cgroup.subtree_control"), "memory\n").expect("subtree");
        enable_controllers(&mount).expect("enable");
        assert_eq!(
            std::fs::read_to_string(mount.join("cgroup.subtree_control")).expect("read"),
            "+cpuset +cpu +io +hugetlb +pids"
        );

        let mgr = CgroupManager::new("/", CgroupVersion::V2, vec![h.clone()]).expect("manager");
        let uid = "u-2";
        let parent = mgr.pod_cgroup_parent(QosClass::Guaranteed, uid);
        // Existing directories are not re-created, so no controller files are needed below.
        std::fs::create_dir_all(h.dir(&parent)).expect("dirs");
        let p = pod(
            uid,
            json!([{"name": "a", "resources": {
            "requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"cpu": "1500m", "memory": "1Gi"}}}]),
        );
        mgr.ensure_pod(&parent, &p).expect("ensure");
        let d = h.dir(&parent);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).expect(f);
        assert_eq!(read("cpu.weight"), shares_to_weight(1536).to_string());
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), (1u64 << 30).to_string());
        let l = mgr.read_limits(&parent).expect("read limits");
        assert_eq!(
            l,
            CgroupLimits {
                cpu_shares: None,
                cpu_weight: Some(shares_to_weight(1536)),
                cpu_quota: Some(150_000),
                cpu_period: Some(100_000),
                memory_limit: Some(1 << 30),
            }
        );
        assert_eq!(mgr.pod_uids().expect("uids"), vec![uid.to_string()]);

        // Burstable without CPU limits: weight only, quota left alone.
        let parent = mgr.pod_cgroup_parent(QosClass::Burstable, "u-3");
        std::fs::create_dir_all(h.dir(&parent)).expect("dirs");
        let p = pod(
            "u-3",
            json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]),
        );
        mgr.ensure_pod(&parent, &p).expect("ensure");
        assert!(!h.dir(&parent).join("cpu.max").exists());
        assert_eq!(
            mgr.pod_uids().expect("uids"),
            vec![uid.to_string(), "u-3".to_string()]
        );
    }

    fn unique_root() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/oxlet-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    #[test]
    fn real_pod_cgroups() {
        assert!(
            std::os::unix::fs::MetadataExt::uid(
                &std::fs::metadata("/proc/self").expect("stat /proc/self")
            ) == 0,
            "this test creates cgroups and must run as root"
        );
        let root = unique_root();
        let mgr = CgroupManager::detect(&root).expect("detect cgroups");
        let mut guard = Cleanup {
            mgr: mgr.clone(),
            root: root.clone(),
            child: None,
        };
        let v1 = mgr.version() == CgroupVersion::V1;
        let cpu_dir = |path: &str| -> PathBuf {
            let h = mgr
                .hierarchies()
                .iter()
                .find(|h| if v1 { h.has("cpu") } else { h.unified })
                .expect("cpu hierarchy");
            h.dir(path)
        };
        let mem_dir = |path: &str| -> PathBuf {
            let h = mgr
                .hierarchies()
                .iter()
                .find(|h| if v1 { h.has("memory") } else { h.unified })
                .expect("memory hierarchy");
            h.dir(path)
        };

        mgr.ensure_qos_cgroups().expect("qos cgroups");
        mgr.ensure_qos_cgroups().expect("qos cgroups again");
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let q = qos_cgroup(&root, qos);
            assert!(cpu_dir(&q).is_dir() && mem_dir(&q).is_dir(), "{q}");
        }
        let be = mgr
            .read_limits(&qos_cgroup(&root, QosClass::BestEffort))
            .expect("read");
        if v1 {
            assert_eq!(be.cpu_shares, Some(2));
        } else {
            assert_eq!(be.cpu_weight, Some(1));
        }

        let uid = "1f2e3d4c-0000-4000-8000-000000000001";
        let p = pod(
            uid,
            json!([
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "250m", "memory": "32Mi"}}}
            ]),
        );
        assert_eq!(qos::qos_class(&p), QosClass::Burstable);
        let parent = mgr.pod_cgroup_parent(QosClass::Burstable, uid);
        assert_eq!(parent, format!("{root}/kubepods/burstable/pod{uid}"));
        mgr.ensure_pod(&parent, &p).expect("ensure pod");
        mgr.ensure_pod(&parent, &p).expect("ensure pod again");
        for d in mgr.dirs(&parent) {
            assert!(d.is_dir(), "{} exists", d.display());
        }
        assert!(cpu_dir(&parent).is_dir() && mem_dir(&parent).is_dir());
        let l = mgr.read_limits(&parent).expect("read limits");
        assert_eq!(l.memory_limit, Some(96 << 20));
        assert_eq!(l.cpu_quota, Some(75_000));
        assert_eq!(l.cpu_period, Some(100_000));
        if v1 {
            assert_eq!(l.cpu_shares, Some(512));
        } else {
            assert_eq!(l.cpu_weight, Some(shares_to_weight(512)));
        }
        assert_eq!(mgr.pod_uids().expect("uids"), vec![uid.to_string()]);

        // A process inside keeps the cgroup busy.
        let child = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        guard.child = Some(child);
        let procs = cpu_dir(&parent).join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).expect("move sleep into the pod cgroup");
        assert!(matches!(
            mgr.remove_pod(&parent),
            Err(CgroupError::Busy { .. })
        ));
        if let Some(mut c) = guard.child.take() {
            c.kill().expect("kill sleep");
            c.wait().expect("reap sleep");
        }

        // runc leaves container cgroups below the pod level; they go first.
        std::fs::create_dir(cpu_dir(&parent).join("container-1")).expect("container cgroup");
        mgr.remove_pod(&parent).expect("remove pod");
        for d in mgr.dirs(&parent) {
            assert!(!d.exists(), "{} removed", d.display());
        }
        mgr.remove_pod(&parent).expect("removing again is fine");
        assert!(mgr.pod_uids().expect("uids").is_empty());
        drop(guard);
        for d in mgr.dirs(&root) {
            assert!(!d.exists(), "test root {} cleaned up", d.display());
        }
    }
}
