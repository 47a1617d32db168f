//! nftables rendering: a [`Ruleset`] for one family's `oxlet` table, and the
//! [`Transaction`] that moves the kernel from one ruleset to the next.

mod diff;
mod render;

use std::collections::{BTreeMap, BTreeSet};

pub use diff::{diff, full_sync, full_sync_header, partial_sync, PartialSync, Transaction};
pub use render::{render, render_base, render_service};

use crate::model::{Family, ServicePortName};

/// The name of our table in both the `ip` and the `ip6` family. No other table is touched.
pub const TABLE: &str = "oxlet";

/// The comment on our table.
pub const TABLE_COMMENT: &str = "rules for oxlet proxy";

/// One nft chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// For base chains: `type nat hook prerouting priority -100`.
    pub hook: Option<String>,
    /// Optional comment.
    pub comment: Option<String>,
    /// Rules in order, each in nft syntax without the `add rule <family> <table> <chain>` head.
    pub rules: Vec<String>,
}

impl Chain {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            hook: None,
            comment: None,
            rules: Vec::new(),
        }
    }
}

/// One nft set or verdict map declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// `map` for verdict maps, `set` for sets.
    pub is_map: bool,
    /// The body between braces: `type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; comment "…" ;`.
    pub spec: String,
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    /// Set or map the element belongs to.
    pub set: String,
    /// The key, `172.30.0.41 . tcp . 80`.
    pub key: String,
    /// The value for maps (`goto service-…`, `drop`), `None` for sets.
    pub value: Option<String>,
}

/// The objects one service port owns: its chains, affinity sets and dispatch-map elements.
/// A partial sync rewrites exactly these for each changed service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chains in creation order (policy chains first, then endpoint chains).
    pub chains: Vec<Chain>,
    /// Per-endpoint affinity sets.
    pub sets: Vec<Set>,
    /// Elements in the shared maps (`service-ips`, `no-endpoint-services`, …).
    pub elements: Vec<Element>,
}

/// The full content of one family's `oxlet` table, as [`render`] computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The family of the table (`ip oxlet` or `ip6 oxlet`).
    pub family: Family,
    /// Maps and sets shared by all services.
    pub base_sets: Vec<Set>,
    /// Elements of the shared sets that do not belong to a service (`nodeport-ips`).
    pub base_elements: Vec<Element>,
    /// Hooked chains and helper chains.
    pub base_chains: Vec<Chain>,
    /// Per service port objects, sorted by name.
    pub services: BTreeMap<ServicePortName, ServiceRules>,
    /// Chains that a previous partial sync emptied and the next sync deletes. Always empty
    /// from [`render`]; set on [`Transaction::applied`].
    pub stale_chains: BTreeSet<String>,
}

impl Ruleset {
    /// `ip oxlet` or `ip6 oxlet`.
    pub fn table(&self) -> String {
        format!("{} {TABLE}", self.family.nft())
    }

    /// A script that creates the whole table on a kernel that does not have it yet. A full
    /// sync ([`full_sync`]) is this preceded by the removal of any old table.
    pub fn to_nft_script(&self) -> String {
        let t = self.table();
        let mut out = String::new();
        for line in self.base_lines() {
            out.push_str(&line);
            out.push('\n');
        }
        for rules in self.services.values() {
            out.push('\n');
            for line in service_lines(&t, rules) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// The commands creating the table and its base objects (no services).
    pub fn base_lines(&self) -> Vec<String> {
        let t = self.table();
        let mut out = vec![format!("add table {t} {{ comment \"{TABLE_COMMENT}\" ; }}")];
        out.extend(self.base_sets.iter().map(|s| set_decl(&t, s)));
        out.extend(self.base_elements.iter().map(|e| element_op("add", &t, e)));
        out.extend(self.base_chains.iter().map(|c| chain_decl(&t, c)));
        for c in &self.base_chains {
            out.extend(c.rules.iter().map(|r| rule_op(&t, &c.name, r)));
        }
        out
    }

    /// Every chain name in the ruleset, base and per service.
    pub fn chain_names(&self) -> BTreeSet<&str> {
        self.base_chains
            .iter()
            .chain(self.services.values().flat_map(|s| s.chains.iter()))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Chains of this ruleset that an `nft list table` output lacks: a non-empty answer means
    /// someone changed our table behind our back and the next sync should be full.
    pub fn missing_from_listing(&self, listing: &str) -> Vec<String> {
        let present: BTreeSet<&str> = listing
            .lines()
            .filter_map(|l| l.trim().strip_prefix("chain "))
            .filter_map(|l| l.strip_suffix(" {"))
            .map(|n| n.trim_matches('"'))
            .collect();
        self.chain_names()
            .into_iter()
            .filter(|c| !present.contains(c))
            .map(str::to_owned)
            .collect()
    }
}

/// The chain names inside `table` (`ip oxlet`) of an `nft list chains` (or `nft list table`)
/// output; other tables are skipped.
pub fn chains_in_listing(listing: &str, table: &str) -> Vec<String> {
    let header = format!("table {table} {{");
    let mut inside = false;
    let mut out = Vec::new();
    for line in listing.lines() {
        if !inside {
            inside = line == header;
            continue;
        }
        if line == "}" {
            inside = false;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("\tchain ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            out.push(name.trim_matches('"').to_owned());
        }
    }
    out
}

/// The commands that create one service port's objects from scratch in table `t`
/// (`ip oxlet`), declarations first, so that rules and elements only refer to chains and sets
/// that exist.
pub fn service_lines(t: &str, rules: &ServiceRules) -> Vec<String> {
    let mut out = Vec::new();
    for c in &rules.chains {
        out.push(chain_decl(t, c));
    }
    for s in &rules.sets {
        out.push(set_decl(t, s));
    }
    for c in &rules.chains {
        for r in &c.rules {
            out.push(rule_op(t, &c.name, r));
        }
    }
    for e in &rules.elements {
        out.push(element_op("add", t, e));
    }
    out
}

pub(super) fn chain_decl(t: &str, c: &Chain) -> String {
    let mut body = Vec::new();
    if let Some(h) = &c.hook {
        body.push(h.clone());
    }
    if let Some(cm) = &c.comment {
        body.push(format!("comment \"{cm}\""));
    }
    if body.is_empty() {
        format!("add chain {t} {}", c.name)
    } else {
        format!("add chain {t} {} {{ {} ; }}", c.name, body.join(" ; "))
    }
}

pub(super) fn set_decl(t: &str, s: &Set) -> String {
    let kind = if s.is_map { "map" } else { "set" };
    format!("add {kind} {t} {} {{ {} }}", s.name, s.spec)
}

pub(super) fn rule_op(t: &str, chain: &str, rule: &str) -> String {
    format!("add rule {t} {chain} {rule}")
}

pub(super) fn element_op(op: &str, t: &str, e: &Element) -> String {
    match (&e.value, op) {
        (Some(v), "add") => format!("{op} element {t} {} {{ {} : {v} }}", e.set, e.key),
        _ => format!("{op} element {t} {} {{ {} }}", e.set, e.key),
    }
}
