//! Pod spec → CRI PodSandboxConfig: metadata, hostname, DNS, port mappings, labels and
//! annotations, cgroup parent, sysctls and the sandbox security context, as upstream's
//! kuberuntime_sandbox.go / kuberuntime_sandbox_linux.go (generatePodSandboxConfig),
//! network/dns/dns.go (GetPodDNS) and kubelet_pods.go (GeneratePodHostNameAndDomain).

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use oxlet_cri::api;

use crate::container::error::ConfigError;
use crate::container::{resources, security};
use crate::labels;

/// Node-level inputs of a sandbox config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// Cluster DNS server IPs (KubeletConfiguration `clusterDNS`).
    pub cluster_dns: Vec<String>,
    /// Cluster domain (`clusterDomain`, usually `cluster.local`).
    pub cluster_domain: String,
    /// The host's resolver config (`resolvConf`, `/etc/resolv.conf`); empty disables host DNS
    /// (pods then get `127.0.0.1` and search `.`, as upstream with `--resolv-conf=""`).
    pub host_resolv_conf: PathBuf,
    /// Where pod log directories live (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The pod's cgroup parent ([`crate::cgroups::pod_cgroup_parent`]).
    pub cgroup_parent: String,
    /// How many sandboxes this pod had before; the CRI attempt number.
    pub attempt: u32,
    /// This node's name.
    pub node_name: String,
}

/// Most nameservers glibc reads from resolv.conf.
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// Most search domains the kubelet writes.
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// Most characters of the search line.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// Longest search domain kept (longer ones make some glibc versions abort).
const MAX_DNS_SEARCH_DOMAIN_LEN: usize = 253;
/// Options a ClusterFirst pod gets.
const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];

/// The CRI sandbox config of `pod`.
///
/// Fails (reason `CreatePodSandboxError`) on an invalid hostname or subdomain, an FQDN too long
/// for the kernel, an unreadable host resolv.conf, or security settings this node cannot apply.
pub fn sandbox_config(
    pod: &Pod,
    opts: &SandboxOptions,
) -> Result<api::PodSandboxConfig, ConfigError> {
    security::validate_pod_security(pod)?;
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();

    let host = if opts.host_resolv_conf.as_os_str().is_empty() {
        None
    } else {
        let path = opts.host_resolv_conf.display().to_string();
        let text = std::fs::read_to_string(&opts.host_resolv_conf)
            .map_err(|source| ConfigError::ResolvConf { path, source })?;
        Some(parse_resolv_conf(&text).map_err(|e| {
            ConfigError::Invalid(format!(
                "Encountered error while parsing resolv conf file. Error: {e}"
            ))
        })?)
    };
    let (dns, warnings) =
        pod_dns_config(pod, &opts.cluster_dns, &opts.cluster_domain, host.as_ref());
    for w in warnings {
        tracing::debug!(pod = %format!("{namespace}/{name}"), reason = "DNSConfigForming", "{w}");
    }

    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let hostname = if host_network {
        // The runtime keeps the node's own hostname in the node's UTS namespace.
        String::new()
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, &opts.cluster_domain)?;
        kernel_hostname(
            &hostname,
            &domain,
            spec.and_then(|s| s.set_hostname_as_fqdn),
        )?
    };

    let mut sandbox_labels: HashMap<String, String> = meta
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sandbox_labels.insert(labels::POD_NAME.into(), name.clone());
    sandbox_labels.insert(labels::POD_NAMESPACE.into(), namespace.clone());
    sandbox_labels.insert(labels::POD_UID.into(), uid.clone());
    sandbox_labels.insert(
        labels::KUBELET_MANAGED.into(),
        labels::KUBELET_MANAGED_VALUE.into(),
    );

    let mut annotations: HashMap<String, String> = meta
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations
        .entry(labels::CONFIG_SOURCE.into())
        .or_insert_with(|| "api".into());

    let sysctls = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (sysctl_dots(&s.name), s.value.clone()))
        .collect();
    let (res, overhead) = resources::sandbox_resources(pod);

    Ok(api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt: opts.attempt,
        }),
        hostname,
        log_directory: opts
            .pod_logs_dir
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        dns_config: Some(dns),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels,
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: opts.cgroup_parent.clone(),
            security_context: Some(security::sandbox_security_context(pod)),
            sysctls,
            overhead: Some(overhead),
            resources: Some(res),
        }),
        windows: None,
    })
}

/// Port mappings of every container port, as upstream's MakePortMappings: the runtime's
/// portmap plugin acts on those with a hostPort. A port repeated in one container (same name,
/// or same family/protocol/hostIP/ports when unnamed) is listed once.
pub fn port_mappings(pod: &Pod) -> Vec<api::PortMapping> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let mut seen = std::collections::HashSet::new();
        for p in c.ports.iter().flatten() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let host_ip = p.host_ip.as_deref().unwrap_or("");
            let key = match p.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => n.to_string(),
                None => {
                    let family = match host_ip {
                        "" => "any",
                        ip if ip.contains(':') => "v6",
                        _ => "v4",
                    };
                    format!(
                        "{family}-{proto}-{host_ip}:{}:{}",
                        p.container_port,
                        p.host_port.unwrap_or(0)
                    )
                }
            };
            if !seen.insert(key) {
                tracing::info!(container = %c.name, port = p.container_port, "port name conflicted, it is defined more than once");
                continue;
            }
            let protocol = match proto {
                "UDP" => api::Protocol::Udp,
                "SCTP" => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            out.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: host_ip.to_string(),
            });
        }
    }
    out
}

/// `kernel/sched_child_runs_first`-style names to dotted form (`kernel.sched_child_runs_first`);
/// in slash form dots inside a segment become slashes (upstream's
/// ConvertSysctlVariableToDotsSeparator).
pub fn sysctl_dots(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The pod's hostname (`spec.hostname`, else its name, cut to 63 characters without a trailing
/// `-` or `.`) and domain (`<subdomain>.<ns>.svc.<cluster domain>` when `spec.subdomain` is
/// set), as upstream's GeneratePodHostNameAndDomain.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), ConfigError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut hostname = name.clone();
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if !is_dns1123_label(h) {
            return Err(ConfigError::Invalid(format!(
                "pod Hostname {h:?} is not a valid DNS label"
            )));
        }
        hostname = h.to_string();
    }
    if hostname.len() > 63 {
        // Pod names are ASCII (DNS subdomains), so byte slicing is safe; be careful anyway.
        let mut cut = 63;
        while !hostname.is_char_boundary(cut) {
            cut -= 1;
        }
        let truncated = hostname[..cut].trim_end_matches(['-', '.']).to_string();
        if truncated.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "hostname for pod {name:?} was invalid: {hostname:?}"
            )));
        }
        tracing::warn!(pod = %name, truncated = %truncated, "hostname for pod was too long, truncated it");
        hostname = truncated;
    }
    let mut domain = String::new();
    if let Some(sub) = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if !is_dns1123_label(sub) {
            return Err(ConfigError::Invalid(format!(
                "pod Subdomain {sub:?} is not a valid DNS label"
            )));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        domain = format!("{sub}.{ns}.svc.{cluster_domain}");
    }
    Ok((hostname, domain))
}

/// What goes into the kernel's nodename: the FQDN with `setHostnameAsFQDN` and a domain (at most
/// 64 characters), else the hostname.
pub fn kernel_hostname(
    hostname: &str,
    domain: &str,
    set_fqdn: Option<bool>,
) -> Result<String, ConfigError> {
    const FQDN_MAX_LEN: usize = 64;
    if domain.is_empty() || set_fqdn != Some(true) {
        return Ok(hostname.to_string());
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX_LEN {
        return Err(ConfigError::Invalid(format!(
            "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
            fqdn.len()
        )));
    }
    Ok(fqdn)
}

/// The parts of a resolv.conf the kubelet uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The last `search` line's domains, trailing dots removed.
    pub searches: Vec<String>,
    /// `options` values; a later option of the same name replaces an earlier one.
    pub options: Vec<String>,
}

/// Parses resolv.conf text as upstream's parseResolvConf: nameservers accumulate, the last
/// `search` line wins, options merge by name; a `nameserver` line without an address is an
/// error.
pub fn parse_resolv_conf(text: &str) -> Result<ResolvConf, String> {
    let mut rc = ResolvConf::default();
    let mut errors = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first().copied() {
            Some("nameserver") => match fields.get(1) {
                Some(ns) => rc.nameservers.push(ns.to_string()),
                None => errors.push("nameserver list is empty "),
            },
            Some("search") => {
                rc.searches = fields[1..]
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for o in &fields[1..] {
                    merge_option(&mut rc.options, o);
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(rc)
    } else {
        Err(errors.join(", "))
    }
}

fn option_name(o: &str) -> &str {
    o.split(':').next().unwrap_or(o)
}

/// Adds option `o`, replacing an earlier one of the same name in place.
fn merge_option(options: &mut Vec<String>, o: &str) {
    match options
        .iter_mut()
        .find(|e| option_name(e) == option_name(o))
    {
        Some(e) => *e = o.to_string(),
        None => options.push(o.to_string()),
    }
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The pod's DNS config and any warnings (upstream's `DNSConfigForming` /
/// `MissingClusterDNS` events), as upstream's GetPodDNS.
///
/// `host` is the parsed host resolv.conf, None when the kubelet has none configured.
/// - `None`: only `spec.dnsConfig`.
/// - `ClusterFirst` (not hostNetwork) and `ClusterFirstWithHostNet`: the cluster DNS servers,
///   searches `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, `ndots:5`; without
///   cluster DNS servers, a warning and the `Default` behaviour.
/// - `Default` (and `ClusterFirst` with hostNetwork): the host's resolv.conf.
///
/// `spec.dnsConfig` is merged in last (servers and searches appended without duplicates,
/// options replaced by name), then servers are cut to 3 and searches to 32 entries / 2048
/// characters.
pub fn pod_dns_config(
    pod: &Pod,
    cluster_dns: &[String],
    cluster_domain: &str,
    host: Option<&ResolvConf>,
) -> (api::DnsConfig, Vec<String>) {
    let spec = pod.spec.as_ref();
    let mut warnings = Vec::new();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let base = host.cloned().unwrap_or_default();
    let mut cfg = api::DnsConfig {
        servers: base.nameservers,
        searches: base.searches,
        options: base.options,
    };
    let mut use_host = false;
    match policy {
        "None" => cfg = api::DnsConfig::default(),
        "Default" => use_host = true,
        "ClusterFirst" if host_network => use_host = true,
        // ClusterFirst, ClusterFirstWithHostNet, and unknown values (the API rejects those;
        // upstream treats them as ClusterFirst).
        _ => {
            if cluster_dns.is_empty() {
                warnings.push(
                    "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy."
                        .to_string(),
                );
                use_host = true;
            } else {
                cfg.servers = cluster_dns.to_vec();
                if !cluster_domain.is_empty() {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                    let mut s = vec![
                        format!("{ns}.svc.{cluster_domain}"),
                        format!("svc.{cluster_domain}"),
                        cluster_domain.to_string(),
                    ];
                    s.append(&mut cfg.searches);
                    cfg.searches = omit_duplicates(s);
                }
                cfg.options = DEFAULT_DNS_OPTIONS.iter().map(|s| s.to_string()).collect();
            }
        }
    }
    if use_host && host.is_none() {
        // No resolver config: point at the local machine, as the resolver does with no
        // nameserver line, and search nothing.
        cfg.servers = vec!["127.0.0.1".to_string()];
        cfg.searches = vec![".".to_string()];
    }
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        append_dns_config(&mut cfg, extra);
    }
    if cfg.servers.len() > MAX_DNS_NAMESERVERS {
        cfg.servers.truncate(MAX_DNS_NAMESERVERS);
        warnings.push(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
            cfg.servers.join(" ")
        ));
    }
    let (searches, exceeded) = fit_searches(std::mem::take(&mut cfg.searches));
    cfg.searches = searches;
    if exceeded {
        warnings.push(format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            cfg.searches.join(" ")
        ));
    }
    (cfg, warnings)
}

fn append_dns_config(cfg: &mut api::DnsConfig, extra: &PodDNSConfig) {
    let mut servers = std::mem::take(&mut cfg.servers);
    servers.extend(extra.nameservers.iter().flatten().cloned());
    cfg.servers = omit_duplicates(servers);
    let mut searches = std::mem::take(&mut cfg.searches);
    searches.extend(extra.searches.iter().flatten().cloned());
    cfg.searches = omit_duplicates(searches);
    for o in extra.options.iter().flatten() {
        let name = o.name.as_deref().unwrap_or("");
        match o.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => merge_option(&mut cfg.options, &format!("{name}:{v}")),
            None => merge_option(&mut cfg.options, name),
        }
    }
}

/// Applies the search-line limits: at most 32 domains, none longer than 253 characters, and
/// domains dropped from the end until the line fits 2048 characters.
fn fit_searches(mut s: Vec<String>) -> (Vec<String>, bool) {
    let mut exceeded = false;
    if s.len() > MAX_DNS_SEARCH_PATHS {
        s.truncate(MAX_DNS_SEARCH_PATHS);
        exceeded = true;
    }
    let before = s.len();
    s.retain(|d| d.len() <= MAX_DNS_SEARCH_DOMAIN_LEN);
    exceeded |= s.len() != before;
    while !s.is_empty() && s.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        s.pop();
        exceeded = true;
    }
    (s, exceeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(meta: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut m = json!({"name": "web-0", "namespace": "shop", "uid": "u-1"});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        let mut s = json!({"containers": [{"name": "c"}]});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": m, "spec": s})).expect("test pod")
    }

    fn host() -> ResolvConf {
        parse_resolv_conf(
            "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example. lab.example\noptions timeout:2 attempts:3\noptions timeout:1\n",
        )
        .expect("parse")
    }

    fn dns(p: &Pod, cluster_dns: &[&str], h: Option<&ResolvConf>) -> (api::DnsConfig, Vec<String>) {
        let cd: Vec<String> = cluster_dns.iter().map(|s| s.to_string()).collect();
        pod_dns_config(p, &cd, "cluster.local", h)
    }

    #[test]
    fn resolv_conf_parsing() {
        let h = host();
        assert_eq!(h.nameservers, vec!["192.0.2.53", "192.0.2.54"]);
        assert_eq!(h.searches, vec!["corp.example", "lab.example"]);
        assert_eq!(h.options, vec!["timeout:1", "attempts:3"]);
        let h = parse_resolv_conf("search a.example\nsearch b.example .\n").expect("parse");
        assert_eq!(h.searches, vec!["b.example"]);
        assert!(parse_resolv_conf("nameserver\n").is_err());
    }

    #[test]
    fn dns_per_policy() {
        let h = host();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // ClusterFirst (the default policy).
        let (c, w) = dns(&pod(json!({}), json!({})), &["10.96.0.10"], Some(&h));
        assert!(w.is_empty());
        assert_eq!(c.servers, s(&["10.96.0.10"]));
        assert_eq!(
            c.searches,
            s(&[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example"
            ])
        );
        assert_eq!(c.options, s(&["ndots:5"]));

        // ClusterFirst without cluster DNS falls back to Default, with a warning.
        let (c, w) = dns(
            &pod(json!({}), json!({"dnsPolicy": "ClusterFirst"})),
            &[],
            Some(&h),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(
            (c.servers, c.searches, c.options),
            (h.nameservers.clone(), h.searches.clone(), h.options.clone())
        );

        // ClusterFirst on hostNetwork is Default; ClusterFirstWithHostNet is cluster DNS.
        let (c, _) = dns(
            &pod(json!({}), json!({"hostNetwork": true})),
            &["10.96.0.10"],
            Some(&h),
        );
        assert_eq!(c.servers, h.nameservers);
        let (c, _) = dns(
            &pod(
                json!({}),
                json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            ),
            &["10.96.0.10"],
            Some(&h),
        );
        assert_eq!(c.servers, s(&["10.96.0.10"]));

        // Default.
        let (c, _) = dns(
            &pod(json!({}), json!({"dnsPolicy": "Default"})),
            &["10.96.0.10"],
            Some(&h),
        );
        assert_eq!(
            (c.servers, c.searches, c.options),
            (h.nameservers.clone(), h.searches.clone(), h.options.clone())
        );
        // Default with no resolver config.
        let (c, _) = dns(&pod(json!({}), json!({"dnsPolicy": "Default"})), &[], None);
        assert_eq!((c.servers, c.searches), (s(&["127.0.0.1"]), s(&["."])));

        // None: dnsConfig only.
        let (c, _) = dns(
            &pod(
                json!({}),
                json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.1.1.1"], "searches": ["x.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            ),
            &["10.96.0.10"],
            Some(&h),
        );
        assert_eq!(c.servers, s(&["1.1.1.1"]));
        assert_eq!(c.searches, s(&["x.example"]));
        assert_eq!(c.options, s(&["ndots:2", "edns0"]));

        // ClusterFirst with dnsConfig merged: duplicates dropped, options replaced by name.
        let (c, _) = dns(
            &pod(
                json!({}),
                json!({"dnsConfig": {
                "nameservers": ["10.96.0.10", "9.9.9.9"], "searches": ["cluster.local", "extra.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}}),
            ),
            &["10.96.0.10"],
            Some(&h),
        );
        assert_eq!(c.servers, s(&["10.96.0.10", "9.9.9.9"]));
        assert_eq!(c.searches.last().map(String::as_str), Some("extra.example"));
        assert_eq!(
            c.searches.iter().filter(|d| *d == "cluster.local").count(),
            1
        );
        assert_eq!(c.options, s(&["ndots:1", "single-request-reopen"]));
    }

    #[test]
    fn dns_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let p = pod(
            json!({}),
            json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"], "searches": many}}),
        );
        let (c, w) = dns(&p, &[], None);
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.searches.len(), 32);
        assert_eq!(w.len(), 2);
        assert!(w[1].starts_with("Search Line limits were exceeded"));

        let long = "a".repeat(254);
        let mid = "b".repeat(200);
        let mut v = vec![long.clone()];
        v.extend((0..15).map(|i| format!("{mid}{i}")));
        let (s, exceeded) = fit_searches(v);
        assert!(exceeded);
        assert!(!s.contains(&long));
        assert!(s.join(" ").len() <= MAX_DNS_SEARCH_LIST_CHARS);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn hostnames() {
        let a61 = "a".repeat(61);
        let cases: Vec<(serde_json::Value, serde_json::Value, Result<&str, &str>)> = vec![
            (json!({}), json!({}), Ok("web-0")),
            (json!({}), json!({"hostname": "db"}), Ok("db")),
            (
                json!({}),
                json!({"hostname": "db", "subdomain": "backend", "setHostnameAsFQDN": true}),
                Ok("db.backend.shop.svc.cluster.local"),
            ),
            (
                json!({}),
                json!({"hostname": "db", "subdomain": "backend"}),
                Ok("db"),
            ),
            (
                json!({}),
                json!({"hostname": "Not_Valid"}),
                Err("pod Hostname \"Not_Valid\" is not a valid DNS label"),
            ),
            // Cut to 63 characters, then trailing '-' and '.' removed.
            (
                json!({"name": format!("{a61}-.x")}),
                json!({}),
                Ok(a61.as_str()),
            ),
        ];
        for (meta, spec, want) in cases {
            let p = pod(meta, spec);
            let got = pod_hostname_and_domain(&p, "cluster.local").and_then(|(h, d)| {
                kernel_hostname(&h, &d, p.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn))
            });
            assert_eq!(
                got.map_err(|e| e.to_string()),
                want.map(str::to_string).map_err(str::to_string)
            );
        }
        let p = pod(
            json!({}),
            json!({"hostname": "x".repeat(40), "subdomain": "y".repeat(20), "setHostnameAsFQDN": true}),
        );
        let (h, d) = pod_hostname_and_domain(&p, "cluster.local").expect("names");
        assert!(kernel_hostname(&h, &d, Some(true))
            .is_err_and(|e| e.to_string().contains("is too long")));
    }

    #[test]
    fn ports() {
        let p = pod(
            json!({}),
            json!({"containers": [
                {"name": "a", "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
                    {"containerPort": 9000},
                    {"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "ports": [{"name": "sctp", "containerPort": 7, "hostPort": 7007, "protocol": "SCTP", "hostIP": "::1"}]}
            ]}),
        );
        let pm = port_mappings(&p);
        let got: Vec<(i32, i32, i32, &str)> = pm
            .iter()
            .map(|m| {
                (
                    m.protocol,
                    m.container_port,
                    m.host_port,
                    m.host_ip.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (api::Protocol::Tcp as i32, 80, 8080, ""),
                (api::Protocol::Udp as i32, 53, 53, "127.0.0.1"),
                (api::Protocol::Tcp as i32, 9000, 0, ""),
                (api::Protocol::Sctp as i32, 7, 7007, "::1"),
            ]
        );
    }

    #[test]
    fn sysctl_names() {
        assert_eq!(
            sysctl_dots("kernel.shm_rmid_forced"),
            "kernel.shm_rmid_forced"
        );
        assert_eq!(
            sysctl_dots("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            sysctl_dots("net.ipv4.conf.eno2/100.rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
    }

    #[test]
    fn whole_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rc = dir.path().join("resolv.conf");
        std::fs::write(&rc, "nameserver 192.0.2.53\nsearch corp.example\n").expect("write");
        let opts = SandboxOptions {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: rc,
            pod_logs_dir: "/var/log/pods".into(),
            cgroup_parent: "/kubepods/burstable/podu-1".into(),
            attempt: 2,
            node_name: "node-1".into(),
        };
        let p = pod(
            json!({"labels": {"app": "web"}, "annotations": {"team": "a"}}),
            json!({
                "securityContext": {"runAsUser": 1000, "fsGroup": 2000,
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "securityContext": {"privileged": true},
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}}]
            }),
        );
        let cfg = sandbox_config(&p, &opts).expect("config");
        let md = cfg.metadata.as_ref().expect("metadata");
        assert_eq!(
            (
                md.name.as_str(),
                md.namespace.as_str(),
                md.uid.as_str(),
                md.attempt
            ),
            ("web-0", "shop", "u-1", 2)
        );
        assert_eq!(cfg.hostname, "web-0");
        assert_eq!(cfg.log_directory, "/var/log/pods/shop_web-0_u-1");
        let d = cfg.dns_config.as_ref().expect("dns");
        assert_eq!(d.servers, vec!["10.96.0.10"]);
        assert_eq!(d.searches.last().map(String::as_str), Some("corp.example"));
        assert_eq!(cfg.port_mappings.len(), 1);
        let l = |k: &str| cfg.labels.get(k).map(String::as_str);
        assert_eq!(l("app"), Some("web"));
        assert_eq!(l(labels::POD_NAME), Some("web-0"));
        assert_eq!(l(labels::POD_NAMESPACE), Some("shop"));
        assert_eq!(l(labels::POD_UID), Some("u-1"));
        assert_eq!(l(labels::KUBELET_MANAGED), Some("kubelet"));
        assert_eq!(cfg.annotations.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            cfg.annotations
                .get(labels::CONFIG_SOURCE)
                .map(String::as_str),
            Some("api")
        );
        let linux = cfg.linux.as_ref().expect("linux");
        assert_eq!(linux.cgroup_parent, "/kubepods/burstable/podu-1");
        assert_eq!(
            linux
                .sysctls
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0")
        );
        let sc = linux.security_context.as_ref().expect("sc");
        assert!(sc.privileged && !sc.readonly_rootfs);
        assert_eq!(sc.run_as_user, Some(api::Int64Value { value: 1000 }));
        assert_eq!(sc.supplemental_groups, vec![2000]);
        let ns = sc.namespace_options.as_ref().expect("ns");
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        let r = linux.resources.as_ref().expect("resources");
        assert_eq!((r.cpu_shares, r.memory_limit_in_bytes), (102, 64 << 20));

        // hostNetwork: no hostname (the node's stays), node network namespace.
        let p = pod(json!({}), json!({"hostNetwork": true}));
        let cfg = sandbox_config(&p, &opts).expect("config");
        assert_eq!(cfg.hostname, "");
        let ns = cfg
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("ns");
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);

        // An unreadable resolv.conf fails the sandbox.
        let missing = SandboxOptions {
            host_resolv_conf: dir.path().join("nope"),
            ..opts.clone()
        };
        assert!(sandbox_config(&p, &missing)
            .is_err_and(|e| e.to_string().starts_with("open resolv.conf")));
    }
}
