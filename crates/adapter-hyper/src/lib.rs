//! hyper 1 on tokio: the relay server over real sockets.
//!
//! The adapter is glue. It reads requests, hands them to the core's
//! [`Relay`](relay_core::relay::Relay) machine, runs the storage operations
//! the machine asks for on tokio's blocking pool, and writes the responses.
//! All protocol policy lives in `relay-core`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod server;

pub use server::{ServeOptions, run, serve};
