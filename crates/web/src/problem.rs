//! RFC 9457 problem details: the one shape of every error this service sends.
//!
//! `ApiError` is what handlers and extractors return. It carries the HTTP
//! status, the stable UPPER_SNAKE `code` that clients switch on, a short
//! `title`, a human `detail`, and optional extra members (`productId`, …).
//! It never carries internals: causes are logged, not sent.

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of every error answer as the OpenAPI document names it
/// (`Problem`). [`ApiError`] renders these members; a test below holds the
/// two together.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Problem,
    description = "An RFC 9457 problem (`application/problem+json`) with a stable UPPER_SNAKE `code`. Some problems carry more members."
)]
#[serde(rename_all = "camelCase")]
pub struct ProblemSchema {
    /// Always `about:blank`: the `code` tells problems apart.
    #[serde(rename = "type")]
    #[schema(example = "about:blank", nullable = false)]
    pub problem_type: Option<String>,
    /// A short summary of the problem kind.
    #[schema(example = "Out of stock")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 409)]
    pub status: u16,
    /// The stable UPPER_SNAKE machine code clients switch on.
    #[schema(example = "OUT_OF_STOCK")]
    pub code: String,
    /// What went wrong, for a human; never internals.
    #[schema(example = "product 7 does not have enough stock")]
    pub detail: String,
    /// The offending field of a `VALIDATION_FAILED` (or `INVALID_CHARGE_AMOUNT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The product of `OUT_OF_STOCK`, `PRODUCT_NOT_FOUND` and the investment problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub product_id: Option<i64>,
    /// What can still be invested, on `AMOUNT_EXCEEDS_REMAINING` and `SOLD_OUT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub remaining_amount: Option<i64>,
    /// Other members some problems carry (`min`, `max`, `maxBalance`, `checks`).
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, Value>,
}

/// An error answer: status, stable code, and a safe, human detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a member to the problem body (for example `productId`).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header (for example `WWW-Authenticate`).
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The offending field of a `VALIDATION_FAILED`, when one is named.
    pub fn field(&self) -> Option<&str> {
        self.extra.get("field").and_then(Value::as_str)
    }

    /// What went wrong, for a person.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The same problem under another code and title.
    #[must_use]
    pub fn with_code(mut self, code: &'static str, title: &'static str) -> Self {
        self.code = code;
        self.title = title;
        self
    }

    /// The problem as it is stored for an idempotent replay.
    pub fn to_stored(&self) -> domain::idempotency::StoredResponse {
        domain::idempotency::StoredResponse {
            status: self.status.as_u16(),
            content_type: PROBLEM_JSON.to_owned(),
            body: self.body().to_string().into_bytes(),
        }
    }

    /// `400 VALIDATION_FAILED` naming the offending field.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "Validation failed",
            format!("{field}: {message}"),
        )
        .with("field", field)
    }

    /// `400 VALIDATION_FAILED` for a body or parameter that cannot be read.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "Validation failed",
            detail,
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            format!("the request body must not exceed {limit} bytes"),
        )
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Unauthenticated",
            detail,
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "Forbidden",
            "this endpoint is for administrators",
        )
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, "Not found", detail)
    }

    pub fn conflict(code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, title, detail)
    }

    /// `503 SERVICE_UNAVAILABLE`: a backing service failed; retry later.
    pub fn unavailable(service: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service unavailable",
            format!("a backing service ({service}) is unavailable; retry later"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// `503 SERVICE_UNAVAILABLE`: too many requests of this kind in flight
    /// on this instance (`admission`). The request was shed before it ran,
    /// so nothing of it is stored and a retry with the same key is safe.
    pub fn overloaded(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service unavailable",
            format!(
                "too many {what} in progress; this request was not run, so retrying it \
                 (with the same Idempotency-Key) is safe; retry after 1 s"
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// `429 RATE_LIMITED`: over a quota; `Retry-After` says when the next
    /// attempt is admitted (whole seconds, rounded up, at least 1).
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Too many requests",
            format!("too many attempts; retry after {secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// `431 REQUEST_TOO_LARGE` (or `414` for the URI): the request head is over a limit.
    pub fn request_too_large(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(status, "REQUEST_TOO_LARGE", "Request too large", detail)
    }

    /// `500 INTERNAL_ERROR`: a bug. The cause is logged by the caller.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal error",
            "the request could not be completed",
        )
    }

    /// The generic problem for a status that no handler described (unknown
    /// routes, wrong methods, actix's own refusals).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, title, detail) = match status {
            StatusCode::NOT_FOUND => ("NOT_FOUND", "Not found", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
                "this resource does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "PAYLOAD_TOO_LARGE",
                "Payload too large",
                "the request is too large",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "UNSUPPORTED_MEDIA_TYPE",
                "Unsupported media type",
                "this content type is not accepted here",
            ),
            StatusCode::UNAUTHORIZED => (
                "UNAUTHENTICATED",
                "Unauthenticated",
                "authentication is required",
            ),
            StatusCode::FORBIDDEN => ("FORBIDDEN", "Forbidden", "not allowed"),
            StatusCode::SERVICE_UNAVAILABLE => {
                ("SERVICE_UNAVAILABLE", "Service unavailable", "retry later")
            }
            s if s.is_server_error() => (
                "INTERNAL_ERROR",
                "Internal error",
                "the request could not be completed",
            ),
            s if s == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                || s == StatusCode::URI_TOO_LONG =>
            {
                (
                    "REQUEST_TOO_LARGE",
                    "Request too large",
                    "the request line or headers are too large",
                )
            }
            StatusCode::BAD_REQUEST => (
                "VALIDATION_FAILED",
                "Validation failed",
                "the request could not be understood",
            ),
            _ => (
                "BAD_REQUEST",
                "Bad request",
                "the request could not be understood",
            ),
        };
        Self::new(status, code, title, detail)
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        for (name, value) in &self.headers {
            res.insert_header((name.clone(), value.clone()));
        }
        res.body(self.body().to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    #[test]
    fn the_documented_problem_has_the_members_every_problem_renders() {
        let body = ApiError::forbidden().body();
        let rendered: Vec<&str> = body
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let schema = serde_json::to_value(<ProblemSchema as utoipa::PartialSchema>::schema())
            .expect("schema");
        let properties = schema["properties"].as_object().expect("properties");
        for member in &rendered {
            assert!(properties.contains_key(*member), "{member} is undocumented");
        }
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        let mut always: Vec<&str> = rendered.into_iter().filter(|m| *m != "type").collect();
        always.sort_unstable();
        assert_eq!(required, always);
    }

    #[actix_web::test]
    async fn renders_rfc9457_with_code_and_extra_members() {
        let err = ApiError::conflict("OUT_OF_STOCK", "Out of stock", "product 7 is sold out")
            .with("productId", 7);

        let res = err.error_response();

        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(PROBLEM_JSON.as_bytes())
        );
        let body: Value =
            serde_json::from_slice(&to_bytes(res.into_body()).await.expect("body")).expect("json");
        assert_eq!(body["status"], 409);
        assert_eq!(body["code"], "OUT_OF_STOCK");
        assert_eq!(body["productId"], 7);
        assert_eq!(body["detail"], "product 7 is sold out");
    }
}
