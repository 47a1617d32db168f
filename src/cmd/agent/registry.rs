//! Bundled images without internet: a local registry mirror (Debian's `docker-registry` on
//! 127.0.0.1, storage under `<data-dir>/registry`) loaded with skopeo from the OCI images in
//! `<data-dir>/images`, and containerd `certs.d` entries that send pulls for `docker.io`,
//! `registry.k8s.io` (and every other registry a bundled image names) to it first.
//!
//! A mirror rather than only an import into containerd: `image: busybox` means
//! `imagePullPolicy: Always`, so every pod start asks a registry for the manifest.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::Managed;

/// How long the registry gets after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the registry may take to answer `GET /v2/`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Registries always mirrored (where the sandbox image and short names resolve to).
const ALWAYS_MIRRORED: [&str; 2] = ["docker.io", "registry.k8s.io"];
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The registry's files under `<data-dir>/registry`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<data-dir>/registry`.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.yml")
    }

    /// Blob and manifest storage (kept across restarts).
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// The registry's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// The PID file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("registry.pid")
    }

    fn skopeo_dir(&self) -> PathBuf {
        self.dir.join("skopeo")
    }
}

/// One image reference found in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledImage {
    /// skopeo's source name: `oci-archive:<file>[:<ref.name>]` or `oci:<dir>[:<ref.name>]`.
    pub source: String,
    /// The fully qualified reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
}

impl BundledImage {
    /// The registry host of the reference (`docker.io`).
    pub fn registry(&self) -> &str {
        self.reference.split_once('/').map_or("", |(r, _)| r)
    }

    /// The reference without its registry, as a mirror serves it (`library/busybox:latest`).
    pub fn mirror_path(&self) -> &str {
        self.reference.split_once('/').map_or("", |(_, p)| p)
    }
}

/// Normalises a reference as containerd does (`busybox` → `docker.io/library/busybox:latest`);
/// `None` for a bare tag (an OCI layout's `ref.name` is often only `latest`) or a digest.
pub fn normalize(reference: &str) -> Option<String> {
    if reference.is_empty() || reference.contains('@') {
        return None;
    }
    let (first, rest) = match reference.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (reference, None),
    };
    let has_registry =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = match (has_registry, rest) {
        (true, _) => reference.to_string(),
        (false, Some(_)) => format!("docker.io/{reference}"),
        // One component: `busybox:1.35` is an image; `latest` alone is only a tag.
        (false, None) if reference.contains(':') => format!("docker.io/library/{reference}"),
        (false, None) => return None,
    };
    let last = full.rsplit('/').next().unwrap_or("");
    Some(if last.contains(':') {
        full
    } else {
        format!("{full}:latest")
    })
}

/// The images in `dir`: OCI image layout directories and OCI archives (`*.tar`), each entry of
/// their `index.json` named by `io.containerd.image.name` or a qualified `ref.name`.
/// Entries without a usable name are skipped with a warning.
pub fn scan(dir: &Path) -> anyhow::Result<Vec<BundledImage>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let (transport, index) = if path.join("oci-layout").is_file() {
            let text = std::fs::read(path.join("index.json"))
                .with_context(|| format!("read {}/index.json", path.display()))?;
            ("oci", text)
        } else if path.extension().is_some_and(|e| e == "tar") {
            ("oci-archive", archive_index(&path)?)
        } else {
            continue;
        };
        let index: serde_json::Value = serde_json::from_slice(&index)
            .with_context(|| format!("parse the index.json of {}", path.display()))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let single = manifests.len() == 1;
        for m in &manifests {
            let ann = |k: &str| m["annotations"][k].as_str().filter(|s| !s.is_empty());
            let ref_name = ann(ANN_REF_NAME);
            let Some(reference) = ann(ANN_CONTAINERD_NAME).or(ref_name).and_then(normalize) else {
                tracing::warn!(
                    file = %path.display(),
                    "bundled image entry without a qualified name; skipped"
                );
                continue;
            };
            let source = match (ref_name, single) {
                (Some(r), _) => format!("{transport}:{}:{r}", path.display()),
                (None, true) => format!("{transport}:{}", path.display()),
                (None, false) => {
                    tracing::warn!(file = %path.display(), %reference, "no ref.name to select it by; skipped");
                    continue;
                }
            };
            out.push(BundledImage { source, reference });
        }
    }
    Ok(out)
}

/// `index.json` from an OCI archive.
fn archive_index(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive
        .entries()
        .with_context(|| format!("read {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("read {}", path.display()))?;
        let name = entry.path().map(|p| p.to_path_buf()).unwrap_or_default();
        if name == Path::new("index.json") || name == Path::new("./index.json") {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .with_context(|| format!("read index.json in {}", path.display()))?;
            return Ok(buf);
        }
    }
    bail!("{}: no index.json (not an OCI archive)", path.display())
}

/// The registry hosts to mirror: the two defaults and every host a bundled image names.
pub fn mirrored_hosts(images: &[BundledImage]) -> BTreeSet<String> {
    let mut hosts: BTreeSet<String> = ALWAYS_MIRRORED.iter().map(|h| h.to_string()).collect();
    hosts.extend(images.iter().map(|i| i.registry().to_string()));
    hosts
}

/// Writes `certs.d/<host>/hosts.toml` for each host, pointing pulls at the plain-HTTP mirror
/// `addr` first; containerd falls back to the real registry for what the mirror lacks.
/// Mirror paths drop the registry name, so two registries with the same repository path
/// share one mirror entry (harmless for the bundle this serves).
pub fn write_mirrors(certs_d: &Path, addr: &str, hosts: &BTreeSet<String>) -> anyhow::Result<()> {
    // Mirrors of an earlier run (another port, other hosts) must not linger.
    if certs_d.exists() {
        std::fs::remove_dir_all(certs_d)
            .with_context(|| format!("remove {}", certs_d.display()))?;
    }
    for host in hosts {
        let upstream = match host.as_str() {
            "docker.io" => "https://registry-1.docker.io".to_string(),
            h => format!("https://{h}"),
        };
        let text = format!(
            "# Written by oxlet agent: pulls go to the bundled-image mirror first.\n\
             server = \"{upstream}\"\n\n\
             [host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        );
        write_hosts_toml(certs_d, host, &text)?;
    }
    // Pulls naming the mirror itself (`127.0.0.1:<port>/...`) go over plain HTTP.
    let direct = format!(
        "server = \"http://{addr}\"\n\n\
         [host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
    );
    write_hosts_toml(certs_d, addr, &direct)
}

fn write_hosts_toml(certs_d: &Path, host: &str, text: &str) -> anyhow::Result<()> {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("hosts.toml");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

fn config_yaml(storage: &Path, addr: &str) -> anyhow::Result<String> {
    // The secret only signs upload state; a fresh random one per start is enough.
    let secret = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("read a random secret")?
        .trim()
        .replace('-', "");
    Ok(format!(
        "# Written by oxlet agent at every start.\n\
         version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        storage = storage.display(),
    ))
}

/// Starts the registry on a free 127.0.0.1 port and waits until `GET /v2/` answers; returns
/// the process and its address. A port found free can be taken before the registry binds
/// it, so a registry that exits at once is retried on another port.
pub async fn start(layout: &Layout) -> anyhow::Result<(Managed, String)> {
    std::fs::create_dir_all(layout.storage())
        .with_context(|| format!("create {}", layout.storage().display()))?;
    let mut last = None;
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port for the registry")?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = layout.config();
        std::fs::write(&config, config_yaml(&layout.storage(), &addr)?)
            .with_context(|| format!("write {}", config.display()))?;
        let config_arg = config.display().to_string();
        let mut process = Managed::spawn(
            "registry",
            "docker-registry",
            &["serve".to_string(), config_arg.clone()],
            &layout.log(),
            &layout.pid_file(),
            &config_arg,
            STOP_GRACE,
        )
        .await?;
        match wait_ready(&addr, &mut process).await {
            Ok(()) => return Ok((process, addr)),
            Err(e) => {
                process.stop(STOP_GRACE).await;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("registry: no start attempt made")))
}

async fn wait_ready(addr: &str, process: &mut Managed) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = process.try_exited() {
            bail!(
                "docker-registry on {addr} exited ({status}); last lines of its log:\n{}",
                process.log_tail(20)
            );
        }
        let last = match http_status(addr, "/v2/").await {
            Ok(200) => return Ok(()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() > deadline {
            bail!(
                "docker-registry on {addr} not ready after {START_DEADLINE:?} (last: {last}); \
                 last lines of its log:\n{}",
                process.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status code of a plain `GET path` to `addr`.
async fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("timed out")?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}"))
}

/// Copies every bundled image into the registry at `addr` with skopeo. Blobs already there
/// are skipped by skopeo itself, so a restart costs one manifest check per image.
pub async fn push(layout: &Layout, addr: &str, images: &[BundledImage]) -> anyhow::Result<()> {
    let dir = layout.skopeo_dir();
    prepare_skopeo_dir(&dir)?;
    for image in images {
        let dest = format!("docker://{addr}/{}", image.mirror_path());
        let out = skopeo(&dir)
            .args(["copy", "--quiet", "--retry-times", "2"])
            .args(["--dest-tls-verify=false", "--dest-no-creds"])
            .arg(&image.source)
            .arg(&dest)
            .output()
            .await
            .context("run skopeo (run `make setup` if it is missing)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {} {dest} failed ({}): {}",
                image.source,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tracing::info!(image = %image.reference, mirror = %dest, "bundled image served");
    }
    Ok(())
}

/// skopeo's private configuration: a permissive policy for local copies, no registries.conf,
/// no credentials, and its caches inside the data dir rather than /var/lib/containers.
fn prepare_skopeo_dir(dir: &Path) -> anyhow::Result<()> {
    for sub in ["tmp", "registries.d"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("create {}", dir.join(sub).display()))?;
    }
    for (name, text) in [
        (
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        ),
        ("registries.conf", ""),
        ("containers.conf", ""),
        ("auth.json", "{}"),
    ] {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("write {}", dir.join(name).display()))?;
    }
    Ok(())
}

fn skopeo(dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.env("TMPDIR", dir.join("tmp"))
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("XDG_RUNTIME_DIR", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("HOME", dir)
        // As root, containers/image keeps a blob-info cache in /var/lib/containers/cache; with
        // this (its rootless switch) the cache goes to $XDG_DATA_HOME, inside the data dir.
        .env("_CONTAINERS_ROOTLESS_UID", "1")
        .arg("--policy")
        .arg(dir.join("policy.json"))
        .arg("--registries.d")
        .arg(dir.join("registries.d"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_containerd() {
        assert_eq!(normalize("busybox").as_deref(), None);
        assert_eq!(
            normalize("busybox:1.35").as_deref(),
            Some("docker.io/library/busybox:1.35")
        );
        assert_eq!(
            normalize("oxlet/echoserver").as_deref(),
            Some("docker.io/oxlet/echoserver:latest")
        );
        assert_eq!(
            normalize("registry.k8s.io/pause:3.10").as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
        assert_eq!(
            normalize("localhost:5000/x/y").as_deref(),
            Some("localhost:5000/x/y:latest")
        );
        assert_eq!(normalize("latest"), None);
        assert_eq!(normalize("docker.io/library/busybox@sha256:abc"), None);
    }

    fn index(entries: &[(&str, Option<&str>)]) -> String {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(ref_name, containerd)| {
                let mut ann = serde_json::Map::new();
                ann.insert(ANN_REF_NAME.into(), (*ref_name).into());
                if let Some(c) = containerd {
                    ann.insert(ANN_CONTAINERD_NAME.into(), (*c).into());
                }
                serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:00", "size": 1, "annotations": ann})
            })
            .collect();
        serde_json::json!({"schemaVersion": 2, "manifests": manifests}).to_string()
    }

    #[test]
    fn scan_finds_archives_and_layouts_by_name() {
        let dir = std::env::temp_dir().join(format!("oxlet-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("layout")).expect("mkdir");
        // An archive with fully qualified names (what `make standalone` writes).
        let idx = index(&[
            (
                "docker.io/library/busybox:latest",
                Some("docker.io/library/busybox:latest"),
            ),
            (
                "docker.io/library/busybox:1.35",
                Some("docker.io/library/busybox:1.35"),
            ),
        ]);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(idx.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "index.json", idx.as_bytes())
            .expect("tar");
        std::fs::write(dir.join("busybox.tar"), b.into_inner().expect("tar")).expect("write");
        // A layout whose ref.name is a bare tag for one entry and a short name for another.
        std::fs::write(
            dir.join("layout/oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write");
        std::fs::write(
            dir.join("layout/index.json"),
            index(&[("latest", None), ("pause:3.10", None)]),
        )
        .expect("write");
        std::fs::write(dir.join("notes.txt"), "ignored").expect("write");

        let found = scan(&dir).expect("scan");
        let d = dir.display();
        assert_eq!(
            found,
            vec![
                BundledImage {
                    source: format!("oci-archive:{d}/busybox.tar:docker.io/library/busybox:latest"),
                    reference: "docker.io/library/busybox:latest".into(),
                },
                BundledImage {
                    source: format!("oci-archive:{d}/busybox.tar:docker.io/library/busybox:1.35"),
                    reference: "docker.io/library/busybox:1.35".into(),
                },
                BundledImage {
                    source: format!("oci:{d}/layout:pause:3.10"),
                    reference: "docker.io/library/pause:3.10".into(),
                },
            ]
        );
        assert_eq!(found[0].mirror_path(), "library/busybox:latest");
        assert_eq!(
            mirrored_hosts(&found).into_iter().collect::<Vec<_>>(),
            vec!["docker.io".to_string(), "registry.k8s.io".to_string()]
        );
        assert!(scan(&dir.join("missing")).expect("missing dir").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mirrors_replace_an_earlier_run() {
        let dir = std::env::temp_dir().join(format!("oxlet-mirrors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts: BTreeSet<String> = ["docker.io".to_string(), "quay.io".to_string()].into();
        write_mirrors(&dir, "127.0.0.1:1111", &hosts).expect("first");
        write_mirrors(&dir, "127.0.0.1:2222", &hosts).expect("second");
        let docker = std::fs::read_to_string(dir.join("docker.io/hosts.toml")).expect("read");
        assert!(
            docker.contains(r#"server = "https://registry-1.docker.io""#),
            "{docker}"
        );
        assert!(
            docker.contains(r#"[host."http://127.0.0.1:2222"]"#),
            "{docker}"
        );
        let quay = std::fs::read_to_string(dir.join("quay.io/hosts.toml")).expect("read");
        assert!(quay.contains(r#"server = "https://quay.io""#), "{quay}");
        assert!(dir.join("127.0.0.1:2222/hosts.toml").is_file());
        assert!(!dir.join("127.0.0.1:1111").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
