//! `matrix-relay send`: one transaction, as the node's sender would send it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_http::{HttpClient, Runtime};
use clap::Args;
use relay_core::outbound::{
    Event, ItemKind, Outbound, OutboundConfig, Target, Via, whole_transaction_item,
};
use relay_core::resolve::Resolver;
use relay_core::{ServerName, TxnId};
use serde::Serialize;

use crate::{keys, on_runtime};

/// Flags of `send`.
#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    /// This node's server name (the origin).
    #[arg(long)]
    server_name: String,
    /// This node's signing key file (Synapse format).
    #[arg(long)]
    signing_key: PathBuf,
    /// The destination server.
    #[arg(long)]
    destination: String,
    /// The transaction ID.
    #[arg(long)]
    txn_id: String,
    /// The transaction as JSON: an object with `pdus` and optionally `edus`.
    #[arg(long)]
    file: PathBuf,
    /// A relay of the destination, used after the direct attempts failed
    /// (repeatable).
    #[arg(long = "relay", value_name = "NAME")]
    relays: Vec<String>,
    /// Where server NAME is reached, e.g. `NAME=http://127.0.0.1:9000`
    /// (repeatable); others by Matrix server discovery (`.well-known`,
    /// SRV, port 8448, over HTTPS).
    #[arg(long = "resolve", value_name = "NAME=URL")]
    resolve: Vec<String>,
    #[command(flatten)]
    net: crate::net::NetArgs,
    /// Direct attempts before the relays are used.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
    /// Time limit of each request, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Wait after the first failed direct attempt, in milliseconds; it
    /// doubles with each further one.
    #[arg(long, default_value_t = 500)]
    backoff_ms: u64,
    /// Longest wait before a further direct attempt (a 429 may ask for
    /// more); past it, give up.
    #[arg(long, default_value_t = 60_000)]
    max_wait_ms: u64,
    /// Which adapter drives the core.
    #[arg(long, value_enum, default_value_t)]
    runtime: crate::Runtime,
}

fn server_name(s: &str, flag: &str) -> Result<ServerName, String> {
    ServerName::parse(s).map_err(|_| format!("{flag} {s:?} is not a server name"))
}

fn describe(target: &Target) -> String {
    match target {
        Target::Direct => "direct".to_owned(),
        Target::Relay(r) => format!("relay {r}"),
    }
}

/// Runs `send`; `Ok(true)` when delivered.
pub(crate) fn send(args: SendArgs) -> Result<bool, String> {
    let origin = server_name(&args.server_name, "--server-name")?;
    let destination = server_name(&args.destination, "--destination")?;
    let relays = args
        .relays
        .iter()
        .map(|r| server_name(r, "--relay"))
        .collect::<Result<Vec<_>, _>>()?;
    if destination == origin {
        return Err(format!(
            "--destination {destination} is this node (--server-name) itself"
        ));
    }
    let txn_id =
        TxnId::parse(&args.txn_id).map_err(|_| "--txn-id must be 1 to 255 bytes".to_owned())?;
    let resolver = Resolver::from_flags(args.resolve.iter().map(String::as_str))
        .map_err(|e| format!("--resolve: {e}"))?;
    let client_options = args.net.client_options()?;
    let signing_key = keys::read(&args.signing_key)?;
    let body = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => {
            return Err(format!(
                "{}: not a transaction: expected a JSON object with `pdus`",
                args.file.display()
            ));
        }
        Err(e) => return Err(format!("{}: not JSON: {e}", args.file.display())),
    }
    let item = whole_transaction_item(&txn_id, &body)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;

    let mut config = OutboundConfig::new(origin, signing_key);
    config.retries_until_assumed_offline = args.attempts;
    config.backoff_base = Duration::from_millis(args.backoff_ms);
    // One run makes at most `attempts` attempts; it never blacklists.
    config.failures_until_blacklist = u32::MAX;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let mut machine = Outbound::new(config, seed);
    machine.set_relays(relay_core::Instant::now(), destination.clone(), relays);

    let run = Run {
        machine,
        resolver,
        client_options,
        timeout: Duration::from_millis(args.timeout_ms),
        destination,
        item,
        file: args.file,
        attempts: args.attempts,
        max_wait: Duration::from_millis(args.max_wait_ms),
    };
    let report = on_runtime!(args.runtime, |rt| run.deliver(rt))??;
    let line = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(report.delivered != "none")
}

/// The line `send` prints, its keys in the order the protocol lists them.
#[derive(Debug, Serialize)]
struct Report {
    /// `direct`, `relay` or `none`.
    delivered: &'static str,
    relays_accepted: Vec<String>,
    errors: Vec<String>,
}

/// One `send` run, ready to go on either runtime.
struct Run {
    machine: Outbound,
    resolver: Resolver,
    client_options: adapter_http::ClientOptions,
    timeout: Duration,
    destination: ServerName,
    item: Vec<u8>,
    file: PathBuf,
    attempts: u32,
    max_wait: Duration,
}

impl Run {
    /// Sends the transaction and reports how it went.
    async fn deliver<R: Runtime>(self, rt: R) -> Result<Report, String> {
        let client = HttpClient::with_options(rt, self.resolver, self.timeout, self.client_options)
            .map_err(|e| format!("--tls-ca: {e}"))?;
        // One run keeps its state only as long as it runs.
        let store = Arc::new(relay_store::MemoryOutboundStore::new());
        let (handle, events, _task) = adapter_http::outbound::spawn(self.machine, client, store);
        handle
            .enqueue(self.destination, ItemKind::Transaction, self.item)
            .await
            .map_err(|e| format!("{}: {e}", self.file.display()))?;
        let mut errors = Vec::new();
        let mut failed_attempts = 0;
        while let Ok(event) = events.recv().await {
            match event {
                Event::Delivered { via, errors: e, .. } => {
                    errors.extend(e.iter().map(|(t, e)| format!("{}: {e}", describe(t))));
                    let (delivered, accepted) = match via {
                        Via::Direct => ("direct", vec![]),
                        Via::Relays(r) => ("relay", r.iter().map(ToString::to_string).collect()),
                    };
                    return Ok(Report {
                        delivered,
                        relays_accepted: accepted,
                        errors,
                    });
                }
                Event::FailedPermanently { error, .. } => {
                    errors.push(format!("direct: {error}"));
                    break;
                }
                Event::AttemptFailed {
                    errors: e,
                    relays_tried,
                    retry_at,
                    ..
                } => {
                    errors.extend(e.iter().map(|(t, e)| format!("{}: {e}", describe(t))));
                    failed_attempts += 1;
                    if relays_tried || failed_attempts >= self.attempts {
                        break;
                    }
                    // A 429 may ask for a wait far longer than a command
                    // should block; give up rather than hang.
                    let wait =
                        retry_at.map(|at| at.saturating_duration_since(relay_core::Instant::now()));
                    if let Some(wait) = wait.filter(|w| *w > self.max_wait) {
                        errors.push(format!(
                            "direct: the next try would be in {} ms, over --max-wait-ms",
                            wait.as_millis()
                        ));
                        break;
                    }
                }
                Event::PersistFailed { error } => errors.push(error),
                Event::Queued { .. }
                | Event::AssumedOffline { .. }
                | Event::BackOnline { .. }
                | Event::Blacklisted { .. } => {}
            }
        }
        Ok(Report {
            delivered: "none",
            relays_accepted: Vec::new(),
            errors,
        })
    }
}
