//! The `oxlet` binary's own surface: version output and honest refusals.

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
fn unbuilt_components_refuse_clearly() {
    for sub in ["agent", "standalone"] {
        let out = oxlet(&[sub, "--some-flag", "x"]);
        assert_eq!(out.status.code(), Some(69), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not implemented yet"), "{sub}: {err}");
    }
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
