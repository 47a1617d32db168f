//! The EndpointSlice controller: per Service with a selector, slices of at most 100
//! endpoints from the matching pods, grouped by resolved ports, as upstream's
//! pkg/controller/endpointslice (reconciler.go).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::informers::Informers;
use super::Context;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the slice's manager.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
}

/// How often every Service is reconciled even without a change.
const RESYNC: Duration = Duration::from_secs(5);

/// Runs the loop until shutdown, on the shared pod and node informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let mut tasks = JoinSet::new();
    let pods = shared.pods()?;
    let nodes = shared.nodes()?;
    pods.ready().await?;
    nodes.ready().await?;
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={CONTROLLER_NAME}"));
    let slices = common::spawn_reflector(
        &mut tasks,
        Api::<EndpointSlice>::all(client.clone()),
        managed.clone(),
        "endpointslices",
    );
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let state = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        slices,
    });
    let stream = controller
        .owns(Api::<EndpointSlice>::all(client), managed)
        .watches_shared_stream(pods.changes(), move |pod: Arc<Pod>| {
            services_of(&services, &pod)
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, common::error_policy, state);
    common::drive(stream, tasks, ctx.shutdown).await
}

/// The Services in the pod's namespace whose selector matches it.
pub fn services_of(store: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let labels = common::labels_of(&pod.metadata);
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace == pod.metadata.namespace)
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.selector.as_ref())
                .is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The pods a Service selects that can be endpoints: matching, with an IP, not terminal.
pub fn selected_pods(svc: &Service, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let mut out: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.namespace == svc.metadata.namespace)
        .filter(|p| {
            let l = common::labels_of(&p.metadata);
            sel.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .cloned()
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// The port a service port targets on `pod`: a number as is, a name looked up in the pod's
/// container ports (`None` when the pod has no such port), as upstream's `FindPort`.
pub fn resolve_port(
    target: Option<&IntOrString>,
    port: i32,
    protocol: &str,
    pod: &Pod,
) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(0)) => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The endpoint ports of `svc` for `pod` (unresolvable named ports are left out).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = resolve_port(sp.target_port.as_ref(), sp.port, &protocol, pod)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// `IPv4` or `IPv6`, from the Service's first IP family.
pub fn address_type(svc: &Service) -> &'static str {
    match svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .map(String::as_str)
    {
        Some("IPv6") => "IPv6",
        _ => "IPv4",
    }
}

/// The endpoint for `pod` in a slice of `address_type`, if it has an address of that family.
pub fn endpoint_for(
    svc: &Service,
    pod: &Pod,
    address_type: &str,
    zones: &BTreeMap<String, String>,
) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.clone());
    }
    let ip = ips
        .into_iter()
        .find(|ip| ip.contains(':') == (address_type == "IPv6"))?;
    let ready = common::pod_is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let spec = pod.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.clone());
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|_| spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref());
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some((ready || publish) && !terminating),
            serving: Some(ready || publish),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: node.clone(),
        zone: node.and_then(|n| zones.get(&n).cloned()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        deprecated_topology: None,
        hints: None,
    })
}

fn ports_key(ports: &[EndpointPort]) -> String {
    let mut ps: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}",
                p.name.clone().unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
                p.port.unwrap_or(0)
            )
        })
        .collect();
    ps.sort();
    ps.join(",")
}

/// The desired slices' contents: (ports, endpoints) groups of at most
/// [`MAX_ENDPOINTS_PER_SLICE`], in a stable order.
pub fn desired(
    svc: &Service,
    pods: &[Arc<Pod>],
    zones: &BTreeMap<String, String>,
) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let at = address_type(svc);
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in selected_pods(svc, pods) {
        let Some(ep) = endpoint_for(svc, &pod, at, zones) else {
            continue;
        };
        let ports = endpoint_ports(svc, &pod);
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(ep);
    }
    let mut out = Vec::new();
    for (_, (ports, eps)) in groups {
        for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    out
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.pods, "pods").await?;
    common::ready(&ctx.nodes, "nodes").await?;
    common::ready(&ctx.slices, "endpointslices").await?;
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if !has_selector || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let zones: BTreeMap<String, String> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            Some((
                n.name_any(),
                n.labels().get("topology.kubernetes.io/zone")?.clone(),
            ))
        })
        .collect();
    let want = desired(&svc, &common::pods_in(&ctx.pods, &ns), &zones);
    let at = address_type(&svc);
    let mut existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME) == Some(&name)
        })
        .filter(|s| {
            common::is_controlled_by(&s.metadata, svc.metadata.uid.as_deref().unwrap_or_default())
        })
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    // Reuse slices in order: same address type and ports first, any other after.
    let mut used = vec![false; existing.len()];
    let mut pending = Vec::new();
    for (ports, eps) in want {
        let key = ports_key(&ports);
        let same = existing.iter().enumerate().position(|(i, s)| {
            !used[i]
                && s.address_type == at
                && ports_key(s.ports.as_deref().unwrap_or_default()) == key
        });
        match same {
            Some(i) => {
                used[i] = true;
                let cur = &existing[i];
                if cur.endpoints != eps || cur.labels() != &labels {
                    let mut slice = cur.as_ref().clone();
                    slice.endpoints = eps;
                    slice.metadata.labels = Some(labels.clone());
                    api.replace(&slice.name_any(), &PostParams::default(), &slice)
                        .await
                        .map_err(api_err(format!(
                            "update endpointslice {ns}/{}",
                            slice.name_any()
                        )))?;
                }
            }
            None => pending.push((ports, eps)),
        }
    }
    for (ports, eps) in pending {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![common::new_controller_ref(svc.as_ref())]),
                ..Default::default()
            },
            address_type: at.into(),
            endpoints: eps,
            ports: Some(ports),
        };
        api.create(&PostParams::default(), &slice)
            .await
            .map_err(api_err(format!("create endpointslice for {ns}/{name}")))?;
    }
    // A Service with no endpoints keeps one empty slice, as upstream (placeholder).
    let any_used = used.iter().any(|u| *u);
    let mut kept_placeholder = any_used;
    for (i, s) in existing.iter().enumerate() {
        if used[i] {
            continue;
        }
        if !kept_placeholder && s.endpoints.is_empty() {
            kept_placeholder = true;
            continue;
        }
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if common::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_err(format!(
                    "delete endpointslice {ns}/{}",
                    s.name_any()
                ))(e))
            }
        }
    }
    if !kept_placeholder && existing.is_empty() {
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![common::new_controller_ref(svc.as_ref())]),
                ..Default::default()
            },
            address_type: at.into(),
            endpoints: Vec::new(),
            ports: None,
        };
        api.create(&PostParams::default(), &slice)
            .await
            .map_err(api_err(format!("create endpointslice for {ns}/{name}")))?;
    }
    // Pods trigger through one watch and are read from another store: a trigger can beat its
    // store update. The reconcile reads only local stores and writes nothing when nothing
    // changed, so a short resync bounds that race cheaply.
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, deleting: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let s = svc(IntOrString::Int(8080));
        let zones = [("n1".to_string(), "z1".to_string())].into();
        let pods = vec![
            pod("a", "10.0.0.1", true, false, 8080),
            pod("b", "10.0.0.2", false, false, 8080),
            pod("c", "10.0.0.3", true, true, 8080),
        ];
        let got = desired(&s, &pods, &zones);
        assert_eq!(got.len(), 1);
        let conds: Vec<(bool, bool, bool)> = got[0]
            .1
            .iter()
            .map(|e| {
                let c = e.conditions.clone().expect("conditions");
                (
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                )
            })
            .collect();
        assert_eq!(
            conds,
            vec![
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(got[0].1[0].zone.as_deref(), Some("z1"));
        assert_eq!(got[0].0[0].port, Some(8080));
    }

    #[test]
    fn named_ports_split_slices() {
        let s = svc(IntOrString::String("http".into()));
        let pods = vec![
            pod("a", "10.0.0.1", true, false, 8080),
            pod("b", "10.0.0.2", true, false, 9090),
            pod("c", "10.0.0.3", true, false, 8080),
        ];
        let got = desired(&s, &pods, &BTreeMap::new());
        let mut shapes: Vec<(Option<i32>, usize)> =
            got.iter().map(|(p, e)| (p[0].port, e.len())).collect();
        shapes.sort();
        assert_eq!(shapes, vec![(Some(8080), 2), (Some(9090), 1)]);
    }

    #[test]
    fn slices_hold_at_most_100() {
        let s = svc(IntOrString::Int(80));
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.0.{}.{}", i / 200, i % 200),
                    true,
                    false,
                    80,
                )
            })
            .collect();
        let sizes: Vec<usize> = desired(&s, &pods, &BTreeMap::new())
            .iter()
            .map(|(_, e)| e.len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
