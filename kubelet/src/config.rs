//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`): the fields a node needs, with
//! upstream names and defaults, lenient decoding with warnings, and validation with field paths.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The API version this module decodes.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The kind this module decodes.
pub const KIND: &str = "KubeletConfiguration";

/// A duration written as Go's `time.Duration` string (`"10s"`, `"1m0s"`, `"500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// Parses a Go duration string: a sequence of decimal numbers with units `ns`, `us`, `µs`,
    /// `ms`, `s`, `m`, `h` (`"1h2m3.5s"`); `"0"` is zero. Negative durations are rejected.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s == "0" {
            return Some(Self(Duration::ZERO));
        }
        if s.is_empty() || s.starts_with('-') {
            return None;
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_end == 0 {
                return None;
            }
            let n: f64 = rest[..num_end].parse().ok()?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per = match &rest[..unit_end] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return None,
            };
            rest = &rest[unit_end..];
            total += n * nanos_per;
        }
        Some(Self(Duration::from_nanos(total.round() as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`: `"1m0s"`, `"10s"`, `"1.5s"`, `"200ms"`, `"0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000_000_000 {
            let (div, unit) = if nanos < 1_000 {
                (1, "ns")
            } else if nanos < 1_000_000 {
                (1_000, "µs")
            } else {
                (1_000_000, "ms")
            };
            return write!(f, "{}{unit}", frac(nanos, div));
        }
        let h = nanos / 3_600_000_000_000;
        let m = (nanos / 60_000_000_000) % 60;
        let s_nanos = nanos % 60_000_000_000;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{}s", frac(s_nanos, 1_000_000_000))
    }
}

/// `n / div` as a decimal without trailing zeros.
fn frac(n: u128, div: u128) -> String {
    let whole = n / div;
    let rem = n % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoDuration::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}")))
    }
}

/// The subset of upstream's `KubeletConfiguration` oxlet reads; unknown fields are kept in
/// `unknown` and reported as warnings by [`parse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletConfiguration {
    /// `kubelet.config.k8s.io/v1beta1`.
    pub api_version: String,
    /// `KubeletConfiguration`.
    pub kind: String,
    /// How often the kubelet computes node status (default 10s).
    pub node_status_update_frequency: GoDuration,
    /// How often node status is posted when nothing changed (default 5m).
    pub node_status_report_frequency: GoDuration,
    /// Duration of the node Lease (default 40); renewed every quarter of it.
    pub node_lease_duration_seconds: i32,
    /// Most pods this node runs (default 110); also the `pods` capacity.
    pub max_pods: i32,
    /// Pod CIDR for standalone mode; ignored when the node gets one from the API server.
    #[serde(rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// Root cgroup for pods (`""` = the root of the hierarchy).
    pub cgroup_root: String,
    /// `cgroupfs` (default) or `systemd`.
    pub cgroup_driver: String,
    /// Resources reserved for the system (`cpu`, `memory`, `ephemeral-storage`, `pid`).
    pub system_reserved: BTreeMap<String, String>,
    /// Resources reserved for Kubernetes daemons.
    pub kube_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds (`memory.available: 100Mi`); only used for allocatable now.
    pub eviction_hard: BTreeMap<String, String>,
    /// Taints added to the Node when it registers.
    pub register_with_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// CRI endpoint (`unix:///run/containerd/containerd.sock`).
    pub container_runtime_endpoint: String,
    /// Directory of static pod manifests (`""` = none).
    pub static_pod_path: String,
    /// DNS server IPs given to pods.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// Cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Authentication of the kubelet server (accepted, not yet enforced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<serde_yaml::Value>,
    /// Authorization of the kubelet server (accepted, not yet enforced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<serde_yaml::Value>,
    /// Kubelet HTTPS port (default 10250).
    pub port: i32,
    /// Plain-HTTP `/healthz` port on 127.0.0.1 (default 10248; 0 disables).
    pub healthz_port: i32,
    /// Where pod log directories are created (default /var/log/pods).
    pub pod_logs_dir: String,
    /// The resolv.conf pods with dnsPolicy Default (or ClusterFirst without clusterDNS) get.
    pub resolv_conf: String,
    /// Serving certificate of the kubelet server (self-signed when empty).
    pub tls_cert_file: String,
    /// Key of `tlsCertFile`.
    pub tls_private_key_file: String,
    /// Address the kubelet server binds (default `0.0.0.0`).
    pub address: String,
    /// Client certificate rotation (accepted, not yet implemented).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    /// Fields this struct does not know, by name.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_yaml::Value>,
}

impl Default for KubeletConfiguration {
    fn default() -> Self {
        let mut c = Self {
            api_version: String::new(),
            kind: String::new(),
            node_status_update_frequency: GoDuration(Duration::ZERO),
            node_status_report_frequency: GoDuration(Duration::ZERO),
            node_lease_duration_seconds: 0,
            max_pods: 0,
            pod_cidr: None,
            cgroup_root: String::new(),
            cgroup_driver: String::new(),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            eviction_hard: BTreeMap::new(),
            register_with_taints: Vec::new(),
            container_runtime_endpoint: String::new(),
            static_pod_path: String::new(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            authentication: None,
            authorization: None,
            port: 0,
            healthz_port: 0,
            resolv_conf: String::new(),
            pod_logs_dir: String::new(),
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            address: String::new(),
            rotate_certificates: None,
            unknown: BTreeMap::new(),
        };
        c.set_defaults();
        c
    }
}

/// Fields accepted from the file but not acted upon yet; each set one gets a warning.
const ACCEPTED_UNIMPLEMENTED: &[&str] = &["authentication", "authorization", "rotateCertificates"];

impl KubeletConfiguration {
    /// Fills zero values with upstream defaults (pkg/kubelet/apis/config/v1beta1/defaults.go).
    pub fn set_defaults(&mut self) {
        if self.api_version.is_empty() {
            self.api_version = API_VERSION.to_string();
        }
        if self.kind.is_empty() {
            self.kind = KIND.to_string();
        }
        if self.node_status_update_frequency.0.is_zero() {
            self.node_status_update_frequency = GoDuration(Duration::from_secs(10));
        }
        if self.node_status_report_frequency.0.is_zero() {
            self.node_status_report_frequency = GoDuration(Duration::from_secs(300));
        }
        if self.node_lease_duration_seconds == 0 {
            self.node_lease_duration_seconds = 40;
        }
        if self.max_pods == 0 {
            self.max_pods = 110;
        }
        if self.cgroup_driver.is_empty() {
            self.cgroup_driver = "cgroupfs".to_string();
        }
        if self.eviction_hard.is_empty() {
            // Upstream DefaultEvictionHard (linux).
            for (k, v) in [
                ("memory.available", "100Mi"),
                ("nodefs.available", "10%"),
                ("nodefs.inodesFree", "5%"),
                ("imagefs.available", "15%"),
            ] {
                self.eviction_hard.insert(k.to_string(), v.to_string());
            }
        }
        if self.container_runtime_endpoint.is_empty() {
            self.container_runtime_endpoint = "unix:///run/containerd/containerd.sock".to_string();
        }
        if self.port == 0 {
            self.port = 10250;
        }
        if self.address.is_empty() {
            self.address = "0.0.0.0".to_string();
        }
        if self.healthz_port == 0 {
            self.healthz_port = 10248;
        }
        if self.pod_logs_dir.is_empty() {
            self.pod_logs_dir = "/var/log/pods".to_string();
        }
        if self.resolv_conf.is_empty() {
            self.resolv_conf = "/etc/resolv.conf".to_string();
        }
        if self.cluster_domain.is_empty() {
            self.cluster_domain = "cluster.local".to_string();
        }
    }

    /// Checks values, returning one `fieldPath: problem` line per error.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.node_status_update_frequency.0.is_zero() {
            errs.push("nodeStatusUpdateFrequency: must be greater than 0".to_string());
        }
        if self.node_status_report_frequency.0.is_zero() {
            errs.push("nodeStatusReportFrequency: must be greater than 0".to_string());
        }
        if self.node_lease_duration_seconds <= 0 {
            errs.push("nodeLeaseDurationSeconds: must be greater than 0".to_string());
        }
        if self.max_pods < 0 {
            errs.push("maxPods: must not be negative".to_string());
        }
        if !(1..=65535).contains(&self.port) {
            errs.push(format!(
                "port: must be between 1 and 65535, inclusive (got {})",
                self.port
            ));
        }
        if self.cgroup_driver != "cgroupfs" && self.cgroup_driver != "systemd" {
            errs.push(format!(
                "cgroupDriver: must be \"cgroupfs\" or \"systemd\" (got {:?})",
                self.cgroup_driver
            ));
        }
        for (field, map) in [
            ("systemReserved", &self.system_reserved),
            ("kubeReserved", &self.kube_reserved),
        ] {
            for (k, v) in map {
                if k == "pid" {
                    if v.parse::<u64>().is_err() {
                        errs.push(format!("{field}[{k}]: invalid value {v:?}"));
                    }
                } else if crate::node::host::Quantity::parse(v).is_err() {
                    errs.push(format!("{field}[{k}]: invalid quantity {v:?}"));
                }
            }
        }
        for (k, v) in &self.eviction_hard {
            let ok = match v.strip_suffix('%') {
                Some(p) => p.parse::<f64>().is_ok_and(|p| (0.0..=100.0).contains(&p)),
                None => crate::node::host::Quantity::parse(v).is_ok(),
            };
            if !ok {
                errs.push(format!("evictionHard[{k}]: invalid value {v:?}"));
            }
        }
        for (i, ip) in self.cluster_dns.iter().enumerate() {
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(format!("clusterDNS[{i}]: invalid IP address {ip:?}"));
            }
        }
        if self.address.parse::<std::net::IpAddr>().is_err() {
            errs.push(format!("address: invalid IP address {:?}", self.address));
        }
        errs
    }
}

/// Decodes a KubeletConfiguration (YAML or JSON), applies defaults and validates it.
///
/// Returns the config and warnings: like upstream's lenient decoding, unknown fields are not
/// an error but each is named once; accepted-but-unimplemented fields are named too.
pub fn parse(text: &str) -> Result<(KubeletConfiguration, Vec<String>)> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| Error::ConfigDecode(e.to_string()))?;
    let value = match value {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        v => v,
    };
    let mut cfg: KubeletConfiguration =
        serde_yaml::from_value(value).map_err(|e| Error::ConfigDecode(e.to_string()))?;
    let mut errs = Vec::new();
    if !cfg.api_version.is_empty() && cfg.api_version != API_VERSION {
        errs.push(format!(
            "apiVersion: must be {API_VERSION:?} (got {:?})",
            cfg.api_version
        ));
    }
    if !cfg.kind.is_empty() && cfg.kind != KIND {
        errs.push(format!("kind: must be {KIND:?} (got {:?})", cfg.kind));
    }
    let mut warnings = Vec::new();
    if !cfg.unknown.is_empty() {
        let names: Vec<&str> = cfg.unknown.keys().map(String::as_str).collect();
        warnings.push(format!(
            "using lenient decoding as strict decoding failed: unknown fields ignored: {}",
            names.join(", ")
        ));
    }
    let set: Vec<&str> = ACCEPTED_UNIMPLEMENTED
        .iter()
        .copied()
        .filter(|f| match *f {
            "authentication" => cfg.authentication.is_some(),
            "authorization" => cfg.authorization.is_some(),
            _ => cfg.rotate_certificates.is_some(),
        })
        .collect();
    for f in set {
        warnings.push(format!("{f}: accepted but not implemented yet"));
    }
    cfg.set_defaults();
    errs.extend(cfg.validate());
    if !errs.is_empty() {
        return Err(Error::ConfigInvalid(errs));
    }
    Ok((cfg, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like a kubeadm-generated /var/lib/kubelet/config.yaml.
    const SAMPLE: &str = r#"
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMinimumGCAge: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 1m0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
systemReserved:
  cpu: 100m
  memory: 256Mi
kubeReserved:
  memory: 128Mi
  ephemeral-storage: 1Gi
registerWithTaints:
- key: example.com/dedicated
  value: infra
  effect: NoSchedule
"#;

    #[test]
    fn parses_upstream_sample_with_defaults_and_warnings() {
        let (cfg, warnings) = parse(SAMPLE).expect("sample parses");
        assert_eq!(cfg.cgroup_driver, "systemd");
        assert_eq!(cfg.cluster_dns, vec!["10.96.0.10"]);
        assert_eq!(cfg.cluster_domain, "cluster.local");
        assert_eq!(cfg.static_pod_path, "/etc/kubernetes/manifests");
        // "0s" means unset upstream, so the default applies.
        assert_eq!(cfg.node_status_update_frequency.0, Duration::from_secs(10));
        assert_eq!(cfg.node_status_report_frequency.0, Duration::from_secs(60));
        assert_eq!(cfg.node_lease_duration_seconds, 40);
        assert_eq!(cfg.max_pods, 110);
        assert_eq!(cfg.port, 10250);
        assert_eq!(cfg.address, "0.0.0.0");
        assert_eq!(cfg.system_reserved["cpu"], "100m");
        assert_eq!(cfg.kube_reserved["ephemeral-storage"], "1Gi");
        assert_eq!(cfg.eviction_hard["memory.available"], "100Mi");
        assert_eq!(cfg.register_with_taints[0].effect, "NoSchedule");
        assert_eq!(cfg.rotate_certificates, Some(true));
        assert!(
            warnings[0].contains("cpuManagerReconcilePeriod"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("syncFrequency"), "{warnings:?}");
        assert_eq!(cfg.healthz_port, 10248);
        assert_eq!(cfg.pod_logs_dir, "/var/log/pods");
        assert!(!warnings[0].contains("clusterDNS"), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.starts_with("authentication:")));
        assert!(warnings
            .iter()
            .any(|w| w.starts_with("rotateCertificates:")));
    }

    #[test]
    fn empty_file_gives_upstream_defaults() {
        let (cfg, warnings) = parse("").expect("empty parses");
        assert_eq!(cfg, KubeletConfiguration::default());
        assert!(warnings.is_empty());
        assert_eq!(cfg.cgroup_driver, "cgroupfs");
        assert_eq!(cfg.node_status_report_frequency.to_string(), "5m0s");
        assert_eq!(cfg.node_status_update_frequency.to_string(), "10s");
    }

    #[test]
    fn validation_names_field_paths() {
        let text = "nodeLeaseDurationSeconds: -1\nport: 70000\ncgroupDriver: bogus\n\
                    systemReserved: {memory: lots}\nclusterDNS: [nope]\n";
        let Err(Error::ConfigInvalid(errs)) = parse(text) else {
            panic!("expected validation error");
        };
        assert!(errs.contains(&"nodeLeaseDurationSeconds: must be greater than 0".to_string()));
        assert!(errs.iter().any(|e| e.starts_with("port: ")));
        assert!(errs.iter().any(|e| e.starts_with("cgroupDriver: ")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("systemReserved[memory]: ")));
        assert!(errs.iter().any(|e| e.starts_with("clusterDNS[0]: ")));
        let cfg = KubeletConfiguration {
            node_status_update_frequency: GoDuration(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(
            cfg.validate(),
            vec!["nodeStatusUpdateFrequency: must be greater than 0"]
        );
    }

    #[test]
    fn wrong_type_and_wrong_kind_fail() {
        assert!(matches!(
            parse("maxPods: many"),
            Err(Error::ConfigDecode(_))
        ));
        assert!(matches!(
            parse("nodeStatusUpdateFrequency: 10 parsecs"),
            Err(Error::ConfigDecode(_))
        ));
        assert!(matches!(
            parse("apiVersion: v1\nkind: Pod"),
            Err(Error::ConfigInvalid(_))
        ));
    }

    #[test]
    fn go_durations_round_trip() {
        for (s, d, back) in [
            ("10s", Duration::from_secs(10), "10s"),
            ("1m0s", Duration::from_secs(60), "1m0s"),
            ("5m", Duration::from_secs(300), "5m0s"),
            ("1h2m3.5s", Duration::from_millis(3_723_500), "1h2m3.5s"),
            ("200ms", Duration::from_millis(200), "200ms"),
            ("1.5s", Duration::from_millis(1500), "1.5s"),
            ("0", Duration::ZERO, "0s"),
        ] {
            let g = GoDuration::parse(s).unwrap_or_else(|| panic!("{s} parses"));
            assert_eq!(g.0, d, "{s}");
            assert_eq!(g.to_string(), back, "{s}");
        }
        for bad in ["", "10", "-1s", "s", "1x"] {
            assert!(GoDuration::parse(bad).is_none(), "{bad}");
        }
    }
}
