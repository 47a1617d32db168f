//! The HTTPS front of the API server: TLS (rustls, ALPN `h2` and `http/1.1`, optional client
//! certificates verified against the cluster CA), HTTP/1.1 and HTTP/2 through hyper-util's auto
//! builder, authentication, the health endpoints and `/version`, and a graceful drain on
//! shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apiserver::auth::{self, Authenticator, PeerCertificates, TokenFile};
use crate::apiserver::pki::{self, Pki, PkiOptions};
use crate::apiserver::serviceaccount_token::{self, ServiceAccountTokens, TokenOptions};

/// The Kubernetes minor version served in `/version` (k8s-openapi feature `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";
/// `gitVersion` in `/version`.
pub const GIT_VERSION: &str = "v1.33.0-oxlet";
/// How long connections may take to finish after shutdown starts (kube-apiserver's
/// `--shutdown-delay-duration` is separate; this is the drain).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of configuring or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; `field` is the flag name.
    #[error("{field}: {message}")]
    Config {
        /// The flag (`--service-cluster-ip-range`).
        field: &'static str,
        /// Why it is invalid.
        message: String,
    },
    /// The listening socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause (e.g. address in use).
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built from the PKI.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The PKI failed.
    #[error(transparent)]
    Pki(#[from] pki::Error),
    /// Authentication setup failed (e.g. an unreadable token file).
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// Service-account token keys or settings are invalid.
    #[error(transparent)]
    ServiceAccountTokens(#[from] serviceaccount_token::Error),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An IP network in CIDR notation (`10.43.0.0/16`, `fd00::/108`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub network: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

impl Cidr {
    /// The first host address, which kube-apiserver gives the `kubernetes` Service
    /// (10.43.0.0/16 → 10.43.0.1).
    pub fn first_host(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
            IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("{s:?}: invalid address: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?;
        let network = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        if network != addr {
            return Err(format!(
                "{s:?}: host bits set (network is {network}/{prefix_len})"
            ));
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The API server's network and identity settings (flags of `oxlet server`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--bind-address`: where the secure port listens.
    pub bind_address: IpAddr,
    /// `--secure-port`.
    pub secure_port: u16,
    /// `--advertise-address`: the address clients and kubeconfigs use.
    pub advertise_address: Option<IpAddr>,
    /// `--data-dir`: PKI, admin.kubeconfig and the embedded database live here.
    pub data_dir: PathBuf,
    /// `--token-auth-file`: static bearer tokens.
    pub token_auth_file: Option<PathBuf>,
    /// `--service-cluster-ip-range` (one range, or two for dual stack).
    pub service_cluster_ip_range: Vec<Cidr>,
    /// `--service-node-port-range`.
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// `gitCommit` in `/version` (the binary passes its own).
    pub git_commit: String,
    /// `--service-account-issuer` (repeatable): the first signs tokens, all are accepted.
    pub service_account_issuers: Vec<String>,
    /// `--service-account-key-file` (repeatable); empty means `<data-dir>/pki/sa.pub`.
    pub service_account_key_files: Vec<PathBuf>,
    /// `--service-account-signing-key-file`; `None` means `<data-dir>/pki/sa.key`.
    pub service_account_signing_key_file: Option<PathBuf>,
    /// `--api-audiences`; empty means the issuers.
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration`; `None` for no limit.
    pub service_account_max_token_expiration: Option<Duration>,
    /// `--service-account-extend-token-expiration`.
    pub service_account_extend_token_expiration: bool,
}

impl ServerConfig {
    /// Defaults matching `oxlet server` without flags.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure_port: 6443,
            advertise_address: None,
            data_dir: data_dir.into(),
            token_auth_file: None,
            service_cluster_ip_range: vec![Cidr {
                network: IpAddr::V4(Ipv4Addr::new(10, 43, 0, 0)),
                prefix_len: 16,
            }],
            service_node_port_range: 30000..=32767,
            git_commit: option_env!("OXLET_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            service_account_issuers: vec![serviceaccount_token::DEFAULT_ISSUER.to_string()],
            service_account_key_files: Vec::new(),
            service_account_signing_key_file: None,
            api_audiences: Vec::new(),
            service_account_max_token_expiration: None,
            service_account_extend_token_expiration: true,
        }
    }

    /// Checks what flags alone can get wrong, before anything is bound or written.
    pub fn validate(&self) -> Result<()> {
        let config = |field, message: String| Err(Error::Config { field, message });
        for range in &self.service_cluster_ip_range {
            if host_bits(range) < 2 {
                return config(
                    "--service-cluster-ip-range",
                    format!("{range} is too small to hold the kubernetes Service address"),
                );
            }
        }
        match self.service_cluster_ip_range.as_slice() {
            [] => return config("--service-cluster-ip-range", "must not be empty".into()),
            [_] => {}
            [a, b] if a.network.is_ipv4() != b.network.is_ipv4() => {}
            [_, _] => {
                return config(
                    "--service-cluster-ip-range",
                    "two ranges must be one IPv4 and one IPv6".into(),
                )
            }
            _ => return config("--service-cluster-ip-range", "at most two ranges".into()),
        }
        if self.secure_port == 0 {
            // Clients and kubeconfigs need the real port; upstream's 0 (disable HTTPS) is
            // meaningless for a server that only serves HTTPS.
            return config("--secure-port", "must be between 1 and 65535".into());
        }
        if self.service_node_port_range.is_empty() {
            return config(
                "--service-node-port-range",
                format!(
                    "{}-{} is empty",
                    self.service_node_port_range.start(),
                    self.service_node_port_range.end()
                ),
            );
        }
        if let Some(a) = self.advertise_address {
            if a.is_unspecified() || a.is_multicast() {
                return config(
                    "--advertise-address",
                    format!("{a} is not a unicast address"),
                );
            }
        }
        if let Some(path) = &self.token_auth_file {
            if !path.is_file() {
                return config(
                    "--token-auth-file",
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return config("--data-dir", "must not be empty".into());
        }
        self.service_account_token_options().validate()?;
        Ok(())
    }

    /// The address the secure port binds.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.secure_port)
    }

    /// The address clients should use: `--advertise-address`, else the bind address unless it
    /// is a wildcard, else loopback.
    pub fn client_address(&self) -> IpAddr {
        if let Some(a) = self.advertise_address {
            return a;
        }
        match self.bind_address {
            a if !a.is_unspecified() => a,
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// `https://<client address>:<port>`.
    pub fn server_url(&self) -> String {
        format!(
            "https://{}",
            SocketAddr::new(self.client_address(), self.secure_port)
        )
    }

    /// What the PKI must cover: hostname and host addresses, the advertise and bind
    /// addresses, and the first address of each service range.
    pub fn pki_options(&self) -> PkiOptions {
        let mut ip_sans = pki::host_addresses();
        ip_sans.extend(self.advertise_address);
        if !self.bind_address.is_unspecified() {
            ip_sans.push(self.bind_address);
        }
        ip_sans.extend(self.service_cluster_ip_range.iter().map(Cidr::first_host));
        PkiOptions {
            data_dir: self.data_dir.clone(),
            server_url: self.server_url(),
            dns_sans: pki::hostname().into_iter().collect(),
            ip_sans,
        }
    }

    /// The API server's audiences: `--api-audiences`, else the issuers (as kube-apiserver).
    pub fn api_audiences(&self) -> Vec<String> {
        if self.api_audiences.is_empty() {
            self.service_account_issuers.clone()
        } else {
            self.api_audiences.clone()
        }
    }

    /// The service-account token settings, with the PKI's `sa.key`/`sa.pub` as default keys.
    pub fn service_account_token_options(&self) -> TokenOptions {
        let pki = self.data_dir.join("pki");
        TokenOptions {
            issuers: self.service_account_issuers.clone(),
            api_audiences: self.api_audiences(),
            signing_key_file: self
                .service_account_signing_key_file
                .clone()
                .unwrap_or_else(|| pki.join("sa.key")),
            key_files: if self.service_account_key_files.is_empty() {
                vec![pki.join("sa.pub")]
            } else {
                self.service_account_key_files.clone()
            },
            max_expiration: self.service_account_max_token_expiration,
            extend_expiration: self.service_account_extend_token_expiration,
        }
    }

    /// Loads the service-account token keys; call after the PKI exists (it creates the
    /// default `sa.key`).
    pub fn service_account_tokens(&self) -> Result<ServiceAccountTokens> {
        Ok(ServiceAccountTokens::load(
            &self.service_account_token_options(),
        )?)
    }

    /// The authenticator chain this configuration asks for (client certificates, then the
    /// token file if given), with the API audiences; service-account tokens are added by
    /// [`crate::apiserver::handlers::ApiState::new`], which owns the store they are checked
    /// against.
    pub fn authenticator(&self) -> Result<Authenticator> {
        let mut auth = Authenticator::new().with_api_audiences(self.api_audiences());
        if let Some(path) = &self.token_auth_file {
            let file = TokenFile::load(path)?;
            tracing::info!(path = %path.display(), tokens = file.len(), "loaded token file");
            auth = auth.with_token_authenticator(Arc::new(file));
        }
        Ok(auth)
    }
}

fn host_bits(c: &Cidr) -> u32 {
    let max = if c.network.is_ipv4() { 32 } else { 128 };
    max - u32::from(c.prefix_len)
}

/// Binds the secure port; the error names the address (e.g. when it is already in use).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// The rustls configuration: our serving certificate, ALPN `h2` then `http/1.1`, and client
/// certificates optional but, when presented, verified against the cluster CA.
pub fn tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_cert_der().to_vec()))
        .map_err(|e| Error::Tls(format!("cluster CA: {e}")))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let chain = rustls_pemfile::certs(&mut pki.serving_cert_pem().as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("serving certificate: {e}")))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut pki.serving_key_pem().as_bytes())
            .map_err(|e| Error::Tls(format!("serving key: {e}")))?
            .ok_or_else(|| Error::Tls("serving key: no private key in PEM".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Clone)]
struct Health {
    shutdown: CancellationToken,
    version: Arc<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct HealthQuery {
    verbose: Option<String>,
}

/// The `/version` body, shaped like kube-apiserver's.
pub fn version_info(git_commit: &str) -> serde_json::Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    serde_json::json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "emulationMajor": "1",
        "emulationMinor": KUBERNETES_MINOR,
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": git_commit,
        "gitTreeState": "clean",
        // Not recorded at build time; clients only display it.
        "buildDate": "unknown",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

async fn healthz(Query(q): Query<HealthQuery>) -> Response {
    health_answer("healthz", true, q.verbose.is_some())
}

async fn livez(Query(q): Query<HealthQuery>) -> Response {
    health_answer("livez", true, q.verbose.is_some())
}

async fn readyz(State(h): State<Health>, Query(q): Query<HealthQuery>) -> Response {
    // As kube-apiserver: once shutdown starts, /readyz fails so load balancers stop sending
    // new requests while in-flight ones drain.
    health_answer("readyz", !h.shutdown.is_cancelled(), q.verbose.is_some())
}

async fn check_ok() -> &'static str {
    "ok"
}

fn health_answer(name: &str, ok: bool, verbose: bool) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let body = match (verbose, ok) {
        (false, true) => "ok".to_string(),
        (false, false) => format!("[-]shutdown failed: reason withheld\n{name} check failed"),
        (true, true) => format!("[+]ping ok\n[+]shutdown ok\n{name} check passed\n"),
        (true, false) => {
            format!("[+]ping ok\n[-]shutdown failed: reason withheld\n{name} check failed\n")
        }
    };
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn version(State(h): State<Health>) -> Response {
    axum::Json((*h.version).clone()).into_response()
}

/// `app` behind authentication, with `/healthz`, `/livez`, `/readyz` (and sub-paths) and
/// `/version` answered here; every other path goes to `app`.
pub fn router(
    app: Router,
    auth: Authenticator,
    git_commit: &str,
    shutdown: CancellationToken,
) -> Router {
    let health = Health {
        shutdown,
        version: Arc::new(version_info(git_commit)),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/{*check}", get(check_ok))
        .route("/livez", get(livez))
        .route("/livez/{*check}", get(check_ok))
        .route("/readyz", get(readyz))
        .route("/readyz/{*check}", get(check_ok))
        .route("/version", get(version))
        .route("/version/", get(version))
        .with_state(health)
        .fallback_service(app)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
}

/// Serves `app` as [`serve_listener`] does, on the configured address, with the
/// configuration's authenticator.
pub async fn serve(
    config: &ServerConfig,
    pki: &Pki,
    app: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    let auth = config.authenticator()?;
    let listener = bind(config.listen_addr()).await?;
    serve_listener(listener, pki, auth, &config.git_commit, app, shutdown).await
}

/// Serves `app` (wrapped by [`router`]) over TLS on an already bound `listener` until
/// `shutdown` fires, then stops accepting, lets open connections finish for up to
/// [`DRAIN_TIMEOUT`] and closes the rest.
pub async fn serve_listener(
    listener: TcpListener,
    pki: &Pki,
    auth: Authenticator,
    git_commit: &str,
    app: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(pki)?);
    let app = router(app, auth, git_commit, shutdown.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        // kube-apiserver allows 100 concurrent streams per client (watches are streams).
        .max_concurrent_streams(1000);
    let builder = Arc::new(builder);
    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, "API server listening");

    let mut conns = JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off briefly rather than spin on it.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let span = tracing::debug_span!("connection", %remote);
        conns.spawn(
            serve_connection(
                tcp,
                acceptor.clone(),
                builder.clone(),
                app.clone(),
                shutdown.clone(),
            )
            .instrument(span),
        );
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(
        open_connections = open,
        "API server stopped accepting; draining"
    );
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "closing connections still open after the drain timeout"
        );
        conns.shutdown().await;
    }
    tracing::info!("API server stopped");
    Ok(())
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let peer = tls.get_ref().1.peer_certificates().map(|chain| {
        PeerCertificates(Arc::new(
            chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        ))
    });
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if let Some(peer) = &peer {
                req.extensions_mut().insert(peer.clone());
            }
            tower::ServiceExt::oneshot(app.clone(), req)
        });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // HTTP/2 GOAWAY, or closing an idle HTTP/1.1 keep-alive connection; requests in
            // flight finish (bounded by the caller's drain timeout).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_names_first_host() {
        let c: Cidr = "10.43.0.0/16".parse().expect("cidr");
        assert_eq!(c.first_host(), IpAddr::from([10, 43, 0, 1]));
        let c: Cidr = "fd00:43::/108".parse().expect("cidr");
        assert_eq!(c.first_host(), "fd00:43::1".parse::<IpAddr>().expect("ip"));
        assert!("10.43.0.1/16".parse::<Cidr>().is_err());
        assert!("10.43.0.0/33".parse::<Cidr>().is_err());
        assert!("10.43.0.0".parse::<Cidr>().is_err());
    }

    #[test]
    fn validate_names_the_flag() {
        let mut c = ServerConfig::new("/tmp/x");
        assert!(c.validate().is_ok());
        c.service_cluster_ip_range = vec!["10.0.0.0/32".parse().expect("cidr")];
        let err = c.validate().expect_err("too small");
        assert!(
            err.to_string().starts_with("--service-cluster-ip-range:"),
            "{err}"
        );
        c.service_cluster_ip_range = vec![
            "10.0.0.0/16".parse().expect("cidr"),
            "10.1.0.0/16".parse().expect("cidr"),
        ];
        assert!(c.validate().is_err());
    }

    #[test]
    fn server_url_prefers_advertise_then_specific_bind() {
        let mut c = ServerConfig::new("/tmp/x");
        assert_eq!(c.server_url(), "https://127.0.0.1:6443");
        c.bind_address = "0.0.0.0".parse().expect("ip");
        assert_eq!(c.server_url(), "https://127.0.0.1:6443");
        c.bind_address = "::".parse().expect("ip");
        assert_eq!(c.server_url(), "https://[::1]:6443");
        c.advertise_address = Some("192.0.2.7".parse().expect("ip"));
        assert_eq!(c.server_url(), "https://192.0.2.7:6443");
    }
}
