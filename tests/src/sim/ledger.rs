//! The oracle: what was sent, what crashes excused, what each path carried,
//! and the properties checked against it.
//!
//! # What is asserted
//!
//! For every PDU an application enqueued for a destination:
//!
//! 1. **No loss.** If its `Enqueued` change reached storage (it always
//!    does unless a crash of the sender hit before the change was applied),
//!    the destination's application processed it.
//! 2. **Exactly once.** The destination's application processed it at most
//!    once, plus once more for each crash of the sender that lost the
//!    `TxnStarted` of a transaction carrying it (the transaction may have
//!    gone out before its txn ID was durable; the restarted sender sends
//!    the PDU again under a new txn ID). With synchronous storage no crash
//!    loses a change, so this is plain "exactly once". The application's
//!    processing is idempotent on (origin, txn ID) and checks that a txn ID
//!    always carries the same PDUs.
//! 3. **Retriever de-duplication.** A retriever hands a transaction
//!    (origin, txn ID) to its application at most once, plus once more for
//!    each crash of its node that came after a hand-over of it whose
//!    `Seen` change was not yet applied.
//! 4. **Order per path.** Per (recipient, origin) and per path (direct, or
//!    one relay), the PDUs that path carried, first copies only, come in
//!    the order the origin enqueued them; copies carried by *late* requests
//!    (processed by a server after their sender stopped waiting for them:
//!    it timed out or crashed) are left out. Across paths there is no
//!    order: a transaction stored on a relay while the destination was
//!    offline may be processed after a later one sent directly.
//! 5. **Quiescence.** At the end every sender's queue is empty, every relay
//!    queue is empty, and nothing is in flight.

use std::collections::{BTreeMap, BTreeSet};

use relay_core::{EntryId, ServerName, TxnId};

use super::app::{Marker, Path, Processed};

/// The PDUs of one copy of a transaction, and whether it came late.
type PathCopy = (Vec<Marker>, bool);

/// A PDU an application enqueued.
#[derive(Debug, Clone)]
struct Sent {
    destination: usize,
    /// Its `Enqueued` change was lost in a crash: delivery not required.
    unqueued: bool,
    /// Copies more than one that crashes excuse.
    excused_copies: u32,
}

/// Counters for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// PDUs enqueued.
    pub pdus: u64,
    /// Transactions handed over by retrievers.
    pub handovers: u64,
    /// Requests processed by a server after their sender stopped waiting.
    pub late_arrivals: u64,
    /// Crashes.
    pub crashes: u64,
    /// PDUs excused from exactly-once by a lost `TxnStarted`.
    pub excused_pdus: u64,
    /// Hand-overs excused from retriever de-duplication by a crash.
    pub excused_handovers: u64,
    /// PDUs that were processed more than once (as crashes excused).
    pub repeated_pdus: u64,
    /// Transactions a retriever handed over more than once (as crashes
    /// excused).
    pub repeated_handovers: u64,
    /// PDUs whose `Enqueued` change a crash lost (delivery not required).
    pub unqueued_pdus: u64,
    /// Of those, PDUs never processed: enqueued, then lost in a crash.
    pub lost_pdus: u64,
}

/// Everything the oracle knows.
#[derive(Debug, Default)]
pub struct Ledger {
    sent: BTreeMap<Marker, Sent>,
    /// (recipient, origin, txn ID) → (hand-overs, hand-overs excused).
    handovers: BTreeMap<(usize, ServerName, TxnId), (u32, u32)>,
    /// (recipient, origin, path) → each copy's PDUs and whether it was late.
    paths: BTreeMap<(usize, usize, Path), Vec<PathCopy>>,
    /// Relay entries stored by late requests.
    late_entries: BTreeSet<(usize, EntryId)>,
    /// Counters.
    pub stats: Stats,
}

impl Ledger {
    /// Node `marker.0` enqueued `marker` for `destination`.
    pub fn enqueued(&mut self, marker: Marker, destination: usize) {
        self.stats.pdus += 1;
        self.sent.insert(
            marker,
            Sent {
                destination,
                unqueued: false,
                excused_copies: 0,
            },
        );
    }

    /// A crash of `node` lost these changes.
    pub fn crashed(&mut self, node: usize, loss: &super::node::CrashLoss) {
        self.stats.crashes += 1;
        for m in &loss.unqueued {
            if let Some(s) = self.sent.get_mut(m) {
                s.unqueued = true;
                self.stats.unqueued_pdus += 1;
            }
        }
        for m in &loss.unstarted {
            if let Some(s) = self.sent.get_mut(m) {
                s.excused_copies += 1;
                self.stats.excused_pdus += 1;
            }
        }
        for (origin, txn_id) in &loss.unremembered {
            self.handovers
                .entry((node, origin.clone(), txn_id.clone()))
                .or_default()
                .1 += 1;
            self.stats.excused_handovers += 1;
        }
    }

    /// Relay `relay` stored `entry` from a request that was late.
    pub fn late_entry(&mut self, relay: usize, entry: EntryId) {
        self.late_entries.insert((relay, entry));
    }

    /// A request reached its server after its sender stopped waiting.
    pub fn late_arrival(&mut self) {
        self.stats.late_arrivals += 1;
    }

    /// `recipient` received a transaction of `origin` directly.
    pub fn direct(&mut self, recipient: usize, origin: usize, markers: Vec<Marker>, late: bool) {
        self.paths
            .entry((recipient, origin, Path::Direct))
            .or_default()
            .push((markers, late));
    }

    /// `recipient`'s retriever handed over `txn_id` of `origin` (node
    /// `origin_index`) from `relay`'s `entry`. Checks property 3.
    #[allow(clippy::too_many_arguments)]
    pub fn handed_over(
        &mut self,
        recipient: usize,
        relay: usize,
        entry: EntryId,
        origin: &ServerName,
        origin_index: usize,
        txn_id: &TxnId,
        markers: Vec<Marker>,
    ) -> Result<(), String> {
        self.stats.handovers += 1;
        let late = self.late_entries.contains(&(relay, entry));
        self.paths
            .entry((recipient, origin_index, Path::Relay(relay)))
            .or_default()
            .push((markers, late));
        let (count, excused) = self
            .handovers
            .entry((recipient, origin.clone(), txn_id.clone()))
            .or_default();
        *count += 1;
        if *count == 2 {
            self.stats.repeated_handovers += 1;
        }
        if *count > 1 + *excused {
            return Err(format!(
                "node {recipient}'s retriever handed over txn {txn_id} of {origin} \
                 {count} times (crashes excuse {excused} repeats); this copy from relay \
                 {relay} entry {}",
                entry.0
            ));
        }
        Ok(())
    }

    /// Checks properties 1, 2 and 4 against what each node's application
    /// processed (`logs[n]` for node `n`).
    pub fn check(&mut self, logs: &[&[Processed]]) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut copies: BTreeMap<Marker, Vec<(usize, String)>> = BTreeMap::new();
        for (node, log) in logs.iter().enumerate() {
            for p in log.iter() {
                for m in &p.markers {
                    copies
                        .entry(*m)
                        .or_default()
                        .push((node, format!("txn {} via {}", p.txn_id, p.path)));
                }
            }
        }
        for (m, sent) in &self.sent {
            let got = copies.get(m).map_or(&[][..], Vec::as_slice);
            if got.iter().any(|(node, _)| *node != sent.destination) {
                problems.push(format!(
                    "PDU {m:?} reached a node it was not sent to: {got:?}"
                ));
            }
            if got.is_empty() && sent.unqueued {
                self.stats.lost_pdus += 1;
            }
            if got.is_empty() && !sent.unqueued {
                problems.push(format!(
                    "PDU {m:?} for node {} was never processed",
                    sent.destination
                ));
            }
            if got.len() > 1 {
                self.stats.repeated_pdus += 1;
            }
            if got.len() > 1 + sent.excused_copies as usize {
                problems.push(format!(
                    "PDU {m:?} processed {} times (crashes excuse {} repeats): {got:?}",
                    got.len(),
                    sent.excused_copies
                ));
            }
        }
        for m in copies.keys() {
            if !self.sent.contains_key(m) {
                problems.push(format!("PDU {m:?} was processed but never sent"));
            }
        }
        for ((recipient, origin, path), copies) in &self.paths {
            if let Err(e) = in_order(copies) {
                problems.push(format!(
                    "node {recipient} got PDUs of node {origin} via {path} out of order: {e}"
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let n = problems.len();
        problems.truncate(10);
        Err(format!("{n} problems:\n  {}", problems.join("\n  ")))
    }

    /// Whether some node's application processed some origin's PDUs in
    /// another order than they were enqueued (allowed across paths).
    pub fn reordered(logs: &[&[Processed]]) -> bool {
        logs.iter().any(|log| {
            let mut last: BTreeMap<usize, u64> = BTreeMap::new();
            log.iter()
                .flat_map(|p| p.markers.iter())
                .any(|(from, seq)| {
                    let prev = last.insert(*from, *seq);
                    prev.is_some_and(|p| p > *seq)
                })
        })
    }
}

/// Property 4 on one path's copies: first copies of timely PDUs increase.
fn in_order(copies: &[PathCopy]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut last: Option<u64> = None;
    for (markers, late) in copies {
        if *late {
            continue;
        }
        for (_, seq) in markers {
            if !seen.insert(*seq) {
                continue;
            }
            if let Some(prev) = last
                && *seq < prev
            {
                return Err(format!("PDU {seq} after PDU {prev}"));
            }
            last = Some(*seq);
        }
    }
    Ok(())
}
