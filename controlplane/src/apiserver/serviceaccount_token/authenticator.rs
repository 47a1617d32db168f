//! Bearer authentication of service-account tokens: upstream's two JWT authenticators (bound
//! tokens of `--service-account-issuer`, legacy secret-based tokens of `kubernetes/serviceaccount`)
//! in one, reading the objects a token names straight from the API server's store.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::apiserver::auth::{self, intersect, TokenAuthenticator, TokenUser, UserInfo};
use crate::apiserver::resources;
use crate::registry::generic::Registry;
use crate::storage::Store;

use super::claims::{self, ObjectRef, ServiceAccountInfo};
use super::keys;
use super::{ServiceAccountTokens, LEEWAY_SECONDS, LEGACY_ISSUER};

/// Label upstream puts on legacy token secrets it has invalidated.
const LEGACY_INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";

/// Authenticates service-account JWTs against the keys of `tokens` and the live objects in
/// `store` (the service account, and the pod, secret or node a token is bound to).
pub struct ServiceAccountAuthenticator {
    tokens: Arc<ServiceAccountTokens>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ServiceAccountAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAuthenticator")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> auth::Error {
    auth::Error::InvalidToken {
        message: message.into(),
    }
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn quoted_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", parts.join(" "))
}

fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `obj` was marked deleted before `cutoff` (unix seconds).
fn deleted_before(obj: &Value, cutoff: i64) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t.as_second() < cutoff)
}

impl ServiceAccountAuthenticator {
    /// An authenticator over `store` (normally the API server's watch cache).
    pub fn new(tokens: Arc<ServiceAccountTokens>, store: Arc<dyn Store>) -> Self {
        Self { tokens, store }
    }

    async fn get(&self, plural: &str, ns: Option<&str>, name: &str) -> auth::Result<Option<Value>> {
        let lookup_failed = |message: String| auth::Error::Token {
            name: "service-account",
            message,
        };
        let res = resources::find("", "v1", plural)
            .ok_or_else(|| lookup_failed(format!("resource {plural} is not served")))?;
        let kv = self
            .store
            .get(&Registry::key(res, ns, name))
            .await
            .map_err(|e| lookup_failed(format!("get {plural} {name}: {e}")))?;
        kv.map(|kv| Registry::decode(res, &kv))
            .transpose()
            .map_err(|e| lookup_failed(e.message))
    }

    /// Authenticates `token` for the `wanted` audiences at time `now` (unix seconds).
    pub async fn authenticate_at(
        &self,
        token: &str,
        wanted: &[String],
        now: i64,
    ) -> auth::Result<Option<TokenUser>> {
        // As upstream's hasCorrectIssuer: tokens of other issuers belong to other
        // authenticators, so they are "unknown" here rather than invalid.
        let Some((_, unverified)) = keys::decode_unverified(token) else {
            return Ok(None);
        };
        let issuer = unverified
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let legacy = issuer == LEGACY_ISSUER;
        if !legacy && !self.tokens.issuers().iter().any(|i| i == issuer) {
            return Ok(None);
        }
        let claims = keys::verify_jwt(token, self.tokens.verifying_keys())
            .map_err(|e| invalid(e.to_string()))?;

        let implicit = self.tokens.api_audiences();
        let mut token_audiences = claims::audiences(&claims);
        if token_audiences.is_empty() {
            // Legacy tokens have no audience: they are good for the API server only.
            token_audiences = implicit.to_vec();
        }
        let wanted = if wanted.is_empty() { implicit } else { wanted };
        let audiences = intersect(wanted, &token_audiences);
        if audiences.is_empty() && !implicit.is_empty() {
            return Err(invalid(format!(
                "token audiences {} is invalid for the target audiences {}",
                quoted_list(&token_audiences),
                quoted_list(wanted)
            )));
        }
        let info = if legacy {
            self.validate_legacy(token, &claims).await?
        } else {
            self.validate_bound(&claims, now).await?
        };
        Ok(Some(TokenUser {
            user: info.user_info(),
            audiences,
        }))
    }

    async fn validate_bound(&self, claims: &Value, now: i64) -> auth::Result<ServiceAccountInfo> {
        claims::check_times(claims, now).map_err(invalid)?;
        let c = claims::bound_claims(claims).map_err(invalid)?;
        let ns = c.namespace.as_str();
        let cutoff = now - LEEWAY_SECONDS;
        let sa_name = &c.service_account.name;
        let sa = self
            .get("serviceaccounts", Some(ns), sa_name)
            .await?
            .ok_or_else(|| invalid(format!("serviceaccounts \"{sa_name}\" not found")))?;
        if deleted_before(&sa, cutoff) {
            return Err(invalid(format!(
                "service account {ns}/{sa_name} has been deleted"
            )));
        }
        if uid_of(&sa) != c.service_account.uid {
            return Err(invalid(format!(
                "service account UID ({}) does not match claim ({})",
                uid_of(&sa),
                c.service_account.uid
            )));
        }
        let invalidated = || invalid("service account token has been invalidated");
        let check_bound = |obj: Option<Value>, kind: &str, want: &ObjectRef| {
            let obj = obj.ok_or_else(invalidated)?;
            if deleted_before(&obj, cutoff) {
                return Err(invalidated());
            }
            if uid_of(&obj) != want.uid {
                return Err(invalid(format!(
                    "{kind} UID ({}) does not match service account {kind} ref claim ({})",
                    uid_of(&obj),
                    want.uid
                )));
            }
            Ok(())
        };
        if let Some(secret) = &c.secret {
            let obj = self.get("secrets", Some(ns), &secret.name).await?;
            check_bound(obj, "secret", secret)?;
        }
        let mut info = ServiceAccountInfo {
            namespace: c.namespace.clone(),
            name: sa_name.clone(),
            uid: c.service_account.uid.clone(),
            credential_id: if c.id.is_empty() {
                String::new()
            } else {
                format!("JTI={}", c.id)
            },
            ..Default::default()
        };
        if let Some(pod) = &c.pod {
            let obj = self.get("pods", Some(ns), &pod.name).await?;
            check_bound(obj, "pod", pod)?;
            info.pod_name = pod.name.clone();
            info.pod_uid = pod.uid.clone();
        }
        if let Some(node) = &c.node {
            if c.pod.is_none() {
                // A token bound to the node itself lives only as long as the node.
                let obj = self.get("nodes", None, &node.name).await?;
                check_bound(obj, "node", node)?;
            }
            info.node_name = node.name.clone();
            info.node_uid = node.uid.clone();
        }
        Ok(info)
    }

    async fn validate_legacy(
        &self,
        token: &str,
        claims: &Value,
    ) -> auth::Result<ServiceAccountInfo> {
        let c = claims::legacy_claims(claims).map_err(invalid)?;
        let ns = c.namespace.as_str();
        let invalidated = || invalid("token has been invalidated");
        let secret = self
            .get("secrets", Some(ns), &c.secret)
            .await?
            .ok_or_else(invalidated)?;
        if secret
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(invalidated());
        }
        let stored = secret
            .pointer("/data/token")
            .and_then(Value::as_str)
            .and_then(|b| STANDARD.decode(b).ok())
            .unwrap_or_default();
        if stored != token.as_bytes() {
            return Err(invalid("token does not match server's copy"));
        }
        if secret
            .pointer("/metadata/labels")
            .and_then(|l| l.get(LEGACY_INVALID_SINCE_LABEL))
            .is_some()
        {
            return Err(invalid(format!(
                "the token in secret {ns}/{} for service account {ns}/{} has been marked invalid; use tokens from the TokenRequest API or remove the {LEGACY_INVALID_SINCE_LABEL:?} label from the secret",
                c.secret, c.service_account
            )));
        }
        let sa = self
            .get("serviceaccounts", Some(ns), &c.service_account)
            .await?
            .ok_or_else(|| {
                invalid(format!(
                    "serviceaccounts \"{}\" not found",
                    c.service_account
                ))
            })?;
        if sa
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(invalid(format!(
                "service account {ns}/{} has been deleted",
                c.service_account
            )));
        }
        if uid_of(&sa) != c.service_account_uid {
            return Err(invalid(format!(
                "service account UID ({}) does not match claim ({})",
                uid_of(&sa),
                c.service_account_uid
            )));
        }
        Ok(ServiceAccountInfo {
            namespace: c.namespace,
            name: c.service_account,
            uid: c.service_account_uid,
            ..Default::default()
        })
    }
}

#[async_trait]
impl TokenAuthenticator for ServiceAccountAuthenticator {
    fn name(&self) -> &'static str {
        "service-account"
    }

    async fn authenticate_token(&self, token: &str) -> auth::Result<Option<UserInfo>> {
        let wanted = self.tokens.api_audiences().to_vec();
        let now = jiff::Timestamp::now().as_second();
        Ok(self
            .authenticate_at(token, &wanted, now)
            .await?
            .map(|t| t.user))
    }

    async fn authenticate_token_for(
        &self,
        token: &str,
        wanted: &[String],
        _api_audiences: &[String],
    ) -> auth::Result<Option<TokenUser>> {
        self.authenticate_at(token, wanted, jiff::Timestamp::now().as_second())
            .await
    }
}
