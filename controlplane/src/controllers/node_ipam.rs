//! Node IPAM (kube-controller-manager's `nodeipam`, range allocator): gives each node a
//! `spec.podCIDR`/`spec.podCIDRs` from `--cluster-cidr`, split by `--node-cidr-mask-size`.
//!
//! The used set is not kept anywhere: it is recomputed from the nodes that exist (plus the
//! allocations this process made that the watch has not shown yet), so a restart or a node
//! deletion needs no bookkeeping. The first free subnet is taken, as upstream's
//! `cidrset.AllocateNext` scans from the start.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::Resource as _;
use serde_json::json;
use tokio::sync::Mutex;

use super::Context;

/// Prefix length of IPv6 node ranges (`--node-cidr-mask-size-ipv6` default).
pub const IPV6_NODE_MASK: u8 = 64;

/// A CIDR as an integer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address as a 128-bit integer (IPv4 in the low 32 bits).
    pub network: u128,
    /// Prefix length.
    pub prefix: u8,
    /// IPv6 (128 address bits) or IPv4 (32).
    pub v6: bool,
}

impl Cidr {
    fn bits(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// Parses `10.42.0.0/16` or `fd00::/48`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: not a CIDR"))?;
        let ip: IpAddr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let (network, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            IpAddr::V6(a) => (u128::from(a), true),
        };
        let cidr = Cidr {
            network,
            prefix,
            v6,
        };
        if prefix > cidr.bits() {
            return Err(format!("{s:?}: prefix longer than the address"));
        }
        if network & !cidr.mask() != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u128 {
        let host = self.bits() - self.prefix;
        let all: u128 = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }

    /// How many subnets of length `mask` the range holds (capped at 2^32 for the scan).
    pub fn subnet_count(&self, mask: u8) -> u128 {
        1u128 << u32::from(mask.saturating_sub(self.prefix)).min(32)
    }

    /// The `index`th subnet of length `mask`.
    pub fn subnet(&self, mask: u8, index: u128) -> Cidr {
        let shift = self.bits() - mask;
        Cidr {
            network: self.network | (index << shift),
            prefix: mask,
            v6: self.v6,
        }
    }

    /// The index of `sub` among this range's subnets of length `mask`, if it is one.
    pub fn index_of(&self, mask: u8, sub: &Cidr) -> Option<u128> {
        (sub.v6 == self.v6 && sub.prefix == mask && sub.network & self.mask() == self.network)
            .then(|| (sub.network - self.network) >> (self.bits() - mask))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.v6 {
            IpAddr::from(std::net::Ipv6Addr::from(self.network))
        } else {
            IpAddr::from(std::net::Ipv4Addr::from(self.network as u32))
        };
        write!(f, "{ip}/{}", self.prefix)
    }
}

/// The cluster's ranges and their node prefix lengths (one per family).
#[derive(Debug, Clone)]
pub struct Ranges(pub Vec<(Cidr, u8)>);

impl Ranges {
    /// From `--cluster-cidr` (comma separated) and `--node-cidr-mask-size` (IPv4).
    pub fn parse(cluster_cidr: &str, mask_v4: u8) -> Result<Ranges, String> {
        let mut out = Vec::new();
        for part in cluster_cidr.split(',').filter(|s| !s.trim().is_empty()) {
            let cidr = Cidr::parse(part)?;
            let mask = if cidr.v6 { IPV6_NODE_MASK } else { mask_v4 };
            if mask < cidr.prefix || mask > cidr.bits() {
                return Err(format!(
                    "node CIDR mask /{mask} does not fit in cluster CIDR {cidr}"
                ));
            }
            out.push((cidr, mask));
        }
        if out.is_empty() {
            return Err("empty cluster CIDR".to_string());
        }
        Ok(Ranges(out))
    }

    /// The first free subnet of each range given the CIDRs in use; None when one is full.
    pub fn allocate<'a>(
        &self,
        used: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<Vec<Cidr>> {
        self.0
            .iter()
            .map(|(range, mask)| {
                let taken: BTreeSet<u128> = used
                    .clone()
                    .into_iter()
                    .filter_map(|s| Cidr::parse(s).ok())
                    .filter_map(|c| range.index_of(*mask, &c))
                    .collect();
                (0..range.subnet_count(*mask))
                    .find(|i| !taken.contains(i))
                    .map(|i| range.subnet(*mask, i))
            })
            .collect()
    }
}

/// The pod CIDRs a node has.
pub fn node_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let list: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
        .into_iter()
        .collect()
}

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
    ranges: Ranges,
    /// Allocations made but not yet seen in the store, by node name.
    pending: Mutex<HashMap<String, Vec<String>>>,
    recorder: Recorder,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the node's pod CIDR failed.
    #[error("set podCIDR of node {node}: {source}")]
    Patch {
        /// The node.
        node: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Nothing is allocated from half a list: a node not listed yet may own the subnet.
    if ctx.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::await_change());
    }
    // One allocation at a time, so two nodes never get the same subnet.
    let mut pending = ctx.pending.lock().await;
    let nodes = ctx.nodes.state();
    let current = ctx
        .nodes
        .get(&kube::runtime::reflector::ObjectRef::new(&name))
        .unwrap_or(node);
    if !node_cidrs(&current).is_empty() {
        pending.remove(&name);
        return Ok(Action::await_change());
    }
    let existing: HashMap<&str, ()> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .map(|n| (n, ()))
        .collect();
    pending.retain(|n, _| {
        existing.contains_key(n.as_str())
            && nodes
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(n))
                .is_some_and(|x| node_cidrs(x).is_empty())
    });
    if let Some(mine) = pending.get(&name) {
        // Allocated earlier and the write may have failed: write the same again.
        let mine = mine.clone();
        return write(&ctx, &name, &mine).await;
    }
    let used: Vec<String> = nodes
        .iter()
        .flat_map(|n| node_cidrs(n))
        .chain(pending.values().flatten().cloned())
        .collect();
    let Some(cidrs) = ctx.ranges.allocate(used.iter().map(String::as_str)) else {
        tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR");
        let event = Event {
            type_: EventType::Normal,
            reason: "CIDRNotAvailable".to_string(),
            note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
            action: "CIDRAssignmentFailed".to_string(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &current.object_ref(&())).await {
            tracing::warn!(%error, "recording CIDRNotAvailable failed");
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    pending.insert(name.clone(), cidrs.clone());
    write(&ctx, &name, &cidrs).await
}

async fn write(ctx: &Ctx, name: &str, cidrs: &[String]) -> Result<Action, Error> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Patch {
            node: name.to_string(),
            source,
        })?;
    tracing::info!(node = %name, cidrs = ?cidrs, "allocated pod CIDR");
    Ok(Action::await_change())
}

fn error_policy(_node: Arc<Node>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "pod CIDR allocation failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs node IPAM until `ctx.shutdown`; with no cluster CIDR it does nothing (as upstream
/// with `--allocate-node-cidrs=false`).
pub async fn run(ctx: Context) -> Result<(), String> {
    let Some(cidr) = ctx.options.cluster_cidr.clone() else {
        tracing::info!("no cluster CIDR; node IPAM is off");
        ctx.shutdown.cancelled().await;
        return Ok(());
    };
    let ranges = Ranges::parse(&cidr, ctx.options.node_cidr_mask_size)
        .map_err(|e| format!("--cluster-cidr: {e}"))?;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let shared = Arc::new(Ctx {
        client: ctx.client.clone(),
        nodes: controller.store(),
        ranges,
        pending: Mutex::new(HashMap::new()),
        recorder: Recorder::new(
            ctx.client.clone(),
            Reporter {
                controller: "node-ipam-controller".to_string(),
                instance: None,
            },
        ),
    });
    let shutdown = ctx.shutdown.clone();
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "node IPAM reconcile");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_subnet() {
        let r = Ranges::parse("10.42.0.0/16", 24).expect("ranges");
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], Some("10.42.0.0/24")),
            (&["10.42.0.0/24"], Some("10.42.1.0/24")),
            (&["10.42.0.0/24", "10.42.2.0/24"], Some("10.42.1.0/24")),
            // Outside the range, or another mask: ignored.
            (&["10.43.0.0/24", "10.42.0.0/25"], Some("10.42.0.0/24")),
        ];
        for (used, want) in cases {
            let got = r.allocate(used.iter().copied()).map(|v| v[0].to_string());
            assert_eq!(got.as_deref(), *want, "used {used:?}");
        }
    }

    #[test]
    fn exhausted_and_dual_stack() {
        let r = Ranges::parse("10.0.0.0/30", 31).expect("ranges");
        assert_eq!(
            r.allocate(["10.0.0.0/31"]).map(|v| v[0].to_string()),
            Some("10.0.0.2/31".to_string())
        );
        assert_eq!(r.allocate(["10.0.0.0/31", "10.0.0.2/31"]), None);
        let ds = Ranges::parse("10.42.0.0/16,fd00:42::/56", 24).expect("dual");
        let got: Vec<String> = ds
            .allocate(["10.42.0.0/24", "fd00:42::/64"])
            .expect("free")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, vec!["10.42.1.0/24", "fd00:42:0:1::/64"]);
    }

    #[test]
    fn bad_ranges() {
        assert!(Ranges::parse("10.42.0.1/16", 24).is_err());
        assert!(Ranges::parse("10.42.0.0/16", 8).is_err());
        assert!(Ranges::parse("nope", 24).is_err());
    }
}
