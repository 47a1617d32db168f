//! Partial syncs: the transaction touches only changed service ports, its size does not
//! depend on how many services exist, and the applied ruleset equals a fresh render.

mod common;

use common::*;
use oxlet_netrules::nft::{
    diff, full_sync, full_sync_header, partial_sync, render, render_base, render_service,
    service_lines, Ruleset,
};
use oxlet_netrules::{Family, Model};

fn model_with(n: usize) -> Model {
    let mut m = base_model();
    for i in 0..n {
        let ip4 = format!("172.30.{}.{}", i / 250, i % 250 + 1);
        let e1 = format!("10.{}.{}.1", 100 + i / 250, i % 250);
        let e2 = format!("10.{}.{}.2", 100 + i / 250, i % 250);
        m.services.insert(
            spn("ns", &format!("svc{i:04}")),
            svc(&ip4, &[ep(&e1, 80), ep(&e2, 80)]),
        );
    }
    m
}

fn without_stale(r: &Ruleset) -> Ruleset {
    let mut r = r.clone();
    r.stale_chains.clear();
    r
}

#[test]
fn first_sync_is_full_and_recreates_the_table() {
    let new = render(&model_with(2), Family::V4);
    let tx = diff(None, &new);
    assert!(tx.is_full());
    let script = tx.to_nft_script();
    assert!(
        script
            .starts_with("add table ip oxlet\ndelete table ip oxlet\nadd table ip oxlet { comment"),
        "{script}"
    );
    assert_eq!(tx.applied(), &new);
}

#[test]
fn unchanged_model_gives_an_empty_transaction() {
    let r = render(&model_with(10), Family::V4);
    let tx = diff(Some(&r), &r);
    assert!(tx.is_empty());
    assert_eq!(tx.to_nft_script(), "");
}

#[test]
fn base_change_forces_a_full_sync() {
    let old = render(&model_with(3), Family::V4);
    let mut m = model_with(3);
    m.nodeport_addresses = vec![ip(NODE_IP)];
    let tx = diff(Some(&old), &render(&m, Family::V4));
    assert!(tx.is_full());
}

#[test]
fn one_endpoint_removed_among_many_services() {
    let mut sizes = Vec::new();
    for n in [10usize, 1000] {
        let old_model = model_with(n);
        let old = full_sync(&render(&old_model, Family::V4)).into_applied();
        let mut new_model = old_model.clone();
        let target = spn("ns", "svc0005");
        new_model
            .services
            .get_mut(&target)
            .expect("svc0005 exists")
            .endpoints
            .pop();
        let new = render(&new_model, Family::V4);
        let tx = diff(Some(&old), &new);
        assert!(!tx.is_full());
        // The applied state is the fresh render plus the endpoint chain left to delete.
        assert_eq!(without_stale(tx.applied()), new);
        assert_eq!(tx.applied().stale_chains.len(), 1);
        sizes.push(tx.len());
        if n == 10 {
            assert_golden("partial_endpoint_removed.nft", &tx.to_nft_script());
        }
        // The next sync deletes the emptied chain, and nothing else.
        let next = diff(Some(tx.applied()), &new);
        assert_eq!(next.len(), 1, "{}", next.to_nft_script());
        assert!(
            next.ops()[0].starts_with("delete chain ip oxlet endpoint-"),
            "{}",
            next.to_nft_script()
        );
        assert!(next.applied().stale_chains.is_empty());
    }
    assert_eq!(
        sizes[0], sizes[1],
        "transaction size must not grow with the number of services"
    );
    assert_eq!(
        sizes[1], 9,
        "add+flush of 2 chains, flush of the stale one, 4 rules"
    );
}

#[test]
fn service_added_and_removed() {
    let old_model = model_with(5);
    let old = full_sync(&render(&old_model, Family::V4)).into_applied();
    let mut new_model = old_model.clone();
    new_model.services.remove(&spn("ns", "svc0001"));
    new_model
        .services
        .insert(spn("ns", "added"), svc("172.30.9.9", &[ep("10.9.9.9", 80)]));
    let new = render(&new_model, Family::V4);
    let tx = diff(Some(&old), &new);
    assert_golden("partial_added_removed.nft", &tx.to_nft_script());
    assert_eq!(without_stale(tx.applied()), new);
    assert_eq!(tx.applied().stale_chains.len(), 3);
    let next = diff(Some(tx.applied()), &new);
    assert_eq!(next.len(), 3);
}

#[test]
fn losing_all_endpoints_moves_the_service_to_reject() {
    let old_model = model_with(3);
    let old = render(&old_model, Family::V4);
    let mut new_model = old_model.clone();
    new_model
        .services
        .get_mut(&spn("ns", "svc0002"))
        .expect("exists")
        .endpoints
        .clear();
    let tx = diff(Some(&old), &render(&new_model, Family::V4));
    assert_golden("partial_to_reject.nft", &tx.to_nft_script());
}

#[test]
fn affinity_sets_survive_unrelated_changes() {
    let mut m = model_with(1);
    let name = spn("ns", "svc0000");
    let s = m.services.remove(&name).expect("exists");
    m.services.insert(name.clone(), affinity(s, 60));
    let old = render(&m, Family::V4);
    m.services
        .get_mut(&name)
        .expect("exists")
        .endpoints
        .push(ep("10.100.0.3", 80));
    let tx = diff(Some(&old), &render(&m, Family::V4));
    let script = tx.to_nft_script();
    // Only the new endpoint's set is created; existing ones keep their entries.
    assert_eq!(script.matches("add set").count(), 1, "{script}");
    assert!(!script.contains("delete set"), "{script}");
}

#[test]
fn per_service_partial_sync_matches_the_ruleset_diff() {
    // What the proxy does: re-render only the changed services and diff them.
    let old_model = model_with(50);
    let old = render(&old_model, Family::V4);
    let mut new_model = old_model.clone();
    let changed = [
        spn("ns", "svc0003"),
        spn("ns", "svc0040"),
        spn("ns", "added"),
    ];
    new_model.services.remove(&changed[0]);
    new_model
        .services
        .get_mut(&changed[1])
        .expect("exists")
        .endpoints
        .pop();
    new_model
        .services
        .insert(changed[2].clone(), svc("172.30.9.9", &[ep("10.9.9.9", 80)]));
    let whole = diff(Some(&old), &render(&new_model, Family::V4));

    // In name order, as the whole diff visits them.
    let mut changed = changed.to_vec();
    changed.sort();
    let rendered: Vec<_> = changed
        .iter()
        .map(|n| {
            let one = |m: &Model| {
                m.services
                    .get(n)
                    .and_then(|s| render_service(m, Family::V4, n, s))
                    .unwrap_or_default()
            };
            (one(&old_model), one(&new_model))
        })
        .collect();
    let pairs: Vec<_> = rendered.iter().map(|(a, b)| (a, b)).collect();
    let part = partial_sync("ip oxlet", &pairs, &old.stale_chains);
    assert_eq!(part.ops, whole.ops());
    assert_eq!(part.stale_chains, whole.applied().stale_chains);

    // A service rendered alone is the one in the full ruleset; base + services is render.
    let full = render(&new_model, Family::V4);
    for (name, s) in &new_model.services {
        assert_eq!(
            render_service(&new_model, Family::V4, name, s).as_ref(),
            full.services.get(name)
        );
    }
    let mut header = full_sync_header(&render_base(&new_model, Family::V4));
    for rules in full.services.values() {
        header.extend(service_lines("ip oxlet", rules));
    }
    assert_eq!(header, full_sync(&full).ops());
}
