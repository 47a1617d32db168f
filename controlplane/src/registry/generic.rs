//! The generic registry: Kubernetes object semantics over a revisioned [`Store`].
//!
//! What kube-apiserver's `genericregistry.Store` does, for JSON objects: names from
//! `generateName`, UIDs, creation timestamps, `resourceVersion` from the store revision,
//! optimistic concurrency, `generation` bumps, finalizers and `deletionTimestamp`, graceful pod
//! deletion, namespaces that must exist, and the ClusterIP/NodePort allocation of Services.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::selectors::{self, FieldSelector, LabelSelector};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::registry::allocator;
use crate::registry::strategies;
use crate::registry::strategy::{FieldError, Strategy};
use crate::storage::{self, KeyValue, ListOptions, Store};

/// How many times a read-modify-write retries after losing a race.
const UPDATE_RETRIES: usize = 16;
/// Characters upstream uses for `generateName` suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Settings of the registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Service ClusterIP range (`--service-cluster-ip-range`).
    pub service_cidr: String,
    /// NodePort range (`--service-node-port-range`).
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            service_cidr: "10.43.0.0/16".to_string(),
            node_port_range: 30000..=32767,
        }
    }
}

/// `fieldValidation` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and warn (the server default).
    #[default]
    Warn,
    /// Reject unknown fields with 400.
    Strict,
}

/// Per-request write settings.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything, store nothing.
    pub dry_run: bool,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// Manager recorded in managedFields.
    pub field_manager: String,
}

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Override of the grace period (pods).
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// Precondition on the UID.
    pub precondition_uid: Option<String>,
    /// Precondition on the resourceVersion.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// What a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Label selector text.
    pub label_selector: Option<String>,
    /// Field selector text.
    pub field_selector: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
    /// Continue token from the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Objects, with `apiVersion`, `kind` and `resourceVersion` set.
    pub items: Vec<Value>,
    /// The revision the list is consistent at.
    pub resource_version: i64,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
}

/// The outcome of a delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object as deleted, or as now marked for deletion.
    pub object: Value,
    /// True when the object is gone; false when deletion is pending (finalizers, grace).
    pub removed: bool,
}

/// Compiled label + field selectors.
#[derive(Debug, Default)]
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// Parses selectors; errors are 400s with upstream's text.
    pub fn new(res: &ResourceInfo, label: Option<&str>, field: Option<&str>) -> ApiResult<Self> {
        let labels =
            match label.filter(|s| !s.trim().is_empty()) {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match field.filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let sel =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                // Unsupported field labels fail the request up front, as upstream does.
                let probe = json!({"metadata": {}});
                for term in sel.terms() {
                    selectors::field_value(res, &probe, &term.field)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                }
                Some(sel)
            }
            None => None,
        };
        Ok(Self { labels, fields })
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether `obj` passes.
    pub fn matches(&self, res: &ResourceInfo, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(&labels_of(obj)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            let get = |field: &str| selectors::field_value(res, obj, field).ok().flatten();
            if !f.matches(&get) {
                return false;
            }
        }
        true
    }
}

/// The labels of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Now as upstream's `metav1.Time` serializes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn rfc3339_after(seconds: i64) -> String {
    let ts = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Established just above: metadata is an object.
        _ => unreachable!("metadata was just made an object"),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn random_suffix(len: usize) -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(len)
        .map(|b| NAME_ALPHABET[(*b as usize) % NAME_ALPHABET.len()] as char)
        .collect()
}

/// The registry over a store.
pub struct Registry {
    store: Arc<dyn Store>,
    opts: RegistryOptions,
    /// Service allocation reads all services, picks, then writes: one at a time.
    alloc_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    /// A registry over `store` (normally a watch cache over SQLite or etcd).
    pub fn new(store: Arc<dyn Store>, opts: RegistryOptions) -> Self {
        Self {
            store,
            opts,
            alloc_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// The store key of an object.
    pub fn key(res: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
        match (res.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", res.storage_prefix()),
            _ => format!("{}{name}", res.storage_prefix()),
        }
    }

    /// The key prefix of a list (all namespaces when `namespace` is `None`).
    pub fn prefix(res: &ResourceInfo, namespace: Option<&str>) -> String {
        match (res.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", res.storage_prefix()),
            _ => res.storage_prefix(),
        }
    }

    /// Decodes a stored value and stamps `apiVersion`, `kind` and `resourceVersion`.
    pub fn decode(res: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
        let obj: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
        let mut obj = crate::registry::conversion::from_storage(res, obj);
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(obj)
    }

    fn encode(res: &ResourceInfo, obj: &Value) -> ApiResult<Vec<u8>> {
        let mut stored = crate::registry::conversion::to_storage(res, obj.clone());
        // The revision is the store's; never persist a stale copy of it.
        meta_mut(&mut stored).remove("resourceVersion");
        serde_json::to_vec(&stored).map_err(|e| ApiError::internal(format!("encode: {e}")))
    }

    /// Reads one object.
    pub async fn get(&self, res: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let kv = self
            .store
            .get(&Self::key(res, ns, name))
            .await
            .map_err(|e| ApiError::from_storage(res, name, &e))?
            .ok_or_else(|| ApiError::not_found(res, name))?;
        Self::decode(res, &kv)
    }

    async fn get_kv(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<KeyValue> {
        self.store
            .get(&Self::key(res, ns, name))
            .await
            .map_err(|e| ApiError::from_storage(res, name, &e))?
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Lists objects, filtered and paginated.
    pub async fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
    ) -> ApiResult<ListPage> {
        let filter = Filter::new(
            res,
            params.label_selector.as_deref(),
            params.field_selector.as_deref(),
        )?;
        let prefix = Self::prefix(res, ns);
        let (mut revision, mut start_after) = match &params.continue_token {
            Some(t) if !t.is_empty() => {
                let (rv, start) = decode_continue(t)?;
                (Some(rv), Some(start))
            }
            _ => (None, None),
        };
        let limit = params.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        loop {
            let page = self
                .store
                .list(
                    &prefix,
                    ListOptions {
                        limit: limit.map(|l| (l - items.len()).max(1)),
                        start_after: start_after.clone(),
                        revision,
                    },
                )
                .await
                .map_err(|e| match e {
                    storage::Error::Compacted { .. } => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    other => ApiError::from_storage(res, "", &other),
                })?;
            revision = Some(page.revision);
            let last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let obj = Self::decode(res, kv)?;
                if filter.matches(res, &obj) {
                    items.push(obj);
                }
            }
            let full = limit.is_some_and(|l| items.len() >= l);
            if !page.more || limit.is_none() || full {
                let continue_token = match (page.more, last_key) {
                    (true, Some(k)) if limit.is_some() => Some(encode_continue(page.revision, &k)),
                    _ => None,
                };
                return Ok(ListPage {
                    items,
                    resource_version: page.revision,
                    continue_token,
                });
            }
            start_after = last_key;
        }
    }

    /// One page of stored objects as they are, for unfiltered lists answered without decoding:
    /// `(items, revision, continue token)`. `None` for resources whose stored shape differs
    /// from what they serve (converted versions).
    pub async fn list_raw(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<Option<(Vec<KeyValue>, i64, Option<String>)>> {
        if crate::registry::conversion::converts(res) {
            return Ok(None);
        }
        let (revision, start_after) = match continue_token.filter(|t| !t.is_empty()) {
            Some(t) => {
                let (rv, start) = decode_continue(t)?;
                (Some(rv), Some(start))
            }
            None => (None, None),
        };
        let limit = limit.filter(|l| *l > 0);
        let page = self
            .store
            .list(&Self::prefix(res, ns), ListOptions { limit, start_after, revision })
            .await
            .map_err(|e| match e {
                storage::Error::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => ApiError::from_storage(res, "", &other),
            })?;
        let token = match (page.more, page.items.last()) {
            (true, Some(last)) if limit.is_some() => {
                Some(encode_continue(page.revision, &last.key))
            }
            _ => None,
        };
        Ok(Some((page.items, page.revision, token)))
    }

    fn strategy(res: &ResourceInfo) -> Box<dyn Strategy> {
        strategies::strategy_for(res)
    }

    /// Checks that the namespace of a namespaced create exists and is not terminating.
    async fn check_namespace(&self, res: &ResourceInfo, ns: Option<&str>) -> ApiResult<()> {
        let Some(ns) = ns.filter(|_| res.namespaced) else {
            return Ok(());
        };
        let Some(nsres) = resources::find("", "v1", "namespaces") else {
            return Ok(());
        };
        match self.get(nsres, None, ns).await {
            Ok(obj) => {
                if obj
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|v| !v.is_null())
                {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        res.plural,
                        ""
                    )));
                }
                Ok(())
            }
            Err(e) if e.code == 404 => Err(ApiError::not_found(nsres, ns)),
            Err(e) => Err(e),
        }
    }

    /// Decodes and applies `fieldValidation`; returns the object and warnings.
    pub fn decode_input(
        &self,
        res: &ResourceInfo,
        obj: Value,
        validation: FieldValidation,
    ) -> ApiResult<(Value, Vec<String>)> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            if av != res.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    res.api_version()
                )));
            }
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
            if kind != res.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({kind}) does not match the expected kind ({})",
                    res.kind
                )));
            }
        }
        let decoded = Self::strategy(res)
            .decode(obj)
            .map_err(|e| ApiError::bad_request(e.message))?;
        let mut warnings = Vec::new();
        if !decoded.unknown_fields.is_empty() {
            match validation {
                FieldValidation::Strict => {
                    let list = decoded
                        .unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {list}"
                    )));
                }
                FieldValidation::Warn => {
                    for f in &decoded.unknown_fields {
                        warnings.push(format!("unknown field \"{}\"", f.trim_start_matches('.')));
                    }
                }
                FieldValidation::Ignore => {}
            }
        }
        let mut object = decoded.object;
        object["apiVersion"] = json!(res.api_version());
        object["kind"] = json!(res.kind);
        Ok((object, warnings))
    }

    /// Creates an object (already decoded by [`Self::decode_input`]).
    pub async fn create(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let strategy = Self::strategy(res);
        {
            let meta = meta_mut(&mut obj);
            match (
                res.namespaced,
                ns,
                meta.get("namespace").and_then(Value::as_str),
            ) {
                (true, Some(url_ns), Some(body_ns)) if body_ns != url_ns && !body_ns.is_empty() => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (true, Some(url_ns), _) => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
                (false, _, _) => {
                    meta.remove("namespace");
                }
                (true, None, _) => {
                    return Err(ApiError::bad_request(
                        "a namespace is required for namespaced resources",
                    ));
                }
            }
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(f);
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            if strategy.tracks_generation() {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        strategy.prepare_for_create(&mut obj);
        strategy.default(&mut obj);
        let generate = meta_str(&obj, "name").is_none_or(str::is_empty)
            && meta_str(&obj, "generateName").is_some_and(|g| !g.is_empty());
        if meta_str(&obj, "name").is_none_or(str::is_empty) && !generate {
            return Err(ApiError::invalid(
                res.kind,
                res,
                "",
                &[FieldError {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        self.check_namespace(res, ns).await?;
        if let (true, "Pod", Some(ns)) = (res.group.is_empty(), res.kind, ns) {
            crate::registry::admission_serviceaccount::admit(self, ns, &mut obj).await?;
        }
        crate::apiserver::patch::update_managed_fields(
            None,
            &mut obj,
            &opts.field_manager,
            "Update",
            &res.api_version(),
            res.kind,
            "",
            &now_rfc3339(),
        );
        let _alloc = if res.kind == "Service" {
            let guard = self.alloc_lock.lock().await;
            self.allocate_service(&mut obj, None).await?;
            strategies::services::fix_ip_families(&mut obj);
            Some(guard)
        } else {
            None
        };
        for attempt in 0..3 {
            if generate {
                let base = meta_str(&obj, "generateName")
                    .unwrap_or_default()
                    .to_string();
                meta_mut(&mut obj)
                    .insert("name".into(), json!(format!("{base}{}", random_suffix(5))));
            }
            let name = meta_str(&obj, "name").unwrap_or_default().to_string();
            let errors = strategy.validate_create(&obj);
            if !errors.is_empty() {
                return Err(ApiError::invalid(res.kind, res, &name, &errors));
            }
            if opts.dry_run {
                if self
                    .store
                    .get(&Self::key(res, ns, &name))
                    .await
                    .map_err(|e| ApiError::from_storage(res, &name, &e))?
                    .is_some()
                {
                    return Err(ApiError::already_exists(res, &name));
                }
                return Ok(obj);
            }
            match self
                .store
                .create(&Self::key(res, ns, &name), Self::encode(res, &obj)?)
                .await
            {
                Ok(kv) => return Self::decode(res, &kv),
                Err(storage::Error::AlreadyExists { .. }) if generate && attempt < 2 => continue,
                Err(e) => return Err(ApiError::from_storage(res, &name, &e)),
            }
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// Replaces an object (PUT), or its status with `subresource = Some("status")`.
    pub async fn update(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if let Some(body_name) = meta_str(&obj, "name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        let precondition = meta_str(&obj, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let old = match self.get_kv(res, ns, name).await {
            Ok(kv) => kv,
            Err(e) if e.code == 404 && subresource.is_none() && allow_create_on_update(res) => {
                let mut obj = obj;
                meta_mut(&mut obj).insert("name".into(), json!(name));
                return self.create(res, ns, obj, opts).await;
            }
            Err(e) => return Err(e),
        };
        self.write_update(res, ns, name, old, obj, precondition, subresource, opts)
            .await
    }

    /// Read-modify-write with retries: `f` gets the current object and returns the new one.
    /// Used by PATCH and by subresources such as binding, scale and finalize.
    pub async fn guaranteed_update<F>(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mut f: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(Value) -> ApiResult<Value> + Send,
    {
        let mut last = None;
        for _ in 0..UPDATE_RETRIES {
            let old = self.get_kv(res, ns, name).await?;
            let current = Self::decode(res, &old)?;
            let current_rv = old.mod_revision.to_string();
            let new = f(current)?;
            // A resourceVersion the caller put in the new object is a precondition.
            let precondition = meta_str(&new, "resourceVersion")
                .filter(|rv| !rv.is_empty() && *rv != current_rv)
                .map(str::to_string);
            match self
                .write_update(
                    res,
                    ns,
                    name,
                    old,
                    new,
                    precondition.clone(),
                    subresource,
                    opts,
                )
                .await
            {
                Err(e) if e.code == 409 && e.reason == "Conflict" && precondition.is_none() => {
                    last = Some(e)
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ApiError::internal("update retries exhausted")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        old_kv: KeyValue,
        new: Value,
        precondition: Option<String>,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if let Some(rv) = &precondition {
            if rv != &old_kv.mod_revision.to_string() {
                return Err(ApiError::conflict(
                    res,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let strategy = Self::strategy(res);
        let old = Self::decode(res, &old_kv)?;
        let mut new = new;
        new["apiVersion"] = json!(res.api_version());
        new["kind"] = json!(res.kind);
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut new);
            meta.insert("name".into(), json!(name));
            if res.namespaced {
                if let Some(ns) = ns {
                    meta.insert("namespace".into(), json!(ns));
                }
            } else {
                meta.remove("namespace");
            }
            // Set by the server only.
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        meta.insert(f.into(), v.clone());
                    }
                    None => {
                        meta.remove(f);
                    }
                }
            }
            meta.remove("resourceVersion");
        }
        // binding (spec.nodeName) and finalize (spec.finalizers) change exactly what the
        // main-resource rules forbid; their handlers change nothing else.
        let own_path = matches!(subresource, Some("binding" | "finalize"));
        match subresource {
            Some("status") => strategy.prepare_for_status_update(&mut new, &old),
            _ if own_path => {}
            _ => strategy.prepare_for_update(&mut new, &old),
        }
        strategy.default(&mut new);
        if strategy.tracks_generation() && spec_of(&new) != spec_of(&old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let _alloc = if res.kind == "Service" && subresource.is_none() {
            let guard = self.alloc_lock.lock().await;
            self.allocate_service(&mut new, Some(&old)).await?;
            strategies::services::fix_ip_families(&mut new);
            Some(guard)
        } else {
            None
        };
        let errors = if own_path {
            Vec::new()
        } else {
            strategy.validate_update(&new, &old)
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(res.kind, res, name, &errors));
        }
        let mut old_cmp = old.clone();
        meta_mut(&mut old_cmp).remove("resourceVersion");
        crate::apiserver::patch::update_managed_fields(
            Some(&old_cmp),
            &mut new,
            &opts.field_manager,
            "Update",
            &res.api_version(),
            res.kind,
            if subresource == Some("status") {
                "status"
            } else {
                ""
            },
            &now_rfc3339(),
        );
        if without_managed_time(&new) == without_managed_time(&old_cmp) {
            // A no-op update keeps the resourceVersion, as upstream.
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(new);
        }
        let key = Self::key(res, ns, name);
        let deleting = new
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        if deleting && !blocks_removal(res, &new) {
            // The last finalizer is gone: the object goes.
            let kv = self
                .store
                .delete(&key, Some(old_kv.mod_revision))
                .await
                .map_err(|e| ApiError::from_storage(res, name, &e))?;
            let mut gone = new;
            meta_mut(&mut gone)
                .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            return Ok(gone);
        }
        let kv = self
            .store
            .update(&key, Self::encode(res, &new)?, Some(old_kv.mod_revision))
            .await
            .map_err(|e| ApiError::from_storage(res, name, &e))?;
        Self::decode(res, &kv)
    }

    /// Deletes an object: at once, or by marking it when finalizers or a pod grace period
    /// must run first.
    pub async fn delete(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        for _ in 0..UPDATE_RETRIES {
            let kv = self.get_kv(res, ns, name).await?;
            let obj = Self::decode(res, &kv)?;
            if let Some(uid) = &opts.precondition_uid {
                if meta_str(&obj, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&obj, "uid").unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if rv != &kv.mod_revision.to_string() {
                    return Err(ApiError::conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    ));
                }
            }
            let mut marked = obj.clone();
            let mut fins = finalizers(&obj);
            match opts.propagation_policy.as_deref() {
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                _ => {}
            }
            if res.kind == "Namespace" && namespace_finalizers_pending(&obj) {
                // The namespace controller empties it, then clears spec.finalizers via /finalize.
                marked["status"]["phase"] = json!("Terminating");
                let already = obj
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|v| !v.is_null());
                match self
                    .mark_deleted(res, ns, name, kv, marked, fins, 0, opts, already)
                    .await
                {
                    // Lost a race with another writer (a kubelet, the scheduler): re-read.
                    Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
                    other => return other,
                }
            }
            let grace = if res.kind == "Pod" {
                pod_grace(&obj, opts)
            } else {
                0
            };
            let already = obj
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            if !fins.is_empty() || grace > 0 {
                if already && grace == 0 && fins == finalizers(&obj) {
                    return Ok(Deleted {
                        object: obj,
                        removed: false,
                    });
                }
                match self
                    .mark_deleted(res, ns, name, kv, marked, fins, grace, opts, already)
                    .await
                {
                    // Lost a race with another writer (a kubelet, the scheduler): re-read.
                    Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
                    other => return other,
                }
            }
            if opts.dry_run {
                return Ok(Deleted {
                    object: obj,
                    removed: true,
                });
            }
            match self
                .store
                .delete(&Self::key(res, ns, name), Some(kv.mod_revision))
                .await
            {
                Ok(gone) => {
                    let mut object = Self::decode(res, &gone)?;
                    meta_mut(&mut object).insert(
                        "resourceVersion".into(),
                        json!(gone.mod_revision.to_string()),
                    );
                    return Ok(Deleted {
                        object,
                        removed: true,
                    });
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(res, name, &e)),
            }
        }
        Err(ApiError::internal("delete retries exhausted"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn mark_deleted(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        kv: KeyValue,
        mut marked: Value,
        fins: Vec<String>,
        grace: i64,
        opts: &DeleteOptions,
        already: bool,
    ) -> ApiResult<Deleted> {
        {
            let meta = meta_mut(&mut marked);
            if !fins.is_empty() {
                meta.insert("finalizers".into(), json!(fins));
            }
            let shorter = meta
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_none_or(|g| grace < g);
            if !already || shorter {
                meta.insert("deletionTimestamp".into(), json!(rfc3339_after(grace)));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            meta.remove("resourceVersion");
        }
        if opts.dry_run {
            return Ok(Deleted {
                object: marked,
                removed: false,
            });
        }
        let kv = self
            .store
            .update(
                &Self::key(res, ns, name),
                Self::encode(res, &marked)?,
                Some(kv.mod_revision),
            )
            .await
            .map_err(|e| ApiError::from_storage(res, name, &e))?;
        Ok(Deleted {
            object: Self::decode(res, &kv)?,
            removed: false,
        })
    }

    /// Fills ClusterIP(s) and NodePorts of a Service, keeping those already allocated.
    async fn allocate_service(&self, svc: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        let Some(res) = resources::find("", "v1", "services") else {
            return Ok(());
        };
        let name = meta_str(svc, "name").unwrap_or_default().to_string();
        let all = self
            .store
            .list(&res.storage_prefix(), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_storage(res, &name, &e))?;
        let my_key = (
            meta_str(svc, "namespace").unwrap_or_default().to_string(),
            name.clone(),
        );
        let mut used_ips: HashSet<IpAddr> = HashSet::new();
        let mut used_ports: HashSet<u16> = HashSet::new();
        for kv in &all.items {
            // Only the allocated fields are decoded: this runs over every Service on each
            // create, so building whole JSON trees made 10k creates quadratic in practice.
            let Ok(other) = serde_json::from_slice::<AllocatedService>(&kv.value) else {
                continue;
            };
            if (
                other.metadata.namespace.as_str(),
                other.metadata.name.as_str(),
            ) == (my_key.0.as_str(), my_key.1.as_str())
            {
                continue;
            }
            used_ips.extend(other.ips());
            used_ports.extend(other.node_ports());
        }
        let svc_type = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type != "ExternalName" {
            let old_ip = old
                .and_then(|o| o.pointer("/spec/clusterIP"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let requested = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(str::to_string);
            let ip = match (requested.as_deref(), old_ip.as_deref()) {
                (Some("None"), _) => "None".to_string(),
                (Some(r), Some(o)) if r == o => o.to_string(),
                (None | Some(""), Some(o)) => o.to_string(),
                (req, _) => {
                    let requested_ip = match req.filter(|s| !s.is_empty()) {
                        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
                            ApiError::invalid(
                                "Service",
                                res,
                                &name,
                                &[FieldError::invalid(
                                    "spec.clusterIPs[0]",
                                    &json!(s),
                                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                                )],
                            )
                        })?),
                        None => None,
                    };
                    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
                    allocator::allocate_cluster_ip(
                        &self.opts.service_cidr,
                        &used_ips,
                        requested_ip,
                        seed,
                    )
                    .map_err(|e| ApiError::invalid("Service", res, &name, &[e]))?
                    .to_string()
                }
            };
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        if svc_type == "NodePort" || svc_type == "LoadBalancer" {
            let old_ports: Vec<(i64, String, u16)> = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            let port = p.get("port")?.as_i64()?;
                            let proto = p
                                .get("protocol")
                                .and_then(Value::as_str)
                                .unwrap_or("TCP")
                                .to_string();
                            let np = u16::try_from(p.get("nodePort")?.as_i64()?).ok()?;
                            Some((port, proto, np))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                let mut taken: HashSet<u16> = used_ports.clone();
                for (i, p) in ports.iter_mut().enumerate() {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string();
                    let requested = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0);
                    let keep = old_ports
                        .iter()
                        .find(|(op, opr, _)| *op == port && *opr == proto)
                        .map(|t| t.2);
                    let np = match (requested, keep) {
                        (Some(r), Some(k)) if r == k => k,
                        (None, Some(k)) => k,
                        (req, _) => {
                            let seed = uuid::Uuid::new_v4().as_u64_pair().1;
                            allocator::allocate_node_port(
                                self.opts.node_port_range.clone(),
                                &taken,
                                req,
                                seed,
                            )
                            .map_err(|mut e| {
                                e.field = format!("spec.ports[{i}].nodePort");
                                ApiError::invalid("Service", res, &name, &[e])
                            })?
                        }
                    };
                    taken.insert(np);
                    p["nodePort"] = json!(np);
                }
            }
        }
        Ok(())
    }
}

fn allow_create_on_update(res: &ResourceInfo) -> bool {
    matches!(res.kind, "Endpoints" | "Lease" | "Event" | "EndpointSlice")
}

/// What a `generation` bump compares: everything but metadata and status.
fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn without_managed_time(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(entries) = o
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    o
}

/// Whether a marked object must stay: finalizers, a pod's grace period, a namespace's
/// spec finalizers.
fn blocks_removal(res: &ResourceInfo, obj: &Value) -> bool {
    !finalizers(obj).is_empty()
        || pending_grace(res, obj)
        || (res.kind == "Namespace" && namespace_finalizers_pending(obj))
}

fn namespace_finalizers_pending(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// A pod marked with a grace period stays until the kubelet confirms with a 0-grace delete.
fn pending_grace(res: &ResourceInfo, obj: &Value) -> bool {
    res.kind == "Pod"
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0)
}

/// The grace period a pod delete uses: 0 for pods never scheduled or already terminal, as
/// upstream deletes those at once.
fn pod_grace(pod: &Value, opts: &DeleteOptions) -> i64 {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let spec_grace = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let grace = opts.grace_period_seconds.unwrap_or(spec_grace).max(0);
    match pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        Some(current) => grace.min(current),
        None => grace,
    }
}

/// The fields of a stored Service that hold allocations (cluster IPs, node ports).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AllocatedService {
    metadata: AllocatedMeta,
    spec: AllocatedSpec,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AllocatedMeta {
    namespace: String,
    name: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AllocatedSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    ports: Option<Vec<AllocatedPort>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AllocatedPort {
    #[serde(rename = "nodePort")]
    node_port: Option<i64>,
}

impl AllocatedService {
    fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let spec = &self.spec;
        spec.cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|s| s.parse().ok())
    }

    fn node_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.node_port?).ok())
            .filter(|p| *p != 0)
    }
}

fn encode_continue(rv: i64, start: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, start.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "/registry/pods/default/web");
        assert_eq!(
            decode_continue(&t).expect("valid"),
            (42, "/registry/pods/default/web".to_string())
        );
        assert!(decode_continue("nope!").is_err());
    }

    #[test]
    fn pod_grace_rules() {
        let unscheduled = json!({"spec": {}});
        assert_eq!(pod_grace(&unscheduled, &DeleteOptions::default()), 0);
        let running = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 20}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace(&running, &DeleteOptions::default()), 20);
        let forced = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(pod_grace(&running, &forced), 0);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(pod_grace(&done, &DeleteOptions::default()), 0);
    }

    #[test]
    fn generated_names_use_upstream_alphabet() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| NAME_ALPHABET.contains(&b)));
    }
}
