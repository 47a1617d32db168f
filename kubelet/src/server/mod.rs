//! The kubelet's HTTPS server (port 10250) and its plain `/healthz` (127.0.0.1:10248), with
//! upstream's paths (pkg/kubelet/server/server.go):
//!
//! - `/healthz`;
//! - `/containerLogs/{namespace}/{pod}/{container}` (see [`logs`]);
//! - `/exec/…`, `/attach/…` and `/portForward/…`, proxied to the runtime's streaming server
//!   (see [`streaming`]);
//! - `/pods` and `/runningpods/` (see [`pods`]).
//!
//! Pods and containers are found through CRI list calls by the labels the kubelet puts on
//! them, so the server needs nothing but the runtime. Clients are authenticated by TLS client
//! certificates when a client CA is configured; there is no authorization step (upstream asks
//! the API server with a SubjectAccessReview).

pub mod logs;
pub mod lookup;
pub mod pods;
pub mod streaming;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use oxlet_cri::Runtime;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::logs::{LogFile, LogOptions, Watched};
use self::lookup::LookupError;
use self::streaming::Session;

/// The kubelet's default HTTPS port.
pub const DEFAULT_PORT: u16 = 10250;
/// The default port of the plain-HTTP `/healthz` on loopback.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10248;
/// How long open connections may take to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTPS port (`address`:`port` of KubeletConfiguration, 0.0.0.0:10250).
    pub bind: SocketAddr,
    /// Where `kubelet.crt`/`kubelet.key` are created when no certificate is given
    /// (`<root-dir>/pki`).
    pub cert_dir: PathBuf,
    /// `tlsCertFile`: a serving certificate (chain) to use instead of a self-signed one.
    pub tls_cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`: its key.
    pub tls_private_key_file: Option<PathBuf>,
    /// `authentication.x509.clientCAFile`: when set, clients must present a certificate it
    /// signed.
    pub client_ca_file: Option<PathBuf>,
    /// The node name (a SAN of the self-signed certificate).
    pub node_name: String,
    /// The node's addresses (SANs of the self-signed certificate).
    pub node_ips: Vec<IpAddr>,
    /// `healthzPort`: plain HTTP `/healthz` on 127.0.0.1; `None` disables it.
    pub healthz_port: Option<u16>,
}

impl ServerConfig {
    /// Upstream's defaults for `node_name`, certificates in `cert_dir`.
    pub fn new(node_name: impl Into<String>, cert_dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            cert_dir: cert_dir.into(),
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            node_name: node_name.into(),
            node_ips: Vec::new(),
            healthz_port: Some(DEFAULT_HEALTHZ_PORT),
        }
    }
}

/// Failures of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause (e.g. address in use).
        #[source]
        source: std::io::Error,
    },
    /// A certificate file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file could not be used.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generate serving certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// An error answer: upstream's kubelet writes the message as plain text.
#[derive(Debug)]
pub(crate) struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A runtime failure, with the status upstream's `streaming.WriteError` gives its code.
    pub(crate) fn runtime(e: oxlet_cri::Error) -> Self {
        let status = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// Log followers and upgraded streams, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) cancel: CancellationToken,
}

/// A bound server, not yet serving: its addresses are known (useful with port 0).
pub struct BoundServer {
    listener: TcpListener,
    healthz: Option<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
}

/// Loads or creates the certificate and binds the ports.
pub async fn bind(config: ServerConfig) -> Result<BoundServer, ServerError> {
    let cert_config = config.clone();
    let tls = tokio::task::spawn_blocking(move || {
        let cert = tls::load_or_create(&cert_config)?;
        tls::server_config(cert, cert_config.client_ca_file.as_deref())
    })
    .await
    .map_err(|e| ServerError::Tls(format!("certificate task: {e}")))??;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let healthz = match config.healthz_port {
        Some(port) => {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            )
        }
        None => None,
    };
    Ok(BoundServer {
        listener,
        healthz,
        tls,
    })
}

/// Binds and serves until `cancel` fires.
pub async fn serve(
    config: ServerConfig,
    runtime: Arc<dyn Runtime>,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    bind(config).await?.run(runtime, cancel).await
}

impl BoundServer {
    /// The HTTPS address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The plain `/healthz` address, when enabled.
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        self.healthz.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `cancel` fires, then stops accepting, lets connections finish for a few
    /// seconds and ends log followers and streams.
    pub async fn run(
        self,
        runtime: Arc<dyn Runtime>,
        cancel: CancellationToken,
    ) -> Result<(), ServerError> {
        let shared = Shared {
            runtime,
            tasks: TaskTracker::new(),
            cancel: cancel.clone(),
        };
        let app = router(shared.clone());
        let healthz = self.healthz.map(|l| {
            let cancel = cancel.clone();
            let app = Router::new().route("/healthz", get(healthz));
            tokio::spawn(
                accept_loop(l, None, app, cancel)
                    .instrument(tracing::info_span!("kubelet_healthz")),
            )
        });
        tracing::info!(address = ?self.listener.local_addr().ok(), "kubelet server listening");
        accept_loop(
            self.listener,
            Some(TlsAcceptor::from(self.tls)),
            app,
            cancel,
        )
        .await;
        if let Some(h) = healthz {
            if let Err(e) = h.await {
                tracing::warn!(error = %e, "healthz server task failed");
            }
        }
        shared.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = shared.tasks.len(),
                "streams still open after shutdown"
            );
        }
        tracing::info!("kubelet server stopped");
        Ok(())
    }
}

/// The routes of port 10250.
pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods", get(get_pods))
        .route("/pods/", get(get_pods))
        .route("/runningpods", get(get_pods))
        .route("/runningpods/", get(get_pods))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(exec))
        .route("/exec/{namespace}/{pod}/{uid}/{container}", any(exec_uid))
        .route("/attach/{namespace}/{pod}/{container}", any(attach))
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            any(attach_uid),
        )
        .route("/portForward/{namespace}/{pod}", any(port_forward))
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            any(port_forward_uid),
        )
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn get_pods(State(shared): State<Shared>) -> Response {
    match pods::running_pods(shared.runtime.as_ref()).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => HttpError::runtime(e).into_response(),
    }
}

async fn container_logs(
    State(shared): State<Shared>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    let opts = LogOptions::from_query(req.uri().query()).map_err(|message| HttpError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
    })?;
    let runtime = shared.runtime.as_ref();
    let sandbox = lookup::find_sandbox(runtime, &namespace, &pod)
        .await
        .map_err(HttpError::runtime)?
        .ok_or_else(|| {
            HttpError::not_found(LookupError::PodNotFound { pod: pod.clone() }.to_string())
        })?;
    let instances = lookup::container_instances(runtime, &sandbox, &container)
        .await
        .map_err(HttpError::runtime)?;
    let chosen = lookup::pick_for_logs(&instances, opts.previous, &pod, &container)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let status = runtime
        .container_status(&chosen.id, false)
        .await
        .map_err(HttpError::runtime)?
        .status
        .ok_or_else(|| HttpError::internal(format!("container {} has no status", chosen.id)))?;
    if status.log_path.is_empty() {
        return Err(HttpError::bad_request(format!(
            "container {container:?} in pod {pod:?} has no log file"
        )));
    }
    let file = LogFile::open(PathBuf::from(&status.log_path))
        .await
        .map_err(|e| {
            HttpError::bad_request(format!(
                "failed to open log file {:?}: {e}",
                status.log_path
            ))
        })?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let watched = Watched {
        runtime: shared.runtime.clone(),
        container_id: chosen.id.clone(),
    };
    let span = tracing::debug_span!("container_logs", %namespace, %pod, %container);
    shared
        .tasks
        .spawn(logs::stream(file, opts, watched, tx, shared.cancel.clone()).instrument(span));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response())
}

async fn exec(
    State(shared): State<Shared>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::exec_or_attach(&shared, Session::Exec, &namespace, &pod, &container, req).await
}

async fn exec_uid(
    State(shared): State<Shared>,
    Path((namespace, pod, _uid, container)): Path<(String, String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::exec_or_attach(&shared, Session::Exec, &namespace, &pod, &container, req).await
}

async fn attach(
    State(shared): State<Shared>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::exec_or_attach(&shared, Session::Attach, &namespace, &pod, &container, req).await
}

async fn attach_uid(
    State(shared): State<Shared>,
    Path((namespace, pod, _uid, container)): Path<(String, String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::exec_or_attach(&shared, Session::Attach, &namespace, &pod, &container, req).await
}

async fn port_forward(
    State(shared): State<Shared>,
    Path((namespace, pod)): Path<(String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::port_forward(&shared, &namespace, &pod, None, req).await
}

async fn port_forward_uid(
    State(shared): State<Shared>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, HttpError> {
    streaming::port_forward(&shared, &namespace, &pod, Some(&uid), req).await
}

/// Accepts connections (TLS when `tls` is given) until `cancel` fires, then drains.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    cancel: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut conns = JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let span = tracing::debug_span!("connection", %remote);
        conns.spawn(
            serve_connection(
                tcp,
                tls.clone(),
                builder.clone(),
                app.clone(),
                cancel.clone(),
            )
            .instrument(span),
        );
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.shutdown().await;
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    cancel: CancellationToken,
) {
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_io(stream, &builder, app, cancel).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
        None => serve_io(tcp, &builder, app, cancel).await,
    }
}

async fn serve_io<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    cancel: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            // Closes idle keep-alive connections and sends HTTP/2 GOAWAY; requests in
            // flight finish, bounded by the caller's drain timeout.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
