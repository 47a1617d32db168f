//! Stable chain and set names, as upstream's `hashAndTruncate` and `portProtoHash`
//! (kubernetes/kubernetes pkg/proxy/nftables/proxier.go, pkg/proxy/iptables/proxier.go).
//!
//! A name is a hash of the full identity (so two services never collide, and a restart
//! yields the same names) followed by the readable identity, truncated to fit the kernel's
//! limit.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::model::{Endpoint, ServicePortName};

/// nft's longest object name (`NFT_NAME_MAXLEN` is 256 bytes with the trailing NUL).
pub const NFT_NAME_MAX: usize = 255;

/// iptables' longest chain name (`XT_EXTENSION_MAXNAMELEN` is 29 bytes with the NUL).
pub const IPTABLES_CHAIN_MAX: usize = 28;

/// Prefix of per-service-port chains holding the Cluster-policy endpoints.
pub const SERVICE_PREFIX: &str = "service-";
/// Prefix of per-service-port chains holding the Local-policy endpoints.
pub const LOCAL_PREFIX: &str = "local-";
/// Prefix of per-service-port chains for external (NodePort, external IP, LB) traffic.
pub const EXTERNAL_PREFIX: &str = "external-";
/// Prefix of per-endpoint chains.
pub const ENDPOINT_PREFIX: &str = "endpoint-";
/// Prefix of per-endpoint session-affinity sets.
pub const AFFINITY_PREFIX: &str = "affinity-";

/// Whether `name` is a per-service or per-endpoint nft chain (one this crate may garbage-collect).
pub fn is_service_chain(name: &str) -> bool {
    [
        SERVICE_PREFIX,
        LOCAL_PREFIX,
        EXTERNAL_PREFIX,
        ENDPOINT_PREFIX,
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// `ns/svc/proto/port`, the readable part of a service port's nft names.
pub fn service_port_base(spn: &ServicePortName) -> String {
    format!(
        "{}/{}/{}/{}",
        spn.namespace, spn.name, spn.protocol, spn.port_name
    )
}

/// `ns/svc/proto/port__ip/port`, the readable part of an endpoint's nft names.
///
/// nft identifiers allow letters, digits and `/ \ _ . -` only, so an IPv6 address has its
/// colons replaced by dots.
pub fn endpoint_base(spn: &ServicePortName, ep: &Endpoint) -> String {
    let ip = match ep.ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string().replace(':', "."),
    };
    format!("{}__{}/{}", service_port_base(spn), ip, ep.port)
}

/// `service-<HASH>-ns/svc/proto/port`.
pub fn service_chain(spn: &ServicePortName) -> String {
    hash_and_truncate(SERVICE_PREFIX, &service_port_base(spn))
}

/// `local-<HASH>-ns/svc/proto/port`.
pub fn local_chain(spn: &ServicePortName) -> String {
    hash_and_truncate(LOCAL_PREFIX, &service_port_base(spn))
}

/// `external-<HASH>-ns/svc/proto/port`.
pub fn external_chain(spn: &ServicePortName) -> String {
    hash_and_truncate(EXTERNAL_PREFIX, &service_port_base(spn))
}

/// `endpoint-<HASH>-ns/svc/proto/port__ip/port`.
pub fn endpoint_chain(spn: &ServicePortName, ep: &Endpoint) -> String {
    hash_and_truncate(ENDPOINT_PREFIX, &endpoint_base(spn, ep))
}

/// `affinity-<HASH>-ns/svc/proto/port__ip/port`, the endpoint's ClientIP affinity set.
pub fn affinity_set(spn: &ServicePortName, ep: &Endpoint) -> String {
    hash_and_truncate(AFFINITY_PREFIX, &endpoint_base(spn, ep))
}

/// `prefix` + the first 8 base32 characters of SHA-256(`base`) + `-` + `base`, cut to
/// [`NFT_NAME_MAX`] with a trailing `...` when too long (upstream `hashAndTruncate`).
pub fn hash_and_truncate(prefix: &str, base: &str) -> String {
    let hash = base32_sha256(base);
    let mut name = format!("{prefix}{}-{base}", &hash[..8]);
    if name.len() > NFT_NAME_MAX {
        let mut cut = NFT_NAME_MAX - 3;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str("...");
    }
    name
}

/// `OXLET-SVC-<16 hash chars>`: the iptables Cluster-policy chain (upstream `KUBE-SVC-`).
pub fn ipt_service_chain(spn: &ServicePortName) -> String {
    format!("OXLET-SVC-{}", port_proto_hash(spn, ""))
}

/// `OXLET-SVL-<hash>`: the iptables Local-policy chain (upstream `KUBE-SVL-`).
pub fn ipt_local_chain(spn: &ServicePortName) -> String {
    format!("OXLET-SVL-{}", port_proto_hash(spn, ""))
}

/// `OXLET-EXT-<hash>`: the iptables external-traffic chain (upstream `KUBE-EXT-`).
pub fn ipt_external_chain(spn: &ServicePortName) -> String {
    format!("OXLET-EXT-{}", port_proto_hash(spn, ""))
}

/// `OXLET-SEP-<hash>`: the iptables per-endpoint chain (upstream `KUBE-SEP-`).
pub fn ipt_endpoint_chain(spn: &ServicePortName, ep: &Endpoint) -> String {
    let ep = match ep.ip {
        IpAddr::V4(v4) => format!("{v4}:{}", ep.port),
        IpAddr::V6(v6) => format!("[{v6}]:{}", ep.port),
    };
    format!("OXLET-SEP-{}", port_proto_hash(spn, &ep))
}

/// Whether `name` is a per-service or per-endpoint iptables chain of ours.
pub fn is_ipt_service_chain(name: &str) -> bool {
    ["OXLET-SVC-", "OXLET-SVL-", "OXLET-EXT-", "OXLET-SEP-"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn port_proto_hash(spn: &ServicePortName, endpoint: &str) -> String {
    let input = format!("{spn}{}{endpoint}", spn.protocol);
    base32_sha256(&input)[..16].to_owned()
}

/// RFC 4648 base32 (upper case, no padding) of SHA-256(`s`), as Go's `base32.StdEncoding`.
fn base32_sha256(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(52);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn spn() -> ServicePortName {
        ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp)
    }

    #[test]
    fn base32_matches_go() {
        // echo -n "" | sha256sum | xxd -r -p | base32: 4OYMIQUY7QOBJGX36TEJS35ZEQT24QPEMSNZGTFESWMRW6CSXBKQ====
        assert_eq!(
            base32_sha256(""),
            "4OYMIQUY7QOBJGX36TEJS35ZEQT24QPEMSNZGTFESWMRW6CSXBKQ"
        );
    }

    #[test]
    fn names_are_stable_and_readable() {
        let name = service_chain(&spn());
        assert!(name.starts_with("service-"), "{name}");
        assert!(name.ends_with("-ns1/svc1/tcp/p80"), "{name}");
        assert_eq!(name.len(), "service-".len() + 9 + "ns1/svc1/tcp/p80".len());
        assert_eq!(name, service_chain(&spn()));
        assert_ne!(
            name,
            service_chain(&ServicePortName::new("ns1", "svc1", "p81", Protocol::Tcp))
        );
        let ep = Endpoint::ready("10.180.0.1".parse().expect("ip"), 80, false);
        assert!(endpoint_chain(&spn(), &ep).ends_with("-ns1/svc1/tcp/p80__10.180.0.1/80"));
        let ep6 = Endpoint::ready("fd00::1".parse().expect("ip"), 80, false);
        assert!(endpoint_chain(&spn(), &ep6).ends_with("__fd00..1/80"));
    }

    #[test]
    fn long_names_are_truncated_within_the_limit() {
        let long = ServicePortName::new(
            &"n".repeat(63),
            &"s".repeat(63),
            &"p".repeat(200),
            Protocol::Udp,
        );
        let ep = Endpoint::ready("10.180.0.1".parse().expect("ip"), 80, false);
        let name = endpoint_chain(&long, &ep);
        assert_eq!(name.len(), NFT_NAME_MAX);
        assert!(name.ends_with("..."));
        assert_ne!(
            name,
            endpoint_chain(
                &long,
                &Endpoint::ready("10.180.0.2".parse().expect("ip"), 80, false)
            )
        );
    }

    #[test]
    fn iptables_names_fit() {
        let ep = Endpoint::ready("fd00::1".parse().expect("ip"), 80, false);
        for n in [
            ipt_service_chain(&spn()),
            ipt_endpoint_chain(&spn(), &ep),
            ipt_external_chain(&spn()),
        ] {
            assert!(n.len() <= IPTABLES_CHAIN_MAX, "{n}");
        }
    }
}
