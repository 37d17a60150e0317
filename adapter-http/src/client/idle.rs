//! Idle connections kept for reuse: per endpoint and in all, closed once
//! idle too long or closed by their server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use relay_core::Instant;

use crate::runtime::Runtime;

/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 8;
/// Most idle connections kept in all: which servers a client talks to can
/// be up to strangers (the origins whose keys a relay fetches).
const MAX_IDLE: usize = 128;
/// How often idle connections past [`IDLE_TIMEOUT`] or closed by their
/// server are let go, while any are kept.
const REAP_INTERVAL: Duration = Duration::from_secs(30);

/// A kept connection's request half.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// Idle connections by endpoint and TLS name.
///
/// Implementation note: a task of its own closes expired connections
/// every [`REAP_INTERVAL`] while some are kept (and ends when none are, or
/// the client is gone), so connections to servers never asked again do not
/// linger; past [`MAX_IDLE`], the one idle longest is closed.
#[derive(Default)]
pub(super) struct Pool {
    state: Mutex<PoolState<Sender>>,
}

/// What the pool needs to know of a connection.
trait Connection {
    /// Whether its server closed it.
    fn is_closed(&self) -> bool;
}

impl Connection for Sender {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

struct PoolState<C> {
    /// No empty lists: at most [`MAX_IDLE`] keys.
    by_endpoint: HashMap<String, Vec<(C, Instant)>>,
    /// Connections in all lists.
    count: usize,
    /// Whether the reaping task runs.
    reaping: bool,
}

impl<C> Default for PoolState<C> {
    fn default() -> Self {
        Self {
            by_endpoint: HashMap::new(),
            count: 0,
            reaping: false,
        }
    }
}

impl Pool {
    /// A live idle connection to `key`, if one is kept.
    pub(super) fn take(&self, key: &str) -> Option<Sender> {
        self.lock().take(key)
    }

    /// Keeps `sender` for reuse, and starts reaping on `rt` if nothing
    /// reaps yet.
    pub(super) fn put<R: Runtime>(self: &Arc<Self>, rt: &R, key: String, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let start_reaping = {
            let mut idle = self.lock();
            idle.put(key, sender);
            !std::mem::replace(&mut idle.reaping, true)
        };
        if start_reaping {
            rt.spawn(reap_while_kept(rt.clone(), Arc::downgrade(self)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<Sender>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Connection> PoolState<C> {
    /// A live idle connection to `key`, if one is kept.
    fn take(&mut self, key: &str) -> Option<C> {
        let list = self.by_endpoint.get_mut(key)?;
        let mut found = None;
        while let Some((sender, since)) = list.pop() {
            self.count -= 1;
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            self.by_endpoint.remove(key);
        }
        found
    }

    /// Keeps `sender` for `key`, closing the longest idle connection when
    /// [`MAX_IDLE`] are kept; nothing if `key` has its fill.
    fn put(&mut self, key: String, sender: C) {
        let list = self.by_endpoint.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_ENDPOINT {
            return;
        }
        list.push((sender, Instant::now()));
        self.count += 1;
        if self.count > MAX_IDLE {
            self.close_oldest();
        }
    }

    fn close_oldest(&mut self) {
        let oldest = self
            .by_endpoint
            .iter()
            .filter_map(|(key, list)| list.first().map(|(_, since)| (*since, key)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, key)| key.clone());
        if let Some(key) = oldest
            && let Some(list) = self.by_endpoint.get_mut(&key)
        {
            // Lists are pushed in time order: the first idled longest.
            list.remove(0);
            self.count -= 1;
            if list.is_empty() {
                self.by_endpoint.remove(&key);
            }
        }
    }

    /// Lets go of connections idle too long or closed by their server.
    fn reap(&mut self) {
        let mut count = 0;
        self.by_endpoint.retain(|_, list| {
            list.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
            count += list.len();
            !list.is_empty()
        });
        self.count = count;
    }
}

/// Reaps `pool` every [`REAP_INTERVAL`] until it is empty or gone.
async fn reap_while_kept<R: Runtime>(rt: R, pool: Weak<Pool>) {
    loop {
        rt.sleep_until(Instant::now() + REAP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = pool.lock();
        state.reap();
        if state.count == 0 {
            state.reaping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A connection its test can close.
    #[derive(Clone, Default)]
    struct Fake(Rc<Cell<bool>>);

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.0.get()
        }
    }

    fn pool_of(endpoints: usize, each: usize) -> PoolState<Fake> {
        let mut pool = PoolState::default();
        for e in 0..endpoints {
            for _ in 0..each {
                pool.put(format!("e{e}"), Fake::default());
            }
        }
        pool
    }

    #[test]
    fn at_most_eight_per_endpoint_and_max_idle_in_all() {
        let pool = pool_of(1, 20);
        assert_eq!(pool.count, MAX_IDLE_PER_ENDPOINT);
        let mut pool = pool_of(MAX_IDLE * 2, 1);
        assert_eq!(pool.count, MAX_IDLE);
        assert_eq!(pool.by_endpoint.len(), MAX_IDLE);
        // The longest idle went first.
        assert!(pool.take("e0").is_none());
        assert!(pool.take(&format!("e{}", MAX_IDLE * 2 - 1)).is_some());
        assert_eq!(pool.count, MAX_IDLE - 1);
    }

    #[test]
    fn taking_the_last_forgets_the_endpoint() {
        let mut pool = pool_of(1, 2);
        assert!(pool.take("e0").is_some());
        assert!(pool.take("e0").is_some());
        assert!(pool.take("e0").is_none());
        assert!(pool.by_endpoint.is_empty());
        assert_eq!(pool.count, 0);
    }

    #[test]
    fn closed_and_expired_connections_are_reaped() {
        let mut pool = PoolState::default();
        let closed = Fake::default();
        pool.put("a".to_owned(), closed.clone());
        pool.put("a".to_owned(), Fake::default());
        pool.put("b".to_owned(), Fake::default());
        let long_ago = Instant::now()
            .checked_sub(IDLE_TIMEOUT)
            .expect("the clock is past the idle timeout");
        pool.by_endpoint.get_mut("b").unwrap()[0].1 = long_ago;
        closed.0.set(true);
        pool.reap();
        assert_eq!(pool.count, 1);
        assert_eq!(pool.by_endpoint.keys().collect::<Vec<_>>(), ["a"]);
        // A closed connection is never handed out.
        let mut pool = PoolState::default();
        let closed = Fake::default();
        pool.put("a".to_owned(), closed.clone());
        closed.0.set(true);
        assert!(pool.take("a").is_none());
        assert_eq!(pool.count, 0);
    }
}
