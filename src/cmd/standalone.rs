//! `oxlet standalone`: a one-node cluster in one process: the bundled control plane (data in
//! `<data-dir>/server`, SQLite) and the agent (managed containerd, registry mirror, kubelet,
//! proxy; data in `<data-dir>/agent`).
//!
//! Start-up is ordered and narrated on stdout: prerequisites, the API server, containerd, the
//! node becoming Ready, then the kubeconfig to use. Shutdown runs the other way: the agent
//! (kubelet and proxy, then the registry and containerd), then the API server. Everything
//! lives in the data dir, so the next start finds the same cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{agent, prereq, server};

/// EX_USAGE: invalid flags, reported before anything starts.
const EX_USAGE: u8 = 64;
/// How often start-up conditions are polled.
const POLL: Duration = Duration::from_millis(250);
/// How often a slow start-up step says it is still waiting.
const STILL_WAITING: Duration = Duration::from_secs(30);

/// Flags of `oxlet standalone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for everything: `<dir>/server` (PKI, kubeconfigs, SQLite) and `<dir>/agent`
    /// (containerd, registry, bundled images in `<dir>/agent/images`, kubelet, pod logs).
    #[arg(long, default_value = "/var/lib/oxlet")]
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// The API server's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Address the API server advertises (kubeconfigs, the `kubernetes` Service's endpoint);
    /// pods that use the API need one they can reach.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// The node's identity and the kubelet's cgroup and network names.
    #[command(flatten)]
    pub node: agent::NodeArgs,
}

/// `oxlet server`'s flags, parsed as if given on its command line, so standalone's server
/// gets exactly `oxlet server`'s defaults.
#[derive(Parser)]
struct ServerCli {
    #[command(flatten)]
    args: server::Args,
}

/// The server's and the agent's configuration, validated; nothing started or written.
fn configure(args: &Args) -> anyhow::Result<(server::Config, agent::Config)> {
    let server_dir = args.data_dir.join("server");
    let agent_dir = args.data_dir.join("agent");
    let mut argv = vec![
        "server".to_string(),
        "--data-dir".into(),
        server_dir.display().to_string(),
        "--bind-address".into(),
        args.bind_address.to_string(),
        "--secure-port".into(),
        args.secure_port.to_string(),
    ];
    if let Some(a) = args.advertise_address {
        argv.extend(["--advertise-address".to_string(), a.to_string()]);
    }
    let server_args = ServerCli::try_parse_from(argv)
        .context("server flags")?
        .args;
    let mut server = server::validate(server_args)?;
    let agent_args = agent::Args {
        kubeconfig: agent_dir.join("kubelet.kubeconfig"),
        data_dir: agent_dir,
        container_runtime_endpoint: None,
        node: args.node.clone(),
        node_labels: Vec::new(),
        register_with_taints: Vec::new(),
        pod_cidr: None,
        cluster_cidr: server.cluster_cidr(),
        disable_proxy: false,
        // Only the API server (its kubelet client certificate) may use the kubelet's API.
        client_ca_file: Some(server.ca_cert_path()),
    };
    let agent = agent::config(&agent_args)?;
    server.issue_kubeconfig(
        &format!("system:node:{}", agent.node_name),
        &["system:nodes"],
        &agent.kubeconfig,
    );
    Ok((server, agent))
}

/// One of the two halves, running as a task.
struct Part {
    name: &'static str,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Part {
    fn spawn(
        name: &'static str,
        fut: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        Self {
            name,
            handle: Some(tokio::spawn(
                fut.instrument(tracing::info_span!("part", name)),
            )),
        }
    }

    /// Waits for the task to end (forever if it already has) and returns its result.
    async fn finished(&mut self) -> anyhow::Result<()> {
        let Some(handle) = self.handle.as_mut() else {
            return std::future::pending().await;
        };
        let joined = handle.await;
        self.handle = None;
        match joined {
            Ok(r) => r.with_context(|| format!("{} failed", self.name)),
            Err(e) => Err(anyhow::anyhow!("{} task panicked: {e}", self.name)),
        }
    }

    /// Like [`Part::finished`], for an end nobody asked for: even `Ok` is an error then.
    async fn ended(&mut self) -> anyhow::Error {
        match self.finished().await {
            Ok(()) => anyhow::anyhow!("{} stopped unexpectedly", self.name),
            Err(e) => e,
        }
    }
}

/// Runs the one-node cluster until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (server_cfg, agent_cfg) = match configure(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxlet standalone: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let mut needs = agent_cfg.needs();
    needs.ports.insert(
        0,
        (
            server_cfg.listen_addr(),
            "the API server (choose another with --secure-port)".to_string(),
        ),
    );
    let problems = prereq::check(&prereq::Host::current(), &needs);
    if !problems.is_empty() {
        return Ok(prereq::report("standalone", &problems));
    }

    let shutdown = CancellationToken::new();
    super::signals::spawn_signal_handler(shutdown.clone())?;
    let admin_kubeconfig = server_cfg.admin_kubeconfig_path();
    let node_kubeconfig = agent_cfg.kubeconfig.clone();
    let node_name = agent_cfg.node_name.clone();
    let url = server_cfg.server_url();
    let probe = connect_addr(server_cfg.listen_addr());

    // The server outlives the agent at shutdown: the kubelet's last writes need it.
    let server_stop = CancellationToken::new();
    let mut server_part = Part::spawn("API server", server::serve(server_cfg, server_stop.clone()));
    let mut agent_part: Option<Part> = None;

    let started = async {
        println!("oxlet: waiting for the API server ({url})");
        let client = tokio::select! {
            c = wait_api_server(probe, &node_kubeconfig) => c,
            e = server_part.ended() => Err(e),
        }?;
        // A Ready condition from before this start does not count: the kubelet re-posts
        // status (with a fresh heartbeat) when it registers.
        let since = Timestamp::now();
        let (tx, rx) = oneshot::channel();
        let agent = agent_part.insert(Part::spawn(
            "agent",
            agent::serve(agent_cfg, shutdown.clone(), Some(tx)),
        ));
        // The agent narrates its own steps (registry, containerd, kubelet).
        tokio::select! {
            r = rx => if r.is_err() { return Err(agent.ended().await) },
            e = server_part.ended() => return Err(e),
        }
        tokio::select! {
            r = async {
                wait_node_ready(&client, &node_name, since).await?;
                wait_default_service_account(&client).await
            } => r,
            e = server_part.ended() => Err(e),
            e = agent.ended() => Err(e),
        }
    };
    // Shutdown first: a part that ends because of it has not failed.
    let mut failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        r = started => r.err(),
    };
    if failure.is_none() && !shutdown.is_cancelled() {
        println!("oxlet: node {node_name} is Ready; the cluster is up");
        println!("  kubeconfig: {}", admin_kubeconfig.display());
        println!(
            "  try:        kubectl --kubeconfig {} get nodes",
            admin_kubeconfig.display()
        );
        println!("  stop:       Ctrl-C (the next start finds the same cluster)");
        let agent_ended = async {
            match agent_part.as_mut() {
                Some(agent) => agent.ended().await,
                None => std::future::pending().await,
            }
        };
        failure = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            e = server_part.ended() => Some(e),
            e = agent_ended => Some(e),
        };
    }

    if let Some(e) = &failure {
        tracing::error!("{e:#}; stopping");
    }
    println!("oxlet: stopping");
    shutdown.cancel();
    if let Some(mut agent) = agent_part {
        if agent.handle.is_some() {
            if let Err(e) = agent.finished().await {
                tracing::error!("{e:#}");
                failure.get_or_insert(e);
            }
        }
    }
    server_stop.cancel();
    if server_part.handle.is_some() {
        if let Err(e) = server_part.finished().await {
            tracing::error!("{e:#}");
            failure.get_or_insert(e);
        }
    }
    match failure {
        None => {
            println!("oxlet: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some(e) => Err(e),
    }
}

/// Where to reach a server listening on `listen` (loopback for a wildcard address).
fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Waits until the API server answers `/version` with the node's kubeconfig (written by the
/// server before it listens); returns a client using it. The port is probed first, so a
/// kubeconfig left by an earlier run is not tried (and logged about) before anything listens.
async fn wait_api_server(
    probe: SocketAddr,
    kubeconfig: &std::path::Path,
) -> anyhow::Result<kube::Client> {
    let mut last_note = tokio::time::Instant::now();
    let mut last_err = String::from("not listening yet");
    loop {
        if tokio::net::TcpStream::connect(probe).await.is_ok() && kubeconfig.is_file() {
            match try_client(kubeconfig).await {
                Ok(client) => return Ok(client),
                Err(e) => last_err = format!("{e:#}"),
            }
        }
        if last_note.elapsed() > STILL_WAITING {
            println!("oxlet: still waiting for the API server ({last_err})");
            last_note = tokio::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn try_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    // A server that accepted the connection but does not answer is retried, not waited on
    // for the client's (minutes long) read timeout.
    tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .context("no answer to GET /version within 10 s")??;
    Ok(client)
}

/// Waits until the Node reports `Ready=True` with a heartbeat from `since` on, saying every
/// half minute what it waits for.
async fn wait_node_ready(
    client: &kube::Client,
    name: &str,
    since: Timestamp,
) -> anyhow::Result<()> {
    // API times have whole seconds.
    let since = since.as_second();
    println!("oxlet: waiting for node {name} to be Ready");
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_note = tokio::time::Instant::now();
    loop {
        let why = match nodes.get_opt(name).await {
            Ok(Some(node)) => {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready");
                let fresh = |c: &NodeCondition| {
                    c.last_heartbeat_time
                        .as_ref()
                        .is_some_and(|t| t.0.as_second() >= since)
                };
                match ready {
                    Some(c) if c.status == "True" && fresh(&c) => return Ok(()),
                    Some(c) if c.status == "True" => "status not yet posted by this run".into(),
                    Some(c) => c.message.unwrap_or(c.reason.unwrap_or_default()),
                    None => "no Ready condition yet".to_string(),
                }
            }
            Ok(None) => "not registered yet".to_string(),
            Err(e) => format!("reading the node: {e}"),
        };
        if last_note.elapsed() > STILL_WAITING {
            println!("oxlet: still waiting for node {name} to be Ready ({why})");
            last_note = tokio::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the `default` ServiceAccount of namespace `default` exists: until then the
/// API server refuses pods there (as kube-apiserver's admission does), so `kubectl run` right
/// after start-up would fail.
async fn wait_default_service_account(client: &kube::Client) -> anyhow::Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let mut last_note = tokio::time::Instant::now();
    loop {
        let why = match accounts.get_opt("default").await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => "not created yet".to_string(),
            Err(e) => e.to_string(),
        };
        if last_note.elapsed() > STILL_WAITING {
            println!("oxlet: still waiting for the default service account ({why})");
            last_note = tokio::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn data_lives_under_one_dir_and_the_kubelet_trusts_the_cluster_ca() {
        let args = Cli::try_parse_from([
            "standalone",
            "--data-dir",
            "/d",
            "--secure-port",
            "7443",
            "--hostname-override",
            "Box",
        ])
        .expect("flags")
        .args;
        let (server, agent) = configure(&args).expect("config");
        assert_eq!(server.listen_addr().to_string(), "127.0.0.1:7443");
        assert_eq!(
            server.admin_kubeconfig_path(),
            PathBuf::from("/d/server/admin.kubeconfig")
        );
        assert_eq!(agent.node_name, "box");
        assert_eq!(
            agent.kubeconfig,
            PathBuf::from("/d/agent/kubelet.kubeconfig")
        );
        assert_eq!(agent.data_dir, PathBuf::from("/d/agent"));
        let ca = serde_json::to_value(&agent.kubelet.config.authentication).expect("json");
        assert_eq!(ca["x509"]["clientCAFile"], "/d/server/pki/ca.crt");
        let proxy = agent.proxy.expect("proxy");
        assert_eq!(
            proxy
                .cluster_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            vec!["10.42.0.0/16".to_string()]
        );
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let args = Cli::try_parse_from(["standalone", "--secure-port", "0"])
            .expect("flags")
            .args;
        let err = configure(&args).expect_err("port 0");
        assert!(format!("{err:#}").contains("--secure-port"), "{err:#}");
    }
}
