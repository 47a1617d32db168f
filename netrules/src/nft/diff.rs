//! `diff(old, new) -> Transaction`: the nft commands that turn the applied ruleset into the
//! new one, in one atomic `nft -f -` run.
//!
//! As upstream's `syncProxyRules` (kubernetes/kubernetes pkg/proxy/nftables/proxier.go): a
//! full sync recreates the table; a partial sync rewrites only the chains and map elements
//! of service ports whose rendering changed, and chains that fell out of use are flushed now
//! and deleted on the next sync, because kernels before 6.2 notice only a little later that
//! a chain is no longer referenced by a deleted map element.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    chain_decl, element_op, rule_op, service_lines, set_decl, Element, Ruleset, ServiceRules,
};

/// A list of nft commands applied as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    full: bool,
    ops: Vec<String>,
    applied: Ruleset,
}

impl Transaction {
    /// Whether this transaction recreates the whole table.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The number of nft commands (upstream tests count "operations" the same way).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The commands, one per line.
    pub fn ops(&self) -> &[String] {
        &self.ops
    }

    /// The script piped to `nft -f -`.
    pub fn to_nft_script(&self) -> String {
        let mut s = self.ops.join("\n");
        if !s.is_empty() {
            s.push('\n');
        }
        s
    }

    /// The ruleset the kernel holds once this transaction succeeded: the new ruleset plus the
    /// chains it emptied, which the next [`diff`] deletes. Keep it as the next `old`.
    pub fn applied(&self) -> &Ruleset {
        &self.applied
    }

    /// Consumes the transaction into [`Transaction::applied`].
    pub fn into_applied(self) -> Ruleset {
        self.applied
    }
}

/// A transaction that (re)creates the table from nothing, whatever the kernel holds: `add`
/// then `delete` removes any old table (a bare `delete` fails when there is none), and the
/// new table is built in the same transaction, so packets never see a missing table.
pub fn full_sync(new: &Ruleset) -> Transaction {
    let t = new.table();
    let mut ops = full_sync_header(new);
    for rules in new.services.values() {
        ops.extend(service_lines(&t, rules));
    }
    let mut applied = new.clone();
    applied.stale_chains.clear();
    Transaction {
        full: true,
        ops,
        applied,
    }
}

/// The first commands of a full sync: remove any old table, then create the table and its
/// base (`base.services` is ignored). The services' [`service_lines`] follow, in any number of
/// pieces, within the same `nft -f -` run, so a caller can render and stream them one by one.
pub fn full_sync_header(base: &Ruleset) -> Vec<String> {
    let t = base.table();
    let mut ops = vec![format!("add table {t}"), format!("delete table {t}")];
    ops.extend(base.base_lines());
    ops
}

/// The transaction from `old` (the last ruleset applied successfully, from
/// [`Transaction::applied`]) to `new`. `None`, a family change or a change of the shared base
/// (node addresses, NodePort addresses) gives a [`full_sync`].
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Transaction {
    let Some(old) = old else {
        return full_sync(new);
    };
    if old.family != new.family
        || old.base_sets != new.base_sets
        || old.base_elements != new.base_elements
        || old.base_chains != new.base_chains
    {
        return full_sync(new);
    }
    let t = new.table();
    let empty = ServiceRules::default();
    let names: BTreeSet<_> = old.services.keys().chain(new.services.keys()).collect();
    let changes: Vec<(&ServiceRules, &ServiceRules)> = names
        .into_iter()
        .map(|name| {
            (
                old.services.get(name).unwrap_or(&empty),
                new.services.get(name).unwrap_or(&empty),
            )
        })
        .collect();
    let PartialSync {
        ops,
        stale_chains: newly_stale,
    } = partial_sync(&t, &changes, &old.stale_chains);
    let mut applied = new.clone();
    applied.stale_chains = newly_stale;
    Transaction {
        full: false,
        ops,
        applied,
    }
}

/// The commands of a partial sync, from per-service changes: see [`partial_sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialSync {
    /// nft commands, one per line, for one `nft -f -` transaction (empty: nothing to do).
    pub ops: Vec<String>,
    /// Chains this sync flushed and the next one deletes (pass them as `stale` next time).
    pub stale_chains: BTreeSet<String>,
}

impl PartialSync {
    /// The script piped to `nft -f -`.
    pub fn to_nft_script(&self) -> String {
        let mut s = self.ops.join("\n");
        if !s.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// A partial sync of table `table` (`ip oxlet`) from `(before, after)` pairs of service
/// ports whose rendering may have changed (an absent service is an empty
/// [`ServiceRules`]), and the chains the previous sync left `stale`. Only the given services
/// are looked at, so the cost follows the number of changes, not of services. Chain names
/// carry their service port's identity, so a chain never moves between services.
pub fn partial_sync(
    table: &str,
    changes: &[(&ServiceRules, &ServiceRules)],
    stale: &BTreeSet<String>,
) -> PartialSync {
    let mut ops = Vec::new();
    let mut newly_stale = BTreeSet::new();
    let mut recreated = BTreeSet::new();
    for (before, after) in changes {
        diff_service(table, before, after, &mut ops, &mut newly_stale);
        recreated.extend(after.chains.iter().map(|c| c.name.as_str()));
    }
    // Chains emptied by the previous sync and still unused: delete them now.
    for c in stale {
        if !recreated.contains(c.as_str()) && !newly_stale.contains(c) {
            ops.push(format!("delete chain {table} {c}"));
        }
    }
    PartialSync {
        ops,
        stale_chains: newly_stale,
    }
}

/// The commands turning one service port's objects from `before` into `after`.
fn diff_service(
    t: &str,
    before: &ServiceRules,
    after: &ServiceRules,
    ops: &mut Vec<String>,
    newly_stale: &mut BTreeSet<String>,
) {
    if before == after {
        return;
    }
    if before.chains.is_empty() && before.sets.is_empty() && before.elements.is_empty() {
        ops.extend(service_lines(t, after));
        return;
    }
    let after_chains: BTreeSet<&str> = after.chains.iter().map(|c| c.name.as_str()).collect();
    // Declare (or keep) every chain, and empty it before rewriting its rules.
    for c in &after.chains {
        ops.push(chain_decl(t, c));
    }
    for c in &after.chains {
        ops.push(format!("flush chain {t} {}", c.name));
    }
    // Chains this service no longer uses: flushed now, deleted by the next sync.
    for c in &before.chains {
        if !after_chains.contains(c.name.as_str()) {
            ops.push(format!("flush chain {t} {}", c.name));
            newly_stale.insert(c.name.clone());
        }
    }
    // Affinity sets: kept when unchanged so clients stay pinned; the rules that used a
    // removed or changed set were flushed above, so it can go at once.
    let old_sets: BTreeMap<&str, _> = before.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_sets: BTreeMap<&str, _> = after.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, s) in &old_sets {
        if new_sets.get(name) != Some(s) {
            ops.push(format!("delete set {t} {}", s.name));
        }
    }
    for (name, s) in &new_sets {
        if old_sets.get(name) != Some(s) {
            ops.push(set_decl(t, s));
        }
    }
    for c in &after.chains {
        for r in &c.rules {
            ops.push(rule_op(t, &c.name, r));
        }
    }
    // Map elements: delete what went away or changed value, add what is new.
    let old_keys: BTreeMap<(&str, &str), &Element> = before
        .elements
        .iter()
        .map(|e| ((e.set.as_str(), e.key.as_str()), e))
        .collect();
    let new_keys: BTreeMap<(&str, &str), &Element> = after
        .elements
        .iter()
        .map(|e| ((e.set.as_str(), e.key.as_str()), e))
        .collect();
    for (k, e) in &old_keys {
        if new_keys.get(k) != Some(e) {
            ops.push(element_op("delete", t, e));
        }
    }
    for (k, e) in &new_keys {
        if old_keys.get(k) != Some(e) {
            ops.push(element_op("add", t, e));
        }
    }
}
