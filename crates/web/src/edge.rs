//! The edge middleware every request passes through first and leaves last:
//!
//! - gives the request an id (the client's `X-Request-Id` when it is sane,
//!   else a new UUID), echoes it on the response and puts it on every log line
//!   of the request through a tracing span;
//! - turns any error answer that is not yet a problem (unknown routes, wrong
//!   methods, actix's own refusals, errors raised by inner middleware) into
//!   `application/problem+json`;
//! - answers a handler panic with a 500 problem instead of a dropped connection;
//! - refuses a request head over the limits before any handler runs: a URI
//!   over [`MAX_URI_BYTES`] (`414`), a header value over
//!   [`MAX_HEADER_VALUE_BYTES`] or all headers over [`MAX_HEADER_BYTES`]
//!   (`431`), both as `REQUEST_TOO_LARGE` problems. (actix itself closes a
//!   connection whose head passes 128 KiB or 96 headers, with a bare 431.)
//! - logs one line per request with method, route, status and latency, and
//!   counts it in the HTTP metrics (by route pattern, never the raw path).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _, web};
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::problem::{ApiError, PROBLEM_JSON};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The longest single header value accepted.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) one request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Why a request head is refused, if it is.
fn head_refusal(req: &ServiceRequest) -> Option<ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(ApiError::request_too_large(
            StatusCode::URI_TOO_LONG,
            format!("the request target must not exceed {MAX_URI_BYTES} bytes"),
        ));
    }
    let mut total = 0;
    for (name, value) in req.headers() {
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Some(ApiError::request_too_large(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("a header value must not exceed {MAX_HEADER_VALUE_BYTES} bytes"),
            ));
        }
        total += name.as_str().len() + value.len();
    }
    (total > MAX_HEADER_BYTES).then(|| {
        ApiError::request_too_large(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the headers must not exceed {MAX_HEADER_BYTES} bytes in all"),
        )
    })
}

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
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let span =
        tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());

    let res = if let Some(refusal) = head_refusal(&req) {
        req.into_response(refusal.error_response())
    } else {
        serve(req, next, &span, &id).await?
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
    let seconds = started.elapsed().as_secs_f64();
    if let Some(metrics) = &metrics {
        metrics.observe_request(method.as_str(), &route, status, seconds);
    }
    let latency_ms = seconds * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(%route, status, latency_ms, "request failed");
        } else {
            tracing::info!(%route, status, latency_ms, "request completed");
        }
    });
    Ok(res)
}

/// Runs the inner services, turning their failures and panics into problems.
async fn serve(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    span: &tracing::Span,
    id: &str,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let outcome = AssertUnwindSafe(next.call(req).instrument(span.clone()))
        .catch_unwind()
        .await;
    Ok(match outcome {
        Ok(Ok(res)) => res.map_into_boxed_body(),
        // Only an inner middleware can fail here (handlers and extractors
        // answer with responses). The request is gone, so answer through an
        // error whose response is already the problem, with our request id.
        Ok(Err(err)) => {
            let status = err.as_response_error().status_code();
            span.in_scope(|| tracing::error!(status = status.as_u16(), error = %err, "request failed in middleware"));
            return Err(problem_error(status, id, err.to_string()));
        }
        // A bug panicked while serving this request: answer 500 like any
        // other error instead of dropping the connection, and log it.
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            span.in_scope(|| tracing::error!(panic = %message, "request handler panicked"));
            return Err(problem_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                id,
                "handler panicked".to_owned(),
            ));
        }
    })
}

/// An error whose response is the problem for `status`, carrying the request id.
fn problem_error(status: StatusCode, id: &str, cause: String) -> actix_web::Error {
    let mut problem = ApiError::from_status(status).error_response();
    if let Ok(value) = HeaderValue::from_str(id) {
        problem.headers_mut().insert(X_REQUEST_ID, value);
    }
    actix_web::error::InternalError::from_response(cause, problem).into()
}

/// Marks a response whose error body is already in the shape its route
/// promises (the first-generation envelope), so it is not turned into a
/// problem.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorBody;

fn needs_problem_body(res: &ServiceResponse<BoxBody>) -> bool {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    if res.response().extensions().get::<OwnErrorBody>().is_some() {
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

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_answers_a_500_problem_with_the_request_id() {
        let app = test::init_service(App::new().wrap(from_fn(edge)).route(
            "/boom",
            web::get().to(|| async {
                if true {
                    panic!("a bug");
                }
                HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let req = test::TestRequest::get()
            .uri("/boom")
            .insert_header(("x-request-id", "req-1"))
            .to_request();

        let err = test::try_call_service(&app, req)
            .await
            .expect_err("answered as an error");
        let res = err.error_response();

        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(PROBLEM_JSON.as_bytes())
        );
        assert_eq!(
            res.headers().get(X_REQUEST_ID).map(|v| v.as_bytes()),
            Some(&b"req-1"[..])
        );
        let body = actix_web::body::to_bytes(res.into_body())
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("INTERNAL_ERROR") && !text.contains("a bug"),
            "{text}"
        );
    }

    #[actix_web::test]
    async fn plain_error_responses_become_problems() {
        let app = test::init_service(App::new().wrap(from_fn(edge)).route(
            "/teapot",
            web::get().to(|| async { HttpResponse::ImATeapot().body("short and stout") }),
        ))
        .await;

        let res =
            test::call_service(&app, test::TestRequest::get().uri("/teapot").to_request()).await;

        assert_eq!(res.status().as_u16(), 418);
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(PROBLEM_JSON.as_bytes())
        );
        let body = test::read_body(res).await;
        assert!(!String::from_utf8_lossy(&body).contains("stout"));
    }
}
