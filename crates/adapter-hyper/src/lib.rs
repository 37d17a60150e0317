//! hyper 1 on tokio: the relay server and the federation client over real
//! sockets.
//!
//! The adapter is glue. It reads requests, hands them to the core's
//! [`Relay`](relay_core::relay::Relay) machine, runs the storage operations
//! the machine asks for on tokio's blocking pool, and writes the responses.
//! All protocol policy lives in `relay-core`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod driver;
pub mod outbound;
mod persist;
pub mod retriever;
mod server;

pub use client::HttpClient;
pub use server::{ServeOptions, run, serve};
