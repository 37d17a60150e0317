//! Scenarios: who sends to whom, which relays exist, how the network
//! behaves, and the schedule of sends, offline windows, relay outages,
//! partitions and crashes; drawn at random from a seed, or written by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use super::network::{NetConfig, Party};
use crate::rng::Rng;

/// Something the schedule makes happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Node `from`'s application enqueues its next PDU for node `to`.
    Enqueue {
        /// The sender.
        from: usize,
        /// The recipient.
        to: usize,
    },
    /// A node loses or regains its network.
    Online {
        /// The node.
        node: usize,
        /// Online after this.
        online: bool,
    },
    /// A relay goes down or comes back (keeping its queue).
    RelayUp {
        /// The relay.
        relay: usize,
        /// Up after this.
        up: bool,
    },
    /// The link between two parties is cut or mended.
    Cut {
        /// One end.
        a: Party,
        /// The other end.
        b: Party,
        /// Cut after this.
        cut: bool,
    },
    /// Node `from`'s application learns that `to` is alive (as when `to`
    /// gets in touch): its `Outbound` is told.
    PeerAlive {
        /// The sender told.
        from: usize,
        /// The peer seen alive.
        to: usize,
    },
    /// A node crashes (both machines; its stores and application survive)
    /// and restarts from what it persisted `downtime` later. With `busy`,
    /// the crash waits for the first moment the node has a change not yet
    /// in storage or a delivery not yet processed (or for healing, which
    /// cancels it).
    Crash {
        /// The node.
        node: usize,
        /// How long it stays down.
        downtime: Duration,
        /// Wait for a moment with work in progress.
        busy: bool,
    },
}

/// A whole scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the machines' seeds come from.
    pub seed: u64,
    /// How many nodes (0 is A, 1 is B, 2 is C).
    pub nodes: usize,
    /// How many relays.
    pub relays: usize,
    /// Each node's own relays (its retriever drains them).
    pub own_relays: Vec<Vec<usize>>,
    /// (sender, recipient) pairs that carry PDUs.
    pub flows: Vec<(usize, usize)>,
    /// The relays a sender knows for a recipient (a subset of the
    /// recipient's own); flows missing here use all of them.
    pub known_relays: BTreeMap<(usize, usize), Vec<usize>>,
    /// The network until `heal_at`.
    pub net: NetConfig,
    /// `Outbound`: direct failures before relays are used.
    pub retries_until_assumed_offline: u32,
    /// `Outbound`: failed attempts before blacklisting.
    pub failures_until_blacklist: u32,
    /// `Outbound`: the longest backoff.
    pub backoff_cap: Duration,
    /// `Outbound`: PDUs per transaction.
    pub max_pdus: usize,
    /// Storage latency range in ms; `(0, 0)` applies each change at once.
    pub persist_delay_ms: (u64, u64),
    /// How long the application takes to process a delivery, in ms.
    pub app_delay_ms: (u64, u64),
    /// Nodes that start without a network.
    pub initially_offline: Vec<bool>,
    /// The schedule, in time order.
    pub events: Vec<(Duration, Action)>,
    /// When everything becomes healthy: the network loses nothing, links
    /// mend, relays come up, nodes come online, senders are told their
    /// peers are alive.
    pub heal_at: Duration,
}

impl Plan {
    /// A plan with nodes A and B, one relay, a perfect network and nothing
    /// scheduled: a base for hand-written scenarios.
    pub fn simple(seed: u64) -> Self {
        Self {
            seed,
            nodes: 2,
            relays: 1,
            own_relays: vec![vec![0], vec![0]],
            flows: vec![(0, 1)],
            known_relays: BTreeMap::new(),
            net: NetConfig {
                latency_ms: (10, 10),
                request_loss: 0,
                answer_loss: 0,
                late: 0,
                refused: 1000,
                timeout: Duration::from_secs(10),
            },
            retries_until_assumed_offline: 1,
            failures_until_blacklist: 16,
            backoff_cap: Duration::from_secs(3600),
            max_pdus: 1,
            persist_delay_ms: (0, 0),
            app_delay_ms: (0, 0),
            initially_offline: vec![false, false],
            events: Vec::new(),
            heal_at: Duration::from_secs(600),
        }
    }

    /// Adds `action` at `secs` seconds.
    pub fn at(&mut self, secs: f64, action: Action) -> &mut Self {
        self.events.push((Duration::from_secs_f64(secs), action));
        self.events.sort_by_key(|(t, _)| *t);
        self
    }

    /// The relays `from` knows for `to`.
    pub fn known(&self, from: usize, to: usize) -> Vec<usize> {
        self.known_relays
            .get(&(from, to))
            .cloned()
            .unwrap_or_else(|| self.own_relays[to].clone())
    }

    /// A random scenario.
    pub fn random(seed: u64) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5157);
        let nodes = if rng.chance(1, 2) { 3 } else { 2 };
        let relays = rng.range(1, 3);
        let mut flows = vec![(0, 1)];
        if nodes == 3 {
            flows.push((2, 1));
        }
        if rng.chance(1, 4) {
            flows.push((1, 0));
        }
        let own_relays: Vec<Vec<usize>> = (0..nodes).map(|_| subset(&mut rng, relays)).collect();
        let mut known_relays = BTreeMap::new();
        for &(from, to) in &flows {
            if rng.chance(1, 3) {
                let own = &own_relays[to];
                let picked: Vec<usize> = subset(&mut rng, own.len())
                    .into_iter()
                    .map(|i| own[i])
                    .collect();
                known_relays.insert((from, to), picked);
            }
        }
        let per_mille = |rng: &mut Rng| *rng.pick(&[0, 0, 10, 50, 200]);
        let lo = rng.range(1, 20) as u64;
        let net = NetConfig {
            latency_ms: (lo, lo + rng.range(0, 300) as u64),
            request_loss: per_mille(&mut rng),
            answer_loss: per_mille(&mut rng),
            late: if rng.chance(1, 4) { 20 } else { 0 },
            refused: 500,
            timeout: Duration::from_secs(rng.range(5, 30) as u64),
        };
        let window = Duration::from_secs(rng.range(60, 900) as u64);
        let mut plan = Self {
            seed,
            nodes,
            relays,
            own_relays,
            flows: flows.clone(),
            known_relays,
            net,
            retries_until_assumed_offline: rng.range(1, 3) as u32,
            failures_until_blacklist: if rng.chance(1, 2) {
                16
            } else {
                rng.range(3, 15) as u32
            },
            backoff_cap: Duration::from_secs(rng.range(30, 3600) as u64),
            max_pdus: rng.range(1, 5),
            persist_delay_ms: if rng.chance(1, 2) {
                (0, 0)
            } else {
                (rng.range(0, 5) as u64, rng.range(5, 200) as u64)
            },
            app_delay_ms: (0, rng.range(0, 100) as u64),
            initially_offline: vec![false; nodes],
            events: Vec::new(),
            heal_at: window + Duration::from_secs(1),
        };
        for &(from, to) in &flows {
            for _ in 0..rng.range(5, 40) {
                let t = ms(rng.below(window.as_millis() as usize));
                plan.events.push((t, Action::Enqueue { from, to }));
            }
        }
        for node in 0..nodes {
            let recipient = plan.flows.iter().any(|&(_, to)| to == node);
            let count = if recipient {
                rng.range(0, 4)
            } else if rng.chance(1, 3) {
                1
            } else {
                0
            };
            for (start, end) in windows(&mut rng, window, count, 300) {
                if start.is_zero() {
                    plan.initially_offline[node] = true;
                } else {
                    plan.events.push((
                        start,
                        Action::Online {
                            node,
                            online: false,
                        },
                    ));
                }
                plan.events
                    .push((end, Action::Online { node, online: true }));
                for &(from, to) in &flows {
                    if to == node && rng.chance(1, 2) {
                        let later = (end + ms(rng.below(5000))).min(window);
                        plan.events.push((later, Action::PeerAlive { from, to }));
                    }
                }
            }
        }
        for relay in 0..relays {
            let count = rng.range(0, 2);
            for (start, end) in windows(&mut rng, window, count, 300) {
                plan.events
                    .push((start, Action::RelayUp { relay, up: false }));
                plan.events.push((end, Action::RelayUp { relay, up: true }));
            }
        }
        let parties: Vec<Party> = (0..nodes)
            .map(Party::Node)
            .chain((0..relays).map(Party::Relay))
            .collect();
        for _ in 0..rng.range(0, 3) {
            let (a, b) = (*rng.pick(&parties), *rng.pick(&parties));
            if a == b || matches!((a, b), (Party::Relay(_), Party::Relay(_))) {
                continue;
            }
            for (start, end) in windows(&mut rng, window, 1, 300) {
                plan.events.push((start, Action::Cut { a, b, cut: true }));
                plan.events.push((end, Action::Cut { a, b, cut: false }));
            }
        }
        for node in 0..nodes {
            if rng.chance(1, 2) {
                let latest = window.saturating_sub(Duration::from_secs(31));
                let count = rng.range(1, 2);
                for (start, end) in windows(&mut rng, latest, count, 30) {
                    let downtime = if rng.chance(1, 4) {
                        Duration::ZERO
                    } else {
                        end - start
                    };
                    let busy = rng.chance(1, 2);
                    plan.events.push((
                        start,
                        Action::Crash {
                            node,
                            downtime,
                            busy,
                        },
                    ));
                }
            }
        }
        plan.events.sort_by_key(|(t, _)| *t);
        plan
    }
}

fn ms(n: usize) -> Duration {
    Duration::from_millis(n as u64)
}

/// A random non-empty subset of `0..n` (empty if `n` is 0), in order.
fn subset(rng: &mut Rng, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if rng.chance(1, 2) {
        return (0..n).collect();
    }
    let picked: Vec<usize> = (0..n).filter(|_| rng.chance(1, 2)).collect();
    if picked.is_empty() {
        vec![rng.below(n)]
    } else {
        picked
    }
}

/// Up to `count` disjoint windows inside `[0, within)`, each at most
/// `max_len_s` seconds and at least one millisecond long, in order. A
/// window may start at zero.
fn windows(
    rng: &mut Rng,
    within: Duration,
    count: usize,
    max_len_s: usize,
) -> Vec<(Duration, Duration)> {
    let end = within.as_millis() as usize;
    let mut out = Vec::new();
    let mut t = 0usize;
    for _ in 0..count {
        if t + 2 >= end {
            break;
        }
        let room = end - t;
        let start = if t == 0 && rng.chance(1, 4) {
            0
        } else {
            t + 1 + rng.below(room / 2)
        };
        if start + 1 >= end {
            break;
        }
        let len = 1 + rng.below((max_len_s * 1000).min(end - start - 1));
        out.push((ms(start), ms(start + len)));
        t = start + len;
    }
    out
}
