//! The kubelet's HTTPS server against a real private containerd: container logs (whole, tail,
//! limit, timestamps, since, follow until exit, previous instance, joined partial lines),
//! exec (output, exit codes, stdin), attach and port-forward proxied to containerd's
//! streaming server over WebSocket (`v4.channel.k8s.io`, which containerd 1.6 speaks), the
//! refusal kubectl relies on to fall back to SPDY, client certificates, and error texts.
//!
//! Pods are created directly through CRI with the kubelet's labels, as the kubelet would.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use oxlet_cri::{api, RuntimeService};
use oxlet_e2e::images::{BUSYBOX_REF, ECHOSERVER_PORT, ECHOSERVER_REF};
use oxlet_e2e::runtime_env::{
    container_config, exited, run_container, running, wait_container, EnvOptions, RuntimeEnv,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use support::{label_container, label_sandbox, NetnsKubelet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// Accepts any server certificate: the tests talk to a self-signed kubelet, as
/// kube-apiserver does without `--kubelet-certificate-authority`.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
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

/// An HTTPS client of the kubelet (HTTP/1.1, one connection per request).
struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(
        addr: SocketAddr,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
        let tls = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            addr,
            tls: Arc::new(tls),
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await
            .context("TLS handshake with the kubelet")?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn.with_upgrades());
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?)
    }

    /// GET `path`: status and whole body.
    async fn get(&self, path: &str) -> Result<(StatusCode, String)> {
        let resp = self.send("GET", path, &[]).await?;
        let status = resp.status();
        let body = tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .with_context(|| format!("GET {path}: body did not end"))??
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Opens a WebSocket on `path` offering `protocol`; the refusal (status, body) otherwise.
    async fn websocket(
        &self,
        path: &str,
        protocol: &str,
    ) -> Result<std::result::Result<Ws, (StatusCode, String)>> {
        let mut resp = self
            .send(
                "GET",
                path,
                &[
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-protocol", protocol),
                ],
            )
            .await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let body = tokio::time::timeout(WAIT, resp.into_body().collect())
                .await
                .context("refusal body did not end")??
                .to_bytes();
            return Ok(Err((status, String::from_utf8_lossy(&body).into_owned())));
        }
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(chosen, protocol, "negotiated subprotocol");
        let upgraded = hyper::upgrade::on(&mut resp).await?;
        Ok(Ok(Ws {
            io: TokioIo::new(upgraded),
        }))
    }
}

/// Just enough of a WebSocket client for the `channel.k8s.io` protocols: each binary message
/// starts with its channel number (0 stdin, 1 stdout, 2 stderr, 3 error/status).
struct Ws {
    io: TokioIo<hyper::upgrade::Upgraded>,
}

impl Ws {
    async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        self.frame(0x2, &payload).await
    }

    /// A client frame: FIN, opcode, masked payload (RFC 6455 requires clients to mask).
    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next data message, `None` once the server closed.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let mut head = [0u8; 2];
            if let Err(e) = self.io.read_exact(&mut head).await {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    return Ok(None);
                }
                return Err(e.into());
            }
            let opcode = head[0] & 0x0f;
            let len = match head[1] & 0x7f {
                126 => u64::from(self.io.read_u16().await?),
                127 => self.io.read_u64().await?,
                n => u64::from(n),
            };
            if head[1] & 0x80 != 0 {
                bail!("server frames must not be masked");
            }
            let mut payload = vec![0u8; usize::try_from(len)?];
            self.io.read_exact(&mut payload).await?;
            match opcode {
                0x8 => return Ok(None),
                0x9 => self.frame(0xA, &payload).await?,
                0x1 | 0x2 => return Ok(Some(payload)),
                _ => {}
            }
        }
    }

    /// Reads until the server closes; the bytes per channel.
    async fn collect(mut self) -> Result<HashMap<u8, Vec<u8>>> {
        let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
        tokio::time::timeout(WAIT, async {
            while let Some(msg) = self.recv().await? {
                if let Some((ch, data)) = msg.split_first() {
                    out.entry(*ch).or_default().extend_from_slice(data);
                }
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
        .context("stream did not close")??;
        Ok(out)
    }

    /// Reads until channel `ch` has received text containing `want`.
    async fn read_until(&mut self, ch: u8, want: &str) -> Result<Vec<u8>> {
        let mut seen = Vec::new();
        tokio::time::timeout(WAIT, async {
            while !String::from_utf8_lossy(&seen).contains(want) {
                match self.recv().await? {
                    Some(msg) if msg.first() == Some(&ch) => seen.extend_from_slice(&msg[1..]),
                    Some(_) => {}
                    None => bail!(
                        "closed before {want:?}; got {:?}",
                        String::from_utf8_lossy(&seen)
                    ),
                }
            }
            Ok(())
        })
        .await
        .with_context(|| format!("waiting for {want:?} on channel {ch}"))??;
        Ok(seen)
    }
}

fn text(map: &HashMap<u8, Vec<u8>>, ch: u8) -> String {
    String::from_utf8_lossy(map.get(&ch).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// Starts pod `name` with the kubelet's labels; returns its sandbox ID and config.
async fn start_pod(env: &RuntimeEnv, name: &str) -> Result<(String, api::PodSandboxConfig)> {
    let config = label_sandbox(env.pod_config(name)?);
    let id = env.cri.run_pod_sandbox(&config, "").await?;
    Ok((id, config))
}

fn sh(name: &str, image: &str, script: &str) -> api::ContainerConfig {
    container_config(name, image, &["sh", "-c", script])
}

/// Reads a streamed body until everything received so far ends with `want`.
async fn read_body_until(body: &mut Incoming, got: &mut Vec<u8>, want: &str) -> Result<()> {
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(got).ends_with(want) {
            match body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                None => bail!("stream ended early: {:?}", String::from_utf8_lossy(got)),
            }
        }
        Ok(())
    })
    .await
    .context("follow did not deliver")?
}

fn xline() -> String {
    "x".repeat(20_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs() -> Result<()> {
    let env = RuntimeEnv::start("klogs", EnvOptions::default()).await?;
    let kubelet = NetnsKubelet::start(&env, None)?;
    let client = Client::new(kubelet.host_addr, None)?;
    let (sandbox, pod) = start_pod(&env, "logs").await?;
    // A line longer than containerd's 16 KiB buffer is written as partial (P) records.
    let first = label_container(
        sh(
            "app",
            BUSYBOX_REF,
            "echo one; echo two; head -c 20000 /dev/zero | tr '\\0' x; echo; \
             while [ ! -e /tmp/go ]; do sleep 0.1; done; echo three; exit 3",
        ),
        &pod,
        0,
    );
    let first_id = run_container(&env.cri, &sandbox, &pod, &first).await?;
    let x = xline();
    let before_go = format!("one\ntwo\n{x}\n");
    let base = "/containerLogs/default/logs/app";

    // The whole log, once the container wrote it.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = client.get(base).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body == before_go {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "log never became complete; last: {:?}",
                &body[..body.len().min(200)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = std::fs::read_to_string(
        env.scratch
            .path()
            .join("pods")
            .join(&pod.metadata.as_ref().context("metadata")?.uid)
            .join("app/0.log"),
    )?;
    assert!(
        raw.contains(" stdout P "),
        "the long line was not split: {raw:.300}"
    );

    // tailLines counts the joined line once.
    assert_eq!(
        client.get(&format!("{base}?tailLines=1")).await?,
        (StatusCode::OK, format!("{x}\n"))
    );
    assert_eq!(
        client.get(&format!("{base}?tailLines=2")).await?,
        (StatusCode::OK, format!("two\n{x}\n"))
    );
    assert_eq!(
        client.get(&format!("{base}?limitBytes=6")).await?,
        (StatusCode::OK, "one\ntw".to_string())
    );
    let (_, stamped) = client.get(&format!("{base}?timestamps=true")).await?;
    let mut unstamped = String::new();
    for line in stamped.lines() {
        let (ts, rest) = line.split_once(' ').context("timestamp prefix")?;
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000000000Z".len(), "{ts}");
        ts.parse::<jiff::Timestamp>()
            .with_context(|| format!("{ts} is not RFC3339"))?;
        unstamped.push_str(rest);
        unstamped.push('\n');
    }
    assert_eq!(unstamped, before_go);
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert_eq!(
        client
            .get(&format!(
                "{base}?sinceTime={}",
                future.strftime("%Y-%m-%dT%H:%M:%SZ")
            ))
            .await?,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        client.get(&format!("{base}?sinceSeconds=3600")).await?,
        (StatusCode::OK, before_go.clone())
    );
    assert_eq!(
        client.get(&format!("{base}?tailLines=-1")).await?.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Follow: what is there, then what comes, then the end when the container exits.
    let resp = client
        .send("GET", &format!("{base}?follow=true"), &[])
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    read_body_until(&mut body, &mut got, &before_go).await?;
    let go = env
        .cri
        .exec_sync(
            &first_id,
            &["touch".to_string(), "/tmp/go".to_string()],
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(go.exit_code, 0);
    read_body_until(&mut body, &mut got, &format!("{before_go}three\n")).await?;
    let end = tokio::time::timeout(WAIT, body.frame())
        .await
        .context("follow did not end after the container exited")?;
    assert!(end.is_none(), "unexpected data after exit: {end:?}");
    wait_container(&env.cri, &first_id, "exited", exited).await?;

    // No earlier instance yet.
    assert_eq!(
        client.get(&format!("{base}?previous=true")).await?,
        (
            StatusCode::BAD_REQUEST,
            "previous terminated container \"app\" in pod \"logs\" not found".to_string()
        )
    );
    // A restart: the new instance is current, the first one is previous.
    let second = label_container(
        sh("app", BUSYBOX_REF, "echo second; echo second-err >&2"),
        &pod,
        1,
    );
    let second_id = run_container(&env.cri, &sandbox, &pod, &second).await?;
    wait_container(&env.cri, &second_id, "exited", exited).await?;
    let (status, current) = client.get(base).await?;
    assert_eq!(status, StatusCode::OK);
    let mut lines: Vec<&str> = current.lines().collect();
    lines.sort();
    assert_eq!(lines, ["second", "second-err"], "{current:?}");
    assert_eq!(
        client.get(&format!("{base}?previous=true")).await?,
        (StatusCode::OK, format!("{before_go}three\n"))
    );

    // Upstream's error texts.
    assert_eq!(
        client.get("/containerLogs/default/nope/app").await?,
        (
            StatusCode::NOT_FOUND,
            "pod \"nope\" does not exist".to_string()
        )
    );
    assert_eq!(
        client.get("/containerLogs/default/logs/sidecar").await?,
        (
            StatusCode::BAD_REQUEST,
            "container \"sidecar\" in pod \"logs\" is waiting to start: ContainerCreating"
                .to_string()
        )
    );
    let (status, pods) = client.get("/pods").await?;
    assert_eq!(status, StatusCode::OK);
    let pods: serde_json::Value = serde_json::from_str(&pods)?;
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|p| p["metadata"]["name"] == "logs")),
        "{pods}"
    );
    assert_eq!(
        client.get("/healthz").await?,
        (StatusCode::OK, "ok".to_string())
    );

    // Rotation while following: the kubelet renames the file and asks the runtime to
    // reopen it; the follower carries on in the new file.
    let talker = label_container(
        sh(
            "talker",
            BUSYBOX_REF,
            "while [ ! -e /tmp/stop ]; do \
               if [ -e /tmp/say ]; then cat /tmp/say; rm /tmp/say; fi; sleep 0.1; \
             done",
        ),
        &pod,
        0,
    );
    let talker_id = run_container(&env.cri, &sandbox, &pod, &talker).await?;
    let say = |text: &str| {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("echo {text} > /tmp/say.new && mv /tmp/say.new /tmp/say"),
        ];
        let cri = &env.cri;
        let id = talker_id.clone();
        async move {
            let r = cri.exec_sync(&id, &cmd, Duration::from_secs(30)).await?;
            anyhow::ensure!(r.exit_code == 0, "exec failed: {r:?}");
            Ok::<_, anyhow::Error>(())
        }
    };
    let resp = client
        .send("GET", "/containerLogs/default/logs/talker?follow=true", &[])
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    say("before").await?;
    read_body_until(&mut body, &mut got, "before\n").await?;
    let log = env
        .cri
        .container_status(&talker_id, false)
        .await?
        .status
        .context("status")?
        .log_path;
    std::fs::rename(&log, format!("{log}.20240101-000000"))?;
    env.cri.reopen_container_log(&talker_id).await?;
    say("after").await?;
    read_body_until(&mut body, &mut got, "before\nafter\n").await?;
    // Only the current file is read when not following, as upstream.
    assert_eq!(
        client.get("/containerLogs/default/logs/talker").await?,
        (StatusCode::OK, "after\n".to_string())
    );
    env.cri
        .exec_sync(
            &talker_id,
            &["touch".to_string(), "/tmp/stop".to_string()],
            Duration::from_secs(30),
        )
        .await?;
    let end = tokio::time::timeout(WAIT, body.frame())
        .await
        .context("follow did not end after the container exited")?;
    assert!(end.is_none(), "unexpected data after exit: {end:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward() -> Result<()> {
    let env = RuntimeEnv::start("kexec", EnvOptions::default()).await?;
    let kubelet = NetnsKubelet::start(&env, None)?;
    let client = Client::new(kubelet.host_addr, None)?;
    let (sandbox, pod) = start_pod(&env, "echo").await?;
    let web = label_container(container_config("web", ECHOSERVER_REF, &[]), &pod, 0);
    let web_id = run_container(&env.cri, &sandbox, &pod, &web).await?;
    let mut reader = label_container(
        sh("reader", BUSYBOX_REF, "while read l; do echo got:$l; done"),
        &pod,
        0,
    );
    reader.stdin = true;
    let reader_id = run_container(&env.cri, &sandbox, &pod, &reader).await?;
    wait_container(&env.cri, &web_id, "running", running).await?;
    wait_container(&env.cri, &reader_id, "running", running).await?;
    const V4: &str = "v4.channel.k8s.io";

    // Output and a successful status.
    let ws = client
        .websocket(
            "/exec/default/echo/web?command=cat&command=%2Fetc%2Fhostname&output=1&error=1",
            V4,
        )
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("exec refused: {s} {b}"))?;
    let out = ws.collect().await?;
    assert_eq!(text(&out, 1), "echo\n");
    let status: serde_json::Value = serde_json::from_str(&text(&out, 3))?;
    assert_eq!(status["status"], "Success", "{status}");

    // stderr and the exit code.
    let ws = client
        .websocket(
            "/exec/default/echo/web?command=sh&command=-c&command=echo%20oops%20%3E%262%3B%20exit%207&output=1&error=1",
            V4,
        )
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("exec refused: {s} {b}"))?;
    let out = ws.collect().await?;
    assert_eq!(text(&out, 2), "oops\n");
    let status: serde_json::Value = serde_json::from_str(&text(&out, 3))?;
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");

    // stdin.
    let mut ws = client
        .websocket(
            "/exec/default/echo/web?command=head&command=-n1&input=1&output=1",
            V4,
        )
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("exec refused: {s} {b}"))?;
    ws.send(0, b"hello\n").await?;
    let out = ws.collect().await?;
    assert_eq!(text(&out, 1), "hello\n");

    // Attach to a running process's stdin and stdout.
    let mut ws = client
        .websocket("/attach/default/echo/reader?input=1&output=1", V4)
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("attach refused: {s} {b}"))?;
    ws.send(0, b"ping\n").await?;
    ws.read_until(1, "got:ping\n").await?;
    drop(ws);

    // kubectl 1.33 offers only v5 over WebSocket; containerd refuses it, and the refusal must
    // reach the client as a non-101 answer so that it falls back to SPDY.
    match client
        .websocket(
            "/exec/default/echo/web?command=true&output=1",
            "v5.channel.k8s.io",
        )
        .await?
    {
        Ok(_) => bail!("a v5 WebSocket exec was accepted; containerd 1.6 does not speak v5"),
        Err((status, _)) => assert!(status.is_client_error(), "{status}"),
    }

    // Port-forward over WebSocket: the server opens data and error channels, each
    // starting with the port (little endian), then relays bytes.
    let mut ws = client
        .websocket(
            &format!("/portForward/default/echo?port={ECHOSERVER_PORT}"),
            V4,
        )
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("port-forward refused: {s} {b}"))?;
    ws.send(0, b"GET /hostname HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let reply = ws.read_until(0, "\r\n\r\necho").await?;
    let port = ECHOSERVER_PORT.to_le_bytes();
    let (prefix, http) = reply.split_at(2);
    assert_eq!(prefix, port, "port prefix of the data channel");
    let http = String::from_utf8_lossy(http);
    assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http:?}");
    drop(ws);

    // Errors as upstream words them.
    let upgrade = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];
    let resp = client
        .send(
            "POST",
            "/exec/default/nope/web?command=true&output=1",
            &upgrade,
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = client
        .send(
            "POST",
            "/exec/default/echo/nope?command=true&output=1",
            &upgrade,
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = resp.into_body().collect().await?.to_bytes();
    assert_eq!(&body[..], b"container not found (\"nope\")");
    assert_eq!(
        client
            .get("/exec/default/echo/web?command=true&output=1")
            .await?,
        (
            StatusCode::BAD_REQUEST,
            "Upgrade request required".to_string()
        )
    );
    assert_eq!(
        client.get("/exec/default/echo/web?command=true").await?,
        (
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr".to_string()
        )
    );
    Ok(())
}

/// With a client CA, the server requires client certificates it signed.
#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ca_cert.pem())?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate()?;
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer)?;

    let mut config = oxlet_kubelet::server::ServerConfig::new("n1", dir.path().join("pki"));
    config.bind = "127.0.0.1:0".parse()?;
    config.healthz_port = Some(0);
    config.client_ca_file = Some(ca_path);
    let server = oxlet_kubelet::server::bind(config).await?;
    let addr = server.local_addr().context("address")?;
    let healthz = server.healthz_addr().context("healthz address")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(
        Arc::new(oxlet_cri::fake::FakeRuntime::new()),
        cancel.clone(),
    ));

    let anonymous = Client::new(addr, None)?;
    assert!(
        anonymous.get("/healthz").await.is_err(),
        "a client without a certificate was served"
    );
    let identity = (
        vec![client_cert.der().clone()],
        PrivateKeyDer::try_from(client_key.serialize_der()).map_err(anyhow::Error::msg)?,
    );
    let trusted = Client::new(addr, Some(identity))?;
    assert_eq!(
        trusted.get("/healthz").await?,
        (StatusCode::OK, "ok".to_string())
    );
    assert_eq!(
        trusted.get("/containerLogs/default/none/c").await?,
        (
            StatusCode::NOT_FOUND,
            "pod \"none\" does not exist".to_string()
        )
    );

    // The plain /healthz on loopback needs no certificate.
    let tcp = tokio::net::TcpStream::connect(healthz).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            hyper::Request::get("/healthz")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    cancel.cancel();
    task.await??;
    Ok(())
}
