//! Service-account tokens: the `serviceaccounts/<name>/token` subresource (TokenRequest),
//! bearer authentication of the JWTs it issues (and of legacy secret-based tokens), and
//! `tokenreviews`, as kube-apiserver serves them (pkg/serviceaccount,
//! pkg/registry/core/serviceaccount/storage/token.go, pkg/registry/authentication/tokenreview).
//!
//! Tokens are JWS compact serializations signed with the key of
//! `--service-account-signing-key-file` (default `<data-dir>/pki/sa.key`, ECDSA P-256 → ES256;
//! RSA keys sign RS256) and verified with every key of `--service-account-key-file` (default
//! `<data-dir>/pki/sa.pub`). Claims follow upstream: `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti` and the private
//! `kubernetes.io` claim naming the service account and the object the token is bound to.

mod authenticator;
mod claims;
pub mod keys;
mod request;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use authenticator::ServiceAccountAuthenticator;
pub use claims::{ObjectRef, ServiceAccountInfo, TokenClaims};
pub use keys::{SigningKey, VerifyingKey};
pub use request::{token_request, token_review};

/// `--service-account-issuer` default: the in-cluster name of the API server.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy secret-based tokens (pkg/serviceaccount/legacy.go).
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// `expirationSeconds` of a TokenRequest that names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest token lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest token lifetime a TokenRequest may ask for (2^32 s).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The lifetime the `kube-api-access-*` projected volume asks for; with
/// `--service-account-extend-token-expiration` such pod-bound tokens live
/// [`EXTENDED_EXPIRATION_SECONDS`] and carry `warnafter` at this age instead.
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// How long extended tokens live (one year), unless the max expiration is shorter.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, and on deletion timestamps of bound
/// objects (go-jose's `DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;

/// Failures of loading the token keys and of configuring token issuance.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: keys::KeyError,
    },
    /// A setting is invalid; `field` is the flag.
    #[error("{field}: {message}")]
    Config {
        /// The flag (`--service-account-issuer`).
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What token issuance and verification need, from kube-apiserver's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// `--service-account-issuer` (repeatable): the first signs, all are accepted.
    pub issuers: Vec<String>,
    /// `--api-audiences`; empty means the issuers.
    pub api_audiences: Vec<String>,
    /// `--service-account-signing-key-file`.
    pub signing_key_file: PathBuf,
    /// `--service-account-key-file` (repeatable); the signing key's public half is always
    /// accepted too.
    pub key_files: Vec<PathBuf>,
    /// `--service-account-max-token-expiration`; `None` for no limit.
    pub max_expiration: Option<Duration>,
    /// `--service-account-extend-token-expiration`.
    pub extend_expiration: bool,
}

impl TokenOptions {
    /// Checks the flags alone (nothing is read).
    pub fn validate(&self) -> Result<()> {
        let config = |field, message: String| Err(Error::Config { field, message });
        if self.issuers.is_empty() {
            return config("--service-account-issuer", "must not be empty".into());
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if issuer.trim().is_empty() {
                return config("--service-account-issuer", "must not be empty".into());
            }
            if self.issuers[..i].contains(issuer) {
                return config(
                    "--service-account-issuer",
                    format!("{issuer:?} is specified more than once"),
                );
            }
            // As upstream: a value with a colon must be a URL (https:// for OIDC discovery).
            if issuer.contains(':') && !is_url(issuer) {
                return config(
                    "--service-account-issuer",
                    format!("{issuer:?} contained a ':' but was not a valid URL"),
                );
            }
        }
        if let Some(max) = self.max_expiration {
            let secs = max.as_secs() as i64;
            if !(WARN_ONLY_EXPIRATION_SECONDS..=MAX_EXPIRATION_SECONDS).contains(&secs) {
                return config(
                    "--service-account-max-token-expiration",
                    "must be between 1 hour and 2^32 seconds".into(),
                );
            }
        }
        Ok(())
    }
}

fn is_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !rest.contains(char::is_whitespace)
}

/// Loaded keys and settings: signs TokenRequests and verifies bearer tokens.
pub struct ServiceAccountTokens {
    issuers: Vec<String>,
    api_audiences: Vec<String>,
    signing: SigningKey,
    verifying: Vec<VerifyingKey>,
    max_expiration_seconds: Option<i64>,
    extend_expiration: bool,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("issuers", &self.issuers)
            .field("api_audiences", &self.api_audiences)
            .field("signing", &self.signing)
            .field("verifying", &self.verifying)
            .field("max_expiration_seconds", &self.max_expiration_seconds)
            .field("extend_expiration", &self.extend_expiration)
            .finish()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ServiceAccountTokens {
    /// Validates `opts` and reads the key files.
    pub fn load(opts: &TokenOptions) -> Result<Self> {
        opts.validate()?;
        let key_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Key { path, source }
        };
        let signing = SigningKey::from_pem(&read(&opts.signing_key_file)?)
            .map_err(key_err(&opts.signing_key_file))?;
        let mut verifying = Vec::new();
        for path in &opts.key_files {
            verifying.extend(keys::verifying_keys_from_pem(&read(path)?).map_err(key_err(path))?);
        }
        Ok(Self::new(opts, signing, verifying))
    }

    /// From keys already in memory (`opts`' files are not read).
    pub fn new(opts: &TokenOptions, signing: SigningKey, mut verifying: Vec<VerifyingKey>) -> Self {
        if !verifying.contains(signing.verifying_key()) {
            verifying.push(signing.verifying_key().clone());
        }
        let api_audiences = if opts.api_audiences.is_empty() {
            opts.issuers.clone()
        } else {
            opts.api_audiences.clone()
        };
        ServiceAccountTokens {
            issuers: opts.issuers.clone(),
            api_audiences,
            signing,
            verifying,
            max_expiration_seconds: opts.max_expiration.map(|d| d.as_secs() as i64),
            extend_expiration: opts.extend_expiration,
        }
    }

    /// The issuer written into new tokens (the first `--service-account-issuer`).
    pub fn issuer(&self) -> &str {
        self.issuers
            .first()
            .map(String::as_str)
            .unwrap_or(DEFAULT_ISSUER)
    }

    /// Every accepted issuer.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// The API server's audiences (`--api-audiences`, defaulting to the issuers).
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The public keys tokens are verified with.
    pub fn verifying_keys(&self) -> &[VerifyingKey] {
        &self.verifying
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, keys::KeyError> {
        self.signing.sign_jwt(&claims.to_json())
    }

    /// The lifetime a token is issued with and its `warnafter` age, for a request of
    /// `requested` seconds (already capped at the maximum) for `audiences`, bound to a pod or
    /// not. As upstream: only pod-bound 3607 s tokens for the API server's own audiences are
    /// extended, to a year or the maximum expiration if that is shorter.
    pub fn lifetime(
        &self,
        requested: i64,
        audiences: &[String],
        pod_bound: bool,
    ) -> (i64, Option<i64>) {
        let ours = audiences.iter().all(|a| self.api_audiences.contains(a));
        if self.extend_expiration && pod_bound && requested == WARN_ONLY_EXPIRATION_SECONDS && ours
        {
            let extended = self
                .max_expiration_seconds
                .map_or(EXTENDED_EXPIRATION_SECONDS, |m| {
                    m.min(EXTENDED_EXPIRATION_SECONDS)
                })
                .max(requested);
            (extended, Some(requested))
        } else {
            (requested, None)
        }
    }

    /// `--service-account-max-token-expiration` in seconds.
    pub fn max_expiration_seconds(&self) -> Option<i64> {
        self.max_expiration_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> TokenOptions {
        TokenOptions {
            issuers: vec![DEFAULT_ISSUER.into()],
            api_audiences: Vec::new(),
            signing_key_file: PathBuf::from("/nonexistent/sa.key"),
            key_files: Vec::new(),
            max_expiration: None,
            extend_expiration: true,
        }
    }

    #[test]
    fn options_validation_names_the_flag() {
        assert!(options().validate().is_ok());
        let mut o = options();
        o.issuers = vec!["https://a".into(), "https://a".into()];
        let err = o.validate().expect_err("duplicate");
        assert!(
            err.to_string().starts_with("--service-account-issuer:"),
            "{err}"
        );
        o.issuers = vec!["not a url:x".into()];
        assert!(o.validate().is_err());
        o.issuers = vec!["plain-issuer".into()];
        assert!(o.validate().is_ok());
        o.max_expiration = Some(Duration::from_secs(600));
        let err = o.validate().expect_err("too short");
        assert!(
            err.to_string()
                .starts_with("--service-account-max-token-expiration:"),
            "{err}"
        );
    }

    #[test]
    fn lifetimes_extend_only_pod_bound_kube_api_access_tokens() {
        let key = SigningKey::from_pem(keys::tests::EC_SEC1).expect("key");
        let t = ServiceAccountTokens::new(&options(), key, Vec::new());
        let ours = vec![DEFAULT_ISSUER.to_string()];
        assert_eq!(t.api_audiences(), ours.as_slice());
        assert_eq!(
            t.lifetime(3607, &ours, true),
            (EXTENDED_EXPIRATION_SECONDS, Some(3607))
        );
        assert_eq!(t.lifetime(3607, &ours, false), (3607, None));
        assert_eq!(t.lifetime(3600, &ours, true), (3600, None));
        assert_eq!(t.lifetime(3607, &["vault".to_string()], true), (3607, None));
        let mut o = options();
        o.max_expiration = Some(Duration::from_secs(7200));
        let key = SigningKey::from_pem(keys::tests::EC_SEC1).expect("key");
        let t = ServiceAccountTokens::new(&o, key, Vec::new());
        assert_eq!(t.lifetime(3607, &ours, true), (7200, Some(3607)));
        // The signing key's public half verifies even when no key file lists it.
        assert_eq!(t.verifying_keys().len(), 1);
    }
}
