//! `/exec`, `/attach` and `/portForward`: the runtime prepares the session (CRI `Exec`,
//! `Attach`, `PortForward` return a URL of its streaming server) and the client's HTTP
//! upgrade (SPDY/3.1 or WebSocket) is proxied there unchanged, as upstream's kubelet does
//! (pkg/kubelet/server/server.go `proxyStream`). The protocol inside is between the client and
//! the runtime; a refused upgrade (for instance a WebSocket subprotocol the runtime does not
//! speak) goes back to the client as the runtime answered it, so the client can fall back.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use oxlet_cri::api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::logs::{parse_bool, percent_decode};
use super::lookup::{self, LookupError};
use super::{HttpError, Shared};

/// Connecting to the runtime's streaming server must not take longer.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Query parameters of `/exec` and `/attach`, with upstream's names (`input`, `output`,
/// `error`, `tty`, `command`; `stdin`/`stdout`/`stderr` are accepted as well).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Attach the client's stdin.
    pub stdin: bool,
    /// Send stdout.
    pub stdout: bool,
    /// Send stderr.
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// The command (exec only).
    pub command: Vec<String>,
}

impl StreamOptions {
    /// Parses and checks a query as upstream's `remotecommand.NewOptions` does: a terminal
    /// merges stderr into stdout, and at least one stream is needed.
    pub fn from_query(query: Option<&str>) -> Result<Self, String> {
        let mut opts = StreamOptions::default();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(k)?;
            let value = percent_decode(v)?;
            match key.as_str() {
                "input" | "stdin" => opts.stdin = parse_bool(&key, &value)?,
                "output" | "stdout" => opts.stdout = parse_bool(&key, &value)?,
                "error" | "stderr" => opts.stderr = parse_bool(&key, &value)?,
                "tty" => opts.tty = parse_bool(&key, &value)?,
                "command" => opts.command.push(value),
                _ => {}
            }
        }
        if opts.tty && opts.stderr {
            opts.stderr = false;
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(opts)
    }
}

/// The ports of a `/portForward` query (`port`, repeated; WebSocket clients name them here,
/// SPDY clients in each stream's headers).
pub fn ports_from_query(query: Option<&str>) -> Result<Vec<i32>, String> {
    let mut ports = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if matches!(percent_decode(k)?.as_str(), "port" | "ports") {
            for p in percent_decode(v)?.split(',').filter(|p| !p.is_empty()) {
                let port = p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid port {p:?}"))?;
                ports.push(i32::from(port));
            }
        }
    }
    Ok(ports)
}

/// What a streaming request asks the runtime for.
pub(crate) enum Session {
    /// `/exec/{ns}/{pod}/{container}`.
    Exec,
    /// `/attach/{ns}/{pod}/{container}`.
    Attach,
}

/// Handles `/exec` and `/attach`.
pub(crate) async fn exec_or_attach(
    shared: &Shared,
    kind: Session,
    namespace: &str,
    pod: &str,
    container: &str,
    req: Request<Body>,
) -> Result<Response, HttpError> {
    let opts = StreamOptions::from_query(req.uri().query()).map_err(HttpError::bad_request)?;
    if matches!(kind, Session::Exec) && opts.command.is_empty() {
        return Err(HttpError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !is_upgrade(&req) {
        return Err(HttpError::bad_request("Upgrade request required"));
    }
    let runtime = shared.runtime.as_ref();
    let sandbox = lookup::find_sandbox(runtime, namespace, pod)
        .await
        .map_err(HttpError::runtime)?
        .ok_or_else(|| HttpError::not_found("pod does not exist"))?;
    let instances = lookup::container_instances(runtime, &sandbox, container)
        .await
        .map_err(HttpError::runtime)?;
    let target = lookup::pick_running(&instances, container).map_err(|e| match e {
        LookupError::NotRunning { .. } => HttpError::internal(e.to_string()),
        other => HttpError::bad_request(other.to_string()),
    })?;
    let url = match kind {
        Session::Exec => {
            runtime
                .exec(api::ExecRequest {
                    container_id: target.id.clone(),
                    cmd: opts.command.clone(),
                    tty: opts.tty,
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                })
                .await
        }
        Session::Attach => {
            runtime
                .attach(api::AttachRequest {
                    container_id: target.id.clone(),
                    stdin: opts.stdin,
                    tty: opts.tty,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                })
                .await
        }
    }
    .map_err(HttpError::runtime)?;
    proxy_upgrade(req, &url, &shared.tasks, &shared.cancel).await
}

/// Handles `/portForward/{ns}/{pod}`.
pub(crate) async fn port_forward(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
    req: Request<Body>,
) -> Result<Response, HttpError> {
    let ports = ports_from_query(req.uri().query()).map_err(HttpError::bad_request)?;
    if !is_upgrade(&req) {
        return Err(HttpError::bad_request("Upgrade request required"));
    }
    let runtime = shared.runtime.as_ref();
    let sandbox = lookup::find_sandbox(runtime, namespace, pod)
        .await
        .map_err(HttpError::runtime)?
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .ok_or_else(|| HttpError::not_found("pod does not exist"))?;
    if let Some(uid) = uid {
        if sandbox.metadata.as_ref().is_some_and(|m| m.uid != uid) {
            return Err(HttpError::not_found("pod not found"));
        }
    }
    let url = runtime
        .port_forward(&sandbox.id, &ports)
        .await
        .map_err(HttpError::runtime)?;
    proxy_upgrade(req, &url, &shared.tasks, &shared.cancel).await
}

/// Whether the request asks to switch protocols (`Connection: upgrade` and an `Upgrade`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

/// Sends `req` to `url` (the runtime's streaming server, plain HTTP) and answers with the
/// runtime's response; on `101 Switching Protocols` both connections are joined byte for
/// byte in a task of `tasks` until either side closes or `cancel` fires.
pub(crate) async fn proxy_upgrade(
    mut req: Request<Body>,
    url: &str,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<Response, HttpError> {
    let backend: Uri = url
        .parse()
        .map_err(|e| HttpError::internal(format!("runtime streaming URL {url:?}: {e}")))?;
    if backend.scheme_str() != Some("http") {
        return Err(HttpError::internal(format!(
            "runtime streaming URL {url:?}: only http is supported"
        )));
    }
    let authority = backend
        .authority()
        .ok_or_else(|| HttpError::internal(format!("runtime streaming URL {url:?} has no host")))?
        .clone();
    let host_port = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.host()),
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let tcp = tokio::time::timeout(
        BACKEND_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&host_port),
    )
    .await
    .map_err(|_| HttpError::internal(format!("error dialing backend: {host_port}: timed out")))?
    .map_err(|e| {
        HttpError::internal(format!("error dialing backend: dial tcp {host_port}: {e}"))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| HttpError::internal(format!("error dialing backend: {e}")))?;
    tasks.spawn(
        async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "runtime streaming connection ended");
            }
        }
        .in_current_span(),
    );

    let path = backend
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| HttpError::internal(e.to_string()))?;
    for (name, value) in req.headers() {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        out.headers_mut().append(name.clone(), value.clone());
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        out.headers_mut().insert(header::HOST, host);
    }
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| HttpError::internal(format!("error proxying to the runtime: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::debug!(status = %resp.status(), "runtime refused the upgrade");
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let cancel = cancel.clone();
    tasks.spawn(
        async move {
            let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut backend) => match r {
                    Ok((up, down)) => tracing::debug!(up, down, "stream closed"),
                    Err(e) => tracing::debug!(error = %e, "stream ended with an error"),
                },
                _ = cancel.cancelled() => {}
            }
        }
        .in_current_span(),
    );
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::empty()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_options_use_upstream_names() {
        let o = StreamOptions::from_query(Some(
            "command=cat&command=%2Fetc%2Fhostname&input=1&output=1&error=1",
        ))
        .expect("valid");
        assert_eq!(
            o,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
                command: vec!["cat".into(), "/etc/hostname".into()],
            }
        );
        let o = StreamOptions::from_query(Some("stdout=true&stderr=true&tty=true&command=sh"))
            .expect("valid");
        assert!(o.stdout && o.tty && !o.stderr, "{o:?}");
        assert_eq!(
            StreamOptions::from_query(Some("command=ls")),
            Err("you must specify at least 1 of stdin, stdout, stderr".to_string())
        );
    }

    #[test]
    fn ports_accept_repeats_and_lists() {
        assert_eq!(
            ports_from_query(Some("port=80&port=8080,9090")),
            Ok(vec![80, 8080, 9090])
        );
        assert_eq!(ports_from_query(None), Ok(vec![]));
        assert!(ports_from_query(Some("port=0")).is_err());
        assert!(ports_from_query(Some("port=http")).is_err());
    }

    #[test]
    fn detects_upgrades() {
        let req = |conn: &str, upgrade: Option<&str>| {
            let mut b = Request::builder().header(header::CONNECTION, conn);
            if let Some(u) = upgrade {
                b = b.header(header::UPGRADE, u);
            }
            b.body(()).expect("request")
        };
        assert!(is_upgrade(&req("Upgrade", Some("SPDY/3.1"))));
        assert!(is_upgrade(&req("keep-alive, upgrade", Some("websocket"))));
        assert!(!is_upgrade(&req("keep-alive", Some("websocket"))));
        assert!(!is_upgrade(&req("Upgrade", None)));
    }
}
