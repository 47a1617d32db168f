//! Turning ConfigMaps, Secrets and downward API items into the files of a volume, as upstream's
//! configmap, secret and downwardapi plugins do (their `MakePayload` / `CollectData`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};

use super::atomic_writer::{FileProjection, Payload};
use super::error::VolumeError;
use crate::fieldpath::{pod_field, resource_field, NodeAllocatable};

/// The default file mode of configMap, secret, downwardAPI and projected volumes (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// Resolves a mode from the API (`items[].mode`, `defaultMode`); the API allows 0..=0777.
pub(crate) fn mode_of(item: Option<i32>, default: i32) -> u32 {
    let m = item.unwrap_or(default);
    u32::try_from(m).unwrap_or(0o644) & 0o7777
}

/// Files of a configMap: `items` when given (key → path, per-item mode), else every key of
/// `data` and `binaryData`. A missing key is skipped when `optional`, an error otherwise.
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut all: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k, v.as_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k, &v.0);
    }
    keyed_payload(items, &all, default_mode, optional, "configmap", "config")
}

/// Files of a secret, with the same rules as [`config_map_payload`].
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let all: BTreeMap<&str, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    keyed_payload(items, &all, default_mode, optional, "secret", "secret")
}

fn keyed_payload(
    items: Option<&[KeyToPath]>,
    all: &BTreeMap<&str, &[u8]>,
    default_mode: i32,
    optional: bool,
    kind: &'static str,
    what: &'static str,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(data) = all.get(item.key.as_str()) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingKey {
                        kind,
                        what,
                        key: item.key.clone(),
                    });
                };
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: data.to_vec(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
        }
        _ => {
            for (k, data) in all {
                out.insert(
                    k.to_string(),
                    FileProjection {
                        data: data.to_vec(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Files of downward API items: `fieldRef` values of the pod (whole-map `metadata.labels` /
/// `metadata.annotations` allowed) and `resourceFieldRef` values of a named container.
pub fn downward_api_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node: &NodeAllocatable,
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            pod_field(pod, &f.field_path).map_err(|e| {
                VolumeError::DownwardApi(format!(
                    "unable to extract field {} for {}: {e}",
                    f.field_path, item.path
                ))
            })?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let container = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    VolumeError::DownwardApi(format!(
                        "container {name:?} for resourceFieldRef of {} not found in the pod",
                        item.path
                    ))
                })?;
            resource_field(container, &r.resource, r.divisor.as_ref(), node).map_err(|e| {
                VolumeError::DownwardApi(format!(
                    "unable to extract resource {} of container {name:?} for {}: {e}",
                    r.resource, item.path
                ))
            })?
        } else {
            return Err(VolumeError::Invalid(format!(
                "downward API item {} has neither fieldRef nor resourceFieldRef",
                item.path
            )));
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("a".into(), "A".into()),
                ("b".into(), "B".into()),
            ])),
            binary_data: Some(BTreeMap::from([("bin".into(), ByteString(vec![0, 1, 2]))])),
            ..Default::default()
        }
    }

    fn kp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn config_map_all_keys_and_items() {
        let p = config_map_payload(None, &cm(), 0o600, false).expect("all");
        assert_eq!(p.keys().cloned().collect::<Vec<_>>(), vec!["a", "b", "bin"]);
        assert_eq!(p["bin"].data, vec![0, 1, 2]);
        assert_eq!(p["a"].mode, 0o600);

        let items = [kp("a", "dir/x", Some(0o400)), kp("bin", "y", None)];
        let p = config_map_payload(Some(&items), &cm(), DEFAULT_MODE, false).expect("items");
        assert_eq!(p.len(), 2);
        assert_eq!(p["dir/x"].mode, 0o400);
        assert_eq!(p["y"].mode, 0o644);

        let missing = [kp("nope", "n", None), kp("a", "a", None)];
        let e = config_map_payload(Some(&missing), &cm(), DEFAULT_MODE, false)
            .expect_err("missing key");
        assert_eq!(
            e.to_string(),
            "configmap references non-existent config key: nope"
        );
        let p = config_map_payload(Some(&missing), &cm(), DEFAULT_MODE, true).expect("optional");
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn secret_keys() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                "token".into(),
                ByteString(b"s3cr3t".to_vec()),
            )])),
            ..Default::default()
        };
        let p = secret_payload(None, &s, DEFAULT_MODE, false).expect("secret");
        assert_eq!(p["token"].data, b"s3cr3t");
        let e = secret_payload(Some(&[kp("x", "x", None)]), &s, DEFAULT_MODE, false)
            .expect_err("missing");
        assert_eq!(
            e.to_string(),
            "secret references non-existent secret key: x"
        );
    }
}
