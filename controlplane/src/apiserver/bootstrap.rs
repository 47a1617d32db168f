//! Objects every cluster has from the start: the system namespaces and the `kubernetes`
//! Service in `default` (with Endpoints and an EndpointSlice pointing at this server).

use serde_json::{json, Value};

use crate::apiserver::handlers::ApiState;
use crate::apiserver::resources;
use crate::registry::allocator;
use crate::registry::generic::WriteOptions;

/// Namespaces kube-apiserver creates on start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn opts() -> WriteOptions {
    WriteOptions {
        field_manager: "kube-apiserver".to_string(),
        ..Default::default()
    }
}

/// Creates what is missing; existing objects are left alone.
pub async fn run(st: &ApiState) -> crate::Result<()> {
    let find = |g: &str, p: &str| {
        resources::find(g, "v1", p)
            .ok_or_else(|| crate::Error::Bootstrap(format!("resource {p} missing")))
    };
    let ns_res = find("", "namespaces")?;
    for ns in SYSTEM_NAMESPACES {
        ensure(
            st,
            ns_res,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let Some((ip, port)) = st.opts.kubernetes_endpoint else {
        return Ok(());
    };
    let cluster_ip = allocator::first_ip(&st.opts.registry.service_cidr)
        .map_err(|e| crate::Error::Bootstrap(format!("service CIDR: {}", e.line())))?;
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None"},
    });
    ensure(st, find("", "services")?, Some("default"), svc).await?;
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let eps = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    ensure(st, find("", "endpoints")?, Some("default"), eps).await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    ensure(
        st,
        find("discovery.k8s.io", "endpointslices")?,
        Some("default"),
        slice,
    )
    .await
}

async fn ensure(
    st: &ApiState,
    res: &'static resources::ResourceInfo,
    ns: Option<&str>,
    obj: Value,
) -> crate::Result<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if st.registry.get(res, ns, &name).await.is_ok() {
        return Ok(());
    }
    let (obj, _) = st
        .registry
        .decode_input(res, obj, Default::default())
        .map_err(|e| crate::Error::Bootstrap(e.to_string()))?;
    match st.registry.create(res, ns, obj, &opts()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(crate::Error::Bootstrap(format!(
            "create {} {name}: {e}",
            res.plural
        ))),
    }
}
