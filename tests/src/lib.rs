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
//! - [`rng`]: a seeded generator for reproducible garbage.
//!
//! The binary is `$MATRIX_RELAY_BIN`, else `target/<profile>/matrix-relay`
//! beside the test executable; `$MATRIX_RELAY_RUNTIME` adds `--runtime` to
//! every relay started.
#![warn(missing_docs)]

pub mod api;
pub mod dendrite;
pub mod http;
pub mod identity;
pub mod process;
pub mod rng;

pub use api::{
    Pulled, drain, percent_encode, pull_one, put_txn, relay_txn, relay_txn_path, send_relay_path,
    store, txn_body,
};
pub use http::{HttpResponse, Request, send, send_raw};
pub use identity::{DEST_NAME, ORIGIN_NAME, RELAY_NAME, Server, signed_request};
pub use process::{RelayBuilder, RelayProcess};
pub use rng::Rng;
