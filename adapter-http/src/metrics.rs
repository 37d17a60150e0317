//! Prometheus metrics of the relay server, and what its metrics listener
//! answers.
//!
//! Implementation note: counters are derived from what the server and its
//! driver already see (the response of each request, each insert's
//! [`InsertOutcome`], each acknowledgement the store performed); the queue
//! gauges are read from the store's counters at every scrape
//! ([`QueueStore::totals`]), never kept here, so several relays sharing a
//! PostgreSQL database each report the whole queue.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use relay_core::request::{self, Route};
use relay_core::store::InsertOutcome;
use relay_store::{QueueStore, QueueTotals};

use crate::threads::ThreadPool;

/// Every metric's name starts with this (and `_`).
pub const PREFIX: &str = "matrix_relay";
/// The path the metrics listener serves.
pub const METRICS_PATH: &str = "/metrics";

/// Which route a request was for, as the `endpoint` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// `PUT …/send_relay/{txnID}/{userID}`.
    SendRelay,
    /// `GET …/relay_txn/{userID}`.
    RelayTxn,
    /// `POST …/unstable/org.matrix_relay/relay_txns/{userID}`.
    RelayTxns,
    /// `GET /_matrix/key/v2/server`.
    Keys,
    /// `GET /_matrix/federation/v1/version`.
    Version,
    /// Anything else (unknown paths, wrong methods).
    Other,
}

impl RouteLabel {
    /// Classifies a request as the core routes it.
    pub fn of(method: &str, target: &str) -> Self {
        match request::route(method, target) {
            Ok(Route::SendRelay { .. }) => Self::SendRelay,
            Ok(Route::RelayTxn { .. }) => Self::RelayTxn,
            Ok(Route::RelayTxns { .. }) => Self::RelayTxns,
            Ok(Route::ServerKeys) => Self::Keys,
            Ok(Route::Version) => Self::Version,
            Err(_) => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRelay => "send_relay",
            Self::RelayTxn => "relay_txn",
            Self::RelayTxns => "relay_txns",
            Self::Keys => "keys",
            Self::Version => "version",
            Self::Other => "other",
        }
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: RouteLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: RouteLabel,
}

/// Request durations from 1 ms to about 16 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The relay server's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    stored: Counter,
    duplicates: Counter,
    acknowledgements: Counter,
    expired: Counter,
    long_polls: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered on the federation listener, by endpoint and HTTP status",
            requests.clone(),
        );
        let durations: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's headers to its response, by endpoint",
            Unit::Seconds,
            durations.clone(),
        );
        let stored = Counter::default();
        registry.register(
            "transactions_stored",
            "Transactions stored by send_relay",
            stored.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "duplicates_answered",
            "send_relay repeats answered 200 without storing (still queued, or acknowledged and remembered)",
            duplicates.clone(),
        );
        let acknowledgements = Counter::default();
        registry.register(
            "acknowledgements",
            "Acknowledgements (relay_txn with an entry_id) the store carried out",
            acknowledgements.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "entries_expired",
            "Entries deleted unacknowledged because they were older than --max-entry-age",
            expired.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "long_polls_waiting",
            "Batch drains waiting for an entry of their destination (long-polls)",
            long_polls.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            stored,
            duplicates,
            acknowledgements,
            expired,
            long_polls,
        }
    }

    /// Counts one answered request.
    pub fn observe_request(&self, endpoint: RouteLabel, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.durations
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts the outcome of one insert.
    pub fn observe_insert(&self, outcome: &InsertOutcome) {
        match outcome {
            InsertOutcome::Stored(_) => {
                self.stored.inc();
            }
            InsertOutcome::Duplicate(_) | InsertOutcome::AlreadyDelivered => {
                self.duplicates.inc();
            }
            InsertOutcome::QuotaExceeded(_) | InsertOutcome::DiskLow => {}
        }
    }

    /// Counts one entry an acknowledgement deleted.
    pub fn observe_acknowledgement(&self) {
        self.acknowledgements.inc();
    }

    /// Counts `n` entries a batch acknowledgement deleted.
    pub fn observe_acknowledgements(&self, n: u64) {
        self.acknowledgements.inc_by(n);
    }

    /// Counts `n` entries deleted as expired.
    pub fn observe_expired(&self, n: u64) {
        self.expired.inc_by(n);
    }

    /// Sets how many long-polls wait for an entry.
    pub fn set_long_polls_waiting(&self, n: usize) {
        self.long_polls.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric, with
    /// the queue gauges from `totals` (left out when the store could not
    /// be read).
    pub fn encode(&self, totals: Option<QueueTotals>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        if let Some(totals) = totals {
            let mut queue = Registry::with_prefix(PREFIX);
            let gauge = |n: u64| {
                let g: Gauge = Gauge::default();
                g.set(i64::try_from(n).unwrap_or(i64::MAX));
                g
            };
            queue.register(
                "queued_entries",
                "Entries queued, over all destinations",
                gauge(totals.entries),
            );
            queue.register(
                "queued_bytes",
                "Bytes of the entries queued, over all destinations",
                gauge(totals.bytes),
            );
            let _ = prometheus_text::encode(&mut out, &queue);
        }
        out
    }
}

/// The health check's path on the metrics listener: 200 while the store
/// answers, 503 when it does not.
pub const HEALTH_PATH: &str = "/health";

/// Answers one request on the metrics listener: `GET /metrics` is the
/// exposition, with the queue totals read from `store` now; `GET /health`
/// is 200 `ok` when that read works, else 503; HEAD answers as GET without
/// the body; other paths are 404, other methods 405. The read runs on
/// `storage`, the pool of the relay's storage calls.
pub(crate) async fn handle_scrape(
    storage: &ThreadPool,
    metrics: &Metrics,
    store: &Arc<dyn QueueStore>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path != METRICS_PATH && path != HEALTH_PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    // HEAD as well, for health checks that use it (hyper sends no body).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let health = req.uri().path() == HEALTH_PATH;
    let store = Arc::clone(store);
    let totals = match storage.run(move || store.totals()).await {
        Ok(Ok(totals)) => Some(totals),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue totals");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: reading the queue totals failed");
            None
        }
    };
    if health {
        // Healthy: the store answers (the same read a scrape makes).
        return Ok(match totals {
            Some(_) => plain(StatusCode::OK, "ok\n"),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer\n",
            ),
        });
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(metrics.encode(totals))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    Ok(response)
}

fn plain(status: StatusCode, body: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::EntryId;

    #[test]
    fn endpoints_are_classified_as_the_core_routes_them() {
        for (method, target, want) in [
            (
                "PUT",
                "/_matrix/federation/v1/send_relay/t/%40a%3Ad.example",
                RouteLabel::SendRelay,
            ),
            (
                "GET",
                "/_matrix/federation/v1/relay_txn/@a:d.example",
                RouteLabel::RelayTxn,
            ),
            (
                "POST",
                "/_matrix/federation/unstable/org.matrix_relay/relay_txns/@a:d.example",
                RouteLabel::RelayTxns,
            ),
            ("GET", "/_matrix/key/v2/server", RouteLabel::Keys),
            ("GET", "/_matrix/federation/v1/version", RouteLabel::Version),
            (
                "GET",
                "/_matrix/federation/v1/send_relay/t/@a:d.example",
                RouteLabel::Other,
            ),
            ("GET", "/metrics", RouteLabel::Other),
            ("GET", "/", RouteLabel::Other),
        ] {
            assert_eq!(RouteLabel::of(method, target), want, "{method} {target}");
        }
    }

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new();
        m.observe_request(RouteLabel::SendRelay, 200, Duration::from_millis(3));
        m.observe_request(RouteLabel::SendRelay, 200, Duration::from_millis(5));
        m.observe_request(RouteLabel::RelayTxn, 403, Duration::from_millis(1));
        m.observe_insert(&InsertOutcome::Stored(EntryId(1)));
        m.observe_insert(&InsertOutcome::Duplicate(EntryId(1)));
        m.observe_insert(&InsertOutcome::AlreadyDelivered);
        m.observe_insert(&InsertOutcome::QuotaExceeded(
            relay_core::store::QuotaKind::Total,
        ));
        m.observe_acknowledgement();
        m.observe_expired(2);
        m.observe_expired(1);
        m.set_long_polls_waiting(4);
        let text = m.encode(Some(QueueTotals {
            entries: 2,
            bytes: 300,
        }));
        for line in [
            "# TYPE matrix_relay_requests_total counter",
            r#"matrix_relay_requests_total{endpoint="send_relay",status="200"} 2"#,
            r#"matrix_relay_requests_total{endpoint="relay_txn",status="403"} 1"#,
            "# TYPE matrix_relay_request_duration_seconds histogram",
            r#"matrix_relay_request_duration_seconds_count{endpoint="send_relay"} 2"#,
            r#"matrix_relay_request_duration_seconds_bucket{endpoint="send_relay",le="0.004"} 1"#,
            "matrix_relay_transactions_stored_total 1",
            "matrix_relay_duplicates_answered_total 2",
            "matrix_relay_acknowledgements_total 1",
            "matrix_relay_entries_expired_total 3",
            "# TYPE matrix_relay_long_polls_waiting gauge",
            "matrix_relay_long_polls_waiting 4",
            "# TYPE matrix_relay_queued_entries gauge",
            "matrix_relay_queued_entries 2",
            "matrix_relay_queued_bytes 300",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "not OpenMetrics:\n{text}");
    }

    #[test]
    fn gauges_are_left_out_when_the_store_cannot_be_read() {
        let text = Metrics::new().encode(None);
        assert!(text.contains("matrix_relay_transactions_stored_total 0"));
        assert!(!text.contains("queued_"), "{text}");
    }
}
