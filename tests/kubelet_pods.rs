//! `oxlet kubelet` end to end: a one-node cluster (oxlet server on loopback; registry,
//! private containerd and the kubelet in a test network namespace), pods created through the
//! API, their status checked through the API and inside the containers through CRI ExecSync.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use oxlet_e2e::node_env::{NodeEnv, NodeOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxlet"))
}

async fn node(prefix: &str, opts: NodeOptions) -> Result<NodeEnv> {
    NodeEnv::start(prefix, &bin(), opts).await
}

async fn create_pod(env: &NodeEnv, ns: &str, mut pod: serde_json::Value) -> Result<Pod> {
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["spec"]["nodeName"] = json!(env.node_name);
    let pod: Pod = serde_json::from_value(pod)?;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    Ok(api.create(&PostParams::default(), &pod).await?)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_status<'a>(
    p: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let s = p.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    container_status(p, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

async fn events_for(env: &NodeEnv, ns: &str, pod: &str) -> Result<Vec<(String, String)>> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), ns);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

async fn wait_event(env: &NodeEnv, ns: &str, pod: &str, reason: &str) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let evs = events_for(env, ns, pod).await?;
        if let Some((_, m)) = evs.iter().find(|(r, _)| r == reason) {
            return Ok(m.clone());
        }
        if Instant::now() > deadline {
            bail!(
                "no {reason} event for {pod}; events: {evs:?}\n{}",
                env.kubelet_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_env_volumes_resources_and_status() -> Result<()> {
    let mut env = node(
        "klf",
        NodeOptions {
            kubelet_config: "clusterDNS: [10.43.0.10]".into(),
            ..Default::default()
        },
    )
    .await?;
    let ns = "default";
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "hostnet"},
            "spec": {"hostNetwork": true,
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                     "securityContext": {"readOnlyRootFilesystem": true}}]}
        }),
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "cfg"},
            "data": {"greeting": "hello", "color": "blue", "app.conf": "a=1\n"}
        }))?,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "sec"},
                "stringData": {"password": "s3cret", "token": "t0k"}
            }))?,
        )
        .await?;
    let host_dir = env.dir.path().join("hostdata");
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "full", "labels": {"app": "full"}},
            "spec": {
                "hostname": "myhost",
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo started > /data/marker; sleep 3600"],
                    "env": [
                        {"name": "PLAIN", "value": "v1"},
                        {"name": "EXPANDED", "value": "$(PLAIN)-x"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}
                    ],
                    "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "cfg"}}],
                    "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                                  "limits": {"cpu": "200m", "memory": "64Mi"}},
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "mem", "mountPath": "/mem"},
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "sec", "mountPath": "/etc/sec"},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "proj", "mountPath": "/etc/proj"},
                        {"name": "host", "mountPath": "/host"}
                    ]
                }],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "conf/app.conf"}]}},
                    {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu", "divisor": "1m"}}
                    ]}},
                    {"name": "proj", "projected": {"sources": [
                        {"configMap": {"name": "cfg", "items": [{"key": "color", "path": "color"}]}},
                        {"secret": {"name": "sec", "items": [{"key": "token", "path": "token"}]}}
                    ]}},
                    {"name": "host", "hostPath": {"path": host_dir.display().to_string(), "type": "DirectoryOrCreate"}}
                ]
            }
        }),
    )
    .await?;
    let pod = env
        .wait_pod(ns, "full", WAIT, |p| phase(p) == "Running" && ready(p))
        .await?;
    let st = pod.status.clone().context("status")?;
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    let pod_ip = st.pod_ip.clone().context("podIP")?;
    assert!(
        pod_ip.starts_with("10.42."),
        "pod IP from the node's podCIDR: {pod_ip}"
    );
    assert!(st.start_time.is_some());
    let cs = container_status(&pod, "main").context("container status")?;
    assert!(cs.ready && cs.started == Some(true));
    assert_eq!(cs.restart_count, 0);
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|c| c.starts_with("containerd://")),
        "{cs:?}"
    );
    assert!(!cs.image_id.is_empty());
    let conds: Vec<(String, String)> = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert!(
            conds.contains(&(t.to_string(), "True".to_string())),
            "{t}: {conds:?}"
        );
    }

    // hostNetwork pods take the node's IP; runAsUser/Group and a read-only root apply.
    let hp = env
        .wait_pod(ns, "hostnet", WAIT, |p| phase(p) == "Running")
        .await?;
    assert_eq!(
        hp.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("127.0.0.1")
    );
    let (_, out) = env
        .exec(
            ns,
            "hostnet",
            "c",
            &["sh", "-c", "id -u; id -g; touch /x 2>&1 || echo ro"],
        )
        .await?;
    assert!(out.starts_with("1000\n2000\n"), "{out}");
    assert!(
        out.contains("Read-only file system") || out.ends_with("ro\n"),
        "{out}"
    );

    let sh = |cmd: &str| vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
    let run = |cmd: &str| {
        let argv = sh(cmd);
        let env = &env;
        async move {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            env.exec(ns, "full", "main", &args).await
        }
    };
    let (_, out) =
        run("echo $PLAIN/$EXPANDED/$POD_NAME/$POD_IP/$MEM_LIMIT/$GREETING/$PASSWORD/$CM_color")
            .await?;
    assert_eq!(
        out.trim(),
        format!("v1/v1-x/full/{pod_ip}/64/hello/s3cret/blue")
    );
    let (_, out) = run("cat /etc/cfg/conf/app.conf /etc/sec/password /etc/proj/color /etc/proj/token /etc/info/cpu; echo; cat /data/marker").await?;
    assert_eq!(out, "a=1\ns3cret".to_string() + "bluet0k200\nstarted\n");
    let (_, out) = run("cat /etc/info/labels").await?;
    assert_eq!(out.trim(), "app=\"full\"");
    let (_, out) = run("stat -c %a /etc/sec/..data/password").await?;
    assert_eq!(out.trim(), "400");
    let (_, out) =
        run("hostname; grep -c myhost /etc/hosts; grep ' /mem ' /proc/mounts | cut -d' ' -f3")
            .await?;
    assert_eq!(out, "myhost\n1\ntmpfs\n");
    let (_, out) = run("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max").await?;
    assert_eq!(out.trim(), "67108864");
    let (_, out) = run("cat /etc/resolv.conf").await?;
    assert!(out.contains("nameserver 10.43.0.10"), "{out}");
    assert!(
        out.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{out}"
    );
    assert!(out.contains("ndots:5"), "{out}");
    // The ServiceAccount admission's kube-api-access volume: a TokenRequest token, the CA, the namespace.
    let (_, out) = run(
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
        wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token; \
        grep -c BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    )
    .await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("default"), "{out}");
    assert!(
        lines
            .get(1)
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| n > 100),
        "{out}"
    );
    assert_eq!(lines.get(2).copied(), Some("1"), "{out}");
    run("echo from-pod > /host/f").await?;
    assert_eq!(std::fs::read_to_string(host_dir.join("f"))?, "from-pod\n");

    // configMap updates reach the mounted volume.
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"app.conf": "a=2\n"}})),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, out) = run("cat /etc/cfg/conf/app.conf").await?;
        if out == "a=2\n" {
            break;
        }
        if Instant::now() > deadline {
            bail!("configMap update not visible after 90 s: {out:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Events as upstream names them.
    for r in ["Pulled", "Created", "Started"] {
        wait_event(&env, ns, "full", r).await?;
    }
    // The node lists its images (status is recomputed every nodeStatusUpdateFrequency).
    let nodes: Api<Node> = Api::all(env.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = nodes.get(&env.node_name).await?;
        let images: Vec<String> = n
            .status
            .and_then(|s| s.images)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|i| i.names.unwrap_or_default())
            .collect();
        if images.iter().any(|i| i.contains("busybox")) {
            break;
        }
        if Instant::now() > deadline {
            bail!("node.status.images has no busybox: {images:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_restart_policies_and_crash_loops() -> Result<()> {
    let mut env = node("klr", NodeOptions::default()).await?;
    let ns = "default";
    create_pod(&env, ns, json!({
        "metadata": {"name": "inits"},
        "spec": {
            "initContainers": [
                {"name": "one", "image": "busybox", "command": ["sh", "-c", "echo one >> /w/log"],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]},
                {"name": "two", "image": "busybox", "command": ["sh", "-c", "echo two >> /w/log"],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]}
            ],
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
            "volumes": [{"name": "w", "emptyDir": {}}]
        }
    })).await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo bye > /dev/termination-log; exit 3"]}]}
    })).await?;
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "succeeds"},
            "spec": {"restartPolicy": "OnFailure",
                     "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
        }),
    )
    .await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "crashes"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 1"]}]}
    })).await?;
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "badinit"},
            "spec": {"restartPolicy": "Never",
                     "initContainers": [{"name": "i", "image": "busybox", "command": ["false"]}],
                     "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
        }),
    )
    .await?;

    env.wait_pod(ns, "inits", WAIT, |p| phase(p) == "Running" && ready(p))
        .await?;
    let (_, out) = env.exec(ns, "inits", "app", &["cat", "/w/log"]).await?;
    assert_eq!(out, "one\ntwo\n");
    let p = env
        .wait_pod(ns, "inits", WAIT, |p| phase(p) == "Running")
        .await?;
    let init = container_status(&p, "two").context("init status")?;
    let t = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .context("init terminated")?;
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));

    let p = env
        .wait_pod(ns, "fails", WAIT, |p| phase(p) == "Failed")
        .await?;
    let t = container_status(&p, "c")
        .and_then(|c| c.state.clone())
        .and_then(|s| s.terminated)
        .context("terminated")?;
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert_eq!(t.message.as_deref(), Some("bye\n"));

    env.wait_pod(ns, "succeeds", WAIT, |p| phase(p) == "Succeeded")
        .await?;

    let p = env
        .wait_pod(ns, "crashes", Duration::from_secs(180), |p| {
            container_status(p, "c").is_some_and(|c| c.restart_count >= 2)
                && waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
        })
        .await?;
    let cs = container_status(&p, "c").context("status")?;
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .context("lastState")?;
    assert_eq!(last.exit_code, 1);
    assert_eq!(phase(&p), "Running");
    wait_event(&env, ns, "crashes", "BackOff").await?;

    let p = env
        .wait_pod(ns, "badinit", WAIT, |p| phase(p) == "Failed")
        .await?;
    assert!(container_status(&p, "c").is_some_and(|c| c.restart_count == 0));
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_show_on_the_pod_and_the_agent_keeps_going() -> Result<()> {
    let mut env = node("kle", NodeOptions::default()).await?;
    let ns = "default";
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "noimage"},
            "spec": {"containers": [{"name": "c", "image": "docker.io/library/does-not-exist:1"}]}
        }),
    )
    .await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "nokey"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]}]}
    })).await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "badhost"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
            "volumes": [{"name": "h", "hostPath": {"path": "/nonexistent/oxlet-test", "type": "Directory"}}]}
    })).await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "fine"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
    })).await?;

    let p = env
        .wait_pod(ns, "noimage", WAIT, |p| {
            matches!(
                waiting_reason(p, "c").as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .await?;
    assert_eq!(phase(&p), "Pending");
    env.wait_pod(ns, "noimage", WAIT, |p| {
        waiting_reason(p, "c").as_deref() == Some("ImagePullBackOff")
    })
    .await?;
    wait_event(&env, ns, "noimage", "Failed").await?;

    let p = env
        .wait_pod(ns, "nokey", WAIT, |p| {
            waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError")
        })
        .await?;
    let msg = container_status(&p, "c")
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("missing"), "{msg}");

    let m = wait_event(&env, ns, "badhost", "FailedMount").await?;
    assert!(m.contains("/nonexistent/oxlet-test"), "{m}");
    let p = env
        .wait_pod(ns, "badhost", WAIT, |p| phase(p) == "Pending")
        .await?;
    assert!(waiting_reason(&p, "c").is_some());

    env.wait_pod(ns, "fine", WAIT, |p| phase(p) == "Running" && ready(p))
        .await?;
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_hooks_probes_and_cleanup() -> Result<()> {
    let mut env = node("klg", NodeOptions::default()).await?;
    let ns = "default";
    create_pod(&env, ns, json!({
        "metadata": {"name": "web"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "web", "image": "docker.io/oxlet/echoserver:latest",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/poststart"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}
                }
            }]
        }
    })).await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "c", "image": "busybox",
                            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]
        }
    })).await?;
    create_pod(&env, ns, json!({
        "metadata": {"name": "unhealthy"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
            "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}}]}
    })).await?;

    let web = env
        .wait_pod(ns, "web", WAIT, |p| phase(p) == "Running" && ready(p))
        .await?;
    let (_, out) = env
        .exec(ns, "web", "web", &["cat", "/tmp/poststart"])
        .await?;
    assert_eq!(out, "hooked\n");
    env.wait_pod(ns, "stubborn", WAIT, |p| phase(p) == "Running")
        .await?;
    env.wait_pod(ns, "unhealthy", Duration::from_secs(180), |p| {
        container_status(p, "c").is_some_and(|c| c.restart_count >= 1)
    })
    .await?;
    let m = wait_event(&env, ns, "unhealthy", "Unhealthy").await?;
    assert!(m.starts_with("Liveness probe failed"), "{m}");

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let web_uid = web.metadata.uid.clone().context("uid")?;
    pods.delete("web", &DeleteParams::default()).await?;
    env.wait_pod_gone(ns, "web", Duration::from_secs(60))
        .await?;
    assert_eq!(
        env.runtime_objects(&web_uid).await?,
        0,
        "web left runtime objects"
    );
    wait_event(&env, ns, "web", "Killing").await?;

    let stubborn = pods.get("stubborn").await?;
    let started = Instant::now();
    pods.delete("stubborn", &DeleteParams::default()).await?;
    env.wait_pod_gone(ns, "stubborn", Duration::from_secs(60))
        .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "killed before its grace period"
    );
    let uid = stubborn.metadata.uid.context("uid")?;
    assert_eq!(env.runtime_objects(&uid).await?, 0);
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_pods_reach_running() -> Result<()> {
    let mut env = node("kl30", NodeOptions::default()).await?;
    let ns = "default";
    for i in 0..30 {
        create_pod(&env, ns, json!({
            "metadata": {"name": format!("p{i}")},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
        }))
        .await?;
    }
    for i in 0..30 {
        env.wait_pod(ns, &format!("p{i}"), Duration::from_secs(300), |p| {
            phase(p) == "Running"
        })
        .await?;
    }
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_authenticate_pulls() -> Result<()> {
    let mut env = node(
        "klp",
        NodeOptions {
            auth_registry: true,
            ..Default::default()
        },
    )
    .await?;
    let ns = "default";
    let addr = env
        .env
        .auth_registry
        .as_ref()
        .context("auth registry")?
        .addr();
    let image = format!("{addr}/private/busybox:latest");
    let cfg = json!({"auths": {addr.clone(): {
        "username": oxlet_e2e::runtime_env::AUTH_USER,
        "password": oxlet_e2e::runtime_env::AUTH_PASSWORD
    }}})
    .to_string();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "regcred"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": cfg}
            }))?,
        )
        .await?;
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "private"},
            "spec": {"imagePullSecrets": [{"name": "regcred"}],
                     "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
        }),
    )
    .await?;
    create_pod(
        &env,
        ns,
        json!({
            "metadata": {"name": "nocreds"},
            "spec": {"containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
        }),
    )
    .await?;
    env.wait_pod(ns, "private", WAIT, |p| phase(p) == "Running")
        .await?;
    let m = wait_event(&env, ns, "private", "Pulled").await?;
    assert!(m.contains("Successfully pulled image"), "{m}");
    env.wait_pod(ns, "nocreds", WAIT, |p| {
        matches!(
            waiting_reason(p, "c").as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    })
    .await?;
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_keeps_pods_and_removes_orphans() -> Result<()> {
    let mut env = node("klk", NodeOptions::default()).await?;
    let ns = "default";
    for name in ["keeper", "orphan", "marker"] {
        create_pod(&env, ns, json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
        }))
        .await?;
    }
    let mut before = HashMap::new();
    for name in ["keeper", "orphan", "marker"] {
        let p = env
            .wait_pod(ns, name, WAIT, |p| phase(p) == "Running")
            .await?;
        before.insert(name, p);
    }
    env.stop_kubelet()?;
    // While the kubelet is down the pod object goes away for good: its containers are orphans.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    pods.delete(
        "orphan",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    env.start_kubelet()?;
    // A deletion handled after the restart shows the workers are running again.
    pods.delete("marker", &DeleteParams::default()).await?;
    env.wait_pod_gone(ns, "marker", Duration::from_secs(90))
        .await?;
    let orphan_uid = before["orphan"].metadata.uid.clone().context("uid")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while env.runtime_objects(&orphan_uid).await? > 0 {
        if Instant::now() > deadline {
            bail!(
                "orphan's sandbox and containers still in containerd:\n{}",
                env.kubelet_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let keeper = pods.get("keeper").await?;
    let id = |p: &Pod| container_status(p, "c").and_then(|c| c.container_id.clone());
    assert_eq!(
        id(&keeper),
        id(&before["keeper"]),
        "keeper's container was restarted"
    );
    assert_eq!(
        container_status(&keeper, "c").map(|c| c.restart_count),
        Some(0)
    );
    assert_eq!(phase(&keeper), "Running");
    env.check_kubelet()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_from_files_with_mirror_pods() -> Result<()> {
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let manifests = Dir(PathBuf::from(format!(
        "/tmp/oxt-static-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&manifests.0)?;
    let file = manifests.0.join("web.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {tier: static}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    \
         command: [sleep, \"3600\"]\n",
    )?;
    let mut env = node(
        "kls",
        NodeOptions {
            kubelet_config: format!("staticPodPath: {}", manifests.0.display()),
            ..Default::default()
        },
    )
    .await?;
    let ns = "default";
    let name = format!("web-{}", env.node_name);
    let mirror = env
        .wait_pod(ns, &name, WAIT, |p| phase(p) == "Running")
        .await?;
    let ann = mirror.metadata.annotations.clone().unwrap_or_default();
    assert!(ann.contains_key("kubernetes.io/config.mirror"), "{ann:?}");
    assert_eq!(
        ann.get("kubernetes.io/config.source").map(String::as_str),
        Some("file")
    );
    let (_, out) = env.exec(ns, &name, "c", &["hostname"]).await?;
    assert_eq!(out.trim(), name);
    // Deleting the mirror pod does not stop the static pod; the kubelet recreates the mirror.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let old_uid = mirror.metadata.uid.clone();
    pods.delete(&name, &DeleteParams::default()).await?;
    env.wait_pod(ns, &name, Duration::from_secs(90), |p| {
        p.metadata.uid != old_uid && phase(p) == "Running"
    })
    .await?;
    // Removing the file stops the pod and removes its mirror.
    std::fs::remove_file(&file)?;
    env.wait_pod_gone(ns, &name, Duration::from_secs(90))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.container_id(ns, &name, "c").await.is_ok() {
        if Instant::now() > deadline {
            bail!("static pod still running after its file was removed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.check_kubelet()?;
    Ok(())
}
