//! A one-node cluster for kubelet tests: `oxlet server` on the host's loopback, and a test
//! network namespace (the node's "host") holding the registry, a private containerd and
//! `oxlet kubelet`. Forwarders join the two: the kubelet reaches the API server at the same
//! 127.0.0.1:<port> inside its namespace, and the API server reaches the kubelet's port
//! through 127.0.0.1:<kubelet port> on the host (the node registers InternalIP 127.0.0.1).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;
use oxlet_cri::{api, RuntimeService};

use crate::forward::{self, Forwarder};
use crate::runtime_env::{EnvOptions, RuntimeEnv};
use crate::server::{Backend, TestServer};

/// What a [`NodeEnv`] starts.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Extra `oxlet server` flags.
    pub server_args: Vec<String>,
    /// Extra KubeletConfiguration YAML lines appended to the generated file.
    pub kubelet_config: String,
    /// Extra `oxlet kubelet` flags.
    pub kubelet_args: Vec<String>,
    /// Also start the authenticated registry.
    pub auth_registry: bool,
}

/// A running one-node cluster. Drop order: kubelet (SIGTERM, then SIGKILL), forwarders,
/// API server, then containerd (removing every pod), registry and namespace, then the
/// kubelet's directory.
pub struct NodeEnv {
    kubelet: Option<Child>,
    bin: PathBuf,
    kubelet_args: Vec<String>,
    /// The node's name.
    pub node_name: String,
    /// Admin client of the API server.
    pub client: Client,
    forwarders: Vec<Forwarder>,
    /// The API server.
    pub server: TestServer,
    /// Registry, containerd and the namespace.
    pub env: RuntimeEnv,
    /// The kubelet's root dir and config; dropped last, since tearing the pods down runs CNI
    /// plugins that write under it.
    pub dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NodeEnv {
    /// Starts everything and waits until the Node is Ready.
    pub async fn start(prefix: &str, bin: &Path, opts: NodeOptions) -> Result<Self> {
        let env = RuntimeEnv::start(
            prefix,
            EnvOptions {
                auth_registry: opts.auth_registry,
                write_cni: false,
                ..Default::default()
            },
        )
        .await?;
        let server_args = opts.server_args.clone();
        let bin2 = bin.to_path_buf();
        let server = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = server_args.iter().map(String::as_str).collect();
            TestServer::start(&bin2, Backend::Sqlite, &args)
        })
        .await??;
        let api_addr: SocketAddr = server
            .url()
            .trim_start_matches("https://")
            .parse()
            .context("server address")?;
        let mut forwarders = vec![forward::into_host(&env.netns, api_addr, api_addr)?];
        let kubelet_port = free_port()?;
        let kaddr: SocketAddr = ([127, 0, 0, 1], kubelet_port).into();
        forwarders.push(forward::into_netns(&env.netns, kaddr, kaddr)?);

        let dir = tempfile::Builder::new()
            .prefix("oxt-kl-")
            .tempdir_in("/tmp")?;
        let node_name =
            format!("node-{}", env.netns.name().trim_start_matches("oxt-")).to_lowercase();
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             port: {kubelet_port}\ncgroupRoot: {cg}\ncontainerRuntimeEndpoint: {ep}\n\
             podLogsDir: {logs}\nclusterDomain: cluster.local\n{extra}\n",
            cg = env.containerd.cgroup_root(),
            ep = env.containerd.endpoint(),
            logs = dir.path().join("logs").display(),
            extra = opts.kubelet_config,
        );
        std::fs::write(dir.path().join("config.yaml"), config)?;
        let mut kubelet_args = vec![
            "kubelet".to_string(),
            "--kubeconfig".into(),
            server.kubeconfig().display().to_string(),
            "--config".into(),
            dir.path().join("config.yaml").display().to_string(),
            "--root-dir".into(),
            dir.path().join("root").display().to_string(),
            "--hostname-override".into(),
            node_name.clone(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--cni-config".into(),
            "auto".into(),
            "--cni-network-name".into(),
            env.containerd.network_name().to_string(),
        ];
        kubelet_args.extend(opts.kubelet_args.iter().cloned());
        let kc = kube::config::Kubeconfig::read_from(server.kubeconfig())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = Client::try_from(cfg)?;
        let mut me = Self {
            kubelet: None,
            bin: bin.to_path_buf(),
            kubelet_args,
            node_name,
            client,
            forwarders,
            server,
            dir,
            env,
        };
        me.start_kubelet()?;
        me.wait_node_ready(Duration::from_secs(90)).await?;
        me.wait_default_service_account(Duration::from_secs(60))
            .await?;
        Ok(me)
    }

    /// Starts (or restarts) the kubelet process inside the namespace.
    pub fn start_kubelet(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.kubelet_log_path())?;
        let mut cmd = self.env.netns.command(&self.bin.display().to_string());
        cmd.args(&self.kubelet_args)
            .env("RUST_LOG", "info,oxlet_kubelet=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.kubelet = Some(cmd.spawn().context("spawn oxlet kubelet")?);
        Ok(())
    }

    /// Stops the kubelet (SIGTERM, SIGKILL after 20 s). Pods keep running.
    pub fn stop_kubelet(&mut self) -> Result<()> {
        if let Some(mut child) = self.kubelet.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("kubelet ignored SIGTERM for 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The kubelet's PID (for RSS and CPU readings).
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(|c| c.id())
    }

    /// The kubelet's log file.
    pub fn kubelet_log_path(&self) -> PathBuf {
        self.dir.path().join("kubelet.log")
    }

    /// The kubelet's log (last 200 lines), for failure messages.
    pub fn kubelet_log(&self) -> String {
        let text = std::fs::read_to_string(self.kubelet_log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    /// Fails with the kubelet's log when the process has died.
    pub fn check_kubelet(&mut self) -> Result<()> {
        if let Some(child) = self.kubelet.as_mut() {
            if let Some(st) = child.try_wait()? {
                bail!("kubelet exited ({st}):\n{}", self.kubelet_log());
            }
        }
        Ok(())
    }

    /// Pods are admitted only once the namespace's `default` ServiceAccount exists (the
    /// serviceaccount controller creates it shortly after start), as on a real cluster.
    async fn wait_default_service_account(&self, timeout: Duration) -> Result<()> {
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + timeout;
        while sas.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!("no default ServiceAccount after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn wait_node_ready(&mut self, timeout: Duration) -> Result<()> {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            self.check_kubelet()?;
            if let Ok(Some(n)) = nodes.get_opt(&self.node_name).await {
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not Ready after {timeout:?}:\n{}",
                    self.node_name,
                    self.kubelet_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Polls pod `ns/name` until `cond` holds; the error shows the last pod seen and the
    /// kubelet's log.
    pub async fn wait_pod<F>(
        &mut self,
        ns: &str,
        name: &str,
        timeout: Duration,
        cond: F,
    ) -> Result<Pod>
    where
        F: Fn(&Pod) -> bool,
    {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.check_kubelet()?;
            if let Some(p) = api.get_opt(name).await? {
                if cond(&p) {
                    return Ok(p);
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {ns}/{name}: condition not met after {timeout:?}; last status: {}\nkubelet log:\n{}",
                    serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap_or_default(),
                    self.kubelet_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the pod object is gone.
    pub async fn wait_pod_gone(&mut self, ns: &str, name: &str, timeout: Duration) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_kubelet()?;
            if api.get_opt(name).await?.is_none() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {ns}/{name} still exists after {timeout:?}:\n{}",
                    self.kubelet_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The running container `container` of pod `ns/name`, found by the kubelet's labels.
    pub async fn container_id(&self, ns: &str, name: &str, container: &str) -> Result<String> {
        let filter = api::ContainerFilter {
            label_selector: HashMap::from([
                ("io.kubernetes.pod.namespace".to_string(), ns.to_string()),
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                (
                    "io.kubernetes.container.name".to_string(),
                    container.to_string(),
                ),
            ]),
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        let list = self.env.cri.list_containers(Some(filter)).await?;
        list.into_iter()
            .next()
            .map(|c| c.id)
            .with_context(|| format!("no running container {container} in pod {ns}/{name}"))
    }

    /// Runs `cmd` in a running container through CRI ExecSync; returns (exit code, stdout).
    pub async fn exec(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        cmd: &[&str],
    ) -> Result<(i32, String)> {
        let id = self.container_id(ns, pod, container).await?;
        let argv: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let r = self
            .env
            .cri
            .exec_sync(&id, &argv, Duration::from_secs(30))
            .await?;
        Ok((r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned()))
    }

    /// Sandboxes and containers containerd still has for pods with this UID.
    pub async fn runtime_objects(&self, uid: &str) -> Result<usize> {
        let sel = HashMap::from([("io.kubernetes.pod.uid".to_string(), uid.to_string())]);
        let s = self
            .env
            .cri
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: sel.clone(),
                ..Default::default()
            }))
            .await?;
        let c = self
            .env
            .cri
            .list_containers(Some(api::ContainerFilter {
                label_selector: sel,
                ..Default::default()
            }))
            .await?;
        Ok(s.len() + c.len())
    }
}

impl Drop for NodeEnv {
    fn drop(&mut self) {
        if let Err(e) = self.stop_kubelet() {
            eprintln!("node env: {e}");
        }
        self.forwarders.clear();
        // The stopped kubelet leaves its volume mounts (tmpfs for secrets and tokens) behind;
        // TempDir cannot remove a directory with mounts in it.
        crate::containerd::unmount_under(self.dir.path());
    }
}
