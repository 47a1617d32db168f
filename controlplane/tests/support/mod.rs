//! An in-process API server wired as `oxlet server` wires it (src/cmd/server.rs), on
//! 127.0.0.1:0 with SQLite in a temp dir, plus the chosen controller loops.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use oxlet_controlplane::apiserver::handlers::{self, ApiOptions, ApiState};
use oxlet_controlplane::apiserver::pki::Pki;
use oxlet_controlplane::apiserver::server::{self, ServerConfig};
use oxlet_controlplane::controllers::{self, ControllerOptions};
use oxlet_controlplane::storage::sqlite::SqliteStore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running API server with loops; everything stops when it is dropped.
pub struct Cluster {
    /// A client with cluster-admin rights.
    pub client: kube::Client,
    /// Cancels the server and the loops.
    pub shutdown: CancellationToken,
    /// The server, the loops and whatever the test adds.
    pub tasks: JoinSet<()>,
    /// The server's data directory (`pki/`, kubeconfigs, database); removed on drop.
    pub data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the server and `loops` with `options`.
pub async fn start(loops: &[&'static str], options: ControllerOptions) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let mut config = ServerConfig::new(dir.path());
    config.secure_port = addr.port();
    config.validate()?;
    let pki = {
        let opts = config.pki_options();
        tokio::task::spawn_blocking(move || Pki::load_or_create(&opts)).await??
    };
    // As `oxlet server`: the root CA publisher publishes the cluster CA unless told otherwise.
    let options = ControllerOptions {
        root_ca_cert: options
            .root_ca_cert
            .or_else(|| Some(pki.ca_cert_pem().to_string())),
        ..options
    };
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db")).await?);
    let api = ApiOptions {
        server_address: addr.to_string(),
        authenticator: config.authenticator()?,
        service_account_tokens: Some(Arc::new(config.service_account_tokens()?)),
        ..ApiOptions::default()
    };
    let state = Arc::new(ApiState::new(store, api).await?);
    let auth = state.authenticator.clone();
    let app = handlers::router(state);
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let kubeconfig = dir.path().join("controller-manager.kubeconfig");
    pki.issue_client_kubeconfig(
        "system:kube-controller-manager",
        &["system:masters"],
        &kubeconfig,
    )?;
    {
        let shutdown = shutdown.clone();
        let commit = config.git_commit.clone();
        tasks.spawn(async move {
            if let Err(e) =
                server::serve_listener(listener, &pki, auth, &commit, app, shutdown).await
            {
                eprintln!("API server ended: {e}");
            }
        });
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    let ctx = controllers::Context {
        client: client.clone(),
        options,
        shutdown: shutdown.clone(),
    };
    controllers::spawn(&mut tasks, ctx, loops);
    Ok(Cluster {
        client,
        shutdown,
        tasks,
        data_dir: dir.path().to_path_buf(),
        _dir: dir,
    })
}

/// Polls `check` every `every` until it returns `Ok(Ok(v))` or `deadline` passes; the error
/// names what was awaited and the last state `check` described.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = tokio::time::Instant::now() + deadline;
    let mut last;
    loop {
        match check().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(state)) => last = state,
            Err(e) => last = format!("error: {e:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    api.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
    )
    .await?;
    Ok(())
}
