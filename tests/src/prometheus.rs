//! Reading the relay's `/metrics` (Prometheus text format) by series.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::http::Request;

/// Every sample of one scrape of `GET /metrics` at `addr`, by its series
/// (name and labels as written); panics unless it is a 200 of samples in
/// the Prometheus text format (`text/plain; version=0.0.4`, not
/// OpenMetrics).
#[track_caller]
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let resp = Request::new("GET", "/metrics").send(addr);
    resp.assert_status(200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Prometheus text format expected:\n{resp:?}"
    );
    let text = resp.text();
    assert!(!text.contains("# EOF"), "not OpenMetrics:\n{text}");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?} in:\n{text}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}:\n{text}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The value of `series` in `samples`; panics, listing them, if absent.
#[track_caller]
pub fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}
