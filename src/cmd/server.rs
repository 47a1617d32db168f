//! `oxlet server`: the bundled control plane's API server, with kube-apiserver's flag names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use oxlet_controlplane::apiserver::auth::Authenticator;
use oxlet_controlplane::apiserver::handlers;
use oxlet_controlplane::apiserver::node_proxy::KubeletClientConfig;
use oxlet_controlplane::apiserver::pki::Pki;
use oxlet_controlplane::apiserver::server::{self, Cidr, ServerConfig};
use oxlet_controlplane::apiserver::serviceaccount_token::{self, ServiceAccountTokens};
use oxlet_controlplane::controllers;
use oxlet_controlplane::registry::generic::RegistryOptions;
use oxlet_controlplane::storage::{self, etcd::EtcdStore, sqlite::SqliteStore, Store};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: invalid flags, reported before anything is bound or written.
const EX_USAGE: u8 = 64;
/// Revisions of history the compactor keeps behind the newest (kine's `compactMinRetain`).
const COMPACTION_RETAIN: i64 = 1000;

/// Flags of `oxlet server` (upstream kube-apiserver names where one exists).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the PKI, admin.kubeconfig and the embedded database.
    #[arg(long, default_value = "/var/lib/oxlet/server")]
    data_dir: PathBuf,
    /// Address the secure port listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address advertised to clients (kubeconfigs, the kubernetes Service endpoint).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Static bearer tokens: CSV `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// CIDR(s) for Service cluster IPs (comma separated, at most one per IP family).
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cluster_ip_range: String,
    /// Port range for NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// etcd endpoints, comma separated; empty uses embedded SQLite at <data-dir>/db/state.db.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    etcd_servers: Vec<String>,
    /// Prefix prepended to every key in etcd (keys already start with /registry).
    #[arg(long, default_value = "")]
    etcd_prefix: String,
    /// Events kept by the watch cache (one cache for all resources); older watches get 410.
    #[arg(long, default_value_t = 10_000)]
    default_watch_cache_size: usize,
    /// Loops to run: `*` for all, `-name` to turn one off (upstream names: scheduler,
    /// nodelifecycle, nodeipam, replicaset, deployment, daemonset, endpointslice, endpoints,
    /// namespace, garbagecollector, serviceaccount, podgc, rootcacertpublisher).
    #[arg(long, default_value = "*")]
    controllers: String,
    /// Node silence after which it is marked `Ready=Unknown` and tainted (Go duration).
    #[arg(long, default_value = "40s")]
    node_monitor_grace_period: String,
    /// How often node health is checked (Go duration).
    #[arg(long, default_value = "5s")]
    node_monitor_period: String,
    /// Pod CIDR range nodes get their `spec.podCIDR` from; empty disables node IPAM.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Terminated pods kept before the pod GC deletes the oldest.
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// How often storage history is compacted (Go duration, e.g. 5m); 0 disables.
    #[arg(long, default_value = "5m")]
    etcd_compaction_interval: String,
    /// Issuer (`iss`) of service-account tokens; repeat to also accept tokens of earlier
    /// issuers (the first one signs).
    #[arg(long, default_value = serviceaccount_token::DEFAULT_ISSUER)]
    service_account_issuer: Vec<String>,
    /// PEM file of public keys that verify service-account tokens (repeatable; default
    /// <data-dir>/pki/sa.pub).
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// PEM private key that signs service-account tokens (default <data-dir>/pki/sa.key).
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// Audiences of the API server, comma separated (default: the issuers).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// Longest lifetime a TokenRequest gets (Go duration); 0 for no limit.
    #[arg(long, default_value = "0")]
    service_account_max_token_expiration: String,
    /// Extend pod-bound tokens of the kube-api-access volume (3607 s) to a year, with
    /// `warnafter` at their requested lifetime.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    service_account_extend_token_expiration: bool,
}

/// Where the objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StorageConfig {
    Sqlite(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// A client kubeconfig the server issues from its CA at every start (e.g. a bundled kubelet's).
#[derive(Debug, Clone)]
struct ClientKubeconfig {
    user: String,
    groups: Vec<String>,
    path: PathBuf,
}

/// The validated configuration of `oxlet server` (also run in-process by `oxlet standalone`).
#[derive(Debug)]
pub struct Config {
    server: ServerConfig,
    watch_cache_size: usize,
    controllers: Vec<&'static str>,
    controller_options: controllers::ControllerOptions,
    storage: StorageConfig,
    compaction_interval: Option<Duration>,
    kubeconfigs: Vec<ClientKubeconfig>,
}

impl Config {
    /// Where the secure port listens.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.server.listen_addr()
    }

    /// `https://<client address>:<port>`, as written into kubeconfigs.
    pub fn server_url(&self) -> String {
        self.server.server_url()
    }

    /// `<data-dir>/admin.kubeconfig`.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.server.data_dir.join("admin.kubeconfig")
    }

    /// `<data-dir>/pki/ca.crt`: the cluster CA, which also signs the API server's kubelet
    /// client certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.server.data_dir.join("pki").join("ca.crt")
    }

    /// `--cluster-cidr`, unless node IPAM is off.
    pub fn cluster_cidr(&self) -> Option<String> {
        self.controller_options.cluster_cidr.clone()
    }

    /// Asks for a kubeconfig for `user` in `groups` at `path`, issued once the PKI is loaded
    /// and before the port is bound (so it exists when the server answers).
    pub fn issue_kubeconfig(&mut self, user: &str, groups: &[&str], path: &std::path::Path) {
        self.kubeconfigs.push(ClientKubeconfig {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            path: path.to_path_buf(),
        });
    }
}

/// Checks the flags and builds the configuration; nothing is bound or written.
pub fn validate(args: Args) -> anyhow::Result<Config> {
    let ranges = args
        .service_cluster_ip_range
        .split(',')
        .map(|r| r.parse::<Cidr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    let node_ports = parse_port_range(&args.service_node_port_range)
        .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?;
    let compaction = parse_go_duration(&args.etcd_compaction_interval)
        .map_err(|e| anyhow::anyhow!("--etcd-compaction-interval: {e}"))?;
    let endpoints: Vec<String> = args
        .etcd_servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let storage = if endpoints.is_empty() {
        StorageConfig::Sqlite(args.data_dir.join("db").join("state.db"))
    } else {
        StorageConfig::Etcd {
            endpoints,
            prefix: args.etcd_prefix.trim_end_matches('/').to_string(),
        }
    };
    let mut server = ServerConfig::new(&args.data_dir);
    server.bind_address = args.bind_address;
    server.secure_port = args.secure_port;
    server.advertise_address = args.advertise_address;
    server.token_auth_file = args.token_auth_file;
    server.service_cluster_ip_range = ranges;
    server.service_node_port_range = node_ports;
    server.git_commit = super::version::GIT_COMMIT.to_string();
    server.service_account_issuers = args.service_account_issuer;
    server.service_account_key_files = args.service_account_key_file;
    server.service_account_signing_key_file = args.service_account_signing_key_file;
    server.api_audiences = args
        .api_audiences
        .into_iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let max_expiration = parse_go_duration(&args.service_account_max_token_expiration)
        .map_err(|e| anyhow::anyhow!("--service-account-max-token-expiration: {e}"))?;
    server.service_account_max_token_expiration =
        (!max_expiration.is_zero()).then_some(max_expiration);
    server.service_account_extend_token_expiration = args.service_account_extend_token_expiration;
    server.validate()?;
    let enabled = controllers::enabled(&args.controllers)
        .map_err(|e| anyhow::anyhow!("--controllers: {e}"))?;
    let duration =
        |flag: &str, v: &str| parse_go_duration(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    let controller_options = controllers::ControllerOptions {
        node_monitor_grace_period: duration(
            "node-monitor-grace-period",
            &args.node_monitor_grace_period,
        )?,
        node_monitor_period: duration("node-monitor-period", &args.node_monitor_period)?,
        cluster_cidr: Some(args.cluster_cidr.trim().to_string()).filter(|c| !c.is_empty()),
        node_cidr_mask_size: args.node_cidr_mask_size,
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        ..Default::default()
    };
    Ok(Config {
        server,
        watch_cache_size: args.default_watch_cache_size,
        controllers: enabled,
        controller_options,
        storage,
        compaction_interval: (!compaction.is_zero()).then_some(compaction),
        kubeconfigs: Vec::new(),
    })
}

/// `30000-32767` (or a single port).
fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("{s:?}: invalid port {p:?}: {e}"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if a > b {
        return Err(format!("{s:?}: start is after end"));
    }
    Ok(a..=b)
}

/// A Go `time.Duration` string (`5m`, `1h30m`, `300s`, `500ms`, `0`).
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit (ns, us, ms, s, m, h)"))?;
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: invalid number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("{s:?}: unknown unit {unit:?}")),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Opens the configured store.
async fn open_store(storage: &StorageConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match storage {
        StorageConfig::Sqlite(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create directory {}", dir.display()))?;
            }
            Arc::new(SqliteStore::open(path).await?)
        }
        StorageConfig::Etcd { endpoints, prefix } => {
            Arc::new(EtcdStore::connect(endpoints, prefix.clone()).await?)
        }
    })
}

/// The REST API served behind authentication: the registry over a watch cache of `store`,
/// with the built-in namespaces and the `kubernetes` Service created on first start; also
/// the authenticator chain to serve it with (`auth` plus service-account tokens).
async fn build_app(
    store: Arc<dyn Store>,
    config: &ServerConfig,
    watch_cache_size: usize,
    auth: Authenticator,
    tokens: Arc<ServiceAccountTokens>,
    kubelet_client: KubeletClientConfig,
) -> anyhow::Result<(axum::Router, Authenticator)> {
    let cidr = config
        .service_cluster_ip_range
        .first()
        .map(|c| format!("{}/{}", c.network, c.prefix_len))
        .context("no service cluster IP range")?;
    let opts = handlers::ApiOptions {
        registry: RegistryOptions {
            service_cidr: cidr,
            node_port_range: config.service_node_port_range.clone(),
        },
        server_address: std::net::SocketAddr::new(config.client_address(), config.secure_port)
            .to_string(),
        kubernetes_endpoint: Some((config.client_address(), config.secure_port)),
        watch_cache_size,
        authenticator: auth,
        service_account_tokens: Some(tokens),
        kubelet_client: Some(kubelet_client),
    };
    let state = handlers::ApiState::new(store, opts)
        .await
        .context("start the REST layer")?;
    let auth = state.authenticator.clone();
    Ok((handlers::router(Arc::new(state)), auth))
}

/// Runs the API server until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match validate(args) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("oxlet server: {err:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let shutdown = CancellationToken::new();
    super::signals::spawn_signal_handler(shutdown.clone())?;
    serve(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the API server, its store, scheduler and controllers until `shutdown` fires; returns
/// once everything it started has stopped.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pki_options = config.server.pki_options();
    let pki = tokio::task::spawn_blocking(move || Pki::load_or_create(&pki_options))
        .await
        .context("PKI setup task")??;
    tracing::info!(
        kubeconfig = %pki.admin_kubeconfig_path().display(),
        "admin kubeconfig ready (kubectl --kubeconfig <path>)"
    );
    for kc in &config.kubeconfigs {
        let groups: Vec<&str> = kc.groups.iter().map(String::as_str).collect();
        pki.issue_client_kubeconfig(&kc.user, &groups, &kc.path)
            .with_context(|| format!("issue a kubeconfig for {}", kc.user))?;
    }
    let auth = config.server.authenticator()?;
    let tokens = Arc::new(config.server.service_account_tokens()?);

    let store = open_store(&config.storage).await?;
    let compactor = config.compaction_interval.map(|interval| {
        storage::spawn_compactor(store.clone(), interval, COMPACTION_RETAIN, shutdown.clone())
    });
    let kubelet_client = KubeletClientConfig::new(Some(pki.kubelet_client_credentials()))?;
    let (app, auth) = build_app(
        store,
        &config.server,
        config.watch_cache_size,
        auth,
        tokens,
        kubelet_client,
    )
    .await?;

    let listener = server::bind(config.server.listen_addr()).await?;
    let local = listener.local_addr().context("read the bound address")?;
    tracing::info!(
        url = %format!("https://{local}"),
        advertise = %config.server.server_url(),
        "serving on https://{local}"
    );
    // The controllers talk to this server over loopback like any client, with their own
    // certificate, so their writes pass through the same machinery as everyone's.
    let mut loops = tokio::task::JoinSet::new();
    if !config.controllers.is_empty() {
        let kubeconfig = config.server.data_dir.join("controller-manager.kubeconfig");
        pki.issue_client_kubeconfig(
            "system:kube-controller-manager",
            &["system:masters"],
            &kubeconfig,
        )?;
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let client_config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let ctx = controllers::Context {
            client: kube::Client::try_from(client_config)?,
            options: controllers::ControllerOptions {
                root_ca_cert: Some(pki.ca_cert_pem().to_string()),
                ..config.controller_options.clone()
            },
            shutdown: shutdown.clone(),
        };
        controllers::spawn(&mut loops, ctx, &config.controllers);
    }
    let result = server::serve_listener(
        listener,
        &pki,
        auth,
        &config.server.git_commit,
        app,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    while loops.join_next().await.is_some() {}
    if let Some(task) = compactor {
        if let Err(err) = task.await {
            tracing::warn!(error = %err, "compactor task failed");
        }
    }
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767"), Ok(30000..=32767));
        assert!(parse_port_range("32767-30000").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
