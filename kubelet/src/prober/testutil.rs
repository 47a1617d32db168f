//! Test servers (HTTP, HTTPS, gRPC health over h2c, a silent one) on 127.0.0.1 ephemeral ports,
//! and pod/container builders, for the prober's and lifecycle hooks' tests. Servers run as tasks
//! of the test's runtime and end with it.

#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, HTTPGetAction, Pod, PodSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oxlet_cri::fake::FakeRuntime;
use oxlet_cri::{api, image_spec, ImageService, RuntimeService};
use tokio::net::TcpListener;

/// An HTTP test server: its address, the headers of the requests it got, and the status
/// `/switch` answers with.
#[derive(Clone)]
pub(crate) struct TestHttp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    pub switch: Arc<AtomicU16>,
}

impl TestHttp {
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Headers of the last request.
    pub(crate) fn last_headers(&self) -> Option<HeaderMap> {
        self.seen.lock().ok().and_then(|s| s.last().cloned())
    }

    pub(crate) fn set_switch(&self, status: u16) {
        self.switch.store(status, Ordering::SeqCst);
    }
}

fn redirect(to: &str) -> impl IntoResponse {
    (
        StatusCode::FOUND,
        [(http::header::LOCATION, to.to_string())],
        "moved",
    )
}

/// Routes: `/ok`, `/status/{code}`, `/switch`, `/echo` (request headers as text), `/big`
/// (100 KB), `/slow` (never answers in time), redirects `/to-ok`, `/to-fail`, `/to-other`,
/// `/to-abs` (absolute URL to `/ok`), `/loop`.
pub(crate) async fn http_server() -> TestHttp {
    let state = TestHttp {
        addr: "127.0.0.1:0".parse().unwrap(),
        seen: Arc::default(),
        switch: Arc::new(AtomicU16::new(200)),
    };
    let record = |s: &TestHttp, h: &HeaderMap| s.seen.lock().unwrap().push(h.clone());
    let app = Router::new()
        .route(
            "/ok",
            get(move |State(s): State<TestHttp>, h: HeaderMap| async move {
                record(&s, &h);
                "ok"
            }),
        )
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move {
                (StatusCode::from_u16(code).unwrap(), "status body")
            }),
        )
        .route(
            "/switch",
            get(|State(s): State<TestHttp>| async move {
                StatusCode::from_u16(s.switch.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/echo",
            get(|h: HeaderMap| async move {
                let map: BTreeMap<_, _> = h
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                format!("{map:?}")
            }),
        )
        .route("/big", get(|| async { "x".repeat(100_000) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                "late"
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/to-ok", get(|| async { redirect("/ok") }))
        .route("/to-fail", get(|| async { redirect("fail") }))
        .route(
            "/to-other",
            get(|| async { redirect("http://other.invalid/ok") }),
        )
        .route(
            "/to-abs",
            get(|h: HeaderMap| async move {
                let host = h
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                redirect(&format!("http://{host}/ok"))
            }),
        )
        .route("/loop", get(|| async { redirect("/loop") }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = TestHttp { addr, ..state };
    let app = app.with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    state
}

/// An HTTPS server with a fresh self-signed certificate: `/fail` answers 500, anything else 200.
pub(crate) async fn https_server() -> SocketAddr {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let status = if req.uri().path() == "/fail" {
                            500
                        } else {
                            200
                        };
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"secure")))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

type GrpcBody = StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
>;

fn grpc_reply(status: Option<u8>, code: u32, message: &str) -> http::Response<GrpcBody> {
    let mut frames = Vec::new();
    if let Some(s) = status {
        frames.push(Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]))));
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", code.to_string().parse().unwrap());
    if !message.is_empty() {
        trailers.insert("grpc-message", message.replace(' ', "%20").parse().unwrap());
    }
    frames.push(Ok(Frame::trailers(trailers)));
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap()
}

/// A gRPC health server over h2c. Services: `""` and `"db"` SERVING, `"down"` NOT_SERVING,
/// `"slow"` never answers in time, others NotFound. With `implements_health == false` every
/// call is Unimplemented.
pub(crate) async fn grpc_server(implements_health: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let mut body = req.into_body().collect().await.unwrap().to_bytes();
                        if !implements_health || path != "/grpc.health.v1.Health/Check" {
                            return Ok::<_, std::convert::Infallible>(grpc_reply(
                                None,
                                12,
                                "unknown service grpc.health.v1.Health",
                            ));
                        }
                        // Frame header, then optional field 1 (service name).
                        body.advance(5);
                        let service = if body.len() > 2 {
                            String::from_utf8_lossy(&body[2..]).into_owned()
                        } else {
                            String::new()
                        };
                        Ok(match service.as_str() {
                            "" | "db" => grpc_reply(Some(1), 0, ""),
                            "down" => grpc_reply(Some(2), 0, ""),
                            "slow" => {
                                tokio::time::sleep(Duration::from_secs(600)).await;
                                grpc_reply(Some(1), 0, "")
                            }
                            _ => grpc_reply(None, 5, "unknown service"),
                        })
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A server that accepts connections and never says anything.
pub(crate) async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}

/// A loopback port nothing listens on (bound, then released).
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A container named `app` with a port named `web`.
pub(crate) fn container(web_port: u16) -> Container {
    Container {
        name: "app".into(),
        image: Some("busybox".into()),
        ports: Some(vec![ContainerPort {
            name: Some("web".into()),
            container_port: i32::from(web_port),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A pod `default/web` with UID `uid-1` and the given containers.
pub(crate) fn pod(containers: Vec<Container>) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".into());
    pod.metadata.namespace = Some("default".into());
    pod.metadata.uid = Some("uid-1".into());
    pod.spec = Some(PodSpec {
        containers,
        ..Default::default()
    });
    pod
}

pub(crate) fn http_probe(path: &str, port: IntOrString) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An exec probe with a 1 s period and the given thresholds.
pub(crate) fn exec_probe(success: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), "check".into()]),
        }),
        period_seconds: Some(1),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

/// A fake runtime with one running container; returns it and the container ID.
pub(crate) async fn fake_with_container() -> (Arc<FakeRuntime>, String) {
    let fake = Arc::new(FakeRuntime::new());
    let sb_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let sb = fake.run_pod_sandbox(&sb_config, "").await.unwrap();
    fake.pull_image(&image_spec("busybox"), None, Some(&sb_config))
        .await
        .unwrap();
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(image_spec("busybox")),
        ..Default::default()
    };
    let id = fake
        .create_container(&sb, &config, &sb_config)
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    (fake, id)
}

/// Makes every later ExecSync exit with `code` and print `out`.
pub(crate) fn set_exec(fake: &FakeRuntime, code: i32, out: &str) {
    fake.set_exec_response(api::ExecSyncResponse {
        stdout: out.as_bytes().to_vec(),
        stderr: vec![],
        exit_code: code,
    });
}
