//! Image import into containerd through its own API, the way `ctr -n k8s.io images import` and
//! k3s's air-gap image loading do.
//!
//! Accepted archives (plain tar or gzip-compressed tar):
//! - an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), including `docker save`
//!   output of Docker 25+ and `skopeo copy … oci-archive:`;
//! - a classic `docker save` archive (`manifest.json`, `<id>.json` configs, `<id>/layer.tar`),
//!   for which a Docker schema 2 manifest is synthesised.
//!
//! For each image: every blob is written with the content service (blobs already present are
//! kept and only added to the import lease), GC labels are set as containerd sets them
//! (`containerd.io/gc.ref.content.*` on indexes and manifests, the snapshot reference on the
//! config), the image is unpacked for the snapshotter (containerd 1.6's CRI CreateContainer only
//! Prepares on top of the image's chain ID and does not unpack by itself), and finally the image
//! record is created or updated. Everything runs under a lease so containerd's GC cannot collect
//! half-imported content.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1 as cd;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::types::{Descriptor, Mount};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::Code;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// Media types this module reads and writes.
mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// Label keys containerd's garbage collector and CRI plugin read.
mod labels {
    pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
    pub const GC_CONTENT_CONFIG: &str = "containerd.io/gc.ref.content.config";
    pub const GC_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
    pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";
    /// Set by the CRI plugin on the images it pulls; k3s sets it on imported images too.
    pub const CRI_IMAGE: &str = "io.cri-containerd.image";
    pub const IMAGE_NAME: &str = "io.containerd.image.name";
    pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// Blobs up to this size are kept in memory after the first read of the archive; larger ones
/// are streamed from a second read.
const SMALL_BLOB: u64 = 4 * 1024 * 1024;
/// Size of one content Write message (containerd accepts up to 16 MiB).
const CHUNK: usize = 1024 * 1024;

/// How to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// containerd namespace; the CRI plugin uses `k8s.io`.
    pub namespace: String,
    /// Snapshotter to unpack for; the CRI plugin's default is `overlayfs`.
    pub snapshotter: String,
    /// Unpack layers into snapshots (needed before CRI can create containers from the image).
    pub unpack: bool,
    /// Repository used for OCI `ref.name` annotations that are only a tag (e.g. `latest`), as
    /// `ctr images import --base-name`. Without it such images are skipped with a warning.
    pub base_name: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            namespace: "k8s.io".into(),
            snapshotter: "overlayfs".into(),
            unpack: true,
            base_name: None,
        }
    }
}

/// One image created or updated by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// Normalised image name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the image's target (manifest or index), as in `name@digest`.
    pub digest: String,
    /// Media type of the target.
    pub media_type: String,
    /// Digest of the unpacked platform's config: the image ID the CRI reports.
    pub config_digest: Option<String>,
    /// Chain ID of the top layer: the snapshot containers are prepared on. `None` if not unpacked.
    pub chain_id: Option<String>,
}

/// Imports `archive` into containerd at `containerd_socket`, in `namespace` (normally `k8s.io`),
/// unpacking for `overlayfs`. Returns the images created or updated.
pub async fn import_archive(
    containerd_socket: &Path,
    namespace: &str,
    archive: &Path,
) -> Result<Vec<ImportedImage>> {
    let opts = ImportOptions {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    import_archive_with(containerd_socket, archive, &opts).await
}

/// [`import_archive`] with all options.
pub async fn import_archive_with(
    containerd_socket: &Path,
    archive: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImportedImage>> {
    let path = archive.to_path_buf();
    let scanned = tokio::task::spawn_blocking(move || scan(&path))
        .await
        .map_err(|e| import_err(archive, format!("archive reader panicked: {e}")))??;
    let mut plan = make_plan(&scanned, archive, opts)?;
    if plan.images.is_empty() {
        return Err(import_err(archive, "no named image in archive"));
    }
    let channel = crate::remote::unix_channel(containerd_socket, Duration::from_secs(10)).await?;
    let mut client = Containerd::new(channel, &opts.namespace, archive)?;
    client.create_lease().await?;
    let result = client.import(&scanned, &mut plan, opts).await;
    // The lease only protects the import; the image records and GC labels hold the content now.
    if let Err(err) = client.delete_lease().await {
        warn!(error = %err, "cannot delete import lease; it expires in 24h");
    }
    result
}

fn import_err(archive: &Path, reason: impl Into<String>) -> Error {
    Error::Import {
        archive: archive.to_path_buf(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parts: names, chain IDs, archive planning.

/// Normalises an image reference as Docker and containerd do: `busybox` →
/// `docker.io/library/busybox:latest`, `foo/bar:1` → `docker.io/foo/bar:1`,
/// `registry.local:5000/x` → `registry.local:5000/x:latest`. Digest references keep their
/// digest and get no tag. Returns `None` for references that cannot be valid.
pub fn normalize_image_name(reference: &str) -> Option<String> {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (name, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    if name.is_empty() || tag == Some("") || digest == Some("") {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    // Repository names are lowercase; a tag or domain may have capitals.
    if path.is_empty()
        || path
            .chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
    {
        return None;
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

/// Chain IDs of a layer stack from its diff IDs (OCI image spec, "Layer ChainID"):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{:x}",
                Sha256::digest(format!("{parent} {diff_id}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

/// A regular file of the archive.
#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    digest: String,
    gzip: bool,
    /// The content, for small files.
    data: Option<Vec<u8>>,
}

/// What the first read of an archive found.
#[derive(Debug, Default)]
struct Scanned {
    entries: HashMap<String, Entry>,
    /// Symlinks and hard links: path → target path (both cleaned).
    links: HashMap<String, String>,
}

impl Scanned {
    /// The real path behind `path`, following links.
    fn resolve(&self, path: &str) -> String {
        let mut p = clean_path(path);
        for _ in 0..16 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    fn get(&self, path: &str) -> Option<(String, &Entry)> {
        let real = self.resolve(path);
        self.entries.get(&real).map(|e| (real, e))
    }
}

/// `./a/../b//c` → `b/c`.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<OciPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
struct OciPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    config: OciDescriptor,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: DescriptorOut,
    layers: Vec<DescriptorOut>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorOut {
    media_type: String,
    size: i64,
    digest: String,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A file of the archive (cleaned real path).
    Archive(String),
    /// Bytes made by the importer (a synthesised manifest).
    Memory(Vec<u8>),
}

#[derive(Debug, Clone)]
struct PlannedBlob {
    desc: Descriptor,
    source: Source,
    labels: HashMap<String, String>,
}

/// What to unpack for one image: its platform manifest's config and layers.
#[derive(Debug, Clone, PartialEq)]
struct Unpack {
    config_digest: String,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone)]
struct PlannedImage {
    name: String,
    target: Descriptor,
    unpack: Option<Unpack>,
}

#[derive(Debug, Default)]
struct Plan {
    /// Children before parents, as containerd writes them.
    blobs: Vec<PlannedBlob>,
    images: Vec<PlannedImage>,
}

impl Plan {
    fn add_blob(&mut self, desc: Descriptor, source: Source, labels: HashMap<String, String>) {
        if let Some(b) = self.blobs.iter_mut().find(|b| b.desc.digest == desc.digest) {
            b.labels.extend(labels);
        } else {
            self.blobs.push(PlannedBlob {
                desc,
                source,
                labels,
            });
        }
    }

    fn label(&mut self, digest: &str, key: String, value: String) {
        if let Some(b) = self.blobs.iter_mut().find(|b| b.desc.digest == digest) {
            b.labels.insert(key, value);
        }
    }
}

fn descriptor(d: &OciDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

/// The host platform in OCI terms.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn make_plan(scanned: &Scanned, archive: &Path, opts: &ImportOptions) -> Result<Plan> {
    if scanned.get("index.json").is_some() {
        plan_oci(scanned, archive, opts)
    } else if scanned.get("manifest.json").is_some() {
        plan_docker(scanned, archive)
    } else {
        Err(import_err(
            archive,
            "neither an OCI layout (index.json) nor a docker save archive (manifest.json)",
        ))
    }
}

fn small<'a>(scanned: &'a Scanned, archive: &Path, path: &str) -> Result<&'a [u8]> {
    match scanned.get(path) {
        Some((_, Entry { data: Some(d), .. })) => Ok(d),
        Some(_) => Err(import_err(
            archive,
            format!("{path} is too large for a JSON document"),
        )),
        None => Err(import_err(archive, format!("{path} is missing"))),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn plan_oci(scanned: &Scanned, archive: &Path, opts: &ImportOptions) -> Result<Plan> {
    let index: OciIndex = parse(small(scanned, archive, "index.json")?, "index.json")?;
    let mut plan = Plan::default();
    for desc in &index.manifests {
        let name = desc
            .annotations
            .get(labels::IMAGE_NAME)
            .cloned()
            .or_else(|| {
                let r = desc.annotations.get(labels::OCI_REF_NAME)?;
                // As containerd's archive.refTranslator: a ref.name with '/', ':' or '@' is a
                // full reference; otherwise it is only a tag.
                if r.contains(['/', ':', '@']) {
                    Some(r.clone())
                } else {
                    opts.base_name.as_ref().map(|b| format!("{b}:{r}"))
                }
            });
        let Some(raw) = name else {
            warn!(digest = %desc.digest, "skipping image without a usable name in index.json");
            continue;
        };
        let name = normalize_image_name(&raw)
            .ok_or_else(|| import_err(archive, format!("invalid image name {raw:?}")))?;
        let unpack = walk(scanned, archive, desc, &mut plan)?;
        plan.images.push(PlannedImage {
            name,
            target: descriptor(desc),
            unpack,
        });
    }
    Ok(plan)
}

/// Adds the blobs under `desc` to the plan (children first) and returns what to unpack for
/// the host platform.
fn walk(
    scanned: &Scanned,
    archive: &Path,
    desc: &OciDescriptor,
    plan: &mut Plan,
) -> Result<Option<Unpack>> {
    let path = blob_path(&desc.digest);
    let data = small(scanned, archive, &path)?;
    let value: serde_json::Value = parse(data, &path)?;
    let is_index = match desc.media_type.as_str() {
        media::OCI_INDEX | media::DOCKER_LIST => true,
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => false,
        _ => value.get("manifests").is_some(),
    };
    let (real, _) = scanned
        .get(&path)
        .ok_or_else(|| import_err(archive, format!("{path} is missing")))?;
    if is_index {
        let index: OciIndex = parse(data, &path)?;
        let mut gc = HashMap::new();
        let mut chosen = None;
        for (i, child) in index.manifests.iter().enumerate() {
            gc.insert(
                format!("containerd.io/gc.ref.content.m.{i}"),
                child.digest.clone(),
            );
            // Archives often carry only some platforms; skip the others as ctr does.
            if scanned.get(&blob_path(&child.digest)).is_none() {
                continue;
            }
            let host = child
                .platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == host_arch());
            let unpack = walk(scanned, archive, child, plan)?;
            if host && chosen.is_none() {
                chosen = unpack;
            }
        }
        plan.add_blob(descriptor(desc), Source::Archive(real), gc);
        Ok(chosen)
    } else {
        let manifest: OciManifest = parse(data, &path)?;
        let config_path = blob_path(&manifest.config.digest);
        let config: ImageConfig = parse(small(scanned, archive, &config_path)?, &config_path)?;
        let mut gc = HashMap::from([(
            labels::GC_CONTENT_CONFIG.to_string(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            let (layer_real, _) = scanned
                .get(&blob_path(&layer.digest))
                .ok_or_else(|| import_err(archive, format!("layer {} is missing", layer.digest)))?;
            let mut l = HashMap::new();
            if let Some(diff_id) = config.rootfs.diff_ids.get(i) {
                if *diff_id != layer.digest {
                    l.insert(labels::UNCOMPRESSED.to_string(), diff_id.clone());
                }
            }
            plan.add_blob(descriptor(layer), Source::Archive(layer_real), l);
            gc.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        let (config_real, _) = scanned
            .get(&config_path)
            .ok_or_else(|| import_err(archive, format!("{config_path} is missing")))?;
        plan.add_blob(
            descriptor(&manifest.config),
            Source::Archive(config_real),
            HashMap::new(),
        );
        plan.add_blob(descriptor(desc), Source::Archive(real), gc);
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(import_err(
                archive,
                format!(
                    "manifest {} has {} layers but its config {} diff IDs",
                    desc.digest,
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        Ok(Some(Unpack {
            config_digest: manifest.config.digest.clone(),
            layers: manifest.layers.iter().map(descriptor).collect(),
            diff_ids: config.rootfs.diff_ids,
        }))
    }
}

/// A classic `docker save` archive: synthesise a Docker schema 2 manifest per image.
fn plan_docker(scanned: &Scanned, archive: &Path) -> Result<Plan> {
    let entries: Vec<DockerSaveEntry> =
        parse(small(scanned, archive, "manifest.json")?, "manifest.json")?;
    let mut plan = Plan::default();
    for entry in entries {
        let tags = entry.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            warn!(config = %entry.config, "skipping untagged image in docker archive");
            continue;
        }
        let (config_real, config_entry) = scanned
            .get(&entry.config)
            .ok_or_else(|| import_err(archive, format!("{} is missing", entry.config)))?;
        let config: ImageConfig = parse(small(scanned, archive, &entry.config)?, &entry.config)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(import_err(
                archive,
                format!("{}: layer count does not match its diff IDs", entry.config),
            ));
        }
        let config_desc = Descriptor {
            media_type: media::DOCKER_CONFIG.into(),
            digest: config_entry.digest.clone(),
            size: config_entry.size as i64,
            annotations: HashMap::new(),
        };
        let mut layers = Vec::new();
        for (i, layer_path) in entry.layers.iter().enumerate() {
            let (real, e) = scanned
                .get(layer_path)
                .ok_or_else(|| import_err(archive, format!("{layer_path} is missing")))?;
            let desc = Descriptor {
                media_type: if e.gzip {
                    media::DOCKER_LAYER_GZIP
                } else {
                    media::DOCKER_LAYER
                }
                .into(),
                digest: e.digest.clone(),
                size: e.size as i64,
                annotations: HashMap::new(),
            };
            let mut l = HashMap::new();
            if e.digest != config.rootfs.diff_ids[i] {
                l.insert(
                    labels::UNCOMPRESSED.to_string(),
                    config.rootfs.diff_ids[i].clone(),
                );
            }
            plan.add_blob(desc.clone(), Source::Archive(real), l);
            layers.push(desc);
        }
        plan.add_blob(
            config_desc.clone(),
            Source::Archive(config_real),
            HashMap::new(),
        );
        let out = |d: &Descriptor| DescriptorOut {
            media_type: d.media_type.clone(),
            size: d.size,
            digest: d.digest.clone(),
        };
        let manifest = serde_json::to_vec(&DockerManifestOut {
            schema_version: 2,
            media_type: media::DOCKER_MANIFEST,
            config: out(&config_desc),
            layers: layers.iter().map(out).collect(),
        })
        .map_err(|source| Error::Json {
            what: "synthesised manifest".into(),
            source,
        })?;
        let target = Descriptor {
            media_type: media::DOCKER_MANIFEST.into(),
            digest: format!("sha256:{:x}", Sha256::digest(&manifest)),
            size: manifest.len() as i64,
            annotations: HashMap::new(),
        };
        let mut gc = HashMap::from([(
            labels::GC_CONTENT_CONFIG.to_string(),
            config_desc.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            gc.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        plan.add_blob(target.clone(), Source::Memory(manifest), gc);
        let unpack = Unpack {
            config_digest: config_desc.digest.clone(),
            layers,
            diff_ids: config.rootfs.diff_ids,
        };
        for tag in tags {
            let name = normalize_image_name(&tag)
                .ok_or_else(|| import_err(archive, format!("invalid image name {tag:?}")))?;
            plan.images.push(PlannedImage {
                name,
                target: target.clone(),
                unpack: Some(unpack.clone()),
            });
        }
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// Reading the archive.

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the archive as a tar stream, decompressing gzip when the file starts with its magic.
fn open_tar(path: &Path) -> Result<(tar::Archive<Box<dyn Read + Send>>, bool)> {
    let mut file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io_err("read", path))?;
    let file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let reader = std::io::BufReader::with_capacity(CHUNK, file);
    let gzip = n == 2 && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    Ok((tar::Archive::new(reader), gzip))
}

/// First read: digests and sizes of all files, contents of the small ones, links.
fn scan(path: &Path) -> Result<Scanned> {
    let (mut ar, gzip) = open_tar(path)?;
    let mut out = Scanned::default();
    for entry in ar.entries().map_err(io_err("read", path))? {
        let mut entry = entry.map_err(io_err("read", path))?;
        let name = clean_path(
            &entry
                .path()
                .map_err(io_err("read", path))?
                .to_string_lossy(),
        );
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let mut data = (size <= SMALL_BLOB).then(|| Vec::with_capacity(size as usize));
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut head: Vec<u8> = Vec::with_capacity(2);
                loop {
                    let n = entry.read(&mut buf).map_err(io_err("read", path))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    if head.len() < 2 {
                        let take = (2 - head.len()).min(n);
                        head.extend_from_slice(&buf[..take]);
                    }
                    if let Some(d) = data.as_mut() {
                        d.extend_from_slice(&buf[..n]);
                    }
                }
                out.entries.insert(
                    name,
                    Entry {
                        size,
                        digest: format!("sha256:{:x}", hasher.finalize()),
                        gzip: head == [0x1f, 0x8b],
                        data,
                    },
                );
            }
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name().map_err(io_err("read", path))? {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let target = target.to_string_lossy();
                    let resolved = if target.starts_with('/') {
                        clean_path(&target)
                    } else {
                        clean_path(&format!("{dir}/{target}"))
                    };
                    out.links.insert(name, resolved);
                }
            }
            tar::EntryType::Link => {
                if let Some(target) = entry.link_name().map_err(io_err("read", path))? {
                    out.links
                        .insert(name, clean_path(&target.to_string_lossy()));
                }
            }
            _ => {}
        }
    }
    debug!(archive = %path.display(), files = out.entries.len(), gzip, "scanned image archive");
    Ok(out)
}

type ChunkRx = mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// Second read: streams the files named in `wanted` (real path → descriptor) in archive order.
fn stream_files(
    path: PathBuf,
    mut wanted: HashMap<String, Descriptor>,
    tx: mpsc::Sender<(Descriptor, ChunkRx)>,
) -> Result<()> {
    let (mut ar, _) = open_tar(&path)?;
    for entry in ar.entries().map_err(io_err("read", &path))? {
        if wanted.is_empty() {
            break;
        }
        let mut entry = entry.map_err(io_err("read", &path))?;
        let name = clean_path(
            &entry
                .path()
                .map_err(io_err("read", &path))?
                .to_string_lossy(),
        );
        let Some(desc) = wanted.remove(&name) else {
            continue;
        };
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        if tx.blocking_send((desc, chunk_rx)).is_err() {
            return Ok(()); // The writer stopped; it reports why.
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match entry.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let kind = e.kind();
                        let _ = chunk_tx.blocking_send(Err(e));
                        return Err(io_err("read", &path)(std::io::Error::from(kind)));
                    }
                }
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            if chunk_tx.blocking_send(Ok(buf)).is_err() {
                return Ok(());
            }
        }
    }
    if let Some(name) = wanted.keys().next() {
        return Err(import_err(
            &path,
            format!("{name} vanished between two reads"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Talking to containerd.

struct Containerd {
    archive: PathBuf,
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
    lease_id: String,
    content: cd::content_client::ContentClient<Channel>,
    images: cd::images_client::ImagesClient<Channel>,
    leases: cd::leases_client::LeasesClient<Channel>,
    diff: cd::diff_client::DiffClient<Channel>,
    snapshots: snap::snapshots_client::SnapshotsClient<Channel>,
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// RFC 3339 UTC time of `secs` since the epoch (civil-from-days, H. Hinnant).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Containerd {
    fn new(channel: Channel, namespace: &str, archive: &Path) -> Result<Self> {
        let namespace = namespace
            .parse()
            .map_err(|_| import_err(archive, format!("invalid namespace {namespace:?}")))?;
        Ok(Self {
            archive: archive.to_path_buf(),
            namespace,
            lease: None,
            lease_id: String::new(),
            content: cd::content_client::ContentClient::new(channel.clone())
                .max_decoding_message_size(crate::remote::MAX_MESSAGE_SIZE),
            images: cd::images_client::ImagesClient::new(channel.clone()),
            leases: cd::leases_client::LeasesClient::new(channel.clone()),
            diff: cd::diff_client::DiffClient::new(channel.clone()),
            snapshots: snap::snapshots_client::SnapshotsClient::new(channel),
        })
    }

    /// A request in our namespace and, once created, under our lease.
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let md = req.metadata_mut();
        md.insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = &self.lease {
            md.insert("containerd-lease", lease.clone());
        }
        req
    }

    async fn create_lease(&mut self) -> Result<()> {
        let id = format!("oxlet-import-{}", unix_nanos());
        let expire = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 24 * 3600;
        // As containerd's client: a lease that outlives a crashed importer expires in 24h.
        let msg = cd::CreateRequest {
            id: id.clone(),
            labels: HashMap::from([(labels::GC_EXPIRE.to_string(), rfc3339(expire))]),
        };
        let req = self.req(msg);
        self.leases
            .create(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "leases.Create",
                object: id.clone(),
                source,
            })?;
        self.lease = Some(
            id.parse()
                .map_err(|_| import_err(&self.archive, "invalid lease id"))?,
        );
        self.lease_id = id;
        Ok(())
    }

    async fn delete_lease(&mut self) -> Result<()> {
        if self.lease.take().is_none() {
            return Ok(());
        }
        let req = self.req(cd::DeleteRequest {
            id: self.lease_id.clone(),
            sync: false,
        });
        self.leases
            .delete(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "leases.Delete",
                object: self.lease_id.clone(),
                source,
            })?;
        Ok(())
    }

    async fn import(
        &mut self,
        scanned: &Scanned,
        plan: &mut Plan,
        opts: &ImportOptions,
    ) -> Result<Vec<ImportedImage>> {
        // 1. Content.
        let mut from_archive = HashMap::new();
        let (mut written, mut present) = (0usize, 0usize);
        for blob in &plan.blobs {
            if self.has_blob(&blob.desc.digest).await? {
                present += 1;
                continue;
            }
            written += 1;
            match &blob.source {
                Source::Memory(data) => {
                    self.write_blob(&blob.desc, memory_chunks(data.clone()))
                        .await?
                }
                Source::Archive(path) => match scanned.entries.get(path) {
                    Some(Entry { data: Some(d), .. }) => {
                        self.write_blob(&blob.desc, memory_chunks(d.clone()))
                            .await?
                    }
                    _ => {
                        from_archive.insert(path.clone(), blob.desc.clone());
                    }
                },
            }
        }
        if !from_archive.is_empty() {
            self.write_from_archive(from_archive).await?;
        }
        debug!(written, present, "image content stored");

        // 2. Unpack, then label the config with the top snapshot as containerd's unpacker does.
        let mut chain_of_config = HashMap::new();
        if opts.unpack {
            for image in &plan.images {
                let Some(unpack) = &image.unpack else {
                    warn!(image = %image.name, "no manifest for this platform; not unpacked");
                    continue;
                };
                if chain_of_config.contains_key(&unpack.config_digest) {
                    continue;
                }
                let top = self.unpack(unpack, &opts.snapshotter).await?;
                chain_of_config.insert(unpack.config_digest.clone(), top);
            }
            for (config, top) in &chain_of_config {
                plan.label(
                    config,
                    format!("{}{}", labels::GC_SNAPSHOT_PREFIX, opts.snapshotter),
                    top.clone(),
                );
            }
        }

        // 3. GC labels, so the image record keeps everything alive once the lease is gone.
        for blob in &plan.blobs {
            if !blob.labels.is_empty() {
                self.set_labels(&blob.desc.digest, &blob.labels).await?;
            }
        }

        // 4. Image records.
        let mut out = Vec::new();
        for image in &plan.images {
            self.put_image(image).await?;
            let config_digest = image.unpack.as_ref().map(|u| u.config_digest.clone());
            let chain_id = config_digest
                .as_ref()
                .and_then(|c| chain_of_config.get(c).cloned());
            info!(image = %image.name, digest = %image.target.digest, "image imported");
            out.push(ImportedImage {
                name: image.name.clone(),
                digest: image.target.digest.clone(),
                media_type: image.target.media_type.clone(),
                config_digest,
                chain_id,
            });
        }
        Ok(out)
    }

    /// Whether containerd has the blob; if so it is added to our lease, so GC spares it until
    /// the image record references it.
    async fn has_blob(&mut self, digest: &str) -> Result<bool> {
        let req = self.req(cd::InfoRequest {
            digest: digest.to_string(),
        });
        match self.content.info(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => return Ok(false),
            Err(source) => {
                return Err(Error::Containerd {
                    op: "content.Info",
                    object: digest.to_string(),
                    source,
                })
            }
        }
        let req = self.req(cd::AddResourceRequest {
            id: self.lease_id.clone(),
            resource: Some(cd::Resource {
                id: digest.to_string(),
                r#type: "content".into(),
            }),
        });
        self.leases
            .add_resource(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "leases.AddResource",
                object: digest.to_string(),
                source,
            })?;
        Ok(true)
    }

    /// Writes one blob: WRITE messages then COMMIT with the expected digest and size; the
    /// content service answers each message. An AlreadyExists answer means a concurrent writer
    /// won, which is success.
    async fn write_blob(
        &self,
        desc: &Descriptor,
        chunks: impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
    ) -> Result<()> {
        let r#ref = format!("oxlet-import-{}", desc.digest);
        let (tx, rx) = mpsc::channel::<cd::WriteContentRequest>(4);
        let base = cd::WriteContentRequest {
            r#ref: r#ref.clone(),
            total: desc.size,
            expected: desc.digest.clone(),
            ..Default::default()
        };
        let feed = async move {
            let mut chunks = std::pin::pin!(chunks);
            let mut offset = 0i64;
            while let Some(chunk) = chunks.next().await {
                let data = chunk?;
                let len = data.len() as i64;
                let msg = cd::WriteContentRequest {
                    action: cd::WriteAction::Write as i32,
                    offset,
                    data,
                    ..base.clone()
                };
                tx.send(msg)
                    .await
                    .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
                offset += len;
            }
            let commit = cd::WriteContentRequest {
                action: cd::WriteAction::Commit as i32,
                offset,
                ..base
            };
            tx.send(commit)
                .await
                .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
            Ok::<_, std::io::Error>(())
        };
        let mut content = self.content.clone();
        let req = self.req(ReceiverStream::new(rx));
        let read = async move {
            let mut responses = content.write(req).await?.into_inner();
            while responses.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        };
        let (fed, read) = tokio::join!(feed, read);
        match read {
            Ok(()) => {}
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(source) => {
                return Err(Error::Containerd {
                    op: "content.Write",
                    object: desc.digest.clone(),
                    source,
                })
            }
        }
        fed.map_err(io_err("read", &self.archive))?;
        debug!(digest = %desc.digest, size = desc.size, "blob written");
        Ok(())
    }

    async fn write_from_archive(&self, wanted: HashMap<String, Descriptor>) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(1);
        let path = self.archive.clone();
        let reader = tokio::task::spawn_blocking(move || stream_files(path, wanted, tx));
        while let Some((desc, chunks)) = rx.recv().await {
            self.write_blob(&desc, ReceiverStream::new(chunks)).await?;
        }
        reader
            .await
            .map_err(|e| import_err(&self.archive, format!("archive reader panicked: {e}")))?
    }

    async fn set_labels(&mut self, digest: &str, set: &HashMap<String, String>) -> Result<()> {
        let paths = set.keys().map(|k| format!("labels.{k}")).collect();
        let req = self.req(cd::UpdateRequest {
            info: Some(cd::Info {
                digest: digest.to_string(),
                labels: set.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        });
        self.content
            .update(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "content.Update",
                object: digest.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Applies each layer onto a snapshot named by its chain ID, skipping existing ones.
    /// Returns the top chain ID.
    async fn unpack(&mut self, unpack: &Unpack, snapshotter: &str) -> Result<String> {
        let chain = chain_ids(&unpack.diff_ids);
        let mut parent = String::new();
        for ((layer, chain_id), diff_id) in unpack.layers.iter().zip(&chain).zip(&unpack.diff_ids) {
            let req = self.req(snap::StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: chain_id.clone(),
            });
            match self.snapshots.stat(req).await {
                Ok(_) => {
                    parent = chain_id.clone();
                    continue;
                }
                Err(s) if s.code() == Code::NotFound => {}
                Err(source) => {
                    return Err(Error::Containerd {
                        op: "snapshots.Stat",
                        object: chain_id.clone(),
                        source,
                    })
                }
            }
            // containerd's unpacker names the active snapshot "extract-<unique> <chainID>".
            let key = format!("extract-{} {chain_id}", unix_nanos());
            let req = self.req(snap::PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
                parent: parent.clone(),
                labels: HashMap::new(),
            });
            let mounts: Vec<Mount> = self
                .snapshots
                .prepare(req)
                .await
                .map_err(|source| Error::Containerd {
                    op: "snapshots.Prepare",
                    object: key.clone(),
                    source,
                })?
                .into_inner()
                .mounts;
            let applied = self.apply(layer, mounts, diff_id).await;
            if let Err(err) = applied {
                self.remove_snapshot(snapshotter, &key).await;
                return Err(err);
            }
            let req = self.req(snap::CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain_id.clone(),
                key: key.clone(),
                labels: HashMap::new(),
            });
            match self.snapshots.commit(req).await {
                Ok(_) => {}
                // Another unpack of the same layer won the race: its snapshot is as good.
                Err(s) if s.code() == Code::AlreadyExists => {
                    self.remove_snapshot(snapshotter, &key).await;
                }
                Err(source) => {
                    self.remove_snapshot(snapshotter, &key).await;
                    return Err(Error::Containerd {
                        op: "snapshots.Commit",
                        object: chain_id.clone(),
                        source,
                    });
                }
            }
            debug!(layer = %layer.digest, chain_id = %chain_id, "layer unpacked");
            parent = chain_id.clone();
        }
        Ok(parent)
    }

    async fn apply(&mut self, layer: &Descriptor, mounts: Vec<Mount>, diff_id: &str) -> Result<()> {
        let req = self.req(cd::ApplyRequest {
            diff: Some(layer.clone()),
            mounts,
            ..Default::default()
        });
        let applied = self
            .diff
            .apply(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "diff.Apply",
                object: layer.digest.clone(),
                source,
            })?
            .into_inner()
            .applied;
        let got = applied.map(|d| d.digest).unwrap_or_default();
        if got != diff_id {
            return Err(import_err(
                &self.archive,
                format!(
                    "layer {} unpacked to {got}, but the config says {diff_id}",
                    layer.digest
                ),
            ));
        }
        Ok(())
    }

    async fn remove_snapshot(&mut self, snapshotter: &str, key: &str) {
        let req = self.req(snap::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        });
        if let Err(s) = self.snapshots.remove(req).await {
            warn!(key, error = %s.message(), "cannot remove unpack snapshot; GC will");
        }
    }

    async fn put_image(&mut self, image: &PlannedImage) -> Result<()> {
        let record = cd::Image {
            name: image.name.clone(),
            labels: HashMap::from([(labels::CRI_IMAGE.to_string(), "managed".to_string())]),
            target: Some(image.target.clone()),
            ..Default::default()
        };
        let req = self.req(cd::CreateImageRequest {
            image: Some(record.clone()),
            source_date_epoch: None,
        });
        match self.images.create(req).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Containerd {
                    op: "images.Create",
                    object: image.name.clone(),
                    source,
                })
            }
        }
        // Re-import of a tag: point it at the new target, keep the record's other labels.
        let req = self.req(cd::UpdateImageRequest {
            image: Some(record),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["target".into(), format!("labels.{}", labels::CRI_IMAGE)],
            }),
            source_date_epoch: None,
        });
        self.images
            .update(req)
            .await
            .map_err(|source| Error::Containerd {
                op: "images.Update",
                object: image.name.clone(),
                source,
            })?;
        Ok(())
    }
}

fn memory_chunks(data: Vec<u8>) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let chunks: Vec<std::io::Result<Vec<u8>>> =
        data.chunks(CHUNK).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names_like_docker() {
        let cases = [
            ("busybox", Some("docker.io/library/busybox:latest")),
            ("busybox:latest", Some("docker.io/library/busybox:latest")),
            (
                "library/busybox:1.36",
                Some("docker.io/library/busybox:1.36"),
            ),
            ("foo/bar", Some("docker.io/foo/bar:latest")),
            ("index.docker.io/foo/bar:2", Some("docker.io/foo/bar:2")),
            (
                "registry.k8s.io/pause:3.9",
                Some("registry.k8s.io/pause:3.9"),
            ),
            ("localhost/x", Some("localhost/x:latest")),
            ("127.0.0.1:5000/echo", Some("127.0.0.1:5000/echo:latest")),
            ("127.0.0.1:5000/echo:v1", Some("127.0.0.1:5000/echo:v1")),
            (
                "busybox@sha256:abcd",
                Some("docker.io/library/busybox@sha256:abcd"),
            ),
            (
                "busybox:1@sha256:abcd",
                Some("docker.io/library/busybox:1@sha256:abcd"),
            ),
            ("BusyBox", None),
            ("busybox:", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_image_name(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let diff_ids = vec![d('a'), d('b'), d('c')];
        let chain = chain_ids(&diff_ids);
        assert_eq!(chain[0], diff_ids[0]);
        let c1 = format!(
            "sha256:{:x}",
            Sha256::digest(format!("{} {}", diff_ids[0], diff_ids[1]).as_bytes())
        );
        assert_eq!(chain[1], c1);
        let c2 = format!(
            "sha256:{:x}",
            Sha256::digest(format!("{c1} {}", diff_ids[2]).as_bytes())
        );
        assert_eq!(chain[2], c2);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_path("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(clean_path("/index.json"), "index.json");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    /// Builds a tar in memory from (path, content) pairs, optionally with symlinks.
    fn tar_of(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("in-memory tar");
        }
        for (path, target) in symlinks {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).expect("in-memory tar");
        }
        b.into_inner().expect("in-memory tar")
    }

    fn digest(data: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(data))
    }

    fn scan_bytes(bytes: Vec<u8>) -> anyhow::Result<Scanned> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.tar");
        std::fs::write(&path, bytes)?;
        Ok(scan(&path)?)
    }

    #[test]
    fn plans_an_oci_layout() -> anyhow::Result<()> {
        let layer = b"layer-bytes-not-really-a-tar".as_slice();
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            media::OCI_MANIFEST,
            digest(config),
            config.len(),
            digest(layer),
            layer.len()
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
            media::OCI_MANIFEST,
            digest(manifest.as_bytes()),
            manifest.len()
        );
        let bp = |d: &[u8]| blob_path(&digest(d));
        let bytes = tar_of(
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                ("index.json", index.as_bytes()),
                (&bp(manifest.as_bytes()), manifest.as_bytes()),
                (&bp(config), config),
                (&bp(layer), layer),
            ],
            &[],
        );
        let scanned = scan_bytes(bytes)?;
        let archive = Path::new("a.tar");

        // A tag-only ref.name needs a base name, as with `ctr images import --base-name`.
        let plan = make_plan(&scanned, archive, &ImportOptions::default())?;
        assert!(plan.images.is_empty());
        let opts = ImportOptions {
            base_name: Some("busybox".into()),
            ..Default::default()
        };
        let plan = make_plan(&scanned, archive, &opts)?;
        assert_eq!(plan.images.len(), 1);
        let image = &plan.images[0];
        assert_eq!(image.name, "docker.io/library/busybox:latest");
        assert_eq!(image.target.digest, digest(manifest.as_bytes()));
        let unpack = image
            .unpack
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no unpack"))?;
        assert_eq!(unpack.config_digest, digest(config));
        assert_eq!(unpack.layers[0].digest, digest(layer));

        // Children first; the manifest carries containerd's GC labels.
        let order: Vec<_> = plan.blobs.iter().map(|b| b.desc.digest.clone()).collect();
        assert_eq!(
            order,
            vec![digest(layer), digest(config), digest(manifest.as_bytes())]
        );
        let labels = &plan.blobs[2].labels;
        assert_eq!(labels.get(labels::GC_CONTENT_CONFIG), Some(&digest(config)));
        assert_eq!(
            labels.get("containerd.io/gc.ref.content.l.0"),
            Some(&digest(layer))
        );
        assert_eq!(
            plan.blobs[0]
                .labels
                .get(labels::UNCOMPRESSED)
                .map(String::as_str),
            Some("sha256:1111111111111111111111111111111111111111111111111111111111111111")
        );
        Ok(())
    }

    #[test]
    fn plans_a_docker_save_archive_with_symlinked_layers() -> anyhow::Result<()> {
        let layer = b"plain tar layer".as_slice();
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            digest(layer),
            digest(layer)
        );
        let manifest = r#"[{"Config":"cfg.json","RepoTags":["busybox:latest","127.0.0.1:5000/bb:1"],"Layers":["a/layer.tar","b/layer.tar"]}]"#;
        let bytes = tar_of(
            &[
                ("manifest.json", manifest.as_bytes()),
                ("cfg.json", config.as_bytes()),
                ("a/layer.tar", layer),
            ],
            &[("b/layer.tar", "../a/layer.tar")],
        );
        let scanned = scan_bytes(bytes)?;
        let plan = make_plan(&scanned, Path::new("a.tar"), &ImportOptions::default())?;
        let names: Vec<_> = plan.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["docker.io/library/busybox:latest", "127.0.0.1:5000/bb:1"]
        );
        let target = &plan.images[0].target;
        assert_eq!(target.media_type, media::DOCKER_MANIFEST);
        // The layer is stored once; the synthesised manifest is last and hashes to the target.
        assert_eq!(plan.blobs.len(), 3);
        let last = &plan.blobs[2];
        assert_eq!(last.desc.digest, target.digest);
        match &last.source {
            Source::Memory(m) => assert_eq!(digest(m), target.digest),
            other => anyhow::bail!("manifest source {other:?}"),
        }
        assert_eq!(plan.blobs[0].desc.media_type, media::DOCKER_LAYER);
        Ok(())
    }
}
