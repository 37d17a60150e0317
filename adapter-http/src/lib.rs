//! The runtime-generic hyper layer of matrix-relay: everything the tokio and
//! smol adapters do the same way, written once over a small [`Runtime`]
//! trait.
//!
//! - [`run`]: the one way to start a relay server: HTTP to
//!   [`relay_core::relay::RequestHead`] (and the body, read and checked
//!   only when the core asks) and back, the accept loop and graceful
//!   shutdown, and the task driving the [`Relay`](relay_core::relay::Relay)
//!   machine; [`metrics`]: what it counts, served on a listener of its own.
//! - [`HttpClient`]: server discovery, sending, timeouts, TLS and
//!   connection reuse; [`dns`]: its SRV queries.
//! - `threads`: the bounded thread pools blocking work runs on (storage
//!   calls, DNS lookups), apart from the runtime's.
//! - [`outbound`] and [`retriever`]: the tasks driving the sender and the
//!   recipient machines.
//!
//! Implementation note: modelled on quinn's `Runtime` trait. An adapter
//! crate (`adapter-hyper` for tokio, `adapter-smol`) implements it in about
//! a hundred lines and holds nothing else but a `block_on` that starts its
//! executor. Shared code uses only runtime-agnostic primitives
//! (async-channel, futures-channel, futures-lite), so this crate's
//! dependency tree names no runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod client;
pub mod dns;
pub mod drive;
pub mod metrics;
mod runtime;
mod server;
mod task;
mod threads;
pub mod tls;

pub use client::{ClientOptions, ConnectTo, HttpClient};
pub use drive::{outbound, retriever};
pub use metrics::Metrics;
pub use runtime::{Runtime, TlsTarget, bind_listener};
pub use server::{
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_STORAGE_THREADS, Listen, SMALL_BODY_BYTES, ServeOptions, ServerLimits, Shutdown, run,
};
pub use task::{Task, spawn_task, timeout};
pub use tls::{ServerTls, TlsFiles};

use std::time::SystemTime;

use relay_core::UnixMillis;

/// The current wall-clock time.
pub fn unix_now() -> UnixMillis {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
}
