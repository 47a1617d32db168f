//! The pod's `/etc/hosts`, with upstream's content (pkg/kubelet/kubelet_pods.go,
//! `managedHostsFileContent` and `nodeHostsFileContent`).

use k8s_openapi::api::core::v1::{HostAlias, Pod};

/// The pod's hostname and, when it has a subdomain, its domain
/// (`<subdomain>.<namespace>.svc.<clusterDomain>`), as upstream's GeneratePodHostNameAndDomain.
pub fn pod_hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let hostname = match spec.and_then(|s| s.hostname.as_deref()) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => truncate_hostname(pod.metadata.name.as_deref().unwrap_or_default()),
    };
    let domain = match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) if !sub.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
        }
        _ => None,
    };
    (hostname, domain)
}

/// A hostname is one DNS label: pod names longer than 63 bytes are cut and lose trailing
/// `-`/`.` (upstream's truncatePodHostnameIfNeeded).
fn truncate_hostname(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_string();
    }
    let mut cut = MAX;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_string()
}

/// The managed hosts file of a pod with its own network namespace.
pub fn managed_hosts(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match domain {
            Some(d) => s.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s.push_str(&alias_lines(aliases));
    s
}

/// A hostNetwork pod sees the node's own hosts file plus its hostAliases.
pub fn node_hosts(node_hosts_file: &str, aliases: &[HostAlias]) -> String {
    format!("{node_hosts_file}{}", alias_lines(aliases))
}

fn alias_lines(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_content_matches_upstream() {
        let aliases = [HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }];
        let got = managed_hosts(
            &["10.244.0.5".into(), "fd00::5".into()],
            "web-0",
            Some("web.default.svc.cluster.local"),
            &aliases,
        );
        let want = "# Kubernetes-managed hosts file.\n\
127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n\
10.244.0.5\tweb-0.web.default.svc.cluster.local\tweb-0\n\
fd00::5\tweb-0.web.default.svc.cluster.local\tweb-0\n\
\n\
# Entries added by HostAliases.\n\
10.1.2.3\tfoo.local\tbar.local\n";
        assert_eq!(got, want);
        assert!(managed_hosts(&["10.0.0.1".into()], "p", None, &[]).ends_with("10.0.0.1\tp\n"));
    }

    #[test]
    fn hostname_and_domain() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x".repeat(62) + "-ab", "namespace": "ns"},
            "spec": {"containers": [], "subdomain": "sub"}
        }))
        .expect("pod");
        let (h, d) = pod_hostname_and_domain(&pod, "cluster.local");
        assert_eq!(h, "x".repeat(62));
        assert_eq!(d.as_deref(), Some("sub.ns.svc.cluster.local"));
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "hostname": "h"}
        }))
        .expect("pod");
        assert_eq!(pod_hostname_and_domain(&pod, "c"), ("h".to_string(), None));
    }
}
