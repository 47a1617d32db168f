//! `kubectl rollout status|history|undo|restart|pause|resume` (the real kubectl 1.33) against
//! `oxlet server` with its bundled scheduler and controllers, on simulated nodes
//! (`oxlet_e2e::sim_node`: this test registers the Nodes, renews their Leases and reports
//! bound pods Running and Ready), plus a progress deadline, `kubectl scale`, a DaemonSet's
//! rollout, and the Events kubectl shows.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use oxlet_e2e::server::{Backend, TestServer};
use oxlet_e2e::sim_node::{SimConfig, SimNodes};

const NS: &str = "roll";

/// Runs kubectl off the async workers (it blocks while the simulated nodes must keep going).
async fn kubectl(server: &Arc<TestServer>, args: &[&str]) -> Result<Output> {
    let server = server.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.kubectl(&args)
    })
    .await?
}

/// kubectl's stdout; fails with its output when it fails.
async fn ok(server: &Arc<TestServer>, args: &[&str]) -> Result<String> {
    let out = kubectl(server, args).await?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn apply(server: &Arc<TestServer>, yaml: &str) -> Result<String> {
    let server2 = server.clone();
    let yaml = yaml.to_string();
    let out =
        tokio::task::spawn_blocking(move || server2.kubectl_stdin(&["apply", "-f", "-"], &yaml))
            .await??;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl rollout status` until success (90 s at most).
async fn rolled_out(server: &Arc<TestServer>, what: &str) -> Result<String> {
    ok(
        server,
        &["-n", NS, "rollout", "status", what, "--timeout=90s"],
    )
    .await
}

/// The (revision, change-cause) rows of `kubectl rollout history`.
async fn history(server: &Arc<TestServer>) -> Result<Vec<(String, String)>> {
    let out = ok(server, &["-n", NS, "rollout", "history", "deployment/web"]).await?;
    let mut rows = Vec::new();
    let mut lines = out.lines();
    for line in lines.by_ref() {
        if line.starts_with("REVISION") {
            break;
        }
    }
    for line in lines {
        let mut cols = line.split_whitespace();
        if let Some(rev) = cols.next() {
            rows.push((rev.to_string(), cols.collect::<Vec<_>>().join(" ")));
        }
    }
    Ok(rows)
}

fn rows(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The image of the deployment's template and of its live pods.
async fn images(client: &kube::Client) -> Result<(String, Vec<String>)> {
    let d: Deployment = Api::namespaced(client.clone(), NS).get("web").await?;
    let image = |spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
        spec.and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let template = image(d.spec.as_ref().and_then(|s| s.template.spec.as_ref()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut live: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| image(p.spec.as_ref()))
        .collect();
    live.sort();
    Ok((template, live))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: roll
  annotations:
    kubernetes.io/change-cause: v1
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: docker.io/oxlet/web:v1
        resources:
          requests: {cpu: 100m, memory: 32Mi}
"#;

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: roll
spec:
  selector:
    matchLabels: {app: agent}
  updateStrategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: docker.io/oxlet/agent:v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_on_simulated_nodes() -> Result<()> {
    let bin = Path::new(env!("CARGO_BIN_EXE_oxlet")).to_path_buf();
    let server = tokio::task::spawn_blocking(move || {
        TestServer::start(
            &bin,
            Backend::Sqlite,
            &[
                "--node-monitor-grace-period=20s",
                "--node-monitor-period=1s",
            ],
        )
    })
    .await??;
    let server = Arc::new(server);
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig())?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    let sims = SimNodes::start(
        client.clone(),
        SimConfig {
            renew_interval: Duration::from_secs(1),
            ..Default::default()
        },
    );
    for n in ["node-a", "node-b"] {
        sims.add(n, &[]).await?;
    }
    let nodes = ok(&server, &["get", "nodes"]).await?;
    assert!(
        nodes.contains("node-a") && nodes.contains("Ready"),
        "{nodes}"
    );
    ok(&server, &["create", "namespace", NS]).await?;

    // Applied with kubectl, it becomes running pods on the simulated nodes.
    let out = apply(&server, DEPLOYMENT).await?;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = rolled_out(&server, "deployment/web").await?;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let pods = ok(&server, &["-n", NS, "get", "pods", "-o", "wide"]).await?;
    assert_eq!(
        pods.lines()
            .filter(|l| l.contains("1/1") && l.contains("Running"))
            .count(),
        3,
        "{pods}"
    );
    let table = ok(&server, &["-n", NS, "get", "deployment", "web"]).await?;
    assert!(table.contains("3/3"), "{table}");

    // A new image, with its change-cause: revision 2.
    ok(
        &server,
        &[
            "-n",
            NS,
            "set",
            "image",
            "deployment/web",
            "web=docker.io/oxlet/web:v2",
        ],
    )
    .await?;
    ok(
        &server,
        &[
            "-n",
            NS,
            "annotate",
            "deployment/web",
            "kubernetes.io/change-cause=v2",
            "--overwrite",
        ],
    )
    .await?;
    rolled_out(&server, "deployment/web").await?;
    let (template, live) = images(&client).await?;
    assert_eq!(template, "docker.io/oxlet/web:v2");
    assert_eq!(live, vec![template.clone(); 3], "every pod replaced");
    assert_eq!(history(&server).await?, rows(&[("1", "v1"), ("2", "v2")]));
    let rev1 = ok(
        &server,
        &[
            "-n",
            NS,
            "rollout",
            "history",
            "deployment/web",
            "--revision=1",
        ],
    )
    .await?;
    assert!(
        rev1.contains("revision #1") && rev1.contains("docker.io/oxlet/web:v1"),
        "{rev1}"
    );
    let rs = ok(&server, &["-n", NS, "get", "rs", "-l", "app=web"]).await?;
    assert_eq!(rs.lines().count(), 3, "two ReplicaSets: {rs}");

    // Undo: back to v1, which becomes revision 3.
    let out = ok(&server, &["-n", NS, "rollout", "undo", "deployment/web"]).await?;
    assert!(out.contains("deployment.apps/web rolled back"), "{out}");
    rolled_out(&server, "deployment/web").await?;
    let (template, live) = images(&client).await?;
    assert_eq!(template, "docker.io/oxlet/web:v1");
    assert_eq!(live, vec![template.clone(); 3]);
    assert_eq!(history(&server).await?, rows(&[("2", "v2"), ("3", "v1")]));
    // Undo to a named revision.
    ok(
        &server,
        &[
            "-n",
            NS,
            "rollout",
            "undo",
            "deployment/web",
            "--to-revision=2",
        ],
    )
    .await?;
    rolled_out(&server, "deployment/web").await?;
    assert_eq!(images(&client).await?.0, "docker.io/oxlet/web:v2");
    assert_eq!(history(&server).await?, rows(&[("3", "v1"), ("4", "v2")]));

    // Restart: same image, every pod new, revision 5.
    let before: Vec<String> = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    let out = ok(&server, &["-n", NS, "rollout", "restart", "deployment/web"]).await?;
    assert!(out.contains("deployment.apps/web restarted"), "{out}");
    rolled_out(&server, "deployment/web").await?;
    let after = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items;
    let live: Vec<&Pod> = after
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 3);
    assert!(
        live.iter().all(|p| !before.contains(&p.name_any())),
        "restart replaced every pod"
    );
    let d: Deployment = Api::namespaced(client.clone(), NS).get("web").await?;
    assert!(
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt")),
        "restartedAt in the template"
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("5")
    );

    // Paused: a new image waits; undo and restart refuse; resume rolls it out.
    let out = ok(&server, &["-n", NS, "rollout", "pause", "deployment/web"]).await?;
    assert!(out.contains("deployment.apps/web paused"), "{out}");
    ok(
        &server,
        &[
            "-n",
            NS,
            "set",
            "image",
            "deployment/web",
            "web=docker.io/oxlet/web:v3",
        ],
    )
    .await?;
    let waiting = wait_status(&server, "0 out of 3 new replicas have been updated").await?;
    assert!(
        waiting.contains("Waiting for deployment \"web\" rollout to finish"),
        "{waiting}"
    );
    assert_eq!(
        images(&client).await?.1,
        vec!["docker.io/oxlet/web:v2".to_string(); 3],
        "paused: pods unchanged"
    );
    let cond = ok(
        &server,
        &[
            "-n",
            NS,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ],
    )
    .await?;
    assert_eq!(cond, "DeploymentPaused");
    let undo = kubectl(&server, &["-n", NS, "rollout", "undo", "deployment/web"]).await?;
    assert!(!undo.status.success());
    assert!(
        String::from_utf8_lossy(&undo.stderr).contains("you cannot rollback a paused deployment"),
        "{}",
        String::from_utf8_lossy(&undo.stderr)
    );
    let restart = kubectl(&server, &["-n", NS, "rollout", "restart", "deployment/web"]).await?;
    assert!(
        !restart.status.success(),
        "restart of a paused deployment refused"
    );
    // Scaling works while paused.
    ok(
        &server,
        &["-n", NS, "scale", "deployment/web", "--replicas=4"],
    )
    .await?;
    let scaled = wait_until(&client, "4 v2 pods while paused", |(_, live)| {
        live == &vec!["docker.io/oxlet/web:v2".to_string(); 4]
    })
    .await?;
    assert_eq!(scaled.1.len(), 4);
    let out = ok(&server, &["-n", NS, "rollout", "resume", "deployment/web"]).await?;
    assert!(out.contains("deployment.apps/web resumed"), "{out}");
    rolled_out(&server, "deployment/web").await?;
    assert_eq!(
        images(&client).await?.1,
        vec!["docker.io/oxlet/web:v3".to_string(); 4]
    );

    // No progress within the deadline: rollout status fails as upstream's does.
    ok(
        &server,
        &["-n", NS, "patch", "deployment/web", "--type=merge", "-p",
          r#"{"spec":{"progressDeadlineSeconds":3,"template":{"spec":{"nodeSelector":{"disk":"none"}}}}}"#],
    )
    .await?;
    let stuck = kubectl(
        &server,
        &[
            "-n",
            NS,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=90s",
        ],
    )
    .await?;
    assert!(!stuck.status.success());
    let err = String::from_utf8_lossy(&stuck.stderr);
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
    let describe = ok(&server, &["-n", NS, "describe", "deployment", "web"]).await?;
    assert!(
        describe.contains("ProgressDeadlineExceeded") && describe.contains("ScalingReplicaSet"),
        "{describe}"
    );
    ok(&server, &["-n", NS, "rollout", "undo", "deployment/web"]).await?;
    rolled_out(&server, "deployment/web").await?;

    // A DaemonSet rolls out and keeps its history in ControllerRevisions.
    apply(&server, DAEMONSET).await?;
    let out = rolled_out(&server, "daemonset/agent").await?;
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    ok(
        &server,
        &[
            "-n",
            NS,
            "set",
            "image",
            "daemonset/agent",
            "agent=docker.io/oxlet/agent:v2",
        ],
    )
    .await?;
    rolled_out(&server, "daemonset/agent").await?;
    let dh = ok(
        &server,
        &["-n", NS, "rollout", "history", "daemonset/agent"],
    )
    .await?;
    assert!(
        dh.contains("REVISION") && dh.lines().any(|l| l.trim_start().starts_with('2')),
        "{dh}"
    );

    // Every decision is an Event kubectl shows.
    let events = ok(&server, &["-n", NS, "get", "events"]).await?;
    for reason in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "SuccessfulDelete",
        "Scheduled",
        "FailedScheduling",
    ] {
        assert!(events.contains(reason), "{reason} missing:\n{events}");
    }
    drop(sims);
    Ok(())
}

/// Polls `kubectl rollout status --watch=false` until it prints `want`.
async fn wait_status(server: &Arc<TestServer>, want: &str) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = kubectl(
            server,
            &[
                "-n",
                NS,
                "rollout",
                "status",
                "deployment/web",
                "--watch=false",
            ],
        )
        .await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(want) {
            return Ok(text);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("rollout status never said {want:?}; last: {text}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls the deployment's images until `pred` holds.
async fn wait_until(
    client: &kube::Client,
    what: &str,
    pred: impl Fn(&(String, Vec<String>)) -> bool,
) -> Result<(String, Vec<String>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = images(client).await?;
        if pred(&now) {
            return Ok(now);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}; last: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
