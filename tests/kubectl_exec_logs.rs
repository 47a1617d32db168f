//! The real kubectl through the whole chain: kubectl → `oxlet server` (pods/log, exec,
//! port-forward subresources) → the kubelet's HTTPS server (client certificate checked
//! against the cluster CA) → containerd's streaming server.
//!
//! containerd and the kubelet server run in the test's network namespace (containerd's
//! streaming server listens on loopback there); the Node object points the API server at a
//! forwarding port on the host's loopback that leads into it. Pods exist twice, as the kubelet
//! would make them: as API objects bound to the node, and as CRI sandboxes and containers
//! carrying the kubelet's labels. No kubelet sync loop runs: the test plays its part.

#[path = "../kubelet/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oxlet_cri::{api, RuntimeService};
use oxlet_e2e::images::{BUSYBOX_REF, ECHOSERVER_PORT, ECHOSERVER_REF};
use oxlet_e2e::runtime_env::{
    container_config, exited, run_container, running, wait_container, EnvOptions, RuntimeEnv,
};
use oxlet_e2e::server::{Backend, TestServer, KUBECTL};
use support::{label_container, label_sandbox, NetnsKubelet, NODE_NAME};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

fn oxlet_bin() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/oxlet");
    if !p.exists() {
        bail!(
            "build the oxlet binary first (cargo build): {} is missing",
            p.display()
        );
    }
    Ok(p)
}

/// What a kubectl run produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// kubectl against `server`, fed `stdin`, killed if it runs past [`WAIT`].
async fn kubectl(server: &TestServer, args: &[&str], stdin: Option<&str>) -> Result<Run> {
    let mut child = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("run kubectl")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("kubectl stdin")?;
        pipe.write_all(input.as_bytes()).await?;
        // Closing stdin is the end of input for `exec -i`.
        drop(pipe);
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .with_context(|| format!("kubectl {args:?} did not finish"))??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

async fn kubectl_ok(server: &TestServer, args: &[&str]) -> Result<String> {
    let run = kubectl(server, args, None).await?;
    if run.code != Some(0) {
        bail!(
            "kubectl {args:?} failed ({:?}): {}{}",
            run.code,
            run.stderr,
            run.stdout
        );
    }
    Ok(run.stdout)
}

/// Applies `yaml`, retrying while the namespace's default ServiceAccount (which pod
/// admission needs) is still being created.
async fn apply(server: &TestServer, yaml: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let run = kubectl(server, &["apply", "-f", "-"], Some(yaml)).await?;
        if run.code == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("kubectl apply failed: {}", run.stderr);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pod bound to the test node, in the API and in CRI; returns its sandbox ID and config.
async fn pod(
    server: &TestServer,
    env: &RuntimeEnv,
    name: &str,
    containers: &[serde_json::Value],
) -> Result<(String, api::PodSandboxConfig)> {
    let list = containers;
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE_NAME, "automountServiceAccountToken": false, "containers": list},
    });
    apply(server, &manifest.to_string()).await?;
    // The kubelet would report the pod running; port-forward insists on it.
    kubectl_ok(
        server,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
    )
    .await?;
    let uid = kubectl_ok(
        server,
        &["get", "pod", name, "-o", "jsonpath={.metadata.uid}"],
    )
    .await?;
    let mut config = env.pod_config(name)?;
    if let Some(m) = config.metadata.as_mut() {
        m.uid = uid;
    }
    let config = label_sandbox(config);
    let id = env.cri.run_pod_sandbox(&config, "").await?;
    Ok((id, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_and_port_forward() -> Result<()> {
    let bin = oxlet_bin()?;
    let env = RuntimeEnv::start("kctl", EnvOptions::default()).await?;
    // No node lifecycle or pod GC: nothing here renews a Lease for the test node.
    let server = tokio::task::spawn_blocking(move || {
        TestServer::start(
            &bin,
            Backend::Sqlite,
            &["--controllers=*,-nodelifecycle,-podgc"],
        )
    })
    .await??;
    // The kubelet trusts client certificates of the cluster CA, so the API server's
    // apiserver-kubelet-client certificate is what gets it in.
    let ca = server.data_dir().join("pki/ca.crt");
    let kubelet = NetnsKubelet::start(&env, Some(ca))?;
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME},
    });
    apply(&server, &node.to_string()).await?;
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.host_addr.port()}},
    }});
    kubectl_ok(
        &server,
        &[
            "patch",
            "node",
            NODE_NAME,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
    )
    .await?;

    // Logs.
    let (logs_sb, logs_pod) = pod(
        &server,
        &env,
        "logs",
        &[serde_json::json!({"name": "app", "image": "busybox"})],
    )
    .await?;
    let first = label_container(
        container_config(
            "app",
            BUSYBOX_REF,
            &[
                "sh",
                "-c",
                "echo one; echo two; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo three; exit 2",
            ],
        ),
        &logs_pod,
        0,
    );
    let first_id = run_container(&env.cri, &logs_sb, &logs_pod, &first).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let run = kubectl(&server, &["logs", "logs"], None).await?;
        if run.code == Some(0) && run.stdout == "one\ntwo\n" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "kubectl logs never showed both lines: {:?} {}",
                run.stdout,
                run.stderr
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kubectl_ok(&server, &["logs", "logs", "--tail=1"]).await?,
        "two\n"
    );
    let stamped = kubectl_ok(
        &server,
        &["logs", "logs", "--timestamps", "--limit-bytes=40"],
    )
    .await?;
    assert!(
        stamped.len() == 40 && stamped.contains("Z one\n"),
        "{stamped:?}"
    );
    let run = kubectl(&server, &["logs", "logs", "-c", "nope"], None).await?;
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("container nope is not valid for pod logs"),
        "{}",
        run.stderr
    );

    // Follow: the existing lines, then the new one, then kubectl exits with the container.
    let mut follow = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["logs", "-f", "logs"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().context("stdout")?).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.len() < 2 {
            match lines.next_line().await? {
                Some(l) => seen.push(l),
                None => bail!("kubectl logs -f ended early: {seen:?}"),
            }
        }
        Ok(())
    })
    .await
    .context("kubectl logs -f showed nothing")??;
    assert_eq!(seen, ["one", "two"]);
    let go = env
        .cri
        .exec_sync(
            &first_id,
            &["touch".to_string(), "/tmp/go".to_string()],
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(go.exit_code, 0);
    tokio::time::timeout(WAIT, async {
        while let Some(l) = lines.next_line().await? {
            seen.push(l);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("kubectl logs -f did not end after the container exited")??;
    assert_eq!(seen, ["one", "two", "three"]);
    let status = tokio::time::timeout(WAIT, follow.wait())
        .await
        .context("kubectl logs -f did not exit")??;
    assert!(status.success(), "kubectl logs -f: {status}");
    wait_container(&env.cri, &first_id, "exited", exited).await?;

    // A restart: --previous shows the first instance.
    let second = label_container(
        container_config("app", BUSYBOX_REF, &["sh", "-c", "echo second"]),
        &logs_pod,
        1,
    );
    let second_id = run_container(&env.cri, &logs_sb, &logs_pod, &second).await?;
    wait_container(&env.cri, &second_id, "exited", exited).await?;
    assert_eq!(kubectl_ok(&server, &["logs", "logs"]).await?, "second\n");
    assert_eq!(
        kubectl_ok(&server, &["logs", "logs", "--previous"]).await?,
        "one\ntwo\nthree\n"
    );

    // Exec: kubectl 1.33 tries WebSocket v5 first; containerd refuses it and kubectl falls
    // back to SPDY through the same chain.
    let (echo_sb, echo_pod) = pod(
        &server,
        &env,
        "echo",
        &[
            serde_json::json!({"name": "web", "image": "oxlet/echoserver"}),
            serde_json::json!({"name": "reader", "image": "busybox", "stdin": true, "stdinOnce": true}),
        ],
    ).await?;
    let web = label_container(container_config("web", ECHOSERVER_REF, &[]), &echo_pod, 0);
    let web_id = run_container(&env.cri, &echo_sb, &echo_pod, &web).await?;
    wait_container(&env.cri, &web_id, "running", running).await?;
    let mut reader = label_container(
        container_config(
            "reader",
            BUSYBOX_REF,
            &["sh", "-c", "while read l; do echo got:$l; done; echo bye"],
        ),
        &echo_pod,
        0,
    );
    reader.stdin = true;
    reader.stdin_once = true;
    let reader_id = run_container(&env.cri, &echo_sb, &echo_pod, &reader).await?;
    wait_container(&env.cri, &reader_id, "running", running).await?;
    assert_eq!(
        kubectl_ok(
            &server,
            &["exec", "echo", "-c", "web", "--", "cat", "/etc/hostname"]
        )
        .await?,
        "echo\n"
    );
    let run = kubectl(
        &server,
        &["exec", "-i", "echo", "-c", "web", "--", "cat"],
        Some("hello\nworld\n"),
    )
    .await?;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "hello\nworld\n"),
        "{}",
        run.stderr
    );
    let run = kubectl(
        &server,
        &[
            "exec",
            "echo",
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 7",
        ],
        None,
    )
    .await?;
    assert_eq!(run.code, Some(7), "{}", run.stderr);
    assert!(run.stderr.contains("oops"), "{}", run.stderr);
    let run = kubectl(&server, &["exec", "echo", "-c", "nope", "--", "true"], None).await?;
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("container nope is not valid for pod echo"),
        "{}",
        run.stderr
    );

    // Attach: stdin reaches the running process; closing it (stdinOnce) ends the process and
    // with it the session.
    let run = kubectl(
        &server,
        &["attach", "-i", "echo", "-c", "reader"],
        Some("ping\n"),
    )
    .await?;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "got:ping\nbye\n"),
        "{}",
        run.stderr
    );
    wait_container(&env.cri, &reader_id, "exited", exited).await?;

    // Port-forward: kubectl's WebSocket tunnel attempt is refused, SPDY carries the traffic.
    let mut pf = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["port-forward", "pod/echo", &format!(":{ECHOSERVER_PORT}")])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut pf_lines = tokio::io::BufReader::new(pf.stdout.take().context("stdout")?).lines();
    let local_port: u16 = tokio::time::timeout(WAIT, async {
        while let Some(line) = pf_lines.next_line().await? {
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split_whitespace().next().unwrap_or_default();
                return port.parse::<u16>().context("forwarded port");
            }
        }
        bail!("kubectl port-forward ended without forwarding")
    })
    .await
    .context("kubectl port-forward did not start")??;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local_port)).await?;
    conn.write_all(b"GET /hostname HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut reply))
        .await
        .context("no answer through port-forward")??;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("\r\n\r\necho"),
        "{reply:?}"
    );
    pf.kill().await?;
    Ok(())
}
