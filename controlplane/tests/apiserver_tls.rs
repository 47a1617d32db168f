//! The API server's HTTPS front against real clients: kube-rs, a raw rustls client, curl and
//! the real kubectl. Each test has its own data dir and a free loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use oxlet_controlplane::apiserver::auth::UserInfo;
use oxlet_controlplane::apiserver::pki::Pki;
use oxlet_controlplane::apiserver::server::{self, ServerConfig};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server on a free loopback port, stopped when dropped.
struct Running {
    addr: SocketAddr,
    pki: Arc<Pki>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<server::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().context("already stopped")?;
        tokio::time::timeout(server::DRAIN_TIMEOUT + Duration::from_secs(5), task)
            .await
            .context("server did not stop within the drain timeout")???;
        Ok(())
    }
}

/// `/api` answers with the authenticated user, so tests see what the middleware decided.
fn test_app() -> Router {
    Router::new().route(
        "/api",
        get(|Extension(user): Extension<UserInfo>| async move {
            Json(json!({"username": user.username, "uid": user.uid, "groups": user.groups}))
        }),
    )
}

async fn start(dir: &Path, configure: impl FnOnce(&mut ServerConfig)) -> Result<Running> {
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let mut config = ServerConfig::new(dir);
    config.secure_port = addr.port();
    configure(&mut config);
    config.validate()?;
    let pki = Arc::new(Pki::load_or_create(&config.pki_options())?);
    let auth = config.authenticator()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let pki = pki.clone();
        let shutdown = shutdown.clone();
        let commit = config.git_commit.clone();
        async move { server::serve_listener(listener, &pki, auth, &commit, test_app(), shutdown).await }
    });
    Ok(Running {
        addr,
        pki,
        shutdown,
        task: Some(task),
    })
}

async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// A client trusting the cluster CA, authenticating with `token` if given.
async fn client_with_token(running: &Running, token: Option<&str>) -> Result<kube::Client> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": running.url(),
            "certificate-authority-data": b64(running.pki.ca_cert_pem()),
        }}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Status code and body of `GET path`.
async fn get_raw(client: &kube::Client, path: &str) -> Result<(u16, String)> {
    let req = http::Request::get(path).body(kube::client::Body::empty())?;
    let resp = client.send(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect_bytes().await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn unauthorized_status() -> Value {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
           "message":"Unauthorized","reason":"Unauthorized","code":401})
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_kubeconfig_drives_kube_rs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kubeconfig)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "admin.kubeconfig mode");
    let text = std::fs::read_to_string(&kubeconfig)?;
    assert!(text.contains("current-context: oxlet"), "{text}");
    assert!(text.contains(&running.url()), "{text}");

    let client = client_from_kubeconfig(&kubeconfig).await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "33");
    assert_eq!(version.git_version, "v1.33.0-oxlet");
    assert_eq!(version.platform, "linux/amd64");

    let me: Value = client
        .request(http::Request::get("/api").body(Vec::new())?)
        .await?;
    assert_eq!(me["username"], "kubernetes-admin");
    assert_eq!(
        me["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_gets_401_except_health_and_version() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;
    let anon = client_with_token(&running, None).await?;

    let (code, body) = get_raw(&anon, "/api").await?;
    assert_eq!(code, 401, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body)?, unauthorized_status());
    let (code, _) = get_raw(&anon, "/api/v1/namespaces").await?;
    assert_eq!(code, 401);

    for (path, want) in [
        ("/healthz", "ok"),
        ("/livez", "ok"),
        ("/readyz", "ok"),
        ("/readyz/ping", "ok"),
    ] {
        let (code, body) = get_raw(&anon, path).await?;
        assert_eq!((code, body.as_str()), (200, want), "{path}");
    }
    let (code, body) = get_raw(&anon, "/healthz?verbose").await?;
    assert_eq!(code, 200);
    assert!(body.contains("healthz check passed"), "{body}");
    let (code, body) = get_raw(&anon, "/version").await?;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["minor"], "33");
    for field in [
        "gitCommit",
        "goVersion",
        "buildDate",
        "compiler",
        "gitTreeState",
    ] {
        assert!(v[field].is_string(), "{field} missing: {v}");
    }
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_from_token_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "s3cret,alice,uid-42,\"system:masters,dev\"\nother,bob,uid-7\n",
    )?;
    let running = start(dir.path(), |c| c.token_auth_file = Some(tokens.clone())).await?;

    let alice = client_with_token(&running, Some("s3cret")).await?;
    let (code, body) = get_raw(&alice, "/api").await?;
    assert_eq!(code, 200, "{body}");
    let me: Value = serde_json::from_str(&body)?;
    assert_eq!(
        me,
        json!({"username": "alice", "uid": "uid-42",
               "groups": ["system:masters", "dev", "system:authenticated"]})
    );
    let bob = client_with_token(&running, Some("other")).await?;
    let (_, body) = get_raw(&bob, "/api").await?;
    let me: Value = serde_json::from_str(&body)?;
    assert_eq!(me["groups"], json!(["system:authenticated"]));

    let wrong = client_with_token(&running, Some("nope")).await?;
    let (code, body) = get_raw(&wrong, "/api").await?;
    assert_eq!(code, 401);
    assert_eq!(serde_json::from_str::<Value>(&body)?, unauthorized_status());
    // As kube-apiserver: rejected credentials fail even where anonymous access is allowed.
    let (code, _) = get_raw(&wrong, "/healthz").await?;
    assert_eq!(code, 401);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_client_certificates_map_cn_and_o() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;
    let path = dir.path().join("nodes").join("kubelet.kubeconfig");
    running
        .pki
        .issue_client_kubeconfig("system:node:n1", &["system:nodes"], &path)?;
    let client = client_from_kubeconfig(&path).await?;
    let me: Value = client
        .request(http::Request::get("/api").body(Vec::new())?)
        .await?;
    assert_eq!(
        me,
        json!({"username": "system:node:n1", "uid": "",
               "groups": ["system:nodes", "system:authenticated"]})
    );
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_reuses_ca_and_reissues_serving_cert_only_when_sans_change() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    let first = start(dir.path(), |_| {}).await?;
    let port = first.addr.port();
    first.stop().await?;
    let read = |name: &str| std::fs::read(pki_dir.join(name));
    let (ca, ca_key, serving, admin, sa) = (
        read("ca.crt")?,
        read("ca.key")?,
        read("apiserver.crt")?,
        read("admin.crt")?,
        read("sa.pub")?,
    );
    for key in ["ca.key", "apiserver.key", "admin.key", "sa.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(pki_dir.join(key))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // Same configuration: everything reused, and the old admin kubeconfig still works.
    let mut config = ServerConfig::new(dir.path());
    config.secure_port = port;
    Pki::load_or_create(&config.pki_options())?;
    assert_eq!(read("ca.crt")?, ca);
    assert_eq!(read("apiserver.crt")?, serving);
    let second = start(dir.path(), |_| {}).await?;
    assert_eq!(read("ca.crt")?, ca, "second start must reuse the CA");
    assert_eq!(read("ca.key")?, ca_key);
    assert_eq!(read("admin.crt")?, admin);
    assert_eq!(read("sa.pub")?, sa);
    assert_eq!(read("apiserver.crt")?, serving);
    second.stop().await?;

    // A new advertise address: only the serving certificate is re-issued, and covers it.
    config.advertise_address = Some("192.0.2.10".parse()?);
    let pki = Pki::load_or_create(&config.pki_options())?;
    assert_eq!(read("ca.crt")?, ca);
    assert_eq!(read("admin.crt")?, admin);
    assert_ne!(read("apiserver.crt")?, serving);
    let sans = serving_ip_sans(pki.serving_cert_pem())?;
    for ip in ["192.0.2.10", "10.43.0.1", "127.0.0.1", "::1"] {
        assert!(sans.contains(&ip.parse()?), "{ip} not in {sans:?}");
    }
    let kubeconfig = std::fs::read_to_string(dir.path().join("admin.kubeconfig"))?;
    assert!(
        kubeconfig.contains(&format!("https://192.0.2.10:{port}")),
        "{kubeconfig}"
    );
    Ok(())
}

fn serving_ip_sans(pem: &str) -> Result<Vec<std::net::IpAddr>> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate")??;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
    let mut out = Vec::new();
    if let Some(ext) = cert.subject_alternative_name()? {
        for name in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::IPAddress(b) = name {
                if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                    out.push(v4.into());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                    out.push(v6.into());
                }
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_negotiated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(
        running.pki.ca_cert_der().to_vec(),
    ))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(running.addr).await?;
    let stream = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(stream);

    // curl with the admin client certificate speaks HTTP/2 end to end.
    let pki = dir.path().join("pki");
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg(format!("{}/api", running.url()))
        .output()
        .await
        .context("run curl (is curl installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "2 200");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn real_kubectl_reads_server_version() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;
    let kubeconfig: PathBuf = dir.path().join("admin.kubeconfig");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["version", "-o", "json"])
        .output()
        .await
        .context("run kubectl (is /usr/bin/kubectl installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "kubectl version output is not JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    assert_eq!(v["serverVersion"]["minor"], "33", "{v}");
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.33.0-oxlet", "{v}");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn taken_port_is_named_and_shutdown_stops_accepting() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), |_| {}).await?;
    let addr = running.addr;
    let err = server::bind(addr).await.expect_err("port is taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    // An idle keep-alive connection must not hold shutdown up to the drain timeout.
    let client = client_with_token(&running, None).await?;
    assert_eq!(get_raw(&client, "/healthz").await?.0, 200);
    let started = std::time::Instant::now();
    running.stop().await?;
    assert!(
        started.elapsed() < server::DRAIN_TIMEOUT,
        "idle connections delayed shutdown by {:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    Ok(())
}
