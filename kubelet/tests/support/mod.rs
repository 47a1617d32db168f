//! A kubelet server running inside a test's network namespace, next to the private containerd
//! whose streaming server listens on loopback there, and reachable from the host through a
//! forwarding port on 127.0.0.1. Shared by kubelet/tests/server.rs and the root
//! tests/kubectl_exec_logs.rs (included there by path).
//!
//! The kubelet's tokio runtime is built on a thread that joined the namespace (threads it
//! spawns inherit it). The forwarding listener is bound on the test's own thread, in the host
//! namespace, and handed to that runtime: a socket keeps the namespace it was created in, so
//! accepted connections come from the host while the forwarder's outgoing connections to the
//! kubelet are made inside the namespace.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oxlet_cri::{api, RemoteRuntime, Timeouts};
use oxlet_e2e::runtime_env::RuntimeEnv;
use oxlet_kubelet::labels;
use oxlet_kubelet::server::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

/// The node name the test kubelet uses.
pub const NODE_NAME: &str = "oxt-node";

/// A running kubelet server (see the module docs); stopped on drop.
pub struct NetnsKubelet {
    /// Where the host reaches the kubelet's HTTPS port (127.0.0.1:<forwarder port>).
    pub host_addr: SocketAddr,
    /// The kubelet's own address inside the namespace.
    pub netns_addr: SocketAddr,
    cancel: CancellationToken,
    thread: Option<JoinHandle<Result<()>>>,
    dir: PathBuf,
}

impl NetnsKubelet {
    /// Starts a kubelet server for `env`'s containerd; with `client_ca`, clients must present
    /// certificates it signed.
    pub fn start(env: &RuntimeEnv, client_ca: Option<PathBuf>) -> Result<Self> {
        // In the environment's scratch dir, removed with it.
        let dir = env.scratch.path().join("kubelet");
        let host = std::net::TcpListener::bind("127.0.0.1:0").context("bind forwarder")?;
        host.set_nonblocking(true)?;
        let host_addr = host.local_addr()?;
        let endpoint = env.containerd.endpoint();
        let cancel = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let mut config = ServerConfig::new(NODE_NAME, dir.join("pki"));
        config.bind = "127.0.0.1:0".parse()?;
        config.healthz_port = None;
        config.node_ips = vec!["127.0.0.1".parse()?];
        config.client_ca_file = client_ca;
        let token = cancel.clone();
        let thread = env.netns.run_in(move || {
            std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let started = async {
                        let runtime = RemoteRuntime::connect(&endpoint, Timeouts::default())
                            .await
                            .context("connect CRI")?;
                        let bound = server::bind(config).await?;
                        let addr = bound.local_addr().context("kubelet address")?;
                        Ok::<_, anyhow::Error>((runtime, bound, addr))
                    }
                    .await;
                    let (runtime, bound, addr) = match started {
                        Ok(v) => v,
                        Err(e) => {
                            let msg = format!("{e:#}");
                            let _ = tx.send(Err(e));
                            bail!("kubelet did not start: {msg}");
                        }
                    };
                    let listener = tokio::net::TcpListener::from_std(host)?;
                    let forwarder = tokio::spawn(forward(listener, addr, token.clone()));
                    let _ = tx.send(Ok(addr));
                    let result = bound.run(Arc::new(runtime), token.clone()).await;
                    token.cancel();
                    let _ = forwarder.await;
                    result.map_err(anyhow::Error::from)
                })
            })
        })?;
        let netns_addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(e) => {
                cancel.cancel();
                bail!("kubelet server did not report its address: {e}");
            }
        };
        Ok(Self {
            host_addr,
            netns_addr,
            cancel,
            thread: Some(thread),
            dir,
        })
    }

    /// The directory holding `pki/kubelet.crt`.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stops the server and waits for its thread; reports how it ended.
    pub fn stop(&mut self) -> Result<()> {
        self.cancel.cancel();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("kubelet thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for NetnsKubelet {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("kubelet server: {e:#}");
        }
    }
}

/// Accepts on `listener` (host namespace) and joins each connection with a new one to
/// `target` (made from inside the namespace) until `cancel` fires.
async fn forward(listener: tokio::net::TcpListener, target: SocketAddr, cancel: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (mut inbound, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("forwarder accept: {e}");
                    break;
                }
            },
        };
        conns.spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
    conns.shutdown().await;
}

/// `config` with the labels the kubelet puts on a sandbox of pod `default/<name>`.
pub fn label_sandbox(mut config: api::PodSandboxConfig) -> api::PodSandboxConfig {
    if let Some(m) = &config.metadata {
        config
            .labels
            .insert(labels::POD_NAME.into(), m.name.clone());
        config
            .labels
            .insert(labels::POD_NAMESPACE.into(), m.namespace.clone());
        config.labels.insert(labels::POD_UID.into(), m.uid.clone());
    }
    config
}

/// `config` with the labels, restart-count annotation and log path (`<name>/<restarts>.log`)
/// the kubelet gives instance `restarts` of a container of `pod`.
pub fn label_container(
    mut config: api::ContainerConfig,
    pod: &api::PodSandboxConfig,
    restarts: u32,
) -> api::ContainerConfig {
    if let Some(m) = &pod.metadata {
        config
            .labels
            .insert(labels::POD_NAME.into(), m.name.clone());
        config
            .labels
            .insert(labels::POD_NAMESPACE.into(), m.namespace.clone());
        config.labels.insert(labels::POD_UID.into(), m.uid.clone());
    }
    if let Some(m) = config.metadata.as_mut() {
        m.attempt = restarts;
        config
            .labels
            .insert(labels::CONTAINER_NAME.into(), m.name.clone());
        config.log_path = format!("{}/{restarts}.log", m.name);
    }
    config
        .annotations
        .insert(labels::CONTAINER_RESTART_COUNT.into(), restarts.to_string());
    config
}
