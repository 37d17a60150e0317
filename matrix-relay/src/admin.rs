//! `matrix-relay queues` and `purge`: an operator's view of a relay's
//! database, and the one way to drop a destination's queue.

use std::io::Write;

use clap::Args;
use relay_core::ServerName;
use serde::Serialize;

/// Flags of `queues`.
#[derive(Args, Debug)]
pub(crate) struct QueuesArgs {
    /// The relay's database, as `serve --database` takes it.
    #[arg(long, default_value = "sqlite:relay.db")]
    database: String,
    /// Most destinations listed.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// Flags of `purge`.
#[derive(Args, Debug)]
pub(crate) struct PurgeArgs {
    /// The relay's database, as `serve --database` takes it.
    #[arg(long, default_value = "sqlite:relay.db")]
    database: String,
    /// The destination whose queue is deleted.
    #[arg(long)]
    destination: String,
}

/// A destination's queue, as `queues` and `purge` print it.
#[derive(Serialize)]
struct Line<'a> {
    destination: &'a str,
    entries: u64,
    bytes: u64,
    /// How long ago the oldest entry was received, in whole seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_age_secs: Option<u64>,
}

/// Opens a relay's existing database, creating and migrating nothing: a
/// mistyped path is not made into a new database, and a newer tool does not
/// migrate the schema under a running older relay.
fn open(database: &str) -> Result<std::sync::Arc<dyn relay_store::QueueStore>, String> {
    let options = relay_store::OpenOptions {
        existing: true,
        ..relay_store::OpenOptions::default()
    };
    // The URL may carry a password: only its redacted form is shown.
    relay_store::open_with(database, &options)
        .map_err(|e| format!("--database {}: {e}", relay_store::redact_url(database)))
}

fn print(line: &Line<'_>) -> Result<(), String> {
    let text = serde_json::to_string(line).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| format!("stdout: {e}"))
}

/// Runs `queues`: one JSON line per destination with something queued,
/// most bytes first.
pub(crate) fn queues(args: QueuesArgs) -> Result<(), String> {
    let store = open(&args.database)?;
    let list = store.destinations(args.limit).map_err(|e| e.to_string())?;
    let now = adapter_http::unix_now();
    for usage in &list {
        print(&Line {
            destination: usage.destination.as_str(),
            entries: usage.entries,
            bytes: usage.bytes,
            oldest_age_secs: usage
                .oldest_received
                .map(|at| now.0.saturating_sub(at.0) / 1000),
        })?;
    }
    Ok(())
}

/// Runs `purge`: deletes the destination's queue and prints what went.
pub(crate) fn purge(args: PurgeArgs) -> Result<(), String> {
    let destination = ServerName::parse(&args.destination)
        .map_err(|_| format!("--destination {:?} is not a server name", args.destination))?;
    let store = open(&args.database)?;
    let purged = store.purge(&destination).map_err(|e| e.to_string())?;
    tracing::info!(%destination, entries = purged.entries, bytes = purged.bytes, "purged");
    print(&Line {
        destination: destination.as_str(),
        entries: purged.entries,
        bytes: purged.bytes,
        oldest_age_secs: None,
    })
}
