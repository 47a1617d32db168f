//! `oxlet crictl` and `oxlet images import` as a user runs them, against a private containerd.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result};
use oxlet_cri::{image_spec, ImageService, RuntimeService};
use oxlet_e2e::images::{BUSYBOX_REF, PAUSE_REF};
use oxlet_e2e::runtime_env::{
    container_config, run_container, running, wait_container, EnvOptions, RuntimeEnv,
};

fn oxlet(env: &RuntimeEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxlet"))
        .arg("crictl")
        .args(["--runtime-endpoint", &env.containerd.endpoint()])
        .args(args)
        .output()
        .expect("run oxlet crictl")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn crictl_verbs_on_a_running_pod() -> Result<()> {
    let env = RuntimeEnv::start("ctl", EnvOptions::default()).await?;
    let pod = env.pod_config("web")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;
    let cfg = container_config(
        "main",
        "busybox",
        &["sh", "-c", "echo started-ok; sleep 3600"],
    );
    let id = run_container(&env.cri, &sandbox, &pod, &cfg).await?;
    wait_container(&env.cri, &id, "running", running).await?;

    let pods = stdout_ok(&oxlet(&env, &["pods"]));
    assert!(
        pods.contains("POD ID") && pods.contains("web") && pods.contains("Ready"),
        "{pods}"
    );
    let quiet = stdout_ok(&oxlet(&env, &["pods", "-q", "--no-trunc"]));
    assert_eq!(quiet.trim(), sandbox);

    let ps = stdout_ok(&oxlet(&env, &["ps"]));
    assert!(
        ps.contains(&id[..13]) && ps.contains("main") && ps.contains("Running"),
        "{ps}"
    );

    let images = stdout_ok(&oxlet(&env, &["images"]));
    assert!(images.contains("docker.io/library/busybox"), "{images}");

    // A unique prefix is enough, as with crictl; the exit code is the command's.
    let out = oxlet(
        &env,
        &["exec", &id[..8], "--", "sh", "-c", "hostname; exit 4"],
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");

    let logs = stdout_ok(&oxlet(&env, &["logs", &id]));
    assert_eq!(logs.trim(), "started-ok");

    let inspect = stdout_ok(&oxlet(&env, &["inspect", &id]));
    assert!(inspect.contains(&id), "{inspect}");
    let inspectp = stdout_ok(&oxlet(&env, &["inspectp", &sandbox]));
    assert!(inspectp.contains(&sandbox), "{inspectp}");
    let info = stdout_ok(&oxlet(&env, &["info"]));
    assert!(info.contains("RuntimeReady"), "{info}");
    let version = stdout_ok(&oxlet(&env, &["version"]));
    assert!(version.contains("containerd"), "{version}");

    stdout_ok(&oxlet(&env, &["pull", "docker.io/library/busybox:1.35"]));
    assert!(env
        .cri
        .image_status(&image_spec("docker.io/library/busybox:1.35"))
        .await?
        .is_some());

    stdout_ok(&oxlet(&env, &["stopp", &sandbox]));
    stdout_ok(&oxlet(&env, &["rmp", &sandbox]));
    assert!(env.cri.list_pod_sandbox(None).await?.is_empty());

    // An unknown ID is a clear error, not a crash.
    let out = oxlet(&env, &["inspect", "ffffffffffff"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    Ok(())
}

#[tokio::test]
async fn images_import_loads_archives_into_k8s_io() -> Result<()> {
    let env = RuntimeEnv::start(
        "ctlimp",
        EnvOptions {
            registry: false,
            ..Default::default()
        },
    )
    .await?;
    let out = Command::new(env!("CARGO_BIN_EXE_oxlet"))
        .args(["images", "import", "--address"])
        .arg(env.containerd.socket())
        .arg(&env.images.busybox.archive)
        .arg(&env.images.pause.archive)
        .output()
        .context("run oxlet images import")?;
    let text = stdout_ok(&out);
    assert!(
        text.contains(BUSYBOX_REF) && text.contains(PAUSE_REF),
        "{text}"
    );
    for name in [BUSYBOX_REF, PAUSE_REF] {
        assert!(
            env.cri.image_status(&image_spec(name)).await?.is_some(),
            "{name} not visible through CRI"
        );
    }
    // Imported images run with no registry at all.
    let pod = env.pod_config("imported")?;
    let sandbox = env.cri.run_pod_sandbox(&pod, "").await?;
    let id = env
        .cri
        .create_container(
            &sandbox,
            &container_config("c", BUSYBOX_REF, &["sleep", "60"]),
            &pod,
        )
        .await?;
    env.cri.start_container(&id).await?;
    wait_container(&env.cri, &id, "running", running).await?;
    env.cri.stop_container(&id, Duration::from_secs(1)).await?;
    Ok(())
}
