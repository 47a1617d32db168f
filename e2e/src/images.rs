//! Test images built locally, since nothing can be pulled from the internet here.
//!
//! `pause`, `busybox` and `echoserver` are assembled as OCI image layouts by this module's own
//! code (tar + gzip + sha256 + JSON), from the static C programs in `images/` and the host's
//! busybox-static. Builds are deterministic (mtime 0, uid/gid 0, sorted entries), so the same
//! inputs give the same digests on every machine. Outputs are cached under
//! `<workspace>/target/oxlet-images/<key>/`, where the key hashes every input; test processes
//! running in parallel serialise on an `flock` and see either nothing or a complete build,
//! because each build is made in a temporary directory and renamed into place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::netns::{self, Netns};

/// The pause image, under the name the kubelet and containerd use by default.
pub const PAUSE_REF: &str = "registry.k8s.io/pause:3.10";
/// busybox, as `image: busybox` normalises.
pub const BUSYBOX_REF: &str = "docker.io/library/busybox:latest";
/// The same busybox image under its version tag.
pub const BUSYBOX_1_35_REF: &str = "docker.io/library/busybox:1.35";
/// The HTTP/UDP echo server (busybox layer + `/echoserver`), listening on 8080.
pub const ECHOSERVER_REF: &str = "docker.io/oxlet/echoserver:latest";
/// The TCP port the echoserver image listens on by default.
pub const ECHOSERVER_PORT: u16 = 8080;

/// Env var overriding the cache directory.
pub const IMAGES_DIR_ENV: &str = "OXLET_IMAGES_DIR";

/// Where the host's busybox-static lives (Debian package `busybox-static`).
const HOST_BUSYBOX: &str = "/bin/busybox";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bump when the layout code changes what it writes, so old caches are not reused.
const FORMAT_VERSION: &str = "oxlet-images v1";

const PAUSE_C: &str = include_str!("../../images/pause.c");
const ECHOSERVER_C: &str = include_str!("../../images/echoserver.c");

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's own import annotation (`ctr import` and the CRI import read it first).
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// All image timestamps: the epoch, so rebuilds are byte-identical.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// One image, built as an OCI layout plus an OCI archive of the same blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Fully qualified repository, e.g. `docker.io/library/busybox`.
    pub name: String,
    /// The OCI image layout directory; `oci:<layout>:<tag>` for skopeo.
    pub layout: PathBuf,
    /// Tags, each a `org.opencontainers.image.ref.name` in the layout's `index.json`.
    pub tags: Vec<String>,
    /// `sha256:<hex>` of the image manifest (the same for every tag).
    pub manifest_digest: String,
    /// OCI archive (tar of a layout whose ref names are fully qualified), for `oxlet images import`.
    pub archive: PathBuf,
}

impl BuiltImage {
    /// Fully qualified references, one per tag (`docker.io/library/busybox:latest`, ...).
    pub fn refs(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("{}:{t}", self.name))
            .collect()
    }

    /// The skopeo/umoci source name of one tag: `oci:<layout>:<tag>`.
    pub fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }
}

/// Everything [`build_all`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImages {
    /// The directory holding this build (one cache entry).
    pub dir: PathBuf,
    /// `registry.k8s.io/pause:3.10`.
    pub pause: BuiltImage,
    /// `docker.io/library/busybox`, tags `latest` and `1.35`.
    pub busybox: BuiltImage,
    /// `docker.io/oxlet/echoserver:latest`.
    pub echoserver: BuiltImage,
    /// The static pause binary, runnable on the host.
    pub pause_bin: PathBuf,
    /// The static echoserver binary, runnable on the host.
    pub echoserver_bin: PathBuf,
}

impl BuiltImages {
    /// All images, in a fixed order (pause, busybox, echoserver).
    pub fn all(&self) -> [&BuiltImage; 3] {
        [&self.pause, &self.busybox, &self.echoserver]
    }
}

/// The cache directory: `$OXLET_IMAGES_DIR`, else `<workspace>/target/oxlet-images`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(IMAGES_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
            .join("target")
            .join("oxlet-images"),
    }
}

/// Builds (or finds in the cache) all test images; see [`build_all_in`].
pub fn build_all() -> Result<BuiltImages> {
    build_all_in(&cache_dir())
}

/// Builds all test images under `dir`, reusing a complete earlier build with the same inputs.
///
/// Safe to call from many processes at once: builders take an exclusive `flock` on
/// `dir/.lock`, and a build becomes visible only by renaming its finished directory.
pub fn build_all_in(dir: &Path) -> Result<BuiltImages> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let busybox = fs::read(HOST_BUSYBOX).with_context(|| {
        format!("read {HOST_BUSYBOX} (install the Debian package busybox-static)")
    })?;
    let gcc = netns::run(Command::new("gcc").arg("-dumpfullversion"))
        .context("gcc is needed to build the test images")?;
    let key = cache_key(&[
        FORMAT_VERSION.as_bytes(),
        PAUSE_C.as_bytes(),
        ECHOSERVER_C.as_bytes(),
        &busybox,
        gcc.trim().as_bytes(),
        host_arch().as_bytes(),
    ]);
    let done = dir.join(&key);
    if let Some(built) = load(&done)? {
        return Ok(built);
    }

    let lock_path = dir.join(".lock");
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("flock {}", lock_path.display()))?;
    // Another process may have finished the build while we waited for the lock.
    if let Some(built) = load(&done)? {
        return Ok(built);
    }
    remove_stale_builds(dir)?;

    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(dir)
        .with_context(|| format!("create a build dir in {}", dir.display()))?;
    build_into(tmp.path(), &busybox)?;
    fs::rename(tmp.path(), &done)
        .with_context(|| format!("rename {} to {}", tmp.path().display(), done.display()))?;
    load(&done)?.with_context(|| format!("{} incomplete right after building", done.display()))
}

/// Any `.build-*` directory seen while holding the lock was left by a builder that died.
fn remove_stale_builds(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".build-") {
            let path = entry.path();
            fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn cache_key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())[..16].to_string()
}

/// What `digests.json` in a finished build records.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    digests: BTreeMap<String, String>,
}

const RECORD: &str = "digests.json";

struct Spec {
    short: &'static str,
    name: &'static str,
    tags: &'static [&'static str],
}

const PAUSE: Spec = Spec {
    short: "pause",
    name: "registry.k8s.io/pause",
    tags: &["3.10"],
};
const BUSYBOX: Spec = Spec {
    short: "busybox",
    name: "docker.io/library/busybox",
    tags: &["latest", "1.35"],
};
const ECHOSERVER: Spec = Spec {
    short: "echoserver",
    name: "docker.io/oxlet/echoserver",
    tags: &["latest"],
};

fn load(dir: &Path) -> Result<Option<BuiltImages>> {
    let record_path = dir.join(RECORD);
    let text = match fs::read_to_string(&record_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", record_path.display())),
    };
    let record: Record =
        serde_json::from_str(&text).with_context(|| format!("parse {}", record_path.display()))?;
    let image = |spec: &Spec| -> Result<BuiltImage> {
        let digest = record
            .digests
            .get(spec.short)
            .with_context(|| format!("{}: no digest for {}", record_path.display(), spec.short))?;
        Ok(BuiltImage {
            name: spec.name.to_string(),
            layout: dir.join("layouts").join(spec.short),
            tags: spec.tags.iter().map(|t| t.to_string()).collect(),
            manifest_digest: digest.clone(),
            archive: dir.join("archives").join(format!("{}.tar", spec.short)),
        })
    };
    Ok(Some(BuiltImages {
        dir: dir.to_path_buf(),
        pause: image(&PAUSE)?,
        busybox: image(&BUSYBOX)?,
        echoserver: image(&ECHOSERVER)?,
        pause_bin: dir.join("bin").join("pause"),
        echoserver_bin: dir.join("bin").join("echoserver"),
    }))
}

fn build_into(dir: &Path, busybox: &[u8]) -> Result<()> {
    let bin = dir.join("bin");
    let src = dir.join("src");
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(&src)?;
    let pause = compile(&src, &bin, "pause", PAUSE_C)?;
    let echoserver = compile(&src, &bin, "echoserver", ECHOSERVER_C)?;

    let busybox_layer = tar_layer(&busybox_rootfs(busybox)?)?;
    let pause_layer = tar_layer(&BTreeMap::from([(
        "pause".to_string(),
        Node::File {
            mode: 0o755,
            data: pause,
        },
    )]))?;
    let echo_layer = tar_layer(&BTreeMap::from([(
        "echoserver".to_string(),
        Node::File {
            mode: 0o755,
            data: echoserver,
        },
    )]))?;

    let mut digests = BTreeMap::new();
    let images = [
        (
            &PAUSE,
            vec![("pause binary", pause_layer)],
            json!({ "Env": [PATH_ENV], "Entrypoint": ["/pause"], "WorkingDir": "/" }),
        ),
        (
            &BUSYBOX,
            vec![("busybox-static and applet links", busybox_layer.clone())],
            json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }),
        ),
        (
            &ECHOSERVER,
            vec![
                ("busybox-static and applet links", busybox_layer),
                ("echoserver binary", echo_layer),
            ],
            json!({
                "Env": [PATH_ENV],
                "Entrypoint": ["/echoserver"],
                "ExposedPorts": { format!("{ECHOSERVER_PORT}/tcp"): {} },
            }),
        ),
    ];
    fs::create_dir_all(dir.join("layouts"))?;
    fs::create_dir_all(dir.join("archives"))?;
    for (spec, layers, config) in images {
        let image = assemble(spec, layers, config)?;
        image.write_layout(&dir.join("layouts").join(spec.short))?;
        image.write_archive(&dir.join("archives").join(format!("{}.tar", spec.short)))?;
        digests.insert(spec.short.to_string(), image.manifest_digest.clone());
    }
    // Written last: its presence marks a complete build.
    let record = serde_json::to_vec_pretty(&Record { digests })?;
    fs::write(dir.join(RECORD), record)?;
    Ok(())
}

/// Compiles one C program statically (`gcc -static -Os -s`) and returns the binary's bytes.
fn compile(src_dir: &Path, bin_dir: &Path, name: &str, source: &str) -> Result<Vec<u8>> {
    let src = src_dir.join(format!("{name}.c"));
    fs::write(&src, source).with_context(|| format!("write {}", src.display()))?;
    let out = bin_dir.join(name);
    netns::run(
        Command::new("gcc")
            .args(["-static", "-Os", "-s", "-Wall", "-o"])
            .arg(&out)
            .arg(&src),
    )
    .with_context(|| format!("compile images/{name}.c"))?;
    fs::read(&out).with_context(|| format!("read {}", out.display()))
}

/// One entry of a layer's file tree.
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// The busybox image's root filesystem: the binary, one symlink per applet, and the few files
/// a shell and `nobody` need.
fn busybox_rootfs(busybox: &[u8]) -> Result<BTreeMap<String, Node>> {
    let list = netns::run(Command::new(HOST_BUSYBOX).arg("--list"))
        .with_context(|| format!("{HOST_BUSYBOX} --list"))?;
    let mut tree = BTreeMap::new();
    let mut dir = |path: &str, mode: u32| {
        tree.insert(path.to_string(), Node::Dir { mode });
    };
    dir("bin", 0o755);
    dir("etc", 0o755);
    dir("root", 0o700);
    dir("tmp", 0o1777);
    dir("var", 0o755);
    dir("var/www", 0o755);
    dir("home", 0o755);
    tree.insert(
        "bin/busybox".to_string(),
        Node::File {
            mode: 0o755,
            data: busybox.to_vec(),
        },
    );
    for applet in list.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        tree.insert(
            format!("bin/{applet}"),
            Node::Symlink {
                target: "busybox".to_string(),
            },
        );
    }
    let file = |data: &str| Node::File {
        mode: 0o644,
        data: data.as_bytes().to_vec(),
    };
    tree.insert(
        "etc/passwd".to_string(),
        file("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
    );
    tree.insert(
        "etc/group".to_string(),
        file("root:x:0:\nnobody:x:65534:\n"),
    );
    Ok(tree)
}

/// An uncompressed, deterministic layer tar: sorted paths (parents first), mtime 0, root-owned.
fn tar_layer(tree: &BTreeMap<String, Node>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, node) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match node {
            Node::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Node::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())?;
            }
            Node::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// An image's blobs and the manifest that ties them together.
struct Image {
    spec: &'static Spec,
    blobs: BTreeMap<String, Vec<u8>>,
    manifest_digest: String,
    manifest_size: usize,
}

fn assemble(
    spec: &'static Spec,
    layers: Vec<(&str, Vec<u8>)>,
    config: serde_json::Value,
) -> Result<Image> {
    let mut blobs = BTreeMap::new();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (what, tar) in layers {
        diff_ids.push(sha256_digest(&tar));
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&tar)?;
        let gz = gz.finish()?;
        let digest = sha256_digest(&gz);
        layer_descs.push(json!({ "mediaType": MT_LAYER, "digest": digest, "size": gz.len() }));
        history.push(json!({ "created": CREATED, "created_by": format!("oxlet e2e: {what}") }));
        blobs.insert(digest, gz);
    }
    let config = serde_json::to_vec(&json!({
        "created": CREATED,
        "architecture": host_arch(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    }))?;
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": { "mediaType": MT_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layer_descs,
    }))?;
    let manifest_digest = sha256_digest(&manifest);
    let manifest_size = manifest.len();
    blobs.insert(config_digest, config);
    blobs.insert(manifest_digest.clone(), manifest);
    Ok(Image {
        spec,
        blobs,
        manifest_digest,
        manifest_size,
    })
}

impl Image {
    /// `index.json`; `qualified` writes full references (archives) instead of bare tags (layouts).
    fn index(&self, qualified: bool) -> Result<Vec<u8>> {
        let manifests: Vec<_> = self
            .spec
            .tags
            .iter()
            .map(|tag| {
                let mut annotations = serde_json::Map::new();
                if qualified {
                    let full = format!("{}:{tag}", self.spec.name);
                    annotations.insert(ANN_CONTAINERD_NAME.into(), full.clone().into());
                    annotations.insert(ANN_REF_NAME.into(), full.into());
                } else {
                    annotations.insert(ANN_REF_NAME.into(), tag.to_string().into());
                }
                json!({
                    "mediaType": MT_MANIFEST,
                    "digest": self.manifest_digest,
                    "size": self.manifest_size,
                    "annotations": annotations,
                    "platform": { "architecture": host_arch(), "os": "linux" },
                })
            })
            .collect();
        Ok(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": manifests,
        }))?)
    }

    fn files(&self, qualified: bool) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), self.index(qualified)?),
        ];
        for (digest, data) in &self.blobs {
            let hex = digest.trim_start_matches("sha256:");
            files.push((format!("blobs/sha256/{hex}"), data.clone()));
        }
        Ok(files)
    }

    fn write_layout(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir.join("blobs").join("sha256"))?;
        for (path, data) in self.files(false)? {
            let path = dir.join(path);
            fs::write(&path, data).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }

    fn write_archive(&self, path: &Path) -> Result<()> {
        let mut tree = BTreeMap::new();
        tree.insert("blobs".to_string(), Node::Dir { mode: 0o755 });
        tree.insert("blobs/sha256".to_string(), Node::Dir { mode: 0o755 });
        for (name, data) in self.files(true)? {
            tree.insert(name, Node::File { mode: 0o644, data });
        }
        let tar = tar_layer(&tree)?;
        fs::write(path, tar).with_context(|| format!("write {}", path.display()))
    }
}

/// The OCI architecture name of this host (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `oci:<layout>:<tag>` to `docker://<dest>` (e.g. `127.0.0.1:5000/library/busybox:latest`)
/// with skopeo over plain HTTP, inside `netns` when given (where the registry's loopback is).
pub fn push(
    layout: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    netns: Option<&Netns>,
) -> Result<()> {
    push_in(layout, tag, dest, creds, netns.map(Netns::name))
}

/// [`push`] with the namespace given by name (the registry keeps only the name).
pub(crate) fn push_in(
    layout: &Path,
    tag: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
    netns_name: Option<&str>,
) -> Result<()> {
    let private = Skopeo::new()?;
    let mut cmd = private.command(netns_name);
    cmd.args(["copy", "--retry-times", "2", "--dest-tls-verify=false"]);
    match creds {
        Some((user, pass)) => cmd.arg("--dest-creds").arg(format!("{user}:{pass}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    netns::run(&mut cmd)
        .with_context(|| format!("push oci:{}:{tag} to {dest}", layout.display()))?;
    Ok(())
}

/// A skopeo invocation isolated from the host's containers config: its own (permissive) policy,
/// empty registries.conf, auth file and temp dir, all in a private directory.
pub struct Skopeo {
    dir: tempfile::TempDir,
}

impl Skopeo {
    /// Creates the private directory and its config files.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oxlet-skopeo-")
            .tempdir()
            .context("create skopeo's private dir")?;
        fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        fs::write(dir.path().join("registries.conf"), "")?;
        fs::write(dir.path().join("containers.conf"), "")?;
        fs::write(dir.path().join("auth.json"), "{}")?;
        fs::create_dir_all(dir.path().join("registries.d"))?;
        fs::create_dir_all(dir.path().join("tmp"))?;
        Ok(Self { dir })
    }

    /// `skopeo` with the private config applied, run inside the named namespace if given.
    /// Callers add the subcommand and its arguments.
    pub fn command(&self, netns_name: Option<&str>) -> Command {
        let mut cmd = match netns_name {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "skopeo"]);
                c
            }
            None => Command::new("skopeo"),
        };
        let d = self.dir.path();
        cmd.env("TMPDIR", d.join("tmp"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("XDG_RUNTIME_DIR", d)
            .env("XDG_DATA_HOME", d)
            .env("XDG_CONFIG_HOME", d)
            .env("HOME", d)
            // Run as root, c/image keeps its blob-info cache in /var/lib/containers/cache, shared
            // by every test and outliving it. This variable (c/image internal/rootless) makes it
            // use the rootless location, $XDG_DATA_HOME/containers/cache: our private dir.
            .env("_CONTAINERS_ROOTLESS_UID", "1")
            .arg("--policy")
            .arg(d.join("policy.json"))
            .arg("--registries.d")
            .arg(d.join("registries.d"))
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        cmd
    }
}
