//! The `oxlet` binary's own surface: version output and flag errors reported before starting.

use std::process::Command;

fn oxlet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oxlet"))
        .args(args)
        .output()
        .expect("run oxlet")
}

#[test]
fn version_names_version_commit_and_kubernetes_api() {
    let out = oxlet(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("oxlet {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("git commit: "), "{text}");
    assert!(text.contains("kubernetes api: v1.33"), "{text}");

    let out = oxlet(&["version", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kubernetesApi"], "v1.33");
    assert!(v["gitCommit"].as_str().is_some_and(|c| !c.is_empty()));
}

#[test]
fn agent_and_standalone_reject_bad_flags_before_starting() {
    let dir = std::env::temp_dir().join(format!("oxlet-cli-node-{}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();

    let out = oxlet(&["agent", "--data-dir", &dir_arg]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kubeconfig"), "{err}");

    let out = oxlet(&[
        "agent",
        "--kubeconfig",
        "/nonexistent/kc",
        "--data-dir",
        &dir_arg,
    ]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/kc: no such file"), "{err}");

    let out = oxlet(&[
        "agent",
        "--kubeconfig",
        "/nonexistent/kc",
        "--data-dir",
        &dir_arg,
        "--register-with-taints",
        "a=b:Sometimes",
    ]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid effect"), "{err}");

    let out = oxlet(&["standalone", "--data-dir", &dir_arg, "--secure-port", "0"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secure-port"), "{err}");

    assert!(
        !dir.exists(),
        "nothing may be written before validation passes"
    );
}

#[test]
fn kubelet_rejects_bad_flags_before_starting() {
    let out = oxlet(&["kubelet", "--register-with-taints", "a=b:Sometimes"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid effect"), "{err}");
    let out = oxlet(&["kubelet", "--cni-config", "maybe"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn server_rejects_a_bad_port_before_starting() {
    let out = oxlet(&["server", "--secure-port", "notanumber"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secure-port"), "{err}");
    assert!(err.contains("notanumber"), "{err}");
}

#[test]
fn server_config_errors_exit_64() {
    let dir = std::env::temp_dir().join(format!("oxlet-cli-{}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();
    let out = oxlet(&[
        "server",
        "--data-dir",
        &dir_arg,
        "--service-cluster-ip-range",
        "10.43.0.1/16",
    ]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--service-cluster-ip-range"), "{err}");
    assert!(
        !dir.exists(),
        "nothing may be written before validation passes"
    );
}
