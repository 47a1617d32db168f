//! The namespace controller: empties a namespace being deleted, then removes the
//! `kubernetes` finalizer through `/finalize`, as upstream's pkg/controller/namespace
//! (deletion/namespaced_resources_deleter.go). Resources come from discovery, so any
//! namespaced resource of any API server is covered.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::common::{self, api_err, Result};
use super::Context;

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: kube::Client,
}

/// Runs the loop until shutdown.
pub async fn run(ctx: Context) -> Result<(), String> {
    let shared = Arc::new(Ctx {
        client: ctx.client.clone(),
    });
    let stream = Controller::new(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, common::error_policy, shared);
    common::drive(stream, tokio::task::JoinSet::new(), ctx.shutdown).await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let remaining = delete_content(&ctx.client, &name).await?;
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "waiting for content to go");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut body = ns.as_ref().clone();
    if let Some(spec) = body.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => {}
        Err(e) if common::is_not_found(&e) => {}
        Err(e) => return Err(api_err(format!("finalize namespace {name}"))(e)),
    }
    Ok(Action::await_change())
}

/// Deletes every namespaced object in `ns` (deletecollection where supported), returns how
/// many still exist. Pods are deleted gracefully: they go once their kubelet confirms.
async fn delete_content(client: &kube::Client, ns: &str) -> Result<usize> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(api_err("discover resources"))?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) if common::is_not_found(&e) => continue,
                Err(e) => return Err(api_err(format!("list {} in {ns}", ar.plural))(e)),
            };
            if list.items.is_empty() {
                continue;
            }
            remaining += list.items.len();
            let live = list
                .items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .count();
            if live == 0 {
                continue;
            }
            let dp = DeleteParams::background();
            if caps.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&dp, &ListParams::default())
                    .await
                    .map_err(api_err(format!("delete {} in {ns}", ar.plural)))?;
            } else {
                for o in list
                    .items
                    .iter()
                    .filter(|o| o.metadata.deletion_timestamp.is_none())
                {
                    match api.delete(&o.name_any(), &dp).await {
                        Ok(_) => {}
                        Err(e) if common::is_not_found(&e) => {}
                        Err(e) => {
                            return Err(api_err(format!(
                                "delete {} {ns}/{}",
                                ar.plural,
                                o.name_any()
                            ))(e))
                        }
                    }
                }
            }
        }
    }
    Ok(remaining)
}
