//! The deterministic whole-system simulation (see `relay_tests::sim`, whose
//! `ledger` module states exactly what is asserted): random schedules over
//! many seeds, and hand-written scenarios for what the design allows.
//!
//! `SIM_SEEDS=N` runs seeds `0..N` instead of the default; `SIM_SEED=N`
//! runs only seed N and prints its plan and trace (shown on failure; add
//! `-- --nocapture` to see it on success); `SIM_TRACE=1` prints the traces
//! of the hand-written scenarios.

use std::time::{Duration, Instant as WallClock};

use relay_tests::sim::network::Party;
use relay_tests::sim::{self, Action, Plan, Report};

/// Seeds run by default, split between the parts below (which the test
/// harness runs on parallel threads).
const DEFAULT_SEEDS: u64 = 3000;
/// How many tests share the seeds.
const PARTS: u64 = 2;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Whether to print the hand-written scenarios' traces.
fn trace_examples() -> bool {
    std::env::var_os("SIM_TRACE").is_some()
}

/// Runs every `PARTS`-th seed from `part`; or, with `SIM_SEED`, that seed
/// alone (in part 0), traced.
fn random_schedules(part: u64) {
    if let Some(seed) = env_u64("SIM_SEED") {
        if part == 0 {
            match sim::run_seed(seed, true) {
                Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
                Err(e) => panic!("seed {seed} failed: {e}"),
            }
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = WallClock::now();
    let mut total = Report::default();
    let (mut runs, mut reordered) = (0u64, 0u64);
    // The first seed showing each allowed anomaly, to look at with SIM_SEED.
    let mut examples: [Option<u64>; 2] = [None; 2];
    for seed in (part..seeds).step_by(PARTS as usize) {
        let report = sim::run_seed(seed, false).unwrap_or_else(|e| {
            panic!(
                "seed {seed} failed: {e}\n\
                 replay with SIM_SEED={seed} cargo test -p relay-tests --test simulation"
            )
        });
        runs += 1;
        total.steps += report.steps;
        total.requests += report.requests;
        let (t, s) = (&mut total.stats, &report.stats);
        t.pdus += s.pdus;
        t.crashes += s.crashes;
        t.late_arrivals += s.late_arrivals;
        t.handovers += s.handovers;
        t.excused_pdus += s.excused_pdus;
        t.excused_handovers += s.excused_handovers;
        t.repeated_pdus += s.repeated_pdus;
        t.repeated_handovers += s.repeated_handovers;
        t.unqueued_pdus += s.unqueued_pdus;
        t.lost_pdus += s.lost_pdus;
        let anomalies = [report.reordered, report.stats.repeated_pdus > 0];
        for (example, seen) in examples.iter_mut().zip(anomalies) {
            if seen && example.is_none() {
                *example = Some(seed);
            }
        }
        reordered += u64::from(report.reordered);
    }
    let elapsed = started.elapsed();
    let s = &total.stats;
    eprintln!(
        "part {part}: {runs} seeds in {elapsed:.2?} ({:.0} seeds/s): {} steps, {} requests, \
         {} PDUs, {} crashes, {} late arrivals, {} hand-overs; crashes excused {} PDUs and \
         {} hand-overs, and {} PDUs were processed twice, {} transactions handed over twice; \
         {} PDUs lost their Enqueued change in a crash, {} of them never arrived; \
         {reordered} seeds reordered across paths; first seeds: reordered {:?}, PDU twice {:?}",
        runs as f64 / elapsed.as_secs_f64(),
        total.steps,
        total.requests,
        s.pdus,
        s.crashes,
        s.late_arrivals,
        s.handovers,
        s.excused_pdus,
        s.excused_handovers,
        s.repeated_pdus,
        s.repeated_handovers,
        s.unqueued_pdus,
        s.lost_pdus,
        examples[0],
        examples[1],
    );
}

#[test]
fn random_schedules_part_1_of_2() {
    random_schedules(0);
}

#[test]
fn random_schedules_part_2_of_2() {
    random_schedules(1);
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 150, 233] {
        let (first, trace) = sim::run_traced(Plan::random(seed));
        let (second, again) = sim::run_traced(Plan::random(seed));
        assert!(first.is_ok(), "seed {seed}: {first:?}");
        assert_eq!(first, second, "seed {seed}");
        assert!(trace == again, "seed {seed}: the traces differ");
        assert!(trace.len() > 30, "seed {seed}: a trivial run");
    }
}

/// B is offline while A's first PDU goes to the relay; when B comes back,
/// A's second PDU reaches it directly before B has drained the relay. So
/// B's application sees them out of order: across paths the design keeps
/// no order (per path it does, and the random runs check that).
#[test]
fn a_later_direct_send_overtakes_a_relayed_one() {
    let mut plan = Plan::simple(1);
    plan.initially_offline[1] = true;
    plan.at(10.0, Action::Enqueue { from: 0, to: 1 })
        .at(
            100.0,
            Action::Online {
                node: 1,
                online: true,
            },
        )
        .at(100.0, Action::Enqueue { from: 0, to: 1 });
    let report = sim::run_plan(plan, trace_examples()).expect("every property holds");
    assert!(report.reordered, "{report:?}");
    assert_eq!(report.stats.handovers, 1, "PDU 0 came through the relay");
}

/// B stays online, but A cannot reach it directly for a while and stores a
/// PDU on B's relay. B drained that relay at start; its periodic poll (every
/// 30 s) fetches the PDU long before anything else would (here: the heal,
/// 3 hours later).
#[test]
fn a_relayed_pdu_is_fetched_by_the_periodic_poll() {
    let mut plan = Plan::simple(2);
    plan.at(
        5.0,
        Action::Cut {
            a: Party::Node(0),
            b: Party::Node(1),
            cut: true,
        },
    )
    .at(10.0, Action::Enqueue { from: 0, to: 1 })
    .at(
        100.0,
        Action::Cut {
            a: Party::Node(0),
            b: Party::Node(1),
            cut: false,
        },
    );
    plan.heal_at = Duration::from_secs(3 * 3600);
    let report = sim::run_plan(plan, trace_examples()).expect("every property holds");
    assert_eq!(report.stats.handovers, 1, "{report:?}");
    let fetched = report.last_relay_handover.expect("came through the relay");
    assert!(
        fetched < Duration::from_secs(100),
        "fetched at {fetched:?}: {report:?}"
    );
}

/// With storage slower than the network (as the adapters drive the
/// sender: state changes are written while other work goes on), a crash
/// after a PDU was enqueued but before its transaction's `TxnStarted` was
/// written must not make the restarted sender send the PDU twice under two
/// txn IDs: a new transaction goes out only once its `TxnStarted` is
/// stored.
#[test]
fn a_crash_before_txn_started_is_written_does_not_repeat_its_pdus() {
    let mut plan = Plan::simple(3);
    plan.persist_delay_ms = (50, 50);
    // Enqueued is written at 10.050 s and TxnStarted would be at 10.100 s,
    // when the transaction would go out; the crash at 10.070 s loses it.
    plan.at(10.0, Action::Enqueue { from: 0, to: 1 }).at(
        10.07,
        Action::Crash {
            node: 0,
            downtime: Duration::from_secs(1),
            busy: false,
        },
    );
    let report = sim::run_plan(plan, trace_examples()).expect("every property holds");
    assert_eq!(report.stats.repeated_pdus, 0, "{report:?}");
    assert_eq!(report.stats.pdus, 1, "{report:?}");
}
