//! The real kubectl against `oxlet server`, on SQLite and on etcd: apply and re-apply, get,
//! watch, describe, label, annotate, scale, the three patch types, delete with cascade options,
//! wait, explain, api-resources, whoami, validation errors, and objects surviving a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oxlet_e2e::server::{Backend, TestServer, KUBECTL};
use serde_json::Value;

fn data(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
        .display()
        .to_string()
}

/// The garbage collector is off: this suite checks the API server's own deletion semantics
/// (finalizers set and honoured); the collector acting on them is tested with the controllers.
fn start(backend: Backend) -> Result<TestServer> {
    TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_oxlet")),
        backend,
        &["--controllers", "*,-garbagecollector"],
    )
}

fn json_of(server: &TestServer, args: &[&str]) -> Result<Value> {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    Ok(serde_json::from_str(&server.kubectl_ok(&full)?)?)
}

fn suite(server: &mut TestServer) -> Result<()> {
    // version: the dispatcher picks kubectl 1.33 from the server's minor.
    let v: Value = serde_json::from_str(&server.kubectl_ok(&["version", "-o", "json"])?)?;
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "33");

    let resources = server.kubectl_ok(&["api-resources"])?;
    for want in [
        "pods",
        "deployments",
        "services",
        "configmaps",
        "leases",
        "endpointslices",
        "certificatesigningrequests",
    ] {
        assert!(
            resources.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{resources}"
        );
    }
    assert!(
        resources.contains("deploy") && resources.contains("apps/v1"),
        "{resources}"
    );

    // apply, then re-apply a changed file.
    let out = server.kubectl_ok(&["apply", "-f", &data("app-v1.yaml")])?;
    assert!(out.contains("namespace/shop created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = server.kubectl_ok(&["apply", "-f", &data("app-v1.yaml")])?;
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let out = server.kubectl_ok(&["apply", "-f", &data("app-v2.yaml")])?;
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/web-config configured"), "{out}");
    let d = json_of(server, &["-n", "shop", "get", "deployment", "web"])?;
    assert_eq!(d["spec"]["replicas"], 3);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "docker.io/oxlet/echoserver:v2");
    let env = c["env"].as_array().context("env")?;
    assert_eq!(
        env.len(),
        1,
        "DEBUG must be removed by the re-apply: {env:?}"
    );
    assert_eq!(env[0]["value"], "v2");
    assert_eq!(d["metadata"]["generation"], 2);
    let svc = json_of(server, &["-n", "shop", "get", "service", "web"])?;
    assert_eq!(svc["spec"]["type"], "NodePort");
    let np = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .context("nodePort")?;
    assert!((30000..=32767).contains(&np), "{np}");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.43.")),
        "{svc}"
    );

    // get as a table, and as yaml.
    let table = server.kubectl_ok(&["-n", "shop", "get", "deployments"])?;
    assert!(
        table.contains("NAME") && table.contains("READY") && table.contains("web"),
        "{table}"
    );
    let svcs = server.kubectl_ok(&["-n", "shop", "get", "svc", "-o", "wide"])?;
    assert!(
        svcs.contains("NodePort") && svcs.contains(&format!("80:{np}/TCP")),
        "{svcs}"
    );
    let yaml = server.kubectl_ok(&["-n", "shop", "get", "cm", "web-config", "-o", "yaml"])?;
    assert!(
        yaml.contains("mode: v2") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let ns = server.kubectl_ok(&["get", "namespaces"])?;
    for want in ["default", "kube-system", "kube-public", "shop"] {
        assert!(ns.contains(want), "{ns}");
    }

    // describe
    let desc = server.kubectl_ok(&["-n", "shop", "describe", "deployment", "web"])?;
    assert!(
        desc.contains("Replicas:") && desc.contains("docker.io/oxlet/echoserver:v2"),
        "{desc}"
    );

    // label, annotate, scale, patch x3
    server.kubectl_ok(&["-n", "shop", "label", "cm", "web-config", "tier=front"])?;
    server.kubectl_ok(&["-n", "shop", "annotate", "cm", "web-config", "owner=team-a"])?;
    let cm = json_of(server, &["-n", "shop", "get", "cm", "web-config"])?;
    assert_eq!(cm["metadata"]["labels"]["tier"], "front");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "team-a");
    let by_label =
        server.kubectl_ok(&["-n", "shop", "get", "cm", "-l", "tier=front", "-o", "name"])?;
    assert_eq!(by_label.trim(), "configmap/web-config");
    server.kubectl_ok(&["-n", "shop", "scale", "deployment", "web", "--replicas=5"])?;
    assert_eq!(
        json_of(server, &["-n", "shop", "get", "deploy", "web"])?["spec"]["replicas"],
        5
    );
    server.kubectl_ok(&["-n", "shop", "patch", "deploy", "web", "--type=strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"docker.io/oxlet/echoserver:v3"}]}}}}"#])?;
    server.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"v3","greeting":null}}"#,
    ])?;
    server.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/extra","value":"x"}]"#,
    ])?;
    let d = json_of(server, &["-n", "shop", "get", "deploy", "web"])?;
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "docker.io/oxlet/echoserver:v3");
    assert_eq!(
        c["ports"][0]["containerPort"], 8080,
        "strategic patch must keep other fields"
    );
    let cm = json_of(server, &["-n", "shop", "get", "cm", "web-config"])?;
    assert_eq!(cm["data"], serde_json::json!({"mode": "v3", "extra": "x"}));
    let bad = server.kubectl(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/mode","value":"nope"}]"#,
    ])?;
    assert!(!bad.status.success());

    // Typed commands send protobuf bodies.
    server.kubectl_ok(&["create", "namespace", "typed"])?;
    server.kubectl_ok(&[
        "-n",
        "typed",
        "create",
        "deployment",
        "d",
        "--image=busybox",
        "--replicas=2",
        "--port=8080",
    ])?;
    server.kubectl_ok(&[
        "-n",
        "typed",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=q",
    ])?;
    let d = json_of(server, &["-n", "typed", "get", "deploy", "d"])?;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    let sec = json_of(server, &["-n", "typed", "get", "secret", "s"])?;
    assert_eq!(sec["data"]["p"], "cQ==");

    // wait --for=jsonpath
    server.kubectl_ok(&[
        "-n",
        "shop",
        "wait",
        "--for=jsonpath={.data.mode}=v3",
        "cm/web-config",
        "--timeout=30s",
    ])?;

    // get -w sees a change.
    watch_sees_change(server)?;

    // explain, whoami
    let explain = server.kubectl_ok(&["explain", "pod.spec"])?;
    assert!(
        explain.contains("containers") && explain.contains("FIELDS"),
        "{explain}"
    );
    let who = server.kubectl_ok(&["auth", "whoami"])?;
    assert!(
        who.contains("kubernetes-admin") && who.contains("system:masters"),
        "{who}"
    );

    // An invalid manifest: kubectl's usual error with the field path.
    let out = server.kubectl(&["apply", "-f", &data("invalid-deployment.yaml")])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.template.spec.containers[0].image: Required value"),
        "{err}"
    );
    // Unknown fields are rejected under kubectl's default strict validation.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: default\ndatta:\n  a: b\n")?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("datta"), "{err}");

    // delete with cascade options
    server.kubectl_ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
    ])?;
    server.kubectl_ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "c2",
        "--from-literal=a=2",
    ])?;
    server.kubectl_ok(&[
        "-n",
        "shop",
        "delete",
        "configmap",
        "c1",
        "--cascade=background",
    ])?;
    let gone = server.kubectl(&["-n", "shop", "get", "configmap", "c1"])?;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
    server.kubectl_ok(&[
        "-n",
        "shop",
        "delete",
        "configmap",
        "c2",
        "--cascade=orphan",
        "--wait=false",
    ])?;
    let c2 = json_of(server, &["-n", "shop", "get", "configmap", "c2"])?;
    assert!(c2["metadata"]["deletionTimestamp"].is_string(), "{c2}");
    assert!(
        c2["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "orphan")),
        "{c2}"
    );
    server.kubectl_ok(&[
        "-n",
        "shop",
        "delete",
        "deployment",
        "web",
        "--cascade=foreground",
        "--wait=false",
    ])?;
    let d = json_of(server, &["-n", "shop", "get", "deploy", "web"])?;
    assert!(
        d["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")),
        "{d}"
    );
    // Removing the finalizer (the garbage collector's job) lets the object go.
    server.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "c2",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    let gone = server.kubectl(&["-n", "shop", "get", "configmap", "c2"])?;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));

    // server-side apply
    let out = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\ndata:\n  a: \"1\"\n  b: \"2\"\n")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\ndata:\n  a: \"3\"\n")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ssa = json_of(server, &["-n", "default", "get", "cm", "ssa"])?;
    assert_eq!(
        ssa["data"],
        serde_json::json!({"a": "3"}),
        "fields dropped from the applied config are removed"
    );

    // Restart: every object is still there.
    let before = server.kubectl_ok(&["get", "cm", "-A", "-o", "name"])?;
    server.restart(false)?;
    let after = server.kubectl_ok(&["get", "cm", "-A", "-o", "name"])?;
    assert_eq!(before, after);
    server.restart(true)?;
    let after_kill = server.kubectl_ok(&["get", "cm", "-A", "-o", "name"])?;
    assert_eq!(before, after_kill);
    Ok(())
}

fn watch_sees_change(server: &TestServer) -> Result<()> {
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args([
            "-n",
            "shop",
            "get",
            "cm",
            "web-config",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.data.mode}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line is the current state; then our change arrives as MODIFIED.
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .context("no initial watch event")?;
    assert!(first.starts_with("ADDED"), "{first}");
    server.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"watched"}}"#,
    ])?;
    let result = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "MODIFIED watched" => break Ok(()),
            Ok(_) => continue,
            Err(e) => break Err(anyhow::anyhow!("no MODIFIED event: {e}")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result?;
    server.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"v3"}}"#,
    ])?;
    Ok(())
}

#[test]
fn kubectl_suite_on_sqlite() -> Result<()> {
    let mut server = start(Backend::Sqlite)?;
    suite(&mut server).map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", tail(&server.log())))
}

#[test]
fn kubectl_suite_on_etcd() -> Result<()> {
    let mut server = start(Backend::Etcd)?;
    let endpoint = server.etcd_endpoint().context("etcd endpoint")?;
    suite(&mut server)
        .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", tail(&server.log())))?;
    // Keys are laid out like kubeadm's etcd.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoint,
            "get",
            "/registry",
            "--prefix",
            "--keys-only",
        ])
        .output()?;
    let keys = String::from_utf8_lossy(&out.stdout);
    for want in [
        "/registry/namespaces/shop",
        "/registry/configmaps/default/ssa",
        "/registry/services/specs/shop/web",
    ] {
        if !keys.lines().any(|k| k == want) {
            bail!("{want} not in etcd:\n{keys}");
        }
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
