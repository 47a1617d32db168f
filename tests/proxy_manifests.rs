//! `manifests/proxy/` against `oxlet server` with the real kubectl: everything applies (and
//! re-applies unchanged), the DaemonSet controller makes a pod for a tainted Linux node, the
//! ConfigMap's KubeProxyConfiguration and kubeconfig are ones
//! `oxlet proxy` accepts, and the ClusterRole grants what the proxy calls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use oxlet_e2e::server::{Backend, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oxlet");

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/proxy")
}

fn get_json(server: &TestServer, args: &[&str]) -> Result<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&server.kubectl_ok(&full)?)?)
}

/// Whether `rules` grant `verb` on `group`/`resource`.
fn allows(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    let has = |v: &Value, key: &str, want: &str| {
        v[key]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == want || x == "*"))
    };
    rules.iter().any(|r| {
        has(r, "apiGroups", group) && has(r, "resources", resource) && has(r, "verbs", verb)
    })
}

#[test]
fn proxy_manifests_apply_and_the_daemonset_makes_a_pod_for_a_tainted_node() -> Result<()> {
    let server = TestServer::start(Path::new(BIN), Backend::Sqlite, &[])?;
    // A tainted Linux node: kube-proxy must run there too.
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/os": "linux",
                                                  "kubernetes.io/hostname": "node-1"}},
        "spec": {"taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
            {"key": "example.com/dedicated", "value": "db", "effect": "NoExecute"}
        ]},
    });
    let out = server.kubectl_stdin(&["create", "-f", "-"], &node.to_string())?;
    ensure!(
        out.status.success(),
        "create node: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = manifests();
    let dir = dir.to_str().context("manifest path")?;
    let applied = server.kubectl_ok(&["apply", "-f", dir])?;
    for object in [
        "serviceaccount/oxlet-proxy created",
        "clusterrole.rbac.authorization.k8s.io/oxlet:node-proxier created",
        "clusterrolebinding.rbac.authorization.k8s.io/oxlet:node-proxier created",
        "configmap/oxlet-proxy created",
        "daemonset.apps/oxlet-proxy created",
    ] {
        ensure!(
            applied.contains(object),
            "{object} missing from:\n{applied}"
        );
    }
    // Applying again changes nothing.
    let again = server.kubectl_ok(&["apply", "-f", dir])?;
    ensure!(
        again.lines().all(|l| l.ends_with(" unchanged")) && again.lines().count() == 5,
        "{again}"
    );

    let ds = get_json(&server, &["-n", "kube-system", "daemonset", "oxlet-proxy"])?;
    let spec = &ds["spec"]["template"]["spec"];
    ensure!(spec["hostNetwork"] == true, "{spec}");
    ensure!(spec["serviceAccountName"] == "oxlet-proxy", "{spec}");
    let container = &spec["containers"][0];
    ensure!(
        container["securityContext"]["privileged"] == true,
        "{container}"
    );
    let command: Vec<&str> = container["command"]
        .as_array()
        .context("command")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        command.starts_with(&["/usr/local/bin/oxlet", "proxy"])
            && command.contains(&"--config=/var/lib/oxlet-proxy/config.conf"),
        "{command:?}"
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for path in ["/run/xtables.lock", "/lib/modules", "/var/lib/oxlet-proxy"] {
        ensure!(mounts.contains(&path), "{path} not mounted: {mounts:?}");
    }

    // The DaemonSet controller creates a pod for node-1 (placed by required node affinity on
    // its name, as upstream; binding is the scheduler's business), taints notwithstanding.
    let targets_node = |p: &Value| {
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
            == "node-1"
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let pods = get_json(
            &server,
            &[
                "-n",
                "kube-system",
                "pods",
                "-l",
                "app.kubernetes.io/name=oxlet-proxy",
            ],
        )?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        if let Some(p) = items.iter().find(|p| targets_node(p)) {
            break p.clone();
        }
        if Instant::now() > deadline {
            bail!(
                "no oxlet-proxy pod for node-1 within 60s; pods: {}\nserver log:\n{}",
                serde_json::to_string_pretty(&items)?,
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .context("tolerations")?;
    ensure!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none_or(Value::is_null)),
        "{tolerations:?}"
    );
    ensure!(
        pod["spec"]["serviceAccountName"] == "oxlet-proxy" && pod["spec"]["hostNetwork"] == true,
        "{pod}"
    );
    ensure!(
        pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
            && pod["metadata"]["ownerReferences"][0]["name"] == "oxlet-proxy",
        "{pod}"
    );
    let desired = get_json(&server, &["-n", "kube-system", "daemonset", "oxlet-proxy"])?;
    ensure!(
        desired["status"]["desiredNumberScheduled"] == 1,
        "{}",
        desired["status"]
    );

    // The ConfigMap's files are ones `oxlet proxy` accepts as they are.
    let cm = get_json(&server, &["-n", "kube-system", "configmap", "oxlet-proxy"])?;
    let conf = cm["data"]["config.conf"].as_str().context("config.conf")?;
    let (file, warnings) = oxlet_proxy::config::parse(conf)?;
    ensure!(warnings.is_empty(), "{warnings:?}");
    let mut file = file;
    file.set_defaults();
    let config = file.validate()?;
    ensure!(
        config.mode == oxlet_proxy::ProxyMode::Nftables,
        "{config:?}"
    );
    ensure!(
        config.kubeconfig.as_deref() == Some(Path::new("/var/lib/oxlet-proxy/kubeconfig.conf")),
        "{config:?}"
    );
    let kubeconfig = cm["data"]["kubeconfig.conf"]
        .as_str()
        .context("kubeconfig.conf")?;
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let user = kc.auth_infos[0].auth_info.as_ref().context("user")?;
    ensure!(
        user.token_file.as_deref() == Some("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "{user:?}"
    );

    // RBAC: what the proxy watches and writes, bound to its service account.
    let role = get_json(&server, &["clusterrole", "oxlet:node-proxier"])?;
    let rules = role["rules"].as_array().context("rules")?;
    for (group, resource, verbs) in [
        ("", "services", &["list", "watch"][..]),
        ("discovery.k8s.io", "endpointslices", &["list", "watch"][..]),
        ("", "nodes", &["list", "watch"][..]),
        ("events.k8s.io", "events", &["create", "patch"][..]),
    ] {
        for verb in verbs {
            ensure!(
                allows(rules, group, resource, verb),
                "{verb} {group}/{resource} not granted: {role}"
            );
        }
    }
    ensure!(
        !allows(rules, "", "services", "delete"),
        "more than needed: {role}"
    );
    let binding = get_json(&server, &["clusterrolebinding", "oxlet:node-proxier"])?;
    ensure!(
        binding["subjects"][0]["name"] == "oxlet-proxy"
            && binding["subjects"][0]["namespace"] == "kube-system"
            && binding["roleRef"]["name"] == "oxlet:node-proxier",
        "{binding}"
    );
    Ok(())
}
