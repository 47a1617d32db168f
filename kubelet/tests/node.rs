//! The node half against a real API server (`oxlet server` through oxlet-e2e's harness):
//! registration, adoption, the Lease and the status loop, all through kube-rs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec as K8sNodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use oxlet_e2e::server::{Backend, TestServer};
use oxlet_kubelet::config::KubeletConfiguration;
use oxlet_kubelet::node::host::{self, HostReader};
use oxlet_kubelet::node::lease::{self, LeaseConfig, LEASE_NAMESPACE};
use oxlet_kubelet::node::register::{register, NodeSpec};
use oxlet_kubelet::node::status::{self, NodeHealth, StaticStatus, StatusConfig, StatusSource};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn oxlet_bin() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/oxlet");
    if !p.exists() {
        bail!(
            "build the oxlet binary first (cargo build): {} is missing",
            p.display()
        );
    }
    Ok(p)
}

async fn start() -> Result<(TestServer, Client)> {
    let bin = oxlet_bin()?;
    let server = tokio::task::spawn_blocking(move || TestServer::start(&bin, Backend::Sqlite, &[]))
        .await??;
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok((server, Client::try_from(cfg)?))
}

/// The static status of this host, as the kubelet would post it.
fn static_status(cfg: &KubeletConfiguration) -> Result<StaticStatus> {
    let reader = HostReader::default();
    let cap = reader.capacity(&std::env::temp_dir())?;
    Ok(StaticStatus {
        capacity: host::capacity(&cap, cfg.max_pods),
        allocatable: host::allocatable(&cap, cfg)?,
        node_info: reader.node_info(None, "containerd://1.6.20"),
        addresses: host::addresses(reader.internal_ip(), "test-host"),
        kubelet_port: cfg.port,
    })
}

fn initial_status(base: &StaticStatus) -> NodeStatus {
    status::status_at(
        base,
        &[],
        &NodeHealth::default(),
        None,
        jiff::Timestamp::now(),
    )
}

fn ready(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

async fn wait_node(
    api: &Api<Node>,
    name: &str,
    what: &str,
    cond: impl Fn(&Node) -> bool,
) -> Result<Node> {
    let found = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |n: Option<&Node>| {
            n.is_some_and(&cond)
        }),
    )
    .await;
    match found {
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Ok(None)) => bail!("node {name} gone while waiting for {what}"),
        Ok(Err(e)) => bail!("watch node {name} while waiting for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await?;
            bail!("timed out waiting for {what}; last node: {last:#?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_creates_a_ready_node() -> Result<()> {
    let (_server, client) = start().await?;
    let cfg = KubeletConfiguration::default();
    let base = static_status(&cfg)?;
    let mut extra = BTreeMap::new();
    extra.insert("example.com/pool".to_string(), "blue".to_string());
    let mut spec = NodeSpec::new("node-reg", &extra);
    spec.taints = vec![k8s_openapi::api::core::v1::Taint {
        key: "example.com/dedicated".into(),
        value: Some("infra".into()),
        effect: "NoSchedule".into(),
        ..Default::default()
    }];
    let node = register(&client, &spec, &initial_status(&base)).await?;
    assert!(node.metadata.uid.is_some());

    let api: Api<Node> = Api::all(client);
    let n = api.get("node-reg").await?;
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], "node-reg");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    assert_eq!(
        labels["kubernetes.io/arch"],
        host::goarch(std::env::consts::ARCH)
    );
    assert_eq!(labels["example.com/pool"], "blue");
    let taints = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert_eq!(taints.len(), 1, "{taints:?}");
    let st = n.status.clone().context("node has no status")?;
    let cap = st.capacity.clone().unwrap_or_default();
    assert_eq!(cap["pods"].0, "110");
    assert_eq!(cap["cpu"], base.capacity["cpu"]);
    assert_eq!(cap["memory"], base.capacity["memory"]);
    assert!(cap.contains_key("ephemeral-storage"));
    let alloc = st.allocatable.clone().unwrap_or_default();
    assert_eq!(alloc["memory"], base.allocatable["memory"]);
    let info = st.node_info.clone().context("no nodeInfo")?;
    assert_eq!(info.kubelet_version, host::KUBELET_VERSION);
    assert_eq!(info.container_runtime_version, "containerd://1.6.20");
    assert_eq!(info.operating_system, "linux");
    let addrs = st.addresses.clone().unwrap_or_default();
    assert!(addrs
        .iter()
        .any(|a| a.type_ == "Hostname" && a.address == "test-host"));
    assert_eq!(
        st.daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(10250)
    );
    let r = ready(&n).context("no Ready condition")?;
    assert_eq!(r.status, "True");
    assert_eq!(r.reason.as_deref(), Some("KubeletReady"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn register_adopts_an_existing_node() -> Result<()> {
    let (_server, client) = start().await?;
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), "stale".to_string());
    labels.insert("team".to_string(), "ops".to_string());
    // As if IPAM or an admin had set it up before this kubelet started.
    api.create(
        &PostParams::default(),
        &Node {
            metadata: ObjectMeta {
                name: Some("node-adopt".into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(K8sNodeSpec {
                pod_cidr: Some("10.99.0.0/24".into()),
                pod_cidrs: Some(vec!["10.99.0.0/24".into()]),
                ..Default::default()
            }),
            status: None,
        },
    )
    .await?;

    let base = static_status(&KubeletConfiguration::default())?;
    let mut spec = NodeSpec::new("node-adopt", &BTreeMap::new());
    spec.pod_cidr = Some("10.1.0.0/24".into());
    let node = register(&client, &spec, &initial_status(&base)).await?;
    assert_eq!(node.metadata.name.as_deref(), Some("node-adopt"));

    let n = api.get("node-adopt").await?;
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], "node-adopt");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["team"], "ops", "foreign labels are kept");
    assert_eq!(
        n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.99.0.0/24"),
        "podCIDR set by someone else is kept"
    );
    assert_eq!(ready(&n).map(|c| c.status.as_str()), Some("True"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_is_created_and_renewed() -> Result<()> {
    let (_server, client) = start().await?;
    let base = static_status(&KubeletConfiguration::default())?;
    let node = register(
        &client,
        &NodeSpec::new("node-lease", &BTreeMap::new()),
        &initial_status(&base),
    )
    .await?;
    let uid = node.metadata.uid.clone().context("node uid")?;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(lease::run(
        client.clone(),
        &node,
        LeaseConfig::from_duration_seconds(4),
        shutdown.clone(),
    ));
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = tokio::time::timeout(
        WAIT,
        await_condition(leases.clone(), "node-lease", |l: Option<&Lease>| {
            l.is_some_and(|l| renew_time(l).is_some())
        }),
    )
    .await
    .context("timed out waiting for the lease")??
    .context("lease deleted")?;
    let spec = first.spec.clone().context("lease spec")?;
    assert_eq!(spec.holder_identity.as_deref(), Some("node-lease"));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let owners = first.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners.iter().any(|o| o.kind == "Node" && o.uid == uid),
        "{owners:?}"
    );
    let t0 = renew_time(&first).context("renewTime")?;
    let later = tokio::time::timeout(
        WAIT,
        await_condition(leases.clone(), "node-lease", |l: Option<&Lease>| {
            l.and_then(renew_time).is_some_and(|t| t.0 > t0.0)
        }),
    )
    .await
    .context("timed out waiting for the lease to be renewed")??;
    assert!(later.is_some());

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await??;
    Ok(())
}

/// A health source the test flips.
struct Switch(Mutex<NodeHealth>);

#[async_trait::async_trait]
impl StatusSource for Switch {
    async fn health(&self) -> NodeHealth {
        self.0.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_loop_reports_runtime_not_ready_and_back() -> Result<()> {
    let (_server, client) = start().await?;
    let base = static_status(&KubeletConfiguration::default())?;
    let posted = initial_status(&base);
    register(
        &client,
        &NodeSpec::new("node-status", &BTreeMap::new()),
        &posted,
    )
    .await?;

    let switch = Arc::new(Switch(Mutex::new(NodeHealth::default())));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(status::run(
        client.clone(),
        "node-status".to_string(),
        base,
        switch.clone(),
        StatusConfig {
            update_frequency: Duration::from_millis(200),
            report_frequency: Duration::from_secs(300),
        },
        Some(posted),
        shutdown.clone(),
    ));
    let api: Api<Node> = Api::all(client);
    let before = api.get("node-status").await?;
    let t_ready = ready(&before)
        .and_then(|c| c.last_transition_time.clone())
        .context("Ready transition time")?;

    if let Ok(mut h) = switch.0.lock() {
        h.runtime_ready = false;
        h.runtime_message = "container runtime is down: connection refused".into();
    }
    let n = wait_node(&api, "node-status", "Ready=False", |n| {
        ready(n).is_some_and(|c| c.status == "False")
    })
    .await?;
    let r = ready(&n).context("Ready")?;
    assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        r.message.as_deref(),
        Some("container runtime is down: connection refused")
    );
    let t_not_ready = r.last_transition_time.clone().context("transition")?;
    assert!(t_not_ready.0 >= t_ready.0);

    if let Ok(mut h) = switch.0.lock() {
        *h = NodeHealth::default();
    }
    let n = wait_node(&api, "node-status", "Ready=True again", |n| {
        ready(n).is_some_and(|c| c.status == "True")
    })
    .await?;
    let r = ready(&n).context("Ready")?;
    assert_eq!(r.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        r.message.as_deref(),
        Some("kubelet is posting ready status")
    );
    // The other conditions never changed, so their transition time stayed put.
    let mem = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "MemoryPressure"))
        .context("MemoryPressure")?;
    assert_eq!(mem.status, "False");
    assert_eq!(
        mem.last_transition_time.as_ref().map(|t| t.0),
        Some(t_ready.0)
    );

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await??;
    Ok(())
}
