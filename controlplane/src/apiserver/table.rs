//! Server-side printing: objects rendered as a `meta.k8s.io/v1` `Table`, the format `kubectl get`
//! asks for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, …`).
//!
//! Columns follow upstream's printers (kubernetes pkg/printers/internalversion/printers.go). As
//! kube-apiserver does, every row carries every column: the wide ones have `priority: 1` and
//! kubectl shows them only with `-o wide`. Resources without a printer get NAME and AGE.
//!
//! Pure: the caller passes `now`, so ages are deterministic in tests.

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::resources::ResourceInfo;

/// What each row's `object` holds (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No `object` field.
    None,
    /// A `PartialObjectMetadata` (the default, what kubectl needs for `-A`, `--show-labels`, `-L`).
    #[default]
    Metadata,
    /// The whole object (kubectl asks for it with `--sort-by`).
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; absent or unknown gives the default.
    pub fn from_query(value: Option<&str>) -> Self {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// `Content-Type` of a `meta.k8s.io/v1` Table response.
pub const CONTENT_TYPE_TABLE_V1: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
/// `Content-Type` of a `meta.k8s.io/v1beta1` Table response.
pub const CONTENT_TYPE_TABLE_V1BETA1: &str = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";

/// The Table `apiVersion` an `Accept` header asks for (`meta.k8s.io/v1` or `meta.k8s.io/v1beta1`,
/// the first in the client's order), or `None` when it asks for no Table.
pub fn negotiate_table(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        if parts.next() != Some("application/json") {
            continue;
        }
        let (mut g, mut v, mut as_) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                Some(("as", x)) => as_ = x,
                _ => {}
            }
        }
        if as_ == "Table" && g == "meta.k8s.io" {
            match v {
                "v1" => return Some("meta.k8s.io/v1"),
                "v1beta1" => return Some("meta.k8s.io/v1beta1"),
                _ => {}
            }
        }
    }
    None
}

/// One column of a printer.
#[derive(Debug, Clone, Copy)]
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
}

const fn col(name: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty: "string",
        format: "",
        priority: 0,
        description,
    }
}

const fn wide(name: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty: "string",
        format: "",
        priority: 1,
        description,
    }
}

const fn int(name: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty: "integer",
        format: "",
        priority: 0,
        description,
    }
}

const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
const AGE: Col = col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

type RowFn = fn(&Value, Timestamp) -> Vec<Value>;

/// Columns and row function of a resource.
fn printer(r: &ResourceInfo) -> (&'static [Col], RowFn) {
    match (r.group, r.plural) {
        ("", "pods") => (POD_COLS, pod_row),
        ("", "nodes") => (NODE_COLS, node_row),
        ("", "services") => (SERVICE_COLS, service_row),
        ("apps", "deployments") => (DEPLOYMENT_COLS, deployment_row),
        ("apps", "replicasets") => (REPLICASET_COLS, replicaset_row),
        ("apps", "daemonsets") => (DAEMONSET_COLS, daemonset_row),
        ("", "namespaces") => (NAMESPACE_COLS, namespace_row),
        ("", "configmaps") => (CONFIGMAP_COLS, configmap_row),
        ("", "secrets") => (SECRET_COLS, secret_row),
        ("", "events") | ("events.k8s.io", "events") => (EVENT_COLS, event_row),
        ("coordination.k8s.io", "leases") => (LEASE_COLS, lease_row),
        ("discovery.k8s.io", "endpointslices") => (ENDPOINTSLICE_COLS, endpointslice_row),
        ("", "endpoints") => (ENDPOINTS_COLS, endpoints_row),
        ("", "serviceaccounts") => (SERVICEACCOUNT_COLS, serviceaccount_row),
        _ => (DEFAULT_COLS, default_row),
    }
}

/// Renders `objects` (all of `resource`'s kind) as a `meta.k8s.io/v1` Table. `list_meta` becomes
/// the Table's `metadata` (`resourceVersion`, `continue`); `now` is the reference for ages.
pub fn to_table(
    resource: &ResourceInfo,
    objects: &[Value],
    include_object: IncludeObject,
    list_meta: Value,
    now: Timestamp,
) -> Value {
    let (cols, row_fn) = printer(resource);
    let column_definitions: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(row_fn(o, now)));
            if resource.group.is_empty() && resource.plural == "pods" {
                match str_at(o, "/status/phase") {
                    "Succeeded" => {
                        row.insert("conditions".into(), json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]));
                    }
                    "Failed" => {
                        row.insert("conditions".into(), json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]));
                    }
                    _ => {}
                }
            }
            match include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), o.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    let metadata = if list_meta.is_object() {
        list_meta
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

// ---------------------------------------------------------------------------------------------
// Field access and formatting helpers.

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn len_at(v: &Value, ptr: &str) -> usize {
    match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn name(v: &Value) -> Value {
    json!(str_at(v, "/metadata/name"))
}

fn parse_time(s: &str) -> Option<Timestamp> {
    if s.is_empty() {
        None
    } else {
        s.parse().ok()
    }
}

/// Upstream's `duration.HumanDuration`: a short, coarse duration ("45s", "3m20s", "10m",
/// "3h2m", "9h", "4d5h", "20d", "2y30d", "9y").
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Upstream's `translateTimestampSince`: `<unknown>` for a missing time, else the age.
pub fn timestamp_since(ts: &str, now: Timestamp) -> String {
    match parse_time(ts) {
        None => "<unknown>".into(),
        Some(t) => human_duration(now.as_second() - t.as_second()),
    }
}

fn age(v: &Value, now: Timestamp) -> Value {
    json!(timestamp_since(
        str_at(v, "/metadata/creationTimestamp"),
        now
    ))
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted by key, `<none>` when empty.
fn format_labels(v: Option<&Value>) -> String {
    let Some(Value::Object(m)) = v else {
        return "<none>".into();
    };
    if m.is_empty() {
        return "<none>".into();
    }
    let mut pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector`: `matchLabels` and `matchExpressions` as a selector string.
fn format_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "<none>".into();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in arr_at(sel, "/matchExpressions") {
        let key = str_at(e, "/key");
        let values: Vec<&str> = arr_at(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let s = match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", sorted.join(",")),
            "NotIn" => format!("{key} notin ({})", sorted.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key.to_string(), s));
    }
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// `list` joined with ",", plus ` + N more...` past `max`, or `<unset>` when empty.
fn list_with_more(list: Vec<String>, count: usize, max: usize, empty: &str) -> String {
    let more = count > max;
    let shown: Vec<String> = list.into_iter().take(max).collect();
    let ret = shown.join(",");
    if more {
        format!("{ret} + {} more...", count - max)
    } else if ret.is_empty() {
        empty.to_string()
    } else {
        ret
    }
}

fn containers_and_images(template_spec: Option<&Value>) -> (String, String) {
    let containers = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

// ---------------------------------------------------------------------------------------------
// Printers.

const DEFAULT_COLS: &[Col] = &[NAME, AGE];

fn default_row(v: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(v), age(v, now)]
}

const POD_COLS: &[Col] = &[
    NAME,
    col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "The aggregate status of the containers in this pod."),
    col("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "NodeName is a request to schedule this pod onto a specific node."),
    wide("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness."),
];

fn is_restartable_init(pod: &Value, container: &str) -> bool {
    arr_at(pod, "/spec/initContainers")
        .iter()
        .any(|c| str_at(c, "/name") == container && str_at(c, "/restartPolicy") == "Always")
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    arr_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

/// The later of `latest` and a container's last termination time.
fn bump_last_restart(latest: &mut Option<Timestamp>, status: &Value) {
    if let Some(t) = parse_time(str_at(status, "/lastState/terminated/finishedAt")) {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut ready = 0;
    let mut total = arr_at(pod, "/spec/containers").len();
    total += arr_at(pod, "/spec/initContainers")
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .count();

    let mut reason = str_at(pod, "/status/phase").to_string();
    if !str_at(pod, "/status/reason").is_empty() {
        reason = str_at(pod, "/status/reason").to_string();
    }
    if arr_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let init_count = arr_at(pod, "/spec/initContainers").len();
    let mut initializing = false;
    for (i, c) in arr_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += int_at(c, "/restartCount");
        bump_last_restart(&mut last_restart, c);
        let cname = str_at(c, "/name");
        let restartable = is_restartable_init(pod, cname);
        if restartable {
            sidecar_restarts += int_at(c, "/restartCount");
            bump_last_restart(&mut last_sidecar_restart, c);
        }
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = str_at(c, "/state/waiting/reason");
        if terminated.is_some() && int_at(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if restartable && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if terminated.is_some() {
            let r = str_at(c, "/state/terminated/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int_at(c, "/state/terminated/signal") != 0 {
                format!("Init:Signal:{}", int_at(c, "/state/terminated/signal"))
            } else {
                format!("Init:ExitCode:{}", int_at(c, "/state/terminated/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(c, "/restartCount");
            bump_last_restart(&mut last_restart, c);
            let waiting = str_at(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            let term_reason = str_at(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if terminated.is_some() && !term_reason.is_empty() {
                reason = term_reason.to_string();
            } else if terminated.is_some() {
                let signal = int_at(c, "/state/terminated/signal");
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", int_at(c, "/state/terminated/exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = !str_at(pod, "/metadata/deletionTimestamp").is_empty();
    let phase = str_at(pod, "/status/phase");
    if deleting && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };

    let ip = arr_at(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| str_at(pod, "/status/podIP"));
    let gates = arr_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = str_at(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| str_at(c, "/type") == ty)
                    .is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        age(pod, now),
        json!(or_none(ip)),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

const NODE_COLS: &[Col] = &[
    NAME,
    col("Status", "The status of the node"),
    col("Roles", "The roles of the node"),
    AGE,
    col("Version", "Kubelet Version reported by the node."),
    wide("Internal-IP", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("External-IP", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(Value::Object(labels)) = node.pointer("/metadata/labels") {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(role) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.push(role.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, ty: &str) -> String {
    or_none(
        arr_at(node, "/status/addresses")
            .iter()
            .find(|a| str_at(a, "/type") == ty)
            .map(|a| str_at(a, "/address"))
            .unwrap_or(""),
    )
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".into()
    } else {
        s.into()
    }
}

fn node_row(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    if let Some(c) = arr_at(node, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(c, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    vec![
        name(node),
        json!(status.join(",")),
        json!(node_roles(node)),
        age(node, now),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(or_unknown(str_at(node, "/status/nodeInfo/osImage"))),
        json!(or_unknown(str_at(node, "/status/nodeInfo/kernelVersion"))),
        json!(or_unknown(str_at(
            node,
            "/status/nodeInfo/containerRuntimeVersion"
        ))),
    ]
}

const SERVICE_COLS: &[Col] = &[
    NAME,
    col("Type", "type determines how the Service is exposed."),
    col("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "Route service traffic to pods with label keys and values matching this selector."),
];

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, "/spec/type") {
        "ClusterIP" | "NodePort" | "" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut all: Vec<String> = arr_at(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, "/ip");
                    let host = str_at(i, "/hostname");
                    if !ip.is_empty() {
                        Some(ip.to_string())
                    } else if !host.is_empty() {
                        Some(host.to_string())
                    } else {
                        None
                    }
                })
                .collect();
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match str_at(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            let port = int_at(p, "/port");
            match int_at(p, "/nodePort") {
                0 => format!("{port}/{protocol}"),
                np => format!("{port}:{np}/{protocol}"),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

fn service_row(svc: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = arr_at(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, "/spec/clusterIP"));
    let ty = match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    vec![
        name(svc),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(svc)),
        json!(service_ports(svc)),
        age(svc, now),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

const CONTAINERS: Col = wide("Containers", "Names of each container in the template.");
const IMAGES: Col = wide(
    "Images",
    "Images referenced by each container in the template.",
);
const SELECTOR: Col = wide(
    "Selector",
    "Label selector for pods. Existing pods whose labels match this selector are affected.",
);

const DEPLOYMENT_COLS: &[Col] = &[
    NAME,
    col("Ready", "Number of the pod with ready state"),
    int("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    int("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn spec_replicas(v: &Value) -> i64 {
    v.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment_row(d: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(d.pointer("/spec/template/spec"));
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            int_at(d, "/status/readyReplicas"),
            spec_replicas(d)
        )),
        json!(int_at(d, "/status/updatedReplicas")),
        json!(int_at(d, "/status/availableReplicas")),
        age(d, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(d.pointer("/spec/selector"))),
    ]
}

const REPLICASET_COLS: &[Col] = &[
    NAME,
    int("Desired", "Replicas is the number of desired replicas."),
    int(
        "Current",
        "Replicas is the most recently observed number of replicas.",
    ),
    int(
        "Ready",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replicaset_row(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(rs.pointer("/spec/template/spec"));
    vec![
        name(rs),
        json!(spec_replicas(rs)),
        json!(int_at(rs, "/status/replicas")),
        json!(int_at(rs, "/status/readyReplicas")),
        age(rs, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(rs.pointer("/spec/selector"))),
    ]
}

const DAEMONSET_COLS: &[Col] = &[
    NAME,
    int("Desired", "The total number of nodes that should be running the daemon pod."),
    int("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    int("Ready", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
    int("Up-to-date", "The total number of nodes that are running updated daemon pod"),
    int("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
    col("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemonset_row(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(ds.pointer("/spec/template/spec"));
    vec![
        name(ds),
        json!(int_at(ds, "/status/desiredNumberScheduled")),
        json!(int_at(ds, "/status/currentNumberScheduled")),
        json!(int_at(ds, "/status/numberReady")),
        json!(int_at(ds, "/status/updatedNumberScheduled")),
        json!(int_at(ds, "/status/numberAvailable")),
        json!(format_labels(
            ds.pointer("/spec/template/spec/nodeSelector")
        )),
        age(ds, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(ds.pointer("/spec/selector"))),
    ]
}

const NAMESPACE_COLS: &[Col] = &[NAME, col("Status", "The status of the namespace"), AGE];

fn namespace_row(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ns), json!(str_at(ns, "/status/phase")), age(ns, now)]
}

const CONFIGMAP_COLS: &[Col] = &[
    NAME,
    int("Data", "Data contains the configuration data."),
    AGE,
];

fn configmap_row(cm: &Value, now: Timestamp) -> Vec<Value> {
    let n = len_at(cm, "/data") + len_at(cm, "/binaryData");
    vec![name(cm), json!(n), age(cm, now)]
}

const SECRET_COLS: &[Col] = &[
    NAME,
    col("Type", "The type of the secret"),
    int("Data", "The number of entries in the secret"),
    AGE,
];

fn secret_row(s: &Value, now: Timestamp) -> Vec<Value> {
    let ty = match str_at(s, "/type") {
        "" => "Opaque",
        t => t,
    };
    vec![name(s), json!(ty), json!(len_at(s, "/data")), age(s, now)]
}

const EVENT_COLS: &[Col] = &[
    col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "Type of this event (Normal, Warning), new types could be added in the future."),
    col("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "The object that this event is about."),
    wide("Subobject", "If the event is about part of an object, the path to it (a container)."),
    wide("Source", "The component reporting this event."),
    col("Message", "A human-readable description of the status of this operation."),
    wide("First Seen", "The time at which the event was first recorded."),
    Col {
        name: "Count",
        ty: "string",
        format: "",
        priority: 1,
        description: "The number of times this event has occurred.",
    },
    Col {
        name: "Name",
        ty: "string",
        format: "name",
        priority: 1,
        description: NAME.description,
    },
];

/// Core `v1` and `events.k8s.io/v1` events, with the fields of either.
fn event_row(e: &Value, now: Timestamp) -> Vec<Value> {
    let first_ts = [
        str_at(e, "/firstTimestamp"),
        str_at(e, "/deprecatedFirstTimestamp"),
        str_at(e, "/eventTime"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let first = timestamp_since(first_ts, now);
    let last_ts = [
        str_at(e, "/lastTimestamp"),
        str_at(e, "/deprecatedLastTimestamp"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        timestamp_since(last_ts, now)
    };
    let mut count = e
        .get("count")
        .or_else(|| e.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = e.get("series").filter(|s| s.is_object()) {
        last = timestamp_since(str_at(series, "/lastObservedTime"), now);
        count = int_at(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let obj = e
        .get("involvedObject")
        .or_else(|| e.get("regarding"))
        .cloned()
        .unwrap_or(Value::Null);
    let kind = str_at(&obj, "/kind").to_lowercase();
    let oname = str_at(&obj, "/name");
    let target = if oname.is_empty() {
        kind
    } else {
        format!("{kind}/{oname}")
    };
    let component = [
        str_at(e, "/source/component"),
        str_at(e, "/deprecatedSource/component"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let host = [
        str_at(e, "/source/host"),
        str_at(e, "/deprecatedSource/host"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    let source = if !component.is_empty() {
        if host.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {host}")
        }
    } else {
        let rc = str_at(e, "/reportingController");
        let ri = str_at(e, "/reportingInstance");
        match (rc.is_empty(), ri.is_empty()) {
            (false, false) => format!("{rc}, {ri}"),
            (false, true) => rc.to_string(),
            _ => ri.to_string(),
        }
    };
    let message = match str_at(e, "/message") {
        "" => str_at(e, "/note"),
        m => m,
    };
    vec![
        json!(last),
        json!(str_at(e, "/type")),
        json!(str_at(e, "/reason")),
        json!(target),
        json!(str_at(&obj, "/fieldPath")),
        json!(source),
        json!(message.trim()),
        json!(first),
        json!(count),
        name(e),
    ]
}

const LEASE_COLS: &[Col] = &[
    NAME,
    col(
        "Holder",
        "HolderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

fn lease_row(l: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(l),
        json!(str_at(l, "/spec/holderIdentity")),
        age(l, now),
    ]
}

const ENDPOINTSLICE_COLS: &[Col] = &[
    NAME,
    col(
        "AddressType",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn endpointslice_row(s: &Value, now: Timestamp) -> Vec<Value> {
    let ports = arr_at(s, "/ports");
    let port_list: Vec<String> = ports
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => match str_at(p, "/name") {
                "" => "*".to_string(),
                n => n.to_string(),
            },
        })
        .collect();
    let addrs: Vec<String> = arr_at(s, "/endpoints")
        .iter()
        .flat_map(|e| arr_at(e, "/addresses").iter())
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let n_ports = port_list.len();
    let n_addrs = addrs.len();
    vec![
        name(s),
        json!(str_at(s, "/addressType")),
        json!(list_with_more(port_list, n_ports, 3, "<unset>")),
        json!(list_with_more(addrs, n_addrs, 3, "<unset>")),
        age(s, now),
    ]
}

const ENDPOINTS_COLS: &[Col] = &[
    NAME,
    col(
        "Endpoints",
        "Endpoints is the list of endpoints in this Endpoints object.",
    ),
    AGE,
];

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn endpoints_row(ep: &Value, now: Timestamp) -> Vec<Value> {
    let subsets = arr_at(ep, "/subsets");
    let text = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        let mut list = Vec::new();
        for ss in subsets {
            let addrs: Vec<&str> = arr_at(ss, "/addresses")
                .iter()
                .map(|a| str_at(a, "/ip"))
                .collect();
            let ports = arr_at(ss, "/ports");
            if ports.is_empty() {
                list.extend(addrs.iter().map(|a| a.to_string()));
            } else {
                for p in ports {
                    let port = int_at(p, "/port");
                    list.extend(addrs.iter().map(|a| join_host_port(a, port)));
                }
            }
        }
        let count = list.len();
        list_with_more(list, count, 3, "")
    };
    vec![name(ep), json!(text), age(ep, now)]
}

const SERVICEACCOUNT_COLS: &[Col] = &[
    NAME,
    int("Secrets", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

fn serviceaccount_row(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(sa), json!(len_at(sa, "/secrets")), age(sa, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().expect("valid timestamp")
    }

    fn table(group: &str, plural: &str, obj: Value) -> Value {
        let r = find(group, "v1", plural).expect("resource");
        to_table(
            r,
            &[obj],
            IncludeObject::Metadata,
            json!({"resourceVersion": "7"}),
            now(),
        )
    }

    fn cells(t: &Value) -> Vec<Value> {
        t["rows"][0]["cells"].as_array().expect("cells").clone()
    }

    fn headers(t: &Value) -> Vec<String> {
        t["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 2 * 60, "3h2m"),
            (4 * 3600, "4h"),
            (9 * 3600, "9h"),
            (47 * 3600, "47h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 5 * 3600, "4d5h"),
            (20 * 86400, "20d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
        assert_eq!(timestamp_since("", now()), "<unknown>");
        assert_eq!(timestamp_since("2025-01-01T11:55:00Z", now()), "5m");
    }

    #[test]
    fn negotiation_and_include() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate_table(accept), Some("meta.k8s.io/v1"));
        assert_eq!(negotiate_table("application/json"), None);
        assert_eq!(IncludeObject::from_query(None), IncludeObject::Metadata);
        assert_eq!(
            IncludeObject::from_query(Some("Object")),
            IncludeObject::Object
        );
        assert_eq!(IncludeObject::from_query(Some("None")), IncludeObject::None);
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2025-01-01T11:50:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_running() {
        let t = table(
            "",
            "pods",
            pod(json!({
                "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}],
            })),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(
            headers(&t),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(
            cells(&t),
            [
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("10m"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
    }

    #[test]
    fn pod_crashloop_with_restarts() {
        let t = table(
            "",
            "pods",
            pod(json!({
                "phase": "Running",
                "containerStatuses": [{
                    "name": "a", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-01T11:58:00Z"}},
                }],
            })),
        );
        let c = cells(&t);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3 (2m ago)");
        assert_eq!(c[5], "<none>");
    }

    #[test]
    fn pod_completed_terminating_and_init() {
        let done = table(
            "",
            "pods",
            pod(json!({
                "phase": "Succeeded",
                "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            })),
        );
        assert_eq!(cells(&done)[2], "Completed");
        assert_eq!(done["rows"][0]["conditions"][0]["type"], "Completed");

        let mut p = pod(json!({"phase": "Running",
            "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}));
        p["metadata"]["deletionTimestamp"] = json!("2025-01-01T11:59:00Z");
        assert_eq!(cells(&table("", "pods", p))[2], "Terminating");

        let mut p = pod(json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "init", "state": {"waiting": {"reason": "PodInitializing"}}}]}));
        p["spec"]["initContainers"] = json!([{"name": "init"}]);
        assert_eq!(cells(&table("", "pods", p))[2], "Init:0/1");

        let mut p = pod(json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 2}}}]}));
        p["spec"]["initContainers"] = json!([{"name": "init"}]);
        assert_eq!(cells(&table("", "pods", p))[2], "Init:ExitCode:2");

        let mut p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "www.example.com/gate", "status": "True"}]}));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "www.example.com/gate"}, {"conditionType": "other"}]);
        assert_eq!(cells(&table("", "pods", p))[8], "1/2");
    }

    #[test]
    fn node_columns() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-12-28T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.0.2"}, {"type": "Hostname", "address": "n1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.6.20"},
            },
        });
        let t = table("", "nodes", node);
        assert_eq!(
            cells(&t),
            [
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("4d"),
                json!("v1.33.0"),
                json!("192.168.0.2"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("containerd://1.6.20")
            ]
        );
        let bare = table(
            "",
            "nodes",
            json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        let c = cells(&bare);
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<unknown>");
        let none = table("", "nodes", json!({"metadata": {"name": "n3"}}));
        assert_eq!(cells(&none)[1], "Unknown");
    }

    #[test]
    fn service_columns() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-01-01T09:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                "selector": {"app": "web", "tier": "fe"}},
        });
        let t = table("", "services", svc);
        assert_eq!(
            cells(&t),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("3h"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = table(
            "",
            "services",
            json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 443}]}}),
        );
        let c = cells(&lb);
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "443/TCP");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn workload_columns() {
        let template = json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "echo:1"}],
            "nodeSelector": {"kubernetes.io/os": "linux"}}});
        let selector = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]});
        let d = table(
            "apps",
            "deployments",
            json!({
                "metadata": {"name": "web", "creationTimestamp": "2025-01-01T11:59:30Z"},
                "spec": {"replicas": 3, "selector": selector, "template": template},
                "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
            }),
        );
        assert_eq!(
            headers(&d),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells(&d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("30s"),
                json!("a,b"),
                json!("busybox,echo:1"),
                json!("app=web,tier in (be,fe)")
            ]
        );
        let rs = table(
            "apps",
            "replicasets",
            json!({
                "metadata": {"name": "web-1"}, "spec": {"replicas": 2, "template": template},
                "status": {"replicas": 2, "readyReplicas": 1},
            }),
        );
        assert_eq!(
            cells(&rs)[..4],
            [json!("web-1"), json!(2), json!(2), json!(1)]
        );
        let ds = table(
            "apps",
            "daemonsets",
            json!({
                "metadata": {"name": "proxy"}, "spec": {"template": template},
                "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1},
            }),
        );
        assert_eq!(
            cells(&ds)[..7],
            [
                json!("proxy"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux")
            ]
        );
    }

    #[test]
    fn small_printers() {
        let ns = table(
            "",
            "namespaces",
            json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}}),
        );
        assert_eq!(cells(&ns)[..2], [json!("default"), json!("Active")]);
        let cm = table(
            "",
            "configmaps",
            json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        );
        assert_eq!(cells(&cm)[1], 3);
        let s = table(
            "",
            "secrets",
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        );
        assert_eq!(
            cells(&s)[..3],
            [json!("s"), json!("kubernetes.io/tls"), json!(2)]
        );
        let sa = table(
            "",
            "serviceaccounts",
            json!({"metadata": {"name": "default"}}),
        );
        assert_eq!(cells(&sa)[1], 0);
        let l = table(
            "coordination.k8s.io",
            "leases",
            json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}),
        );
        assert_eq!(cells(&l)[1], "n1");
        let other = table(
            "rbac.authorization.k8s.io",
            "roles",
            json!({"metadata": {"name": "r", "creationTimestamp": "2025-01-01T11:00:00Z"}}),
        );
        assert_eq!(headers(&other), ["Name", "Age"]);
        assert_eq!(cells(&other), [json!("r"), json!("60m")]);
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = table(
            "",
            "endpoints",
            json!({"metadata": {"name": "web"}, "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
                "ports": [{"port": 8080}],
            }]}),
        );
        assert_eq!(
            cells(&ep)[1],
            "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."
        );
        let none = table("", "endpoints", json!({"metadata": {"name": "x"}}));
        assert_eq!(cells(&none)[1], "<none>");
        let slice = table(
            "discovery.k8s.io",
            "endpointslices",
            json!({
                "metadata": {"name": "web-abc"}, "addressType": "IPv4",
                "ports": [{"port": 8080, "name": "http"}, {"name": "x"}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
            }),
        );
        assert_eq!(
            cells(&slice)[..4],
            [
                json!("web-abc"),
                json!("IPv4"),
                json!("8080,x"),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let empty = table(
            "discovery.k8s.io",
            "endpointslices",
            json!({"metadata": {"name": "e"}, "addressType": "IPv4"}),
        );
        assert_eq!(cells(&empty)[2], "<unset>");
        assert_eq!(cells(&empty)[3], "<unset>");
    }

    #[test]
    fn events() {
        let ev = table(
            "",
            "events",
            json!({
                "metadata": {"name": "web.1"}, "type": "Warning", "reason": "BackOff",
                "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
                "source": {"component": "kubelet", "host": "n1"},
                "message": "Back-off restarting failed container\n",
                "firstTimestamp": "2025-01-01T11:00:00Z", "lastTimestamp": "2025-01-01T11:59:00Z", "count": 5,
            }),
        );
        assert_eq!(headers(&ev)[..4], ["Last Seen", "Type", "Reason", "Object"]);
        assert_eq!(
            cells(&ev),
            [
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(5),
                json!("web.1")
            ]
        );
        let new = table(
            "events.k8s.io",
            "events",
            json!({
                "metadata": {"name": "x"}, "type": "Normal", "reason": "Scheduled", "note": "assigned",
                "regarding": {"kind": "Pod", "name": "p"}, "eventTime": "2025-01-01T11:59:50.000000Z",
                "reportingController": "default-scheduler",
            }),
        );
        let c = cells(&new);
        assert_eq!(c[0], "10s");
        assert_eq!(c[3], "pod/p");
        assert_eq!(c[5], "default-scheduler");
        assert_eq!(c[6], "assigned");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn include_object_modes() {
        let r = find("", "v1", "configmaps").expect("cm");
        let obj = json!({"metadata": {"name": "c"}, "data": {}});
        let t = to_table(
            r,
            std::slice::from_ref(&obj),
            IncludeObject::Object,
            Value::Null,
            now(),
        );
        assert_eq!(t["rows"][0]["object"], obj);
        assert_eq!(t["metadata"], json!({}));
        let t = to_table(r, &[obj], IncludeObject::None, Value::Null, now());
        assert!(t["rows"][0].get("object").is_none());
        let t = to_table(r, &[], IncludeObject::Metadata, Value::Null, now());
        assert_eq!(t["rows"], json!([]));
    }
}
