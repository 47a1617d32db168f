//! REST semantics of `oxlet server` through kube-rs (the client the kubelet and proxy use), on
//! SQLite and on etcd: optimistic concurrency, generateName, generation, finalizers, graceful pod
//! deletion, selectors, pagination, watch (bookmarks, 410 after compaction), subresources,
//! validation and request limits.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use oxlet_e2e::server::{Backend, TestServer};
use serde_json::json;

async fn client_for(server: &TestServer) -> Result<Client> {
    let kc = Kubeconfig::read_from(server.kubeconfig())?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn start(backend: Backend) -> Result<TestServer> {
    TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_oxlet")),
        backend,
        &[
            "--etcd-compaction-interval",
            "1s",
            "--default-watch-cache-size",
            "10",
        ],
    )
}

fn api_error(e: kube::Error) -> Result<kube::core::Status> {
    match e {
        kube::Error::Api(s) => Ok(*s),
        other => bail!("expected an API error, got {other}"),
    }
}

fn cm(name: &str, data: serde_json::Value) -> Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": data}),
    )?)
}

async fn semantics(client: Client) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // create: uid, creationTimestamp, resourceVersion; duplicate → 409.
    let a = cms.create(&pp, &cm("a", json!({"k": "1"}))?).await?;
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    let rv1 = a.metadata.resource_version.clone().context("rv")?;
    let dup = api_error(
        cms.create(&pp, &cm("a", json!({}))?)
            .await
            .expect_err("duplicate"),
    )?;
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    // generateName
    let mut gen = cm("", json!({}))?;
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("gen-".into());
    let g = cms.create(&pp, &gen).await?;
    let gname = g.metadata.name.clone().context("generated name")?;
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // update with a stale resourceVersion → 409 Conflict; fresh one succeeds.
    let mut b = a.clone();
    b.data = Some([("k".to_string(), "2".to_string())].into());
    let b = cms.replace("a", &pp, &b).await?;
    assert_ne!(b.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    let mut stale = a.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = api_error(cms.replace("a", &pp, &stale).await.expect_err("stale"))?;
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );

    // namespaces must exist
    let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let e = api_error(
        nowhere
            .create(&pp, &cm("x", json!({}))?)
            .await
            .expect_err("no namespace"),
    )?;
    assert_eq!(e.code, 404);
    assert!(
        e.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        e.message
    );

    // selectors and pagination
    for i in 0..5 {
        let mut c = cm(&format!("page-{i}"), json!({}))?;
        c.metadata.labels = Some(
            [(
                "set".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        cms.create(&pp, &c).await?;
    }
    let even = cms.list(&ListParams::default().labels("set=even")).await?;
    assert_eq!(even.items.len(), 3);
    let one = cms
        .list(&ListParams::default().fields("metadata.name=page-3"))
        .await?;
    assert_eq!(one.items.len(), 1);
    let bad = api_error(
        cms.list(&ListParams::default().fields("spec.nope=1"))
            .await
            .expect_err("bad field"),
    )?;
    assert_eq!(bad.code, 400);
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels("set").limit(2);
    loop {
        let page = cms.list(&lp).await?;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(
        names,
        (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>()
    );

    // finalizers: delete marks, removing the finalizer deletes.
    let mut f = cm("fin", json!({}))?;
    f.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp, &f).await?;
    cms.delete("fin", &DeleteParams::default()).await?;
    let held = cms.get("fin").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(cms.get_opt("fin").await?.is_none());

    // watch from a resourceVersion: MODIFIED then DELETED, bookmarks on request.
    let rv = cms
        .get("a")
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let wp = WatchParams::default().fields("metadata.name=a").timeout(30);
    let mut stream = cms.watch(&wp, &rv).await?.boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "watched"}})),
    )
    .await?;
    cms.delete("a", &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Modified(c)))) => {
                seen.push(format!("MODIFIED {}", c.data.unwrap_or_default()["k"]))
            }
            Ok(Ok(Some(WatchEvent::Deleted(_)))) => seen.push("DELETED".into()),
            Ok(Ok(Some(WatchEvent::Bookmark(_)))) => {}
            other => bail!("unexpected watch result: {other:?} after {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        vec!["MODIFIED watched".to_string(), "DELETED".to_string()]
    );

    // 410 Gone for a watch from before compaction (the server compacts every second).
    for i in 0..20 {
        cms.patch(
            "page-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut s = cms
            .watch(&WatchParams::default().timeout(5), "2")
            .await?
            .boxed();
        match tokio::time::timeout(Duration::from_secs(10), s.try_next()).await {
            Ok(Ok(Some(WatchEvent::Error(e)))) if e.code == 410 => break,
            Ok(Err(kube::Error::Api(e))) if e.code == 410 => break,
            other if tokio::time::Instant::now() > deadline => {
                bail!("no 410 for a compacted watch: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }

    // generation and the status subresource
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))?;
    let d = deploys.create(&pp, &d).await?;
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(
        d.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "defaulted replicas"
    );
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 9}})),
        )
        .await?;
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(
        d.status.as_ref().and_then(|s| s.replicas),
        None,
        "status ignored on the main resource"
    );
    let d = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(d.status.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(
        d.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "spec ignored on /status"
    );
    assert_eq!(d.metadata.generation, Some(2));
    let scale = deploys.get_scale("web").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    assert_eq!(
        deploys.get("web").await?.spec.and_then(|s| s.replicas),
        Some(5)
    );

    // 422 with field paths; strict field validation.
    let invalid: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "Bad_Name"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))?;
    let e = api_error(deploys.create(&pp, &invalid).await.expect_err("invalid"))?;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("metadata.name"), "{}", e.message);
    assert!(
        e.message
            .contains("spec.template.spec.containers[0].image: Required value"),
        "{}",
        e.message
    );
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo"}, "datta": {"a": "b"}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps?fieldValidation=Strict")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&unknown)?)?;
    let e = api_error(client.request::<ConfigMap>(req).await.expect_err("strict"))?;
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("unknown field \"datta\""),
        "{}",
        e.message
    );
    // The default (Warn) accepts the object and drops the unknown field.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&unknown)?)?;
    let created: serde_json::Value = client.request(req).await?;
    assert!(created.get("datta").is_none(), "{created}");

    // Bodies over 3 MiB get 413; malformed JSON gets 400.
    let big = cm("big", json!({"blob": "x".repeat(3 * 1024 * 1024 + 10)}))?;
    let e = api_error(cms.create(&pp, &big).await.expect_err("too large"))?;
    assert_eq!(e.code, 413);
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())?;
    let e = api_error(
        client
            .request::<ConfigMap>(req)
            .await
            .expect_err("malformed"),
    )?;
    assert_eq!(e.code, 400);

    // Pods: binding, graceful deletion, field selector spec.nodeName.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )?;
    let p = pods.create(&pp, &p).await?;
    let spec = p.spec.context("spec")?;
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "node-a"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/p1/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding)?)?;
    client.request::<serde_json::Value>(req).await?;
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await?;
    assert_eq!(on_a.items.len(), 1);
    pods.delete("p1", &DeleteParams::default()).await?;
    let terminating = pods.get("p1").await?;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "p1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    assert!(pods.get_opt("p1").await?.is_none());

    // Server-side apply through kube-rs.
    let ssa = PatchParams::apply("rest-test");
    cms.patch("applied", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}}))).await?;
    let applied = cms.get("applied").await?;
    assert!(applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .any(|m| m.manager.as_deref() == Some("rest-test")));

    service_allocation(&client).await?;

    // The built-in namespaces exist.
    let nss: Api<Namespace> = Api::all(client);
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    Ok(())
}

/// ClusterIPs and NodePorts: allocated when absent, refused when taken (422 naming the field),
/// freed with the Service.
async fn service_allocation(client: &Client) -> Result<()> {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let svc = |name: &str, spec: serde_json::Value| -> Result<Service> {
        Ok(serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": spec}),
        )?)
    };
    let port = json!([{"port": 80, "protocol": "TCP"}]);
    let a = svcs
        .create(
            &pp,
            &svc("alloc-a", json!({"type": "NodePort", "ports": port}))?,
        )
        .await?;
    let a_spec = a.spec.context("spec")?;
    let a_ip = a_spec.cluster_ip.clone().context("clusterIP")?;
    let a_port = a_spec.ports.context("ports")?[0]
        .node_port
        .context("nodePort")?;
    assert!(a_ip.parse::<std::net::IpAddr>().is_ok(), "{a_ip}");
    assert!((30000..=32767).contains(&a_port), "{a_port}");

    let taken_ip = svcs
        .create(
            &pp,
            &svc("alloc-b", json!({"clusterIP": a_ip, "ports": port}))?,
        )
        .await
        .err()
        .context("a taken clusterIP was accepted")?;
    let st = api_error(taken_ip)?;
    assert_eq!(st.code, 422, "{st:?}");
    assert!(st.message.contains("spec.clusterIP"), "{}", st.message);

    let taken_port = json!([{"port": 80, "protocol": "TCP", "nodePort": a_port}]);
    let st = api_error(
        svcs.create(
            &pp,
            &svc("alloc-c", json!({"type": "NodePort", "ports": taken_port}))?,
        )
        .await
        .err()
        .context("a taken nodePort was accepted")?,
    )?;
    assert_eq!(st.code, 422, "{st:?}");
    assert!(st.message.contains("nodePort"), "{}", st.message);

    // Freed with the Service: the same address and port can be asked for again.
    svcs.delete("alloc-a", &DeleteParams::default()).await?;
    let again = svcs
        .create(
            &pp,
            &svc(
                "alloc-d",
                json!({"type": "NodePort", "clusterIP": a_ip, "ports": taken_port}),
            )?,
        )
        .await?;
    assert_eq!(again.spec.context("spec")?.cluster_ip, Some(a_ip));
    svcs.delete("alloc-d", &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn rest_semantics_on_sqlite() -> Result<()> {
    let server = start(Backend::Sqlite)?;
    let client = client_for(&server).await?;
    semantics(client)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", server.log()))
}

#[tokio::test]
async fn rest_semantics_on_etcd() -> Result<()> {
    let server = start(Backend::Etcd)?;
    let client = client_for(&server).await?;
    semantics(client)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", server.log()))
}
