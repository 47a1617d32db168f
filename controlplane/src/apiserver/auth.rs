//! Authentication: who is calling, from a verified TLS client certificate or a bearer token.
//!
//! Mirrors kube-apiserver's authenticator chain (staging/src/k8s.io/apiserver/pkg/authentication):
//! x509 client certificates first (CN = user, O = groups), then bearer tokens tried against each
//! [`TokenAuthenticator`] in order (the static `--token-auth-file`, later service-account JWTs).
//! Every authenticated user also gets the group `system:authenticated`.
//!
//! Requests without credentials are anonymous: they may only read the health endpoints and
//! `/version` (upstream's `system:public-info-viewer` role); anything else is 401 with a
//! `Status` body. Credentials that are presented but invalid are 401 everywhere, as upstream.
//!
//! Authorization: every authenticated user may do everything (no RBAC yet); the
//! [`UserInfo`] extension is there for the handlers and for a future authorizer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::apiserver::status::ApiError;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The user name of requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// The authenticated caller, inserted as a request extension by [`authenticate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`kubernetes-admin`, `system:node:n1`, `system:serviceaccount:ns:sa`).
    pub username: String,
    /// A unique id; empty for certificate users.
    pub uid: String,
    /// The groups, including `system:authenticated` (or `system:unauthenticated`).
    pub groups: Vec<String>,
    /// Extra attributes (e.g. `authentication.kubernetes.io/pod-name` for service accounts).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user (`system:anonymous` in `system:unauthenticated`).
    pub fn anonymous() -> Self {
        UserInfo {
            username: ANONYMOUS_USER.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            extra: BTreeMap::new(),
        }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.username == ANONYMOUS_USER
    }

    fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// Failures of authentication setup and of token checks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file could not be read.
    #[error("read token file {path}: {source}")]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of the token file is malformed.
    #[error("token file {path} line {line}: {message}")]
    TokenFileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A token authenticator could not decide (e.g. its backing store failed).
    #[error("token authenticator {name}: {message}")]
    Token {
        /// The authenticator.
        name: &'static str,
        /// What failed.
        message: String,
    },
    /// The authenticator recognises the token and rejects it (expired, revoked, wrong
    /// audience); the message is what a TokenReview reports, as upstream words it.
    #[error("{message}")]
    InvalidToken {
        /// Why the token is not valid.
        message: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A token some authenticator accepted: its user and the audiences it is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    /// The user.
    pub user: UserInfo,
    /// The wanted audiences the token is valid for (TokenReview's `status.audiences`).
    pub audiences: Vec<String>,
}

/// Checks bearer tokens; the hook for service-account JWTs and other token kinds.
#[async_trait]
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// A short name for logs (`token-file`, `service-account`).
    fn name(&self) -> &'static str;

    /// `Ok(Some(user))` if the token is valid here, `Ok(None)` if this authenticator does
    /// not know it (the next one is tried), `Err` if it cannot tell or rejects it
    /// ([`Error::InvalidToken`]). `system:authenticated` is added by the caller.
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>>;

    /// As [`Self::authenticate_token`], for a caller that wants one of `wanted` audiences
    /// (a request: the API server's own; a TokenReview: its `spec.audiences`). The default is
    /// upstream's audience-agnostic wrapper (`WrapAudienceAgnosticToken`): the token is good
    /// only for the API server's audiences, so it is unknown when `wanted` names none of them.
    async fn authenticate_token_for(
        &self,
        token: &str,
        wanted: &[String],
        api_audiences: &[String],
    ) -> Result<Option<TokenUser>> {
        let audiences: Vec<String> = if api_audiences.is_empty() {
            wanted.to_vec()
        } else {
            intersect(api_audiences, wanted)
        };
        if !api_audiences.is_empty() && audiences.is_empty() {
            return Ok(None);
        }
        Ok(self
            .authenticate_token(token)
            .await?
            .map(|user| TokenUser { user, audiences }))
    }
}

/// The members of `a` also in `b`, in `a`'s order.
pub fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

/// Static tokens from a `--token-auth-file`: CSV lines `token,user,uid[,"group1,group2"]`
/// (upstream's staging/src/k8s.io/apiserver/plugin/pkg/authenticator/token/tokenfile).
#[derive(Clone, Default)]
pub struct TokenFile {
    tokens: HashMap<String, UserInfo>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TokenFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<TokenFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadTokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses token file text; `path` only names the source in errors. As upstream, fewer
    /// than three columns is an error, an empty token or a duplicate is skipped with a
    /// warning (the later duplicate wins), and blank lines are ignored.
    pub fn parse(text: &str, path: &Path) -> Result<TokenFile> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let record = parse_csv_record(line).map_err(|message| Error::TokenFileSyntax {
                path: path.to_path_buf(),
                line: line_no,
                message,
            })?;
            if record.len() < 3 {
                return Err(Error::TokenFileSyntax {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: format!(
                        "must have at least 3 columns (token, user name, user uid), found {}",
                        record.len()
                    ),
                });
            }
            if record[0].is_empty() {
                tracing::warn!(path = %path.display(), line = line_no, "empty token in token file, skipped");
                continue;
            }
            let groups = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let user = UserInfo {
                username: record[1].clone(),
                uid: record[2].clone(),
                groups,
                extra: BTreeMap::new(),
            };
            if tokens.insert(record[0].clone(), user).is_some() {
                tracing::warn!(path = %path.display(), line = line_no, "duplicate token in token file, the later line wins");
            }
        }
        Ok(TokenFile { tokens })
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[async_trait]
impl TokenAuthenticator for TokenFile {
    fn name(&self) -> &'static str {
        "token-file"
    }

    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>> {
        Ok(self.tokens.get(token).cloned())
    }
}

/// One CSV record (RFC 4180 quoting, `""` for a quote inside quotes; spaces before a field are
/// trimmed as Go's `csv.Reader.TrimLeadingSpace`).
fn parse_csv_record(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end_matches('\r').to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in a non-quoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// The TLS peer's certificate chain (leaf first), verified against the cluster CA during the
/// handshake; the server inserts it as a request extension on every request of the connection.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// The user named by a client certificate: CN is the user, each O a group (upstream's
/// `CommonNameUserConversion`). `None` if the certificate has no CN.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    Some(UserInfo {
        username,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// Whether anyone, even without credentials, may request `path`: the health endpoints (and
/// their sub-paths, e.g. `/livez/ping`) and `/version`.
pub fn is_public_path(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz", "/version"]
        .iter()
        .any(|p| {
            path == *p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// What [`Authenticator::authenticate`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid credentials for this user (with `system:authenticated`).
    Authenticated(UserInfo),
    /// No credentials at all.
    Anonymous,
    /// Credentials were presented and rejected.
    Rejected,
}

/// The authenticator chain: client certificate, then each token authenticator in order.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Vec<Arc<dyn TokenAuthenticator>>,
    api_audiences: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name()).collect();
        f.debug_struct("Authenticator")
            .field("tokens", &names)
            .field("api_audiences", &self.api_audiences)
            .finish()
    }
}

/// What the chain concluded about one bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReviewResult {
    /// The user (with `system:authenticated`) and audiences, if an authenticator accepted it.
    pub user: Option<TokenUser>,
    /// Why no authenticator accepted it: their messages (`[a, b]` when several, as upstream's
    /// aggregate errors print), or `invalid bearer token` when none knew the token.
    pub error: Option<String>,
}

impl Authenticator {
    /// A chain with client certificates only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token authenticator, tried after those added before it.
    pub fn with_token_authenticator(mut self, auth: Arc<dyn TokenAuthenticator>) -> Self {
        self.tokens.push(auth);
        self
    }

    /// Sets the API server's audiences (`--api-audiences`): what requests' tokens must be
    /// meant for, and what a TokenReview without `spec.audiences` asks for.
    pub fn with_api_audiences(mut self, audiences: Vec<String>) -> Self {
        self.api_audiences = audiences;
        self
    }

    /// The API server's audiences.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// Tries `token` against each token authenticator for the `wanted` audiences, as a request
    /// (wanting the API audiences) or a TokenReview does.
    pub async fn authenticate_bearer(&self, token: &str, wanted: &[String]) -> TokenReviewResult {
        let mut errors = Vec::new();
        for auth in &self.tokens {
            match auth
                .authenticate_token_for(token, wanted, &self.api_audiences)
                .await
            {
                Ok(Some(mut found)) => {
                    found.user = found.user.with_authenticated_group();
                    return TokenReviewResult {
                        user: Some(found),
                        error: None,
                    };
                }
                Ok(None) => {}
                // As upstream's union authenticator: an error does not stop the chain, and the
                // token fails only if no other authenticator accepts it.
                Err(Error::InvalidToken { message }) => {
                    tracing::debug!(authenticator = auth.name(), reason = %message, "token rejected");
                    errors.push(message);
                }
                Err(err) => {
                    tracing::warn!(authenticator = auth.name(), error = %err, "token authentication failed");
                    errors.push(err.to_string());
                }
            }
        }
        let error = match errors.as_slice() {
            [] => "invalid bearer token".to_string(),
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        TokenReviewResult {
            user: None,
            error: Some(error),
        }
    }

    /// Authenticates a request from its peer certificates and `Authorization` header.
    pub async fn authenticate(
        &self,
        peer: Option<&PeerCertificates>,
        authorization: Option<&http::HeaderValue>,
    ) -> Outcome {
        if let Some(leaf) = peer.and_then(|p| p.0.first()) {
            return match user_from_certificate(leaf) {
                Some(user) => Outcome::Authenticated(user.with_authenticated_group()),
                None => Outcome::Rejected,
            };
        }
        let Some(token) = authorization.and_then(bearer_token) else {
            return Outcome::Anonymous;
        };
        match self
            .authenticate_bearer(token, &self.api_audiences)
            .await
            .user
        {
            Some(found) => Outcome::Authenticated(found.user),
            None => Outcome::Rejected,
        }
    }
}

/// The token of `Authorization: Bearer <token>`; `None` for other schemes or an empty token.
fn bearer_token(value: &http::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Axum middleware: authenticates the request and inserts [`UserInfo`] as an extension, or
/// answers 401 with a `Status` body. Use with `axum::middleware::from_fn_with_state`.
pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut req: Request,
    next: Next,
) -> Response {
    let outcome = auth
        .authenticate(
            req.extensions().get::<PeerCertificates>(),
            req.headers().get(http::header::AUTHORIZATION),
        )
        .await;
    let user = match outcome {
        Outcome::Authenticated(user) => user,
        Outcome::Anonymous if is_public_path(req.uri().path()) => UserInfo::anonymous(),
        Outcome::Anonymous | Outcome::Rejected => {
            tracing::debug!(method = %req.method(), path = req.uri().path(), ?outcome, "unauthorized request");
            return ApiError::unauthorized().into_response();
        }
    };
    // As upstream: credentials are not passed on to the handlers.
    req.headers_mut().remove(http::header::AUTHORIZATION);
    tracing::trace!(user = %user.username, method = %req.method(), path = req.uri().path(), "authenticated");
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_parses_upstream_format() {
        let text = "t1,alice,uid-1,\"system:masters,dev\"\n\nt2, bob ,uid-2\nt3,carol,uid-3,ops\n";
        let file = TokenFile::parse(text, Path::new("tokens.csv")).expect("parse");
        assert_eq!(file.len(), 3);
        let alice = &file.tokens["t1"];
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.uid, "uid-1");
        assert_eq!(alice.groups, vec!["system:masters", "dev"]);
        assert_eq!(file.tokens["t2"].username, "bob ");
        assert!(file.tokens["t2"].groups.is_empty());
        assert_eq!(file.tokens["t3"].groups, vec!["ops"]);
    }

    #[test]
    fn token_file_rejects_short_and_broken_lines() {
        let err =
            TokenFile::parse("ok,u,1\nshort,user\n", Path::new("f.csv")).expect_err("two columns");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("found 2"), "{err}");
        let err = TokenFile::parse("a,b,c,\"x,y\n", Path::new("f.csv")).expect_err("quote");
        assert!(err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn public_paths() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/readyz/ping",
            "/version",
            "/version/",
        ] {
            assert!(is_public_path(p), "{p}");
        }
        for p in ["/", "/api", "/healthzfoo", "/versions", "/api/v1/version"] {
            assert!(!is_public_path(p), "{p}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let v = http::HeaderValue::from_static("bearer abc");
        assert_eq!(bearer_token(&v), Some("abc"));
        let v = http::HeaderValue::from_static("Basic abc");
        assert_eq!(bearer_token(&v), None);
        let v = http::HeaderValue::from_static("Bearer ");
        assert_eq!(bearer_token(&v), None);
    }

    #[tokio::test]
    async fn chain_adds_authenticated_group_and_rejects_unknown_tokens() {
        let file = TokenFile::parse("t1,alice,uid-1,dev\n", Path::new("f")).expect("parse");
        let auth = Authenticator::new().with_token_authenticator(Arc::new(file));
        let good = http::HeaderValue::from_static("Bearer t1");
        match auth.authenticate(None, Some(&good)).await {
            Outcome::Authenticated(u) => {
                assert_eq!(u.groups, vec!["dev", AUTHENTICATED_GROUP]);
            }
            other => panic!("want authenticated, got {other:?}"),
        }
        let bad = http::HeaderValue::from_static("Bearer nope");
        assert_eq!(auth.authenticate(None, Some(&bad)).await, Outcome::Rejected);
        assert_eq!(auth.authenticate(None, None).await, Outcome::Anonymous);
    }

    /// Rejects every token with a fixed reason, as an expired service-account token is.
    struct Rejecting(&'static str);

    #[async_trait]
    impl TokenAuthenticator for Rejecting {
        fn name(&self) -> &'static str {
            "rejecting"
        }

        async fn authenticate_token(&self, _token: &str) -> Result<Option<UserInfo>> {
            Err(Error::InvalidToken {
                message: self.0.to_string(),
            })
        }
    }

    #[tokio::test]
    async fn static_tokens_are_good_for_the_api_audiences_only() {
        let file = TokenFile::parse("t1,alice,uid-1\n", Path::new("f")).expect("parse");
        let api = vec!["https://kubernetes.default.svc".to_string()];
        let auth = Authenticator::new()
            .with_api_audiences(api.clone())
            .with_token_authenticator(Arc::new(file));
        let r = auth.authenticate_bearer("t1", &api).await;
        let found = r.user.expect("authenticated for the API audience");
        assert_eq!(found.user.username, "alice");
        assert_eq!(found.audiences, api);
        let r = auth.authenticate_bearer("t1", &["vault".to_string()]).await;
        assert_eq!(r.user, None);
        assert_eq!(r.error.as_deref(), Some("invalid bearer token"));
        let good = http::HeaderValue::from_static("Bearer t1");
        assert!(matches!(
            auth.authenticate(None, Some(&good)).await,
            Outcome::Authenticated(_)
        ));
    }

    #[tokio::test]
    async fn rejections_are_reported_like_upstream_aggregates() {
        let one = Authenticator::new().with_token_authenticator(Arc::new(Rejecting("expired")));
        let r = one.authenticate_bearer("x", &[]).await;
        assert_eq!(r.error.as_deref(), Some("expired"));
        let two = one.with_token_authenticator(Arc::new(Rejecting("revoked")));
        let r = two.authenticate_bearer("x", &[]).await;
        assert_eq!(r.error.as_deref(), Some("[expired, revoked]"));
        let header = http::HeaderValue::from_static("Bearer x");
        assert_eq!(
            two.authenticate(None, Some(&header)).await,
            Outcome::Rejected
        );
    }
}
