//! Pod subresources answered by the node's kubelet: `pods/log`, `pods/exec`, `pods/attach` and
//! `pods/portforward`, as kube-apiserver serves them (pkg/registry/core/pod/strategy.go
//! `LogLocation`, `ExecLocation`, `AttachLocation`, `PortForwardLocation`).
//!
//! The pod must be bound; its Node gives the kubelet's address (`status.addresses`, InternalIP
//! first, then the others) and port (`status.daemonEndpoints.kubeletEndpoint.Port`, 10250 by
//! default). The connection is TLS with the API server's kubelet-client certificate; the
//! kubelet's own certificate is not verified, as kube-apiserver without
//! `--kubelet-certificate-authority`. Logs are streamed through as the kubelet sends them;
//! exec, attach and port-forward upgrades are proxied both ways unchanged, so whatever
//! protocol the client and the kubelet agree on (SPDY/3.1, WebSocket) passes through, and a
//! refused upgrade reaches the client as the kubelet answered it (kubectl then falls back from
//! WebSocket to SPDY). `pods/proxy` and `nodes/proxy` are not served yet (503).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::apiserver::handlers::{ApiState, Call};
use crate::apiserver::pki::ClientCredentials;
use crate::apiserver::resources;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::registry::strategy::FieldError;

/// The kubelet port when the Node does not name one.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Address types tried in order (kubeadm's `--kubelet-preferred-address-types` order, with the
/// DNS names last).
pub const PREFERRED_ADDRESS_TYPES: [&str; 5] = [
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "ExternalDNS",
];
/// Connecting to one kubelet address may take this long (kube-apiserver's dial timeout).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// An error body from the kubelet is read up to this size.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Failures of building the kubelet client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client certificate or key could not be used.
    #[error("kubelet client certificate: {0}")]
    Credentials(String),
    /// The TLS configuration could not be built.
    #[error("kubelet client TLS configuration: {0}")]
    Tls(String),
}

/// How the API server connects to kubelets: TLS, HTTP/1.1 (upgrades need it), presenting
/// the kubelet-client certificate when one is configured.
#[derive(Clone)]
pub struct KubeletClientConfig {
    tls: Arc<rustls::ClientConfig>,
    has_identity: bool,
}

impl std::fmt::Debug for KubeletClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClientConfig")
            .field("client_certificate", &self.has_identity)
            .finish()
    }
}

impl Default for KubeletClientConfig {
    fn default() -> Self {
        // The same configuration without an identity cannot fail to build with the ring
        // provider's defaults; fall back to rustls' own defaults if it ever did.
        Self::new(None).unwrap_or_else(|_| Self {
            tls: Arc::new(
                rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyKubeletCertificate(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))))
                    .with_no_client_auth(),
            ),
            has_identity: false,
        })
    }
}

impl KubeletClientConfig {
    /// A client presenting `identity` (the `apiserver-kubelet-client` certificate), or no
    /// certificate at all.
    pub fn new(identity: Option<&ClientCredentials>) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyKubeletCertificate(provider)));
        let mut tls = match identity {
            Some(creds) => {
                let chain = rustls_pemfile::certs(&mut creds.cert_pem.as_bytes())
                    .collect::<Result<Vec<CertificateDer<'static>>, _>>()
                    .map_err(|e| Error::Credentials(e.to_string()))?;
                let key: PrivateKeyDer<'static> =
                    rustls_pemfile::private_key(&mut creds.key_pem.as_bytes())
                        .map_err(|e| Error::Credentials(e.to_string()))?
                        .ok_or_else(|| Error::Credentials("no private key in PEM".into()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Credentials(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            has_identity: identity.is_some(),
        })
    }
}

/// Accepts the kubelet's certificate without checking who signed it (kubelets usually serve
/// self-signed certificates), still checking the handshake signature.
#[derive(Debug)]
struct AnyKubeletCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyKubeletCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Serves `pods/<name>/{log,exec,attach,portforward}`; other kubelet-proxied subresources
/// (`pods/proxy`, `nodes/proxy`) answer 503.
pub async fn handle(st: &ApiState, call: &Call, sub: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let streaming = matches!(call.method, Method::GET | Method::POST);
    match (res.plural, sub) {
        ("pods", "log") if call.method == Method::GET => logs(st, call).await,
        ("pods", "exec" | "attach" | "portforward") if streaming => stream(st, call, sub).await,
        ("pods", "log" | "exec" | "attach" | "portforward") => {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {} {sub}",
                call.method
            )))
        }
        _ => Err(ApiError::unavailable(format!(
            "{}/{sub} is not proxied to kubelets by this server yet",
            res.plural
        ))),
    }
}

async fn logs(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let name = call.name()?.to_string();
    let pod = st.registry.get(call.target.res, call.ns(), &name).await?;
    let pairs = query_pairs(call)?;
    let path = log_path(&pod, &pairs)?;
    let node = node_name(&pod)?;
    let (mut sender, authority) = connect(st, &node).await?;
    let req = Request::get(path)
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::internal(format!("error reading logs from the kubelet: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = read_error_body(resp.into_body()).await;
        return Err(kubelet_error(status, &body, &name));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(resp.into_body()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn stream(st: &ApiState, call: &Call, sub: &str) -> ApiResult<Response> {
    let name = call.name()?.to_string();
    let pod = st.registry.get(call.target.res, call.ns(), &name).await?;
    let pairs = query_pairs(call)?;
    let path = match sub {
        "portforward" => port_forward_path(&pod, &pairs)?,
        _ => stream_path(&pod, &pairs, sub)?,
    };
    let node = node_name(&pod)?;
    let Some(client_upgrade) = upgrade_of(call) else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let (mut sender, authority) = connect(st, &node).await?;
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    *req.headers_mut() = forwarded_headers(&call.headers, &authority);
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::internal(format!("error proxying to the kubelet: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::debug!(status = %resp.status(), "kubelet refused the upgrade");
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    // Owned by the two connections it joins: it ends when either side closes.
    tokio::spawn(
        async move {
            let (client, kubelet) = match tokio::try_join!(client_upgrade, kubelet_upgrade) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut kubelet = TokioIo::new(kubelet);
            match tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                Ok((up, down)) => tracing::debug!(up, down, "stream closed"),
                Err(e) => tracing::debug!(error = %e, "stream ended with an error"),
            }
        }
        .instrument(tracing::debug_span!("kubelet_stream")),
    );
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

/// The client's pending upgrade, when it asked for one (`Connection: upgrade` + `Upgrade`).
fn upgrade_of(call: &Call) -> Option<hyper::upgrade::OnUpgrade> {
    let asks = call
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        && call.headers.contains_key(header::UPGRADE);
    if !asks {
        return None;
    }
    call.extensions.get::<hyper::upgrade::OnUpgrade>().cloned()
}

/// The client's headers as sent on to the kubelet: its credentials for this server and the
/// body framing stay behind; the upgrade and protocol negotiation headers pass.
pub fn forwarded_headers(from: &HeaderMap, authority: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        if n == "host"
            || n == "authorization"
            || n == "cookie"
            || n == "content-length"
            || n == "transfer-encoding"
            || n.starts_with("impersonate-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        out.insert(header::HOST, host);
    }
    out
}

/// A connection to the kubelet of `node_name`, and the `host:port` it went to.
async fn connect(
    st: &ApiState,
    node_name: &str,
) -> ApiResult<(
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    String,
)> {
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not a known resource"))?;
    let node = st.registry.get(nodes, None, node_name).await?;
    let (hosts, port) = kubelet_endpoints(&node);
    if hosts.is_empty() {
        return Err(ApiError::internal(format!(
            "node {node_name:?} has no address to reach its kubelet"
        )));
    }
    let config = st.opts.kubelet_client.clone().unwrap_or_default();
    let mut last = String::new();
    for host in &hosts {
        let addr = join_host_port(host, port);
        match dial(&config, host, &addr).await {
            Ok(tls) => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| ApiError::internal(format!("error dialing backend: {e}")))?;
                // Owned by the connection: ends with it (after the response body or the
                // upgraded stream is done).
                tokio::spawn(
                    async move {
                        if let Err(e) = conn.with_upgrades().await {
                            tracing::debug!(error = %e, "kubelet connection ended");
                        }
                    }
                    .in_current_span(),
                );
                return Ok((sender, addr));
            }
            Err(e) => {
                tracing::debug!(address = %addr, error = %e, "kubelet address unreachable");
                last = e;
            }
        }
    }
    Err(ApiError::internal(format!("error dialing backend: {last}")))
}

async fn dial(
    config: &KubeletClientConfig,
    host: &str,
    addr: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_rustls::TlsConnector::from(config.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {addr}: timeout"))?
    .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The kubelet's addresses (by [`PREFERRED_ADDRESS_TYPES`], without duplicates) and port.
pub fn kubelet_endpoints(node: &Value) -> (Vec<String>, u16) {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut hosts: Vec<String> = Vec::new();
    for kind in PREFERRED_ADDRESS_TYPES {
        for a in &addresses {
            if a.get("type").and_then(Value::as_str) != Some(kind) {
                continue;
            }
            if let Some(addr) = a.get("address").and_then(Value::as_str) {
                if !addr.is_empty() && !hosts.iter().any(|h| h == addr) {
                    hosts.push(addr.to_string());
                }
            }
        }
    }
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    (hosts, port)
}

fn node_name(pod: &Value) -> ApiResult<String> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                pod_name(pod)
            ))
        })
}

fn pod_name(pod: &Value) -> &str {
    pod.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn pod_namespace(pod: &Value) -> &str {
    pod.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Which request a default container is chosen for; the error texts differ upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFor {
    /// `pods/log` (`validateContainer`): lists init, regular and ephemeral containers.
    Logs,
    /// `pods/exec` and `pods/attach` (`streamLocation`): regular, then init containers.
    Stream,
}

/// The container a request means: the one named (which must exist in the pod), else the
/// only one; several without a name is an error naming them, as upstream.
pub fn pick_container(
    pod: &Value,
    requested: Option<&str>,
    purpose: ContainerFor,
) -> ApiResult<String> {
    let name = pod_name(pod);
    let regular = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    let ephemeral = container_names(pod, "ephemeralContainers");
    if let Some(c) = requested.filter(|c| !c.is_empty()) {
        if regular
            .iter()
            .chain(&init)
            .chain(&ephemeral)
            .any(|n| n == c)
        {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    match regular.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        _ => Err(ApiError::bad_request(match purpose {
            ContainerFor::Logs => {
                let all: Vec<&str> = init
                    .iter()
                    .chain(&regular)
                    .chain(&ephemeral)
                    .map(String::as_str)
                    .collect();
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )
            }
            ContainerFor::Stream => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    regular.join(" ")
                );
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                msg
            }
        })),
    }
}

fn query_pairs(call: &Call) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str(call.uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Go's `strconv.ParseBool`, as the API's query parameter conversion; absent or empty is false.
fn flag(pairs: &[(String, String)], key: &str) -> ApiResult<bool> {
    match last(pairs, key).unwrap_or("") {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        v => Err(ApiError::bad_request(format!(
            "invalid value for {key}: {v:?} is not a boolean"
        ))),
    }
}

fn int(pairs: &[(String, String)], key: &str) -> ApiResult<Option<i64>> {
    last(pairs, key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}")))
        })
        .transpose()
}

fn encode(params: &[(&str, String)]) -> ApiResult<String> {
    serde_urlencoded::to_string(params).map_err(|e| ApiError::internal(e.to_string()))
}

fn with_query(path: String, query: String) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// The kubelet path of a `pods/log` request: validated `PodLogOptions` carried over in the
/// kubelet's parameter names.
pub fn log_path(pod: &Value, pairs: &[(String, String)]) -> ApiResult<String> {
    let name = pod_name(pod);
    let pods = resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not a known resource"))?;
    let invalid = |field: &str, value: Value, detail: &str| {
        ApiError::invalid(
            "PodLogOptions",
            pods,
            name,
            &[FieldError::invalid(field, &value, detail)],
        )
    };
    let container = pick_container(pod, last(pairs, "container"), ContainerFor::Logs)?;
    let mut params: Vec<(&str, String)> = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if flag(pairs, key)? {
            params.push((key, "true".into()));
        }
    }
    flag(pairs, "insecureSkipTLSVerifyBackend")?;
    let since_seconds = int(pairs, "sinceSeconds")?;
    let since_time = last(pairs, "sinceTime").filter(|v| !v.is_empty());
    if since_seconds.is_some() && since_time.is_some() {
        return Err(invalid(
            "sinceSeconds",
            json!(since_seconds),
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if let Some(s) = since_seconds {
        if s < 1 {
            return Err(invalid("sinceSeconds", json!(s), "must be greater than 0"));
        }
        params.push(("sinceSeconds", s.to_string()));
    }
    if let Some(t) = since_time {
        let ts = t.parse::<jiff::Timestamp>().map_err(|e| {
            ApiError::bad_request(format!("invalid value for sinceTime: {t:?}: {e}"))
        })?;
        params.push(("sinceTime", ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    }
    if let Some(n) = int(pairs, "tailLines")? {
        if n < 0 {
            return Err(invalid(
                "tailLines",
                json!(n),
                "must be greater than or equal to 0",
            ));
        }
        params.push(("tailLines", n.to_string()));
    }
    if let Some(n) = int(pairs, "limitBytes")? {
        if n < 1 {
            return Err(invalid("limitBytes", json!(n), "must be greater than 0"));
        }
        params.push(("limitBytes", n.to_string()));
    }
    Ok(with_query(
        format!("/containerLogs/{}/{}/{container}", pod_namespace(pod), name),
        encode(&params)?,
    ))
}

/// The kubelet path of a `pods/exec` or `pods/attach` request, with `PodExecOptions` /
/// `PodAttachOptions` in the kubelet's parameter names (`input`, `output`, `error`, `tty`,
/// `command`), as kube-apiserver's `streamParams` writes them.
pub fn stream_path(pod: &Value, pairs: &[(String, String)], sub: &str) -> ApiResult<String> {
    let container = pick_container(pod, last(pairs, "container"), ContainerFor::Stream)?;
    let stdin = flag(pairs, "stdin")?;
    let stdout = flag(pairs, "stdout")?;
    let stderr = flag(pairs, "stderr")?;
    let tty = flag(pairs, "tty")?;
    let command: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.as_str())
        .collect();
    if sub == "exec" && command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let mut params: Vec<(&str, String)> = Vec::new();
    for (on, key) in [
        (stdin, "input"),
        (stdout, "output"),
        (stderr, "error"),
        (tty, "tty"),
    ] {
        if on {
            params.push((key, "1".into()));
        }
    }
    if sub == "exec" {
        params.extend(command.iter().map(|c| ("command", (*c).to_string())));
    }
    Ok(with_query(
        format!(
            "/{sub}/{}/{}/{container}",
            pod_namespace(pod),
            pod_name(pod)
        ),
        encode(&params)?,
    ))
}

/// The kubelet path of a `pods/portforward` request; `ports` (WebSocket clients name them in
/// the query) become the kubelet's `port`.
pub fn port_forward_path(pod: &Value, pairs: &[(String, String)]) -> ApiResult<String> {
    let mut params: Vec<(&str, String)> = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            let port = p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid port {p:?}")))?;
            params.push(("port", port.to_string()));
        }
    }
    Ok(with_query(
        format!("/portForward/{}/{}", pod_namespace(pod), pod_name(pod)),
        encode(&params)?,
    ))
}

async fn read_error_body(body: hyper::body::Incoming) -> String {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    match limited.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(e) => format!("(unreadable response: {e})"),
    }
}

/// A kubelet's error answer as the API error kube-apiserver makes of it
/// (`GenericHttpResponseChecker`): 400 keeps the kubelet's text, 404 is the generic not-found,
/// 500 an internal error.
pub fn kubelet_error(status: StatusCode, body: &str, pod: &str) -> ApiError {
    match status.as_u16() {
        400 => ApiError::bad_request(body),
        404 => ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ( pods/log {pod})"),
            details: Some(
                json!({"name": pod, "kind": "pods/log", "causes": [{"reason": "UnexpectedServerResponse", "message": body}]}),
            ),
        },
        500 => ApiError::internal(format!("Internal error occurred: {body}")),
        code => ApiError {
            code,
            reason: match code {
                401 => "Unauthorized",
                403 => "Forbidden",
                422 => "Invalid",
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                _ => "Unknown",
            },
            message: body.to_string(),
            details: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let list = |names: &[&str]| -> Value {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "busybox"}))
                .collect()
        };
        json!({
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {"nodeName": "n1", "containers": list(containers), "initContainers": list(init)},
        })
    }

    fn q(s: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(s).expect("query")
    }

    #[test]
    fn containers_default_to_the_only_one() {
        let one = pod(&["app"], &[]);
        assert_eq!(
            pick_container(&one, None, ContainerFor::Logs),
            Ok("app".into())
        );
        let two = pod(&["app", "side"], &["setup"]);
        assert_eq!(
            pick_container(&two, None, ContainerFor::Logs).map_err(|e| e.message),
            Err(
                "a container name must be specified for pod web, choose one of: [setup app side]"
                    .into()
            )
        );
        assert_eq!(
            pick_container(&two, None, ContainerFor::Stream).map_err(|e| e.message),
            Err("a container name must be specified for pod web, choose one of: [app side] or one of the init containers: [setup]".into())
        );
        assert_eq!(
            pick_container(&two, Some("setup"), ContainerFor::Stream),
            Ok("setup".into())
        );
        let err = pick_container(&two, Some("nope"), ContainerFor::Logs).expect_err("invalid");
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "container nope is not valid for pod web")
        );
    }

    #[test]
    fn log_options_become_kubelet_parameters() {
        let p = pod(&["app"], &[]);
        assert_eq!(
            log_path(&p, &q("follow=true&tailLines=10&timestamps=1&limitBytes=5")).expect("ok"),
            "/containerLogs/team/web/app?follow=true&timestamps=true&tailLines=10&limitBytes=5"
        );
        assert_eq!(
            log_path(
                &p,
                &q("sinceTime=2024-05-01T10:00:00.5%2B02:00&previous=true")
            )
            .expect("ok"),
            "/containerLogs/team/web/app?previous=true&sinceTime=2024-05-01T08%3A00%3A00Z"
        );
        assert_eq!(
            log_path(&p, &[]).expect("ok"),
            "/containerLogs/team/web/app"
        );
        let err = log_path(&p, &q("tailLines=-1")).expect_err("invalid");
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            log_path(&p, &q("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")).map_err(|e| e.code),
            Err(422)
        );
        assert_eq!(
            log_path(&p, &q("follow=perhaps")).map_err(|e| e.code),
            Err(400)
        );
    }

    #[test]
    fn exec_options_use_the_kubelet_names() {
        let p = pod(&["app"], &[]);
        assert_eq!(
            stream_path(
                &p,
                &q("command=sh&command=-c&command=echo+hi&stdout=true&stderr=true&container=app"),
                "exec"
            )
            .expect("ok"),
            "/exec/team/web/app?output=1&error=1&command=sh&command=-c&command=echo+hi"
        );
        assert_eq!(
            stream_path(&p, &q("stdin=true&tty=true&stdout=true"), "attach").expect("ok"),
            "/attach/team/web/app?input=1&output=1&tty=1"
        );
        assert_eq!(
            stream_path(&p, &q("stdout=true"), "exec").map_err(|e| e.message),
            Err("you must specify at least one command for the container".into())
        );
        assert_eq!(
            stream_path(&p, &q("command=ls"), "exec").map_err(|e| e.message),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );
        assert_eq!(
            port_forward_path(&p, &q("ports=8080&ports=80,443")).expect("ok"),
            "/portForward/team/web?port=8080&port=80&port=443"
        );
        assert!(port_forward_path(&p, &q("ports=x")).is_err());
    }

    #[test]
    fn node_addresses_in_preference_order() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "node-a"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "InternalIP", "address": "fd00::5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}},
        }});
        assert_eq!(
            kubelet_endpoints(&node),
            (
                vec![
                    "10.0.0.5".to_string(),
                    "fd00::5".into(),
                    "203.0.113.5".into(),
                    "node-a".into()
                ],
                11250
            )
        );
        assert_eq!(
            kubelet_endpoints(&json!({})),
            (vec![], DEFAULT_KUBELET_PORT)
        );
        assert_eq!(join_host_port("fd00::5", 10250), "[fd00::5]:10250");
        assert_eq!(
            node_name(&json!({"metadata": {"name": "p"}, "spec": {}})).map_err(|e| e.message),
            Err("pod p does not have a host assigned".into())
        );
    }

    #[test]
    fn kubelet_errors_map_like_upstream() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            "container \"a\" in pod \"p\" is waiting to start: ContainerCreating",
            "p",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(e.message.starts_with("container \"a\""));
        let e = kubelet_error(StatusCode::NOT_FOUND, "pod \"p\" does not exist", "p");
        assert_eq!(
            e.message,
            "the server could not find the requested resource ( pods/log p)"
        );
        let e = kubelet_error(StatusCode::INTERNAL_SERVER_ERROR, "boom", "p");
        assert_eq!(e.message, "Internal error occurred: boom");
        assert_eq!(
            kubelet_error(StatusCode::FORBIDDEN, "no", "p").reason,
            "Forbidden"
        );
    }

    #[test]
    fn forwarded_headers_drop_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        h.insert("impersonate-user", HeaderValue::from_static("root"));
        let out = forwarded_headers(&h, "10.0.0.5:10250");
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get("impersonate-user").is_none());
        assert_eq!(out.get_all("x-stream-protocol-version").iter().count(), 2);
        assert_eq!(
            out.get(header::UPGRADE),
            Some(&HeaderValue::from_static("SPDY/3.1"))
        );
        assert_eq!(
            out.get(header::HOST),
            Some(&HeaderValue::from_static("10.0.0.5:10250"))
        );
        assert!(KubeletClientConfig::new(None).is_ok());
    }
}
