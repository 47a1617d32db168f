//! healthCheckNodePort servers: one HTTP server per LoadBalancer Service with
//! `externalTrafficPolicy: Local`, answering 200 while this node has a ready local endpoint
//! for it and 503 otherwise, so a load balancer sends traffic only to nodes that keep it. As
//! upstream's `ServiceHealthServer` (kubernetes/kubernetes pkg/proxy/healthcheck/service_health.go).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use oxlet_netrules::Model;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::healthz::ProxyHealth;
use crate::service_change_tracker::lock;

/// A Service's namespace and name.
pub type ServiceKey = (String, String);

/// The health check ports the model asks for: Services with a Local external policy and a
/// `healthCheckNodePort` (the model keeps the port only for those).
pub fn health_check_ports(model: &Model) -> BTreeMap<ServiceKey, u16> {
    model
        .services
        .iter()
        .filter_map(|(name, svc)| {
            let port = svc.health_check_node_port?;
            Some(((name.namespace.clone(), name.name.clone()), port))
        })
        .collect()
}

/// Ready endpoints on this node per Service, counted by address across its ports (one pod
/// serving two ports is one endpoint), as upstream's `LocalReadyEndpoints`. Terminating
/// endpoints do not count: the node should fail the check while only those remain.
pub fn local_ready_endpoints(model: &Model) -> BTreeMap<ServiceKey, usize> {
    let mut ips: BTreeMap<ServiceKey, BTreeSet<IpAddr>> = BTreeMap::new();
    for (name, svc) in &model.services {
        for ep in svc.endpoints.iter().filter(|e| e.is_local && e.ready) {
            ips.entry((name.namespace.clone(), name.name.clone()))
                .or_default()
                .insert(ep.ip);
        }
    }
    ips.into_iter().map(|(k, v)| (k, v.len())).collect()
}

/// The JSON body, fields in upstream's order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckBody {
    /// The Service.
    pub service: ServiceRef,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
    /// Whether the proxy itself is healthy (a recent successful sync).
    pub service_proxy_healthy: bool,
}

/// `{"namespace": …, "name": …}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
}

/// The status code for a check: 200 only with local endpoints and a healthy proxy.
pub fn status_for(local_endpoints: usize, proxy_healthy: bool) -> StatusCode {
    if local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

struct Instance {
    port: u16,
    endpoints: Arc<AtomicUsize>,
    stop: CancellationToken,
}

/// The set of running health check servers, reconciled after each sync.
pub struct ServiceHealthServer {
    addresses: Mutex<Vec<IpAddr>>,
    netns: Option<String>,
    proxy: Arc<ProxyHealth>,
    recorder: Option<Recorder>,
    node_name: String,
    services: Mutex<BTreeMap<ServiceKey, Instance>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl ServiceHealthServer {
    /// No servers yet. `proxy` answers `serviceProxyHealthy`; failures to listen become
    /// Warning events on the Service when `recorder` is given; with `netns` (a path,
    /// oxlet-specific, for tests) sockets are opened inside that network namespace. Servers
    /// stop on `shutdown`.
    pub fn new(
        node_name: String,
        proxy: Arc<ProxyHealth>,
        recorder: Option<Recorder>,
        netns: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            addresses: Mutex::new(Vec::new()),
            netns,
            proxy,
            recorder,
            node_name,
            services: Mutex::new(BTreeMap::new()),
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    /// Sets the addresses servers opened from now on listen on (running ones keep their
    /// sockets); empty means every address (`[::]`, IPv4 included), as upstream without
    /// `nodePortAddresses`.
    pub fn set_addresses(&self, addresses: Vec<IpAddr>) {
        *lock(&self.addresses) = addresses;
    }

    /// Closes every server and waits until they have stopped.
    pub async fn shutdown(&self) {
        self.close_all();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The ports currently served, by Service.
    pub fn ports(&self) -> BTreeMap<ServiceKey, u16> {
        lock(&self.services)
            .iter()
            .map(|(k, i)| (k.clone(), i.port))
            .collect()
    }

    /// Opens servers for new Services (or changed ports) and closes those no longer wanted.
    /// A port that cannot be opened is logged and reported as an event, and tried again on
    /// the next sync.
    pub async fn sync_services(&self, wanted: &BTreeMap<ServiceKey, u16>) {
        let to_open: Vec<(ServiceKey, u16)> = {
            let mut services = lock(&self.services);
            services.retain(|key, inst| {
                let keep = wanted.get(key) == Some(&inst.port);
                if !keep {
                    tracing::info!(service = %format!("{}/{}", key.0, key.1), port = inst.port, "closing health check");
                    inst.stop.cancel();
                }
                keep
            });
            wanted
                .iter()
                .filter(|(k, _)| !services.contains_key(*k))
                .map(|(k, p)| (k.clone(), *p))
                .collect()
        };
        for (key, port) in to_open {
            match self.open(&key, port) {
                Ok(inst) => {
                    tracing::info!(service = %format!("{}/{}", key.0, key.1), port, "opened health check");
                    lock(&self.services).insert(key, inst);
                }
                Err(err) => {
                    let msg = format!(
                        "node {} failed to start healthcheck \"{}/{}\" on port {port}: {err}",
                        self.node_name, key.0, key.1
                    );
                    tracing::error!(service = %format!("{}/{}", key.0, key.1), port, %err, "failed to start health check");
                    self.warn(&key, msg).await;
                }
            }
        }
    }

    /// Sets the local endpoint counts; Services missing from `counts` have none.
    pub fn sync_endpoints(&self, counts: &BTreeMap<ServiceKey, usize>) {
        for (key, inst) in lock(&self.services).iter() {
            let n = counts.get(key).copied().unwrap_or(0);
            inst.endpoints.store(n, Ordering::Relaxed);
        }
    }

    /// Closes every server.
    pub fn close_all(&self) {
        for inst in lock(&self.services).values() {
            inst.stop.cancel();
        }
        lock(&self.services).clear();
    }

    fn open(&self, key: &ServiceKey, port: u16) -> std::io::Result<Instance> {
        let addresses = lock(&self.addresses).clone();
        let netns = self.netns.as_deref();
        let addrs: Vec<SocketAddr> = if addresses.is_empty() {
            vec![SocketAddr::new(IpAddr::from([0u16; 8]), port)]
        } else {
            addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        };
        // All sockets first: a port taken on one address opens nothing.
        let mut listeners = Vec::new();
        for addr in addrs {
            let l = match bind(addr, netns) {
                Ok(l) => l,
                // A host without IPv6: the IPv4 wildcard instead.
                Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
                    tracing::debug!(%e, "cannot listen on [::], using 0.0.0.0");
                    bind(SocketAddr::new(IpAddr::from([0u8; 4]), port), netns)?
                }
                Err(e) => return Err(e),
            };
            listeners.push(l);
        }
        let endpoints = Arc::new(AtomicUsize::new(0));
        let stop = self.shutdown.child_token();
        let service = ServiceRef {
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        for l in listeners {
            l.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(l)?;
            let router = router(service.clone(), endpoints.clone(), self.proxy.clone());
            let stop = stop.clone();
            let span = tracing::info_span!("service_health", service = %format!("{}/{}", service.namespace, service.name), port);
            // Ends when the check is closed or the proxy shuts down (`stop` is a child of
            // its token); tracked so shutdown can wait for it.
            self.tasks.spawn(
                async move {
                    if let Err(err) = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        tracing::error!(%err, "health check server failed");
                    }
                }
                .instrument(span),
            );
        }
        Ok(Instance {
            port,
            endpoints,
            stop,
        })
    }

    async fn warn(&self, key: &ServiceKey, note: String) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "FailedToStartServiceHealthcheck".into(),
            note: Some(note),
            action: "Listen".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(key.0.clone()),
            name: Some(key.1.clone()),
            ..Default::default()
        };
        if let Err(err) = recorder.publish(&ev, &reference).await {
            tracing::debug!(%err, "event not recorded");
        }
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        self.close_all();
    }
}

fn router(service: ServiceRef, endpoints: Arc<AtomicUsize>, proxy: Arc<ProxyHealth>) -> Router {
    // Any path answers, as upstream's handler.
    Router::new().fallback(move || {
        let (service, endpoints, proxy) = (service.clone(), endpoints.clone(), proxy.clone());
        async move {
            let local_endpoints = endpoints.load(Ordering::Relaxed);
            let healthy = proxy.check(SystemTime::now()).0;
            let body = HealthCheckBody {
                service,
                local_endpoints,
                service_proxy_healthy: healthy,
            };
            let mut resp: Response =
                (status_for(local_endpoints, healthy), axum::Json(body)).into_response();
            resp.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
    })
}

/// Binds `addr`, inside the network namespace at `netns` if given: the socket is created by a
/// thread that joined the namespace, and keeps that namespace once handed back.
fn bind(addr: SocketAddr, netns: Option<&str>) -> std::io::Result<std::net::TcpListener> {
    let Some(path) = netns else {
        return std::net::TcpListener::bind(addr);
    };
    let file = std::fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            std::net::TcpListener::bind(addr)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("bind thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxlet_netrules::{Endpoint, Protocol, ServicePort, ServicePortName};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn ports_and_local_ready_endpoints_per_service() {
        let mut m = Model::default();
        let mut http = ServicePort::new(vec![ip("172.30.0.1")], 80);
        http.health_check_node_port = Some(31000);
        http.endpoints = vec![
            Endpoint::ready(ip("10.0.1.1"), 8080, true),
            Endpoint::ready(ip("10.0.1.2"), 8080, false),
            Endpoint::terminating(ip("10.0.1.3"), 8080, true),
        ];
        let mut https = http.clone();
        https.port = 443;
        https.endpoints = vec![
            Endpoint::ready(ip("10.0.1.1"), 8443, true),
            Endpoint::ready(ip("10.0.1.4"), 8443, true),
        ];
        m.services.insert(
            ServicePortName::new("ns", "lb", "http", Protocol::Tcp),
            http,
        );
        m.services.insert(
            ServicePortName::new("ns", "lb", "https", Protocol::Tcp),
            https,
        );
        m.services.insert(
            ServicePortName::new("ns", "plain", "", Protocol::Tcp),
            ServicePort::new(vec![ip("172.30.0.2")], 80),
        );
        let key = ("ns".to_string(), "lb".to_string());
        assert_eq!(health_check_ports(&m), [(key.clone(), 31000)].into());
        // 10.0.1.1 serves two ports: one endpoint; the terminating one does not count.
        assert_eq!(local_ready_endpoints(&m), [(key, 2)].into());
    }

    #[test]
    fn body_and_status_match_upstream() {
        let body = HealthCheckBody {
            service: ServiceRef {
                namespace: "ns".into(),
                name: "lb".into(),
            },
            local_endpoints: 2,
            service_proxy_healthy: true,
        };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"service":{"namespace":"ns","name":"lb"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
        assert_eq!(status_for(2, true), StatusCode::OK);
        assert_eq!(status_for(0, true), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for(1, false), StatusCode::SERVICE_UNAVAILABLE);
    }
}
