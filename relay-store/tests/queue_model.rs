//! Model-based test: random operation sequences on SqliteStore and on the
//! MemoryStore reference model must give identical results at every step.

use proptest::prelude::*;
use relay_store::{
    Ack, AckedKeys, EntryId, MemoryStore, NewEntry, QueueStore, Quota, ServerName, SqliteStore,
    Take, TxnId, UnixMillis,
};

const ORIGINS: [&str; 3] = ["o0.example", "o1.example", "o2.example"];
const DESTINATIONS: [&str; 3] = ["d0.example", "d1.example", "d2.example"];

#[derive(Debug, Clone)]
enum Transition {
    Insert {
        origin: usize,
        destination: usize,
        txn: u8,
        len: usize,
    },
    /// Acknowledges an arbitrary ID (often one that exists, often not).
    Ack {
        destination: usize,
        id: Option<u64>,
    },
    /// Acknowledges the current head, as a well-behaved destination does.
    AckHead {
        destination: usize,
    },
    Queued {
        destination: usize,
    },
    /// The clock moves on, by up to two retentions.
    Tick {
        ms: u64,
    },
    /// Deletes up to `limit` entries older than `age_ms`.
    Expire {
        age_ms: u64,
        limit: usize,
    },
    /// The destinations, with their usage and oldest entry.
    Destinations,
    /// Acknowledges a set of IDs and takes entries within caps.
    Batch {
        destination: usize,
        ids: Vec<u64>,
        entries: usize,
        bytes: u64,
    },
}

fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 0..4u8, 0..40usize)
            .prop_map(|(origin, destination, txn, len)| Transition::Insert { origin, destination, txn, len }),
        2 => (0..3usize, proptest::option::of(0..30u64))
            .prop_map(|(destination, id)| Transition::Ack { destination, id }),
        2 => (0..3usize).prop_map(|destination| Transition::AckHead { destination }),
        1 => (0..3usize).prop_map(|destination| Transition::Queued { destination }),
        1 => (0..2 * RETENTION_MS).prop_map(|ms| Transition::Tick { ms }),
        1 => (0..2 * RETENTION_MS, 0..4usize).prop_map(|(age_ms, limit)| Transition::Expire { age_ms, limit }),
        1 => Just(Transition::Destinations),
        2 => (0..3usize, proptest::collection::vec(0..30u64, 0..4), 0..4usize, 0..80u64)
            .prop_map(|(destination, ids, entries, bytes)| Transition::Batch { destination, ids, entries, bytes }),
    ]
}

/// Byte limits are in entries' costs: about 250 bytes each here, plus
/// the transaction.
fn quota() -> impl Strategy<Value = Quota> {
    (
        (1..6u64, 250..1500u64, 1..8u64, 250..2000u64, 500..3000u64),
        (0..2u64, 0..4u64, 0..400u64),
        (1..=100u8, 1..10u64),
    )
        .prop_map(
            |(
                (destination_entries, destination_bytes, origin_entries, origin_bytes, total_bytes),
                (retention, max, max_bytes),
                (origin_share_percent, total_entries),
            )| Quota {
                destination_entries,
                destination_bytes,
                origin_share_percent,
                origin_entries,
                origin_bytes,
                total_entries,
                total_bytes,
                acked: AckedKeys {
                    retention_ms: retention * RETENTION_MS,
                    max,
                    max_bytes,
                },
            },
        )
}

/// The retention when it is on; the cap is small, so it prunes too.
const RETENTION_MS: u64 = 60_000;
/// The clock at the start.
const START: UnixMillis = UnixMillis(1_700_000_000_000);

fn ack(entry_id: EntryId, now: UnixMillis, quota: &Quota) -> Ack {
    Ack {
        entry_id,
        at: now,
        keys: quota.acked,
    }
}

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn check(quota: Quota, transitions: Vec<Transition>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path().join("relay.db")).expect("open");
    let model = MemoryStore::new();
    let stores: [&dyn QueueStore; 2] = [&sqlite, &model];
    let mut now = START;
    for (step, t) in transitions.into_iter().enumerate() {
        if let Transition::Tick { ms } = t {
            now = now.saturating_add_ms(ms);
            continue;
        }
        let [got, want] = stores.map(|s| match &t {
            Transition::Insert {
                origin,
                destination,
                txn,
                len,
            } => {
                let entry = NewEntry {
                    origin: server(ORIGINS[*origin]),
                    destination: server(DESTINATIONS[*destination]),
                    txn_id: TxnId::parse(&format!("t{txn}")).expect("txn ID"),
                    transaction: vec![b'a' + *txn; *len],
                    received: now,
                };
                format!("{:?}", s.insert(entry, &quota))
            }
            Transition::Ack { destination, id } => {
                format!(
                    "{:?}",
                    s.ack_and_next(
                        &server(DESTINATIONS[*destination]),
                        id.map(|id| ack(EntryId(id), now, &quota))
                    )
                )
            }
            Transition::AckHead { destination } => {
                let d = server(DESTINATIONS[*destination]);
                let head = s.ack_and_next(&d, None).map(|e| e.next.map(|e| e.entry_id));
                match head {
                    Ok(head) => format!(
                        "{head:?} {:?}",
                        s.ack_and_next(&d, head.map(|id| ack(id, now, &quota)))
                    ),
                    Err(e) => format!("{e:?}"),
                }
            }
            Transition::Queued { destination } => {
                format!("{:?}", s.queued(&server(DESTINATIONS[*destination])))
            }
            Transition::Expire { age_ms, limit } => {
                format!(
                    "{:?}",
                    s.expire(UnixMillis(now.0.saturating_sub(*age_ms)), *limit)
                )
            }
            Transition::Destinations => format!("{:?}", s.destinations(10)),
            Transition::Batch {
                destination,
                ids,
                entries,
                bytes,
            } => {
                let acks: Vec<Ack> = ids
                    .iter()
                    .map(|&id| ack(EntryId(id), now, &quota))
                    .collect();
                let take = Take {
                    entries: *entries,
                    bytes: *bytes,
                };
                format!(
                    "{:?}",
                    s.ack_and_next_batch(
                        &server(DESTINATIONS[*destination]),
                        &acks,
                        take,
                        UnixMillis(0)
                    )
                )
            }
            Transition::Tick { .. } => unreachable!("handled above"),
        });
        prop_assert_eq!(got, want, "step {}: {:?}", step, t);
    }
    for d in DESTINATIONS {
        let d = server(d);
        prop_assert_eq!(sqlite.queued(&d), model.queued(&d));
        prop_assert_eq!(sqlite.ack_and_next(&d, None), model.ack_and_next(&d, None));
    }
    Ok(())
}

proptest! {
    // Each case opens a fresh database and fsyncs every step: keep it small.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_the_memory_model(quota in quota(), transitions in proptest::collection::vec(transition(), 1..50)) {
        check(quota, transitions)?;
    }
}
