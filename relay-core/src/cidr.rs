//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), for
//! settings that name networks: trusted proxies, addresses exempt from
//! rate limits, addresses not to connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A range of IP addresses: a network address and a prefix length.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are IPv4 addresses, on
/// either side: `::ffff:10.0.0.0/104` is `10.0.0.0/8`, and `10.0.0.0/8`
/// contains `::ffff:10.0.0.1`. An IPv6 range that covers the mapped
/// addresses (`::/0`) contains the IPv4 ones too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address or a range such as 10.0.0.0/8")]
    Address(String),
    /// The prefix length is not a number within the address's bits.
    #[error("{0:?}: the prefix length must be 0 to 32 for IPv4, 0 to 128 for IPv6")]
    Prefix(String),
    /// The address has bits set past the prefix length.
    #[error("{given:?} has bits set past its prefix: the range is {network}")]
    HostBits {
        /// As written.
        given: String,
        /// The range it probably means.
        network: Cidr,
    },
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX`, or a bare address (a range of one). The
    /// address must have no bits set past the prefix (`10.0.0.1/8` is
    /// refused, naming `10.0.0.0/8`), so that a typo is not a wider range
    /// than meant.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(s.to_owned()))?;
        let bits = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| CidrError::Prefix(s.to_owned()))?,
            Some(_) => return Err(CidrError::Prefix(s.to_owned())),
        };
        let cidr = Self::canonical(address, prefix);
        let network = Self::canonical(mask(address, prefix), prefix);
        if cidr != network {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                network,
            });
        }
        Ok(cidr)
    }

    /// `address/prefix`, an IPv4-mapped range written as IPv4.
    fn canonical(address: IpAddr, prefix: u8) -> Self {
        match address {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Self {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Self {
                    network: address,
                    prefix,
                },
            },
            _ => Self {
                network: address,
                prefix,
            },
        }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(_), ip @ IpAddr::V4(_)) => mask(ip, self.prefix) == self.network,
            (IpAddr::V6(_), ip @ IpAddr::V6(_)) => mask(ip, self.prefix) == self.network,
            (IpAddr::V6(_), IpAddr::V4(v4)) => {
                mask(IpAddr::V6(v4.to_ipv6_mapped()), self.prefix) == self.network
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    /// The network address (IPv4 for a mapped range).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length, in bits of [`Cidr::network`].
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
}

/// `ip` with the bits past `prefix` cleared (`prefix` at most its bits).
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let shift = 32 - u32::from(prefix);
            let kept = u32::from(v4).checked_shr(shift).map_or(0, |b| b << shift);
            IpAddr::V4(Ipv4Addr::from(kept))
        }
        IpAddr::V6(v6) => {
            let shift = 128 - u32::from(prefix);
            let kept = u128::from(v6).checked_shr(shift).map_or(0, |b| b << shift);
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.128/25", "192.168.1.128/25"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("10.0.0.0/08", "10.0.0.0/8"),
        ];
        for (given, shown) in cases {
            let cidr = Cidr::parse(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(cidr.to_string(), shown, "{given}");
            assert_eq!(Cidr::parse(shown), Ok(cidr), "{given} round trip");
            assert_eq!(given.parse::<Cidr>(), Ok(cidr));
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "10.0.0",
            "example.org/8",
            "10.0.0.0/",
            "/8",
            "1.2.3.4/8/8",
        ] {
            assert!(
                matches!(
                    Cidr::parse(bad),
                    Err(CidrError::Address(_) | CidrError::Prefix(_))
                ),
                "{bad:?}"
            );
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
        ] {
            assert!(
                matches!(Cidr::parse(bad), Err(CidrError::Prefix(_))),
                "{bad:?}"
            );
        }
        match Cidr::parse("10.0.0.1/8") {
            Err(CidrError::HostBits { network, .. }) => {
                assert_eq!(network.to_string(), "10.0.0.0/8");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Cidr::parse("2001:db8::1/32"),
            Err(CidrError::HostBits { .. })
        ));
        // The message names the range meant.
        let e = Cidr::parse("192.168.1.1/24").unwrap_err().to_string();
        assert!(e.contains("192.168.1.0/24"), "{e}");
    }

    #[test]
    fn contains() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::a01:203", false),
            ("10.0.0.0/8", "2001:db8::1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.128/25", "192.168.1.127", false),
            ("192.168.1.128/25", "192.168.1.255", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::", false),
            ("2001:db8::/32", "10.0.0.1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", true),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.9.9.9", true),
            ("::ffff:0:0/96", "198.51.100.1", true),
            ("::ffff:0:0/96", "2001:db8::1", false),
        ];
        for (range, address, expected) in cases {
            let cidr = Cidr::parse(range).unwrap();
            assert_eq!(
                cidr.contains(ip(address)),
                expected,
                "{range} contains {address}"
            );
        }
    }

    #[test]
    fn parts() {
        let cidr = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!((cidr.network(), cidr.prefix_len()), (ip("10.0.0.0"), 8));
        let cidr = Cidr::parse("2001:db8::/48").unwrap();
        assert_eq!((cidr.network(), cidr.prefix_len()), (ip("2001:db8::"), 48));
    }
}
