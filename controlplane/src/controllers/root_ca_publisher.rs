//! The root CA publisher: a `kube-root-ca.crt` ConfigMap holding the cluster CA under `ca.crt`
//! in every active namespace, re-created when deleted and restored when changed, so the
//! `kube-api-access-*` volume of every pod can verify the API server
//! (upstream's pkg/controller/certificates/rootcacertpublisher).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::Context;
use crate::registry::admission_serviceaccount::ROOT_CA_CONFIG_MAP;

/// The key of the CA bundle in the ConfigMap.
pub const CA_KEY: &str = "ca.crt";
/// The annotation describing what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Its value, as upstream publishes it (clients may show it).
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: kube::Client,
    root_ca: String,
}

/// Runs the loop until shutdown. Without a CA (`ControllerOptions::root_ca_cert`) there is
/// nothing to publish: it says so once and waits.
pub async fn run(ctx: Context) -> Result<(), String> {
    let Some(root_ca) = ctx.options.root_ca_cert.clone() else {
        tracing::warn!("no cluster CA configured; kube-root-ca.crt is not published");
        ctx.shutdown.cancelled().await;
        return Ok(());
    };
    let client = ctx.client.clone();
    let by_name = watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIG_MAP}"));
    let shared = Arc::new(Ctx {
        client: client.clone(),
        root_ca,
    });
    let stream = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(Api::<ConfigMap>::all(client), by_name, |cm: ConfigMap| {
        cm.metadata
            .namespace
            .map(|ns| ObjectRef::<Namespace>::new(&ns))
    })
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, common::error_policy, shared);
    common::drive(stream, JoinSet::new(), ctx.shutdown).await
}

/// What the ConfigMap's data must be.
fn wanted_data(root_ca: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CA_KEY.to_string(), root_ca.to_string())])
}

/// Whether `cm` already publishes `root_ca` with its description, as upstream compares.
pub fn is_current(cm: &ConfigMap, root_ca: &str) -> bool {
    cm.data.as_ref() == Some(&wanted_data(root_ca))
        && cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .is_some_and(|d| !d.is_empty())
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    if !active {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    // Read live rather than from a reflector: the ConfigMap watch that triggered this
    // reconcile may be ahead of any cache, and a stale "already current" would miss a deletion.
    let current = api
        .get_opt(ROOT_CA_CONFIG_MAP)
        .await
        .map_err(api_err(format!(
            "get configmap {name}/{ROOT_CA_CONFIG_MAP}"
        )))?;
    match current {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIG_MAP.into()),
                    namespace: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(wanted_data(&ctx.root_ca)),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                // Created meanwhile (its watch event follows), or the namespace is gone or
                // terminating: as upstream, nothing to retry.
                Err(e)
                    if common::is_conflict(&e)
                        || matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 404) => {}
                Err(e) => {
                    return Err(api_err(format!(
                        "create configmap {name}/{ROOT_CA_CONFIG_MAP}"
                    ))(e))
                }
            }
        }
        Some(cm) if is_current(&cm, &ctx.root_ca) => {}
        Some(cm) => {
            let mut cm = cm;
            cm.data = Some(wanted_data(&ctx.root_ca));
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string());
            // The read resourceVersion makes a concurrent change a conflict, retried.
            match api
                .replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                .await
            {
                Ok(_) => {}
                Err(e) if common::is_not_found(&e) => {}
                Err(e) => {
                    return Err(api_err(format!(
                        "update configmap {name}/{ROOT_CA_CONFIG_MAP}"
                    ))(e))
                }
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_needs_the_ca_and_a_description() {
        let mut cm = ConfigMap {
            data: Some(wanted_data("PEM")),
            ..Default::default()
        };
        assert!(!is_current(&cm, "PEM"));
        cm.metadata.annotations = Some(BTreeMap::from([(
            DESCRIPTION_ANNOTATION.to_string(),
            "anything".to_string(),
        )]));
        assert!(is_current(&cm, "PEM"));
        assert!(!is_current(&cm, "OTHER"));
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert("extra".into(), "x".into());
        assert!(!is_current(&cm, "PEM"));
    }
}
