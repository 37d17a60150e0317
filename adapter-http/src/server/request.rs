//! One federation request: its head to the driver, its body read (and
//! checked, on this connection's task) only if the driver asks for it, its
//! [`Response`] back out as HTTP.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER,
};
use relay_core::relay::{RequestHead, Response};
use relay_core::{ErrCode, Instant, MatrixError};

use super::limits::{BodyBudget, HeldBody};
use crate::Runtime;
use crate::drive::relay::{DriverHandle, HeadReply};
use crate::metrics::{Metrics, RouteLabel};
use crate::task::timeout;

/// The header a reverse proxy names the client in.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers one federation request from the connection's `peer`, and
/// counts it.
pub(super) async fn handle_http<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    metrics: &Metrics,
    budget: &BodyBudget,
    (peer, req): (IpAddr, hyper::Request<Incoming>),
) -> hyper::Response<HeldBody> {
    let started = Instant::now();
    let route = RouteLabel::of(req.method().as_str(), req.uri().path());
    let response = answer(rt, driver, budget, peer, req).await;
    // A large answer holds room in the budget until it is written.
    let response = match budget.hold_answer(rt, body_len(&response)).await {
        Ok(permit) => response.map(|body| HeldBody::new(body, permit)),
        Err(busy) => busy.map(|body| HeldBody::new(body, None)),
    };
    metrics.observe_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// The length of an answer's body.
fn body_len(response: &hyper::Response<Full<Bytes>>) -> usize {
    let hint = response.body().size_hint();
    usize::try_from(hint.exact().unwrap_or(hint.lower())).unwrap_or(usize::MAX)
}

async fn answer<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    budget: &BodyBudget,
    peer: IpAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let head = request_head(&parts, peer);
    let method_and_target = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| format!("{} {}", head.method, head.target));
    // A body not read to its end is left unread: the connection closes
    // after the answer, rather than reading a stranger's body to reuse it.
    let unread = !body.is_end_stream();
    let (limit, check) = match driver.head(head).await {
        Some(HeadReply::ReadBody { limit, check }) => (limit, check),
        Some(HeadReply::Respond(response)) => {
            return answered(response, unread, method_and_target.as_deref());
        }
        None => return shutting_down(unread),
    };
    // Room for the body before any of it is read, kept until the answer:
    // only a request whose sender is known gets this far.
    let _room = match budget.reserve(rt, &body, limit).await {
        Ok(room) => room,
        Err(busy) => return busy,
    };
    // The check is pure work in proportion to the body: it runs here, on
    // this connection's task, so bodies are checked on every executor
    // thread at once while the driver's task stays free.
    let checked = match timeout(rt, BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Some(Ok(collected)) => check.run(&collected.to_bytes()),
        Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let response = driver.body(check.too_large()).await;
            return match response {
                Some(response) => answered(response, true, method_and_target.as_deref()),
                None => shutting_down(true),
            };
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "reading the body failed");
            let response = error_response(ErrCode::BadJson, "the request body could not be read");
            return closing(response, true);
        }
        None => {
            let response = error_response(ErrCode::BadJson, "the request body took too long");
            return closing(response, true);
        }
    };
    match driver.body(checked).await {
        Some(response) => answered(response, false, method_and_target.as_deref()),
        None => shutting_down(false),
    }
}

/// The head of a request as the core reads it, from the connection's
/// `peer` and the request's `parts`.
fn request_head(parts: &hyper::http::request::Parts, peer: IpAddr) -> RequestHead {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let authorization = parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Every value, even one that is not text: the core reads it only from
    // a trusted proxy, and then only its right-most entries.
    let forwarded_for = parts
        .headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    RequestHead {
        method: parts.method.as_str().to_owned(),
        target,
        authorization,
        content_length,
        peer,
        forwarded_for,
    }
}

/// The HTTP answer for `response`, logged; `unread` closes the connection.
fn answered(
    response: Response,
    unread: bool,
    method_and_target: Option<&str>,
) -> hyper::Response<Full<Bytes>> {
    if response.status >= 500 {
        tracing::warn!(status = response.status, body = %String::from_utf8_lossy(&response.body), "request failed");
    }
    if let Some(line) = method_and_target {
        tracing::debug!(status = response.status, "{line}");
    }
    closing(to_http(response), unread)
}

fn shutting_down(unread: bool) -> hyper::Response<Full<Bytes>> {
    closing(
        error_response(ErrCode::Unknown, "the relay is shutting down"),
        unread,
    )
}

/// `http`, with `Connection: close` if `close`.
fn closing(mut http: hyper::Response<Full<Bytes>>, close: bool) -> hyper::Response<Full<Bytes>> {
    if close {
        http.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    http
}

fn error_response(code: ErrCode, message: &str) -> hyper::Response<Full<Bytes>> {
    to_http(Response::error(&MatrixError::new(code, message)))
}

fn to_http(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut http = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *http.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = http.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = response.retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    http
}
