//! The official Kubernetes Python client (`kubernetes` from PyPI, installed by `make setup`)
//! drives `oxlet server`: create, list with selectors and pages, watch, patch, delete.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use oxlet_e2e::server::{Backend, TestServer};

#[test]
fn python_client_crud_watch_patch_delete() -> Result<()> {
    let server = TestServer::start(Path::new(env!("CARGO_BIN_EXE_oxlet")), Backend::Sqlite, &[])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", server.kubeconfig())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "python client failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
            out.status,
            server.log()
        );
    }
    assert!(stdout.contains("all checks passed"), "{stdout}");
    Ok(())
}
