//! Where volume contents come from: the API objects configMap, secret and projected volumes
//! read, and TokenRequests for service account tokens.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};

use super::error::VolumeError;

/// Reads what volumes need from the API. Implemented for `kube::Client` by [`KubeVolumeSource`].
#[async_trait]
pub trait VolumeSource: Send + Sync {
    /// The ConfigMap `namespace/name`, or `None` when it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, VolumeError>;

    /// The Secret `namespace/name`, or `None` when it does not exist.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, VolumeError>;

    /// TokenRequest (POST serviceaccounts/<sa>/token) bound to the pod; returns the token and its expiry.
    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: Vec<String>,
        expiration_seconds: i64,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<(String, jiff::Timestamp), VolumeError>;
}

/// [`VolumeSource`] over a kube-rs client: plain GETs and TokenRequests, any API server.
#[derive(Clone)]
pub struct KubeVolumeSource {
    client: kube::Client,
}

impl KubeVolumeSource {
    /// Reads through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl VolumeSource for KubeVolumeSource {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, VolumeError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| VolumeError::Api {
                op: "get configmap",
                object: format!("{namespace}/{name}"),
                source,
            })
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, VolumeError> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| VolumeError::Api {
                op: "get secret",
                object: format!("{namespace}/{name}"),
                source,
            })
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: Vec<String>,
        expiration_seconds: i64,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<(String, jiff::Timestamp), VolumeError> {
        let req = token_request(audiences, expiration_seconds, pod_name, pod_uid);
        let object = format!("{namespace}/{service_account}");
        let resp = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(service_account, &PostParams::default(), &req)
            .await
            .map_err(|source| VolumeError::Api {
                op: "create token for serviceaccount",
                object: object.clone(),
                source,
            })?;
        let status = resp.status.ok_or_else(|| {
            VolumeError::Invalid(format!(
                "TokenRequest for {object}: no status in the answer"
            ))
        })?;
        Ok((status.token, status.expiration_timestamp.0))
    }
}

/// The TokenRequest the kubelet sends: bound to the pod, as upstream's projected volume does.
pub(crate) fn token_request(
    audiences: Vec<String>,
    expiration_seconds: i64,
    pod_name: &str,
    pod_uid: &str,
) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name.to_string()),
                uid: Some(pod_uid.to_string()),
            }),
        },
        ..Default::default()
    }
}
