//! Server-side apply and managed-fields bookkeeping, after upstream's structured-merge-diff
//! (sigs.k8s.io/structured-merge-diff merge/update.go) and apimachinery's
//! `pkg/util/managedfields`: each manager owns a set of field paths kept in
//! `metadata.managedFields` in the `FieldsV1` format (`f:` fields, `k:{...}` keyed list items,
//! `v:` set values). Applying sets the applied fields, removes the fields this manager applied
//! before but no longer applies (unless someone else owns them) and reports conflicts with
//! other managers owning a field whose value would change.
//!
//! Lists are associative by the patch merge key of [`super::merge_keys`] (upstream uses the
//! `listMapKeys`, which for a few lists add `protocol`); lists without one are atomic.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use super::merge_keys::{self, FieldMeta, GoType, ListStrategy};
use super::strategic::{merge_map, Mode};
use super::PatchError;

/// One field that another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager owning the field (`kubectl-client-side-apply`).
    pub manager: String,
    /// The `apiVersion` that manager used (`apps/v1`).
    pub api_version: String,
    /// The field in upstream's path notation: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="app"].image`.
    pub field_path: String,
}

impl Conflict {
    /// The message of the `FieldManagerConflict` cause of the 409 Status, as upstream words it.
    pub fn message(&self) -> String {
        format!(
            "conflict with {:?} using {}: {}",
            self.manager, self.api_version, self.field_path
        )
    }
}

/// Why a server-side apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the apply would change (409 unless `force`).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is unusable: not an object, wrong kind (400).
    #[error("{0}")]
    BadRequest(String),
    /// The merge itself failed (a list item without its merge key) (400 or 422).
    #[error(transparent)]
    Patch(#[from] PatchError),
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let plural = if n == 1 { "" } else { "s" };
    let body: Vec<String> = conflicts.iter().map(Conflict::message).collect();
    format!(
        "Apply failed with {n} conflict{plural}: {}",
        body.join("\n")
    )
}

/// Applies `applied` (a server-side apply configuration) for `manager` to `live` (`None` when
/// the object is created by this apply) and returns the new object, `metadata.managedFields`
/// updated. `now` is the RFC 3339 time recorded in the manager's entry.
///
/// `status` in the applied configuration is ignored, as upstream's main-resource apply resets it.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    kind: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    let Value::Object(applied_map) = applied else {
        return Err(ApplyError::BadRequest(
            "an apply configuration must be an object".to_string(),
        ));
    };
    for (field, want) in [("apiVersion", api_version), ("kind", kind)] {
        match applied_map.get(field).and_then(Value::as_str) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApplyError::BadRequest(format!(
                    "{field} in the apply configuration ({got}) does not match the target ({want})"
                )))
            }
            None => {
                return Err(ApplyError::BadRequest(format!(
                    "{field} must be set in an apply configuration"
                )))
            }
        }
    }
    if manager.is_empty() {
        return Err(ApplyError::BadRequest(
            "fieldManager is required for apply requests".to_string(),
        ));
    }
    let ty = merge_keys::type_for(api_version, kind);
    let mut clean = strip_nulls(applied);
    if let Value::Object(m) = &mut clean {
        m.remove("status");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    let applied_set = field_set(&clean, ty, Scope::Main);

    let live_obj = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = read_entries(&live_obj);
    let mine = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply" && e.subresource.is_empty());

    // Conflicts: another manager owns a leaf we apply, with a different live value.
    let mut conflicts = Vec::new();
    let mut conflict_paths: Vec<(usize, Vec<String>)> = Vec::new();
    for path in applied_set.leaf_paths() {
        let Some(live_v) = lookup(&live_obj, &path) else {
            continue;
        };
        if lookup(&clean, &path) == Some(live_v) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if Some(i) == mine || !e.fields.contains(&path) {
                continue;
            }
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
                field_path: path_string(&path),
            });
            conflict_paths.push((i, path.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, path) in &conflict_paths {
        if let Some(e) = entries.get_mut(*i) {
            e.fields.remove(path);
        }
    }

    // Fields this manager applied before and no longer applies are removed unless owned by
    // another manager (structured-merge-diff's prune + addBackOwnedItems).
    let mut obj = live_obj.clone();
    if let Some(prev) = mine.and_then(|i| entries.get(i)) {
        for path in prev.fields.member_paths() {
            if applied_set.has_node(&path) {
                continue;
            }
            let owned_elsewhere = entries
                .iter()
                .enumerate()
                .any(|(i, e)| Some(i) != mine && e.fields.has_node(&path));
            if !owned_elsewhere {
                remove_at(&mut obj, &path);
            }
        }
    }

    let base = match obj {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let clean_map = match &clean {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut merged =
        Value::Object(merge_map(base, &clean_map, ty, Mode::Apply)?.unwrap_or_default());

    let changed = without_managed_fields(&merged) != without_managed_fields(&live_obj);
    match mine {
        Some(i) => {
            if let Some(e) = entries.get_mut(i) {
                if changed || e.fields != applied_set {
                    e.time = now.to_string();
                }
                e.fields = applied_set;
                e.api_version = api_version.to_string();
            }
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: String::new(),
            fields: applied_set,
        }),
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Records in `new.metadata.managedFields` the fields an ordinary write (create, update,
/// patch) by `manager` changed from `old` (`None` on create): the manager's entry for
/// `operation` (`"Update"`) gains them and every other manager loses them, as upstream's
/// update path does without reporting conflicts. Fields removed by the write leave every set.
///
/// `subresource` is `""` for the main resource (status is not tracked) or `"status"` (only
/// status is tracked). When the request itself changed `managedFields`, upstream keeps what the
/// client sent (an empty list resets tracking); so does this function.
#[allow(clippy::too_many_arguments)]
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    kind: &str,
    subresource: &str,
    now: &str,
) {
    let empty = json!({});
    let old_obj = old.unwrap_or(&empty);
    let old_mf = old_obj.pointer("/metadata/managedFields");
    let new_mf = new.pointer("/metadata/managedFields");
    let mut entries = match new_mf {
        Some(Value::Array(a)) if a.is_empty() => Vec::new(),
        Some(mf) if Some(mf) != old_mf => return,
        _ => read_entries(old_obj),
    };
    let ty = merge_keys::type_for(api_version, kind);
    let scope = if subresource == "status" {
        Scope::Status
    } else {
        Scope::Main
    };
    let old_set = field_set(old_obj, ty, scope);
    let new_set = field_set(new, ty, scope);
    let mut changed = FieldSet::default();
    for path in new_set.member_paths() {
        let is_leaf = new_set.node(&path).is_some_and(|n| n.children.is_empty());
        let differs = match (lookup(new, &path), lookup(old_obj, &path)) {
            (Some(_), None) => true,
            (Some(a), Some(b)) => is_leaf && a != b,
            _ => false,
        };
        if differs {
            changed.insert(&path);
        }
    }
    let removed: Vec<Vec<String>> = old_set
        .member_paths()
        .into_iter()
        .filter(|p| !new_set.contains(p))
        .collect();
    let changed_paths = changed.member_paths();

    let mine = entries.iter().position(|e| {
        e.manager == manager && e.operation == operation && e.subresource == subresource
    });
    for (i, e) in entries.iter_mut().enumerate() {
        for p in &removed {
            e.fields.remove(p);
        }
        if Some(i) != mine {
            for p in &changed_paths {
                e.fields.remove(p);
            }
        }
    }
    match mine {
        Some(i) => {
            if let Some(e) = entries.get_mut(i) {
                for p in &changed_paths {
                    e.fields.insert(p);
                }
                if !changed_paths.is_empty() {
                    e.time = now.to_string();
                    e.api_version = api_version.to_string();
                }
            }
        }
        None if !changed_paths.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.to_string(),
            fields: changed,
        }),
        None => {}
    }
    write_entries(new, entries);
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(list)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    list.iter()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: s(e, "time"),
            subresource: s(e, "subresource"),
            fields: e
                .get("fieldsV1")
                .map(FieldSet::from_json)
                .unwrap_or_default(),
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), e.manager.into());
            m.insert("operation".into(), e.operation.into());
            m.insert("apiVersion".into(), e.api_version.into());
            if !e.time.is_empty() {
                m.insert("time".into(), e.time.into());
            }
            m.insert("fieldsType".into(), "FieldsV1".into());
            m.insert("fieldsV1".into(), e.fields.to_json());
            if !e.subresource.is_empty() {
                m.insert("subresource".into(), e.subresource.into());
            }
            Value::Object(m)
        })
        .collect();
    let Value::Object(root) = obj else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        meta.remove("managedFields");
    }
    v
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// A set of field paths in the `FieldsV1` shape: each node is a path element (`f:name`,
/// `k:{"name":"x"}`, `v:"x"`, `i:0`); `member` is the `"."` of a node that is itself in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn from_json(v: &Value) -> Self {
        let mut set = FieldSet::default();
        if let Value::Object(m) = v {
            if m.is_empty() {
                set.member = true;
            }
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    set.children.insert(k.clone(), FieldSet::from_json(child));
                }
            }
        }
        set
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, child) in &self.children {
            m.insert(k.clone(), child.to_json());
        }
        Value::Object(m)
    }

    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((head, rest)) => self.children.get(head)?.node(rest),
        }
    }

    /// Whether `path` or anything below it is in the set.
    fn has_node(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((head, rest)) => {
                if let Some(child) = self.children.get_mut(head) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    fn member_paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out, false);
        out
    }

    fn leaf_paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out, true);
        out
    }

    fn walk(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, leaves_only: bool) {
        if self.member && (!leaves_only || self.children.is_empty()) {
            out.push(prefix.clone());
        }
        for (k, child) in &self.children {
            prefix.push(k.clone());
            child.walk(prefix, out, leaves_only);
            prefix.pop();
        }
    }
}

/// Which part of an object a field set covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything but `status` (the main resource).
    Main,
    /// Only `status` (the status subresource).
    Status,
}

/// Metadata fields the server owns, which never appear in managed fields (upstream stripMeta).
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn field_set(obj: &Value, ty: Option<&'static GoType>, scope: Scope) -> FieldSet {
    let mut set = FieldSet::default();
    let Value::Object(m) = obj else {
        return set;
    };
    for (k, v) in m {
        let keep = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Main, "status") => false,
            (Scope::Main, _) => true,
            (Scope::Status, key) => key == "status",
        };
        if !keep {
            continue;
        }
        let meta = ty.and_then(|t| t.field(k));
        let child = set.children.entry(format!("f:{k}")).or_default();
        if k == "metadata" {
            if let Value::Object(mm) = v {
                for (mk, mv) in mm {
                    if SERVER_META.contains(&mk.as_str()) {
                        continue;
                    }
                    let mmeta = meta.and_then(|m| m.elem).and_then(|t| t.field(mk));
                    collect(
                        mv,
                        mmeta,
                        child.children.entry(format!("f:{mk}")).or_default(),
                    );
                }
            }
        } else {
            collect(v, meta, child);
        }
        if child.is_empty() {
            set.children.remove(&format!("f:{k}"));
        }
    }
    set
}

fn collect(v: &Value, meta: Option<&'static FieldMeta>, node: &mut FieldSet) {
    if meta.is_some_and(|m| m.atomic) {
        node.member = true;
        return;
    }
    let elem = meta.and_then(|m| m.elem);
    match v {
        Value::Object(m) if !m.is_empty() => collect_map(m, elem, node),
        Value::Array(items) if meta.is_some_and(|m| m.strategy == ListStrategy::Merge) => {
            match meta.and_then(|m| m.merge_key) {
                Some(key) => {
                    let keyed: Option<Vec<(String, &Map<String, Value>)>> = items
                        .iter()
                        .map(|item| {
                            let m = item.as_object()?;
                            let kv = m.get(key)?;
                            let mut k = Map::new();
                            k.insert(key.to_string(), kv.clone());
                            Some((format!("k:{}", Value::Object(k)), m))
                        })
                        .collect();
                    match keyed {
                        Some(keyed) if !items.is_empty() => {
                            for (k, m) in keyed {
                                let child = node.children.entry(k).or_default();
                                child.member = true;
                                collect_map(m, elem, child);
                            }
                        }
                        _ => node.member = true,
                    }
                }
                None if !items.is_empty() => {
                    for item in items {
                        node.children.entry(format!("v:{item}")).or_default().member = true;
                    }
                }
                None => node.member = true,
            }
        }
        _ => node.member = true,
    }
}

fn collect_map(m: &Map<String, Value>, ty: Option<&'static GoType>, node: &mut FieldSet) {
    for (k, v) in m {
        let meta = ty.and_then(|t| t.field(k));
        collect(v, meta, node.children.entry(format!("f:{k}")).or_default());
    }
}

/// A parsed path element.
enum Element {
    Field(String),
    Key(Map<String, Value>),
    Value(Value),
    Index(usize),
}

fn parse_element(seg: &str) -> Option<Element> {
    if let Some(f) = seg.strip_prefix("f:") {
        return Some(Element::Field(f.to_string()));
    }
    if let Some(k) = seg.strip_prefix("k:") {
        return match serde_json::from_str(k).ok()? {
            Value::Object(m) => Some(Element::Key(m)),
            _ => None,
        };
    }
    if let Some(v) = seg.strip_prefix("v:") {
        return serde_json::from_str(v).ok().map(Element::Value);
    }
    seg.strip_prefix("i:")?.parse().ok().map(Element::Index)
}

fn item_matches(el: &Element, item: &Value) -> bool {
    match el {
        Element::Key(keys) => keys.iter().all(|(k, v)| item.get(k) == Some(v)),
        Element::Value(v) => item == v,
        _ => false,
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(v);
    };
    let next = match parse_element(head)? {
        Element::Field(f) => v.get(f.as_str())?,
        Element::Index(i) => v.get(i)?,
        el => v.as_array()?.iter().find(|item| item_matches(&el, item))?,
    };
    lookup(next, rest)
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    let Some(el) = parse_element(head) else {
        return;
    };
    if rest.is_empty() {
        match (el, v) {
            (Element::Field(f), Value::Object(m)) => {
                m.remove(&f);
            }
            (Element::Index(i), Value::Array(a)) if i < a.len() => {
                a.remove(i);
            }
            (el, Value::Array(a)) => a.retain(|item| !item_matches(&el, item)),
            _ => {}
        }
        return;
    }
    let next = match el {
        Element::Field(f) => v.get_mut(f.as_str()),
        Element::Index(i) => v.get_mut(i),
        el => v
            .as_array_mut()
            .and_then(|a| a.iter_mut().find(|item| item_matches(&el, item))),
    };
    if let Some(next) = next {
        remove_at(next, rest);
    }
}

/// Formats a path as upstream's fieldpath.Path.String: `.spec.containers[name="app"].image`.
fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        match parse_element(seg) {
            Some(Element::Field(f)) => {
                out.push('.');
                out.push_str(&f);
            }
            Some(Element::Key(keys)) => {
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Some(Element::Value(v)) => out.push_str(&format!("[={v}]")),
            Some(Element::Index(i)) => out.push_str(&format!("[{i}]")),
            None => out.push_str(seg),
        }
    }
    out
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";
    const LATER: &str = "2025-01-01T00:05:00Z";

    fn deploy(replicas: i64, image: &str, env: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image, "env": env}]}
                }
            }
        })
    }

    fn apply(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApplyError> {
        server_side_apply(live, applied, manager, force, "apps/v1", "Deployment", NOW)
    }

    fn entry<'a>(obj: &'a Value, manager: &str, op: &str) -> Option<&'a Value> {
        obj.pointer("/metadata/managedFields")?
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == op)
    }

    #[test]
    fn create_records_fields_v1() {
        let applied = deploy(
            2,
            "nginx:1.25",
            json!([{"name": "A", "value": "1"}]),
            json!({"app": "web"}),
        );
        let got = apply(None, &applied, "kubectl", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got["spec"]["replicas"], 2);
        let e = entry(&got, "kubectl", "Apply").unwrap_or_else(|| panic!("no entry in {got}"));
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(e["time"], NOW);
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {}, "f:name": {}, "f:image": {},
                            "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn reapply_removes_dropped_fields() {
        let first = deploy(
            2,
            "nginx:1.25",
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
            json!({"app": "web", "tier": "front"}),
        );
        let live = apply(None, &first, "kubectl", false).unwrap_or_else(|e| panic!("{e}"));
        // Another manager owns a label: it must survive our dropping it.
        let mut live2 = live.clone();
        live2["metadata"]["labels"]["team"] = json!("x");
        update_managed_fields(
            Some(&live),
            &mut live2,
            "kubectl-label",
            "Update",
            "apps/v1",
            "Deployment",
            "",
            NOW,
        );

        let second = deploy(
            2,
            "nginx:1.26",
            json!([{"name": "A", "value": "1"}]),
            json!({"app": "web"}),
        );
        let got = server_side_apply(
            Some(&live2),
            &second,
            "kubectl",
            false,
            "apps/v1",
            "Deployment",
            LATER,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = &got["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.26");
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(
            got["metadata"]["labels"],
            json!({"app": "web", "team": "x"})
        );
        assert_eq!(
            entry(&got, "kubectl", "Apply").map(|e| e["time"].clone()),
            Some(json!(LATER))
        );
        assert!(entry(&got, "kubectl-label", "Update").is_some());
    }

    #[test]
    fn conflicts_and_force() {
        // Created by client-side apply: an Update manager owns everything.
        let mut live = deploy(1, "nginx:1.25", json!([]), json!({"app": "web"}));
        update_managed_fields(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "Update",
            "apps/v1",
            "Deployment",
            "",
            NOW,
        );

        let same = deploy(1, "nginx:1.25", json!([]), json!({"app": "web"}));
        assert!(
            apply(Some(&live), &same, "kubectl", false).is_ok(),
            "equal values share ownership"
        );

        let changed = deploy(3, "nginx:1.25", json!([]), json!({"app": "web"}));
        match apply(Some(&live), &changed, "kubectl", false) {
            Err(ApplyError::Conflicts(c)) => {
                assert_eq!(
                    c,
                    vec![Conflict {
                        manager: "kubectl-client-side-apply".into(),
                        api_version: "apps/v1".into(),
                        field_path: ".spec.replicas".into(),
                    }]
                );
                assert_eq!(
                    c[0].message(),
                    r#"conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#
                );
            }
            other => panic!("want conflict, got {other:?}"),
        }

        let image = deploy(1, "nginx:1.26", json!([]), json!({"app": "web"}));
        match apply(Some(&live), &image, "kubectl", false) {
            Err(ApplyError::Conflicts(c)) => assert_eq!(
                c.iter().map(|c| c.field_path.as_str()).collect::<Vec<_>>(),
                vec![r#".spec.template.spec.containers[name="app"].image"#]
            ),
            other => panic!("want conflict, got {other:?}"),
        }

        let got = apply(Some(&live), &changed, "kubectl", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got["spec"]["replicas"], 3);
        let csa =
            entry(&got, "kubectl-client-side-apply", "Update").unwrap_or_else(|| panic!("{got}"));
        assert!(csa.pointer("/fieldsV1/f:spec/f:replicas").is_none());
        assert!(csa.pointer("/fieldsV1/f:spec/f:selector").is_some());
    }

    #[test]
    fn update_takes_ownership() {
        let applied = deploy(2, "nginx:1.25", json!([]), json!({"app": "web"}));
        let live = apply(None, &applied, "kubectl", false).unwrap_or_else(|e| panic!("{e}"));
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        update_managed_fields(
            Some(&live),
            &mut scaled,
            "kubectl",
            "Update",
            "apps/v1",
            "Deployment",
            "",
            LATER,
        );
        let upd = entry(&scaled, "kubectl", "Update").unwrap_or_else(|| panic!("{scaled}"));
        assert_eq!(upd["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(entry(&scaled, "kubectl", "Apply")
            .and_then(|e| e.pointer("/fieldsV1/f:spec/f:replicas"))
            .is_none());
        // Re-applying replicas 2 now conflicts with the Update manager.
        assert!(matches!(
            apply(Some(&scaled), &applied, "kubectl", false),
            Err(ApplyError::Conflicts(_))
        ));
    }

    #[test]
    fn bad_requests() {
        let cases = [
            json!([1]),
            json!({"apiVersion": "v1", "kind": "Deployment"}),
            json!({"apiVersion": "apps/v1"}),
        ];
        for applied in cases {
            assert!(
                matches!(
                    apply(None, &applied, "kubectl", false),
                    Err(ApplyError::BadRequest(_))
                ),
                "{applied}"
            );
        }
    }

    #[test]
    fn path_strings() {
        let cases: &[(&[&str], &str)] = &[
            (&["f:spec", "f:replicas"], ".spec.replicas"),
            (
                &["f:spec", "f:ports", "k:{\"port\":80}", "f:name"],
                ".spec.ports[port=80].name",
            ),
            (
                &["f:metadata", "f:finalizers", "v:\"x\""],
                ".metadata.finalizers[=\"x\"]",
            ),
        ];
        for (path, want) in cases {
            let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            assert_eq!(path_string(&p), *want);
        }
    }
}
