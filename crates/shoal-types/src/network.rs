//! Networks: overlay networks that services join, and the addresses the managers hand out on
//! them. `spec` is the user's; `status` (VNI, subnet, gateway) is allocated by the state machine.
//!
//! Phase 1 of service networking: these are cluster objects and allocations only (VNI, subnet,
//! service VIPs, task and per-node addresses, all decided deterministically in `apply`). Nothing
//! on the nodes uses them yet: tasks still run on the node's own network.
//!
//! Addresses are IPv4 only and handled as `u32` here (no `std::net`: the brain stays free of
//! anything network-shaped beyond numbers and strings).

use crate::id::NetworkId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The name of the cluster-wide routing-mesh network.
pub const INGRESS_NAME: &str = "ingress";
/// The ingress network's subnet, unless it overlaps a network that exists already.
pub const INGRESS_SUBNET: &str = "10.255.0.0/16";
/// The pool that networks without `--subnet` get a /24 from.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
/// The first /24 handed out from the default pool.
pub const DEFAULT_POOL_START: &str = "10.0.1.0/24";
/// Prefix of the subnets carved out of the default pool.
pub const DEFAULT_POOL_PREFIX: u8 = 24;
/// VXLAN network identifiers are allocated from here upward (lower ones are left to the host).
pub const MIN_VNI: u32 = 4096;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The widest and the narrowest subnet a network may have.
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 29;
/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u16 = 68;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Network {
    pub id: NetworkId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: NetworkSpec,
    #[serde(default)]
    pub status: NetworkStatus,
}

impl Network {
    /// A network about to be created: the store fills in version, times and status.
    pub fn new(id: NetworkId, spec: NetworkSpec) -> Network {
        Network {
            id,
            version: 0,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
            spec,
            status: NetworkStatus::default(),
        }
    }
}

/// What the managers allocated for a network (system-owned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct NetworkStatus {
    /// The VXLAN network identifier, unique among networks.
    pub vni: u32,
    /// The subnet in use: the spec's, or one from the default pool.
    pub subnet: String,
    /// The gateway address (reserved; never handed to a task).
    pub gateway: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum NetworkDriver {
    /// VXLAN between the nodes (the only driver so far).
    #[default]
    Overlay,
}

impl NetworkDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Overlay => "overlay",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: NetworkDriver,
    /// IPv4 CIDR (`10.42.0.0/24`); none: the next free /24 of [`DEFAULT_POOL`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Inside the subnet; none: its first address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Standalone tasks may attach (kept for Docker compatibility; Shoal has no standalone tasks).
    pub attachable: bool,
    /// `--opt mtu=N`; none: the node's underlay MTU minus the VXLAN overhead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    pub labels: BTreeMap<String, String>,
    /// The routing-mesh network (at most one).
    pub ingress: bool,
}

/// A service's request to join a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct NetworkAttachmentConfig {
    /// The network's name or id; the managers store the id.
    pub target: String,
    /// Extra DNS names of the service on this network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A service's virtual IP on one network (`10.0.1.2/24`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct VirtualIp {
    pub network_id: NetworkId,
    pub addr: String,
}

/// A service's endpoint as the managers allocated it (system-owned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct ServiceEndpoint {
    /// One per network the service joins, in `vip` endpoint mode; none in `dnsrr`.
    pub vips: Vec<VirtualIp>,
}

impl ServiceEndpoint {
    pub fn is_empty(&self) -> bool {
        self.vips.is_empty()
    }
}

/// A task's addresses on one network (`10.0.1.7/24`). Empty while no address could be
/// allocated: such a task is not placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct TaskNetwork {
    pub network_id: NetworkId,
    pub addrs: Vec<String>,
}

/// An IPv4 subnet: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// A subnet from its network address (host bits must be zero) and prefix (0..=32).
    pub fn new(addr: u32, prefix: u8) -> Option<Ipv4Net> {
        let n = Ipv4Net { addr, prefix };
        (prefix <= 32 && n.network() == addr).then_some(n)
    }

    /// `a.b.c.d/p`, with the host bits zero. Errors say what is wrong in words.
    pub fn parse(s: &str) -> Result<Ipv4Net, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR: expected ADDRESS/PREFIX, e.g. 10.0.1.0/24"))?;
        let addr = parse_ipv4(a).map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))?;
        let digits = (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        let prefix: u8 =
            p.parse().ok().filter(|n| digits && *n <= 32 && (p == "0" || !p.starts_with('0'))).ok_or_else(
                || format!("{s:?} is not an IPv4 CIDR: the prefix must be a number from 0 to 32"),
            )?;
        let net = Ipv4Net { addr, prefix };
        if net.network() != addr {
            let fixed = Ipv4Net { addr: net.network(), prefix };
            return Err(format!("{s:?} has host bits set: the network is {fixed}"));
        }
        Ok(net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address.
    pub fn network(&self) -> u32 {
        self.addr & self.mask()
    }

    /// The broadcast address (the last of the subnet).
    pub fn broadcast(&self) -> u32 {
        self.network() | !self.mask()
    }

    /// The first address a host may have.
    pub fn first_host(&self) -> u32 {
        self.network().saturating_add(1)
    }

    /// The last address a host may have.
    pub fn last_host(&self) -> u32 {
        self.broadcast().saturating_sub(1)
    }

    /// How many host addresses there are (network and broadcast excluded).
    pub fn hosts(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix))).saturating_sub(2)
    }

    pub fn contains(&self, a: u32) -> bool {
        a & self.mask() == self.network()
    }

    /// Whether a host may have `a` (inside, and neither the network nor the broadcast address).
    pub fn is_host(&self, a: u32) -> bool {
        self.contains(a) && a != self.network() && a != self.broadcast()
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// `a.b.c.d/p` for an address of this subnet, as tasks and VIPs carry it.
    pub fn addr_string(&self, a: u32) -> String {
        format!("{}/{}", fmt_ipv4(a), self.prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", fmt_ipv4(self.addr), self.prefix)
    }
}

/// Four decimal octets, no leading zeros (they would read as octal elsewhere).
pub fn parse_ipv4(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not an IPv4 address");
    let mut out: u32 = 0;
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if parts > 4
            || part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return Err(bad());
        }
        let v: u32 = part.parse().map_err(|_| bad())?;
        if v > 255 {
            return Err(bad());
        }
        out = (out << 8) | v;
    }
    if parts != 4 {
        return Err(bad());
    }
    Ok(out)
}

pub fn fmt_ipv4(a: u32) -> String {
    let [b0, b1, b2, b3] = a.to_be_bytes();
    format!("{b0}.{b1}.{b2}.{b3}")
}

/// The address part of `a.b.c.d/p` (or of a bare address).
pub fn parse_addr_with_prefix(s: &str) -> Option<u32> {
    parse_ipv4(s.split_once('/').map_or(s, |(a, _)| a)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_strictly() {
        let n = Ipv4Net::parse("10.0.1.0/24").expect("cidr");
        assert_eq!(n.to_string(), "10.0.1.0/24");
        assert_eq!(fmt_ipv4(n.first_host()), "10.0.1.1");
        assert_eq!(fmt_ipv4(n.last_host()), "10.0.1.254");
        assert_eq!(fmt_ipv4(n.broadcast()), "10.0.1.255");
        assert_eq!(n.hosts(), 254);
        assert_eq!(n.addr_string(n.first_host() + 1), "10.0.1.2/24");
        for (bad, want) in [
            ("10.0.1.0", "expected ADDRESS/PREFIX"),
            ("10.0.1/24", "not an IPv4 address"),
            ("10.0.1.256/24", "not an IPv4 address"),
            ("10.0.01.0/24", "not an IPv4 address"),
            ("10.0.1.0/33", "prefix must be a number"),
            ("10.0.1.0/", "prefix must be a number"),
            ("10.0.1.0/024", "prefix must be a number"),
            ("fd00::/64", "not an IPv4 address"),
            ("10.0.1.5/24", "has host bits set: the network is 10.0.1.0/24"),
        ] {
            let e = Ipv4Net::parse(bad).expect_err(bad);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn overlap_and_membership() {
        let a = Ipv4Net::parse("10.0.0.0/16").expect("a");
        let b = Ipv4Net::parse("10.0.5.0/24").expect("b");
        let c = Ipv4Net::parse("10.1.0.0/24").expect("c");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert!(b.is_host(parse_ipv4("10.0.5.1").expect("ip")));
        assert!(!b.is_host(b.network()) && !b.is_host(b.broadcast()));
        assert_eq!(parse_addr_with_prefix("10.0.5.7/24"), parse_ipv4("10.0.5.7").ok());
        let all = Ipv4Net::parse("0.0.0.0/0").expect("all");
        assert_eq!(fmt_ipv4(all.broadcast()), "255.255.255.255");
        assert!(all.overlaps(&c));
    }
}
