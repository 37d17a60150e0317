//! `matrix-relay serve`: flags, the optional TOML file, and wiring.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapter_http::{Listen, ServeOptions, ServerLimits, ServerTls, TlsFiles};
use clap::Args;
use relay_core::auth::KeyRing;
use relay_core::rate::Rate;
use relay_core::relay::{
    DEFAULT_KEY_FETCH_INTERVAL, DEFAULT_KEY_FETCH_RATE, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_NEW_ORIGINS_PER_HOUR, DEFAULT_RELAY_TXN_RATE, DEFAULT_SEND_RELAY_RATE, RateLimits,
    RelayConfig, ServePolicy,
};
use relay_core::resolve::Resolver;
use relay_core::signing::SigningKey;
use relay_core::store::{AckedKeys, Quota};
use relay_core::{Cidr, ServerName};
use relay_store::QueueStore;
use serde::Deserialize;

use crate::{Runtime, keys, on_runtime};

/// Flags of `serve`. Every flag but `--config` can also be set in the
/// `--config` TOML file under the same name (`server-name = "…"`,
/// `serve-for = ["…"]`); flags win.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServeArgs {
    /// Address to bind; port 0 picks a free port [default: 127.0.0.1:8448].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, a
    /// listener of its own apart from the federation port; port 0 picks a
    /// free port (logged) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain, leaf first (with
    /// `--tls-key`); a renewed file is picked up within a minute, or at
    /// once on SIGHUP [default: plain HTTP].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// This relay's server name (required).
    #[arg(long)]
    server_name: Option<String>,
    /// Signing key file (Synapse format); created if missing (required).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// `sqlite:PATH` (embedded) or `postgres://…` [default: sqlite:relay.db].
    #[arg(long)]
    database: Option<String>,
    /// Most connections to a PostgreSQL database (one goes to the writer
    /// that group-commits inserts and acknowledgements, the rest to reads);
    /// ignored for SQLite [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    database_max_connections: Option<u32>,
    /// Refuse new transactions (503, retried later by senders) while the
    /// filesystem of the SQLite database has fewer free bytes than this;
    /// acknowledgements always go on. 0 refuses them only once the disk is
    /// full. Ignored for PostgreSQL [default: 268435456, 256 MiB].
    #[arg(long, value_name = "BYTES")]
    min_free_disk_bytes: Option<u64>,
    /// A destination server this relay stores transactions for (repeatable).
    #[arg(long = "serve-for", value_name = "NAME")]
    #[serde(default)]
    serve_for: Vec<String>,
    /// Serve every destination.
    #[arg(long)]
    #[serde(default)]
    open: bool,
    /// Pin a server's public key: `NAME=ed25519:ID:BASE64` (repeatable).
    #[arg(long = "trusted-key", value_name = "NAME=ed25519:ID:BASE64")]
    #[serde(default)]
    trusted_key: Vec<String>,
    /// Accept 64-hex-character server names as their own ed25519 public key
    /// (Dendrite's P2P demos).
    #[arg(long)]
    #[serde(default)]
    p2p_keys: bool,
    /// Fetch unknown keys from the origin's `/_matrix/key/v2/server`.
    #[arg(long)]
    #[serde(default)]
    fetch_keys: bool,
    /// Where server NAME is reached, e.g. `NAME=http://127.0.0.1:9000`
    /// (repeatable).
    #[arg(long = "resolve", value_name = "NAME=URL")]
    #[serde(default)]
    resolve: Vec<String>,
    /// A PEM file of CA certificates trusted besides the public roots
    /// (repeatable), e.g. a private federation's CA.
    #[arg(long = "tls-ca", value_name = "FILE")]
    #[serde(default)]
    tls_ca: Vec<PathBuf>,
    /// Send TCP connections meant for HOST:PORT to ADDR:PORT instead, as
    /// curl's `--connect-to`; Host, SNI and the certificate check keep HOST
    /// (repeatable).
    #[arg(long = "connect-to", value_name = "HOST:PORT=ADDR:PORT")]
    #[serde(default)]
    connect_to: Vec<String>,
    /// The nameserver for SRV lookups, `IP` or `IP:PORT` [default: the
    /// first of /etc/resolv.conf].
    #[arg(long = "dns-server", value_name = "ADDR")]
    dns_server: Option<String>,
    /// Connect to addresses in this network (`ADDR/LEN`) even where
    /// discovery or a key fetch leads to a special-purpose one (loopback,
    /// private, link-local, …), which is refused by default; `--resolve`
    /// and `--connect-to` targets are never refused (repeatable).
    #[arg(long = "allow-fetch-from", value_name = "CIDR")]
    #[serde(default)]
    allow_fetch_from: Vec<String>,
    /// Request body limit in bytes [default: 4325376, 50 PDUs of 64 KiB plus 1 MiB].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Most connections open at once, in all; one more is answered 503
    /// and closed [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Most connections open at once from one client address (an IPv6
    /// address's /64); loopback counts too [default: 128].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: Option<u32>,
    /// Most bytes of request bodies held in memory at once, over all
    /// connections; a body that finds no room within a second is answered
    /// 503. A quarter is kept for bodies of at most 64 KiB [default:
    /// 67108864, 64 MiB].
    #[arg(long, value_name = "N")]
    max_buffered_bytes: Option<u64>,
    /// Most `send_relay` requests a second from one client address (an
    /// IPv6 address's /64), on average; past it and the burst, 429 with
    /// `retry_after_ms` [default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_send_relay_per_ip_per_sec: Option<u32>,
    /// Most `send_relay` requests from one client address at once, after
    /// a quiet time [default: 500].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_send_relay_burst_per_ip: Option<u32>,
    /// Most `relay_txn` requests a second from one client address, on
    /// average, a budget apart from `send_relay`'s [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_relay_txn_per_ip_per_sec: Option<u32>,
    /// Most `relay_txn` requests from one client address at once, after a
    /// quiet time [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_relay_txn_burst_per_ip: Option<u32>,
    /// Most origins one client address may bring in an hour (an origin
    /// counts the first time the address brings it in its hour; pinned
    /// origins do not count); past it, 429 for origins new to the address
    /// [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_new_origins_per_ip_per_hour: Option<u32>,
    /// Most key fetches a second over all origins, on average (with
    /// `--fetch-keys`); past it and the burst, a request whose key is
    /// unknown is 401 without a fetch [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_key_fetches_per_sec: Option<u32>,
    /// Most key fetches at once, after a quiet time [default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_key_fetch_burst: Option<u32>,
    /// Least time, in seconds, between two fetches of one origin's keys,
    /// whatever the first one's outcome or the key ID asked for; meanwhile
    /// an unknown key of that origin is 401 without a fetch [default: 300].
    #[arg(long, value_name = "SECS")]
    key_fetch_interval_secs: Option<u64>,
    /// Client addresses no per-address rate limit applies to, as a range
    /// (`10.0.0.0/8`, `2001:db8::/32`) or one address (repeatable).
    #[arg(long = "rate-limit-exempt", value_name = "CIDR")]
    #[serde(default)]
    rate_limit_exempt: Vec<String>,
    /// A reverse proxy, as a range or one address, whose `X-Forwarded-For`
    /// names the client (repeatable); of any other peer the header is
    /// ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    #[serde(default)]
    trusted_proxy: Vec<String>,
    /// Refuse transactions from this origin (repeatable).
    #[arg(long = "deny-origin", value_name = "NAME")]
    #[serde(default)]
    deny_origin: Vec<String>,
    /// Most entries queued for one destination [default: 100000].
    #[arg(long)]
    max_queue_entries: Option<u64>,
    /// Most bytes queued for one destination [default: 1 GiB]. Bytes are
    /// what entries cost the store: the transaction, its names and txn ID
    /// as stored, and a fixed overhead per entry.
    #[arg(long)]
    max_queue_bytes: Option<u64>,
    /// The most one origin may hold of one destination's queue, in percent
    /// of --max-queue-entries and --max-queue-bytes [default: 50].
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    max_origin_share: Option<u8>,
    /// Most entries one origin may have queued, over all destinations
    /// [default: 100000].
    #[arg(long)]
    max_origin_entries: Option<u64>,
    /// Most bytes one origin may have queued [default: 1 GiB].
    #[arg(long)]
    max_origin_bytes: Option<u64>,
    /// Most bytes queued in all [default: 16 GiB]; with SQLite, the
    /// database's files stay within 1.5 times this plus 2 MiB.
    #[arg(long)]
    max_total_bytes: Option<u64>,
    /// Most entries queued in all [default: 10000000].
    #[arg(long, value_name = "N")]
    max_total_entries: Option<u64>,
    /// How long an entry is kept unacknowledged, e.g. `2s`, `90m`, `12h`,
    /// `30d` (a plain number is seconds); `0` keeps entries until they are
    /// acknowledged. An older entry is never handed out, and is deleted
    /// within seconds [default: 30d].
    #[arg(long, value_name = "DURATION")]
    max_entry_age: Option<String>,
    /// How long, in seconds, the key (origin, destination, txn ID) of an
    /// acknowledged transaction is remembered, so that a sender's
    /// retransmission is answered 200 and not stored again; 0 remembers
    /// nothing [default: 86400].
    #[arg(long, value_name = "SECS")]
    acked_retention_secs: Option<u64>,
    /// Most keys of acknowledged transactions remembered (the oldest are
    /// forgotten first) [default: 1000000].
    #[arg(long, value_name = "N")]
    acked_max: Option<u64>,
    /// Most bytes of remembered keys of acknowledged transactions (the
    /// oldest are forgotten first) [default: 256 MiB].
    #[arg(long, value_name = "BYTES")]
    acked_max_bytes: Option<u64>,
    /// TOML file with these settings; flags win.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Which adapter drives the core [default: tokio].
    #[arg(long, value_enum)]
    runtime: Option<Runtime>,
}

impl ServeArgs {
    /// Fills what the flags left unset from `file`.
    fn merge(mut self, file: ServeArgs) -> Self {
        macro_rules! or_file {
            ($($field:ident),*) => { $( self.$field = self.$field.or(file.$field); )* };
        }
        or_file!(
            listen,
            metrics_listen,
            tls_cert,
            tls_key,
            server_name,
            signing_key,
            database,
            database_max_connections,
            min_free_disk_bytes,
            max_body_bytes,
            max_connections,
            max_connections_per_ip,
            max_buffered_bytes,
            max_queue_entries,
            max_queue_bytes,
            max_origin_entries,
            max_origin_bytes,
            max_total_bytes,
            max_origin_share,
            max_total_entries,
            max_entry_age,
            acked_retention_secs,
            acked_max,
            acked_max_bytes,
            max_send_relay_per_ip_per_sec,
            max_send_relay_burst_per_ip,
            max_relay_txn_per_ip_per_sec,
            max_relay_txn_burst_per_ip,
            max_new_origins_per_ip_per_hour,
            max_key_fetches_per_sec,
            max_key_fetch_burst,
            key_fetch_interval_secs,
            dns_server,
            runtime
        );
        macro_rules! list_or_file {
            ($($field:ident),*) => { $( if self.$field.is_empty() { self.$field = file.$field; } )* };
        }
        list_or_file!(
            serve_for,
            trusted_key,
            resolve,
            tls_ca,
            connect_to,
            allow_fetch_from,
            deny_origin,
            rate_limit_exempt,
            trusted_proxy
        );
        self.open |= file.open;
        self.p2p_keys |= file.p2p_keys;
        self.fetch_keys |= file.fetch_keys;
        self
    }
}

fn read_config(path: &Path) -> Result<ServeArgs, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn server_names(list: &[String], flag: &str) -> Result<HashSet<ServerName>, String> {
    list.iter()
        .map(|s| ServerName::parse(s).map_err(|_| format!("{flag} {s:?} is not a server name")))
        .collect()
}

/// The relay's configuration from the flags (besides where it listens).
fn relay_config(
    args: &ServeArgs,
    server_name: ServerName,
    signing_key: SigningKey,
) -> Result<RelayConfig, String> {
    let mut config = RelayConfig::new(server_name, signing_key);
    config.serve = if args.open {
        ServePolicy::Open
    } else {
        ServePolicy::Only(server_names(&args.serve_for, "--serve-for")?)
    };
    config.denied_origins = server_names(&args.deny_origin, "--deny-origin")?;
    let mut ring = if args.p2p_keys {
        KeyRing::with_p2p_names()
    } else {
        KeyRing::default()
    };
    for spec in &args.trusted_key {
        let (name, key_id, key) =
            KeyRing::parse_trusted(spec).map_err(|e| format!("--trusted-key: {e}"))?;
        ring.pin(name, key_id, key);
    }
    config.keys = ring;
    config.fetch_keys = args.fetch_keys;
    config.max_body_bytes = args.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    config.quota = quota(args)?;
    if let Some(age) = &args.max_entry_age {
        config.max_entry_age_ms =
            parse_duration_ms(age).map_err(|e| format!("--max-entry-age {age:?}: {e}"))?;
    }
    config.limits = rate_limits(args)?;
    config.trusted_proxies = cidrs(&args.trusted_proxy, "--trusted-proxy")?;
    if matches!(config.serve, ServePolicy::Only(ref s) if s.is_empty()) {
        tracing::warn!("serving no destination: pass --serve-for NAME or --open");
    }
    Ok(config)
}

/// The storage quotas from the flags.
fn quota(args: &ServeArgs) -> Result<Quota, String> {
    let d = Quota::default();
    let share = args.max_origin_share.unwrap_or(d.origin_share_percent);
    // The flag's parser checks this too; this is for the TOML file.
    if !(1..=100).contains(&share) {
        return Err(format!("--max-origin-share {share}: must be 1 to 100"));
    }
    Ok(Quota {
        destination_entries: args.max_queue_entries.unwrap_or(d.destination_entries),
        destination_bytes: args.max_queue_bytes.unwrap_or(d.destination_bytes),
        origin_share_percent: share,
        origin_entries: args.max_origin_entries.unwrap_or(d.origin_entries),
        origin_bytes: args.max_origin_bytes.unwrap_or(d.origin_bytes),
        total_entries: args.max_total_entries.unwrap_or(d.total_entries),
        total_bytes: args.max_total_bytes.unwrap_or(d.total_bytes),
        acked: AckedKeys {
            retention_ms: args
                .acked_retention_secs
                .map_or(d.acked.retention_ms, |secs| secs.saturating_mul(1000)),
            max: args.acked_max.unwrap_or(d.acked.max),
            max_bytes: args.acked_max_bytes.unwrap_or(d.acked.max_bytes),
        },
    })
}

/// A duration as `--max-entry-age` takes it: a whole number with an
/// optional unit `s`, `m`, `h` or `d` (none is seconds), in milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a whole number with an optional unit s, m, h or d".to_owned())?;
    let secs_per_unit: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    n.checked_mul(secs_per_unit)
        .and_then(|secs| secs.checked_mul(1000))
        .ok_or_else(|| "too long".to_owned())
}

/// The rate limits from the flags.
fn rate_limits(args: &ServeArgs) -> Result<RateLimits, String> {
    let rate = |(per_sec, burst): (Option<u32>, Option<u32>), default: (u32, u32), flags: &str| {
        // The flags' parser refuses 0 too; this is for the TOML file.
        Rate::new(per_sec.unwrap_or(default.0), burst.unwrap_or(default.1))
            .map(Some)
            .ok_or_else(|| format!("{flags} must be at least 1"))
    };
    let new_origins = match args.max_new_origins_per_ip_per_hour {
        Some(0) => return Err("--max-new-origins-per-ip-per-hour must be at least 1".into()),
        given => given.unwrap_or(DEFAULT_NEW_ORIGINS_PER_HOUR),
    };
    Ok(RateLimits {
        send_relay: rate(
            (
                args.max_send_relay_per_ip_per_sec,
                args.max_send_relay_burst_per_ip,
            ),
            DEFAULT_SEND_RELAY_RATE,
            "--max-send-relay-per-ip-per-sec and --max-send-relay-burst-per-ip",
        )?,
        relay_txn: rate(
            (
                args.max_relay_txn_per_ip_per_sec,
                args.max_relay_txn_burst_per_ip,
            ),
            DEFAULT_RELAY_TXN_RATE,
            "--max-relay-txn-per-ip-per-sec and --max-relay-txn-burst-per-ip",
        )?,
        new_origins: Some(new_origins),
        exempt: cidrs(&args.rate_limit_exempt, "--rate-limit-exempt")?,
        key_fetches: rate(
            (args.max_key_fetches_per_sec, args.max_key_fetch_burst),
            DEFAULT_KEY_FETCH_RATE,
            "--max-key-fetches-per-sec and --max-key-fetch-burst",
        )?,
        key_fetch_interval: args
            .key_fetch_interval_secs
            .map_or(DEFAULT_KEY_FETCH_INTERVAL, Duration::from_secs),
    })
}

fn cidrs(list: &[String], flag: &str) -> Result<Vec<Cidr>, String> {
    list.iter()
        .map(|s| Cidr::parse(s).map_err(|e| format!("{flag}: {e}")))
        .collect()
}

/// Runs `serve`.
pub(crate) fn serve(args: ServeArgs) -> Result<(), String> {
    let args = match args.config.clone() {
        Some(path) => args.merge(read_config(&path)?),
        None => args,
    };
    let server_name = args
        .server_name
        .as_deref()
        .ok_or("--server-name is required")?;
    let server_name = ServerName::parse(server_name)
        .map_err(|_| format!("--server-name {server_name:?} is not a server name"))?;
    let key_path = args
        .signing_key
        .as_deref()
        .ok_or("--signing-key is required")?;
    let resolver = Resolver::from_flags(args.resolve.iter().map(String::as_str))
        .map_err(|e| format!("--resolve: {e}"))?;
    let client = crate::net::client_options(
        &args.tls_ca,
        &args.connect_to,
        args.dns_server.as_deref(),
        &args.allow_fetch_from,
    )?;
    let tls = server_tls(&args)?;
    let config = relay_config(&args, server_name, keys::load_or_create(key_path)?)?;
    let limits = server_limits(&args, config.max_body_bytes)?;
    let (store, shown, storage_threads) = open_store(&args)?;
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8448)));
    let runtime = args.runtime.unwrap_or_default();
    raise_open_files_limit();
    tracing::info!(server_name = %config.server_name, database = %shown, ?runtime, "starting relay");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let on_listening = |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {scheme}://{addr}");
        let _ = out.flush();
        tracing::info!(%addr, "listening");
    };
    on_runtime!(runtime, |rt| {
        let options = ServeOptions {
            metrics_listen: args.metrics_listen,
            storage_threads,
            limits,
            resolver,
            client,
            tls,
            ..ServeOptions::new(Listen::Addr(listen), config, store)
        };
        adapter_http::run(rt, options, on_listening)
    })?
    .map_err(|e| format!("cannot serve on {listen}: {e}"))
}

/// What clients can make the relay hold, from the flags; `Err` if the
/// body budget cannot hold one body of `max_body_bytes`.
fn server_limits(args: &ServeArgs, max_body_bytes: usize) -> Result<ServerLimits, String> {
    let d = ServerLimits::default();
    let count = |n: Option<u32>, default: usize, flag: &str| match n {
        // The flags' parser refuses 0 too; this is for the TOML file.
        Some(0) => Err(format!("{flag} must be at least 1")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        None => Ok(default),
    };
    let limits = ServerLimits {
        max_connections: count(args.max_connections, d.max_connections, "--max-connections")?,
        max_connections_per_ip: count(
            args.max_connections_per_ip,
            d.max_connections_per_ip,
            "--max-connections-per-ip",
        )?,
        max_buffered_bytes: args.max_buffered_bytes.unwrap_or(d.max_buffered_bytes),
    };
    limits
        .check(max_body_bytes)
        .map_err(|e| format!("--max-buffered-bytes: {e} (or lower --max-body-bytes)"))?;
    Ok(limits)
}

/// The certificate of `--tls-cert` and `--tls-key`, if given.
fn server_tls(args: &ServeArgs) -> Result<Option<Arc<ServerTls>>, String> {
    match (args.tls_cert.clone(), args.tls_key.clone()) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => ServerTls::load(TlsFiles { cert, key })
            .map(|tls| Some(Arc::new(tls)))
            .map_err(|e| format!("--tls-cert/--tls-key: {e}")),
        // The flags require each other; this is for the TOML file.
        _ => Err("--tls-cert and --tls-key go together".into()),
    }
}

/// The store of `--database`, its URL as it may be shown (without a
/// password), and how many threads its calls run on: PostgreSQL's
/// connection count (more could only wait for a connection), else
/// [`adapter_http::DEFAULT_STORAGE_THREADS`].
fn open_store(args: &ServeArgs) -> Result<(Arc<dyn QueueStore>, String, usize), String> {
    let database = args.database.as_deref().unwrap_or("sqlite:relay.db");
    let shown = relay_store::redact_url(database);
    let mut open = relay_store::OpenOptions::default();
    match args.database_max_connections {
        // The flag's parser refuses 0 too; this is for the TOML file.
        Some(0) => return Err("--database-max-connections must be at least 1".into()),
        Some(n) => open.max_connections = usize::try_from(n).unwrap_or(usize::MAX),
        None => {}
    }
    if let Some(n) = args.min_free_disk_bytes {
        open.min_free_disk_bytes = n;
    }
    // The WAL follows the total quota, so the files stay within its bound.
    open.wal_bytes = relay_store::wal_bytes_for(
        args.max_total_bytes
            .unwrap_or(relay_store::Quota::default().total_bytes),
    );
    let store =
        relay_store::open_with(database, &open).map_err(|e| format!("--database {shown}: {e}"))?;
    let threads = if relay_store::is_postgres(database) {
        open.max_connections
    } else {
        adapter_http::DEFAULT_STORAGE_THREADS
    };
    Ok((store, shown, threads))
}

/// Raises the soft limit on open files to the hard one, as servers do: every
/// connection is a file, and a default soft limit of 1,024 would let a few
/// hundred idle clients starve the database and the key-fetching client of
/// descriptors. A failure is logged, not fatal.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit")
        }
        Err(e) => {
            tracing::warn!(error = %e, soft = ?limit.current, "cannot raise the open files limit")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn entry_ages_parse_with_their_units() {
        for (text, ms) in [
            ("2s", 2_000),
            ("90m", 5_400_000),
            ("12h", 43_200_000),
            ("30d", 2_592_000_000),
            ("45", 45_000),
            ("0", 0),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "5x", "h", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
