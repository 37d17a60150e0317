//! Harness for the black-box tests of `matrix-relay`.
//!
//! The tests in `tests/tests/` start the real `matrix-relay serve` binary
//! ([`RelayProcess`]) on `127.0.0.1:0`, each in its own temporary directory
//! with its own SQLite database, and talk to it over real HTTP/1.1 with a
//! small client written here ([`http`]), so that they can also send
//! malformed requests byte for byte.
//!
//! - [`process`]: finding and running the binary, signals, restarts.
//! - [`http`]: the blocking HTTP client, raw sockets, slow clients.
//! - [`identity`]: servers and their keys, `X-Matrix` signed requests.
//! - [`api`]: the relay's endpoints as calls (`put_txn`, `relay_txn`,
//!   `drain`).
//! - [`dendrite`]: gomatrixserverlib's relay types, to check that Dendrite
//!   can decode what the relay says.
//! - [`cli`]: `matrix-relay send` and `pull` as child processes, run as a
//!   [`Node`] (a server identity with its key file).
//! - [`stub`]: a scripted HTTP server that records requests (a destination
//!   for `send`, a failing relay), and closed ports.
//! - [`prometheus`]: scraping `/metrics` by series.
//! - [`rng`]: a seeded generator for reproducible garbage.
//! - [`tls`]: a throwaway CA and server certificates for HTTPS stubs;
//!   [`dns`]: a fake DNS server answering SRV questions (discovery tests).
//! - [`sim`]: the deterministic whole-system simulation (no processes,
//!   no sockets: the core machines on a virtual clock and network).
//!
//! The binary is `$MATRIX_RELAY_BIN`, else `target/<profile>/matrix-relay`
//! beside the test executable; `$MATRIX_RELAY_RUNTIME` adds `--runtime` to
//! every relay started.
#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod dendrite;
pub mod dns;
pub mod http;
pub mod identity;
pub mod process;
pub mod prometheus;
pub mod rng;
pub mod sim;
pub mod stub;
pub mod tls;

pub use api::{
    Pulled, drain, percent_encode, pull_one, put_txn, relay_txn, relay_txn_path, send_relay_path,
    store, txn_body,
};
pub use cli::{CliCommand, CliOutput, Node};
pub use dns::FakeDns;
pub use http::{HttpResponse, Request, send, send_raw};
pub use identity::{DEST_NAME, ORIGIN_NAME, RELAY_NAME, Server, signed_request};
pub use process::{RelayBuilder, RelayProcess, proc_status};
pub use rng::Rng;
pub use stub::{Recorded, Reply, StubServer, closed_addr};
pub use tls::TestCa;
