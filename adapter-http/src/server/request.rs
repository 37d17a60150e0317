//! One federation request: HTTP in, a core [`Request`] to the driver, its
//! [`Response`] back out as HTTP.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use relay_core::relay::{Request, RequestBody, Response};
use relay_core::{ErrCode, Instant, MatrixError};

use super::limits::BodyBudget;
use crate::Runtime;
use crate::drive::relay::DriverHandle;
use crate::metrics::{Metrics, RouteLabel};
use crate::task::timeout;

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers one federation request, and counts it.
pub(super) async fn handle_http<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    metrics: &Metrics,
    budget: &BodyBudget,
    req: hyper::Request<Incoming>,
    max_body: usize,
) -> hyper::Response<Full<Bytes>> {
    let started = Instant::now();
    let route = RouteLabel::of(req.method().as_str(), req.uri().path());
    let response = answer(rt, driver, budget, req, max_body).await;
    metrics.observe_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn answer<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    budget: &BodyBudget,
    req: hyper::Request<Incoming>,
    max_body: usize,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
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
    let declared_too_large = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > max_body as u64);
    // Room for the body before any of it is read, kept until the answer.
    let _room = match budget.reserve(rt, &body, max_body).await {
        Ok(room) => room,
        Err(busy) => return busy,
    };
    let body = if declared_too_large {
        RequestBody::TooLarge
    } else {
        match timeout(rt, BODY_TIMEOUT, Limited::new(body, max_body).collect()).await {
            Some(Ok(collected)) => RequestBody::Complete(collected.to_bytes().to_vec()),
            Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => RequestBody::TooLarge,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading the body failed");
                return error_response(ErrCode::BadJson, "the request body could not be read");
            }
            None => return error_response(ErrCode::BadJson, "the request body took too long"),
        }
    };
    let method = parts.method.as_str().to_owned();
    let request = Request {
        method,
        target,
        authorization,
        body,
    };
    let method_and_target = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| format!("{} {}", request.method, request.target));
    let Some(response) = driver.submit(request).await else {
        return error_response(ErrCode::Unknown, "the relay is shutting down");
    };
    if response.status >= 500 {
        tracing::warn!(status = response.status, body = %String::from_utf8_lossy(&response.body), "request failed");
    }
    if let Some(line) = method_and_target {
        tracing::debug!(status = response.status, "{line}");
    }
    to_http(response)
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
