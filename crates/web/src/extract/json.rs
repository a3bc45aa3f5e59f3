//! `Json<T>`: a JSON body extractor whose errors name the offending field.
//!
//! actix's own `web::Json` reports "Json deserialize error" without saying
//! where; clients need `items[2].quantity: invalid type …`. This one reads the
//! body up to a limit (413 beyond it), then deserializes through
//! `serde_path_to_error` so every 400 names the field. Bodies nesting deeper
//! than [`MAX_DEPTH`] are refused before any parsing (none of ours needs more
//! than four levels; serde_json alone would recurse to 128).
//!
//! A number written with a fraction or an exponent whose value is a whole
//! number (`354.0`, `3.54e2`) is read as that integer, as JSON Schema reads
//! it (`type: integer` admits `1.0`), so an integer field takes it; the
//! reading is exact, done on the digits, never through a float.

use std::borrow::Cow;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The largest JSON body accepted, in bytes. Put it in the app data to change
/// the default of 64 KiB.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

impl Default for JsonLimit {
    fn default() -> Self {
        Self(64 * 1024)
    }
}

/// The deepest nesting of arrays and objects accepted in a JSON body.
pub const MAX_DEPTH: usize = 32;

/// The bytes of `body` outside JSON strings, with their offsets (a string's
/// quotes and contents are skipped), read without parsing.
fn outside_strings(body: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    body.iter().enumerate().filter_map(move |(i, &b)| {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            return None;
        }
        if b == b'"' {
            in_string = true;
            return None;
        }
        Some((i, b))
    })
}

/// Whether `body` nests arrays and objects deeper than `max`, read without
/// parsing (brackets inside strings do not count).
fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    for (_, b) in outside_strings(body) {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A deserialized JSON body.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move { parse(&body.await?).map(Json) })
    }
}

/// Reads a JSON request body: checks the content type (415 for anything but
/// JSON; none at all is accepted), and refuses bodies over the [`JsonLimit`]
/// with 413, from `Content-Length` when given, else while reading.
pub(crate) fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<BytesMut, ApiError>> {
    let limit = req.app_data::<JsonLimit>().copied().unwrap_or_default().0;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut payload = payload.take();
    Box::pin(async move {
        if let Some(ct) = content_type {
            let essence = ct.split(';').next().unwrap_or("").trim().to_owned();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "Unsupported media type",
                    "the body must be application/json",
                ));
            }
        }
        if declared_len.is_some_and(|len| len > limit) {
            return Err(ApiError::payload_too_large(limit));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::validation("the request body could not be read"))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
}

/// Deserializes `body`, naming the field that failed.
///
/// # Errors
/// `400 VALIDATION_FAILED` with the JSON path of the problem in `detail` and `field`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::validation("a JSON body is required"));
    }
    // Every request body of this API is an object; serde would also accept an
    // array for a struct, which no client means.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(ApiError::validation("the body must be a JSON object"));
        }
        _ => {}
    }
    if nests_deeper_than(body, MAX_DEPTH) {
        return Err(ApiError::validation(format!(
            "the JSON body nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let body = whole_numbers_as_integers(body);
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::validation(format!(
                "malformed JSON at line {} column {}",
                inner.line(),
                inner.column()
            ))
        } else if let Some(unknown) = unknown_field(&path, &inner.to_string()) {
            // A field the endpoint does not know (a typo, or `stockDelta` sent
            // to a version without it) is named, never ignored.
            ApiError::invalid_field(
                &unknown,
                "unknown field; this body takes only the documented ones",
            )
        } else if path == "." {
            // Missing fields are reported at the parent: serde names them.
            ApiError::validation(client_message(&inner.to_string()))
        } else {
            ApiError::invalid_field(&path, client_message(&inner.to_string()))
        }
    })?;
    de.end()
        .map_err(|_| ApiError::validation("unexpected data after the JSON value"))?;
    Ok(value)
}

/// `body` with every number that is written with a fraction or an exponent
/// but is a whole number within `i64` (`354.0`, `3.54e2`, `-0.0`) rewritten
/// as an integer literal; anything else, strings included, is left as it
/// is. Borrowed when nothing changes (the common case).
pub(crate) fn whole_numbers_as_integers(body: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    // `copied`: what `out` holds of `body`; `next`: where the token just read ends.
    let (mut copied, mut next) = (0, 0);
    for (i, b) in outside_strings(body) {
        if i < next || (b != b'-' && !b.is_ascii_digit()) {
            continue;
        }
        let end = body[i..]
            .iter()
            .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .map_or(body.len(), |n| i + n);
        if let Some(whole) = whole_number(&body[i..end]) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            out.extend_from_slice(&body[copied..i]);
            out.extend_from_slice(whole.to_string().as_bytes());
            copied = end;
        }
        next = end;
    }
    match out {
        None => Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
    }
}

/// The integer a JSON number token denotes, when it has a fraction or an
/// exponent, is a whole number and fits `i64`; `None` for a plain integer
/// literal (serde reads it as it is), a fraction, an overflow or anything
/// that is not a JSON number (serde reports it).
fn whole_number(token: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(token).ok()?;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    if frac.is_none() && exponent.is_none() {
        return None;
    }
    // JSON's grammar: `0` or a digit run without a leading zero, then
    // `.digits`, then `e[+-]digits`.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    if frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let frac = frac.unwrap_or("");
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let magnitude = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits(magnitude) {
                return None;
            }
            // Beyond this every non-zero value overflows or is a fraction.
            if magnitude.len() > 4 {
                return if (int.bytes().chain(frac.bytes())).all(|b| b == b'0') {
                    Some(0)
                } else {
                    None
                };
            }
            e.parse().ok()?
        }
    };
    // The value is `significand × 10^scale`, exactly.
    let significand = format!("{int}{frac}");
    let significand = significand.trim_start_matches('0');
    if significand.is_empty() {
        return Some(0);
    }
    let scale = exponent - i64::try_from(frac.len()).ok()?;
    let integer = if scale >= 0 {
        if significand.len() as i64 + scale > 19 {
            return None;
        }
        let zeros = usize::try_from(scale).ok()?;
        format!("{significand}{}", "0".repeat(zeros))
    } else {
        let cut = usize::try_from(-scale).ok()?;
        if cut > significand.len() {
            return None;
        }
        let (kept, dropped) = significand.split_at(significand.len() - cut);
        if !dropped.bytes().all(|b| b == b'0') {
            return None;
        }
        if kept.is_empty() {
            "0".to_owned()
        } else {
            kept.to_owned()
        }
    };
    let sign = if negative { "-" } else { "" };
    format!("{sign}{integer}").parse().ok()
}

/// The path of the unknown field serde's `message` reports at `path`
/// (`items[0].qty`), if that is what it reports.
fn unknown_field(path: &str, message: &str) -> Option<String> {
    let name = message.strip_prefix("unknown field `")?.split('`').next()?;
    Some(match path {
        "." => name.to_owned(),
        parent if parent.rsplit('.').next() == Some(name) => parent.to_owned(),
        parent => format!("{parent}.{name}"),
    })
}

/// serde's message, made for a client: without serde_json's " at line L
/// column C" suffix, and with our type names ("expected struct ItemBody")
/// replaced by what the client should send ("expected an object").
fn client_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        out.push_str("an object");
        let after = &rest[i + "struct ".len()..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Order {
        login_id: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: u32,
    }

    fn detail(body: &str) -> String {
        let err = parse::<Order>(body.as_bytes()).expect_err("must fail");
        assert_eq!(err.code(), "VALIDATION_FAILED");
        err.to_string()
    }

    #[test]
    fn names_the_field_with_the_wrong_type() {
        let d = detail(r#"{"loginId":"a","items":[{"quantity":"x"}]}"#);
        assert!(d.contains("items[0].quantity"), "{d}");
    }

    #[test]
    fn names_a_missing_field() {
        let d = detail(r#"{"items":[]}"#);
        assert!(d.contains("missing field `loginId`"), "{d}");
    }

    #[test]
    fn nested_type_errors_do_not_name_our_structs() {
        let d = detail(r#"{"loginId":"a","items":["x"]}"#);
        assert!(
            d.contains("items[0]") && d.contains("expected an object"),
            "{d}"
        );
        assert!(!d.contains("Item"), "{d}");
    }

    #[test]
    fn a_body_that_is_not_an_object_says_so_without_internal_names() {
        for body in ["[]", r#"["a", []]"#, "42", r#""text""#, "null"] {
            let d = detail(body);
            assert!(d.contains("must be a JSON object"), "{body}: {d}");
            assert!(!d.contains("Order"), "{body}: {d}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_and_brackets_in_strings_do_not_count() {
        let deep = |n: usize| format!("{{\"loginId\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(detail(&deep(MAX_DEPTH)).contains("nests deeper than 32"));
        // One level less passes the depth check (and fails on its type).
        assert!(!detail(&deep(MAX_DEPTH - 1)).contains("nests deeper"));
        let quoted = format!(
            "{{\"loginId\":\"{}\\\"{}\",\"items\":[]}}",
            "[".repeat(100),
            "{".repeat(100)
        );
        let order: Order = parse(quoted.as_bytes()).expect("brackets in a string are text");
        assert!(order.login_id.starts_with("[[["));
        assert!(nests_deeper_than(&b"[".repeat(100_000), MAX_DEPTH));
    }

    #[test]
    fn whole_numbers_written_with_a_fraction_or_an_exponent_are_integers() {
        for (token, expected) in [
            ("354.0", Some(354)),
            ("354.000", Some(354)),
            ("3.54e2", Some(354)),
            ("3540E-1", Some(354)),
            ("35400e-2", Some(354)),
            ("1e3", Some(1_000)),
            ("1E+3", Some(1_000)),
            ("-12.0", Some(-12)),
            ("-0.0", Some(0)),
            ("0e99999", Some(0)),
            ("9223372036854775807.0", Some(i64::MAX)),
            ("-9223372036854775808.0", Some(i64::MIN)),
            ("9.223372036854775807e18", Some(i64::MAX)),
            // Not whole, out of range, plain integers or not JSON numbers.
            ("354", None),
            ("354.5", None),
            ("1.0000000000000001", None),
            ("1e-1", None),
            ("1e99999", None),
            ("9223372036854775808.0", None),
            ("1e19", None),
            ("1.", None),
            (".5", None),
            ("01.0", None),
            ("1.0e", None),
            ("--1.0", None),
        ] {
            assert_eq!(whole_number(token.as_bytes()), expected, "{token}");
        }
    }

    #[test]
    fn integral_numbers_reach_integer_fields_and_strings_stay_as_they_are() {
        let body = br#"{"loginId":"1.0 and 2e3","items":[{"quantity":3.0},{"quantity":4e0}]}"#;
        let order: Order = parse(body).expect("whole numbers are integers");
        assert_eq!(order.login_id, "1.0 and 2e3");
        let quantities: Vec<u32> = order.items.iter().map(|i| i.quantity).collect();
        assert_eq!(quantities, [3, 4]);
        assert!(
            detail(r#"{"loginId":"a","items":[{"quantity":3.5}]}"#).contains("items[0].quantity")
        );
        let untouched = br#"{"a":[1,-2,"3.0\"4.0"]}"#;
        assert!(matches!(
            whole_numbers_as_integers(untouched),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            whole_numbers_as_integers(br#"{"a":"\\",  "b":-7.00,"c":[1.5e1]}"#).as_ref(),
            br#"{"a":"\\",  "b":-7,"c":[15]}"#
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Strict {
        login_id: String,
        items: Vec<StrictItem>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct StrictItem {
        quantity: u32,
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        for (body, field) in [
            (r#"{"loginId":"a","items":[],"stockDelta":1}"#, "stockDelta"),
            (r#"{"quantitiy":2,"loginId":"a","items":[]}"#, "quantitiy"),
            (
                r#"{"loginId":"a","items":[{"quantity":1,"qty":2}]}"#,
                "items[0].qty",
            ),
        ] {
            let err = parse::<Strict>(body.as_bytes()).expect_err("refused");
            assert_eq!(err.code(), "VALIDATION_FAILED");
            let problem = err.to_string();
            assert!(
                problem.contains(&format!("{field}: unknown field")),
                "{problem}"
            );
            assert_eq!(err.field(), Some(field), "{problem}");
        }
    }

    #[test]
    fn reports_malformed_json_and_trailing_garbage() {
        assert!(detail(r#"{"loginId": "#).contains("malformed JSON"));
        assert!(detail(r#"{"loginId":"a","items":[]} extra"#).contains("unexpected data"));
    }
}
