//! The proxy's Prometheus metrics, with upstream's names and buckets
//! (kubernetes/kubernetes pkg/proxy/metrics/metrics.go).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Upstream's sync duration buckets: `ExponentialBuckets(0.001, 2, 15)`.
fn sync_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

/// Upstream's network programming buckets: 0.25 s steps to 0.5 s, 1 s steps to 59 s, 5 s
/// steps to 115 s, 30 s steps to 300 s.
fn programming_buckets() -> impl Iterator<Item = f64> {
    linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
}

/// Every proxy metric; cheap to clone (the metrics are shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub sync_full_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub sync_partial_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_timestamp: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub last_queued_timestamp: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    pub nftables_sync_failures: Counter,
    /// `kubeproxy_sync_proxy_rules_iptables_restore_failures_total`.
    pub iptables_restore_failures: Counter,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (the `kubeproxy` sub-registry is
    /// made here, so pass the root registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            sync_duration: Histogram::new(sync_buckets()),
            sync_full_duration: Histogram::new(sync_buckets()),
            sync_partial_duration: Histogram::new(sync_buckets()),
            last_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            nftables_sync_failures: Counter::default(),
            iptables_restore_failures: Counter::default(),
            network_programming_duration: Histogram::new(programming_buckets()),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("kubeproxy");
        r.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full_duration.clone(),
        );
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_timestamp.clone(),
        );
        r.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        // prometheus-client appends `_total` to counters.
        r.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.nftables_sync_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.iptables_restore_failures.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        m
    }
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_upstream_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.sync_duration.observe(0.01);
        m.service_changes.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"}",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"}",
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\"}",
            "kubeproxy_sync_proxy_rules_service_changes_total 1",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
