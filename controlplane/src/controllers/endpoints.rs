//! The Endpoints controller: the legacy v1 Endpoints of each Service with a selector, as
//! upstream's pkg/controller/endpoint. Services without a selector (the `kubernetes`
//! Service among them) are left alone: their Endpoints belong to someone else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::endpointslice::{endpoint_ports, selected_pods, services_of};
use super::informers::Informers;
use super::Context;

/// Label the endpoints controller puts on its Endpoints so the mirroring controller skips them.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

/// How often every Service is reconciled even without a change.
const RESYNC: Duration = Duration::from_secs(5);

/// Runs the loop until shutdown.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let mut tasks = JoinSet::new();
    let pod_informer = shared.pods()?;
    pod_informer.ready().await?;
    let pods = pod_informer.store();
    let endpoints = common::spawn_reflector(
        &mut tasks,
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        "endpoints",
    );
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let shared = Arc::new(Ctx {
        client: client.clone(),
        pods,
        endpoints,
    });
    // Endpoints of deleted Services are removed by a sweep over the stores (upstream does it
    // on the Service delete event, which a level-triggered Controller does not see).
    let sweeper = sweep(shared.clone(), services.clone(), ctx.shutdown.clone());
    tasks.spawn(sweeper);
    let stream = controller
        .watches_shared_stream(pod_informer.changes(), move |pod: Arc<Pod>| {
            services_of(&services, &pod)
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, common::error_policy, shared);
    common::drive(stream, tasks, ctx.shutdown).await
}

async fn sweep(
    ctx: Arc<Ctx>,
    services: Store<Service>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let ready = async {
        services.wait_until_ready().await.is_ok() && ctx.endpoints.wait_until_ready().await.is_ok()
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ok = ready => if !ok { return },
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for ep in ctx.endpoints.state() {
            if ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true") {
                continue;
            }
            let ns = ep.namespace().unwrap_or_default();
            let key =
                kube::runtime::reflector::ObjectRef::<Service>::new(&ep.name_any()).within(&ns);
            if services.get(&key).is_none() {
                let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
                if let Err(err) = api.delete(&ep.name_any(), &DeleteParams::default()).await {
                    if !common::is_not_found(&err) {
                        tracing::warn!(endpoints = %ep.name_any(), error = %err, "delete endpoints of a deleted service");
                    }
                }
            }
        }
    }
}

/// The subsets of a Service's Endpoints (upstream groups addresses by identical port sets;
/// ready pods in `addresses`, not-ready and non-terminating in `notReadyAddresses`).
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for pod in selected_pods(svc, pods) {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && !publish {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let ports: Vec<EndpointPort> = endpoint_ports(svc, &pod)
            .into_iter()
            .map(|p| EndpointPort {
                name: p.name.filter(|n| !n.is_empty()),
                port: p.port.unwrap_or(0),
                protocol: p.protocol,
                app_protocol: p.app_protocol,
            })
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let addr = EndpointAddress {
            ip,
            hostname: None,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let subset = groups.entry(key).or_insert_with(|| EndpointSubset {
            ports: Some(ports),
            ..Default::default()
        });
        if common::pod_is_ready(&pod) || publish {
            subset.addresses.get_or_insert_with(Vec::new).push(addr);
        } else {
            subset
                .not_ready_addresses
                .get_or_insert_with(Vec::new)
                .push(addr);
        }
    }
    groups.into_values().collect()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.pods, "pods").await?;
    common::ready(&ctx.endpoints, "endpoints").await?;
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if !has_selector || svc.labels().contains_key(SKIP_MIRROR) && svc.name_any() == "kubernetes" {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let subsets = subsets(&svc, &common::pods_in(&ctx.pods, &ns));
    let mut labels = svc.labels().clone();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let key = kube::runtime::reflector::ObjectRef::<Endpoints>::new(&name).within(&ns);
    let want_subsets = (!subsets.is_empty()).then_some(subsets);
    match ctx.endpoints.get(&key) {
        Some(cur) => {
            if cur.subsets.clone().filter(|s| !s.is_empty()) != want_subsets
                || cur.labels() != &labels
            {
                let mut ep = cur.as_ref().clone();
                ep.subsets = want_subsets;
                ep.metadata.labels = Some(labels);
                api.replace(&name, &PostParams::default(), &ep)
                    .await
                    .map_err(api_err(format!("update endpoints {ns}/{name}")))?;
            }
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets: want_subsets,
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                // Created meanwhile (the store lags): the next sync updates it.
                Err(e) if common::is_conflict(&e) => {
                    return Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(e) => return Err(api_err(format!("create endpoints {ns}/{name}"))(e)),
            }
        }
    }
    // Pods trigger through one watch and are read from another store: a trigger can beat its
    // store update. The reconcile reads only local stores and writes nothing when nothing
    // changed, so a short resync bounds that race cheaply.
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
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
    fn ready_and_not_ready_addresses() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "x".to_string())].into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let got = subsets(
            &svc,
            &[pod("a", "10.0.0.1", true), pod("b", "10.0.0.2", false)],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].addresses.as_ref().map(|a| a[0].ip.clone()),
            Some("10.0.0.1".into())
        );
        assert_eq!(
            got[0].not_ready_addresses.as_ref().map(|a| a[0].ip.clone()),
            Some("10.0.0.2".into())
        );
        assert_eq!(got[0].ports.as_ref().map(|p| p[0].port), Some(8080));
    }
}
