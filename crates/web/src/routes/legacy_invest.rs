//! The first-generation investment API (shared/API.md, "Investments,
//! first-generation wire format"), on when `APP_LEGACY_INVEST_API=true`: a
//! second driving adapter over the same use cases as `/api/v1`'s
//! investment routes ([`InvestApi`]), with no business logic of its own.
//!
//! - `GET /api/product`, `POST /api/invest`, `GET /api/product/my/invest`.
//! - The caller comes from `X-USER-ID` (a login id, provisioned on first
//!   sight, as in gateway mode), and every request must carry the gateway's
//!   `X-Gateway-Secret`; a header never names an account with a password.
//! - Every answer is an envelope `{result, code, message, data, status}`;
//!   a refusal of the investment itself (`SOLD_OUT`,
//!   `NOT_IN_RECRUITING_PERIOD`) keeps HTTP 200, request errors carry their
//!   status on the response and in the envelope.
//! - `Idempotency-Key` is optional: with one, a retry replays the first
//!   answer (stored as the envelope); without one, each request is a new
//!   investment, as the first generation had it (it gets a key of its own).
//! - Unknown JSON fields are ignored, as the first generation ignored them.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use application::invest::InvestCommand;
use application::throttle::{Attempt, Throttle};
use chrono::{DateTime, Utc};
use domain::idempotency::{IdempotencyKey, IdempotentRequest, StoredResponse};
use domain::identity::Caller;
use domain::invest::{InvestAmount, InvestError, InvestProduct, InvestProductId, MyProductTotal};
use domain::paging::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::admission::{Family, bounded};
use crate::extract::{AuthContext, GatewaySecret, fingerprint_of, respond, write_failed};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::routes::invest::InvestApi;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "investments (first generation)";

/// What the first-generation routes need besides the invest use cases.
#[derive(Debug, Clone)]
pub struct LegacyInvest {
    /// The gateway's shared secret, required on every request here.
    pub secret: GatewaySecret,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/product").route(web::get().to(products)))
        .service(
            web::resource("/api/invest").route(
                web::post()
                    .to(invest)
                    .wrap(bounded(Family::Investments).rendered_by(refused)),
            ),
        )
        .service(web::resource("/api/product/my/invest").route(web::get().to(my_invest)));
}

/// `{result, code, message, data, status}`, as the first generation answered.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LegacyEnvelope)]
pub struct Envelope {
    /// `true` for a success, `false` for a refusal or an error.
    result: bool,
    /// `"01"` for a success, else the refusal's code (`SOLD_OUT`, …).
    code: String,
    message: Option<String>,
    data: Value,
    /// The HTTP status this answer stands for.
    status: u16,
}

fn answer(http: StatusCode, envelope: &Envelope) -> HttpResponse {
    let res = HttpResponse::build(http)
        .content_type("application/json")
        .body(serde_json::to_string(envelope).unwrap_or_default());
    keep_body(res)
}

/// An error answer here is the envelope, never turned into a problem.
fn keep_body(mut res: HttpResponse) -> HttpResponse {
    res.extensions_mut().insert(crate::edge::OwnErrorBody);
    res
}

fn success(data: Value) -> Envelope {
    Envelope {
        result: true,
        code: "01".to_owned(),
        message: None,
        data,
        status: 200,
    }
}

/// The envelope and HTTP status for an error of the `/api/v1` shape.
fn refusal(err: &ApiError) -> (StatusCode, Envelope) {
    let (http, code, message) = match err.code() {
        "SOLD_OUT" | "AMOUNT_EXCEEDS_REMAINING" => (
            StatusCode::OK,
            "SOLD_OUT",
            "Product is sold out : ".to_owned(),
        ),
        "NOT_IN_RECRUITING_PERIOD" => (
            StatusCode::OK,
            "NOT_IN_RECRUITING_PERIOD",
            format!("Product is not recruiting now : {}", err.detail()),
        ),
        "INVEST_PRODUCT_NOT_FOUND" => (
            StatusCode::NOT_FOUND,
            "PRODUCT_NOT_FOUND",
            format!("Product not found : {}", err.detail()),
        ),
        "VALIDATION_FAILED" => (
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("Invalid request : {}", err.detail()),
        ),
        code => (err.status(), code, err.detail().to_owned()),
    };
    (
        http,
        Envelope {
            result: false,
            code: code.to_owned(),
            message: Some(message),
            data: Value::Null,
            status: http.as_u16(),
        },
    )
}

fn refused(err: &ApiError) -> HttpResponse {
    let (http, envelope) = refusal(err);
    let mut res = answer(http, &envelope);
    if http == StatusCode::TOO_MANY_REQUESTS || http == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

fn missing_user() -> HttpResponse {
    answer(
        StatusCode::BAD_REQUEST,
        &Envelope {
            result: false,
            code: "MISSING_X_USER_ID".to_owned(),
            message: Some("Missing X-USER-ID header value : ".to_owned()),
            data: Value::Null,
            status: 400,
        },
    )
}

/// An answer given before the use case runs (boxed: it is large).
type Early = Box<HttpResponse>;

/// The gateway's secret must come with every request here.
fn proven(req: &HttpRequest, legacy: &LegacyInvest) -> Result<(), Early> {
    let ok = req
        .headers()
        .get(crate::extract::GATEWAY_SECRET_HEADER)
        .is_some_and(|v| legacy.secret.matches(v.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(Box::new(refused(&ApiError::unauthenticated(
            "these routes need the gateway's X-Gateway-Secret",
        ))))
    }
}

/// The caller named in `X-USER-ID`, provisioned on first sight.
async fn caller(
    req: &HttpRequest,
    legacy: &LegacyInvest,
    auth: &AuthContext,
) -> Result<Caller, Early> {
    proven(req, legacy)?;
    let login = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Box::new(missing_user()))?;
    auth.authenticate
        .gateway(login)
        .await
        .map_err(|e| Box::new(refused(&ApiError::from(e))))
}

/// `?page=0&size=10`, as the first generation paged (page from 0).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LegacyPage {
    /// The page, from 0.
    #[param(minimum = 0, example = 0)]
    page: Option<u32>,
    /// Rows per page, 1 to 100.
    #[param(minimum = 1, maximum = 100, example = 10)]
    size: Option<u32>,
}

fn page_request(query: &str) -> Result<PageRequest, Early> {
    let invalid = |detail: String| Box::new(refused(&ApiError::validation(detail)));
    let page = web::Query::<LegacyPage>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| invalid(format!("invalid query string: {e}")))?;
    PageRequest::new(page.page, page.size).map_err(|e| invalid(e.to_string()))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, UTC without an offset.
fn first_generation_time(at: DateTime<Utc>) -> String {
    let naive = at.naive_utc();
    if at.timestamp_subsec_micros() == 0 {
        naive.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// A product as the first generation listed it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LegacyProduct)]
#[serde(rename_all = "camelCase")]
struct LegacyProduct {
    product_id: i64,
    title: String,
    total_investing_amount: i64,
    current_investing_amount: i64,
    investing_cnt: i64,
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, UTC without an offset.
    started_at: String,
    finished_at: String,
    /// `ONGOING` or `COMPLETE`.
    invest_status: String,
}

impl From<InvestProduct> for LegacyProduct {
    fn from(p: InvestProduct) -> Self {
        let status = match p.status() {
            domain::invest::InvestStatus::Ongoing => "ONGOING",
            domain::invest::InvestStatus::Complete => "COMPLETE",
        };
        Self {
            product_id: p.id.get(),
            title: p.title.as_str().to_owned(),
            total_investing_amount: p.total.get(),
            current_investing_amount: p.current.get(),
            investing_cnt: p.investors,
            started_at: first_generation_time(p.window.started_at()),
            finished_at: first_generation_time(p.window.finished_at()),
            invest_status: status.to_owned(),
        }
    }
}

/// One product of the caller's, with the caller's total in it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LegacyMyInvestment)]
#[serde(rename_all = "camelCase")]
struct LegacyMine {
    product_id: i64,
    /// The `X-USER-ID` the request carried.
    user_id: String,
    title: String,
    total_investing_amount: i64,
    my_investing_amount: i64,
    /// The latest investment in it, `YYYY-MM-DDTHH:MM:SS[.ffffff]` UTC.
    invest_date: String,
}

fn list<T, U: Serialize>(page: Page<T>, each: impl FnMut(T) -> U) -> Value {
    json!({
        "totalCount": page.total_count,
        "list": page.items.into_iter().map(each).collect::<Vec<_>>(),
    })
}

/// Investment products open now (first generation)
///
/// Products in their recruiting window, newest `startedAt` first, in the
/// envelope: `data` is `{totalCount, list}`.
#[utoipa::path(
    get,
    path = "/api/product",
    operation_id = "legacyListProducts",
    tag = TAG,
    params(LegacyPage, ("X-Gateway-Secret" = String, Header, description = "The gateway's shared secret")),
    responses(
        (status = 200, description = "The envelope; `data.list` holds LegacyProduct rows", body = Envelope),
        (status = 401, description = "`UNAUTHENTICATED` in the envelope: no or a wrong X-Gateway-Secret", body = Envelope),
    ),
)]
pub async fn products(
    req: HttpRequest,
    legacy: web::Data<LegacyInvest>,
    api: web::Data<InvestApi>,
) -> HttpResponse {
    if let Err(res) = proven(&req, &legacy) {
        return *res;
    }
    let page = match page_request(req.query_string()) {
        Ok(page) => page,
        Err(res) => return *res,
    };
    match api.queries.open_now(page).await {
        Ok(page) => answer(StatusCode::OK, &success(list(page, LegacyProduct::from))),
        Err(e) => refused(&ApiError::from(e)),
    }
}

/// The body of `POST /api/invest`; other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LegacyInvestRequest)]
#[serde(rename_all = "camelCase")]
struct LegacyInvestBody {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 10)]
    invest_amount: i64,
    #[schema(example = 3)]
    product_id: i64,
}

/// Invest (first generation)
///
/// `data` is `"OK"`. A product sold out, or an amount above what remains,
/// answers HTTP 200 with `result: false` and `code: "SOLD_OUT"`. With an
/// `Idempotency-Key`, a retry replays the first answer.
#[utoipa::path(
    post,
    path = "/api/invest",
    operation_id = "legacyInvest",
    tag = TAG,
    params(
        ("X-USER-ID" = String, Header, description = "The investor's login id (set by the gateway)"),
        ("X-Gateway-Secret" = String, Header, description = "The gateway's shared secret"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional: a retry with the same key and body replays the first answer"),
    ),
    request_body = LegacyInvestBody,
    responses(
        (status = 200, description = "`{\"result\":true,\"code\":\"01\",\"message\":null,\"data\":\"OK\",\"status\":200}`, or a refusal (`SOLD_OUT`, `NOT_IN_RECRUITING_PERIOD`) in the envelope", body = Envelope),
        (status = 400, description = "`MISSING_X_USER_ID`, `INVALID_REQUEST` in the envelope", body = Envelope),
        (status = 401, description = "`UNAUTHENTICATED` in the envelope", body = Envelope),
        (status = 404, description = "`PRODUCT_NOT_FOUND` in the envelope", body = Envelope),
        (status = 503, description = "`SERVICE_UNAVAILABLE` in the envelope", body = Envelope),
    ),
)]
pub async fn invest(
    req: HttpRequest,
    body: web::Bytes,
    legacy: web::Data<LegacyInvest>,
    auth: web::Data<AuthContext>,
    api: web::Data<InvestApi>,
    metrics: web::Data<Metrics>,
    throttle: web::Data<Throttle>,
) -> HttpResponse {
    let caller = match caller(&req, &legacy, &auth).await {
        Ok(caller) => caller,
        Err(res) => return *res,
    };
    let Ok(parsed) = serde_json::from_slice::<LegacyInvestBody>(&body) else {
        return refused(&ApiError::validation(
            "the body must be {\"investAmount\": <integer>, \"productId\": <integer>}",
        ));
    };
    let Ok(amount) = InvestAmount::new(parsed.invest_amount) else {
        return refused(&ApiError::validation("investAmount must be at least 1"));
    };
    let key = match req.headers().get("idempotency-key") {
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| IdempotencyKey::parse(v).ok())
        {
            Some(key) => key,
            None => {
                return refused(&ApiError::validation(
                    "Idempotency-Key must be 1 to 128 visible ASCII characters",
                ));
            }
        },
        // Each request without a key is a new investment.
        None => match IdempotencyKey::parse(&format!("legacy-{}", uuid::Uuid::new_v4())) {
            Ok(key) => key,
            Err(_) => return refused(&ApiError::internal()),
        },
    };
    if let Err(e) = throttle.attempt(caller.user_id, Attempt::Investment).await {
        return refused(&ApiError::from(e));
    }
    let command = InvestCommand {
        user_id: caller.user_id,
        product_id: InvestProductId::new(parsed.product_id),
        amount,
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let request = IdempotentRequest {
        user_id: caller.user_id,
        key,
        fingerprint: fingerprint_of(req.method(), req.path(), &value),
        // What is stored under the key is the envelope, so a retry replays
        // it as the first generation answered.
        render: std::sync::Arc::new(|result: &Result<_, InvestError>| {
            let (http, envelope) = match result {
                Ok(_) => (StatusCode::OK, success(json!("OK"))),
                Err(e) => refusal(&ApiError::from(e.clone())),
            };
            StoredResponse {
                status: http.as_u16(),
                content_type: "application/json".to_owned(),
                body: serde_json::to_vec(&envelope).unwrap_or_default(),
            }
        }),
    };
    let outcome = match api.invest.execute(command, request).await {
        Ok(outcome) => outcome,
        Err(e) => return refused(&write_failed(e)),
    };
    metrics.record_investment(&outcome, command.amount.get());
    match respond(outcome) {
        // A stored answer: the envelope, whatever its status.
        Ok(res) => keep_body(res),
        Err(e) => refused(&e),
    }
}

/// The caller's investments per product (first generation)
///
/// One row per product, with the caller's total in it and the date of the
/// latest investment, the most recent first; `userId` is the header's value.
#[utoipa::path(
    get,
    path = "/api/product/my/invest",
    operation_id = "legacyMyInvestments",
    tag = TAG,
    params(
        LegacyPage,
        ("X-USER-ID" = String, Header, description = "The investor's login id (set by the gateway)"),
        ("X-Gateway-Secret" = String, Header, description = "The gateway's shared secret"),
    ),
    responses(
        (status = 200, description = "The envelope; `data.list` holds LegacyMyInvestment rows", body = Envelope),
        (status = 400, description = "`MISSING_X_USER_ID` in the envelope", body = Envelope),
        (status = 401, description = "`UNAUTHENTICATED` in the envelope", body = Envelope),
    ),
)]
pub async fn my_invest(
    req: HttpRequest,
    legacy: web::Data<LegacyInvest>,
    auth: web::Data<AuthContext>,
    api: web::Data<InvestApi>,
) -> HttpResponse {
    let caller = match caller(&req, &legacy, &auth).await {
        Ok(caller) => caller,
        Err(res) => return *res,
    };
    let page = match page_request(req.query_string()) {
        Ok(page) => page,
        Err(res) => return *res,
    };
    let login = caller.login_id.as_str().to_owned();
    match api.queries.mine_by_product(caller.user_id, page).await {
        Ok(page) => answer(
            StatusCode::OK,
            &success(list(page, |m: MyProductTotal| LegacyMine {
                product_id: m.product_id.get(),
                user_id: login.clone(),
                title: m.title.as_str().to_owned(),
                total_investing_amount: m.total.get(),
                my_investing_amount: m.mine.get(),
                invest_date: first_generation_time(m.last_invested_at),
            })),
        ),
        Err(e) => refused(&ApiError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn times_are_written_as_the_first_generation_wrote_them() {
        let whole = Utc
            .with_ymd_and_hms(2026, 12, 2, 7, 5, 9)
            .single()
            .expect("valid");
        assert_eq!(first_generation_time(whole), "2026-12-02T07:05:09");
        let fraction = whole + chrono::Duration::microseconds(26_490);
        assert_eq!(
            first_generation_time(fraction),
            "2026-12-02T07:05:09.026490"
        );
    }

    #[test]
    fn refusals_of_the_investment_keep_http_200() {
        let sold_out = ApiError::from(InvestError::SoldOut {
            product_id: InvestProductId::new(3),
        });
        let (http, envelope) = refusal(&sold_out);
        assert_eq!(http, StatusCode::OK);
        assert_eq!(
            serde_json::to_value(&envelope).expect("json"),
            json!({"result": false, "code": "SOLD_OUT", "message": "Product is sold out : ", "data": null, "status": 200})
        );
        let (http, envelope) = refusal(&ApiError::from(InvestError::ProductNotFound {
            product_id: InvestProductId::new(9),
        }));
        assert_eq!(
            (http, envelope.code.as_str()),
            (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
        );
        let (http, envelope) = refusal(&ApiError::unavailable("postgres"));
        assert_eq!(
            (http, envelope.code.as_str(), envelope.status),
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", 503)
        );
    }
}
