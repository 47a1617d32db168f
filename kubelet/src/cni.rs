//! Pod networking for simple clusters: a bridge + host-local + portmap conflist for the node's
//! pod CIDR, written into the runtime's CNI conf dir (containerd adds loopback itself).

use std::path::{Path, PathBuf};

use oxlet_cri::Runtime;

use crate::error::{Error, Result};

/// File name of the conflist; sorts first so the runtime picks it.
pub const CONFLIST_NAME: &str = "10-oxlet.conflist";

/// The conflist text for `cidr` (pure).
pub fn conflist(network: &str, bridge: &str, cidr: &str, ipam_dir: &Path) -> String {
    let default_route = if cidr.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": cidr}]],
                    "routes": [{"dst": default_route}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// The runtime's CNI conf dir, from CRI `Status` verbose info (containerd reports its config
/// there); `/etc/cni/net.d` when it does not say.
pub async fn runtime_conf_dir(runtime: &dyn Runtime) -> PathBuf {
    let fallback = PathBuf::from("/etc/cni/net.d");
    let Ok(status) = runtime.status(true).await else {
        return fallback;
    };
    status
        .info
        .get("config")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|v| {
            v.pointer("/cni/confDir")
                .and_then(|d| d.as_str())
                .map(PathBuf::from)
        })
        .unwrap_or(fallback)
}

/// Writes the conflist atomically (temp file + rename) unless it already has this content.
/// Returns whether the file changed.
pub fn write_conflist(conf_dir: &Path, text: &str) -> Result<bool> {
    let path = conf_dir.join(CONFLIST_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    let io = |op: &'static str, p: &Path| {
        let p = p.display().to_string();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    std::fs::create_dir_all(conf_dir).map_err(io("create", conf_dir))?;
    let tmp = conf_dir.join(format!(".{CONFLIST_NAME}.tmp"));
    std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_shape() {
        let t = conflist("oxlet", "cni0", "10.42.0.0/24", Path::new("/var/lib/k/cni"));
        let v: serde_json::Value = serde_json::from_str(&t).expect("json");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.0.0/24"
        );
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/var/lib/k/cni");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        let dir = tempfile::tempdir().expect("tmp");
        assert!(write_conflist(dir.path(), &t).expect("write"));
        assert!(!write_conflist(dir.path(), &t).expect("rewrite"));
    }
}
