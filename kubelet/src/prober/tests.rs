//! Tests of single probe runs against real servers on 127.0.0.1, and of the workers and the
//! manager on the fake runtime.

#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{GRPCAction, HTTPGetAction, HTTPHeader, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oxlet_cri::fake::{FakeRuntime, Method};
use oxlet_cri::RuntimeService;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http::{self, HttpGet};
use super::testutil::*;
use super::*;
use crate::events::{EventType, MemorySink};

const IP: Option<&str> = Some("127.0.0.1");

/// Runs `probe` for the `app` container (port `web` = `web_port`) of a test pod.
async fn run(probe: &Probe, web_port: u16) -> Result<ProbeResult, ProbeError> {
    let fake = FakeRuntime::new();
    let c = container(web_port);
    run_probe(&fake, &pod(vec![c.clone()]), &c, "none", IP, probe).await
}

/// A gRPC status code by number: the fake takes tonic's `Code`, and tonic is no dependency of
/// this crate, so the type is inferred.
pub(crate) fn grpc_code<T: From<i32>>(n: i32) -> T {
    T::from(n)
}

fn failure(r: Result<ProbeResult, ProbeError>) -> String {
    match r {
        Ok(ProbeResult::Failure(msg)) => msg,
        other => panic!("want a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn http_status_codes() {
    let srv = http_server().await;
    let port = IntOrString::Int(i32::from(srv.port()));
    assert_eq!(
        run(&http_probe("/ok", port.clone()), 0).await.unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        run(&http_probe("/status/204", port.clone()), 0)
            .await
            .unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        failure(run(&http_probe("/status/500", port.clone()), 0).await),
        "HTTP probe failed with statuscode: 500"
    );
    assert_eq!(
        failure(run(&http_probe("/status/404", port.clone()), 0).await),
        "HTTP probe failed with statuscode: 404"
    );
    // A 3xx that is not a redirect to follow passes with a warning carrying the body.
    assert_eq!(
        run(&http_probe("/status/304", port), 0).await.unwrap(),
        ProbeResult::Warning("Probe terminated redirects, Response body: ".into())
    );
}

#[tokio::test]
async fn http_named_port_and_host() {
    let srv = http_server().await;
    let by_name = http_probe("/ok", IntOrString::String("web".into()));
    assert_eq!(
        run(&by_name, srv.port()).await.unwrap(),
        ProbeResult::Success
    );
    // A number in a string works as a number.
    let digits = http_probe("/ok", IntOrString::String(srv.port().to_string()));
    assert_eq!(run(&digits, 1).await.unwrap(), ProbeResult::Success);
    let unknown = http_probe("/ok", IntOrString::String("metrics".into()));
    assert!(matches!(
        run(&unknown, srv.port()).await,
        Err(ProbeError::Port(PortError::NotFound(n))) if n == "metrics"
    ));
    let zero = http_probe("/ok", IntOrString::Int(0));
    assert!(matches!(
        run(&zero, 1).await,
        Err(ProbeError::Port(PortError::Invalid(0)))
    ));
    // An explicit host wins over the pod IP; without either there is nothing to probe.
    let mut explicit = http_probe("/ok", IntOrString::Int(i32::from(srv.port())));
    explicit.http_get.as_mut().unwrap().host = Some("127.0.0.1".into());
    let fake = FakeRuntime::new();
    let c = container(0);
    let p = pod(vec![c.clone()]);
    assert_eq!(
        run_probe(&fake, &p, &c, "none", None, &explicit)
            .await
            .unwrap(),
        ProbeResult::Success
    );
    let implicit = http_probe("/ok", IntOrString::Int(i32::from(srv.port())));
    assert!(matches!(
        run_probe(&fake, &p, &c, "none", None, &implicit).await,
        Err(ProbeError::NoPodIp)
    ));
}

#[tokio::test]
async fn http_headers() {
    let srv = http_server().await;
    let action = |headers: Vec<(&str, &str)>| HTTPGetAction {
        path: Some("/echo".into()),
        port: IntOrString::Int(i32::from(srv.port())),
        http_headers: Some(
            headers
                .into_iter()
                .map(|(n, v)| HTTPHeader {
                    name: n.into(),
                    value: v.into(),
                })
                .collect(),
        ),
        ..Default::default()
    };
    let echo = |a: HTTPGetAction| async move {
        let get = HttpGet::from_action(&a, &container(0), IP).unwrap();
        let resp = http::get(&get, "probe", Duration::from_secs(5))
            .await
            .unwrap();
        resp.body_text()
    };
    let body = echo(action(vec![])).await;
    assert!(
        body.contains(r#""user-agent": "kube-probe/1.33""#),
        "{body}"
    );
    assert!(body.contains(r#""accept": "*/*""#), "{body}");
    let want_host = format!(r#""host": "127.0.0.1:{}""#, srv.port());
    assert!(body.contains(&want_host), "{body}");

    let body = echo(action(vec![
        ("X-Custom", "yes"),
        ("User-Agent", "mine/1"),
        ("Accept", "application/json"),
        ("Host", "example.com"),
    ]))
    .await;
    assert!(body.contains(r#""x-custom": "yes""#), "{body}");
    assert!(body.contains(r#""user-agent": "mine/1""#), "{body}");
    assert!(body.contains(r#""accept": "application/json""#), "{body}");
    assert!(body.contains(r#""host": "example.com""#), "{body}");

    // An empty Accept removes the header altogether, as upstream.
    let body = echo(action(vec![("Accept", "")])).await;
    assert!(!body.contains("accept"), "{body}");
}

#[tokio::test]
async fn http_redirects() {
    let srv = http_server().await;
    let port = IntOrString::Int(i32::from(srv.port()));
    // Same host: followed.
    assert_eq!(
        run(&http_probe("/to-ok", port.clone()), 0).await.unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        run(&http_probe("/to-abs", port.clone()), 0).await.unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        failure(run(&http_probe("/to-fail", port.clone()), 0).await),
        "HTTP probe failed with statuscode: 500"
    );
    // Another host: not followed, success with a warning.
    assert_eq!(
        run(&http_probe("/to-other", port.clone()), 0)
            .await
            .unwrap(),
        ProbeResult::Warning("Probe terminated redirects, Response body: moved".into())
    );
    // Go's limit of 10 redirects.
    let msg = failure(run(&http_probe("/loop", port), 0).await);
    assert!(msg.ends_with("stopped after 10 redirects"), "{msg}");
    assert!(
        msg.starts_with(&format!("Get \"http://127.0.0.1:{}/loop\"", srv.port())),
        "{msg}"
    );
}

#[tokio::test]
async fn http_timeout_refused_and_body_limit() {
    let srv = http_server().await;
    let started = tokio::time::Instant::now();
    let msg = failure(
        run(
            &http_probe("/slow", IntOrString::Int(i32::from(srv.port()))),
            0,
        )
        .await,
    );
    assert!(msg.contains("context deadline exceeded"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let silent = silent_server().await;
    let msg = failure(
        run(
            &http_probe("/", IntOrString::Int(i32::from(silent.port()))),
            0,
        )
        .await,
    );
    assert!(msg.contains("Client.Timeout exceeded"), "{msg}");

    let closed = closed_port();
    let msg = failure(run(&http_probe("/", IntOrString::Int(i32::from(closed))), 0).await);
    assert_eq!(
        msg,
        format!("Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );

    let action = HTTPGetAction {
        path: Some("/big".into()),
        port: IntOrString::Int(i32::from(srv.port())),
        ..Default::default()
    };
    let get = HttpGet::from_action(&action, &container(0), IP).unwrap();
    let resp = http::get(&get, "probe", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((resp.status, resp.body.len()), (200, http::MAX_BODY));
}

#[tokio::test]
async fn https_ignores_certificate() {
    let addr = https_server().await;
    let mut probe = http_probe("/healthz", IntOrString::Int(i32::from(addr.port())));
    probe.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
    assert_eq!(run(&probe, 0).await.unwrap(), ProbeResult::Success);
    probe.http_get.as_mut().unwrap().path = Some("/fail".into());
    assert_eq!(
        failure(run(&probe, 0).await),
        "HTTP probe failed with statuscode: 500"
    );
    // Plain HTTP against the TLS port fails rather than hangs.
    probe.http_get.as_mut().unwrap().scheme = None;
    let started = tokio::time::Instant::now();
    assert!(run(&probe, 0).await.unwrap().is_failure());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn tcp_socket() {
    let srv = http_server().await;
    let tcp = |port: IntOrString| Probe {
        tcp_socket: Some(TCPSocketAction { host: None, port }),
        ..Default::default()
    };
    assert_eq!(
        run(&tcp(IntOrString::String("web".into())), srv.port())
            .await
            .unwrap(),
        ProbeResult::Success
    );
    let closed = closed_port();
    assert_eq!(
        failure(run(&tcp(IntOrString::Int(i32::from(closed))), 0).await),
        format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );
}

#[tokio::test]
async fn grpc_health() {
    let addr = grpc_server(true).await;
    let grpc = |port: u16, service: Option<&str>| Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: service.map(str::to_string),
        }),
        ..Default::default()
    };
    let port = addr.port();
    assert_eq!(
        run(&grpc(port, None), 0).await.unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        run(&grpc(port, Some("db")), 0).await.unwrap(),
        ProbeResult::Success
    );
    assert_eq!(
        failure(run(&grpc(port, Some("down")), 0).await),
        r#"service unhealthy (responded with "NOT_SERVING")"#
    );
    assert_eq!(
        failure(run(&grpc(port, Some("nope")), 0).await),
        "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
    );
    assert_eq!(
        failure(run(&grpc(port, Some("slow")), 0).await),
        "timeout: health rpc did not complete within 1s"
    );

    let other = grpc_server(false).await;
    assert_eq!(
        failure(run(&grpc(other.port(), None), 0).await),
        "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
    );

    // An HTTP server that is no gRPC server: 404, which gRPC reads as Unimplemented.
    let web = http_server().await;
    assert_eq!(
        failure(run(&grpc(web.port(), None), 0).await),
        "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unexpected HTTP status code received from server: 404"
    );
    // A server that never answers.
    let silent = silent_server().await;
    let msg = failure(run(&grpc(silent.port(), None), 0).await);
    assert!(msg.starts_with("timeout: "), "{msg}");

    let closed = closed_port();
    let msg = failure(run(&grpc(closed, None), 0).await);
    assert!(
        msg.starts_with(&format!(
            "error: failed to connect service at \"127.0.0.1:{closed}\""
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn exec_probe_results() {
    let (fake, id) = fake_with_container().await;
    let c = container(0);
    let p = pod(vec![c.clone()]);
    let probe = exec_probe(1, 1);
    let exec = || run_probe(fake.as_ref(), &p, &c, &id, IP, &probe);

    assert_eq!(exec().await.unwrap(), ProbeResult::Success);
    fake.set_exec_response(oxlet_cri::api::ExecSyncResponse {
        stdout: b"not ".to_vec(),
        stderr: b"ready".to_vec(),
        exit_code: 1,
    });
    assert_eq!(
        exec().await.unwrap(),
        ProbeResult::Failure("not ready".into())
    );

    fake.fail_next(Method::ExecSync, grpc_code(4), "deadline"); // DeadlineExceeded
    assert_eq!(
        exec().await.unwrap(),
        ProbeResult::Failure(r#"command "sh -c check" timed out"#.into())
    );
    fake.fail_next(Method::ExecSync, grpc_code(14), "containerd restarting"); // Unavailable
    assert!(matches!(exec().await, Err(ProbeError::Runtime(e)) if e.is_unavailable()));

    // The container exited: the runtime refuses, which is an error, not a failure.
    fake.exit_container(&id, 0, "Completed");
    assert!(matches!(exec().await, Err(ProbeError::Runtime(_))));

    let empty = Probe::default();
    assert!(matches!(
        run_probe(fake.as_ref(), &p, &c, &id, IP, &empty).await,
        Err(ProbeError::NoHandler { .. })
    ));
}

// ---- workers and the manager ----

struct Harness {
    fake: Arc<FakeRuntime>,
    id: String,
    events: Arc<MemorySink>,
    updates: mpsc::UnboundedReceiver<ProbeUpdate>,
    cancel: CancellationToken,
    manager: ProbeManager,
}

async fn harness() -> Harness {
    let (fake, id) = fake_with_container().await;
    let events = Arc::new(MemorySink::default());
    let (tx, updates) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let manager = ProbeManager::new(fake.clone(), events.clone(), tx, cancel.clone());
    Harness {
        fake,
        id,
        events,
        updates,
        cancel,
        manager,
    }
}

impl Harness {
    fn sync(&self, pod: &Arc<k8s_openapi::api::core::v1::Pod>, id: &str) {
        self.manager.sync_pod(
            pod,
            IP,
            &[("app".to_string(), id.to_string(), SystemTime::now())],
        );
    }

    async fn next_update(&mut self) -> ProbeUpdate {
        tokio::time::timeout(Duration::from_secs(120), self.updates.recv())
            .await
            .expect("no probe update in time")
            .expect("update channel closed")
    }

    /// Event messages recorded so far.
    fn messages(&self) -> Vec<String> {
        self.events.events().into_iter().map(|e| e.3).collect()
    }

    fn exec_calls(&self) -> usize {
        self.fake
            .methods()
            .iter()
            .filter(|m| **m == Method::ExecSync)
            .count()
    }

    /// Waits (on the test clock) until `cond` holds; panics with `what` after a long deadline.
    async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; events: {:?}",
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn with_probes(
    liveness: Option<Probe>,
    readiness: Option<Probe>,
    startup: Option<Probe>,
) -> Arc<k8s_openapi::api::core::v1::Pod> {
    let mut c = container(0);
    c.liveness_probe = liveness;
    c.readiness_probe = readiness;
    c.startup_probe = startup;
    Arc::new(pod(vec![c]))
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_threshold() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "boom");
    let pod = with_probes(Some(exec_probe(1, 3)), None, None);
    h.sync(&pod, &h.id.clone());
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);

    let u = h.next_update().await;
    assert_eq!(
        u,
        ProbeUpdate {
            pod_uid: "uid-1".into(),
            container_name: "app".into(),
            container_id: h.id.clone(),
            kind: ProbeKind::Liveness,
            result: ProbeResult::Failure("boom".into()),
        }
    );
    // Reported on the third failed run, each of which made an event.
    assert_eq!(h.exec_calls(), 3);
    let events = h.events.events();
    assert_eq!(events.len(), 3);
    for (obj, ty, reason, msg) in &events {
        assert_eq!(obj.field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(obj.uid.as_deref(), Some("uid-1"));
        assert_eq!(*ty, EventType::Warning);
        assert_eq!(reason, "Unhealthy");
        assert_eq!(msg, "Liveness probe failed: boom");
    }
    assert_eq!(
        h.manager.should_restart("uid-1", &h.id).as_deref(),
        Some("Container app failed liveness probe")
    );
    // Without a readiness probe a running, started container is ready regardless.
    assert!(h.manager.is_ready("uid-1", &h.id));
    // The worker stops probing this container; it waits for a new container ID.
    h.wait_for("the worker to end", |h| h.manager.running_workers() == 0)
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.exec_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn liveness_recovers_before_threshold() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "boom");
    let pod = with_probes(Some(exec_probe(1, 3)), Some(exec_probe(1, 1)), None);
    h.sync(&pod, &h.id.clone());
    // Two failures each (liveness and readiness share the exec), then success.
    h.wait_for("two liveness failures", |h| {
        h.messages()
            .iter()
            .filter(|m| m.starts_with("Liveness"))
            .count()
            >= 2
    })
    .await;
    set_exec(&h.fake, 0, "");
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Success)
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);
    assert!(
        h.updates.try_recv().is_err(),
        "liveness never crossed its threshold"
    );
}

#[tokio::test(start_paused = true)]
async fn readiness_transitions_and_success_threshold() {
    let mut h = harness().await;
    set_exec(&h.fake, 0, "");
    let pod = with_probes(None, Some(exec_probe(2, 1)), None);
    h.sync(&pod, &h.id.clone());
    // Readiness starts false and is started (no startup probe).
    assert!(!h.manager.is_ready("uid-1", &h.id));
    assert!(h.manager.is_started("uid-1", &h.id));

    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Success)
    );
    assert_eq!(h.exec_calls(), 2, "successThreshold 2 needs two runs");
    assert!(h.manager.is_ready("uid-1", &h.id));

    set_exec(&h.fake, 7, "not yet");
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Failure("not yet".into()))
    );
    assert!(!h.manager.is_ready("uid-1", &h.id));
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);
    assert!(h
        .messages()
        .contains(&"Readiness probe failed: not yet".to_string()));

    let before = h.exec_calls();
    set_exec(&h.fake, 0, "");
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Success)
    );
    assert_eq!(h.exec_calls() - before, 2);
    assert!(h.manager.is_ready("uid-1", &h.id));
    // Readiness keeps probing.
    assert_eq!(h.manager.running_workers(), 1);
}

#[tokio::test(start_paused = true)]
async fn initial_delay_counts_from_container_start() {
    let mut h = harness().await;
    set_exec(&h.fake, 0, "");
    let mut probe = exec_probe(1, 1);
    probe.initial_delay_seconds = Some(5);
    let pod = with_probes(None, Some(probe), None);
    let t0 = tokio::time::Instant::now();
    h.sync(&pod, &h.id.clone());
    let u = h.next_update().await;
    assert_eq!(u.result, ProbeResult::Success);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn startup_gates_other_probes_then_fails() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "starting");
    let pod = with_probes(
        Some(exec_probe(1, 1)),
        Some(exec_probe(1, 1)),
        Some(exec_probe(1, 4)),
    );
    h.sync(&pod, &h.id.clone());
    assert!(!h.manager.is_started("uid-1", &h.id));
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Startup, ProbeResult::Failure("starting".into()))
    );
    // Only the startup probe ran: four times, four events.
    assert_eq!(h.exec_calls(), 4);
    assert_eq!(h.messages(), vec!["Startup probe failed: starting"; 4]);
    assert!(!h.manager.is_started("uid-1", &h.id));
    assert!(!h.manager.is_ready("uid-1", &h.id));
    assert_eq!(
        h.manager.should_restart("uid-1", &h.id).as_deref(),
        Some("Container app failed startup probe")
    );
}

#[tokio::test(start_paused = true)]
async fn startup_success_releases_readiness_and_liveness() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "warming up");
    let pod = with_probes(
        Some(exec_probe(1, 3)),
        Some(exec_probe(1, 3)),
        Some(exec_probe(1, 30)),
    );
    h.sync(&pod, &h.id.clone());
    h.wait_for("startup failures", |h| h.messages().len() >= 3)
        .await;
    assert!(h
        .messages()
        .iter()
        .all(|m| m.starts_with("Startup probe failed")));

    set_exec(&h.fake, 0, "");
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Startup, ProbeResult::Success)
    );
    // Readiness runs as soon as the container counts as started.
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Success)
    );
    assert!(h.manager.is_started("uid-1", &h.id));
    assert!(h.manager.is_ready("uid-1", &h.id));

    // Liveness now runs too: failing it three times asks for a restart.
    set_exec(&h.fake, 1, "dead");
    let mut kinds = vec![h.next_update().await.kind, h.next_update().await.kind];
    kinds.sort();
    assert_eq!(kinds, vec![ProbeKind::Liveness, ProbeKind::Readiness]);
    assert_eq!(
        h.manager.should_restart("uid-1", &h.id).as_deref(),
        Some("Container app failed liveness probe")
    );
    assert!(h
        .messages()
        .contains(&"Liveness probe failed: dead".to_string()));
    // The startup worker is done once the container started; readiness still runs.
    h.wait_for("only readiness left", |h| h.manager.running_workers() == 1)
        .await;
}

#[tokio::test(start_paused = true)]
async fn new_container_id_resets() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "boom");
    let pod = with_probes(Some(exec_probe(1, 2)), Some(exec_probe(1, 1)), None);
    let old = h.id.clone();
    h.sync(&pod, &old);
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.container_id.as_str()),
        (ProbeKind::Liveness, old.as_str())
    );
    assert!(h.manager.should_restart("uid-1", &old).is_some());
    // Idempotent: syncing the same container changes nothing.
    h.sync(&pod, &old);
    assert!(h.manager.should_restart("uid-1", &old).is_some());

    // The kubelet restarted the container: a new ID starts from scratch.
    let new = h
        .fake
        .create_container(
            "sandbox-1",
            &oxlet_cri::api::ContainerConfig {
                metadata: Some(oxlet_cri::api::ContainerMetadata {
                    name: "app".into(),
                    attempt: 1,
                }),
                image: Some(oxlet_cri::image_spec("busybox")),
                ..Default::default()
            },
            &oxlet_cri::api::PodSandboxConfig::default(),
        )
        .await
        .unwrap();
    h.fake.start_container(&new).await.unwrap();
    h.sync(&pod, &new);
    assert_eq!(h.manager.should_restart("uid-1", &old), None);
    assert_eq!(h.manager.should_restart("uid-1", &new), None);
    assert!(!h.manager.is_ready("uid-1", &old));
    assert!(!h.manager.is_ready("uid-1", &new));
    set_exec(&h.fake, 0, "");
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.container_id.as_str(), u.result),
        (ProbeKind::Readiness, new.as_str(), ProbeResult::Success)
    );
    assert!(h.manager.is_ready("uid-1", &new));
    // The old container's workers are gone: only the new liveness and readiness run.
    h.wait_for("old workers to end", |h| h.manager.running_workers() == 2)
        .await;
}

#[tokio::test(start_paused = true)]
async fn remove_pod_and_cancel_stop_workers() {
    let h = harness().await;
    set_exec(&h.fake, 1, "boom");
    let pod = with_probes(None, Some(exec_probe(1, 1)), None);
    h.sync(&pod, &h.id.clone());
    h.wait_for("a probe run", |h| h.exec_calls() >= 1).await;
    assert_eq!(h.manager.running_workers(), 1);
    h.manager.remove_pod("uid-1");
    h.wait_for("the worker to end", |h| h.manager.running_workers() == 0)
        .await;
    let calls = h.exec_calls();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.exec_calls(), calls, "no probes after remove_pod");
    assert!(!h.manager.is_ready("uid-1", &h.id));

    // Cancelling the kubelet's token stops everything too.
    h.sync(&pod, &h.id.clone());
    assert_eq!(h.manager.running_workers(), 1);
    h.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(60), h.manager.shutdown())
        .await
        .expect("workers did not stop");
    assert_eq!(h.manager.running_workers(), 0);
    // After cancellation nothing new starts.
    h.sync(&pod, &h.id.clone());
    assert_eq!(h.manager.running_workers(), 0);
}

#[tokio::test(start_paused = true)]
async fn containers_without_probes_and_unknown_ones() {
    let h = harness().await;
    let pod = with_probes(None, None, None);
    h.sync(&pod, &h.id.clone());
    assert!(h.manager.is_ready("uid-1", &h.id));
    assert!(h.manager.is_started("uid-1", &h.id));
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);
    assert!(!h.manager.is_ready("uid-1", "other"));
    assert!(!h.manager.is_started("uid-2", &h.id));
    assert_eq!(h.manager.running_workers(), 0);
    // The container stopped running: no longer ready.
    h.manager.sync_pod(&pod, IP, &[]);
    assert!(!h.manager.is_ready("uid-1", &h.id));
}

#[tokio::test(start_paused = true)]
async fn deleting_pod_silences_liveness() {
    let mut h = harness().await;
    set_exec(&h.fake, 1, "boom");
    let mut pod = (*with_probes(
        Some(exec_probe(1, 1)),
        Some(exec_probe(1, 1)),
        Some(exec_probe(1, 1)),
    ))
    .clone();
    pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let pod = Arc::new(pod);
    h.sync(&pod, &h.id.clone());
    // Startup counts as passed, so readiness runs (and fails, which was its initial state).
    h.wait_for("readiness runs", |h| {
        h.messages()
            .contains(&"Readiness probe failed: boom".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        h.messages().iter().all(|m| m.starts_with("Readiness")),
        "{:?}",
        h.messages()
    );
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);
    assert!(h.updates.try_recv().is_err());
}

#[tokio::test]
async fn http_readiness_through_the_manager() {
    let srv = http_server().await;
    let mut h = harness().await;
    let mut probe = http_probe("/switch", IntOrString::String("web".into()));
    probe.period_seconds = Some(1);
    let mut c = container(srv.port());
    c.readiness_probe = Some(probe);
    let pod = Arc::new(pod(vec![c]));
    h.sync(&pod, &h.id.clone());
    let u = h.next_update().await;
    assert_eq!(
        (u.kind, u.result),
        (ProbeKind::Readiness, ProbeResult::Success)
    );
    assert!(h.manager.is_ready("uid-1", &h.id));
    srv.set_switch(503);
    let u = h.next_update().await;
    assert_eq!(
        u.result,
        ProbeResult::Failure("HTTP probe failed with statuscode: 503".into())
    );
    assert!(!h.manager.is_ready("uid-1", &h.id));
    assert!(h
        .messages()
        .contains(&"Readiness probe failed: HTTP probe failed with statuscode: 503".to_string()));
}

#[tokio::test(start_paused = true)]
async fn errored_probe_does_not_count() {
    let mut h = harness().await;
    let mut probe = http_probe("/", IntOrString::String("nope".into()));
    probe.period_seconds = Some(1);
    probe.failure_threshold = Some(1);
    let pod = with_probes(Some(probe), None, None);
    h.sync(&pod, &h.id.clone());
    h.wait_for("an errored event", |h| !h.messages().is_empty())
        .await;
    assert_eq!(
        h.messages()[0],
        r#"Liveness probe errored and resulted in unknown state: port "nope" not found in the container's ports"#
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.manager.should_restart("uid-1", &h.id), None);
    assert!(h.updates.try_recv().is_err());
}
