//! ServiceAccount admission for pod creation, as upstream's plugin/pkg/admission/serviceaccount:
//! a pod runs as `serviceAccountName` (default `default`), which must exist; unless automount is
//! off on the pod or its service account, it gets the projected `kube-api-access-<suffix>`
//! volume (a bound token, the cluster CA from the `kube-root-ca.crt` ConfigMap, the namespace)
//! mounted read-only at [`TOKEN_MOUNT_PATH`] in every container and init container; it inherits
//! the service account's `imagePullSecrets` when it names none. Mirror pods are left alone but
//! may not reference service accounts, secrets or token projections.
//!
//! The decisions are pure functions ([`mutate`], [`validate_mirror_pod`],
//! [`check_mountable_secrets`]); [`admit`] adds the service-account lookup and is called by the
//! registry when a pod is created.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::registry::generic::Registry;
use crate::storage::{EventKind, ListOptions};

/// The service account of pods that name none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in containers.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name prefix of the injected projected volume.
pub const VOLUME_NAME_PREFIX: &str = "kube-api-access-";
/// The annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The ConfigMap holding the cluster CA in every namespace (published by the
/// `rootcacertpublisher` controller).
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Token lifetime the projected volume asks for: an hour plus seven seconds, which the API
/// server recognises and extends (`--service-account-extend-token-expiration`).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// Service-account annotation that limits pods to the secrets the account lists.
pub const ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: &str = "kubernetes.io/enforce-mountable-secrets";

/// How long a pod create waits for the `default` service account of its namespace to appear.
/// Upstream retries the lookup 10 times, 100–200 ms apart, because the service-account
/// controller creates it right after the namespace; here a watch ends the wait as soon as it
/// exists.
pub const DEFAULT_ACCOUNT_WAIT: Duration = Duration::from_secs(2);

/// upstream's `names.SimpleNameGenerator` alphabet (no vowels, no look-alike digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    uuid::Uuid::new_v4()
        .into_bytes()
        .iter()
        .take(5)
        .map(|b| SUFFIX_ALPHABET[(*b as usize) % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `pod` is the mirror of a static pod.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

/// Whether the token volume is mounted: the pod's `automountServiceAccountToken` wins, then the
/// service account's, then true.
pub fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// The projected volume `name` of the token, CA bundle and namespace, in its defaulted form.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{
                    "path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                }]}},
            ],
        },
    })
}

/// Mounts the token volume into every init container and container without a mount at
/// [`TOKEN_MOUNT_PATH`], adding the volume (named with `suffix`) unless a `kube-api-access-*`
/// volume exists already, which is then reused.
pub fn mount_token_volume(pod: &mut Value, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vols| {
            vols.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_NAME_PREFIX))
                .map(String::from)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_NAME_PREFIX}{suffix}"));
    let mount = json!({"mountPath": TOKEN_MOUNT_PATH, "name": volume_name, "readOnly": true});
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let has = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)
                    })
                });
            if has {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(ms) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                ms.push(mount.clone());
                mounted = true;
            }
        }
    }
    if mounted && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        if let Some(vols) = volumes.as_array_mut() {
            vols.push(token_volume(&volume_name));
        }
    }
}

/// The admission mutation of a non-mirror pod once its service account `sa` is known:
/// the token volume when automounting (named with `suffix`), and the account's
/// `imagePullSecrets` when the pod has none.
pub fn mutate(pod: &mut Value, sa: &Value, suffix: &str) {
    if should_automount(sa, pod) {
        mount_token_volume(pod, suffix);
    }
    let pod_has_pull_secrets = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let sa_pull_secrets: Vec<Value> = sa
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| json!({"name": s.get("name").and_then(Value::as_str).unwrap_or_default()}))
                .collect()
        })
        .unwrap_or_default();
    if !pod_has_pull_secrets && !sa_pull_secrets.is_empty() {
        if let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) {
            spec["imagePullSecrets"] = Value::Array(sa_pull_secrets);
        }
    }
}

/// The secret names a pod references, with where (for messages): volumes, projections,
/// volume-source secret refs, env and envFrom of every container, image pull secrets.
fn secret_references(pod: &Value) -> Vec<String> {
    let mut names = Vec::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut push = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            names.push(n.to_string());
        }
    };
    for s in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push(s.get("name"));
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                push(e.pointer("/secretRef/name"));
            }
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                push(e.pointer("/valueFrom/secretKeyRef/name"));
            }
        }
    }
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push(v.pointer("/secret/secretName"));
        push(v.pointer("/azureFile/secretName"));
        for src in [
            "cephfs",
            "cinder",
            "flexVolume",
            "rbd",
            "scaleIO",
            "iscsi",
            "storageos",
        ] {
            push(v.pointer(&format!("/{src}/secretRef/name")));
        }
        push(v.pointer("/csi/nodePublishSecretRef/name"));
        for p in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(p.pointer("/secret/name"));
        }
    }
    names
}

/// Upstream's restrictions on mirror pods; the error is the Forbidden reason.
pub fn validate_mirror_pod(pod: &Value) -> Result<(), String> {
    if !str_at(pod, "/spec/serviceAccountName").is_empty() {
        return Err("a mirror pod may not reference service accounts".into());
    }
    if !secret_references(pod).is_empty() {
        return Err("a mirror pod may not reference secrets".into());
    }
    let projects_token = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten()
        .any(|s| s.get("serviceAccountToken").is_some_and(|t| !t.is_null()));
    if projects_token {
        return Err("a mirror pod may not use ServiceAccountToken volume projections".into());
    }
    Ok(())
}

/// Go's `strconv.ParseBool` truth values.
fn parse_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// With the service account's `kubernetes.io/enforce-mountable-secrets: "true"`, a pod may only
/// use the secrets the account lists (`secrets`, `imagePullSecrets` for pull secrets).
pub fn check_mountable_secrets(sa: &Value, pod: &Value) -> Result<(), String> {
    let enforce = sa
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ENFORCE_MOUNTABLE_SECRETS_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(parse_bool);
    if !enforce {
        return Ok(());
    }
    let sa_name = str_at(sa, "/metadata/name");
    let names = |field: &str| -> Vec<String> {
        sa.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("name").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let mountable = names("secrets");
    let pullable = names("imagePullSecrets");
    let not_allowed = |what: String| {
        Err(format!(
            "{what} is not allowed because service account {sa_name} does not reference that secret"
        ))
    };
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let secret = str_at(v, "/secret/secretName");
        if v.get("secret").is_some_and(Value::is_object) && !mountable.iter().any(|m| m == secret) {
            return not_allowed(format!("volume with secret.secretName=\"{secret}\""));
        }
    }
    for (list, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cname = str_at(c, "/name");
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let secret = str_at(e, "/valueFrom/secretKeyRef/name");
                if e.pointer("/valueFrom/secretKeyRef")
                    .is_some_and(Value::is_object)
                    && !mountable.iter().any(|m| m == secret)
                {
                    return not_allowed(format!(
                        "{what} {cname} with envVar {} referencing secret.secretName=\"{secret}\"",
                        str_at(e, "/name")
                    ));
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let secret = str_at(e, "/secretRef/name");
                if e.get("secretRef").is_some_and(Value::is_object)
                    && !mountable.iter().any(|m| m == secret)
                {
                    return not_allowed(format!(
                        "{what} {cname} with envFrom referencing secret.secretName=\"{secret}\""
                    ));
                }
            }
        }
    }
    for (i, s) in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = str_at(s, "/name");
        if !pullable.iter().any(|p| p == name) {
            return Err(format!(
                "imagePullSecrets[{i}].name=\"{name}\" is not allowed because service account {sa_name} does not reference that imagePullSecret"
            ));
        }
    }
    Ok(())
}

/// 403 as upstream's `admission.NewForbidden`: `pods "<name>" is forbidden: <reason>`.
fn forbidden(pod: &Value, reason: &str) -> ApiError {
    let name = Some(str_at(pod, "/metadata/name"))
        .filter(|n| !n.is_empty())
        .or_else(|| Some(str_at(pod, "/metadata/generateName")).filter(|n| !n.is_empty()))
        .unwrap_or("Unknown");
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("pods {name:?} is forbidden: {reason}"),
        details: Some(json!({"name": name, "kind": "pods"})),
    }
}

fn serviceaccounts() -> ApiResult<&'static ResourceInfo> {
    resources::find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))
}

/// The service account `ns/name`, waiting up to [`DEFAULT_ACCOUNT_WAIT`] for the `default`
/// one; `Ok(None)` when it does not exist.
async fn lookup(registry: &Registry, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let res = serviceaccounts()?;
    match registry.get(res, Some(ns), name).await {
        Ok(sa) => return Ok(Some(sa)),
        Err(e) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    if name != DEFAULT_SERVICE_ACCOUNT {
        return Ok(None);
    }
    let key = Registry::key(res, Some(ns), name);
    let store = registry.store();
    let storage_err = |e: crate::storage::Error| ApiError::from_storage(res, name, &e);
    // Read the revision and the key together, then watch from there: no creation is missed.
    let page = store
        .list(
            &key,
            ListOptions {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .map_err(storage_err)?;
    if let Some(kv) = page.items.iter().find(|kv| kv.key == key) {
        return Registry::decode(res, kv).map(Some);
    }
    let mut events = store
        .watch(&key, page.revision)
        .await
        .map_err(storage_err)?;
    let found = tokio::time::timeout(DEFAULT_ACCOUNT_WAIT, async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) if ev.kv.key == key && ev.kind != EventKind::Deleted => {
                    return Some(Registry::decode(res, &ev.kv));
                }
                Ok(_) => {}
                Err(e) => return Some(Err(storage_err(e))),
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(sa)) => sa.map(Some),
        Ok(None) | Err(_) => Ok(None),
    }
}

/// Admits a pod being created in `ns`: see the module docs. Errors are 403 Forbidden with
/// upstream's reasons.
pub async fn admit(registry: &Registry, ns: &str, pod: &mut Value) -> ApiResult<()> {
    if is_mirror_pod(pod) {
        return validate_mirror_pod(pod).map_err(|reason| forbidden(pod, &reason));
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let sa_name = Some(str_at(pod, "/spec/serviceAccountName"))
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(sa_name);
    pod["spec"]["serviceAccount"] = json!(sa_name);
    let sa = match lookup(registry, ns, &sa_name).await {
        Ok(Some(sa)) => sa,
        Ok(None) => {
            return Err(forbidden(
                pod,
                &format!(
                    "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                ),
            ))
        }
        Err(e) => {
            return Err(forbidden(
                pod,
                &format!("error looking up service account {ns}/{sa_name}: {}", e.message),
            ))
        }
    };
    mutate(pod, &sa, &random_suffix());
    check_mountable_secrets(&sa, pod).map_err(|reason| forbidden(pod, &reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "serviceAccountName": "default",
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "a", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "b", "image": "busybox", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "own", "emptyDir": {}}],
            },
        })
    }

    fn sa() -> Value {
        json!({"metadata": {"name": "default", "namespace": "ns", "uid": "u"}})
    }

    #[test]
    fn adds_volume_and_mounts_where_missing() {
        let mut p = pod();
        mutate(&mut p, &sa(), "x2b4z");
        let spec = &p["spec"];
        let mount = json!({"mountPath": TOKEN_MOUNT_PATH, "name": "kube-api-access-x2b4z", "readOnly": true});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        // A container that mounts something there already keeps its own.
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(spec["volumes"][2], token_volume("kube-api-access-x2b4z"));
        assert_eq!(
            spec["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"expirationSeconds": 3607, "path": "token"})
        );
        // Admitting again (a retried create of the same object) reuses the volume.
        let again = p.clone();
        mutate(&mut p, &sa(), "other");
        assert_eq!(p, again);
    }

    #[test]
    fn automount_opt_outs() {
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(false);
        let before = p.clone();
        mutate(&mut p, &sa(), "aaaaa");
        assert_eq!(p, before);
        let mut no = sa();
        no["automountServiceAccountToken"] = json!(false);
        let mut p = pod();
        mutate(&mut p, &no, "aaaaa");
        assert_eq!(p, pod());
        // The pod's explicit true wins over the account's false.
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(true);
        mutate(&mut p, &no, "aaaaa");
        assert!(p["spec"]["volumes"][2]["name"] == "kube-api-access-aaaaa");
    }

    #[test]
    fn pull_secrets_come_from_the_account_when_the_pod_has_none() {
        let mut account = sa();
        account["imagePullSecrets"] = json!([{"name": "reg"}]);
        let mut p = pod();
        mutate(&mut p, &account, "aaaaa");
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        let mut p = pod();
        p["spec"]["imagePullSecrets"] = json!([{"name": "mine"}]);
        mutate(&mut p, &account, "aaaaa");
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn mirror_pods_may_not_reference_accounts_or_secrets() {
        let mut p = json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(is_mirror_pod(&p));
        assert_eq!(validate_mirror_pod(&p), Ok(()));
        p["spec"]["serviceAccountName"] = json!("default");
        assert_eq!(
            validate_mirror_pod(&p),
            Err("a mirror pod may not reference service accounts".into())
        );
        p["spec"]["serviceAccountName"] = json!("");
        p["spec"]["containers"][0]["env"] =
            json!([{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
        assert_eq!(
            validate_mirror_pod(&p),
            Err("a mirror pod may not reference secrets".into())
        );
        p["spec"]["containers"][0]["env"] = json!([]);
        p["spec"]["volumes"] = json!([token_volume("kube-api-access-abcde")]);
        assert_eq!(
            validate_mirror_pod(&p),
            Err("a mirror pod may not use ServiceAccountToken volume projections".into())
        );
    }

    #[test]
    fn enforced_mountable_secrets() {
        let mut account = sa();
        account["metadata"]["annotations"] = json!({ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: "true"});
        account["secrets"] = json!([{"name": "ok"}]);
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "ok"}}]);
        assert_eq!(check_mountable_secrets(&account, &p), Ok(()));
        p["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "nope"}}]);
        let err = check_mountable_secrets(&account, &p).expect_err("envFrom");
        assert!(
            err.starts_with("container a with envFrom referencing secret.secretName=\"nope\""),
            "{err}"
        );
        p["spec"]["containers"][0]["envFrom"] = json!([]);
        p["spec"]["imagePullSecrets"] = json!([{"name": "reg"}]);
        let err = check_mountable_secrets(&account, &p).expect_err("pull secret");
        assert!(err.starts_with("imagePullSecrets[0].name=\"reg\""), "{err}");
        // Without the annotation nothing is enforced.
        assert_eq!(check_mountable_secrets(&sa(), &p), Ok(()));
    }

    #[test]
    fn forbidden_names_the_pod_like_upstream() {
        let e = forbidden(&json!({"metadata": {"generateName": "web-"}}), "why");
        assert_eq!(e.code, 403);
        assert_eq!(e.message, "pods \"web-\" is forbidden: why");
        let suffix = random_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
    }
}
