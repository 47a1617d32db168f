//! Label and field selectors, with upstream's syntax, validation and error texts
//! (kubernetes/apimachinery pkg/labels/selector.go, pkg/fields/selector.go) and the field labels
//! each resource supports (the `GetAttrs`/`ToSelectableFields` of kubernetes pkg/registry/*).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::resources::ResourceInfo;

/// Why a selector could not be parsed or evaluated. The caller answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector (string or `matchLabels`/`matchExpressions`) is invalid.
    #[error("{0}")]
    InvalidLabelSelector(String),
    /// A field selector is invalid.
    #[error("{0}")]
    InvalidFieldSelector(String),
    /// The resource has no such field label.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
}

/// The operator of a label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`.
    Equals,
    /// `key==value`.
    DoubleEquals,
    /// `key!=value` (also true when the label is absent).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n` (integers).
    GreaterThan,
    /// `key<n` (integers).
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values, sorted and without duplicates (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating key, values and their number as upstream's
    /// `NewRequirement` does.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        let err = |m: &str| Err(SelectorError::InvalidLabelSelector(m.to_string()));
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return err("values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                return err("values: Invalid value: exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return err("values: Invalid value: values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return err("values: Invalid value: for 'Gt', 'Lt' operators, exactly one value is required");
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return err("values[0]: Invalid value: for 'Gt', 'Lt' operators, the value must be an integer");
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            validate_label_value(v).map_err(|m| {
                SelectorError::InvalidLabelSelector(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {m}"
                ))
            })?;
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        let has = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => got.is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !got.is_some_and(has),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(got), Some(want)) = (
                    got.and_then(|g| g.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    got > want
                } else {
                    got < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={values}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={values}", self.key),
            Operator::NotEquals => write!(f, "{}!={values}", self.key),
            Operator::In => write!(f, "{} in ({values})", self.key),
            Operator::NotIn => write!(f, "{} notin ({values})", self.key),
            Operator::GreaterThan => write!(f, "{}>{values}", self.key),
            Operator::LessThan => write!(f, "{}<{values}", self.key),
        }
    }
}

/// A label selector: all requirements must hold. The empty selector matches everything;
/// [`LabelSelector::nothing`] (a `null` selector object) matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector matching every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector matching no object (upstream `labels.Nothing()`, a nil `LabelSelector`).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Parses the string form (`labelSelector` query parameter, `kubectl -l`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        loop {
            match p.peek() {
                Token::Ident(_) | Token::Not => {
                    requirements.push(p.requirement()?);
                    match p.next() {
                        Token::Comma => continue,
                        Token::End => break,
                        t => {
                            return Err(parse_err(format!(
                                "found '{t}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::End => break,
                t => {
                    return Err(parse_err(format!(
                        "found '{t}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions` with `In`,
    /// `NotIn`, `Exists`, `DoesNotExist`), as upstream's `LabelSelectorAsSelector`: `null`
    /// matches nothing, `{}` everything.
    pub fn from_label_selector_json(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(m) => m,
            other => {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "invalid label selector: {other}"
                )))
            }
        };
        let mut requirements = Vec::new();
        if let Some(ml) = obj.get("matchLabels").filter(|v| !v.is_null()) {
            let Value::Object(ml) = ml else {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "matchLabels: must be a map, got {ml}"
                )));
            };
            for (k, v) in ml {
                let Some(v) = v.as_str() else {
                    return Err(SelectorError::InvalidLabelSelector(format!(
                        "matchLabels[{k}]: must be a string, got {v}"
                    )));
                };
                requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
            }
        }
        if let Some(me) = obj.get("matchExpressions").filter(|v| !v.is_null()) {
            let Value::Array(me) = me else {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "matchExpressions: must be a list, got {me}"
                )));
            };
            for expr in me {
                let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
                let op = expr
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let values: Vec<String> = match expr.get("values") {
                    Some(Value::Array(vs)) => vs
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                };
                let operator = match op {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(SelectorError::InvalidLabelSelector(format!(
                            "{other:?} is not a valid label selector operator"
                        )))
                    }
                };
                requirements.push(Requirement::new(key, operator, values)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

fn parse_err(msg: String) -> SelectorError {
    SelectorError::InvalidLabelSelector(format!("unable to parse requirement: {msg}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Ident(s) => s.as_str(),
            Token::Not => "!",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "",
        };
        f.write_str(s)
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('=', Some('=')) => (Token::DoubleEq, 2),
                ('!', Some('=')) => (Token::NotEq, 2),
                ('=', _) => (Token::Eq, 1),
                ('!', _) => (Token::Not, 1),
                ('(', _) => (Token::Open, 1),
                (')', _) => (Token::Close, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::Gt, 1),
                _ => (Token::Lt, 1),
            };
            out.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out.push(Token::End);
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Token {
        self.tokens.get(self.pos).cloned().unwrap_or(Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = self.peek() == Token::Not;
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            t => return Err(parse_err(format!("found '{t}', expected: identifier"))),
        };
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let op = match self.next() {
            Token::Eq => Operator::Equals,
            Token::DoubleEq => Operator::DoubleEquals,
            Token::NotEq => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => {
                return Err(parse_err(format!(
                    "found '{t}', expected: [!=, ==, =, <, >, in, notin]"
                )))
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => match self.peek() {
                Token::End | Token::Comma => vec![String::new()],
                Token::Ident(v) => {
                    self.pos += 1;
                    vec![v]
                }
                // Upstream's lexer turns these words into keywords, yet they are valid values.
                Token::In | Token::NotIn => vec![self.next().to_string()],
                t => return Err(parse_err(format!("found '{t}', expected: identifier"))),
            },
        };
        Requirement::new(&key, op, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => return Err(parse_err(format!("found '{t}', expected: '('"))),
        }
        let mut values = Vec::new();
        if self.peek() == Token::Close {
            self.pos += 1;
            return Ok(values);
        }
        // As upstream's parseIdentifiersList: an empty slot between commas is the empty value.
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Ident(v) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                t @ (Token::In | Token::NotIn) if expect_value => {
                    values.push(t.to_string());
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                t => {
                    return Err(parse_err(format!(
                        "found '{t}', expected: ',', ')' or identifier"
                    )))
                }
            }
        }
    }
}

const NAME_FMT_HELP: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Validates a label key as upstream's `IsQualifiedName`: an optional DNS subdomain prefix and
/// `/`, then a name of at most 63 characters.
fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |why: String| {
        Err(SelectorError::InvalidLabelSelector(format!(
            "key: Invalid value: {key:?}: {why}"
        )))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            return invalid("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string());
        }
    }
    if name.is_empty() {
        return invalid("name part must be non-empty".to_string());
    }
    if name.len() > 63 {
        return invalid("name part must be no more than 63 characters".to_string());
    }
    if !is_name_part(name) {
        return invalid(format!("name part {NAME_FMT_HELP}"));
    }
    Ok(())
}

fn validate_label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_name_part(v) {
        return Err(format!(
            "a valid label must be an empty string or {NAME_FMT_HELP}"
        ));
    }
    Ok(())
}

/// The operator of a field selector term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// Field label (`spec.nodeName`).
    pub field: String,
    /// Operator.
    pub operator: FieldOperator,
    /// Unescaped value.
    pub value: String,
}

/// A field selector (`fieldSelector` query parameter): all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a field selector as upstream's `fields.ParseSelector`: terms separated by
    /// unescaped commas, operators `!=`, `==`, `=`, values unescaped (`\\`, `\,`, `\=`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(&part) else {
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                operator,
                value: unescape_value(raw)?,
            });
        }
        Ok(Self { terms })
    }

    /// The terms, sorted as upstream sorts them.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value `field` must equal, if a term requires an exact match (as upstream's
    /// `RequiresExactMatch`, used to index pods by `spec.nodeName`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// Whether an object matches; `get` returns the value of a field label, `None` for an unset
    /// field, which compares as the empty string as upstream's `fields.Set` does.
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let got = get(&t.field).unwrap_or_default();
            match t.operator {
                FieldOperator::Equals => got == t.value,
                FieldOperator::NotEquals => got != t.value,
            }
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = match t.operator {
                    FieldOperator::Equals => "=",
                    FieldOperator::NotEquals => "!=",
                };
                format!("{}{op}{}", t.field, escape_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
        } else if c == '\\' {
            escaped = true;
            cur.push(c);
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if matches!(c, '\\' | ',' | '=') {
                out.push(c);
            } else {
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )))
            }
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidFieldSelector(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// The value of field label `field` of `object`, a `resource`, as upstream's per-resource
/// `GetAttrs` computes it: `None` when a string field is unset (it matches as `""`), booleans
/// as `"true"`/`"false"` and counts as decimal, defaulting like Go zero values.
///
/// Every resource has `metadata.name` and `metadata.namespace` (empty for cluster-scoped
/// resources); anything else the resource does not support is
/// [`SelectorError::FieldLabelNotSupported`].
pub fn field_value(
    resource: &ResourceInfo,
    object: &Value,
    field: &str,
) -> Result<Option<String>, SelectorError> {
    let s = |ptr: &str| {
        object
            .pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let b = |ptr: &str| {
        Some(
            object
                .pointer(ptr)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        )
    };
    let n = |ptr: &str| {
        Some(
            object
                .pointer(ptr)
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        )
    };
    match field {
        "metadata.name" => return Ok(s("/metadata/name")),
        "metadata.namespace" if !resource.namespaced => return Ok(Some(String::new())),
        "metadata.namespace" => return Ok(s("/metadata/namespace")),
        _ => {}
    }
    let value = match (resource.group, resource.plural, field) {
        ("", "pods", "spec.nodeName") => s("/spec/nodeName"),
        ("", "pods", "spec.restartPolicy") => s("/spec/restartPolicy"),
        ("", "pods", "spec.schedulerName") => s("/spec/schedulerName"),
        ("", "pods", "spec.serviceAccountName") => s("/spec/serviceAccountName"),
        ("", "pods", "spec.hostNetwork") => b("/spec/hostNetwork"),
        ("", "pods", "status.phase") => s("/status/phase"),
        ("", "pods", "status.podIP") => s("/status/podIP"),
        ("", "pods", "status.nominatedNodeName") => s("/status/nominatedNodeName"),
        ("", "events", "involvedObject.kind") => s("/involvedObject/kind"),
        ("", "events", "involvedObject.namespace") => s("/involvedObject/namespace"),
        ("", "events", "involvedObject.name") => s("/involvedObject/name"),
        ("", "events", "involvedObject.uid") => s("/involvedObject/uid"),
        ("", "events", "involvedObject.apiVersion") => s("/involvedObject/apiVersion"),
        ("", "events", "involvedObject.resourceVersion") => s("/involvedObject/resourceVersion"),
        ("", "events", "involvedObject.fieldPath") => s("/involvedObject/fieldPath"),
        ("", "events", "reason") => s("/reason"),
        ("", "events", "reportingComponent") => s("/reportingComponent"),
        ("", "events", "source") => s("/source/component"),
        ("", "events", "type") => s("/type"),
        ("", "secrets", "type") => s("/type"),
        ("", "nodes", "spec.unschedulable") => b("/spec/unschedulable"),
        ("", "namespaces", "status.phase") => s("/status/phase"),
        ("", "services", "spec.clusterIP") => s("/spec/clusterIP"),
        ("", "services", "spec.type") => s("/spec/type"),
        ("apps", "replicasets", "status.replicas") => n("/status/replicas"),
        ("certificates.k8s.io", "certificatesigningrequests", "spec.signerName") => {
            s("/spec/signerName")
        }
        _ => return Err(SelectorError::FieldLabelNotSupported(field.to_string())),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_parse_and_match() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let none = labels(&[]);
        // (selector, canonical form, matches web, matches no labels)
        let cases = [
            ("", "", true, true),
            ("app=web", "app=web", true, false),
            ("app==web", "app==web", true, false),
            ("app!=web", "app!=web", false, true),
            ("app in (web,db)", "app in (db,web)", true, false),
            ("app notin (db)", "app notin (db)", true, true),
            ("app", "app", true, false),
            ("!app", "!app", false, true),
            ("tier=front,app=web", "app=web,tier=front", true, false),
            ("  app = web , tier ", "app=web,tier", true, false),
            ("app=", "app=", false, false),
            ("n>3", "n>3", true, false),
            ("n<3", "n<3", false, false),
            ("example.com/role=x", "example.com/role=x", false, false),
            ("app in (web,)", "app in (,web)", true, false),
        ];
        for (s, canon, want_web, want_none) in cases {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.to_string(), canon, "{s:?}");
            assert_eq!(sel.matches(&web), want_web, "{s:?} on web");
            assert_eq!(sel.matches(&none), want_none, "{s:?} on none");
        }
    }

    #[test]
    fn label_selector_errors() {
        let cases = [
            ("app in ()", "values set can't be empty"),
            ("app in web", "expected: '('"),
            ("app=web tier", "expected: ',' or 'end of string'"),
            ("=web", "expected: !, identifier, or 'end of string'"),
            ("!app=x", "expected: ',' or 'end of string'"),
            ("app=a b", "expected: ',' or 'end of string'"),
            ("-app=x", "name part must consist of"),
            ("app=-x", "a valid label must be an empty string"),
            ("Bad_Prefix/app=x", "prefix part"),
            ("n>x", "must be an integer"),
            ("app=(", "expected: identifier"),
        ];
        for (s, want) in cases {
            match LabelSelector::parse(s) {
                Err(e) => assert!(e.to_string().contains(want), "{s:?}: {e}"),
                Ok(sel) => panic!("{s:?}: parsed as {sel}"),
            }
        }
    }

    #[test]
    fn label_selector_objects() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (json!({}), true),
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}),
                true,
            ),
            (Value::Null, false),
        ];
        for (v, want) in cases {
            let sel =
                LabelSelector::from_label_selector_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(sel.matches(&web), want, "{v}");
        }
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabels": {"a": 1}}),
        ] {
            assert!(
                LabelSelector::from_label_selector_json(&bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn field_selectors() {
        let fields = |f: &str| match f {
            "spec.nodeName" => Some("node-1".to_string()),
            "metadata.name" => Some("a,b=c".to_string()),
            _ => None,
        };
        let cases = [
            ("", true),
            ("spec.nodeName=node-1", true),
            ("spec.nodeName==node-1", true),
            ("spec.nodeName!=node-1", false),
            ("spec.nodeName=node-2", false),
            ("status.phase=", true),
            ("status.phase!=Running", true),
            (r"metadata.name=a\,b\=c", true),
            ("spec.nodeName=node-1,status.phase!=Failed", true),
        ];
        for (s, want) in cases {
            let sel = FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.matches(&fields), want, "{s:?}");
        }
        let sel = FieldSelector::parse("spec.nodeName=n1,metadata.name!=x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sel.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(sel.requires_exact_match("metadata.name"), None);
        assert_eq!(sel.to_string(), "metadata.name!=x,spec.nodeName=n1");

        let errors = [
            ("spec.nodeName", "can't understand 'spec.nodeName'"),
            (r"a=b\x", r"invalid escape sequence: \x"),
            (r"a=b\", "invalid escape sequence"),
            ("a=b=c", "unescaped character in value: ="),
        ];
        for (s, want) in errors {
            match FieldSelector::parse(s) {
                Err(e) => assert!(e.to_string().contains(want), "{s:?}: {e}"),
                Ok(sel) => panic!("{s:?}: parsed as {sel}"),
            }
        }
    }

    /// (group, plural, object, field label, wanted value or error text)
    type FieldCase<'a> = (
        &'a str,
        &'a str,
        &'a Value,
        &'a str,
        Result<Option<&'a str>, &'a str>,
    );

    #[test]
    fn field_values() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"},
                           "source": {"component": "kubelet"}, "type": "Normal"});
        let rs = json!({"metadata": {"name": "r"}, "status": {"replicas": 3}});
        let res =
            |g: &str, p: &str| find(g, "v1", p).unwrap_or_else(|| panic!("no resource {g}/{p}"));
        let cases: &[FieldCase] = &[
            ("", "pods", &pod, "metadata.name", Ok(Some("p"))),
            ("", "pods", &pod, "metadata.namespace", Ok(Some("ns"))),
            ("", "pods", &pod, "spec.nodeName", Ok(Some("n1"))),
            ("", "pods", &pod, "spec.hostNetwork", Ok(Some("true"))),
            ("", "pods", &pod, "status.phase", Ok(Some("Running"))),
            ("", "pods", &pod, "status.podIP", Ok(None)),
            (
                "",
                "pods",
                &pod,
                "spec.containers",
                Err("field label not supported: spec.containers"),
            ),
            ("", "nodes", &node, "metadata.namespace", Ok(Some(""))),
            ("", "nodes", &node, "spec.unschedulable", Ok(Some("false"))),
            ("", "events", &event, "involvedObject.kind", Ok(Some("Pod"))),
            ("", "events", &event, "source", Ok(Some("kubelet"))),
            ("", "events", &event, "type", Ok(Some("Normal"))),
            ("apps", "replicasets", &rs, "status.replicas", Ok(Some("3"))),
            (
                "",
                "configmaps",
                &node,
                "data",
                Err("field label not supported: data"),
            ),
        ];
        for (g, p, obj, field, want) in cases {
            let got = field_value(res(g, p), obj, field);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), *want, "{p} {field}"),
                (Err(e), Err(want)) => assert_eq!(e.to_string(), *want),
                (got, _) => panic!("{p} {field}: unexpected {got:?}"),
            }
        }
    }
}
