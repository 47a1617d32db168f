//! `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`) decoding, defaulting, flag
//! overrides and validation.
//!
//! As upstream (kubernetes/kubernetes cmd/kube-proxy/app/server.go): the file is decoded
//! strictly first; if only unknown fields fail, it is decoded leniently and each unknown field
//! is warned about. Precedence is defaults < file < flags; validation names the field path and
//! runs before any port is bound or rule written.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use oxlet_netrules::Cidr;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The API version this decoder understands.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The kind this decoder understands.
pub const KIND: &str = "KubeProxyConfiguration";

/// Upstream fields we accept but do not act on; each one set gets one warning.
const ACCEPTED_UNIMPLEMENTED: &[&str] = &[
    "bindAddressHardFail",
    "configSyncPeriod",
    "conntrack",
    "detectLocal",
    "detectLocalMode",
    "enableProfiling",
    "featureGates",
    "ipvs",
    "logging",
    "oomScoreAdj",
    "portRange",
    "showHiddenMetricsForVersion",
    "winkernel",
    "windowsRunAsService",
];

/// The upstream configuration file, field for field where oxlet uses the field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeProxyConfiguration {
    /// `apiVersion`.
    pub api_version: Option<String>,
    /// `kind`.
    pub kind: Option<String>,
    /// `mode`: `nftables`, `iptables` (empty is the default, `iptables` as upstream on Linux).
    pub mode: Option<String>,
    /// `clusterCIDR`: comma-separated pod CIDRs.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// `hostnameOverride`: the Node name to use.
    pub hostname_override: Option<String>,
    /// `bindAddress`: the node's primary address family hint.
    pub bind_address: Option<String>,
    /// `healthzBindAddress`: `ip:port` of /healthz; empty disables it.
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`: `ip:port` of /metrics; empty disables it.
    pub metrics_bind_address: Option<String>,
    /// `nodePortAddresses`: CIDRs (or `primary`) selecting node addresses for NodePorts.
    pub node_port_addresses: Option<Vec<String>>,
    /// `iptables:` section.
    pub iptables: ModeSection,
    /// `nftables:` section.
    pub nftables: ModeSection,
    /// `linux:` section.
    pub linux: LinuxSection,
    /// `clientConnection:` section.
    pub client_connection: ClientConnection,
    /// Fields not named above: accepted-but-unimplemented upstream fields and unknown ones.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The `iptables:` / `nftables:` sections.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModeSection {
    /// `syncPeriod` (Go duration, default 30s).
    pub sync_period: Option<String>,
    /// `minSyncPeriod` (Go duration, default 1s).
    pub min_sync_period: Option<String>,
    /// `masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// `localhostNodePorts` (iptables only): NodePorts on 127.0.0.0/8 through route_localnet.
    /// Off unless asked for (upstream defaults it on).
    pub localhost_node_ports: Option<bool>,
    /// Other fields (`masqueradeBit`): accepted.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The `linux:` section (v1.31+ moved `masqueradeAll` and conntrack here).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LinuxSection {
    /// `masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// Other fields (`conntrack`, `oomScoreAdj`): accepted.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The `clientConnection:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConnection {
    /// `kubeconfig`: path of the kubeconfig file.
    pub kubeconfig: Option<String>,
    /// Other fields (`qps`, `burst`, `contentType`, …): accepted.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// Command-line values that override the file (upstream flag names in comments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// `--hostname-override`.
    pub hostname_override: Option<String>,
    /// `--proxy-mode`.
    pub mode: Option<String>,
    /// `--cluster-cidr`.
    pub cluster_cidr: Option<String>,
    /// `--nodeport-addresses` (comma separated).
    pub node_port_addresses: Option<Vec<String>>,
    /// `--healthz-bind-address`.
    pub healthz_bind_address: Option<String>,
    /// `--metrics-bind-address`.
    pub metrics_bind_address: Option<String>,
    /// `--masquerade-all`.
    pub masquerade_all: Option<bool>,
    /// `--iptables-localhost-nodeports`.
    pub localhost_node_ports: Option<bool>,
}

/// How rules are programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// One `oxlet` table per family through `nft -f -`.
    Nftables,
    /// `OXLET-` chains through `iptables-restore --noflush`.
    Iptables,
}

impl ProxyMode {
    /// The upstream name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Iptables => "iptables",
        }
    }
}

/// One `nodePortAddresses` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddress {
    /// `primary`: the Node object's own addresses.
    Primary,
    /// Node addresses inside this network.
    Cidr(Cidr),
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Rule backend.
    pub mode: ProxyMode,
    /// Pod CIDRs.
    pub cluster_cidrs: Vec<Cidr>,
    /// The Node name override, if any.
    pub hostname_override: Option<String>,
    /// `bindAddress`.
    pub bind_address: IpAddr,
    /// Where /healthz listens (`None`: disabled).
    pub healthz_bind_address: Option<SocketAddr>,
    /// Where /metrics listens (`None`: disabled).
    pub metrics_bind_address: Option<SocketAddr>,
    /// NodePort address selection; empty means the Node's addresses.
    pub node_port_addresses: Vec<NodePortAddress>,
    /// At least one sync per this period.
    pub sync_period: Duration,
    /// At most one sync per this period.
    pub min_sync_period: Duration,
    /// Masquerade all ClusterIP traffic.
    pub masquerade_all: bool,
    /// NodePorts on localhost (iptables mode, asked for): route_localnet is set.
    pub localhost_node_ports: bool,
    /// The kubeconfig, if given; otherwise in-cluster/inferred.
    pub kubeconfig: Option<PathBuf>,
    /// oxlet-specific: program rules inside this network namespace (path) via nsenter.
    pub netns: Option<String>,
}

/// Decodes a KubeProxyConfiguration file and returns it with the warnings decoding produced
/// (unknown fields, accepted-but-unimplemented fields). Pure.
pub fn parse(text: &str) -> Result<(KubeProxyConfiguration, Vec<String>)> {
    let cfg: KubeProxyConfiguration =
        serde_yaml::from_str(text).map_err(|e| Error::Decode(e.to_string()))?;
    let mut warnings = Vec::new();
    match cfg.api_version.as_deref() {
        Some(API_VERSION) | None => {}
        Some(other) => {
            return Err(Error::Decode(format!(
                "apiVersion {other:?} is not {API_VERSION:?}"
            )))
        }
    }
    match cfg.kind.as_deref() {
        Some(KIND) | None => {}
        Some(other) => return Err(Error::Decode(format!("kind {other:?} is not {KIND:?}"))),
    }
    let mut unknown = Vec::new();
    for (name, value) in &cfg.other {
        if ACCEPTED_UNIMPLEMENTED.contains(&name.as_str()) {
            if is_set(value) {
                warnings.push(format!("{name}: accepted but not implemented by oxlet"));
            }
        } else {
            unknown.push(name.clone());
        }
    }
    for (section, other, known) in [
        ("iptables", &cfg.iptables.other, &["masqueradeBit"][..]),
        ("nftables", &cfg.nftables.other, &["masqueradeBit"][..]),
        ("linux", &cfg.linux.other, &["conntrack", "oomScoreAdj"][..]),
        (
            "clientConnection",
            &cfg.client_connection.other,
            &["acceptContentTypes", "burst", "contentType", "qps"][..],
        ),
    ] {
        for (name, value) in other {
            if known.contains(&name.as_str()) {
                if is_set(value) {
                    warnings.push(format!(
                        "{section}.{name}: accepted but not implemented by oxlet"
                    ));
                }
            } else {
                unknown.push(format!("{section}.{name}"));
            }
        }
    }
    if !unknown.is_empty() {
        // As upstream's codec: strict decoding failed only on unknown fields, so the
        // lenient result is used, with a warning naming them.
        warnings.push(format!(
            "using lenient decoding as strict decoding failed: unknown field(s) {}",
            unknown.join(", ")
        ));
    }
    Ok((cfg, warnings))
}

/// Whether a YAML value carries information (not null, empty or zero).
fn is_set(v: &serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "0s" && s != "0",
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => m.values().any(is_set),
        Value::Tagged(t) => is_set(&t.value),
    }
}

impl KubeProxyConfiguration {
    /// Fills unset fields with upstream's defaults (pkg/proxy/apis/config/v1alpha1/defaults.go).
    pub fn set_defaults(&mut self) {
        let empty = |o: &Option<String>| o.as_deref().is_none_or(str::is_empty);
        if empty(&self.mode) {
            // Upstream's Linux default is iptables.
            self.mode = Some("iptables".into());
        }
        if empty(&self.bind_address) {
            self.bind_address = Some("0.0.0.0".into());
        }
        if self.healthz_bind_address.is_none() {
            self.healthz_bind_address = Some("0.0.0.0:10256".into());
        }
        if self.metrics_bind_address.is_none() {
            self.metrics_bind_address = Some("127.0.0.1:10249".into());
        }
        for section in [&mut self.iptables, &mut self.nftables] {
            if empty(&section.sync_period) {
                section.sync_period = Some("30s".into());
            }
            if empty(&section.min_sync_period) {
                section.min_sync_period = Some("1s".into());
            }
        }
    }

    /// Applies command-line values over the file.
    pub fn apply(&mut self, flags: &Overrides) {
        let set = |dst: &mut Option<String>, src: &Option<String>| {
            if let Some(v) = src {
                *dst = Some(v.clone());
            }
        };
        set(&mut self.client_connection.kubeconfig, &flags.kubeconfig);
        set(&mut self.hostname_override, &flags.hostname_override);
        set(&mut self.mode, &flags.mode);
        set(&mut self.cluster_cidr, &flags.cluster_cidr);
        set(&mut self.healthz_bind_address, &flags.healthz_bind_address);
        set(&mut self.metrics_bind_address, &flags.metrics_bind_address);
        if let Some(v) = &flags.node_port_addresses {
            self.node_port_addresses = Some(v.clone());
        }
        if let Some(v) = flags.masquerade_all {
            self.linux.masquerade_all = Some(v);
        }
        if let Some(v) = flags.localhost_node_ports {
            self.iptables.localhost_node_ports = Some(v);
        }
    }

    /// Validates the (defaulted, overridden) configuration; every error names its field path.
    pub fn validate(&self) -> Result<Config> {
        let mut errs = Vec::new();
        let mode = match self.mode.as_deref().unwrap_or("iptables") {
            "nftables" => ProxyMode::Nftables,
            "" | "iptables" => ProxyMode::Iptables,
            other => {
                errs.push(format!(
                    "mode: unsupported value {other:?}: supported values: \"iptables\", \"nftables\""
                ));
                ProxyMode::Iptables
            }
        };
        let section = match mode {
            ProxyMode::Nftables => ("nftables", &self.nftables),
            ProxyMode::Iptables => ("iptables", &self.iptables),
        };
        let dur =
            |errs: &mut Vec<String>, field: &str, v: &Option<String>, default: Duration| match v
                .as_deref()
            {
                None | Some("") => default,
                Some(s) => parse_duration(s).unwrap_or_else(|e| {
                    errs.push(format!("{}.{field}: {e}", section.0));
                    default
                }),
            };
        let sync_period = dur(
            &mut errs,
            "syncPeriod",
            &section.1.sync_period,
            Duration::from_secs(30),
        );
        let min_sync_period = dur(
            &mut errs,
            "minSyncPeriod",
            &section.1.min_sync_period,
            Duration::from_secs(1),
        );
        if sync_period.is_zero() {
            errs.push(format!("{}.syncPeriod: must be greater than 0", section.0));
        }
        if min_sync_period > sync_period {
            errs.push(format!(
                "{0}.syncPeriod: must be greater than or equal to {0}.minSyncPeriod",
                section.0
            ));
        }
        let mut cluster_cidrs = Vec::new();
        if let Some(s) = self.cluster_cidr.as_deref().filter(|s| !s.is_empty()) {
            for part in s.split(',').map(str::trim) {
                match part.parse::<Cidr>() {
                    Ok(c) => cluster_cidrs.push(c),
                    Err(e) => errs.push(format!("clusterCIDR: {e}")),
                }
            }
            if cluster_cidrs.len() > 2
                || (cluster_cidrs.len() == 2
                    && cluster_cidrs[0].is_ipv4() == cluster_cidrs[1].is_ipv4())
            {
                errs.push("clusterCIDR: at most one CIDR per IP family".into());
            }
        }
        let bind_address = match self.bind_address.as_deref().unwrap_or("0.0.0.0").parse() {
            Ok(ip) => ip,
            Err(_) => {
                errs.push(format!(
                    "bindAddress: {:?} is not a valid IP address",
                    self.bind_address.as_deref().unwrap_or_default()
                ));
                IpAddr::from([0, 0, 0, 0])
            }
        };
        let healthz_bind_address = bind_addr(
            &mut errs,
            "healthzBindAddress",
            self.healthz_bind_address.as_deref(),
            10256,
        );
        let metrics_bind_address = bind_addr(
            &mut errs,
            "metricsBindAddress",
            self.metrics_bind_address.as_deref(),
            10249,
        );
        let mut node_port_addresses = Vec::new();
        for (i, a) in self.node_port_addresses.iter().flatten().enumerate() {
            let a = a.trim();
            if a == "primary" {
                node_port_addresses.push(NodePortAddress::Primary);
                continue;
            }
            match a.parse::<Cidr>() {
                Ok(c) => node_port_addresses.push(NodePortAddress::Cidr(c)),
                Err(e) => errs.push(format!("nodePortAddresses[{i}]: {e}")),
            }
        }
        let masquerade_all = self
            .linux
            .masquerade_all
            .or(section.1.masquerade_all)
            .unwrap_or(false);
        // nftables mode has no localhost NodePorts (as upstream): the setting is iptables'.
        let localhost_node_ports =
            mode == ProxyMode::Iptables && self.iptables.localhost_node_ports == Some(true);
        if let Some(h) = self.hostname_override.as_deref().filter(|h| !h.is_empty()) {
            if h.trim() != h || h.contains('/') {
                errs.push(format!("hostnameOverride: {h:?} is not a valid node name"));
            }
        }
        if !errs.is_empty() {
            return Err(Error::Invalid(errs));
        }
        Ok(Config {
            mode,
            cluster_cidrs,
            hostname_override: self
                .hostname_override
                .clone()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_lowercase()),
            bind_address,
            healthz_bind_address,
            metrics_bind_address,
            node_port_addresses,
            sync_period,
            min_sync_period,
            masquerade_all,
            localhost_node_ports,
            kubeconfig: self
                .client_connection
                .kubeconfig
                .clone()
                .filter(|k| !k.is_empty())
                .map(PathBuf::from),
            netns: None,
        })
    }
}

/// `ip:port`, a bare IP (default port), or empty (disabled).
fn bind_addr(
    errs: &mut Vec<String>,
    field: &str,
    v: Option<&str>,
    default_port: u16,
) -> Option<SocketAddr> {
    let v = v?.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    errs.push(format!("{field}: {v:?} must be IP:port"));
    None
}

/// Parses a Go duration (`1m0s`, `30s`, `500ms`, `1.5h`, `0`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kube-proxy --write-config-to` prints on v1.33 (trimmed of Windows fields).
    const UPSTREAM_SAMPLE: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: "nftables"
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 2s
  syncPeriod: 1m0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

    #[test]
    fn upstream_sample_decodes_with_one_warning_per_unimplemented_field() {
        let (mut cfg, warnings) = parse(UPSTREAM_SAMPLE).expect("sample decodes");
        // Zero, null and empty values are not "set"; these four are, and oxlet ignores them.
        assert_eq!(
            warnings,
            vec![
                "configSyncPeriod: accepted but not implemented by oxlet",
                "clientConnection.burst: accepted but not implemented by oxlet",
                "clientConnection.contentType: accepted but not implemented by oxlet",
                "clientConnection.qps: accepted but not implemented by oxlet",
            ]
        );
        cfg.set_defaults();
        let c = cfg.validate().expect("valid");
        assert_eq!(c.mode, ProxyMode::Nftables);
        assert_eq!(c.sync_period, Duration::from_secs(60));
        assert_eq!(c.min_sync_period, Duration::from_secs(2));
        assert_eq!(
            c.cluster_cidrs,
            vec!["10.244.0.0/16".parse().expect("cidr")]
        );
        assert_eq!(
            c.kubeconfig,
            Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        // Empty addresses disable the servers, as upstream.
        assert_eq!(c.healthz_bind_address, None);
        assert_eq!(c.metrics_bind_address, None);
        assert!(!c.masquerade_all);
    }

    #[test]
    fn defaults_are_upstreams() {
        let (mut cfg, _) = parse("kind: KubeProxyConfiguration\n").expect("decodes");
        cfg.set_defaults();
        let c = cfg.validate().expect("valid");
        assert_eq!(c.mode, ProxyMode::Iptables);
        assert_eq!(c.sync_period, Duration::from_secs(30));
        assert_eq!(c.min_sync_period, Duration::from_secs(1));
        assert_eq!(
            c.healthz_bind_address,
            Some("0.0.0.0:10256".parse().expect("addr"))
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:10249".parse().expect("addr"))
        );
        assert!(c.node_port_addresses.is_empty());
    }

    #[test]
    fn unknown_and_unimplemented_fields_warn_once_each() {
        let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                    mode: nftables\nfrobnicate: 3\nipvs:\n  scheduler: rr\nnftables:\n  bogus: 1\n";
        let (_, warnings) = parse(text).expect("lenient decoding");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("ipvs"));
        assert!(warnings[1].contains("lenient decoding"));
        assert!(warnings[1].contains("frobnicate") && warnings[1].contains("nftables.bogus"));
    }

    #[test]
    fn flags_override_the_file() {
        let (mut cfg, _) =
            parse("mode: iptables\nclusterCIDR: 10.0.0.0/8\nhostnameOverride: file\n")
                .expect("decodes");
        cfg.set_defaults();
        cfg.apply(&Overrides {
            mode: Some("nftables".into()),
            hostname_override: Some("Node-A".into()),
            node_port_addresses: Some(vec!["192.168.0.0/16".into(), "primary".into()]),
            healthz_bind_address: Some("127.0.0.1:9999".into()),
            ..Default::default()
        });
        let c = cfg.validate().expect("valid");
        assert_eq!(c.mode, ProxyMode::Nftables);
        assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(c.cluster_cidrs.len(), 1);
        assert_eq!(
            c.node_port_addresses,
            vec![
                NodePortAddress::Cidr("192.168.0.0/16".parse().expect("cidr")),
                NodePortAddress::Primary
            ]
        );
        assert_eq!(
            c.healthz_bind_address,
            Some("127.0.0.1:9999".parse().expect("addr"))
        );
    }

    #[test]
    fn localhost_node_ports_only_when_asked_and_only_in_iptables_mode() {
        let validated = |text: &str, flag: Option<bool>| {
            let (mut cfg, warnings) = parse(text).expect("decodes");
            assert!(warnings.is_empty(), "{warnings:?}");
            cfg.set_defaults();
            cfg.apply(&Overrides {
                localhost_node_ports: flag,
                ..Default::default()
            });
            cfg.validate().expect("valid").localhost_node_ports
        };
        assert!(!validated("mode: iptables\n", None), "off by default");
        assert!(validated(
            "mode: iptables\niptables:\n  localhostNodePorts: true\n",
            None
        ));
        assert!(validated("mode: iptables\n", Some(true)), "the flag asks");
        // nftables has no localhost NodePorts, as upstream.
        assert!(!validated(
            "mode: nftables\niptables:\n  localhostNodePorts: true\n",
            Some(true)
        ));
    }

    #[test]
    fn validation_names_fields() {
        let (mut cfg, _) = parse(
            "mode: ipvs\nclusterCIDR: nope\nnftables:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n\
             metricsBindAddress: what\nnodePortAddresses: [\"1.2.3.4\"]\n",
        )
        .expect("decodes");
        cfg.set_defaults();
        cfg.apply(&Overrides {
            mode: Some("nftables".into()),
            ..Default::default()
        });
        let Err(Error::Invalid(errs)) = cfg.validate() else {
            panic!("validation must fail");
        };
        let all = errs.join("\n");
        assert!(all.contains("clusterCIDR"), "{all}");
        assert!(
            all.contains(
                "nftables.syncPeriod: must be greater than or equal to nftables.minSyncPeriod"
            ),
            "{all}"
        );
        assert!(all.contains("metricsBindAddress"), "{all}");
        assert!(all.contains("nodePortAddresses[0]"), "{all}");
        cfg.mode = Some("ipvs".into());
        let Err(Error::Invalid(errs)) = cfg.validate() else {
            panic!("ipvs must be rejected");
        };
        assert!(errs[0].starts_with("mode:"), "{errs:?}");
    }

    #[test]
    fn wrong_kind_is_a_decode_error() {
        assert!(matches!(
            parse("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"),
            Err(Error::Decode(_))
        ));
        assert!(matches!(parse("mode: [1, 2"), Err(Error::Decode(_))));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
