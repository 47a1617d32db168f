//! `/healthz` and `/metrics` servers, as upstream's `ProxierHealthServer`
//! (kubernetes/kubernetes pkg/proxy/healthcheck/proxier_health.go) and metrics handler.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use jiff::Timestamp;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::service_change_tracker::lock;

/// The proxy's health: when rules were last programmed, and whether the node may serve.
#[derive(Debug)]
pub struct ProxyHealth {
    last_updated: Mutex<Option<SystemTime>>,
    node_eligible: AtomicBool,
    timeout: Duration,
}

/// The `/healthz` body, upstream's field names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    /// Last successful sync (RFC 3339), or empty before the first.
    pub last_updated: String,
    /// Now (RFC 3339).
    pub current_time: String,
    /// Whether the Node is not being deleted.
    pub node_eligible: bool,
}

impl ProxyHealth {
    /// Health that turns bad when no sync succeeded for `timeout` (upstream: 2 × syncPeriod).
    pub fn new(timeout: Duration) -> Self {
        Self {
            last_updated: Mutex::new(None),
            node_eligible: AtomicBool::new(true),
            timeout,
        }
    }

    /// Records a successful sync at `at`.
    pub fn updated(&self, at: SystemTime) {
        *lock(&self.last_updated) = Some(at);
    }

    /// Records whether our Node is eligible (false while it is being deleted).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.node_eligible.store(eligible, Ordering::Relaxed);
    }

    /// The status code and body `/healthz` answers at `now`. Pure apart from reading state.
    pub fn check(&self, now: SystemTime) -> (bool, HealthBody) {
        let last = *lock(&self.last_updated);
        let eligible = self.node_eligible.load(Ordering::Relaxed);
        let fresh = last.is_some_and(|l| now.duration_since(l).unwrap_or_default() <= self.timeout);
        let ts = |t: SystemTime| {
            Timestamp::try_from(t)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        (
            fresh && eligible,
            HealthBody {
                last_updated: last.map(ts).unwrap_or_default(),
                current_time: ts(now),
                node_eligible: eligible,
            },
        )
    }
}

/// Binds `addr` now (so a bad address fails startup) and serves `router` until `shutdown`.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// The `/healthz` (and `/livez`) router.
pub fn healthz_router(health: Arc<ProxyHealth>) -> Router {
    let handler = move || {
        let health = health.clone();
        async move {
            let (ok, body) = health.check(SystemTime::now());
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, axum::Json(body))
        }
    };
    Router::new()
        .route("/healthz", get(handler.clone()))
        .route("/livez", get(handler))
}

/// The `/metrics` router (and a `/healthz` answering "ok", as upstream's metrics server).
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_after_a_recent_sync_on_an_eligible_node() {
        let h = ProxyHealth::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (ok, body) = h.check(t0);
        assert!(!ok);
        assert_eq!(body.last_updated, "");
        h.updated(t0);
        let (ok, body) = h.check(t0 + Duration::from_secs(59));
        assert!(ok);
        assert_eq!(body.last_updated, "2023-11-14T22:13:20Z");
        assert!(body.node_eligible);
        assert!(!h.check(t0 + Duration::from_secs(61)).0);
        h.set_node_eligible(false);
        assert!(!h.check(t0).0);
        let json = serde_json::to_value(h.check(t0).1).expect("json");
        assert!(json.get("lastUpdated").is_some() && json.get("currentTime").is_some());
        assert_eq!(json["nodeEligible"], false);
    }
}
