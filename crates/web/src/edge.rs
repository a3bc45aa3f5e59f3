//! The edge middleware every request passes through first and leaves last:
//!
//! - gives the request an id (the client's `X-Request-Id` when it is sane,
//!   else a new UUID), echoes it on the response and puts it on every log line
//!   of the request through a tracing span;
//! - turns any error answer that is not yet a problem (unknown routes, wrong
//!   methods, actix's own refusals, errors raised by inner middleware) into
//!   `application/problem+json`;
//! - logs one line per request with method, route, status and latency.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _};
use tracing::Instrument as _;

use crate::problem::{ApiError, PROBLEM_JSON};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client-given id is echoed only when it is 1..=128 visible ASCII characters.
fn client_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(X_REQUEST_ID)?.to_str().ok()?;
    let ok = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

/// The middleware function; wrap it with `actix_web::middleware::from_fn`.
///
/// # Errors
/// Never: errors from inner services are turned into problem responses.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let span =
        tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());

    let res = match next.call(req).instrument(span.clone()).await {
        Ok(res) => res.map_into_boxed_body(),
        // Only an inner middleware can fail here (handlers and extractors
        // answer with responses). The request is gone, so answer through an
        // error whose response is already the problem, with our request id.
        Err(err) => {
            let status = err.as_response_error().status_code();
            span.in_scope(|| tracing::error!(status = status.as_u16(), error = %err, "request failed in middleware"));
            let mut problem = ApiError::from_status(status).error_response();
            if let Ok(value) = HeaderValue::from_str(&id) {
                problem.headers_mut().insert(X_REQUEST_ID, value);
            }
            return Err(
                actix_web::error::InternalError::from_response(err.to_string(), problem).into(),
            );
        }
    };
    let mut res = if needs_problem_body(&res) {
        into_problem(res)
    } else {
        res
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID, value);
    }

    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(%route, status, latency_ms, "request failed");
        } else {
            tracing::info!(%route, status, latency_ms, "request completed");
        }
    });
    Ok(res)
}

fn needs_problem_body(res: &ServiceResponse<BoxBody>) -> bool {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    content_type != Some(PROBLEM_JSON)
}

fn into_problem(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    // Keep headers such as `Allow` on 405.
    let allow = res.headers().get(header::ALLOW).cloned();
    let (req, _) = res.into_parts();
    let mut problem = ApiError::from_status(status).error_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    ServiceResponse::new(req, problem)
}
