//! CPU, memory and hugepage settings for CRI containers and sandboxes, and the pod totals the
//! pod cgroup is sized from, as upstream's kuberuntime_container_linux.go
//! (generateLinuxContainerResources, calculateLinuxResources), cm/helpers_linux.go
//! (MilliCPUToShares, MilliCPUToQuota), qos/policy.go (GetContainerOOMScoreAdjust) and
//! api/v1/resource (PodRequests, PodLimits).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use oxlet_cri::api;

use super::qos::{self, milli, QosClass};

/// Smallest cpu.shares value the kernel accepts; what BestEffort containers get.
pub const MIN_SHARES: i64 = 2;
/// Largest cpu.shares value the kernel accepts.
pub const MAX_SHARES: i64 = 262_144;
/// CFS period the kubelet uses by default, in microseconds.
pub const QUOTA_PERIOD: i64 = 100_000;
/// Smallest CFS quota the kernel accepts, in microseconds.
pub const MIN_QUOTA_PERIOD: i64 = 1_000;
/// OOM score adjustment of Guaranteed and node-critical containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// OOM score adjustment of BestEffort containers.
pub const BESTEFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Memory request assumed for a container without one when comparing sidecars with regular
/// containers (scheduler's DefaultMemoryRequest).
const DEFAULT_MEMORY_REQUEST: i128 = 200 * 1024 * 1024;

/// Resource amounts by name (`cpu`, `memory`, `hugepages-2Mi`, …) in milli-units.
pub type ResourceList = BTreeMap<String, i128>;

/// cpu.shares for a CPU request in millicores: 1024 per core, at least 2, at most 262144.
pub fn milli_cpu_to_shares(milli_cpu: i128) -> i64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = milli_cpu * 1024 / 1000;
    shares.clamp(MIN_SHARES as i128, MAX_SHARES as i128) as i64
}

/// CFS quota in microseconds for a CPU limit in millicores over `period`; 0 (no quota) for no
/// limit, and at least 1000 otherwise.
pub fn milli_cpu_to_quota(milli_cpu: i128, period: i64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let quota = milli_cpu * period as i128 / 1000;
    quota.clamp(MIN_QUOTA_PERIOD as i128, i64::MAX as i128) as i64
}

/// Bytes from a milli-unit amount, rounded up like upstream's Quantity.Value().
fn bytes(milli: i128) -> i128 {
    (milli + 999).div_euclid(1000)
}

fn list(m: Option<&BTreeMap<String, K8sQuantity>>) -> ResourceList {
    m.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), milli(&v.0)))
        .collect()
}

fn requests_of(r: Option<&ResourceRequirements>) -> ResourceList {
    list(r.and_then(|r| r.requests.as_ref()))
}

fn limits_of(r: Option<&ResourceRequirements>) -> ResourceList {
    list(r.and_then(|r| r.limits.as_ref()))
}

fn add(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Sums per-container amounts the way the scheduler and kubelet size a pod: regular
/// containers and sidecars run together; each ordinary init container runs with the sidecars
/// started before it; the pod needs the larger of the two.
fn aggregate(pod: &Pod, get: impl Fn(&Container) -> ResourceList) -> ResourceList {
    let mut total = ResourceList::new();
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    for c in &spec.containers {
        add(&mut total, &get(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let own = get(c);
        let during = if is_restartable(c) {
            add(&mut total, &own);
            add(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut t = own;
            add(&mut t, &sidecars);
            t
        };
        max_into(&mut init_peak, &during);
    }
    max_into(&mut total, &init_peak);
    total
}

fn overhead(pod: &Pod) -> ResourceList {
    list(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()))
}

/// The pod's effective requests (upstream's PodRequests), with `spec.overhead` added unless
/// `exclude_overhead`.
pub fn pod_requests(pod: &Pod, exclude_overhead: bool) -> ResourceList {
    let mut reqs = aggregate(pod, |c| requests_of(c.resources.as_ref()));
    if !exclude_overhead {
        add(&mut reqs, &overhead(pod));
    }
    reqs
}

/// The pod's effective limits (upstream's PodLimits); overhead is added only to resources that
/// already have a limit, unless `exclude_overhead`.
pub fn pod_limits(pod: &Pod, exclude_overhead: bool) -> ResourceList {
    let mut lims = aggregate(pod, |c| limits_of(c.resources.as_ref()));
    if !exclude_overhead {
        for (k, v) in overhead(pod) {
            if let Some(l) = lims.get_mut(&k) {
                *l += v;
            }
        }
    }
    lims
}

/// Whether every container (regular and init) sets a non-zero (cpu, memory) limit; only then
/// does the pod cgroup of a Burstable pod get a quota / memory limit.
pub fn pod_limits_declared(pod: &Pod) -> (bool, bool) {
    let Some(spec) = pod.spec.as_ref() else {
        return (false, false);
    };
    let (mut cpu, mut mem) = (true, true);
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let l = limits_of(c.resources.as_ref());
        cpu &= l.get("cpu").copied().unwrap_or(0) != 0;
        mem &= l.get("memory").copied().unwrap_or(0) != 0;
    }
    (cpu, mem)
}

/// Shares, period, quota and memory limit from a CPU request (None when absent: the limit
/// stands in for it, as upstream's calculateLinuxResources), CPU limit and memory limit, all in
/// milli-units.
pub fn linux_resources(
    cpu_request: Option<i128>,
    cpu_limit: i128,
    memory_limit: i128,
) -> api::LinuxContainerResources {
    let shares = match cpu_request {
        None if cpu_limit != 0 => milli_cpu_to_shares(cpu_limit),
        r => milli_cpu_to_shares(r.unwrap_or(0)),
    };
    let mem = bytes(memory_limit);
    api::LinuxContainerResources {
        cpu_shares: shares,
        cpu_period: QUOTA_PERIOD,
        cpu_quota: milli_cpu_to_quota(cpu_limit, QUOTA_PERIOD),
        memory_limit_in_bytes: i64::try_from(mem).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// The container's resources for CRI: shares from the CPU request, CFS quota from the CPU
/// limit, memory limit, OOM score adjustment by QoS and hugepage limits.
pub fn linux_container_resources(
    pod: &Pod,
    container: &Container,
    node_memory_bytes: i128,
) -> api::LinuxContainerResources {
    let res = container.resources.as_ref();
    let reqs = requests_of(res);
    let lims = limits_of(res);
    let mut lcr = linux_resources(
        reqs.get("cpu").copied(),
        lims.get("cpu").copied().unwrap_or(0),
        lims.get("memory").copied().unwrap_or(0),
    );
    lcr.oom_score_adj = oom_score_adj(pod, container, node_memory_bytes);
    lcr.hugepage_limits = hugepage_limits(res);
    lcr
}

/// The OOM score adjustment of a container, as upstream's GetContainerOOMScoreAdjust:
/// node-critical and Guaranteed -997, BestEffort 1000, Burstable by the share of node memory
/// it requests, kept within [3, 999] so it sorts between the other two classes.
pub fn oom_score_adj(pod: &Pod, container: &Container, node_memory_bytes: i128) -> i64 {
    if qos::is_node_critical_pod(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos::qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BESTEFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let capacity = node_memory_bytes.max(1);
    let own = requests_of(container.resources.as_ref())
        .get("memory")
        .map(|m| bytes(*m))
        .unwrap_or(0);
    let mut adj = 1000 - (1000 * own) / capacity;
    if qos::is_sidecar(pod, container) {
        // A sidecar is scored like the smallest regular container (missing requests count as
        // the scheduler's default), and one point worse when it is not smaller itself, so it
        // dies before the containers it serves.
        let default_or = |c: &Container| {
            requests_of(c.resources.as_ref())
                .get("memory")
                .map(|m| bytes(*m))
                .unwrap_or(DEFAULT_MEMORY_REQUEST)
        };
        let regular_min = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().map(default_or).min());
        let min = regular_min.map_or(default_or(container), |m| m.min(default_or(container)));
        adj = 1000 - (1000 * min) / capacity;
        if min <= own {
            adj += 1;
        }
    }
    let floor = 1000 + GUARANTEED_OOM_SCORE_ADJ as i128;
    if adj < floor {
        return floor as i64;
    }
    if adj >= BESTEFFORT_OOM_SCORE_ADJ as i128 {
        return BESTEFFORT_OOM_SCORE_ADJ - 1;
    }
    adj as i64
}

/// Hugepage limits from `hugepages-<size>` limits, with the page size written as the kernel's
/// hugetlb files name it (`2MB`, `1GB`), as upstream's GetHugepageLimitsFromResources.
///
/// Upstream also lists every page size the host supports with limit 0; oxlet lists only the
/// sizes asked for (the node advertises no hugepages, so pods asking for them are not placed).
pub fn hugepage_limits(res: Option<&ResourceRequirements>) -> Vec<api::HugepageLimit> {
    let mut out = Vec::new();
    for (name, amount) in limits_of(res) {
        let Some(size) = name.strip_prefix("hugepages-") else {
            continue;
        };
        let Ok(size) = crate::node::host::Quantity::parse(size) else {
            continue;
        };
        let Some(unit) = hugepage_unit_size(bytes(size.0)) else {
            continue;
        };
        out.push(api::HugepageLimit {
            page_size: unit,
            limit: u64::try_from(bytes(amount)).unwrap_or(0),
        });
    }
    out
}

/// `2097152` → `2MB`, as upstream's HugePageUnitSizeFromByteSize.
pub fn hugepage_unit_size(mut size: i128) -> Option<String> {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    if size <= 0 {
        return None;
    }
    let mut idx = 0;
    while size % 1024 == 0 && idx < UNITS.len() - 1 {
        size /= 1024;
        idx += 1;
    }
    if size > 1024 && idx < UNITS.len() - 1 {
        return None;
    }
    Some(format!("{size}{}", UNITS[idx]))
}

/// The sandbox's `resources` (whole pod, overhead excluded) and `overhead`, as upstream's
/// applySandboxResources: runtimes that run the pod in a VM size it from these.
pub fn sandbox_resources(
    pod: &Pod,
) -> (api::LinuxContainerResources, api::LinuxContainerResources) {
    let req = pod_requests(pod, true);
    let lim = pod_limits(pod, true);
    let resources = linux_resources(
        req.get("cpu").copied(),
        lim.get("cpu").copied().unwrap_or(0),
        lim.get("memory").copied().unwrap_or(0),
    );
    let oh = overhead(pod);
    let overhead = if pod
        .spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .is_some()
    {
        // Overhead is treated as guaranteed: request == limit.
        let cpu = oh.get("cpu").copied().unwrap_or(0);
        linux_resources(Some(cpu), cpu, oh.get("memory").copied().unwrap_or(0))
    } else {
        api::LinuxContainerResources::default()
    };
    (resources, overhead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GI: i128 = 1 << 30;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": spec
        }))
        .expect("test pod")
    }

    fn ctr(name: &str, req: serde_json::Value, lim: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "resources": {"requests": req, "limits": lim}})
    }

    #[test]
    fn shares_and_quota() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (100, 102),
            (250, 256),
            (1000, 1024),
            (300_000, 262_144),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "shares of {milli}m");
        }
        for (milli, quota) in [
            (0, 0),
            (5, 1000),
            (9, 1000),
            (10, 1000),
            (200, 20_000),
            (1500, 150_000),
        ] {
            assert_eq!(
                milli_cpu_to_quota(milli, QUOTA_PERIOD),
                quota,
                "quota of {milli}m"
            );
        }
    }

    #[test]
    fn container_resources_table() {
        let node = 8 * GI;
        // (name, container requests, container limits, shares, quota, memory, oom)
        let cases = [
            ("best effort", json!({}), json!({}), 2, 0, 0, 1000),
            (
                "guaranteed",
                json!({"cpu": "500m", "memory": "256Mi"}),
                json!({"cpu": "500m", "memory": "256Mi"}),
                512,
                50_000,
                256 << 20,
                -997,
            ),
            (
                "burstable cpu request",
                json!({"cpu": "100m"}),
                json!({}),
                102,
                0,
                0,
                999,
            ),
            (
                "burstable 1Gi of 8Gi",
                json!({"memory": "1Gi"}),
                json!({"memory": "2Gi"}),
                2,
                0,
                2 * GI as i64,
                875,
            ),
            (
                "limit only: shares from limit",
                json!({"memory": "1Mi"}),
                json!({"cpu": "2"}),
                2048,
                200_000,
                0,
                1000 - 1,
            ),
            (
                "request above node memory",
                json!({"memory": "16Gi"}),
                json!({}),
                2,
                0,
                0,
                3,
            ),
            (
                "tiny quota",
                json!({"cpu": "1m", "memory": "1Mi"}),
                json!({"cpu": "5m"}),
                2,
                1000,
                0,
                1000 - 1,
            ),
        ];
        for (name, req, lim, shares, quota, mem, oom) in cases {
            let p = pod(json!({"containers": [ctr("c", req, lim)]}));
            let c = &p.spec.as_ref().expect("spec").containers[0];
            let r = linux_container_resources(&p, c, node);
            assert_eq!(r.cpu_shares, shares, "{name}: shares");
            assert_eq!(r.cpu_quota, quota, "{name}: quota");
            assert_eq!(r.cpu_period, QUOTA_PERIOD, "{name}: period");
            assert_eq!(r.memory_limit_in_bytes, mem, "{name}: memory");
            assert_eq!(r.oom_score_adj, oom, "{name}: oom");
        }
    }

    #[test]
    fn node_critical_pod_is_protected() {
        let p = pod(json!({
            "priority": 2_000_001_000, "priorityClassName": "system-node-critical",
            "containers": [ctr("c", json!({"memory": "1Mi"}), json!({}))]
        }));
        let c = &p.spec.as_ref().expect("spec").containers[0];
        assert_eq!(oom_score_adj(&p, c, 8 * GI), -997);
    }

    #[test]
    fn sidecar_scores_worse_than_the_containers_it_serves() {
        let p = pod(json!({
            "initContainers": [{"name": "side", "restartPolicy": "Always",
                                "resources": {"requests": {"memory": "2Gi"}}}],
            "containers": [ctr("main", json!({"memory": "1Gi"}), json!({}))]
        }));
        let spec = p.spec.as_ref().expect("spec");
        let main = &spec.containers[0];
        let side = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(oom_score_adj(&p, main, 8 * GI), 875);
        // Scored as the smallest regular container (1Gi → 875), plus one.
        assert_eq!(oom_score_adj(&p, side, 8 * GI), 876);
    }

    #[test]
    fn hugepages() {
        let p = pod(json!({"containers": [ctr("c",
            json!({"hugepages-2Mi": "4Mi", "memory": "1Mi"}),
            json!({"hugepages-2Mi": "4Mi", "hugepages-1Gi": "2Gi", "memory": "1Mi"}))]}));
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let mut h = linux_container_resources(&p, c, 8 * GI).hugepage_limits;
        h.sort_by(|a, b| a.page_size.cmp(&b.page_size));
        assert_eq!(
            h.iter()
                .map(|l| (l.page_size.as_str(), l.limit))
                .collect::<Vec<_>>(),
            vec![("1GB", 2 << 30), ("2MB", 4 << 20)]
        );
        assert_eq!(hugepage_unit_size(4096).as_deref(), Some("4KB"));
        assert_eq!(hugepage_unit_size(1000), Some("1000B".to_string()));
        assert_eq!(hugepage_unit_size(3000), None);
    }

    #[test]
    fn pod_totals_with_init_and_sidecars() {
        let p = pod(json!({
            "overhead": {"cpu": "10m", "memory": "1Mi"},
            "initContainers": [
                ctr("big-init", json!({"cpu": "2"}), json!({"cpu": "2", "memory": "10Mi"})),
                {"name": "side", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m", "memory": "20Mi"}}},
                ctr("late-init", json!({"cpu": "1"}), json!({"cpu": "1", "memory": "10Mi"})),
            ],
            "containers": [
                ctr("a", json!({"cpu": "200m"}), json!({"cpu": "500m", "memory": "100Mi"})),
                ctr("b", json!({"cpu": "300m"}), json!({"cpu": "500m", "memory": "100Mi"})),
            ]
        }));
        let req = pod_requests(&p, false);
        // max(regular 500m + sidecar 100m, big-init 2000m, late-init 1000m + sidecar 100m) + 10m
        assert_eq!(req.get("cpu"), Some(&2010));
        assert_eq!(req.get("memory"), Some(&((1i128 << 20) * 1000)));
        let lim = pod_limits(&p, true);
        assert_eq!(lim.get("cpu"), Some(&2000));
        assert_eq!(lim.get("memory"), Some(&((220i128 << 20) * 1000)));
        assert_eq!(pod_limits_declared(&p), (true, true));
        let (res, oh) = sandbox_resources(&p);
        assert_eq!(
            (res.cpu_shares, res.cpu_quota, res.memory_limit_in_bytes),
            (2048, 200_000, 220 << 20)
        );
        assert_eq!(
            (oh.cpu_shares, oh.cpu_quota, oh.memory_limit_in_bytes),
            (10, 1000, 1 << 20)
        );

        let p =
            pod(json!({"containers": [ctr("a", json!({"cpu": "1"}), json!({"memory": "1Mi"}))]}));
        assert_eq!(pod_limits_declared(&p), (false, true));
        let (_, oh) = sandbox_resources(&p);
        assert_eq!(oh, api::LinuxContainerResources::default());
    }
}
