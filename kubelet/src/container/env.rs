//! A container's environment: service links, `envFrom`, `env` with `$(VAR)` expansion and
//! `valueFrom`, as upstream's kubelet_pods.go (makeEnvironmentVariables, getServiceEnvVarMap),
//! pkg/kubelet/envvars (FromServices) and third_party/forked/golang/expansion.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::error::ConfigError;
use crate::fieldpath::{self, NodeAllocatable};

/// Looks up the objects `env`/`envFrom` and service links refer to.
#[async_trait]
pub trait EnvSource: Send + Sync {
    /// The ConfigMap `ns/name`, or None when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError>;
    /// The Secret `ns/name`, or None when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError>;
    /// Services of the namespace plus the master services (default/kubernetes) for service links.
    async fn services(&self, ns: &str) -> Result<Vec<Service>, ConfigError>;
}

/// [`EnvSource`] reading straight from the API server.
#[derive(Clone)]
pub struct KubeEnvSource {
    client: Client,
}

impl KubeEnvSource {
    /// A source using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn api_err(kind: &'static str, ns: &str, name: &str) -> impl FnOnce(kube::Error) -> ConfigError {
    let (namespace, name) = (ns.to_string(), name.to_string());
    move |source| ConfigError::Api {
        kind,
        namespace,
        name,
        source: Box::new(source),
    }
}

#[async_trait]
impl EnvSource for KubeEnvSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(api_err("configmap", ns, name))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(api_err("secret", ns, name))
    }

    async fn services(&self, ns: &str) -> Result<Vec<Service>, ConfigError> {
        let mut out = Api::<Service>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(api_err("services", ns, ""))?
            .items;
        if ns != MASTER_NAMESPACE {
            let master = Api::<Service>::namespaced(self.client.clone(), MASTER_NAMESPACE)
                .get_opt(MASTER_SERVICE)
                .await
                .map_err(api_err("services", MASTER_NAMESPACE, MASTER_SERVICE))?;
            out.extend(master);
        }
        Ok(out)
    }
}

/// Namespace of the master service whose variables every pod gets.
const MASTER_NAMESPACE: &str = "default";
/// The master service whose variables every pod gets, even with enableServiceLinks: false.
const MASTER_SERVICE: &str = "kubernetes";

/// What the environment of a pod's container is computed from besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// What a container without limits gets for `resourceFieldRef: limits.*`.
    pub node: &'a NodeAllocatable,
    /// The sandbox's IPs, primary first (`status.podIP`, `status.podIPs`).
    pub pod_ips: &'a [String],
    /// The node's IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The node's name (`spec.nodeName` when the pod lacks it).
    pub node_name: &'a str,
}

/// The environment of `container` and the warnings upstream reports as
/// `InvalidEnvironmentVariableNames` events; see [`make_environment`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// Variables in order: service links not overridden, then `envFrom` and `env`.
    pub vars: Vec<(String, String)>,
    /// Messages about `envFrom` keys that were skipped because they are not valid names.
    pub warnings: Vec<String>,
}

/// Ordered env for a container: service-link variables (of the pod's namespace when
/// `enableServiceLinks`, default true; always those of default/kubernetes), then `envFrom`
/// (prefixed, invalid keys skipped, optional sources may be missing), then `env` with `$(VAR)`
/// expanded against the variables before it and `valueFrom` resolved. A later definition of a
/// name replaces the earlier value in place. Errors are the messages upstream puts in the pod
/// status with reason `CreateContainerConfigError`.
pub async fn make_environment(
    ctx: &EnvContext<'_>,
    container: &Container,
    src: &dyn EnvSource,
) -> Result<Vec<(String, String)>, ConfigError> {
    make_environment_with_warnings(ctx, container, src)
        .await
        .map(|e| e.vars)
}

/// [`make_environment`], also returning the warnings the caller should post as events.
pub async fn make_environment_with_warnings(
    ctx: &EnvContext<'_>,
    container: &Container,
    src: &dyn EnvSource,
) -> Result<Environment, ConfigError> {
    let pod = ctx.pod;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let links = spec.and_then(|s| s.enable_service_links).unwrap_or(true);
    let services = src.services(ns).await?;
    let service_env = service_env(&services, ns, links);

    let mut config_maps: HashMap<String, ConfigMap> = HashMap::new();
    let mut secrets: HashMap<String, Secret> = HashMap::new();
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, data): (&str, &str, BTreeMap<String, String>) = if let Some(r) =
            from.config_map_ref.as_ref()
        {
            let Some(cm) = get_config_map(src, &mut config_maps, ns, &r.name, r.optional).await?
            else {
                continue;
            };
            ("configMap", &r.name, cm.data.clone().unwrap_or_default())
        } else if let Some(r) = from.secret_ref.as_ref() {
            let Some(s) = get_secret(src, &mut secrets, ns, &r.name, r.optional).await? else {
                continue;
            };
            let data = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            ("secret", &r.name, data)
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if !is_env_var_name(&k) {
                invalid.push(k);
                continue;
            }
            env.set(k, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, &|name| {
                env.get(name)
                    .or_else(|| service_env.get(name))
                    .map(str::to_string)
            })
        } else if let Some(from) = var.value_from.as_ref() {
            if let Some(f) = from.field_ref.as_ref() {
                field_value(ctx, &f.field_path)?
            } else if let Some(r) = from.resource_field_ref.as_ref() {
                let target = match r.container_name.as_deref() {
                    Some(n) if !n.is_empty() && n != container.name => find_container(pod, n)
                        .ok_or_else(|| {
                            ConfigError::FieldRef(format!("container {n:?} not found in pod"))
                        })?,
                    _ => container,
                };
                fieldpath::resource_field(target, &r.resource, r.divisor.as_ref(), ctx.node)
                    .map_err(ConfigError::FieldRef)?
            } else if let Some(r) = from.config_map_key_ref.as_ref() {
                let Some(cm) =
                    get_config_map(src, &mut config_maps, ns, &r.name, r.optional).await?
                else {
                    continue;
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.to_string(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = from.secret_key_ref.as_ref() {
                let Some(s) = get_secret(src, &mut secrets, ns, &r.name, r.optional).await? else {
                    continue;
                };
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.to_string(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }

    // Service variables the pod defines itself are dropped, as upstream does.
    let mut vars: Vec<(String, String)> = service_env
        .iter()
        .filter(|(k, _)| env.get(k).is_none())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.extend(env.vars);
    Ok(Environment { vars, warnings })
}

async fn get_config_map<'m>(
    src: &dyn EnvSource,
    cache: &'m mut HashMap<String, ConfigMap>,
    ns: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<&'m ConfigMap>, ConfigError> {
    if !cache.contains_key(name) {
        match src.config_map(ns, name).await? {
            Some(cm) => {
                cache.insert(name.to_string(), cm);
            }
            None if optional == Some(true) => return Ok(None),
            None => {
                return Err(ConfigError::ConfigMapNotFound {
                    name: name.to_string(),
                })
            }
        }
    }
    Ok(cache.get(name))
}

async fn get_secret<'m>(
    src: &dyn EnvSource,
    cache: &'m mut HashMap<String, Secret>,
    ns: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<&'m Secret>, ConfigError> {
    if !cache.contains_key(name) {
        match src.secret(ns, name).await? {
            Some(s) => {
                cache.insert(name.to_string(), s);
            }
            None if optional == Some(true) => return Ok(None),
            None => {
                return Err(ConfigError::SecretNotFound {
                    name: name.to_string(),
                })
            }
        }
    }
    Ok(cache.get(name))
}

fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// A `fieldRef` value; IPs come from the sandbox and node rather than the possibly stale pod
/// status, as upstream's podFieldSelectorRuntimeValue.
fn field_value(ctx: &EnvContext<'_>, path: &str) -> Result<String, ConfigError> {
    let first = |ips: &[String]| ips.first().cloned().unwrap_or_default();
    Ok(match path {
        "spec.nodeName" => ctx
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.node_name.to_string()),
        "status.podIP" => first(ctx.pod_ips),
        "status.podIPs" => ctx.pod_ips.join(","),
        "status.hostIP" => first(ctx.host_ips),
        "status.hostIPs" => ctx.host_ips.join(","),
        _ => fieldpath::pod_field(ctx.pod, path).map_err(ConfigError::FieldRef)?,
    })
}

/// Env names as upstream accepts them in 1.33 (RelaxedEnvironmentVariableValidation): printable
/// ASCII other than `=`, not empty.
pub fn is_env_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (32..=126).contains(&b) && b != b'=')
}

/// Name → value, keeping the position of each name's first definition.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.vars[i].1.as_str())
    }
}

/// Docker-link style variables for the services a pod sees, in order of service name:
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]`, `<NAME>_PORT`,
/// `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
///
/// default/kubernetes is always included; other services only from `ns` and only with
/// `links`; a service of `ns` shadows a master service of the same name. Headless services
/// and those without a ClusterIP give nothing.
pub fn service_env(services: &[Service], ns: &str, links: bool) -> ServiceEnv {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    let mut masters: BTreeMap<&str, &Service> = BTreeMap::new();
    for s in services {
        let ip = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        if matches!(ip, None | Some("") | Some("None")) {
            continue;
        }
        let name = s.metadata.name.as_deref().unwrap_or("");
        let sns = s.metadata.namespace.as_deref().unwrap_or("");
        if sns == MASTER_NAMESPACE && name == MASTER_SERVICE {
            masters.insert(name, s);
        } else if sns == ns && links {
            chosen.insert(name, s);
        }
    }
    for (name, s) in masters {
        chosen.entry(name).or_insert(s);
    }
    let mut out = ServiceEnv::default();
    for s in chosen.values() {
        from_service(s, &mut out);
    }
    out
}

/// Service-link variables in a stable order, with lookup by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl ServiceEnv {
    fn push(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }

    /// The value of `name`, if a service defines it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    /// All variables in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn from_service(s: &Service, out: &mut ServiceEnv) {
    let Some(spec) = s.spec.as_ref() else { return };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or(""));
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    out.push(format!("{prefix}_SERVICE_HOST"), ip.clone());
    let Some(first) = ports.first() else { return };
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push(port_var.clone(), first.port.to_string());
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push(format!("{port_var}_{}", env_name(n)), p.port.to_string());
        }
    }
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{host}:{}", p.port);
        if i == 0 {
            out.push(format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push(pp.clone(), url);
        out.push(format!("{pp}_PROTO"), lower);
        out.push(format!("{pp}_PORT"), p.port.to_string());
        out.push(format!("{pp}_ADDR"), ip.clone());
    }
}

/// Expands `$(VAR)` references in `input` using `vars`: a defined variable is replaced, an
/// undefined one is kept verbatim, `$$` is an escaped `$`, and an unterminated `$(` or a `$`
/// before any other character stays as written (upstream's expansion.Expand).
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` is literal.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(end) => {
                    let name = &after[1..1 + end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeSource {
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
        services: Vec<Service>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl EnvSource for FakeSource {
        async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("cm {ns}/{name}"));
            Ok(self
                .config_maps
                .iter()
                .find(|c| {
                    c.metadata.name.as_deref() == Some(name)
                        && c.metadata.namespace.as_deref() == Some(ns)
                })
                .cloned())
        }
        async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
            Ok(self
                .secrets
                .iter()
                .find(|c| {
                    c.metadata.name.as_deref() == Some(name)
                        && c.metadata.namespace.as_deref() == Some(ns)
                })
                .cloned())
        }
        async fn services(&self, _ns: &str) -> Result<Vec<Service>, ConfigError> {
            Ok(self.services.clone())
        }
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .expect("service")
    }

    fn source() -> FakeSource {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "cfg", "namespace": "ns"},
            "data": {"B": "bee", "A": "ay", "bad=key": "x", "1": "one"}
        }))
        .expect("cm");
        let mut secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("sec".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        secret.data = Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into());
        FakeSource {
            config_maps: vec![cm],
            secrets: vec![secret],
            services: vec![
                svc(
                    "default",
                    "kubernetes",
                    "10.96.0.1",
                    json!([{"name": "https", "port": 443}]),
                ),
                svc(
                    "ns",
                    "foo-bar",
                    "10.96.0.10",
                    json!([
                        {"port": 80},
                        {"name": "dns-udp", "port": 53, "protocol": "UDP"}
                    ]),
                ),
                svc("ns", "headless", "None", json!([{"port": 80}])),
                svc("other", "elsewhere", "10.96.0.11", json!([{"port": 80}])),
            ],
            ..Default::default()
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": spec
        }))
        .expect("pod")
    }

    async fn env_of(p: &Pod, src: &FakeSource) -> Result<Vec<(String, String)>, ConfigError> {
        let node = NodeAllocatable {
            cpu_milli: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 0,
        };
        let pod_ips = vec!["10.244.0.5".to_string(), "fd00::5".to_string()];
        let host_ips = vec!["192.0.2.10".to_string()];
        let ctx = EnvContext {
            pod: p,
            node: &node,
            pod_ips: &pod_ips,
            host_ips: &host_ips,
            node_name: "node-1",
        };
        let c = &p.spec.as_ref().expect("spec").containers[0];
        make_environment(&ctx, c, src).await
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn expansion_cases() {
        let vars: HashMap<&str, &str> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
            ("BLOCK", "$$(VAR_A)"),
        ]
        .into();
        let f = |n: &str| vars.get(n).map(|v| v.to_string());
        let cases = [
            ("whole string", "$(VAR_A)", "A"),
            ("repeat", "$(VAR_A)-$(VAR_A)", "A-A"),
            ("multiple", "$(VAR_A)-$(VAR_B)", "A-B"),
            ("adjacent", "$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("prefix and suffix", "___$(VAR_C)___", "___C___"),
            (
                "value is not re-expanded",
                "foo$(VAR_REF)bar",
                "foo$(VAR_A)bar",
            ),
            ("empty value", "foo$(VAR_EMPTY)bar", "foobar"),
            ("unknown kept", "$(VAR_DNE)", "$(VAR_DNE)"),
            ("unterminated", "$(VAR_A", "$(VAR_A"),
            ("unterminated after ref", "$(VAR_A)$(VAR_B", "A$(VAR_B"),
            ("escaped", "$$(VAR_B)", "$(VAR_B)"),
            ("escaped in middle", "foo$$(VAR_B)bar", "foo$(VAR_B)bar"),
            ("many escapes", "$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("escape then ref", "$$$(VAR_A)", "$A"),
            ("odd escapes then ref", "$$$$$$$(VAR_A)", "$$$A"),
            ("lone $ before other", "$VAR_A", "$VAR_A"),
            ("lone $ mid", "foo$bar", "foo$bar"),
            ("trailing $", "foo$", "foo$"),
            ("only $", "$", "$"),
            ("only $(", "$(", "$("),
            ("empty name", "$()", "$()"),
            ("nested", "$(VAR_$(VAR_A))", "$(VAR_$(VAR_A))"),
            ("nested closed", "$(VAR_$(VAR_A)", "$(VAR_$(VAR_A)"),
            ("ref to escaping value", "$(BLOCK)", "$$(VAR_A)"),
            ("paren text", "f(x)$(VAR_B)", "f(x)B"),
            ("unicode after $", "$é$(VAR_A)", "$éA"),
            ("no refs", "plain text", "plain text"),
            ("empty", "", ""),
        ];
        for (name, input, want) in cases {
            assert_eq!(expand(input, &f), want, "{name}: {input:?}");
        }
    }

    #[tokio::test]
    async fn order_override_and_expansion() {
        let p = pod(json!({
            "nodeName": "node-x",
            "containers": [{"name": "c",
                "resources": {"limits": {"memory": "64Mi"}},
                "envFrom": [
                    {"configMapRef": {"name": "cfg"}},
                    {"prefix": "S_", "secretRef": {"name": "sec"}}
                ],
                "env": [
                    {"name": "A", "value": "override-$(B)"},
                    {"name": "URL", "value": "http://$(FOO_BAR_SERVICE_HOST):$(FOO_BAR_SERVICE_PORT)/$(MISSING)"},
                    {"name": "FOO_BAR_SERVICE_HOST", "value": "mine"},
                    {"name": "SELF", "value": "$(SELF)x"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                    {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
                    {"name": "EMPTY"}
                ]}]
        }));
        let src = source();
        let env = env_of(&p, &src).await.expect("env");
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        // Service links first (FOO_BAR_SERVICE_HOST is overridden by env, so it moves there),
        // then envFrom keys in sorted order, then env.
        let first_env = names.iter().position(|n| *n == "1").expect("envFrom key 1");
        assert!(names[..first_env]
            .iter()
            .all(|n| n.starts_with("FOO_BAR_") || n.starts_with("KUBERNETES_")));
        assert_eq!(
            &names[first_env..first_env + 4],
            &["1", "A", "B", "S_password"],
            "envFrom order; 'bad=key' skipped"
        );
        assert!(!names.contains(&"bad=key"));
        assert_eq!(get(&env, "A"), Some("override-bee"));
        assert_eq!(get(&env, "URL"), Some("http://10.96.0.10:80/$(MISSING)"));
        assert_eq!(get(&env, "FOO_BAR_SERVICE_HOST"), Some("mine"));
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "FOO_BAR_SERVICE_HOST")
                .count(),
            1
        );
        assert_eq!(get(&env, "SELF"), Some("$(SELF)x"));
        assert_eq!(get(&env, "NODE"), Some("node-x"));
        assert_eq!(get(&env, "POD_IP"), Some("10.244.0.5"));
        assert_eq!(get(&env, "POD_IPS"), Some("10.244.0.5,fd00::5"));
        assert_eq!(get(&env, "HOST_IP"), Some("192.0.2.10"));
        assert_eq!(get(&env, "APP"), Some("web"));
        assert_eq!(get(&env, "MEM"), Some("64"));
        assert_eq!(get(&env, "CPU"), Some("4"));
        assert_eq!(get(&env, "PW"), Some("hunter2"));
        assert_eq!(get(&env, "S_password"), Some("hunter2"));
        assert_eq!(get(&env, "KEY"), Some("bee"));
        assert_eq!(get(&env, "EMPTY"), Some(""));
        assert_eq!(names.last(), Some(&"EMPTY"));
        // The ConfigMap is fetched once for envFrom and configMapKeyRef.
        assert_eq!(src.calls.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn service_link_variables() {
        let p = pod(json!({"containers": [{"name": "c"}]}));
        let env = env_of(&p, &source()).await.expect("env");
        let want = [
            ("FOO_BAR_SERVICE_HOST", "10.96.0.10"),
            ("FOO_BAR_SERVICE_PORT", "80"),
            ("FOO_BAR_SERVICE_PORT_DNS_UDP", "53"),
            ("FOO_BAR_PORT", "tcp://10.96.0.10:80"),
            ("FOO_BAR_PORT_80_TCP", "tcp://10.96.0.10:80"),
            ("FOO_BAR_PORT_80_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_80_TCP_PORT", "80"),
            ("FOO_BAR_PORT_80_TCP_ADDR", "10.96.0.10"),
            ("FOO_BAR_PORT_53_UDP", "udp://10.96.0.10:53"),
            ("FOO_BAR_PORT_53_UDP_PROTO", "udp"),
            ("FOO_BAR_PORT_53_UDP_PORT", "53"),
            ("FOO_BAR_PORT_53_UDP_ADDR", "10.96.0.10"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);

        // enableServiceLinks: false keeps only the master service.
        let p = pod(json!({"enableServiceLinks": false, "containers": [{"name": "c"}]}));
        let env = env_of(&p, &source()).await.expect("env");
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert_eq!(env.len(), 8);

        // IPv6 ClusterIPs are bracketed in URLs only.
        let s = service_env(
            &[svc("ns", "v6", "fd00::1", json!([{"port": 80}]))],
            "ns",
            true,
        );
        assert_eq!(s.get("V6_PORT"), Some("tcp://[fd00::1]:80"));
        assert_eq!(s.get("V6_PORT_80_TCP_ADDR"), Some("fd00::1"));
    }

    #[tokio::test]
    async fn errors_and_optional() {
        let src = source();
        let cases = [
            (
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]),
                json!([]),
                Some("configmap \"nope\" not found"),
            ),
            (
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]),
                json!([]),
                Some("couldn't find key k in ConfigMap ns/cfg"),
            ),
            (
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]),
                json!([]),
                Some("secret \"nope\" not found"),
            ),
            (
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}]),
                json!([]),
                Some("couldn't find key k in Secret ns/sec"),
            ),
            (
                json!([]),
                json!([{"configMapRef": {"name": "nope"}}]),
                Some("configmap \"nope\" not found"),
            ),
            (
                json!([]),
                json!([{"secretRef": {"name": "nope"}}]),
                Some("secret \"nope\" not found"),
            ),
            (
                json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]),
                json!([]),
                Some("unsupported fieldPath \"spec.bogus\""),
            ),
            (
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                    {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k", "optional": true}}},
                    {"name": "Z", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                    {"name": "W", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k", "optional": true}}}]),
                json!([{"configMapRef": {"name": "nope", "optional": true}}, {"secretRef": {"name": "nope", "optional": true}}]),
                None,
            ),
        ];
        for (env, env_from, want) in cases {
            let p = pod(json!({"enableServiceLinks": false,
                "containers": [{"name": "c", "env": env, "envFrom": env_from}]}));
            let got = env_of(&p, &src).await;
            match want {
                Some(msg) => assert_eq!(got.map_err(|e| e.to_string()).err().as_deref(), Some(msg)),
                None => {
                    let got = got.expect("optional refs are skipped");
                    assert!(
                        got.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
                        "{got:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn invalid_envfrom_keys_are_reported() {
        let p = pod(
            json!({"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}),
        );
        let node = NodeAllocatable::default();
        let ctx = EnvContext {
            pod: &p,
            node: &node,
            pod_ips: &[],
            host_ips: &[],
            node_name: "n",
        };
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let e = make_environment_with_warnings(&ctx, c, &source())
            .await
            .expect("env");
        assert_eq!(
            e.warnings,
            vec!["Keys [bad=key] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names."]
        );
        assert!(
            is_env_var_name("1")
                && is_env_var_name("a.b-c")
                && !is_env_var_name("")
                && !is_env_var_name("a=b")
                && !is_env_var_name("tab\t")
        );
    }
}
