//! Which addresses the client may connect to when discovery (a server
//! name, `.well-known`, SRV, DNS: all of them up to strangers) chose them:
//! none of the special-purpose ones (loopback, private networks,
//! link-local, multicast, …), unless the operator allows them.
//!
//! Implementation note: the blocks are IANA's special-purpose registries
//! (RFC 6890) that are not globally reachable, plus multicast, reserved
//! and deprecated ones: no federation server is there, while the
//! relay's own host, its LAN and its cloud's metadata service are. An
//! IPv4-mapped IPv6 address is judged as the IPv4 address it maps, and
//! one in NAT64's well-known prefix `64:ff9b::/96` (RFC 6052, which DNS64
//! gives IPv6-only hosts for IPv4-only servers) as the IPv4 address it
//! embeds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cidr::Cidr;

/// A special-purpose block an address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// `0.0.0.0`, `::`: connecting to it reaches this host.
    Unspecified,
    /// `0.0.0.0/8`: "this network" (RFC 791).
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`: this host.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10`: carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`: a cloud's metadata service is here.
    LinkLocal,
    /// `192.0.0.0/24`, `2001::/23`: IETF protocol assignments (RFC 6890).
    ProtocolAssignments,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24` (RFC 5737),
    /// `2001:db8::/32` (RFC 3849), `3fff::/20` (RFC 9637).
    Documentation,
    /// `198.18.0.0/15`: benchmarking (RFC 2544).
    Benchmarking,
    /// `192.88.99.0/24`, `2002::/16`: 6to4 (deprecated, RFC 7526).
    SixToFour,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `240.0.0.0/4`: reserved (RFC 1112).
    Reserved,
    /// `255.255.255.255`: limited broadcast (RFC 919).
    Broadcast,
    /// `::/96` but `::` and `::1`: IPv4-compatible (deprecated, RFC 4291).
    Ipv4Compatible,
    /// `64:ff9b:1::/48`: local-use NAT64 (RFC 8215).
    LocalNat64,
    /// `100::/64`: discard-only (RFC 6666).
    DiscardOnly,
    /// `fc00::/7`: unique local (RFC 4193).
    UniqueLocal,
    /// `fec0::/10`: site-local (deprecated, RFC 3879).
    SiteLocal,
    /// `5f00::/16`: SRv6 segment identifiers (RFC 9602).
    Srv6,
}

impl fmt::Display for SpecialUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "the unspecified address",
            Self::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Self::Loopback => "loopback",
            Self::Private => "private (RFC 1918)",
            Self::SharedAddressSpace => "shared address space (100.64.0.0/10, carrier-grade NAT)",
            Self::LinkLocal => "link-local",
            Self::ProtocolAssignments => "an IETF protocol assignment (RFC 6890)",
            Self::Documentation => "for documentation",
            Self::Benchmarking => "for benchmarking (198.18.0.0/15)",
            Self::SixToFour => "6to4 (deprecated)",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved (240.0.0.0/4)",
            Self::Broadcast => "the broadcast address",
            Self::Ipv4Compatible => "IPv4-compatible IPv6 (deprecated)",
            Self::LocalNat64 => "local-use NAT64 (64:ff9b:1::/48)",
            Self::DiscardOnly => "discard-only (100::/64)",
            Self::UniqueLocal => "unique local (fc00::/7)",
            Self::SiteLocal => "site-local (deprecated)",
            Self::Srv6 => "an SRv6 segment identifier (5f00::/16)",
        })
    }
}

/// A block of [`SPECIAL`]: IPv4 ones as their IPv4-mapped IPv6 block.
struct Block {
    bits: u128,
    prefix: u8,
    kind: SpecialUse,
}

/// `::ffff:0:0/96`, where IPv4 addresses are mapped.
const MAPPED: u128 = 0xffff_0000_0000;

const fn v4(addr: [u8; 4], prefix: u8, kind: SpecialUse) -> Block {
    let [a, b, c, d] = addr;
    Block {
        bits: MAPPED | Ipv4Addr::new(a, b, c, d).to_bits() as u128,
        prefix: 96 + prefix,
        kind,
    }
}

const fn v6(segments: [u16; 8], prefix: u8, kind: SpecialUse) -> Block {
    let [a, b, c, d, e, f, g, h] = segments;
    Block {
        bits: Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits(),
        prefix,
        kind,
    }
}

/// The refused blocks; the first that holds an address says why.
const SPECIAL: &[Block] = {
    use SpecialUse::*;
    &[
        v4([0, 0, 0, 0], 32, Unspecified),
        v4([0, 0, 0, 0], 8, ThisNetwork),
        v4([10, 0, 0, 0], 8, Private),
        v4([100, 64, 0, 0], 10, SharedAddressSpace),
        v4([127, 0, 0, 0], 8, Loopback),
        v4([169, 254, 0, 0], 16, LinkLocal),
        v4([172, 16, 0, 0], 12, Private),
        v4([192, 0, 0, 0], 24, ProtocolAssignments),
        v4([192, 0, 2, 0], 24, Documentation),
        v4([192, 88, 99, 0], 24, SixToFour),
        v4([192, 168, 0, 0], 16, Private),
        v4([198, 18, 0, 0], 15, Benchmarking),
        v4([198, 51, 100, 0], 24, Documentation),
        v4([203, 0, 113, 0], 24, Documentation),
        v4([224, 0, 0, 0], 4, Multicast),
        v4([255, 255, 255, 255], 32, Broadcast),
        v4([240, 0, 0, 0], 4, Reserved),
        v6([0, 0, 0, 0, 0, 0, 0, 0], 128, Unspecified),
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128, Loopback),
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96, Ipv4Compatible),
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, LocalNat64),
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, DiscardOnly),
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, ProtocolAssignments),
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, SixToFour),
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Srv6),
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, UniqueLocal),
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, SiteLocal),
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ]
};

/// `64:ff9b::/96`: NAT64's well-known prefix (RFC 6052).
const NAT64: u128 = 0x64_ff9b << 96;

/// Whether `bits` starts with `prefix` bits of `net`.
fn within(bits: u128, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    bits & mask == net
}

/// The IPv6 form of `addr` (IPv4 as IPv4-mapped).
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => MAPPED | u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The IPv4 address a NAT64 address (`64:ff9b::/96`) embeds.
fn nat64_embedded(addr: IpAddr) -> Option<IpAddr> {
    let bits = bits(addr);
    // Truncation keeps the low 32 bits: the embedded address.
    within(bits, NAT64, 96).then(|| IpAddr::V4(Ipv4Addr::from_bits(bits as u32)))
}

/// The special-purpose block `addr` is in, if any; a NAT64 address's is
/// the embedded IPv4 address's.
pub fn special_use(addr: IpAddr) -> Option<SpecialUse> {
    if let Some(v4) = nat64_embedded(addr) {
        return special_use(v4);
    }
    let bits = bits(addr);
    SPECIAL
        .iter()
        .find(|b| within(bits, b.bits, b.prefix))
        .map(|b| b.kind)
}

/// Which addresses the client connects to when discovery chose them:
/// any but those of a special-purpose block, or those `allow` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
}

/// An address [`AddressPolicy::check`] refuses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is {kind}")]
pub struct Refused {
    /// The address.
    pub addr: IpAddr,
    /// The block it is in.
    pub kind: SpecialUse,
}

impl AddressPolicy {
    /// Refuses special-purpose addresses but those in `allow`.
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// The networks allowed despite being special-purpose.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// `Ok` if the client may connect to `addr`; `Err` says why not. A
    /// NAT64 address is allowed if the IPv4 address it embeds is.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refused> {
        let allowed = |a| self.allow.iter().any(|c| c.contains(a));
        if allowed(addr) || nat64_embedded(addr).is_some_and(allowed) {
            return Ok(());
        }
        match special_use(addr) {
            Some(kind) => Err(Refused { addr, kind }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every block: its first and last address, and the addresses just
    /// outside where those are not special too.
    #[test]
    fn every_block() {
        use SpecialUse::*;
        let table: &[(&str, Option<SpecialUse>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.0.0.1", Some(ThisNetwork)),
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(ProtocolAssignments)),
            ("192.0.0.255", Some(ProtocolAssignments)),
            ("192.0.1.0", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some(SixToFour)),
            ("192.88.99.255", Some(SixToFour)),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            // IPv4-mapped: as the IPv4 address.
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:8.8.8.8", None),
            // IPv6.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Ipv4Compatible)),
            ("::127.0.0.1", Some(Ipv4Compatible)),
            ("::255.255.255.255", Some(Ipv4Compatible)),
            ("::1:0:0:0", None),
            ("::fffe:ffff:ffff", None),
            ("::1:ffff:0:0", None),
            // NAT64: as the embedded IPv4 address.
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::169.254.169.254", Some(LinkLocal)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::", Some(LocalNat64)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(LocalNat64)),
            ("64:ff9b:2::", None),
            ("100::", Some(DiscardOnly)),
            ("100::ffff:ffff:ffff:ffff", Some(DiscardOnly)),
            ("100:0:0:1::", None),
            ("2001::", Some(ProtocolAssignments)),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some(ProtocolAssignments),
            ),
            (
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(ProtocolAssignments),
            ),
            ("2001:200::", None),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("2001:db9::", None),
            ("2002::", Some(SixToFour)),
            ("2002:7f00:1::1", Some(SixToFour)),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SixToFour)),
            ("2003::", None),
            ("2a00:1450:4001:82b::200e", None),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some(Documentation)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("3fff:1000::", None),
            ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("5f00::", Some(Srv6)),
            ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Srv6)),
            ("5f01::", None),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("fc00::", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::", None),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("fe80::", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(SiteLocal)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal)),
            ("feff::", Some(SiteLocal)),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
        ];
        let policy = AddressPolicy::default();
        for &(addr, expected) in table {
            assert_eq!(special_use(ip(addr)), expected, "{addr}");
            let checked = policy.check(ip(addr));
            match expected {
                None => assert_eq!(checked, Ok(()), "{addr}"),
                Some(kind) => assert_eq!(
                    checked,
                    Err(Refused {
                        addr: ip(addr),
                        kind
                    }),
                    "{addr}"
                ),
            }
        }
        // Every block's kind is met above.
        for block in SPECIAL {
            assert!(
                table.iter().any(|(_, kind)| *kind == Some(block.kind)),
                "{:?}",
                block.kind
            );
        }
    }

    #[test]
    fn allowed_networks_are_connected_to() {
        let cidr = |s: &str| Cidr::parse(s).unwrap();
        let policy = AddressPolicy::new(vec![cidr("127.0.0.0/8"), cidr("fd00::/8")]);
        for (addr, ok) in [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::ffff:127.0.0.1", true),
            ("64:ff9b::127.0.0.1", true),
            ("fd12::1", true),
            ("10.0.0.1", false),
            ("::1", false),
            ("fc00::1", false),
            ("64:ff9b::10.0.0.1", false),
            ("8.8.8.8", true),
        ] {
            assert_eq!(policy.check(ip(addr)).is_ok(), ok, "{addr}");
        }
        // Everything, both families.
        let open = AddressPolicy::new(vec![cidr("0.0.0.0/0"), cidr("::/0")]);
        for addr in ["0.0.0.0", "127.0.0.1", "::1", "::ffff:10.0.0.1", "ff02::1"] {
            assert_eq!(open.check(ip(addr)), Ok(()), "{addr}");
        }
        assert_eq!(
            Refused {
                addr: ip("127.0.0.1"),
                kind: SpecialUse::Loopback
            }
            .to_string(),
            "127.0.0.1 is loopback"
        );
    }
}
