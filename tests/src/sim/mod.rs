//! A deterministic simulation of the whole system: nodes (each an
//! `Outbound` and a `Retriever` with their persisted state, a `/send`
//! handler and an application), relays (the `Relay` machine over a
//! `MemoryStore`) and a seeded network, on one virtual clock.
//!
//! Nothing here touches a socket, a thread or the OS clock. The world
//! steps to the earliest deadline of all parties: scheduled events
//! (network deliveries and timeouts, storage and application latencies,
//! the plan's sends, offline windows, relay outages, partitions, crashes)
//! and every running machine's `poll_timeout`. Every machine is driven by
//! its rustdoc drive rule: a `handle_*` call, then `poll_output` drained to
//! `None`, then the timer re-armed from `poll_timeout`.
//!
//! Everything follows from the seed: the plan ([`scenario`]), the
//! network's draws, the machines' own seeds. Maps are `BTreeMap`s, so no
//! iteration order depends on hashing.
//!
//! # The model
//!
//! - A request is lost, or reaches its server after a latency (sometimes
//!   after the sender's timeout: *late*); the answer is lost or comes back.
//!   The sender's client reports `Timeout` after its timeout, also when
//!   the server did the work. Requests to a relay that is down, a node that
//!   is offline or crashed, or across a cut link fail at once
//!   (`ConnectionFailed`) or time out.
//! - A node without a network fails its own requests at once, and its
//!   retriever's timer is paused; coming back calls `handle_online`.
//! - A crash takes a whole node down (both machines); requests in flight
//!   still arrive, but their answers go nowhere. Its application state and
//!   what reached its stores survive; changes still waiting for storage
//!   (storage has a latency in half of the runs, as it does when an
//!   adapter writes while requests go out) and deliveries not yet
//!   processed are lost. Restarting rebuilds the machines with
//!   `Outbound::restore` and `Retriever::restore`.
//! - A node's `/send` handler answers 200 and hands the transaction to the
//!   application, which processes each (origin, txn ID) once, whichever
//!   path it came by; the retriever's deliveries go through the same
//!   processing.
//! - At `heal_at` everything becomes healthy and senders are told their
//!   peers are alive (this clears a blacklist). The run goes on until
//!   nothing is scheduled, no sender waits and no relay holds anything (the
//!   retrievers' periodic polls drain what senders left on relays while
//!   their recipient was online), and [`ledger`] checks the properties.
//!
//! - [`clock`]: the virtual clock and the event queue.
//! - [`network`]: latency, loss, late delivery, partitions, timeouts.
//! - [`node`]: a node's machines, their drivers and stores.
//! - [`app`]: the application, PDU markers, idempotent processing.
//! - [`relay_host`]: a relay.
//! - [`scenario`]: random and hand-written plans.
//! - [`ledger`]: the oracle and the properties it checks.
//! - [`world`]: the event loop.

pub mod app;
pub mod clock;
pub mod ledger;
pub mod network;
pub mod node;
pub mod relay_host;
pub mod scenario;
pub mod world;

pub use scenario::{Action, Plan};
pub use world::{Report, World};

/// Runs the random scenario of `seed`. With `trace`, its plan and trace
/// are printed to standard error.
pub fn run_seed(seed: u64, trace: bool) -> Result<Report, String> {
    run_plan(Plan::random(seed), trace)
}

/// Runs `plan`. With `trace`, the plan and the trace are printed to
/// standard error.
pub fn run_plan(plan: Plan, trace: bool) -> Result<Report, String> {
    if !trace {
        return World::new(plan, false).run();
    }
    eprintln!("{plan:#?}");
    let (result, lines) = run_traced(plan);
    for line in lines {
        eprintln!("{line}");
    }
    result
}

/// Runs `plan` and returns its trace: a line per step.
pub fn run_traced(plan: Plan) -> (Result<Report, String>, Vec<String>) {
    let mut world = World::new(plan, true);
    let result = world.run();
    (result, world.take_trace())
}
