//! Who sent a request: the connection's peer, or behind a trusted reverse
//! proxy the client its `X-Forwarded-For` names.

use std::net::{IpAddr, SocketAddr};

use crate::cidr::Cidr;

/// The client address of a request that came from `peer` with the
/// `X-Forwarded-For` values `forwarded_for` (in the order received).
///
/// The header counts only when `peer` is in `trusted_proxies`: then its
/// entries are read from the right (the nearest hop first), skipping
/// trusted proxies, and the first entry that is not one is the client. If
/// an entry is not an address, or every entry is a trusted proxy, the
/// client is the last trusted hop read (`peer` if none). Entries to the
/// left of the client were written by the client itself, and are never
/// read.
pub(super) fn client_address(
    peer: IpAddr,
    forwarded_for: &[String],
    trusted_proxies: &[Cidr],
) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let mut nearest = peer;
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(','));
    for entry in entries {
        let Some(hop) = parse_hop(entry) else {
            return nearest;
        };
        if !trusted(hop) {
            return hop;
        }
        nearest = hop;
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:80`, `[2001:db8::1]:80`) or in brackets.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x_forwarded_for_table() {
        let proxies: Vec<Cidr> = ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|c| Cidr::parse(c).unwrap())
            .collect();
        // (peer, X-Forwarded-For values, the client)
        let cases: [(&str, &[&str], &str); 18] = [
            ("203.0.113.9", &[], "203.0.113.9"),
            // Not from a trusted proxy: the header is the client's own word.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            ("127.0.0.2", &["198.51.100.1"], "127.0.0.2"),
            // From a trusted proxy: the nearest untrusted hop.
            ("127.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            ("127.0.0.1", &[" 198.51.100.1 "], "198.51.100.1"),
            ("127.0.0.1", &["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            ("127.0.0.1", &["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
            (
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.1, 10.1.2.3"],
                "198.51.100.1",
            ),
            (
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.1", "10.1.2.3"],
                "198.51.100.1",
            ),
            ("::ffff:127.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            ("127.0.0.1", &["2001:db8::7, fd00::1"], "2001:db8::7"),
            ("127.0.0.1", &["[2001:db8::7]:4711"], "2001:db8::7"),
            ("127.0.0.1", &["[2001:db8::7]"], "2001:db8::7"),
            ("127.0.0.1", &["198.51.100.1:4711"], "198.51.100.1"),
            // No header, or nothing but trusted hops: the last hop read.
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
            // Garbage where an address should be: the hop that wrote it.
            (
                "127.0.0.1",
                &["198.51.100.1, unknown, 10.1.2.3"],
                "10.1.2.3",
            ),
            ("127.0.0.1", &["198.51.100.1, "], "127.0.0.1"),
        ];
        for (peer, forwarded, client) in cases {
            let forwarded: Vec<String> = forwarded.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(
                client_address(ip(peer), &forwarded, &proxies),
                ip(client),
                "from {peer} with {forwarded:?}"
            );
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let forwarded = vec!["198.51.100.1".to_owned()];
        assert_eq!(
            client_address(ip("127.0.0.1"), &forwarded, &[]),
            ip("127.0.0.1")
        );
    }
}
