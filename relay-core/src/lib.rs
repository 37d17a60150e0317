//! The pure core of matrix-relay.
//!
//! Everything here is synchronous and deterministic: no sockets, files,
//! threads, clocks or OS randomness. Time comes in as [`Instant`] (monotonic)
//! and [`UnixMillis`] (wall clock, where the protocol needs it); the adapters
//! perform the effects the state machines ask for and report the results back.
//!
//! - [`id`]: server names, user IDs, transaction IDs, entry IDs, key IDs;
//!   [`error`]: Matrix error codes and their HTTP statuses.
//! - [`canonical`], [`b64`], [`signing`], [`xmatrix`], [`auth`],
//!   [`server_keys`]: Matrix canonical JSON, signing keys, the `X-Matrix`
//!   header, request authentication, key documents (ours and fetched ones).
//! - [`request`]: routing of raw request targets.
//! - [`rate`]: token buckets and other rate limits in bounded memory;
//!   [`cidr`]: address ranges (`10.0.0.0/8`).
//! - [`relay`]: the relay server machine.
//! - [`outbound`]: the sender machine; [`retriever`]: the recipient
//!   machine; [`http`]: the requests they send and the outcomes they get.
//! - [`resolve`]: server discovery (`.well-known`, SRV, failover between
//!   targets), as decisions the client performs; [`addr_policy`]: which
//!   addresses it may connect to ([`cidr`]: the networks an operator
//!   allows).
//! - [`store`]: the records the machines ask the storage adapter to keep.
//! - [`rng`]: the seeded generator behind every machine's jitter.
//! - [`rate`]: token buckets and per-address windows on virtual time;
//!   [`cidr`] and [`addr_policy`]: address ranges, and the special-purpose
//!   addresses discovery never connects to.
//! - `fuzzing` (feature `fuzzing`, for the fuzz targets and tests only):
//!   the fuzz entry points.
//!
//! The three machines share one drive rule, one backoff and one way of
//! keeping `now`; the repository's `docs/architecture.md` draws the loop.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines of code (clippy.toml), but for tests: a
// table test reads best whole.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod addr_policy;
pub mod auth;
pub mod b64;
mod backoff;
pub mod canonical;
pub mod cidr;
mod drive;
#[cfg(test)]
#[path = "../tests/support/epoch.rs"]
mod epoch;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod id;
pub mod outbound;
pub mod rate;
pub mod relay;
pub mod request;
pub mod resolve;
pub mod retriever;
pub mod rng;
pub mod server_keys;
pub mod signing;
pub mod store;
mod time;
pub mod xmatrix;

pub use cidr::Cidr;
pub use error::{ErrCode, MatrixError};
pub use id::{EntryId, KeyId, ServerName, TxnId, UserId};
pub use time::{Instant, UnixMillis};
