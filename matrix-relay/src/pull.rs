//! `matrix-relay pull`: drain every relay once, as the node's retriever
//! does, printing each transaction once; with `--follow`, keep
//! long-polling them until interrupted.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_http::retriever::Received;
use adapter_http::{HttpClient, Runtime};
use clap::Args;
use relay_core::ServerName;
use relay_core::resolve::Resolver;
use relay_core::retriever::{Event, Retriever, RetrieverConfig};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{keys, on_runtime};

/// Flags of `pull`.
#[derive(Args, Debug)]
pub(crate) struct PullArgs {
    /// This node's server name: whose queue is drained.
    #[arg(long)]
    server_name: String,
    /// This node's signing key file (Synapse format).
    #[arg(long)]
    signing_key: PathBuf,
    /// A relay to drain (repeatable).
    #[arg(long = "relay", value_name = "NAME", required = true)]
    relays: Vec<String>,
    /// Where server NAME is reached, e.g. `NAME=http://127.0.0.1:9000`
    /// (repeatable); others by Matrix server discovery (`.well-known`,
    /// SRV, port 8448, over HTTPS).
    #[arg(long = "resolve", value_name = "NAME=URL")]
    resolve: Vec<String>,
    #[command(flatten)]
    net: crate::net::NetArgs,
    /// Time limit of each request, in milliseconds (with `--follow`, on top
    /// of the relay's wait).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Keep going: long-poll every relay that has the batch drain (poll
    /// the others every 30 s) and print each transaction as it arrives,
    /// until interrupted.
    #[arg(long)]
    follow: bool,
    /// Which adapter drives the core.
    #[arg(long, value_enum, default_value_t)]
    runtime: crate::Runtime,
}

/// Runs `pull`; `Ok(true)` when every relay was drained.
pub(crate) fn pull(args: PullArgs) -> Result<bool, String> {
    let name = ServerName::parse(&args.server_name)
        .map_err(|_| format!("--server-name {:?} is not a server name", args.server_name))?;
    let relays = args
        .relays
        .iter()
        .map(|r| ServerName::parse(r).map_err(|_| format!("--relay {r:?} is not a server name")))
        .collect::<Result<Vec<_>, _>>()?;
    let resolver = Resolver::from_flags(args.resolve.iter().map(String::as_str))
        .map_err(|e| format!("--resolve: {e}"))?;
    let client_options = args.net.client_options()?;
    let signing_key = keys::read(&args.signing_key)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let mut config = RetrieverConfig::new(name, signing_key);
    let mut timeout = Duration::from_millis(args.timeout_ms);
    if args.follow {
        config.long_poll = Some(FOLLOW_WAIT);
        timeout += FOLLOW_WAIT;
    }
    let machine = Retriever::new(config, seed);
    let follow = args.follow;
    let all_drained = on_runtime!(args.runtime, |rt| async move {
        let client = HttpClient::with_options(rt, resolver, timeout, client_options)
            .map_err(|e| format!("--tls-ca: {e}"))?;
        Ok::<_, String>(drain(client, machine, relays, follow).await)
    })??;
    Ok(all_drained)
}

/// How long a relay is asked to wait for an entry with `--follow`.
const FOLLOW_WAIT: Duration = Duration::from_secs(25);

/// Drains every relay once (with `follow`, until interrupted); `true`
/// when all were drained.
async fn drain<R: Runtime>(
    client: HttpClient<R>,
    mut machine: Retriever,
    relays: Vec<ServerName>,
    follow: bool,
) -> bool {
    machine.set_relays(relay_core::Instant::now(), relays.clone());
    // One run remembers what it printed only as long as it runs.
    let store = Arc::new(relay_store::MemoryDedupeStore::new());
    let (handle, received, _task) = adapter_http::retriever::spawn(machine, client, store);
    let mut pending: HashSet<ServerName> = relays.into_iter().collect();
    let mut failed = false;
    while follow || !pending.is_empty() {
        let Ok(item) = received.recv().await else {
            break;
        };
        match item {
            Received::Delivery(d) => {
                let transaction = one_line(&d.transaction);
                let line = Line {
                    relay: d.relay.as_str(),
                    origin: d.origin.as_str(),
                    txn_id: d.txn_id.as_ref().map(|t| t.as_str()),
                    transaction: &transaction,
                };
                let Ok(line) = serde_json::to_string(&line) else {
                    return false;
                };
                // The line is out before the entry is acknowledged.
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return false;
                }
                handle.processed(d.id);
            }
            Received::Event(Event::Drained { relay, .. }) => {
                pending.remove(&relay);
            }
            Received::Event(Event::RelayFailed { relay, error, .. }) => {
                eprintln!("matrix-relay: relay {relay}: {error}");
                // Following, it is retried with backoff.
                failed |= pending.remove(&relay);
            }
            Received::Event(Event::Malformed { relay, error }) => {
                eprintln!("matrix-relay: relay {relay} answered badly: {error}");
            }
            Received::Event(Event::PersistFailed { error }) => {
                eprintln!("matrix-relay: {error}")
            }
            Received::Event(Event::DuplicateDropped { .. }) => {}
        }
    }
    !failed && pending.is_empty()
}

/// One line `pull` prints, its keys in the order the protocol lists them.
#[derive(Serialize)]
struct Line<'a> {
    relay: &'a str,
    origin: &'a str,
    /// `null` from a relay that does not say (Dendrite).
    txn_id: Option<&'a str>,
    transaction: &'a RawValue,
}

/// `transaction` as the relay handed it out, on one line: its line breaks,
/// which JSON allows only between tokens, are left out, and nothing else
/// changes (numbers, escapes and key order are as their sender wrote them).
/// `null` if it is not JSON, which the retriever has already ruled out.
fn one_line(transaction: &[u8]) -> Box<RawValue> {
    let text: Vec<u8> = transaction
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\n' | b'\r'))
        .collect();
    String::from_utf8(text)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned())
}
