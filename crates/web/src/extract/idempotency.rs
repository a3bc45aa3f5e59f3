//! `IdempotentJson<T>`: the body of an idempotent write, with its
//! `Idempotency-Key` and the fingerprint that recognises the same request
//! when the key comes again.
//!
//! The fingerprint is a SHA-256 of the method, the path with its query, and
//! the body in canonical form (object keys sorted, no insignificant white
//! space), so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same request.

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use domain::idempotency::{Fingerprint, IdempotencyKey, Render, StoredResponse, Written};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::json::{parse, read_body, whole_numbers_as_integers};
use crate::problem::ApiError;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The `Idempotency-Key` request header, for the OpenAPI document of the
/// idempotent writes ([`IdempotentJson`] reads it).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// 1 to 128 visible ASCII characters, unique per intended write and
    /// scoped to the caller. A repeat with the same body replays the first
    /// answer; with another body it is `422 IDEMPOTENCY_KEY_REUSED`.
    /// (Each operation's example key is set by `openapi::RequestRules`.)
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 128,
        pattern = "^[\\x21-\\x7E]+$"
    )]
    pub idempotency_key: String,
}

/// A write's body, key and fingerprint.
#[derive(Debug)]
pub struct IdempotentJson<T> {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub body: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for IdempotentJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let key = idempotency_key(req);
        let method = req.method().clone();
        let target = match req.query_string() {
            "" => req.path().to_owned(),
            query => format!("{}?{query}", req.path()),
        };
        let body = read_body(req, payload);
        Box::pin(async move {
            let key = key?;
            let raw = body.await?;
            // `354.0` and `354` are one request: the fingerprint reads the
            // integers `parse` reads.
            let bytes = whole_numbers_as_integers(&raw);
            let parsed: T = parse(&bytes)?;
            // `parse` accepted it, so it is JSON.
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Self {
                key,
                fingerprint: fingerprint(&method, &target, &value),
                body: parsed,
            })
        })
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<IdempotencyKey, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Err(key_required());
    };
    if value.is_empty() {
        return Err(key_required());
    }
    // Bytes outside visible ASCII fail `to_str` or `parse`: invalid, not missing.
    let invalid = |e: &dyn std::fmt::Display| ApiError::invalid_field("Idempotency-Key", e);
    let text = value
        .to_str()
        .map_err(|_| invalid(&domain::idempotency::InvalidIdempotencyKey))?;
    IdempotencyKey::parse(text).map_err(|e| invalid(&e))
}

fn key_required() -> ApiError {
    ApiError::validation(
        "this write needs an Idempotency-Key header (1 to 128 visible ASCII characters)",
    )
    .with_code("IDEMPOTENCY_KEY_REQUIRED", "Idempotency key required")
}

/// The fingerprint of a write that is not read through [`IdempotentJson`]
/// (the first-generation routes): the same digest of method, target and
/// canonical body.
pub fn fingerprint_of(method: &Method, target: &str, body: &Value) -> Fingerprint {
    fingerprint(method, target, body)
}

fn fingerprint(method: &Method, target: &str, body: &Value) -> Fingerprint {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(target.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    Fingerprint::new(hex::encode(hasher.finalize()))
}

/// JSON with object keys sorted at every level, whatever the map type.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The stored-response renderer for a write: `ok` makes the success body,
/// `err` the problem for a business refusal. Runs inside the store's
/// transaction, so the bytes sent are exactly the bytes stored.
pub fn render<T: 'static, E: 'static>(
    ok_status: StatusCode,
    ok: impl Fn(&T) -> Value + Send + Sync + 'static,
    err: impl Fn(&E) -> ApiError + Send + Sync + 'static,
) -> Render<T, E> {
    std::sync::Arc::new(move |result: &Result<T, E>| match result {
        Ok(value) => StoredResponse {
            status: ok_status.as_u16(),
            content_type: "application/json".to_owned(),
            body: ok(value).to_string().into_bytes(),
        },
        Err(e) => err(e).to_stored(),
    })
}

/// The answer to an idempotent write (charge, order, investment) that a
/// backing service failed: `503`, saying what a 503 cannot know. The
/// failure may come after the effect committed (a timeout while Postgres
/// commits, or an order's wait for its lane ending while its batch runs),
/// so the outcome is unknown; a retry with the same key is always right: it
/// runs the write if it did not happen and answers it if it did.
pub fn write_failed(err: domain::error::Unavailable) -> ApiError {
    let service = err.service();
    let generic = ApiError::from(err);
    ApiError::new(
        generic.status(),
        "SERVICE_UNAVAILABLE",
        "Service unavailable",
        format!(
            "a backing service ({service}) did not answer in time: the outcome is unknown; \
             retry with the same Idempotency-Key, which runs the write if it did not happen \
             and answers it if it did"
        ),
    )
    .with_header(
        actix_web::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    )
}

/// The HTTP answer for what became of an idempotent write.
///
/// # Errors
/// `422 IDEMPOTENCY_KEY_REUSED` or `409 IDEMPOTENCY_IN_PROGRESS`.
pub fn respond<T, E>(written: Written<T, E>) -> Result<HttpResponse, ApiError> {
    let (stored, replayed) = match written {
        Written::Executed { response, .. } => (response, false),
        Written::Replayed(stored) => (stored, true),
        Written::KeyReused => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request",
            ));
        }
        Written::InProgress => {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "Idempotent request in progress",
                "a request with this Idempotency-Key is still running; retry shortly",
            )
            .with_header(
                actix_web::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            ));
        }
    };
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::build(status);
    res.content_type(stored.content_type);
    if replayed {
        res.insert_header((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
    }
    Ok(res.body(stored.body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_and_white_space() {
        let a = fingerprint(
            &Method::POST,
            "/p",
            &json!({"a": 1, "b": {"y": [1, 2], "x": "s"}}),
        );
        let b: Value =
            serde_json::from_str(r#"{ "b": {"x":"s", "y":[1,2]}, "a": 1 }"#).expect("json");
        assert_eq!(a, fingerprint(&Method::POST, "/p", &b));
    }

    #[test]
    fn the_fingerprint_changes_with_method_path_and_values() {
        let base = fingerprint(&Method::POST, "/p", &json!({"amount": 1000}));
        assert_ne!(
            base,
            fingerprint(&Method::POST, "/p", &json!({"amount": 1001}))
        );
        assert_ne!(
            base,
            fingerprint(&Method::POST, "/q", &json!({"amount": 1000}))
        );
        assert_ne!(
            base,
            fingerprint(&Method::PUT, "/p", &json!({"amount": 1000}))
        );
        assert_ne!(
            base,
            fingerprint(&Method::POST, "/p", &json!({"amount": [1000]}))
        );
    }
}
