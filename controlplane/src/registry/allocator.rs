//! Pure ClusterIP and NodePort allocation, with kube-apiserver's error texts
//! (pkg/registry/core/service/ipallocator and portallocator).
//!
//! The caller gathers what is in use and a random seed; these functions only choose. A free
//! value is found by a deterministic scan from an offset derived from the seed, so the choice is
//! spread over the range (as upstream's random allocation) yet reproducible in tests.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use serde_json::{json, Value};

use crate::registry::strategy::FieldError;

/// Upper bound of addresses scanned for a dynamic ClusterIP: huge IPv6 ranges are used only
/// in their first 2^20 addresses, as upstream caps the size of an IPv6 service range's bitmap.
const MAX_SCANNED: u128 = 1 << 20;

/// A parsed CIDR: network address as an integer, prefix length and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    base: u128,
    bits: u32,
    prefix: u32,
    v6: bool,
}

impl Cidr {
    fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let ip: IpAddr = addr.parse().ok()?;
        let prefix: u32 = prefix.parse().ok()?;
        let (n, bits, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, false),
            IpAddr::V6(a) => (u128::from(a), 128, true),
        };
        if prefix > bits {
            return None;
        }
        let host_bits = bits - prefix;
        let mask = if host_bits >= 128 {
            0
        } else {
            !((1u128 << host_bits) - 1)
        };
        Some(Self {
            base: n & mask,
            bits,
            prefix,
            v6,
        })
    }

    /// Number of addresses in the block (saturating for a /0 IPv6).
    fn size(&self) -> u128 {
        let host_bits = self.bits - self.prefix;
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    fn ip_at(&self, n: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            // The value came from a 32-bit family block, so it fits.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let n = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(a)),
            (IpAddr::V6(a), true) => u128::from(a),
            _ => return None,
        };
        let off = n.checked_sub(self.base)?;
        (off < self.size()).then_some(off)
    }

    /// First and last offsets a Service may use: the network address is never used and, in
    /// IPv4, neither is the broadcast address (upstream's `RangeSize` excludes both).
    fn usable(&self) -> Option<(u128, u128)> {
        let size = self.size();
        let last = if self.v6 {
            size - 1
        } else {
            size.checked_sub(2)?
        };
        (last >= 1).then_some((1, last))
    }
}

fn cluster_ip_error(ip: IpAddr, detail: &str) -> FieldError {
    FieldError::invalid(
        "spec.clusterIPs",
        &json!([ip.to_string()]),
        format!("failed to allocate IP {ip}: {detail}"),
    )
}

/// The first usable address of `cidr`: the `kubernetes` Service's ClusterIP (`10.43.0.1`).
pub fn first_ip(cidr: &str) -> Result<IpAddr, FieldError> {
    let invalid = || {
        FieldError::invalid(
            "spec.clusterIPs",
            &Value::Null,
            format!("invalid service CIDR {cidr:?}"),
        )
    };
    let range = Cidr::parse(cidr).ok_or_else(invalid)?;
    let (first, _) = range.usable().ok_or_else(invalid)?;
    Ok(range.ip_at(range.base + first))
}

/// Picks a ClusterIP from `cidr`, or checks the `requested` one.
///
/// The first usable address (`10.43.0.1` in `10.43.0.0/16`) belongs to the `kubernetes`
/// Service: it is only given when requested. `seed` chooses where the scan for a free address
/// starts.
pub fn allocate_cluster_ip(
    cidr: &str,
    used: &HashSet<IpAddr>,
    requested: Option<IpAddr>,
    seed: u64,
) -> Result<IpAddr, FieldError> {
    let Some(range) = Cidr::parse(cidr) else {
        return Err(FieldError::invalid(
            "spec.clusterIPs",
            &Value::Null,
            format!("failed to allocate a serviceIP: invalid service CIDR {cidr:?}"),
        ));
    };
    let Some((first, last)) = range.usable() else {
        return Err(FieldError::invalid(
            "spec.clusterIPs",
            &Value::Null,
            format!("failed to allocate a serviceIP: the range {cidr} has no usable address"),
        ));
    };
    if let Some(ip) = requested {
        let in_range = range
            .offset_of(ip)
            .is_some_and(|o| (first..=last).contains(&o));
        if !in_range {
            return Err(cluster_ip_error(
                ip,
                &format!("provided IP is not in the valid range. The range of valid IPs is {cidr}"),
            ));
        }
        if used.contains(&ip) {
            return Err(cluster_ip_error(ip, "provided IP is already allocated"));
        }
        return Ok(ip);
    }
    // Dynamic allocation skips `first`, the kubernetes Service's address.
    let lo = first + 1;
    let hi = last.min(first + MAX_SCANNED);
    if lo > hi {
        return Err(range_full());
    }
    let count = hi - lo + 1;
    let start = u128::from(seed) % count;
    for i in 0..count {
        let ip = range.ip_at(range.base + lo + (start + i) % count);
        if !used.contains(&ip) {
            return Ok(ip);
        }
    }
    Err(range_full())
}

fn range_full() -> FieldError {
    FieldError::invalid(
        "spec.clusterIPs",
        &Value::Null,
        "failed to allocate a serviceIP: range is full",
    )
}

/// Picks a NodePort from `range`, or checks the `requested` one. The field path is
/// `spec.ports[0].nodePort`; callers allocating another port rewrite `field`.
pub fn allocate_node_port(
    range: RangeInclusive<u16>,
    used: &HashSet<u16>,
    requested: Option<u16>,
    seed: u64,
) -> Result<u16, FieldError> {
    const FIELD: &str = "spec.ports[0].nodePort";
    let (lo, hi) = (*range.start(), *range.end());
    if let Some(p) = requested {
        if !range.contains(&p) {
            return Err(FieldError::invalid(
                FIELD,
                &json!(p),
                format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
            ));
        }
        if used.contains(&p) {
            return Err(FieldError::invalid(
                FIELD,
                &json!(p),
                "provided port is already allocated",
            ));
        }
        return Ok(p);
    }
    if lo > hi {
        return Err(FieldError::invalid(FIELD, &json!(0), "range is full"));
    }
    let count = u64::from(hi - lo) + 1;
    let start = seed % count;
    for i in 0..count {
        let off = (start + i) % count;
        // off < count ≤ 65536, and lo + off ≤ hi, so it fits a u16.
        let p = lo + u16::try_from(off).unwrap_or(0);
        if !used.contains(&p) {
            return Ok(p);
        }
    }
    Err(FieldError::invalid(FIELD, &json!(0), "range is full"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ip_is_the_kubernetes_service_address() {
        assert_eq!(
            first_ip("10.43.0.0/16").expect("v4").to_string(),
            "10.43.0.1"
        );
        assert_eq!(
            first_ip("fd00:43::/112").expect("v6").to_string(),
            "fd00:43::1"
        );
        assert!(first_ip("nonsense").is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn set(ips: &[&str]) -> HashSet<IpAddr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn cluster_ips() {
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            Option<&'a str>,
            u64,
            Result<&'a str, &'a str>,
        );
        let cases: &[Case] = &[
            // Dynamic: never the network address nor .1 (kubernetes), never broadcast.
            ("10.43.0.0/30", &[], None, 0, Ok("10.43.0.2")),
            ("10.43.0.0/30", &[], None, 7, Ok("10.43.0.2")),
            ("10.43.0.0/29", &["10.43.0.2"], None, 0, Ok("10.43.0.3")),
            ("10.43.0.0/29", &[], None, 4, Ok("10.43.0.6")),
            ("10.43.0.0/29", &["10.43.0.6"], None, 4, Ok("10.43.0.2")),
            ("10.43.0.0/30", &["10.43.0.2"], None, 0, Err("spec.clusterIPs: Invalid value: null: failed to allocate a serviceIP: range is full")),
            // Requested.
            ("10.43.0.0/16", &[], Some("10.43.0.1"), 0, Ok("10.43.0.1")),
            ("10.43.0.0/16", &[], Some("10.43.0.10"), 0, Ok("10.43.0.10")),
            (
                "10.43.0.0/16",
                &["10.43.0.10"],
                Some("10.43.0.10"),
                0,
                Err("spec.clusterIPs: Invalid value: [\"10.43.0.10\"]: failed to allocate IP 10.43.0.10: provided IP is already allocated"),
            ),
            (
                "10.43.0.0/16",
                &[],
                Some("10.44.0.10"),
                0,
                Err("spec.clusterIPs: Invalid value: [\"10.44.0.10\"]: failed to allocate IP 10.44.0.10: provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
            ),
            (
                "10.43.0.0/16",
                &[],
                Some("10.43.0.0"),
                0,
                Err("spec.clusterIPs: Invalid value: [\"10.43.0.0\"]: failed to allocate IP 10.43.0.0: provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
            ),
            (
                "10.43.0.0/16",
                &[],
                Some("fd00::5"),
                0,
                Err("spec.clusterIPs: Invalid value: [\"fd00::5\"]: failed to allocate IP fd00::5: provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
            ),
            // IPv6.
            ("fd00:43::/112", &[], None, 0, Ok("fd00:43::2")),
            ("fd00:43::/64", &["fd00:43::2"], None, 0, Ok("fd00:43::3")),
            ("fd00:43::/112", &[], Some("fd00:43::ffff"), 0, Ok("fd00:43::ffff")),
            ("fd00:43::/112", &[], Some("fd00:43::1:0"), 0, Err("spec.clusterIPs: Invalid value: [\"fd00:43::1:0\"]: failed to allocate IP fd00:43::1:0: provided IP is not in the valid range. The range of valid IPs is fd00:43::/112")),
            // Bad config.
            ("nonsense", &[], None, 0, Err("spec.clusterIPs: Invalid value: null: failed to allocate a serviceIP: invalid service CIDR \"nonsense\"")),
        ];
        for (cidr, used, req, seed, want) in cases {
            let got =
                allocate_cluster_ip(cidr, &set(used), req.map(ip), *seed).map_err(|e| e.line());
            let want = want.map(ip).map_err(str::to_string);
            assert_eq!(got, want, "{cidr} used={used:?} req={req:?} seed={seed}");
        }
    }

    #[test]
    fn dynamic_cluster_ips_are_distinct_until_full() {
        let mut used = HashSet::new();
        for seed in 0..5u64 {
            let got = allocate_cluster_ip("10.0.0.0/29", &used, None, seed * 3);
            let Ok(got) = got else {
                panic!("seed {seed}: {got:?}");
            };
            assert!(used.insert(got), "{got} twice");
        }
        assert!(allocate_cluster_ip("10.0.0.0/29", &used, None, 1).is_err());
    }

    #[test]
    fn node_ports() {
        type Case<'a> = (
            RangeInclusive<u16>,
            &'a [u16],
            Option<u16>,
            u64,
            Result<u16, &'a str>,
        );
        let cases: &[Case] = &[
            (30000..=32767, &[], None, 0, Ok(30000)),
            (30000..=32767, &[], None, 2767, Ok(32767)),
            (30000..=32767, &[], None, 2768, Ok(30000)),
            (30000..=30002, &[30001], None, 1, Ok(30002)),
            (30000..=30001, &[30000, 30001], None, 0, Err("spec.ports[0].nodePort: Invalid value: 0: range is full")),
            (30000..=32767, &[], Some(30080), 0, Ok(30080)),
            (30000..=32767, &[30080], Some(30080), 0, Err("spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated")),
            (
                30000..=32767,
                &[],
                Some(80),
                0,
                Err("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
            ),
        ];
        for (range, used, req, seed, want) in cases {
            let used: HashSet<u16> = used.iter().copied().collect();
            let got = allocate_node_port(range.clone(), &used, *req, *seed).map_err(|e| e.line());
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{range:?} {req:?} {seed}"
            );
        }
    }
}
