//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`), as flags name
//! them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network: an address and a prefix length. An IPv4-mapped IPv6
/// network (`::ffff:10.0.0.0/104`) is kept as the IPv4 one it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address: no bits set past `prefix`.
    addr: IpAddr,
    /// At most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

/// A value that is not `ADDR/LEN` or a bare `ADDR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not an IP address, or a prefix length that is not a number in range.
    #[error("expected an IP address or ADDR/LEN, e.g. 10.0.0.1, 10.0.0.0/8 or fd00::/8, got {0:?}")]
    Syntax(String),
    /// Address bits set past the prefix length (`10.1.2.3/8`): a typo
    /// more likely than meant.
    #[error("{0:?} has address bits set past its prefix length (did you mean {1}?)")]
    HostBits(String, Cidr),
}

impl Cidr {
    /// `ADDR/LEN` (IPv6 unbracketed), or a bare `ADDR` for that one
    /// address.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, len)) => {
                // `parse` alone would take a sign.
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let len = len.parse::<u8>().map_err(|_| syntax())?;
                (addr.parse::<IpAddr>().map_err(|_| syntax())?, Some(len))
            }
            None => (s.parse::<IpAddr>().map_err(|_| syntax())?, None),
        };
        let max = bits(addr);
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(syntax());
        }
        let network = Self::masked(addr, prefix);
        if network.addr != normalized(addr) {
            return Err(CidrError::HostBits(s.to_owned(), network));
        }
        Ok(network)
    }

    /// The network of `addr` with `prefix` bits (at most its width).
    fn masked(addr: IpAddr, prefix: u8) -> Cidr {
        match addr {
            IpAddr::V4(v4) => Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(prefix))),
                prefix,
            },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Self::masked(IpAddr::V4(v4), prefix - 96),
                _ => Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(prefix))),
                    prefix,
                },
            },
        }
    }

    /// Whether `addr` is in this network; an IPv4-mapped IPv6 address
    /// counts as the IPv4 address it maps.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, normalized(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn normalized(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

fn bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_shows() {
        for (input, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("2001:DB8::/32", "2001:db8::/32"),
            // An IPv4-mapped network is the IPv4 one.
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
            ("10.0.0.0/008", "10.0.0.0/8"),
        ] {
            let cidr = Cidr::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(cidr.to_string(), shown, "{input}");
            assert_eq!(input.parse::<Cidr>(), Ok(cidr));
            assert_eq!(Cidr::parse(shown), Ok(cidr), "{shown} round-trips");
        }
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        for input in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/0008",
            "::/129",
            "10.0.0/8",
            "[::1]/128",
            "example.org/8",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            assert_eq!(
                Cidr::parse(input),
                Err(CidrError::Syntax(input.to_owned())),
                "{input:?}"
            );
        }
        let Err(CidrError::HostBits(_, meant)) = Cidr::parse("10.1.2.3/8") else {
            panic!("host bits accepted");
        };
        assert_eq!(meant.to_string(), "10.0.0.0/8");
        assert!(matches!(
            Cidr::parse("fd00::1/8"),
            Err(CidrError::HostBits(..))
        ));
    }

    #[test]
    fn contains() {
        for (cidr, addr, inside) in [
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:11.1.2.3", false),
            ("::ffff:10.0.0.0/104", "10.1.2.3", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::ffff:203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            // IPv4 addresses are IPv4 networks' only.
            ("::/0", "127.0.0.1", false),
            ("::/0", "::ffff:127.0.0.1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("::1", "::1", true),
            ("::1", "::2", false),
        ] {
            assert_eq!(
                Cidr::parse(cidr).unwrap().contains(ip(addr)),
                inside,
                "{cidr} contains {addr}"
            );
        }
    }
}
