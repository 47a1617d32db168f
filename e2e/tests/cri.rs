//! The CRI client against a real private containerd: pulls from the local registries, pods with
//! CNI addresses in the test's namespace, container lifecycle, logs, exec, filters, import and
//! cleanup.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oxlet_cri::api;
use oxlet_cri::{image_spec, ImageService, RuntimeService};
use oxlet_e2e::images::{BUSYBOX_REF, ECHOSERVER_PORT, ECHOSERVER_REF, PAUSE_REF};
use oxlet_e2e::runtime_env::{
    container_config, exited, run_container, running, wait_container, EnvOptions, RuntimeEnv,
    AUTH_PASSWORD, AUTH_USER,
};

#[tokio::test]
async fn version_and_status() -> Result<()> {
    let env = RuntimeEnv::start(
        "ver",
        EnvOptions {
            registry: false,
            ..Default::default()
        },
    )
    .await?;
    let v = env.cri.version().await?;
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let status = env.cri.status(false).await?.status.context("no status")?;
    for cond in ["RuntimeReady", "NetworkReady"] {
        let c = status
            .conditions
            .iter()
            .find(|c| c.r#type == cond)
            .with_context(|| format!("no {cond} in {status:?}"))?;
        assert!(c.status, "{cond} false: {} {}", c.reason, c.message);
    }
    Ok(())
}

#[tokio::test]
async fn pull_through_the_mirror_and_report_missing_images() -> Result<()> {
    let env = RuntimeEnv::start("pull", EnvOptions::default()).await?;
    let image_ref = env
        .cri
        .pull_image(&image_spec("busybox"), None, None)
        .await?;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let img = env
        .cri
        .image_status(&image_spec(BUSYBOX_REF))
        .await?
        .context("busybox not present after pull")?;
    assert!(
        img.repo_tags.iter().any(|t| t == BUSYBOX_REF),
        "{:?}",
        img.repo_tags
    );
    let listed = env.cri.list_images(None).await?;
    assert!(listed.iter().any(|i| i.id == img.id));

    // A tag the registry does not have: a typed error that keeps containerd's words.
    let err = env
        .cri
        .pull_image(
            &image_spec("docker.io/library/busybox:no-such-tag"),
            None,
            None,
        )
        .await
        .expect_err("pulling a missing tag must fail");
    assert!(err.to_string().contains("no-such-tag"), "{err}");
    assert!(err.code().is_some(), "{err:?}");

    env.cri.remove_image(&image_spec(BUSYBOX_REF)).await?;
    assert!(env
        .cri
        .image_status(&image_spec(BUSYBOX_REF))
        .await?
        .is_none());
    Ok(())
}

#[tokio::test]
async fn pull_with_credentials() -> Result<()> {
    let env = RuntimeEnv::start(
        "auth",
        EnvOptions {
            auth_registry: true,
            ..Default::default()
        },
    )
    .await?;
    let addr = env.auth_registry.as_ref().context("auth registry")?.addr();
    let private = image_spec(format!("{addr}/private/busybox:latest"));
    let err = env
        .cri
        .pull_image(&private, None, None)
        .await
        .expect_err("anonymous pull from the auth registry must fail");
    assert!(
        err.to_string().to_lowercase().contains("unauthorized") || err.to_string().contains("401"),
        "{err}"
    );
    let wrong = api::AuthConfig {
        username: AUTH_USER.to_string(),
        password: "wrong".to_string(),
        ..Default::default()
    };
    assert!(env
        .cri
        .pull_image(&private, Some(&wrong), None)
        .await
        .is_err());
    let auth = api::AuthConfig {
        username: AUTH_USER.to_string(),
        password: AUTH_PASSWORD.to_string(),
        ..Default::default()
    };
    env.cri.pull_image(&private, Some(&auth), None).await?;
    assert!(env.cri.image_status(&private).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn sandbox_gets_a_cni_address_and_serves_traffic() -> Result<()> {
    let env = RuntimeEnv::start("net", EnvOptions::default()).await?;
    let pod = env.pod_config("echo")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;
    let status = env
        .cri
        .pod_sandbox_status(&sandbox, false)
        .await?
        .status
        .context("status")?;
    assert_eq!(status.state, api::PodSandboxState::SandboxReady as i32);
    let ip: std::net::Ipv4Addr = status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .context("no network status")?
        .parse()
        .context("pod IP")?;
    assert_eq!(
        ip.octets()[..2],
        [10, 88],
        "pod IP {ip} outside 10.88.0.0/16"
    );
    // The sandbox image came through the registry.k8s.io mirror.
    assert!(env
        .cri
        .image_status(&image_spec(PAUSE_REF))
        .await?
        .is_some());

    let id = run_container(
        &env.cri,
        &sandbox,
        &pod,
        &container_config("echo", ECHOSERVER_REF, &[]),
    )
    .await?;
    wait_container(&env.cri, &id, "running", running).await?;

    // Real traffic from the test's namespace (where the bridge is) to the pod IP.
    let body = http_get_in(&env, ip, ECHOSERVER_PORT, "/from-test").await?;
    assert!(body.contains("hostname=echo"), "{body}");
    assert!(body.contains(&format!("pod_ip={ip}")), "{body}");
    assert!(body.contains("path=/from-test"), "{body}");
    Ok(())
}

/// GET over plain TCP from inside the test's namespace, retrying until the server listens.
async fn http_get_in(
    env: &RuntimeEnv,
    ip: std::net::Ipv4Addr,
    port: u16,
    path: &str,
) -> Result<String> {
    let path = path.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = path.clone();
        let got = env.netns.run_in(move || -> std::io::Result<String> {
            use std::io::{Read, Write};
            let addr = std::net::SocketAddr::from((ip, port));
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {p} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?;
        match got {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => bail!("GET {ip}:{port}{path}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn container_lifecycle_logs_exit_codes_and_exec() -> Result<()> {
    let env = RuntimeEnv::start("life", EnvOptions::default()).await?;
    let pod = env.pod_config("life")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;

    // A container that prints and exits 3: state, exit code, log file.
    let cfg = container_config(
        "oneshot",
        "busybox",
        &["sh", "-c", "echo hello-out; echo hello-err >&2; exit 3"],
    );
    let oneshot = run_container(&env.cri, &sandbox, &pod, &cfg).await?;
    let st = wait_container(&env.cri, &oneshot, "exited", exited).await?;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    // Both set; their order is not checked: containerd may handle a fast exit before it
    // records the start time.
    assert!(st.started_at > 0 && st.finished_at > 0, "{st:?}");
    let log = Path::new(&pod.log_directory).join("oneshot/0.log");
    assert_eq!(st.log_path, log.display().to_string());
    let text = std::fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
    // CRI log format: <RFC3339Nano> <stream> <P|F> <message>
    assert!(
        text.lines().any(|l| l.contains(" stdout F hello-out")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(" stderr F hello-err")),
        "{text}"
    );

    // A long-running container: exec, stop with a grace period, remove.
    let cfg = container_config("sleeper", "busybox", &["sleep", "3600"]);
    let sleeper = run_container(&env.cri, &sandbox, &pod, &cfg).await?;
    wait_container(&env.cri, &sleeper, "running", running).await?;
    let out = env
        .cri
        .exec_sync(
            &sleeper,
            &[
                "sh".into(),
                "-c".into(),
                "hostname; echo oops >&2; exit 7".into(),
            ],
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "life");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "oops");

    env.cri
        .stop_container(&sleeper, Duration::from_secs(2))
        .await?;
    let st = wait_container(&env.cri, &sleeper, "exited", exited).await?;
    // sleep ignores nothing: SIGTERM ends it, 128 + 15.
    assert_eq!(st.exit_code, 143, "{st:?}");
    env.cri.remove_container(&sleeper).await?;
    let err = env
        .cri
        .container_status(&sleeper, false)
        .await
        .expect_err("removed");
    assert!(err.is_not_found(), "{err:?}");
    // Removing twice is not an error.
    env.cri.remove_container(&sleeper).await?;

    env.cri.stop_pod_sandbox(&sandbox).await?;
    env.cri.remove_pod_sandbox(&sandbox).await?;
    assert!(env.cri.list_containers(None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn list_and_filter_by_labels() -> Result<()> {
    let env = RuntimeEnv::start("list", EnvOptions::default()).await?;
    let a = env.pod_config("alpha")?;
    let b = env.pod_config("beta")?;
    let sa = env.cri.run_pod_sandbox(&a, "").await?;
    let sb = env.cri.run_pod_sandbox(&b, "").await?;
    let ca = run_container(
        &env.cri,
        &sa,
        &a,
        &container_config("main", "busybox", &["sleep", "3600"]),
    )
    .await?;
    let cb = run_container(
        &env.cri,
        &sb,
        &b,
        &container_config("side", "busybox", &["sleep", "3600"]),
    )
    .await?;

    let only_alpha = api::PodSandboxFilter {
        label_selector: HashMap::from([("app".to_string(), "alpha".to_string())]),
        ..Default::default()
    };
    let pods = env.cri.list_pod_sandbox(Some(only_alpha)).await?;
    assert_eq!(
        pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![sa.as_str()]
    );
    assert_eq!(env.cri.list_pod_sandbox(None).await?.len(), 2);

    let by_label = api::ContainerFilter {
        label_selector: HashMap::from([("container".to_string(), "side".to_string())]),
        ..Default::default()
    };
    let got = env.cri.list_containers(Some(by_label)).await?;
    assert_eq!(
        got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![cb.as_str()]
    );
    let by_pod = api::ContainerFilter {
        pod_sandbox_id: sa.clone(),
        ..Default::default()
    };
    let got = env.cri.list_containers(Some(by_pod)).await?;
    assert_eq!(
        got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![ca.as_str()]
    );
    Ok(())
}

#[tokio::test]
async fn imported_images_run_without_any_registry() -> Result<()> {
    let env = RuntimeEnv::start(
        "imp",
        EnvOptions {
            registry: false,
            ..Default::default()
        },
    )
    .await?;
    for img in [&env.images.pause, &env.images.echoserver] {
        let imported =
            oxlet_cri::import_archive(&env.containerd.socket(), "k8s.io", &img.archive).await?;
        assert!(
            !imported.is_empty(),
            "nothing imported from {}",
            img.archive.display()
        );
    }
    let found = env
        .cri
        .image_status(&image_spec(ECHOSERVER_REF))
        .await?
        .context("imported echoserver not visible through CRI")?;
    assert!(
        found.repo_tags.iter().any(|t| t == ECHOSERVER_REF),
        "{:?}",
        found.repo_tags
    );

    // No registry exists: the sandbox image and the container image must come from the import.
    let pod = env.pod_config("airgap")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;
    let mut cfg = container_config("echo", ECHOSERVER_REF, &[]);
    cfg.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat /etc/passwd | head -1; /echoserver -v".into(),
    ];
    let id = env.cri.create_container(&sandbox, &cfg, &pod).await?;
    env.cri.start_container(&id).await?;
    let st = wait_container(&env.cri, &id, "exited", exited).await?;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let text = std::fs::read_to_string(Path::new(&pod.log_directory).join("echo/0.log"))?;
    assert!(text.contains("root:x:0:0"), "{text}");

    // Importing the same archive again is idempotent.
    oxlet_cri::import_archive(
        &env.containerd.socket(),
        "k8s.io",
        &env.images.echoserver.archive,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn cleanup_leaves_nothing_behind() -> Result<()> {
    let env = RuntimeEnv::start("gone", EnvOptions::default()).await?;
    let pod = env.pod_config("gone")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;
    run_container(
        &env.cri,
        &sandbox,
        &pod,
        &container_config("c", "busybox", &["sleep", "3600"]),
    )
    .await?;

    let dir = env.containerd.dir().to_path_buf();
    let socket = env.containerd.socket();
    let netns = env.netns.name().to_string();
    let network = env.containerd.network_name().to_string();
    let cgroup = env.containerd.cgroup_parent("");
    let pid = env.containerd.pid().context("pid")?;
    let shim = oxlet_e2e::containerd::shim_socket_path(&socket, "k8s.io", &sandbox);
    assert!(
        shim.exists(),
        "expected the shim socket at {}",
        shim.display()
    );
    drop(env);

    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "containerd {pid} still running"
    );
    assert!(!shim.exists(), "shim socket {} left behind", shim.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts left under {}",
        dir.display()
    );
    let namespaces =
        oxlet_e2e::netns::run(std::process::Command::new("ip").args(["netns", "list"]))?;
    assert!(!namespaces
        .lines()
        .any(|l| l.split_whitespace().next() == Some(netns.as_str())));
    for m in oxlet_e2e::containerd::cgroup_mounts() {
        let p = m.join(cgroup.trim_start_matches('/').trim_end_matches('/'));
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
    let cache = std::fs::read_dir("/var/lib/cni/results").map(|rd| {
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&network))
            .count()
    });
    assert_eq!(
        cache.unwrap_or(0),
        0,
        "CNI cache entries left for {network}"
    );
    let shims = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&socket.display().to_string()))
        .count();
    assert_eq!(shims, 0, "processes still refer to {}", socket.display());
    Ok(())
}
