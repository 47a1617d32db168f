//! Service account tokens for projected volumes: a cache keyed like upstream's token manager
//! (pkg/kubelet/token/token_manager.go) and its refresh rule.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use super::error::VolumeError;
use super::source::VolumeSource;

/// Default `expirationSeconds` of a serviceAccountToken projection.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The API server rejects shorter tokens; shorter requests are raised to this.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Tokens older than this are refreshed whatever their lifetime, as upstream's `maxTTL`.
const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);

/// True when a token that expires at `expiry` and was requested for `expiration_seconds` must
/// be replaced at `now`: 80% of its lifetime has passed, or it was issued more than 24 h ago.
pub fn token_needs_refresh(now: Timestamp, expiry: Timestamp, expiration_seconds: i64) -> bool {
    let secs = expiration_seconds.max(0);
    let too_old = expiry
        .checked_sub(SignedDuration::from_secs(secs))
        .and_then(|issued| issued.checked_add(MAX_TTL));
    let refresh_at = expiry.checked_sub(SignedDuration::from_secs(secs * 20 / 100));
    match (too_old, refresh_at) {
        (Ok(old), Ok(at)) => now > old || now > at,
        // Out of the representable range: a nonsensical token, get a new one.
        _ => true,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    expiration_seconds: i64,
    pod_uid: String,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expiry: Timestamp,
}

/// One token request, as a projected volume needs it.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// Pod namespace.
    pub namespace: &'a str,
    /// The pod's service account.
    pub service_account: &'a str,
    /// Audiences; empty means the API server's default.
    pub audiences: Vec<String>,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: &'a str,
    /// Its UID.
    pub pod_uid: &'a str,
}

/// Tokens by (namespace, service account, audiences, lifetime, pod UID).
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<Key, Cached>>,
}

impl TokenCache {
    /// A cached token while it is fresh, else a new one from `source`. When the refresh fails
    /// but the cached token has not expired yet, the cached one is kept (as upstream does).
    pub async fn get(
        &self,
        source: &dyn VolumeSource,
        spec: TokenSpec<'_>,
        now: Timestamp,
    ) -> Result<String, VolumeError> {
        let key = Key {
            namespace: spec.namespace.to_string(),
            service_account: spec.service_account.to_string(),
            audiences: spec.audiences.clone(),
            expiration_seconds: spec.expiration_seconds,
            pod_uid: spec.pod_uid.to_string(),
        };
        let cached = self.lock().get(&key).cloned();
        if let Some(c) = &cached {
            if !token_needs_refresh(now, c.expiry, spec.expiration_seconds) {
                return Ok(c.token.clone());
            }
        }
        let fetched = source
            .service_account_token(
                spec.namespace,
                spec.service_account,
                spec.audiences,
                spec.expiration_seconds,
                spec.pod_name,
                spec.pod_uid,
            )
            .await;
        match (fetched, cached) {
            (Ok((token, expiry)), _) => {
                self.lock().insert(
                    key,
                    Cached {
                        token: token.clone(),
                        expiry,
                    },
                );
                Ok(token)
            }
            (Err(e), Some(c)) if now < c.expiry => {
                tracing::warn!(error = %e, service_account = %key.service_account,
                    "token refresh failed, keeping the current token");
                Ok(c.token)
            }
            (Err(e), _) => Err(VolumeError::Token(Box::new(e))),
        }
    }

    /// Forgets every token bound to pod `uid`.
    pub fn forget_pod(&self, uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        // A poisoned map only means a panic elsewhere mid-insert; the data is still usable.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn refresh_at_80_percent_or_after_24h() {
        let exp = ts("2025-01-01T01:00:00Z"); // issued 00:00, lifetime 1 h
        assert!(!token_needs_refresh(ts("2025-01-01T00:00:00Z"), exp, 3600));
        assert!(!token_needs_refresh(ts("2025-01-01T00:47:59Z"), exp, 3600));
        assert!(!token_needs_refresh(ts("2025-01-01T00:48:00Z"), exp, 3600));
        assert!(token_needs_refresh(ts("2025-01-01T00:48:01Z"), exp, 3600));
        assert!(token_needs_refresh(ts("2025-01-01T02:00:00Z"), exp, 3600));
        // A 7-day token is still refreshed once it is a day old.
        let week = 7 * 24 * 3600;
        let exp = ts("2025-01-08T00:00:00Z");
        assert!(!token_needs_refresh(ts("2025-01-01T23:59:59Z"), exp, week));
        assert!(token_needs_refresh(ts("2025-01-02T00:00:01Z"), exp, week));
    }
}
