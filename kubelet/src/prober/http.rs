//! The HTTP GET client behind httpGet probes and httpGet lifecycle hooks, as upstream
//! pkg/probe/http: one request per connection, `User-Agent: kube-<purpose>/1.33` and
//! `Accept: */*` unless the spec sets them, HTTPS without certificate verification, redirects
//! followed only to the same host (at most 10), and at most 10 KiB of body read.
//!
//! Error messages are shaped like Go's `net/http` ones (`Get "http://...": dial tcp ...:
//! connect: connection refused`), because users compare them with upstream's events.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{resolve_port, ProbeError, KUBE_VERSION};

/// Upstream reads at most this much of a probe response (maxRespBodyLength).
pub(crate) const MAX_BODY: usize = 10 * 1024;

/// Go's http.Client gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// One GET to run: where, what and with which extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpGet {
    /// `http` or `https` (lower case); anything else fails at request time as in Go.
    pub scheme: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers from the spec, in order; may override User-Agent, Accept and Host.
    pub headers: Vec<(String, String)>,
}

/// A response: status and at most [`MAX_BODY`] bytes of body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The start of the body.
    pub body: Bytes,
}

impl Response {
    /// The body as text, as upstream puts it in messages.
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HttpGet {
    /// The request an httpGet action describes, as upstream NewRequestForHTTPGetAction: host
    /// defaults to the pod IP, the port may be a container port name.
    pub(crate) fn from_action(
        action: &HTTPGetAction,
        container: &Container,
        pod_ip: Option<&str>,
    ) -> Result<Self, ProbeError> {
        let scheme = match action.scheme.as_deref() {
            None | Some("") => "http".to_string(),
            Some(s) => s.to_ascii_lowercase(),
        };
        let host = match action.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => match pod_ip {
                Some(ip) if !ip.is_empty() => ip.to_string(),
                _ => return Err(ProbeError::NoPodIp),
            },
        };
        let port = resolve_port(&action.port, container)?;
        let headers = action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        Ok(Self {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: normalize_path(action.path.as_deref().unwrap_or("")),
            headers,
        })
    }

    /// The URL, as Go prints it in errors.
    pub(crate) fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            authority(&self.host, self.port),
            self.path
        )
    }
}

/// `host:port`, with brackets around IPv6 addresses (Go's net.JoinHostPort).
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A path that is valid in a request line: leading `/`, no fragment, and bytes a URI cannot
/// carry percent-encoded (Go's url.URL does the same when it prints the request).
fn normalize_path(path: &str) -> String {
    let path = path.split('#').next().unwrap_or("");
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

type Headers = Vec<(HeaderName, HeaderValue)>;

/// The headers every request of one GET carries, built once (Go's newProbeRequest):
/// spec headers, then the default User-Agent and Accept unless the spec has them; an empty
/// Accept removes it. The Host header goes separately, since it may not survive a redirect.
fn request_headers(get: &HttpGet, purpose: &str) -> Result<(Headers, Option<HeaderValue>), String> {
    let mut out = Vec::new();
    let mut host = None;
    let mut has_ua = false;
    let mut accept: Option<bool> = None; // Some(non_empty) if the spec sets Accept
    for (name, value) in &get.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("net/http: invalid header field name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("net/http: invalid header field value for {name:?}"))?;
        if name == HOST {
            host = Some(value);
            continue;
        }
        if name == USER_AGENT {
            has_ua = true;
        }
        if name == ACCEPT {
            let non_empty = !value.is_empty();
            accept = Some(accept.unwrap_or(false) || non_empty);
            if !non_empty {
                continue;
            }
        }
        out.push((name, value));
    }
    if !has_ua {
        let ua = format!("kube-{purpose}/{KUBE_VERSION}");
        let ua = HeaderValue::from_str(&ua).map_err(|e| e.to_string())?;
        out.push((USER_AGENT, ua));
    }
    if accept.is_none() {
        out.push((ACCEPT, HeaderValue::from_static("*/*")));
    }
    // Go's User-Agent with an empty value is not sent at all.
    out.retain(|(n, v)| !(n == USER_AGENT && v.is_empty()));
    Ok((out, host))
}

/// Runs the GET within `timeout` (connects, redirects and body included). `purpose` is `probe`
/// or `lifecycle` (the User-Agent's `kube-<purpose>`). `Err` is a Go-shaped message.
pub(crate) async fn get(
    get: &HttpGet,
    purpose: &str,
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let (headers, mut host_override) =
        request_headers(get, purpose).map_err(|e| format!("Get {:?}: {e}", get.url()))?;
    let first_host = get.host.to_ascii_lowercase();
    let mut target = get.clone();
    let mut redirects = 0;
    loop {
        let url = target.url();
        let once = fetch_once(&target, &headers, host_override.as_ref());
        let (resp, location) = match tokio::time::timeout_at(deadline, once).await {
            Err(_) => {
                return Err(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                ))
            }
            Ok(Err(e)) => return Err(format!("Get {url:?}: {e}")),
            Ok(Ok(r)) => r,
        };
        let Some(location) = location.filter(|_| is_redirect(resp.status)) else {
            return Ok(resp);
        };
        let Some((next, absolute)) = resolve_location(&target, &location) else {
            return Err(format!(
                "Get {url:?}: failed to parse Location header {location:?}"
            ));
        };
        // Upstream's RedirectChecker: another host ends the chain with this response, which
        // the probe then reports as a warning.
        if next.host.to_ascii_lowercase() != first_host {
            return Ok(resp);
        }
        if redirects >= MAX_REDIRECTS {
            return Err(format!(
                "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
                next.url()
            ));
        }
        redirects += 1;
        // As Go: a custom Host header survives only relative redirects.
        if absolute {
            host_override = None;
        }
        target = next;
    }
}

/// The status codes Go's client follows.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Resolves a Location header against the current request; the flag says whether it was an
/// absolute URL. `None` for what Go would not follow either (unparsable, other schemes).
fn resolve_location(current: &HttpGet, location: &str) -> Option<(HttpGet, bool)> {
    let location = location.split('#').next().unwrap_or("").trim();
    let absolute = if let Some(rest) = location.strip_prefix("//") {
        Some(format!("{}://{rest}", current.scheme))
    } else if location.contains("://") {
        Some(location.to_string())
    } else {
        None
    };
    if let Some(abs) = absolute {
        let uri: http::Uri = abs.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        return Some((
            HttpGet {
                scheme,
                host,
                port: uri.port_u16().unwrap_or(default_port),
                path: normalize_path(path),
                headers: current.headers.clone(),
            },
            true,
        ));
    }
    let base_path = current.path.split('?').next().unwrap_or("/");
    let path = if location.starts_with('/') {
        location.to_string()
    } else if location.starts_with('?') {
        format!("{base_path}{location}")
    } else {
        let dir = match base_path.rfind('/') {
            Some(i) => &base_path[..=i],
            None => "/",
        };
        format!("{dir}{location}")
    };
    Some((
        HttpGet {
            path: normalize_path(&path),
            ..current.clone()
        },
        false,
    ))
}

/// One request on a fresh connection; returns the response and its Location header.
async fn fetch_once(
    target: &HttpGet,
    headers: &[(HeaderName, HeaderValue)],
    host_override: Option<&HeaderValue>,
) -> Result<(Response, Option<String>), String> {
    if target.scheme != "http" && target.scheme != "https" {
        return Err(format!("unsupported protocol scheme {:?}", target.scheme));
    }
    let addr = authority(&target.host, target.port);
    let host_value = match host_override {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(&addr).map_err(|e| e.to_string())?,
    };
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(target.path.as_str())
        .header(HOST, host_value);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    // One request per connection, as upstream's probe transport (DisableKeepAlives).
    let req = builder
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;

    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| dial_error(&addr, &e))?;
    if target.scheme == "https" {
        let config = insecure_tls_config()?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("tls: invalid server name {:?}: {e}", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(tls, req).await
    } else {
        exchange(tcp, req).await
    }
}

/// Sends `req` over HTTP/1.1 on `io` and reads the head and the start of the body.
async fn exchange<S>(
    io: S,
    req: Request<Empty<Bytes>>,
) -> Result<(Response, Option<String>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let work = async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let location = parts
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_limited(body, MAX_BODY).await?;
        Ok::<_, String>((
            Response {
                status: parts.status.as_u16(),
                body,
            },
            location,
        ))
    };
    tokio::pin!(work);
    tokio::pin!(conn);
    // The connection future moves the bytes; drive it beside the request instead of spawning.
    tokio::select! {
        r = &mut work => r,
        c = &mut conn => match c {
            Err(e) => Err(e.to_string()),
            Ok(()) => work.await,
        },
    }
}

/// Reads at most `limit` bytes of `body`; the rest is left unread (the connection is dropped).
pub(crate) async fn read_limited<B>(mut body: B, limit: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    buf.truncate(limit);
    Ok(buf.freeze())
}

/// `dial tcp <addr>: connect: connection refused`, as Go words a failed connect.
pub(crate) fn dial_error(addr: &str, e: &std::io::Error) -> String {
    format!("dial tcp {addr}: connect: {}", go_io_message(e))
}

/// The OS error text without Rust's `(os error N)` suffix, lower-cased like Go's.
pub(crate) fn go_io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether `status` is 2xx or 3xx.
pub(crate) fn is_ok_status(status: u16) -> bool {
    StatusCode::from_u16(status)
        .map(|s| s.is_success() || s.is_redirection())
        .unwrap_or(false)
}

/// TLS that checks the handshake signatures but not the certificate chain or name, as upstream
/// probes run with InsecureSkipVerify: pods serve self-signed certificates.
fn insecure_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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
        cert: &rustls::pki_types::CertificateDer<'_>,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
mod tests {
    use super::*;

    fn target(path: &str) -> HttpGet {
        HttpGet {
            scheme: "http".into(),
            host: "10.0.0.1".into(),
            port: 8080,
            path: normalize_path(path),
            headers: vec![],
        }
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("healthz"), "/healthz");
        assert_eq!(normalize_path("/a b?x=1#frag"), "/a%20b?x=1");
        assert_eq!(target("/x").url(), "http://10.0.0.1:8080/x");
        assert_eq!(authority("fd00::1", 80), "[fd00::1]:80");
    }

    #[test]
    fn locations_resolve_like_go() {
        let cur = target("/a/b?q=1");
        let (n, abs) = resolve_location(&cur, "/c").unwrap();
        assert_eq!((n.url(), abs), ("http://10.0.0.1:8080/c".into(), false));
        let (n, _) = resolve_location(&cur, "d").unwrap();
        assert_eq!(n.url(), "http://10.0.0.1:8080/a/d");
        let (n, _) = resolve_location(&cur, "?z").unwrap();
        assert_eq!(n.url(), "http://10.0.0.1:8080/a/b?z");
        let (n, abs) = resolve_location(&cur, "https://other.example/x").unwrap();
        assert_eq!((n.url(), abs), ("https://other.example:443/x".into(), true));
        let (n, _) = resolve_location(&cur, "//10.0.0.1:9/y").unwrap();
        assert_eq!(n.url(), "http://10.0.0.1:9/y");
        assert!(resolve_location(&cur, "ftp://x/").is_none());
    }

    #[test]
    fn default_and_overridden_headers() {
        let mut get = target("/");
        let (h, host) = request_headers(&get, "probe").unwrap();
        assert!(host.is_none());
        assert!(h.contains(&(USER_AGENT, HeaderValue::from_static("kube-probe/1.33"))));
        assert!(h.contains(&(ACCEPT, HeaderValue::from_static("*/*"))));

        get.headers = vec![
            ("user-agent".into(), "mine".into()),
            ("Accept".into(), "".into()),
            ("Host".into(), "example.com".into()),
            ("X-Custom".into(), "1".into()),
        ];
        let (h, host) = request_headers(&get, "lifecycle").unwrap();
        assert_eq!(host, Some(HeaderValue::from_static("example.com")));
        assert!(!h.iter().any(|(n, _)| n == ACCEPT));
        let ua: Vec<_> = h.iter().filter(|(n, _)| n == USER_AGENT).collect();
        assert_eq!(ua.len(), 1);
        assert_eq!(ua[0].1, "mine");

        get.headers = vec![("bad header".into(), "x".into())];
        assert!(request_headers(&get, "probe").is_err());
    }

    #[test]
    fn io_messages_like_go() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let raw = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            dial_error("127.0.0.1:1", &raw),
            "dial tcp 127.0.0.1:1: connect: connection refused"
        );
        assert!(!go_io_message(&e).is_empty());
    }
}
