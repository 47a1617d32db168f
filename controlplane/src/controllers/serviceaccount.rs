//! The service account controller: a `default` ServiceAccount in every active namespace,
//! recreated when deleted, as upstream's pkg/controller/serviceaccount.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::Context;

/// The ServiceAccounts every namespace gets.
pub const DEFAULT_ACCOUNTS: &[&str] = &["default"];

struct Ctx {
    client: kube::Client,
    accounts: Store<ServiceAccount>,
}

/// Runs the loop until shutdown.
pub async fn run(ctx: Context) -> Result<(), String> {
    let client = ctx.client.clone();
    let mut tasks = JoinSet::new();
    let by_name = watcher::Config::default();
    let accounts = common::spawn_reflector(
        &mut tasks,
        Api::<ServiceAccount>::all(client.clone()),
        by_name.clone(),
        "serviceaccounts",
    );
    tasks.spawn(sweep(client.clone(), ctx.shutdown.clone()));
    let shared = Arc::new(Ctx {
        client: client.clone(),
        accounts,
    });
    let stream = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client),
        by_name,
        |sa: ServiceAccount| {
            sa.metadata
                .namespace
                .map(|ns| ObjectRef::<Namespace>::new(&ns))
        },
    )
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, common::error_policy, shared);
    common::drive(stream, tasks, ctx.shutdown).await
}

/// A safety net beside the watch-driven loop: every few seconds, read namespaces and accounts
/// straight from the API and create what is missing. Under heavy load at start-up the
/// controller was seen to never reconcile some bootstrap namespaces (cause not found yet), which
/// left them without `default` and every pod create there refused.
async fn sweep(client: kube::Client, shutdown: tokio_util::sync::CancellationToken) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
        let list = match namespaces.list(&Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "serviceaccount sweep: list namespaces");
                continue;
            }
        };
        for ns in list.items {
            let active = ns.metadata.deletion_timestamp.is_none()
                && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
            if !active {
                continue;
            }
            let name = ns.name_any();
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
            for account in DEFAULT_ACCOUNTS {
                match api.get_opt(account).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "serviceaccount sweep: get");
                        continue;
                    }
                }
                let sa = ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some((*account).into()),
                        namespace: Some(name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &sa).await {
                    Ok(_) => {
                        tracing::warn!(namespace = %name, account, "serviceaccount created by the sweep: the watch-driven loop missed it")
                    }
                    Err(e) => {
                        tracing::debug!(namespace = %name, error = %e, "serviceaccount sweep: create")
                    }
                }
            }
        }
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.accounts, "serviceaccounts").await?;
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    for account in DEFAULT_ACCOUNTS {
        if ctx
            .accounts
            .get(&ObjectRef::new(account).within(&name))
            .is_some()
        {
            continue;
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some((*account).into()),
                namespace: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            // Exists already (the store lags) or the namespace started terminating.
            Err(e)
                if common::is_conflict(&e)
                    || matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 404) =>
            {
                tracing::debug!(namespace = %name, error = %e, "serviceaccount create refused");
            }
            Err(e) => {
                return Err(api_err(format!("create serviceaccount {name}/{account}"))(
                    e,
                ))
            }
        }
    }
    // The deletion trigger comes through another watch than the store, so it can beat the
    // store's update; a short resync that reads only the local store closes that gap.
    Ok(Action::requeue(Duration::from_secs(5)))
}
