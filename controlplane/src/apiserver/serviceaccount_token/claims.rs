//! Token claims: building them for a TokenRequest and reading them back, in upstream's shape
//! (pkg/serviceaccount/claims.go, legacy.go). Pure: the caller supplies the time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::apiserver::auth::UserInfo;

use super::LEEWAY_SECONDS;

/// `user.extra` key of the pod a token is bound to.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// `user.extra` key of the bound pod's UID.
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// `user.extra` key of the token's credential id (`JTI=<jti>`).
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
/// `user.extra` key of the node the bound pod runs on (or the bound node).
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// `user.extra` key of that node's UID.
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// The group of every service account.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// A name and UID, as the private claims reference objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Object name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Object UID (empty for a node that was not found when the token was issued).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KubernetesClaims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(default)]
    serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warnafter: Option<i64>,
}

/// What a bound token says: built by TokenRequest, read back by the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `iat` and `nbf` (unix seconds).
    pub issued_at: i64,
    /// `exp` (unix seconds).
    pub expires_at: i64,
    /// `jti`.
    pub id: String,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: ObjectRef,
    /// The pod the token is bound to.
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    pub secret: Option<ObjectRef>,
    /// The node: the bound pod's node, or the node the token is bound to.
    pub node: Option<ObjectRef>,
    /// `warnafter` (unix seconds) of an extended token.
    pub warn_after: Option<i64>,
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl TokenClaims {
    /// The JWT claims object. Keys are sorted, as Go's JSON encoding of the merged claim map.
    pub fn to_json(&self) -> Value {
        let k8s = KubernetesClaims {
            namespace: self.namespace.clone(),
            serviceaccount: self.service_account.clone(),
            pod: self.pod.clone(),
            secret: self.secret.clone(),
            node: self.node.clone(),
            warnafter: self.warn_after,
        };
        // go-jose writes a single audience as a string.
        let aud = match self.audiences.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        let mut m = Map::new();
        m.insert("aud".into(), aud);
        m.insert("exp".into(), json!(self.expires_at));
        m.insert("iat".into(), json!(self.issued_at));
        m.insert("iss".into(), json!(self.issuer));
        if !self.id.is_empty() {
            m.insert("jti".into(), json!(self.id));
        }
        m.insert(
            "kubernetes.io".into(),
            serde_json::to_value(k8s).unwrap_or_else(|_| json!({})),
        );
        m.insert("nbf".into(), json!(self.issued_at));
        m.insert(
            "sub".into(),
            json!(username(&self.namespace, &self.service_account.name)),
        );
        Value::Object(m)
    }
}

/// The audiences of a token's `aud` (a string or a list).
pub fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

fn numeric_date(claims: &Value, name: &str) -> Option<i64> {
    claims.get(name)?.as_f64().map(|f| f.floor() as i64)
}

/// Checks `exp`, `nbf` and `iat` against `now` with [`LEEWAY_SECONDS`] of tolerance; the error
/// is upstream's message.
pub fn check_times(claims: &Value, now: i64) -> Result<(), String> {
    if numeric_date(claims, "exp").is_some_and(|exp| now - LEEWAY_SECONDS > exp) {
        return Err("service account token has expired".into());
    }
    if numeric_date(claims, "nbf").is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
        return Err("service account token is not valid yet".into());
    }
    if numeric_date(claims, "iat").is_some_and(|iat| now + LEEWAY_SECONDS < iat) {
        return Err("service account token is issued in the future".into());
    }
    Ok(())
}

/// The private claims of a bound token, checked for the fields every token must have.
pub fn bound_claims(claims: &Value) -> Result<TokenClaims, String> {
    let k8s: KubernetesClaims = claims
        .get("kubernetes.io")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| format!("service account token claims are malformed: {e}"))?
        .unwrap_or_default();
    if k8s.namespace.is_empty() || k8s.serviceaccount.name.is_empty() {
        return Err("service account token has no kubernetes.io service account claims".into());
    }
    let str_claim = |n: &str| {
        claims
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(TokenClaims {
        issuer: str_claim("iss"),
        audiences: audiences(claims),
        issued_at: numeric_date(claims, "iat").unwrap_or_default(),
        expires_at: numeric_date(claims, "exp").unwrap_or_default(),
        id: str_claim("jti"),
        namespace: k8s.namespace,
        service_account: k8s.serviceaccount,
        pod: k8s.pod,
        secret: k8s.secret,
        node: k8s.node,
        warn_after: k8s.warnafter,
    })
}

/// The claims of a legacy secret-based token (`iss: kubernetes/serviceaccount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyClaims {
    /// The namespace.
    pub namespace: String,
    /// The service account name.
    pub service_account: String,
    /// The service account UID.
    pub service_account_uid: String,
    /// The token secret's name.
    pub secret: String,
}

/// Reads and checks legacy claims as upstream's legacy validator does.
pub fn legacy_claims(claims: &Value) -> Result<LegacyClaims, String> {
    let get = |n: &str| {
        claims
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let sub = get("sub");
    let c = LegacyClaims {
        namespace: get("kubernetes.io/serviceaccount/namespace"),
        service_account: get("kubernetes.io/serviceaccount/service-account.name"),
        service_account_uid: get("kubernetes.io/serviceaccount/service-account.uid"),
        secret: get("kubernetes.io/serviceaccount/secret.name"),
    };
    for (value, what) in [
        (&sub, "sub"),
        (&c.namespace, "namespace"),
        (&c.secret, "secretName"),
        (&c.service_account, "serviceAccountName"),
        (&c.service_account_uid, "serviceAccountUID"),
    ] {
        if value.is_empty() {
            return Err(format!("{what} claim is missing"));
        }
    }
    if sub != username(&c.namespace, &c.service_account) {
        return Err("sub claim is invalid".into());
    }
    Ok(c)
}

/// Who a verified token names: the service account and what the token is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    /// Namespace.
    pub namespace: String,
    /// Service account name.
    pub name: String,
    /// Service account UID.
    pub uid: String,
    /// Bound pod name.
    pub pod_name: String,
    /// Bound pod UID.
    pub pod_uid: String,
    /// Node name.
    pub node_name: String,
    /// Node UID.
    pub node_uid: String,
    /// `JTI=<jti>` when the token has one.
    pub credential_id: String,
}

impl ServiceAccountInfo {
    /// The user: `system:serviceaccount:<ns>:<name>`, the SA's UID, the service-account
    /// groups, and the bound-object extras.
    pub fn user_info(&self) -> UserInfo {
        let mut extra = BTreeMap::new();
        if !self.pod_name.is_empty() && !self.pod_uid.is_empty() {
            extra.insert(POD_NAME_KEY.to_string(), vec![self.pod_name.clone()]);
            extra.insert(POD_UID_KEY.to_string(), vec![self.pod_uid.clone()]);
        }
        if !self.credential_id.is_empty() {
            extra.insert(
                CREDENTIAL_ID_KEY.to_string(),
                vec![self.credential_id.clone()],
            );
        }
        if !self.node_name.is_empty() {
            extra.insert(NODE_NAME_KEY.to_string(), vec![self.node_name.clone()]);
            if !self.node_uid.is_empty() {
                extra.insert(NODE_UID_KEY.to_string(), vec![self.node_uid.clone()]);
            }
        }
        UserInfo {
            username: username(&self.namespace, &self.name),
            uid: self.uid.clone(),
            groups: vec![
                ALL_SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{}", self.namespace),
            ],
            extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenClaims {
        TokenClaims {
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
            issued_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            id: "jti-1".into(),
            namespace: "ns".into(),
            service_account: ObjectRef {
                name: "sa".into(),
                uid: "sa-uid".into(),
            },
            pod: Some(ObjectRef {
                name: "p".into(),
                uid: "p-uid".into(),
            }),
            secret: None,
            node: Some(ObjectRef {
                name: "n1".into(),
                uid: String::new(),
            }),
            warn_after: Some(1_700_003_607),
        }
    }

    #[test]
    fn claims_have_upstream_shape_and_round_trip() {
        let c = sample();
        let v = c.to_json();
        assert_eq!(
            v,
            json!({
                "aud": "https://kubernetes.default.svc.cluster.local",
                "exp": 1_700_003_600,
                "iat": 1_700_000_000,
                "iss": "https://kubernetes.default.svc.cluster.local",
                "jti": "jti-1",
                "kubernetes.io": {
                    "namespace": "ns",
                    "node": {"name": "n1"},
                    "pod": {"name": "p", "uid": "p-uid"},
                    "serviceaccount": {"name": "sa", "uid": "sa-uid"},
                    "warnafter": 1_700_003_607,
                },
                "nbf": 1_700_000_000,
                "sub": "system:serviceaccount:ns:sa",
            })
        );
        assert_eq!(bound_claims(&v), Ok(c));
        let mut two = sample();
        two.audiences = vec!["a".into(), "b".into()];
        assert_eq!(two.to_json()["aud"], json!(["a", "b"]));
        assert_eq!(audiences(&two.to_json()), vec!["a", "b"]);
    }

    #[test]
    fn times_have_a_minute_of_leeway() {
        let v = sample().to_json();
        assert_eq!(check_times(&v, 1_700_000_000), Ok(()));
        assert_eq!(check_times(&v, 1_700_003_660), Ok(()));
        assert_eq!(
            check_times(&v, 1_700_003_661),
            Err("service account token has expired".into())
        );
        assert_eq!(check_times(&v, 1_699_999_940), Ok(()));
        assert_eq!(
            check_times(&v, 1_699_999_939),
            Err("service account token is not valid yet".into())
        );
    }

    #[test]
    fn bound_claims_need_the_service_account() {
        let mut v = sample().to_json();
        v["kubernetes.io"] = json!({"namespace": "ns"});
        assert!(bound_claims(&v).is_err());
        v["kubernetes.io"] = json!("x");
        assert!(bound_claims(&v).is_err());
    }

    #[test]
    fn legacy_claims_are_checked() {
        let mut v = json!({
            "iss": "kubernetes/serviceaccount",
            "sub": "system:serviceaccount:ns:sa",
            "kubernetes.io/serviceaccount/namespace": "ns",
            "kubernetes.io/serviceaccount/secret.name": "sa-token",
            "kubernetes.io/serviceaccount/service-account.name": "sa",
            "kubernetes.io/serviceaccount/service-account.uid": "u1",
        });
        let c = legacy_claims(&v).expect("valid");
        assert_eq!(c.secret, "sa-token");
        v["sub"] = json!("system:serviceaccount:other:sa");
        assert_eq!(legacy_claims(&v), Err("sub claim is invalid".into()));
        v["kubernetes.io/serviceaccount/secret.name"] = json!("");
        assert_eq!(legacy_claims(&v), Err("secretName claim is missing".into()));
    }

    #[test]
    fn user_info_carries_groups_and_extras() {
        let info = ServiceAccountInfo {
            namespace: "ns".into(),
            name: "sa".into(),
            uid: "u".into(),
            pod_name: "p".into(),
            pod_uid: "pu".into(),
            node_name: "n1".into(),
            node_uid: String::new(),
            credential_id: "JTI=j".into(),
        };
        let u = info.user_info();
        assert_eq!(u.username, "system:serviceaccount:ns:sa");
        assert_eq!(
            u.groups,
            vec!["system:serviceaccounts", "system:serviceaccounts:ns"]
        );
        assert_eq!(u.extra[POD_NAME_KEY], vec!["p"]);
        assert_eq!(u.extra[POD_UID_KEY], vec!["pu"]);
        assert_eq!(u.extra[NODE_NAME_KEY], vec!["n1"]);
        assert!(!u.extra.contains_key(NODE_UID_KEY));
        assert_eq!(u.extra[CREDENTIAL_ID_KEY], vec!["JTI=j"]);
    }
}
