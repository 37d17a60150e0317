//! `matrix-relay`: a Matrix federation relay server and its tools.
#![forbid(unsafe_code)]
// No function over 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

mod admin;
mod keys;
mod net;
mod pull;
mod send;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Store-and-forward of Matrix federation transactions for peer-to-peer
/// nodes that are often offline.
#[derive(Parser, Debug)]
#[command(name = "matrix-relay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a new ed25519 signing key in Synapse's one-line format.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// The key ID, `ed25519:<version>` or just `<version>` (default:
        /// from the public key).
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Run the relay server.
    Serve(Box<serve::ServeArgs>),
    /// Send one transaction as a node: directly, then through the
    /// destination's relays. Prints one JSON line; exits 0 when delivered.
    Send(Box<send::SendArgs>),
    /// Drain every relay once as a node, printing each transaction once as
    /// a JSON line; exits 0 when every relay was drained.
    Pull(Box<pull::PullArgs>),
    /// List what each destination has queued in a relay's database, most
    /// bytes first, one JSON line each.
    Queues(admin::QueuesArgs),
    /// Delete everything queued for one destination in a relay's database,
    /// for good (the relay may keep running); prints what was deleted.
    Purge(admin::PurgeArgs),
}

/// The async runtime that drives the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// hyper on tokio.
    #[default]
    Tokio,
    /// hyper on smol.
    Smol,
}

/// Runs `$main(rt)` (an `async fn` generic over `adapter_http::Runtime`) to
/// completion on the chosen runtime; `Err` if it could not start.
macro_rules! on_runtime {
    ($runtime:expr, $main:expr) => {
        match $runtime {
            $crate::Runtime::Tokio => adapter_hyper::block_on($main),
            $crate::Runtime::Smol => adapter_smol::block_on($main),
        }
        .map_err(|e| format!("cannot start the runtime: {e}"))
    };
}
pub(crate) use on_runtime;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Keygen { out, key_id } => keys::keygen(&out, key_id.as_deref()).map(|()| true),
        Command::Serve(args) => serve::serve(*args).map(|()| true),
        Command::Send(args) => send::send(*args),
        Command::Pull(args) => pull::pull(*args),
        Command::Queues(args) => admin::queues(args).map(|()| true),
        Command::Purge(args) => admin::purge(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("matrix-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
