//! Image pulls for containers, as upstream's image manager (pkg/kubelet/images): the pull
//! policy, credentials from `imagePullSecrets`, `ErrImagePull` then `ImagePullBackOff` with
//! backoff, and the Pulling/Pulled/Failed/BackOff events.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, Secret};
use oxlet_cri::{api, image_spec, Runtime};
use tracing::debug;

use crate::backoff::BackoffMap;
use crate::events::{reason, EventSink, EventType};

/// Why a container has no image yet: the waiting reason and message the status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`, `InvalidImageName`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// Pulls images for pods with per-image backoff.
pub struct ImageManager {
    runtime: Arc<dyn Runtime>,
    events: Arc<dyn EventSink>,
    backoff: BackoffMap,
}

/// The effective pull policy: the spec's, else Always for `:latest` or untagged images.
pub fn pull_policy(container: &Container) -> &str {
    if let Some(p) = container
        .image_pull_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    let image = container.image.as_deref().unwrap_or("");
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The registry host an image reference pulls from (`docker.io` for short names).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

fn normalize_registry(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Credentials from `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets that
/// match `image`'s registry (and path prefix, when the key has one), in secret order.
pub fn credentials_for(image: &str, secrets: &[Secret]) -> Vec<api::AuthConfig> {
    let host = registry_of(image);
    let path = if image.starts_with(host) {
        image.to_string()
    } else {
        format!("{host}/{image}")
    };
    let mut out = Vec::new();
    for s in secrets {
        let Some(data) = s.data.as_ref() else {
            continue;
        };
        let entries = if let Some(b) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&b.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(b) = data.get(".dockercfg") {
            serde_json::from_slice::<serde_json::Value>(&b.0).ok()
        } else {
            None
        };
        let Some(serde_json::Value::Object(entries)) = entries else {
            continue;
        };
        for (key, v) in entries {
            let k = normalize_registry(&key);
            let (khost, kpath) = k.split_once('/').unwrap_or((&k, ""));
            if khost != host || (!kpath.is_empty() && !path.starts_with(&k)) {
                continue;
            }
            let get = |f: &str| v.get(f).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let (mut username, mut password) = (get("username"), get("password"));
            let auth = get("auth");
            if username.is_empty() && !auth.is_empty() {
                if let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(&auth) {
                    if let Some((u, p)) = String::from_utf8_lossy(&dec).split_once(':') {
                        username = u.to_string();
                        password = p.to_string();
                    }
                }
            }
            out.push(api::AuthConfig {
                username,
                password,
                // containerd parses this as a URL and compares its host with the image's.
                server_address: format!("https://{khost}"),
                identity_token: get("identitytoken"),
                registry_token: get("registrytoken"),
                ..Default::default()
            });
        }
    }
    out
}

impl ImageManager {
    /// A manager pulling through `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>, events: Arc<dyn EventSink>) -> Self {
        Self {
            runtime,
            events,
            backoff: BackoffMap::containers(),
        }
    }

    /// Makes sure `container`'s image is present, pulling per policy; returns the image
    /// reference to create the container with. `event_ref` is the container's object reference.
    pub async fn ensure(
        &self,
        pod: &Pod,
        container: &Container,
        secrets: &[Secret],
        sandbox: Option<&api::PodSandboxConfig>,
        event_ref: &ObjectReference,
    ) -> Result<String, ImageError> {
        let image = container.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(ImageError {
                reason: "InvalidImageName",
                message: "container has no image".into(),
            });
        }
        let policy = pull_policy(container);
        let spec = image_spec(image.clone());
        let present = match self.runtime.image_status(&spec).await {
            Ok(p) => p,
            Err(e) => {
                return Err(ImageError {
                    reason: "ErrImageInspect",
                    message: format!("Failed to inspect image {image:?}: {e}"),
                })
            }
        };
        if policy != "Always" {
            if let Some(img) = present {
                self.events.event(
                    event_ref,
                    EventType::Normal,
                    reason::PULLED,
                    &format!("Container image {image:?} already present on machine"),
                );
                return Ok(img.id);
            }
            if policy == "Never" {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.events.event(
                    event_ref,
                    EventType::Warning,
                    reason::ERR_IMAGE_NEVER_PULL,
                    &message,
                );
                return Err(ImageError {
                    reason: "ErrImageNeverPull",
                    message,
                });
            }
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let key = format!("{uid}/{image}");
        let now = SystemTime::now();
        if self.backoff.remaining(&key, now, now).is_some() {
            let message = format!("Back-off pulling image {image:?}");
            self.events
                .event(event_ref, EventType::Normal, reason::BACK_OFF, &message);
            return Err(ImageError {
                reason: "ImagePullBackOff",
                message,
            });
        }
        self.events.event(
            event_ref,
            EventType::Normal,
            reason::PULLING,
            &format!("Pulling image {image:?}"),
        );
        let started = Instant::now();
        let creds = credentials_for(&image, secrets);
        let mut last_err = None;
        let attempts: Vec<Option<&api::AuthConfig>> = if creds.is_empty() {
            vec![None]
        } else {
            creds.iter().map(Some).collect()
        };
        for auth in attempts {
            match self.runtime.pull_image(&spec, auth, sandbox).await {
                Ok(reference) => {
                    let took = started.elapsed();
                    let size = match self.runtime.image_status(&spec).await {
                        Ok(Some(i)) => format!(" Image size: {} bytes.", i.size),
                        _ => String::new(),
                    };
                    self.events.event(
                        event_ref,
                        EventType::Normal,
                        reason::PULLED,
                        &format!(
                            "Successfully pulled image {image:?} in {} ({} including waiting).{size}",
                            fmt_duration(took),
                            fmt_duration(took)
                        ),
                    );
                    return Ok(reference);
                }
                Err(e) => {
                    debug!(image = %image, error = %e, "pull attempt failed");
                    last_err = Some(e);
                }
            }
        }
        let err = last_err.map(|e| e.to_string()).unwrap_or_default();
        let message = format!("Failed to pull image {image:?}: {err}");
        self.events
            .event(event_ref, EventType::Warning, reason::FAILED, &message);
        self.events.event(
            event_ref,
            EventType::Warning,
            reason::FAILED,
            "Error: ErrImagePull",
        );
        self.backoff.next(&key, SystemTime::now());
        Err(ImageError {
            reason: "ErrImagePull",
            message,
        })
    }

    /// Forgets a pod's pull backoff.
    pub fn forget_pod(&self, uid: &str) {
        self.backoff.forget_prefix(&format!("{uid}/"));
    }
}

/// Go's `time.Duration` text for short durations (`1.234s`, `250ms`), as upstream's events.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn c(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn default_pull_policy() {
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("reg:5000/busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox@sha256:abc", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
    }

    #[test]
    fn registries() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(
            registry_of("127.0.0.1:5001/private/busybox"),
            "127.0.0.1:5001"
        );
        assert_eq!(registry_of("registry.k8s.io/pause:3.10"), "registry.k8s.io");
    }

    #[test]
    fn credentials_match_registry() {
        let cfg = serde_json::json!({"auths": {
            "127.0.0.1:5001": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p")},
            "https://index.docker.io/v1/": {"username": "d", "password": "q"},
            "other.example/team": {"username": "x", "password": "y"}
        }});
        let secret = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(serde_json::to_vec(&cfg).expect("json")),
            )])),
            ..Default::default()
        };
        let s = std::slice::from_ref(&secret);
        let got = credentials_for("127.0.0.1:5001/private/busybox:latest", s);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].username.as_str(), got[0].password.as_str()),
            ("u", "p")
        );
        let got = credentials_for("busybox", s);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].username, "d");
        assert_eq!(credentials_for("other.example/team/app", s).len(), 1);
        assert!(credentials_for("other.example/else/app", s).is_empty());
    }
}
