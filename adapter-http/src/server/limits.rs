//! What clients can make the server hold at once: connections (in all
//! and per client address) and request bodies in memory.
//!
//! Implementation note: connections are counted in the accept loop, before
//! anything is spawned for them. One past a cap gets a canned 503 from a
//! small task that never reads (at most [`MAX_REFUSING`] at once, each for
//! at most [`REFUSAL_TIMEOUT`]; over TLS, or past that, it is just closed),
//! so a flood of connections costs a file descriptor for a moment and
//! nothing more. Bodies reserve their declared length before hyper reads a
//! byte of them; a body that finds no room waits for it briefly, and
//! otherwise gets a 503 unread.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http_body_util::Full;
use hyper::body::SizeHint;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use relay_core::{ErrCode, Instant, MatrixError};

use crate::Runtime;
use crate::task::timeout;

/// [`ServerLimits::max_connections`] by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// [`ServerLimits::max_connections_per_ip`] by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 128;
/// [`ServerLimits::max_buffered_bytes`] by default: 64 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// Bodies of at most this many bytes may use the last quarter of the body
/// budget, which larger ones never get.
pub const SMALL_BODY_BYTES: u64 = 64 << 10;

/// How long a body waits for room in the budget before it is refused.
const BODY_WAIT: Duration = Duration::from_secs(1);
/// `Retry-After` of a body refused for want of budget.
const BODY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// `Retry-After` of a connection refused past a connection cap.
const CONNECTION_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Refusals are logged at most this often (they come in floods).
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Most refused connections being answered at once.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to take its answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// What clients can make the server hold at once. The defaults suit a
/// relay on a machine with 1 GiB of memory.
///
/// Implementation note: a client address is an IPv4 address, or the /64
/// prefix of an IPv6 one (what one household or host is given; counting
/// whole IPv6 addresses would let one host open connections without end).
/// Loopback is counted as any other address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once, in all.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Most bytes of request bodies held in memory at once, over all
    /// connections; a quarter of it only bodies of at most
    /// [`SMALL_BODY_BYTES`] may use.
    pub max_buffered_bytes: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl ServerLimits {
    /// `Err` saying why, if a limit is 0 or a body of `max_body_bytes`
    /// could never be held.
    pub fn check(&self, max_body_bytes: usize) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("the connection limits must be at least 1".to_owned());
        }
        let body = u64::try_from(max_body_bytes).unwrap_or(u64::MAX);
        if body > ceiling(self.max_buffered_bytes, body) {
            // Bodies over SMALL_BODY_BYTES get three quarters of the budget.
            let least = if body <= SMALL_BODY_BYTES {
                body
            } else {
                body.saturating_mul(4).div_ceil(3)
            };
            return Err(format!(
                "a body budget of {} bytes cannot hold one body of the {max_body_bytes}-byte \
                 limit; it must be at least {least}",
                self.max_buffered_bytes,
            ));
        }
        Ok(())
    }
}

/// The most of a budget of `limit` bytes that may be in use once a body of
/// `bytes` is admitted.
fn ceiling(limit: u64, bytes: u64) -> u64 {
    if bytes <= SMALL_BODY_BYTES {
        limit
    } else {
        limit - limit / 4
    }
}

/// The bytes a body reserves: its declared length, or the whole limit
/// when it declares none (chunked); nothing when it is over the limit,
/// since it is refused unread.
fn reservation(hint: &SizeHint, max_body: usize) -> u64 {
    let max_body = u64::try_from(max_body).unwrap_or(u64::MAX);
    match hint.exact() {
        Some(n) if n > max_body => 0,
        Some(n) => n,
        None => hint.upper().map_or(max_body, |upper| upper.min(max_body)),
    }
}

/// The bytes an answer of `len` bytes reserves: none for a small one.
fn answer_reservation(len: usize) -> u64 {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if len <= SMALL_BODY_BYTES { 0 } else { len }
}

/// The request bytes held in memory at once. Cheap to clone; clones share
/// the budget.
#[derive(Clone)]
pub(super) struct BodyBudget(Arc<Budget>);

struct Budget {
    limit: u64,
    state: Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    used: u64,
    /// Bodies waiting for room, woken all at once whenever some is freed.
    waiters: Vec<oneshot::Sender<()>>,
}

/// A body's share of the budget, given back when dropped: hold it as long
/// as the body's bytes are held.
#[must_use = "the reservation ends when the permit is dropped"]
pub(super) struct BodyPermit {
    budget: Arc<Budget>,
    bytes: u64,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub(super) fn new(limit: u64) -> Self {
        Self(Arc::new(Budget {
            limit,
            state: Mutex::default(),
        }))
    }

    /// Reserves room for `body` (see [`reservation`]), waiting for it at
    /// most [`BODY_WAIT`]; `Err` is the 503 to answer instead, before any
    /// of the body is read.
    pub(super) async fn reserve<R: Runtime>(
        &self,
        rt: &R,
        body: &impl hyper::body::Body,
        max_body: usize,
    ) -> Result<BodyPermit, hyper::Response<Full<Bytes>>> {
        let bytes = reservation(&body.size_hint(), max_body);
        self.reserve_bytes(rt, bytes, "too many request bodies are in memory")
            .await
    }

    /// Reserves room for an answer of `bytes` already made, waiting for it
    /// at most [`BODY_WAIT`]; `Err` is the 503 to answer instead. Answers
    /// of at most [`SMALL_BODY_BYTES`] take no room.
    ///
    /// Implementation note: a large answer (a `relay_txn` entry of up to a
    /// few MiB) is held until the client has taken it, which a client that
    /// does not read can make last; counted here, such answers share the
    /// budget with request bodies instead of adding to memory without
    /// bound. Dropping the answer loses nothing: its entry stays queued,
    /// and an acknowledgement that came with the request is exact and may
    /// be repeated.
    pub(super) async fn hold_answer<R: Runtime>(
        &self,
        rt: &R,
        bytes: usize,
    ) -> Result<Option<BodyPermit>, hyper::Response<Full<Bytes>>> {
        let bytes = answer_reservation(bytes);
        if bytes == 0 {
            return Ok(None);
        }
        self.reserve_bytes(rt, bytes, "too many answers are in memory")
            .await
            .map(Some)
    }

    /// A permit for `bytes`, waiting for room at most [`BODY_WAIT`];
    /// `Err` is the 503 that says `busy`.
    async fn reserve_bytes<R: Runtime>(
        &self,
        rt: &R,
        bytes: u64,
        busy: &str,
    ) -> Result<BodyPermit, hyper::Response<Full<Bytes>>> {
        let deadline = Instant::now() + BODY_WAIT;
        loop {
            let freed = match self.try_reserve(bytes) {
                Ok(permit) => return Ok(permit),
                Err(freed) => freed,
            };
            let woken = futures_lite::future::or(async { freed.await.is_ok() }, async {
                rt.sleep_until(deadline).await;
                false
            })
            .await;
            if !woken {
                tracing::debug!(bytes, busy, "no room in the body budget");
                return Err(busy_response(busy, BODY_RETRY_AFTER));
            }
        }
    }

    /// A permit for `bytes`, or what wakes when some room is freed.
    fn try_reserve(&self, bytes: u64) -> Result<BodyPermit, oneshot::Receiver<()>> {
        let mut state = self.0.lock();
        if state.used.saturating_add(bytes) <= ceiling(self.0.limit, bytes) {
            state.used += bytes;
            return Ok(BodyPermit {
                budget: self.0.clone(),
                bytes,
            });
        }
        // Waiters that gave up go now, so the list never outgrows the
        // connections waiting.
        state.waiters.retain(|w| !w.is_canceled());
        let (tx, rx) = oneshot::channel();
        state.waiters.push(tx);
        Err(rx)
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        self.0.lock().used
    }
}

impl Budget {
    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let waiters = {
            let mut state = self.budget.lock();
            state.used -= self.bytes;
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

/// A response body with the budget its bytes hold, given back once hyper
/// has written it (and dropped it).
pub(super) struct HeldBody {
    body: Full<Bytes>,
    _permit: Option<BodyPermit>,
}

impl HeldBody {
    /// `body`, holding `permit` as long as it lives.
    pub(super) fn new(body: Full<Bytes>, permit: Option<BodyPermit>) -> Self {
        Self {
            body,
            _permit: permit,
        }
    }
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// [`ServerLimits::max_connections`] are open.
    Total,
    /// [`ServerLimits::max_connections_per_ip`] are open from its address.
    PerAddress,
}

/// Counts open connections, in all and per client address. Cheap to
/// clone; clones share the counts.
#[derive(Clone)]
pub(super) struct ConnectionGate(Arc<Gate>);

struct Gate {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    open: usize,
    /// Refused connections being answered.
    refusing: usize,
    /// Only addresses with a connection open: at most `max_total` entries.
    by_address: HashMap<IpAddr, usize>,
    last_warning: Option<Instant>,
}

/// One open connection's place in the counts, given back when dropped.
pub(super) struct ConnectionSlot {
    gate: Arc<Gate>,
    address: IpAddr,
}

impl ConnectionGate {
    /// A gate letting in at most `max_total` connections, `max_per_address`
    /// from one client address.
    pub(super) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self(Arc::new(Gate {
            max_total,
            max_per_address,
            state: Mutex::default(),
        }))
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub(super) fn admit(&self, peer: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let address = client_address(peer);
        let mut state = self.0.lock();
        let from_address = state.by_address.get(&address).copied().unwrap_or(0);
        let refusal = if state.open >= self.0.max_total {
            Refusal::Total
        } else if from_address >= self.0.max_per_address {
            Refusal::PerAddress
        } else {
            state.open += 1;
            state.by_address.insert(address, from_address + 1);
            return Ok(ConnectionSlot {
                gate: self.0.clone(),
                address,
            });
        };
        let now = Instant::now();
        if state
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL)
        {
            state.last_warning = Some(now);
            match refusal {
                Refusal::Total => tracing::warn!(
                    open = state.open,
                    "refusing connections: --max-connections are open (logged once a minute)"
                ),
                Refusal::PerAddress => tracing::warn!(
                    %address,
                    "refusing connections: --max-connections-per-ip are open from one address \
                     (logged once a minute)"
                ),
            }
        }
        Err(refusal)
    }

    /// Answers refused plain-HTTP connection `io` with a canned 503,
    /// without reading its request, then closes it; closes it at once when
    /// [`MAX_REFUSING`] are being answered.
    pub(super) fn refuse<R, I>(&self, rt: &R, io: I, refusal: Refusal)
    where
        R: Runtime,
        I: hyper::rt::Write + Unpin + Send + 'static,
    {
        {
            let mut state = self.0.lock();
            if state.refusing >= MAX_REFUSING {
                return;
            }
            state.refusing += 1;
        }
        let (gate, rt2) = (self.0.clone(), rt.clone());
        rt.spawn(async move {
            let _ = timeout(&rt2, REFUSAL_TIMEOUT, write_refusal(io, refusal)).await;
            gate.lock().refusing -= 1;
        });
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.0.lock();
        (state.open, state.by_address.len())
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.open -= 1;
        if let Some(n) = state.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                state.by_address.remove(&self.address);
            }
        }
    }
}

/// The address `peer` is counted under: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64 prefix, as the core's rate limits count it.
fn client_address(peer: IpAddr) -> IpAddr {
    relay_core::rate::client_key(peer)
}

/// Writes the canned 503 of `refusal` to `io` (then dropped: closed).
async fn write_refusal<I: hyper::rt::Write + Unpin>(mut io: I, refusal: Refusal) {
    let message = match refusal {
        Refusal::Total => "too many connections are open",
        Refusal::PerAddress => "too many connections are open from your address",
    };
    let bytes = canned_response(message, CONNECTION_RETRY_AFTER);
    let mut written = 0;
    while written < bytes.len() {
        let wrote = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &bytes[written..])).await;
        match wrote {
            Ok(n) if n > 0 => written += n,
            _ => return,
        }
    }
    let _ = poll_fn(|cx| Pin::new(&mut io).poll_flush(cx)).await;
}

/// A whole HTTP/1.1 503 `M_LIMIT_EXCEEDED` response that closes the
/// connection.
fn canned_response(message: &str, retry_after: Duration) -> Vec<u8> {
    let error = unavailable(message, retry_after);
    let status = hyper::StatusCode::from_u16(error.status())
        .unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    let body = error.to_json();
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
         retry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        retry_after.as_secs(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// 503 `M_LIMIT_EXCEEDED` with `Retry-After`, closing the connection (its
/// body is left unread).
fn busy_response(message: &str, retry_after: Duration) -> hyper::Response<Full<Bytes>> {
    let error = unavailable(message, retry_after);
    let mut http = hyper::Response::new(Full::new(Bytes::from(error.to_json())));
    *http.status_mut() = hyper::StatusCode::from_u16(error.status())
        .unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    let headers = http.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    http
}

/// [`ErrCode::Unavailable`] (503 `M_LIMIT_EXCEEDED`) with `retry_after_ms`.
fn unavailable(message: &str, retry_after: Duration) -> MatrixError {
    let mut error = MatrixError::new(ErrCode::Unavailable, message);
    error.retry_after_ms = Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn big_bodies_leave_a_quarter_to_small_ones() {
        let budget = BodyBudget::new(8 * MIB);
        let big: Vec<_> = (0..3)
            .map(|_| budget.try_reserve(2 * MIB).ok().unwrap())
            .collect();
        assert!(budget.try_reserve(2 * MIB).is_err(), "past three quarters");
        assert!(budget.try_reserve(SMALL_BODY_BYTES + 1).is_err());
        let small: Vec<_> = (0..32)
            .map(|_| budget.try_reserve(SMALL_BODY_BYTES).ok().unwrap())
            .collect();
        assert_eq!(budget.used(), 8 * MIB);
        assert!(budget.try_reserve(1).is_err(), "full");
        assert!(budget.try_reserve(0).is_ok(), "an empty body needs nothing");
        drop(small);
        assert_eq!(budget.used(), 6 * MIB);
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn freeing_room_wakes_every_waiter() {
        let budget = BodyBudget::new(4 * MIB);
        let held = budget.try_reserve(3 * MIB).ok().unwrap();
        let mut first = budget.try_reserve(2 * MIB).err().unwrap();
        let mut second = budget.try_reserve(2 * MIB).err().unwrap();
        assert_eq!(first.try_recv(), Ok(None));
        drop(held);
        assert_eq!(first.try_recv(), Ok(Some(())));
        assert_eq!(second.try_recv(), Ok(Some(())));
    }

    #[test]
    fn waiters_that_gave_up_are_forgotten() {
        let budget = BodyBudget::new(SMALL_BODY_BYTES);
        let _held = budget.try_reserve(SMALL_BODY_BYTES).ok().unwrap();
        for _ in 0..1000 {
            drop(budget.try_reserve(1).err().unwrap());
        }
        assert_eq!(budget.0.lock().waiters.len(), 1);
    }

    #[test]
    fn a_large_answer_holds_its_room_until_its_body_is_dropped() {
        use hyper::body::Body as _;
        assert_eq!(answer_reservation(SMALL_BODY_BYTES as usize), 0);
        let len = 2 * MIB as usize;
        assert_eq!(answer_reservation(len), 2 * MIB);
        let budget = BodyBudget::new(4 * MIB);
        let permit = budget.try_reserve(answer_reservation(len)).ok();
        let body = HeldBody::new(Full::new(Bytes::from(vec![b'x'; len])), permit);
        assert_eq!(body.size_hint().exact(), Some(2 * MIB));
        assert_eq!(budget.used(), 2 * MIB);
        assert!(
            budget.try_reserve(2 * MIB).is_err(),
            "big ones share three quarters"
        );
        drop(body);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn bodies_reserve_their_declared_length_or_the_limit() {
        assert_eq!(reservation(&SizeHint::with_exact(0), 100), 0);
        assert_eq!(reservation(&SizeHint::with_exact(40), 100), 40);
        // Refused unread (413).
        assert_eq!(reservation(&SizeHint::with_exact(101), 100), 0);
        // Chunked.
        assert_eq!(reservation(&SizeHint::new(), 100), 100);
    }

    #[test]
    fn limits_must_hold_one_body_of_the_largest_size() {
        let limits = ServerLimits::default();
        assert_eq!(limits.check(4_325_376), Ok(()));
        let tight = ServerLimits {
            max_buffered_bytes: 4 * MIB,
            ..limits
        };
        assert_eq!(tight.check(3 * MIB as usize), Ok(()));
        let error = tight.check(3 * MIB as usize + 1).unwrap_err();
        assert!(error.ends_with(" at least 4194306"), "{error}");
        let least = ServerLimits {
            max_buffered_bytes: 4_194_306,
            ..limits
        };
        assert_eq!(least.check(3 * MIB as usize + 1), Ok(()));
        // Small bodies may use it all.
        let tiny = ServerLimits {
            max_buffered_bytes: 1000,
            ..limits
        };
        assert_eq!(tiny.check(1000), Ok(()));
        assert!(tiny.check(1001).unwrap_err().ends_with(" at least 1001"));
        let closed = ServerLimits {
            max_connections: 0,
            ..limits
        };
        assert!(closed.check(1000).is_err());
    }

    #[test]
    fn connections_are_counted_in_all_and_per_address() {
        let gate = ConnectionGate::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = gate.admit(a).ok().unwrap();
        let _a2 = gate.admit(a).ok().unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::PerAddress));
        let _b1 = gate.admit(b).ok().unwrap();
        let _b2 = gate.admit(b).ok().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(gate.admit(c).err(), Some(Refusal::Total));
        drop(a1);
        let _c1 = gate.admit(c).ok().unwrap();
        assert_eq!(gate.counts(), (4, 3));
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let gate = ConnectionGate::new(10, 10);
        let slots: Vec<_> = (1..=5u8)
            .map(|i| gate.admit(IpAddr::from([10, 0, 0, i])).ok().unwrap())
            .collect();
        assert_eq!(gate.counts(), (5, 5));
        drop(slots);
        assert_eq!(gate.counts(), (0, 0));
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let next: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(one), client_address(other));
        assert_ne!(client_address(one), client_address(next));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let gate = ConnectionGate::new(10, 1);
        let _slot = gate.admit(one).ok().unwrap();
        assert_eq!(gate.admit(other).err(), Some(Refusal::PerAddress));
    }

    #[test]
    fn the_canned_refusal_is_a_whole_response() {
        let bytes = canned_response("too many", Duration::from_secs(5));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 5\r\n"));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"too many","retry_after_ms":5000}"#
        );
    }
}
