//! The node Lease (`coordination.k8s.io/v1`, `kube-node-lease/<node>`), renewed as upstream's
//! node lease controller does (pkg/kubelet/nodelease, component-helpers/apimachinery/lease).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Backoff;
use crate::error::{Error, Result};

/// Namespace holding node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long the lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// `leaseDurationSeconds` written into the Lease (`nodeLeaseDurationSeconds`).
    pub duration_seconds: i32,
    /// Time between renewals.
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// Renewal every quarter of the duration, as upstream (`renewIntervalFraction = 0.25`):
    /// 40 s → 10 s.
    pub fn from_duration_seconds(duration_seconds: i32) -> Self {
        let ms = u64::try_from(duration_seconds).unwrap_or(0) * 1000 / 4;
        Self {
            duration_seconds,
            renew_interval: Duration::from_millis(ms.max(1)),
        }
    }
}

/// The Lease as it should be after a renewal at `now` (pure): holder = node name, our
/// duration, renewTime = now, owned by the Node when its UID is known. Other fields of
/// `existing` (resourceVersion, acquireTime, foreign owners) are kept.
pub fn renewed(
    existing: Option<&Lease>,
    node_name: &str,
    node_uid: Option<&str>,
    duration_seconds: i32,
    now: jiff::Timestamp,
) -> Lease {
    let mut lease = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_string());
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    if let Some(uid) = node_uid {
        let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        if !owners.iter().any(|o| o.uid == uid) {
            // As upstream's setNodeOwnerFunc: the Lease goes away with its Node.
            owners.push(OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: node_name.to_string(),
                uid: uid.to_string(),
                ..Default::default()
            });
        }
    }
    lease
}

/// Renews one node's Lease.
pub struct LeaseRenewer {
    api: Api<Lease>,
    node_name: String,
    node_uid: Option<String>,
    config: LeaseConfig,
    /// The lease as last written; updates go from it, so a renewal is one request.
    cached: Option<Lease>,
}

impl LeaseRenewer {
    /// A renewer for `node`'s Lease (the Node's UID becomes its owner).
    pub fn new(client: Client, node: &Node, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, LEASE_NAMESPACE),
            node_name: node.metadata.name.clone().unwrap_or_default(),
            node_uid: node.metadata.uid.clone(),
            config,
            cached: None,
        }
    }

    fn api_err(&self, op: &'static str, source: kube::Error) -> Error {
        Error::Api {
            op,
            object: format!("Lease {LEASE_NAMESPACE}/{}", self.node_name),
            source,
        }
    }

    /// Renews once: an update of the cached Lease, or get-or-create when there is none or the
    /// update conflicted.
    pub async fn renew_once(&mut self) -> Result<Lease> {
        let now = jiff::Timestamp::now();
        let uid = self.node_uid.clone();
        let name = self.node_name.clone();
        let duration = self.config.duration_seconds;
        let make = |cur: Option<&Lease>| renewed(cur, &name, uid.as_deref(), duration, now);
        let pp = PostParams::default();
        if let Some(cur) = self.cached.take() {
            match self
                .api
                .replace(&self.node_name, &pp, &make(Some(&cur)))
                .await
            {
                Ok(l) => {
                    self.cached = Some(l.clone());
                    return Ok(l);
                }
                // Someone else wrote it, or it was deleted: fall back to a fresh read.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(self.api_err("update Lease", e)),
            }
        }
        let lease = match self.api.get_opt(&self.node_name).await {
            Ok(Some(cur)) => self
                .api
                .replace(&self.node_name, &pp, &make(Some(&cur)))
                .await
                .map_err(|e| self.api_err("update Lease", e))?,
            Ok(None) => {
                let l = self
                    .api
                    .create(&pp, &make(None))
                    .await
                    .map_err(|e| self.api_err("create Lease", e))?;
                info!(node = %self.node_name, "node lease created");
                l
            }
            Err(e) => return Err(self.api_err("get Lease", e)),
        };
        self.cached = Some(lease.clone());
        Ok(lease)
    }

    /// Renews every `renew_interval` until `shutdown`; a failure is retried after 200 ms,
    /// doubling up to 7 s, and never ends the loop.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::upstream();
        loop {
            let delay = match self.renew_once().await {
                Ok(_) => {
                    debug!(node = %self.node_name, "node lease renewed");
                    backoff.reset();
                    self.config.renew_interval
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    warn!(node = %self.node_name, error = %e, delay = ?d, "node lease renewal failed, retrying");
                    d
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        info!(node = %self.node_name, "node lease loop stopped: shutdown");
    }
}

/// Renews `node`'s Lease until `shutdown` (see [`LeaseRenewer::run`]); the future owns what
/// it needs, so it can be spawned.
pub fn run(
    client: Client,
    node: &Node,
    config: LeaseConfig,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    LeaseRenewer::new(client, node, config).run(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_quarter_of_the_duration() {
        assert_eq!(
            LeaseConfig::from_duration_seconds(40).renew_interval,
            Duration::from_secs(10)
        );
        assert_eq!(
            LeaseConfig::from_duration_seconds(4).renew_interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn renewed_lease_has_holder_duration_time_and_owner() {
        let now = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        let l = renewed(None, "node-a", Some("uid-1"), 40, now);
        assert_eq!(l.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(l.metadata.name.as_deref(), Some("node-a"));
        let spec = l.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let owners = l.metadata.owner_references.clone().expect("owners");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Node");
        assert_eq!(owners[0].uid, "uid-1");
        // Renewing again keeps one owner reference and moves renewTime.
        let later = now + jiff::SignedDuration::from_secs(10);
        let l2 = renewed(Some(&l), "node-a", Some("uid-1"), 40, later);
        assert_eq!(l2.metadata.owner_references.map(|o| o.len()), Some(1));
        assert_eq!(l2.spec.and_then(|s| s.renew_time), Some(MicroTime(later)));
    }
}
