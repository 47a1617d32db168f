//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into Kubernetes JSON.
//!
//! client-go sends typed-client writes (`kubectl create configmap`, `kubectl drain`'s Eviction,
//! `kubectl create token`, …) as protobuf and never falls back to JSON, while the API server
//! works on `serde_json::Value`. A body is the magic `k8s\0` followed by a `runtime.Unknown`
//! (apimachinery pkg/runtime/types.go) whose `raw` holds the object's generated.proto encoding.
//! [`schema`] is the message table generated from k8s-pb and the Go types
//! (controlplane/tools/gen_pb_schema.py); JSON field names are recovered by matching the
//! table's snake_case names against our OpenAPI definitions, since prost drops the originals.

#[rustfmt::skip]
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Map, Value};

/// The four bytes that start every Kubernetes protobuf body (apimachinery
/// pkg/runtime/serializer/protobuf/protobuf.go `protoEncodingPrefix`).
pub const MAGIC: &[u8; 4] = b"k8s\x00";

const META_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

/// Nesting bound: the served types nest far less, so deeper input is hostile.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the Kubernetes magic bytes \"k8s\\x00\"")]
    Magic,
    /// The envelope names no apiVersion or kind.
    #[error("protobuf envelope has no apiVersion and kind")]
    MissingTypeMeta,
    /// The envelope's `contentEncoding` is set (upstream never sets it for requests).
    #[error("unsupported protobuf contentEncoding {0:?}")]
    ContentEncoding(String),
    /// No served message matches the envelope's apiVersion and kind.
    #[error("no protobuf message known for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The bytes of one message are malformed.
    #[error("decoding protobuf {message}: {source}")]
    Decode {
        /// The full name of the innermost message being decoded.
        message: &'static str,
        /// What was wrong.
        #[source]
        source: WireError,
    },
}

/// A malformed protobuf encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends inside a key, varint, fixed number or length-delimited field.
    #[error("unexpected end of input")]
    Truncated,
    /// A varint is longer than 10 bytes.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A field's wire type does not match its declared type.
    #[error("field {tag} has wire type {wire}, expected {expected}")]
    WireType {
        /// The field number.
        tag: u32,
        /// The wire type found.
        wire: u8,
        /// The wire type the schema requires.
        expected: u8,
    },
    /// A field number is 0 or exceeds the protobuf maximum, or a wire type is unknown or a group.
    #[error("invalid key: field {tag}, wire type {wire}")]
    Key {
        /// The field number.
        tag: u64,
        /// The wire type.
        wire: u8,
    },
    /// A string field is not UTF-8.
    #[error("field {tag} is not valid UTF-8")]
    Utf8 {
        /// The field number.
        tag: u32,
    },
    /// Messages nest deeper than any served type does.
    #[error("messages nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A timestamp is outside the representable range.
    #[error("timestamp {seconds}s out of range")]
    Time {
        /// Seconds since the Unix epoch.
        seconds: i64,
    },
    /// The table references a message it does not define (a generator bug).
    #[error("schema has no message {0}")]
    UnknownMessage(String),
}

/// Field type in the generated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    /// A message, by full name (`io.k8s.api.core.v1.Container`).
    Message(&'static str),
}

/// Cardinality of a field in the generated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single(Ty),
    Repeated(Ty),
    /// `map<key, value>`.
    Map(Ty, Ty),
}

/// A non-pointer Go field tagged `omitempty`: Go always writes it on the wire, JSON omits its
/// zero value, so a zero on the wire means "unset" (`namespace: ""` would defeat defaulting).
const OMIT_ZERO: u8 = 1;
/// An embedded Go struct tagged `json:",inline"`: its fields are the parent's in JSON
/// (`Volume.volumeSource`, `Probe.handler`, `ConfigMapKeySelector.localObjectReference`).
const INLINE: u8 = 2;

/// One field of a message.
#[derive(Debug)]
struct Field {
    tag: u32,
    /// prost's snake_case name.
    name: &'static str,
    shape: Shape,
    flags: u8,
}

/// One message of the generated table.
#[derive(Debug)]
struct Message {
    name: &'static str,
    /// A Go `type X []string` (ExtraValue, Verbs): JSON is the array of field 1.
    list_wrapper: bool,
    fields: &'static [Field],
}

fn message(name: &str) -> Option<&'static Message> {
    schema::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &schema::MESSAGES[i])
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` body into its apiVersion, kind and the object
/// as upstream's JSON encoding would write it (without `apiVersion`/`kind`).
pub fn decode_request(body: &[u8]) -> Result<(String, String, Value), ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::Magic)?;
    let unknown = decode_envelope(envelope).map_err(|source| ProtobufError::Decode {
        message: "io.k8s.apimachinery.pkg.runtime.Unknown",
        source,
    })?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(unknown.content_encoding));
    }
    if unknown.api_version.is_empty() || unknown.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let msg = message_for(&unknown.api_version, &unknown.kind).ok_or_else(|| {
        ProtobufError::UnknownKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        }
    })?;
    let value = decode_message(msg, unknown.raw, 0)?;
    Ok((unknown.api_version, unknown.kind, value))
}

/// The message for an apiVersion and kind: `v1`/`ConfigMap` → `io.k8s.api.core.v1.ConfigMap`,
/// `rbac.authorization.k8s.io/v1`/`Role` → `io.k8s.api.rbac.v1.Role`.
fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    // Package names are the group's first label (`coordination.k8s.io` → coordination).
    let package = match group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    let name = if package == "meta" {
        format!("{META_V1}.{kind}")
    } else {
        format!("io.k8s.api.{package}.{version}.{kind}")
    };
    // DeleteOptions is registered in every group version (client-go may label it `apps/v1`).
    message(&name).or_else(|| {
        (kind == "DeleteOptions")
            .then(|| message(&format!("{META_V1}.DeleteOptions")))
            .flatten()
    })
}

/// The fields of `runtime.Unknown` (tags 1 typeMeta{1 apiVersion, 2 kind}, 2 raw,
/// 3 contentEncoding, 4 contentType).
#[derive(Debug, Default)]
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

fn decode_envelope(buf: &[u8]) -> Result<Unknown<'_>, WireError> {
    let mut out = Unknown::default();
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => {
                let mut tm = Reader::new(r.bytes()?);
                while let Some((tag, wire)) = tm.key()? {
                    match (tag, wire) {
                        (1, LEN) => out.api_version = utf8(tm.bytes()?, tag)?,
                        (2, LEN) => out.kind = utf8(tm.bytes()?, tag)?,
                        _ => tm.skip(wire)?,
                    }
                }
            }
            (2, LEN) => out.raw = r.bytes()?,
            (3, LEN) => out.content_encoding = utf8(r.bytes()?, tag)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A bounds-checked protobuf wire reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 9 && b > 1 {
                    return Err(WireError::VarintOverflow);
                }
                return Ok(v);
            }
        }
        Err(WireError::VarintOverflow)
    }

    /// The next field key, `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, u8)>, WireError> {
        if self.at_end() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = key >> 3;
        // Low three bits are the wire type by definition.
        let wire = (key & 7) as u8;
        match (u32::try_from(tag), wire) {
            (Ok(t), VARINT | FIXED64 | LEN | FIXED32) if (1..=0x1fff_ffff).contains(&t) => {
                Ok(Some((t, wire)))
            }
            _ => Err(WireError::Key { tag, wire }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
        self.take(n)
    }

    fn skip(&mut self, wire: u8) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => Err(WireError::Key { tag: 0, wire }),
        }
    }
}

fn utf8(b: &[u8], tag: u32) -> Result<String, WireError> {
    String::from_utf8(b.to_vec()).map_err(|_| WireError::Utf8 { tag })
}

/// The wire type a scalar or message of type `ty` is written with.
fn wire_of(ty: Ty) -> u8 {
    match ty {
        Ty::Bool | Ty::Int32 | Ty::Int64 => VARINT,
        Ty::String | Ty::Bytes | Ty::Message(_) => LEN,
    }
}

/// JSON names of every table field, aligned with `Message::fields`; computed once.
fn json_names() -> &'static HashMap<&'static str, Vec<String>> {
    static NAMES: OnceLock<HashMap<&'static str, Vec<String>>> = OnceLock::new();
    NAMES.get_or_init(|| build_json_names(&super::openapi::definition_properties()))
}

/// `host_ip` and `hostIP` both normalise to `hostip`.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `pod_ips` → `podIps`: the best guess for a field our OpenAPI schema does not know.
fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn build_json_names(
    definitions: &BTreeMap<&'static str, Vec<&'static str>>,
) -> HashMap<&'static str, Vec<String>> {
    let mut out = HashMap::new();
    for msg in schema::MESSAGES {
        let props: HashMap<String, &str> = definitions
            .get(msg.name)
            .map(|p| p.iter().map(|n| (normalise(n), *n)).collect())
            .unwrap_or_default();
        let names = msg
            .fields
            .iter()
            .map(|f| match props.get(&normalise(f.name)) {
                Some(n) => (*n).to_string(),
                None => {
                    // Only fields of types we never serve, or newer than our schema, get here.
                    if !props.is_empty() && f.flags & INLINE == 0 {
                        tracing::debug!(
                            message = msg.name,
                            field = f.name,
                            "protobuf field has no OpenAPI property"
                        );
                    }
                    lower_camel(f.name)
                }
            })
            .collect();
        out.insert(msg.name, names);
    }
    out
}

/// Accumulated value of one field while a message is read.
enum Acc {
    Single(Value),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn decode_message(msg: &'static Message, buf: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let err = |source| ProtobufError::Decode {
        message: msg.name,
        source,
    };
    if depth > MAX_DEPTH {
        return Err(err(WireError::TooDeep));
    }
    if let Some(v) = decode_special(msg.name, buf).map_err(err)? {
        return Ok(v);
    }
    let mut acc: BTreeMap<usize, Acc> = BTreeMap::new();
    let mut r = Reader::new(buf);
    while let Some((tag, wire)) = r.key().map_err(err)? {
        let Some(idx) = msg.fields.iter().position(|f| f.tag == tag) else {
            r.skip(wire).map_err(err)?;
            continue;
        };
        let field = &msg.fields[idx];
        match field.shape {
            Shape::Single(ty) => {
                let v = read_value(&mut r, ty, tag, wire, msg.name, depth)?;
                acc.insert(idx, Acc::Single(v));
            }
            Shape::Repeated(ty) => {
                let mut items = Vec::new();
                if wire == LEN && wire_of(ty) != LEN {
                    // Packed scalars: one length-delimited run of values.
                    let mut packed = Reader::new(r.bytes().map_err(err)?);
                    while !packed.at_end() {
                        items.push(read_value(
                            &mut packed,
                            ty,
                            tag,
                            wire_of(ty),
                            msg.name,
                            depth,
                        )?);
                    }
                } else {
                    items.push(read_value(&mut r, ty, tag, wire, msg.name, depth)?);
                }
                match acc.entry(idx).or_insert_with(|| Acc::List(Vec::new())) {
                    Acc::List(l) => l.extend(items),
                    other => *other = Acc::List(items),
                }
            }
            Shape::Map(kt, vt) => {
                if wire != LEN {
                    return Err(err(WireError::WireType {
                        tag,
                        wire,
                        expected: LEN,
                    }));
                }
                let (k, v) = read_entry(r.bytes().map_err(err)?, kt, vt, msg.name, depth)?;
                match acc.entry(idx).or_insert_with(|| Acc::Map(Map::new())) {
                    Acc::Map(m) => {
                        m.insert(k, v);
                    }
                    other => *other = Acc::Map(Map::from_iter([(k, v)])),
                }
            }
        }
    }
    if msg.list_wrapper {
        return Ok(match acc.remove(&0) {
            Some(Acc::List(l)) => Value::Array(l),
            _ => Value::Array(Vec::new()),
        });
    }
    let names = json_names().get(msg.name);
    let mut out = Map::new();
    for (idx, a) in acc {
        let field = &msg.fields[idx];
        let value = match a {
            Acc::Single(v) if field.flags & OMIT_ZERO != 0 && is_zero(&v) => continue,
            Acc::Single(v) => v,
            Acc::List(l) => Value::Array(l),
            Acc::Map(m) => Value::Object(m),
        };
        if field.flags & INLINE != 0 {
            if let Value::Object(inner) = value {
                out.extend(inner);
                continue;
            }
        }
        let name = names
            .and_then(|n| n.get(idx).cloned())
            .unwrap_or_else(|| lower_camel(field.name));
        out.insert(name, value);
    }
    Ok(Value::Object(out))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn read_entry(
    buf: &[u8],
    kt: Ty,
    vt: Ty,
    ctx: &'static str,
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let mut r = Reader::new(buf);
    let mut key = None;
    let mut value = None;
    let entry_err = |source| ProtobufError::Decode {
        message: ctx,
        source,
    };
    while let Some((tag, wire)) = r.key().map_err(entry_err)? {
        match tag {
            1 => key = Some(read_value(&mut r, kt, tag, wire, ctx, depth)?),
            2 => value = Some(read_value(&mut r, vt, tag, wire, ctx, depth)?),
            _ => r.skip(wire).map_err(entry_err)?,
        }
    }
    let key = match key {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    // A missing value is the type's zero value, as in proto3 map semantics.
    let value = match value {
        Some(v) => v,
        None => zero_value(vt, depth)?,
    };
    Ok((key, value))
}

fn zero_value(ty: Ty, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 => Value::from(0),
        Ty::Message(name) => decode_message(lookup(name)?, &[], depth + 1)?,
    })
}

fn lookup(name: &'static str) -> Result<&'static Message, ProtobufError> {
    message(name).ok_or(ProtobufError::Decode {
        message: name,
        source: WireError::UnknownMessage(name.to_string()),
    })
}

/// Reads one value of type `ty` written with wire type `wire`; `ctx` names the enclosing
/// message in errors.
fn read_value(
    r: &mut Reader<'_>,
    ty: Ty,
    tag: u32,
    wire: u8,
    ctx: &'static str,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let expected = wire_of(ty);
    let err = |source| ProtobufError::Decode {
        message: ctx,
        source,
    };
    if wire != expected {
        return Err(err(WireError::WireType {
            tag,
            wire,
            expected,
        }));
    }
    Ok(match ty {
        Ty::String => Value::String(utf8(r.bytes().map_err(err)?, tag).map_err(err)?),
        Ty::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes().map_err(err)?))
        }
        Ty::Bool => Value::Bool(r.varint().map_err(err)? != 0),
        // int32 is sign-extended to 64 bits on the wire; truncation restores it.
        Ty::Int32 => Value::from(r.varint().map_err(err)? as i64 as i32),
        Ty::Int64 => Value::from(r.varint().map_err(err)? as i64),
        Ty::Message(name) => {
            let body = r.bytes().map_err(err)?;
            decode_message(lookup(name)?, body, depth + 1)?
        }
    })
}

/// Types whose JSON form is not an object of their fields (apimachinery's custom marshalers).
fn decode_special(name: &str, buf: &[u8]) -> Result<Option<Value>, WireError> {
    Ok(Some(match name {
        // Go writes a zero Time as an empty message and its JSON as null.
        TIME | MICRO_TIME if buf.is_empty() => Value::Null,
        TIME | MICRO_TIME => {
            let (seconds, nanos) = seconds_nanos(buf)?;
            Value::String(format_time(seconds, nanos, name == MICRO_TIME)?)
        }
        DURATION => {
            let nanos = int_field(buf, 1)?.unwrap_or(0);
            Value::String(go_duration(nanos))
        }
        QUANTITY => Value::String(string_field(buf, 1)?.unwrap_or_default()),
        INT_OR_STRING => {
            // Type 1 is intstr.String; anything else (0, absent) is intstr.Int.
            if int_field(buf, 1)? == Some(1) {
                Value::String(string_field(buf, 3)?.unwrap_or_default())
            } else {
                Value::from(int_field(buf, 2)?.unwrap_or(0) as i32)
            }
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = bytes_field(buf, 1)?.unwrap_or_default();
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
            }
        }
        _ => return Ok(None),
    }))
}

fn int_field(buf: &[u8], want: u32) -> Result<Option<i64>, WireError> {
    let mut r = Reader::new(buf);
    let mut out = None;
    while let Some((tag, wire)) = r.key()? {
        if tag == want && wire == VARINT {
            out = Some(r.varint()? as i64);
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn bytes_field(buf: &[u8], want: u32) -> Result<Option<&[u8]>, WireError> {
    let mut r = Reader::new(buf);
    let mut out = None;
    while let Some((tag, wire)) = r.key()? {
        if tag == want && wire == LEN {
            out = Some(r.bytes()?);
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn string_field(buf: &[u8], want: u32) -> Result<Option<String>, WireError> {
    bytes_field(buf, want)?.map(|b| utf8(b, want)).transpose()
}

fn seconds_nanos(buf: &[u8]) -> Result<(i64, i32), WireError> {
    let seconds = int_field(buf, 1)?.unwrap_or(0);
    let nanos = int_field(buf, 2)?.unwrap_or(0) as i32;
    Ok((seconds, nanos))
}

/// RFC 3339 in UTC: whole seconds for Time (metav1.Time's JSON drops sub-seconds), six
/// fractional digits for MicroTime (`RFC3339Micro` in micro_time.go).
fn format_time(seconds: i64, nanos: i32, micro: bool) -> Result<String, WireError> {
    let ts = jiff::Timestamp::from_second(seconds).map_err(|_| WireError::Time { seconds })?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S");
    Ok(if micro {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(d: i64) -> String {
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        let (div, digits, unit) = match u {
            1..=999 => (1, 0, "ns"),
            1_000..=999_999 => (1_000, 3, "µs"),
            _ => (1_000_000, 6, "ms"),
        };
        return format!("{sign}{}{unit}", fraction(u / div, u % div, digits));
    }
    let secs = u / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&fraction(s, u % 1_000_000_000, 9));
    out.push('s');
    out
}

/// `int.frac` with `digits` fractional digits, trailing zeros (and a bare point) removed.
fn fraction(int: u64, frac: u64, digits: usize) -> String {
    if frac == 0 || digits == 0 {
        return int.to_string();
    }
    let f = format!("{frac:0digits$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::policy::v1 as policy;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown as PbUnknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message as _;
    use serde_json::json;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    /// `k8s\0` + runtime.Unknown around `obj`, as client-go's protobuf serializer writes it.
    fn body(api_version: &str, kind: &str, obj: &impl prost::Message) -> Vec<u8> {
        let unknown = PbUnknown {
            type_meta: Some(TypeMeta {
                api_version: s(api_version),
                kind: s(kind),
            }),
            raw: Some(obj.encode_to_vec()),
            content_encoding: s(""),
            content_type: s(""),
        };
        let mut out = MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }

    fn decode(api_version: &str, kind: &str, obj: &impl prost::Message) -> Value {
        let (av, k, v) = decode_request(&body(api_version, kind, obj)).expect("decodes");
        assert_eq!((av.as_str(), k.as_str()), (api_version, kind));
        v
    }

    /// ObjectMeta as Go writes it: non-pointer strings and ints always, a zero Time empty.
    fn go_meta(name: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }
    }

    fn int(i: i32) -> IntOrString {
        IntOrString {
            r#type: Some(0),
            int_val: Some(i),
            str_val: s(""),
        }
    }

    fn string(v: &str) -> IntOrString {
        IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: s(v),
        }
    }

    #[test]
    fn table_is_sorted_and_closed() {
        assert!(schema::MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        for m in schema::MESSAGES {
            for f in m.fields {
                let tys = match f.shape {
                    Shape::Single(t) | Shape::Repeated(t) => vec![t],
                    Shape::Map(k, v) => vec![k, v],
                };
                for t in tys {
                    if let Ty::Message(n) = t {
                        assert!(message(n).is_some(), "{}.{} -> {n}", m.name, f.name);
                    }
                }
            }
        }
    }

    #[test]
    fn config_map() {
        let mut meta = go_meta("c");
        meta.labels.insert("app".into(), "web".into());
        let cm = core::ConfigMap {
            metadata: Some(meta),
            data: [
                ("a".to_string(), "1".to_string()),
                ("empty".into(), String::new()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            decode("v1", "ConfigMap", &cm),
            json!({
                "metadata": {"name": "c", "labels": {"app": "web"}, "creationTimestamp": null},
                "data": {"a": "1", "empty": ""},
            })
        );
    }

    #[test]
    fn secret_bytes_are_base64() {
        let secret = core::Secret {
            metadata: Some(go_meta("s")),
            data: [("p".to_string(), b"q".to_vec())].into(),
            r#type: s("Opaque"),
            ..Default::default()
        };
        let v = decode("v1", "Secret", &secret);
        assert_eq!(v["data"], json!({"p": "cQ=="}));
        assert_eq!(v["type"], json!("Opaque"));
        assert!(v.get("stringData").is_none() && v.get("immutable").is_none());
    }

    #[test]
    fn deployment() {
        let container = core::Container {
            name: s("web"),
            image: s("busybox"),
            ports: vec![core::ContainerPort {
                container_port: Some(8080),
                protocol: s("TCP"),
                host_port: Some(0),
                name: s(""),
                host_ip: s(""),
            }],
            env: vec![core::EnvVar {
                name: s("MODE"),
                value: s("prod"),
                ..Default::default()
            }],
            resources: Some(core::ResourceRequirements {
                limits: [("cpu".to_string(), Quantity { string: s("100m") })].into(),
                ..Default::default()
            }),
            readiness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    http_get: Some(core::HttpGetAction {
                        path: s("/healthz"),
                        port: Some(string("http")),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                timeout_seconds: Some(0),
                ..Default::default()
            }),
            image_pull_policy: s(""),
            termination_message_path: s(""),
            stdin: Some(false),
            ..Default::default()
        };
        let d = apps::Deployment {
            metadata: Some(go_meta("d")),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "d".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(go_meta("")),
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        restart_policy: s(""),
                        ..Default::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(string("25%")),
                        max_unavailable: Some(int(1)),
                    }),
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        assert_eq!(
            decode("apps/v1", "Deployment", &d),
            json!({
                "metadata": {"name": "d", "creationTimestamp": null},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": {
                        "metadata": {"creationTimestamp": null},
                        "spec": {"containers": [{
                            "name": "web",
                            "image": "busybox",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}],
                            "resources": {"limits": {"cpu": "100m"}},
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                            },
                        }]},
                    },
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1},
                    },
                },
                "status": {},
            })
        );
    }

    #[test]
    fn service_names_keep_acronyms() {
        let svc = core::Service {
            metadata: Some(go_meta("sv")),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    name: s("80-8080"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: Some(int(8080)),
                    node_port: Some(0),
                    ..Default::default()
                }],
                cluster_ip: s("10.96.0.10"),
                cluster_ips: vec!["10.96.0.10".into()],
                r#type: s("ClusterIP"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode("v1", "Service", &svc);
        assert_eq!(
            v["spec"],
            json!({
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "type": "ClusterIP",
            })
        );
    }

    #[test]
    fn pod_status_ips_and_inline_volume_source() {
        let pod = core::Pod {
            metadata: Some(go_meta("p")),
            spec: Some(core::PodSpec {
                volumes: vec![core::Volume {
                    name: s("scratch"),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                phase: s("Running"),
                host_ip: s("192.168.0.2"),
                host_ips: vec![core::HostIp {
                    ip: s("192.168.0.2"),
                }],
                pod_ip: s("10.0.0.5"),
                pod_ips: vec![core::PodIp { ip: s("10.0.0.5") }],
                start_time: Some(meta::Time {
                    seconds: Some(1_704_164_645),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
        };
        let v = decode("v1", "Pod", &pod);
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "scratch", "emptyDir": {}}])
        );
        assert_eq!(
            v["status"],
            json!({
                "phase": "Running",
                "hostIP": "192.168.0.2",
                "hostIPs": [{"ip": "192.168.0.2"}],
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}],
                "startTime": "2024-01-02T03:04:05Z",
            })
        );
    }

    #[test]
    fn eviction_keeps_explicit_zero_grace_period() {
        let ev = policy::Eviction {
            metadata: Some(go_meta("p")),
            delete_options: Some(meta::DeleteOptions {
                grace_period_seconds: Some(0),
                preconditions: Some(meta::Preconditions {
                    uid: s("u-1"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        assert_eq!(
            decode("policy/v1", "Eviction", &ev)["deleteOptions"],
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}})
        );
    }

    #[test]
    fn delete_options_under_any_group_version() {
        let opts = meta::DeleteOptions {
            propagation_policy: s("Foreground"),
            dry_run: vec!["All".into()],
            ..Default::default()
        };
        let want = json!({"propagationPolicy": "Foreground", "dryRun": ["All"]});
        assert_eq!(decode("meta.k8s.io/v1", "DeleteOptions", &opts), want);
        assert_eq!(decode("apps/v1", "DeleteOptions", &opts), want);
    }

    #[test]
    fn token_request() {
        let tr = authn::TokenRequest {
            metadata: Some(go_meta("default")),
            spec: Some(authn::TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".into()],
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            }),
            status: Some(authn::TokenRequestStatus {
                token: s(""),
                expiration_timestamp: Some(meta::Time::default()),
            }),
        };
        let v = decode("authentication.k8s.io/v1", "TokenRequest", &tr);
        assert_eq!(
            v["spec"],
            json!({"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600})
        );
        // TokenRequestStatus.token has no omitempty upstream, so its empty value stays.
        assert_eq!(
            v["status"],
            json!({"token": "", "expirationTimestamp": null})
        );
    }

    #[test]
    fn unknown_tags_skipped_and_packed_repeated_accepted() {
        // PodSecurityContext.supplementalGroups (tag 4, repeated int64), after an unknown
        // field 99 (two-byte key 0x98 0x06, varint 7).
        let mut raw = vec![0x98, 0x06, 0x07];
        // Packed: key (4<<3|2), len 2, values 1, 2.
        raw.extend([0x22, 0x02, 0x01, 0x02]);
        // Unpacked: key (4<<3|0), value 3.
        raw.extend([0x20, 0x03]);
        let msg = message("io.k8s.api.core.v1.PodSecurityContext").expect("in table");
        assert_eq!(
            decode_message(msg, &raw, 0).expect("decodes"),
            json!({"supplementalGroups": [1, 2, 3]})
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(
            decode_request(b"{\"kind\":1}"),
            Err(ProtobufError::Magic)
        ));
        let cm = core::ConfigMap {
            metadata: Some(go_meta("c")),
            ..Default::default()
        };
        let full = body("v1", "ConfigMap", &cm);
        for cut in 5..full.len() {
            // Every strict prefix either fails cleanly or decodes a shorter valid message.
            let _ = decode_request(&full[..cut]);
        }
        let mut bad = MAGIC.to_vec();
        bad.extend([0x12, 0x05, 0x0a]);
        assert!(matches!(
            decode_request(&bad),
            Err(ProtobufError::Decode {
                source: WireError::Truncated,
                ..
            })
        ));
        assert!(matches!(
            decode_request(&body("example.com/v1", "Widget", &cm)),
            Err(ProtobufError::UnknownKind { .. })
        ));
        assert!(matches!(
            decode_request(&body("", "", &cm)),
            Err(ProtobufError::MissingTypeMeta)
        ));
        // Wrong wire type for ConfigMap.data (a map wants length-delimited).
        let mut raw_body = MAGIC.to_vec();
        let unknown = PbUnknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("ConfigMap"),
            }),
            raw: Some(vec![0x10, 0x01]),
            ..Default::default()
        };
        raw_body.extend(unknown.encode_to_vec());
        let err = decode_request(&raw_body).expect_err("wire type");
        assert_eq!(
            err.to_string(),
            "decoding protobuf io.k8s.api.core.v1.ConfigMap: field 2 has wire type 0, expected 2"
        );
    }

    #[test]
    fn durations_and_times_as_go_writes_them() {
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (150_000_000, "150ms"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (-90_000_000_000, "-1m30s"),
        ] {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
        assert_eq!(
            format_time(1_704_164_645, 123_456_789, true).expect("in range"),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            format_time(1_704_164_645, 123_456_789, false).expect("in range"),
            "2024-01-02T03:04:05Z"
        );
    }
}
