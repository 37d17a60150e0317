//! SRV queries for server discovery: one DNS question to one nameserver,
//! over UDP, and again over TCP when the answer is truncated.
//!
//! Implementation note: a full resolver (hickory-resolver) brings its own
//! tokio runtime, which the smol adapter must not start. Discovery needs
//! only SRV records, rarely (answers are cached), so this builds and parses
//! the messages with `hickory-proto` and exchanges them with blocking std
//! sockets, run on the client's bounded DNS pool (never the runtime's).
//! The nameserver is `--dns-server`, else the first usable `nameserver` of
//! `/etc/resolv.conf`, else `127.0.0.1:53`; the resolver's own search list
//! and options are not used (the query names are absolute).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use relay_core::resolve::{SrvAnswer, SrvRecord};

/// How long one query may take, UDP and TCP together.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one UDP try waits for its answer before asking again.
const UDP_RETRY: Duration = Duration::from_secs(2);
/// Largest UDP answer read; bigger ones come truncated and go to TCP.
const UDP_MAX: usize = 4096;

/// The nameserver of `/etc/resolv.conf`, else `127.0.0.1:53`.
pub fn system_nameserver() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|text| nameserver_of(&text))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)))
}

/// The first `nameserver` line with a plain IP address (a scoped IPv6
/// address such as `fe80::1%eth0` is skipped).
fn nameserver_of(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next()?.parse::<std::net::IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Asks `nameserver` for the SRV records of `name`; blocks up to
/// [`DNS_TIMEOUT`].
pub fn query_srv(nameserver: SocketAddr, name: &str) -> SrvAnswer {
    match exchange(nameserver, name) {
        Ok(answer) => answer,
        Err(e) => SrvAnswer::Failed(format!("SRV {name} via {nameserver}: {e}")),
    }
}

fn exchange(nameserver: SocketAddr, name: &str) -> Result<SrvAnswer, String> {
    let deadline = Instant::now() + DNS_TIMEOUT;
    let mut fqdn = Name::from_ascii(name).map_err(|e| e.to_string())?;
    fqdn.set_fqdn(true);
    let mut id = [0u8; 2];
    getrandom::fill(&mut id).map_err(|e| e.to_string())?;
    let id = u16::from_be_bytes(id);
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(fqdn.clone(), RecordType::SRV));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;

    let mut response = udp(nameserver, &bytes, id, &fqdn, deadline)?;
    if response.metadata.truncation {
        response = tcp(nameserver, &bytes, id, &fqdn, deadline)?;
    }
    Ok(interpret(&response))
}

/// Whether `response` answers our question.
fn answers(response: &Message, id: u16, name: &Name) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && response
            .queries
            .first()
            .is_some_and(|q| q.query_type == RecordType::SRV && q.name.eq_case(name))
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "no answer in time".to_owned())
}

fn udp(
    nameserver: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    deadline: Instant,
) -> Result<Message, String> {
    let local: SocketAddr = if nameserver.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    // Only the nameserver's datagrams get through.
    socket.connect(nameserver).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; UDP_MAX];
    loop {
        socket.send(query).map_err(|e| e.to_string())?;
        let try_until = (Instant::now() + UDP_RETRY).min(deadline);
        while let Ok(wait) = remaining(try_until) {
            socket
                .set_read_timeout(Some(wait))
                .map_err(|e| e.to_string())?;
            match socket.recv(&mut buf) {
                Ok(n) => {
                    // Stray or forged datagrams are skipped, not fatal.
                    if let Ok(m) = Message::from_vec(&buf[..n])
                        && answers(&m, id, name)
                    {
                        return Ok(m);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        remaining(deadline)?;
    }
}

fn tcp(
    nameserver: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    deadline: Instant,
) -> Result<Message, String> {
    let mut stream = TcpStream::connect_timeout(&nameserver, remaining(deadline)?)
        .map_err(|e| format!("TCP: {e}"))?;
    let io = |e: std::io::Error| format!("TCP: {e}");
    stream
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io)?;
    let length = u16::try_from(query.len()).map_err(|_| "query too long".to_owned())?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut buf).map_err(io)?;
    let m = Message::from_vec(&buf).map_err(|e| format!("TCP: {e}"))?;
    if answers(&m, id, name) {
        Ok(m)
    } else {
        Err("TCP: the answer is for another question".to_owned())
    }
}

/// The SRV records of a response, or why there are none.
fn interpret(response: &Message) -> SrvAnswer {
    match response.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return SrvAnswer::NoRecords {
                ttl: negative_ttl(response),
            };
        }
        code => return SrvAnswer::Failed(format!("the nameserver answered {code}")),
    }
    let records: Vec<SrvRecord> = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii(),
                ttl: Duration::from_secs(u64::from(r.ttl)),
            }),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        SrvAnswer::NoRecords {
            ttl: negative_ttl(response),
        }
    } else {
        SrvAnswer::Records(records)
    }
}

/// RFC 2308: a "no such record" holds for the lesser of the SOA's TTL and
/// its `minimum`.
fn negative_ttl(response: &Message) -> Option<Duration> {
    response.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(Duration::from_secs(u64::from(r.ttl.min(soa.minimum)))),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_from_resolv_conf() {
        for (text, want) in [
            (
                "nameserver 10.0.0.2\nnameserver 10.0.0.3\n",
                Some("10.0.0.2:53"),
            ),
            (
                "# c\nsearch x\nnameserver fe80::1%eth0\nnameserver ::1\n",
                Some("[::1]:53"),
            ),
            ("options ndots:2\n", None),
        ] {
            assert_eq!(nameserver_of(text).map(|a| a.to_string()).as_deref(), want);
        }
    }
}
