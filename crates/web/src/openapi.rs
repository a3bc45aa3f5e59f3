//! The OpenAPI 3.1 document of every endpoint, at `GET /api-docs/openapi.json`,
//! and Swagger UI at `GET /docs` (its assets are embedded in the binary, so
//! the page works with no internet).
//!
//! The document is derived by utoipa from the handlers' own annotations and
//! from the very structs they serialize and deserialize, so field names,
//! optional fields and enum values cannot drift from what is sent. What every
//! endpoint of a kind shares (401 and 403 answers, 503 when a backing service
//! is down, 413/415 for JSON bodies) is added here, from each operation's
//! declared security and request body, by [`CommonResponses`]; what the
//! derive cannot say about request data, by [`RequestRules`].

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;
use utoipa::openapi::path::{Operation, ParameterBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::problem::{ApiError, PROBLEM_JSON};
use crate::routes;

/// Where the document is served.
pub const OPENAPI_JSON: &str = "/api-docs/openapi.json";

const DESCRIPTION: &str = "\
Points, catalogue, orders, coupons and investments.

**Conventions.** JSON bodies with camelCase names; money and points are integers \
(KRW; a whole number written `354.0` or `3.54e2` counts as the integer); \
timestamps are RFC 3339 in UTC; ids are integers. A body field the endpoint does \
not know is `400 VALIDATION_FAILED` naming it, never ignored. Page-based lists take \
`?page=0&size=20` (0-based, size 1..=100) and answer `{items, page, size, totalCount}`. \
Every response carries `X-Request-Id` (echoed when the request sends a sane one).

**Errors** are `application/problem+json` (RFC 9457) with a stable UPPER_SNAKE \
`code`; unknown routes are `404 NOT_FOUND` problems. A backing service that is \
down answers `503 SERVICE_UNAVAILABLE` with `Retry-After`, and so does a money \
write (order, investment, charge, coupon issue) that finds too many of its kind \
in flight: that one is answered at once and was not run.

**Authentication.** `Authorization: Bearer <token>` from sign-up or sign-in, on \
every endpoint but sign-up, sign-in, health, metrics and these docs. When the \
server runs with `APP_TRUSTED_USER_HEADER=X-USER-ID` (trusted-gateway mode, off \
by default; it needs `APP_TRUSTED_GATEWAY_SECRET`), a request without \
`Authorization` may instead carry `X-USER-ID: <loginId>` together with \
`X-Gateway-Secret: <the gateway's shared secret>`; that user is provisioned on \
first sight with role USER. Without the secret, or for an account that has a \
password, the header answers 401. When the mode is off the header is ignored.

**Idempotency.** `POST /points/charge`, `POST /orders` and `POST /investments` \
require an `Idempotency-Key`; a repeat with the same body answers the first \
answer again with `Idempotent-Replayed: true` and executes nothing twice.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "points-commerce API",
        description = DESCRIPTION,
    ),
    paths(
        routes::identity::sign_up,
        routes::identity::sign_in,
        routes::identity::me,
        routes::identity::list_users,
        routes::points::balance,
        routes::points::charge,
        routes::points::history,
        routes::catalog::list,
        routes::catalog::popular,
        routes::catalog::detail,
        routes::catalog::create,
        routes::catalog::update,
        routes::ordering::place,
        routes::ordering::list,
        routes::ordering::detail,
        routes::coupon::campaigns::create,
        routes::coupon::campaigns::view,
        routes::coupon::campaigns::generate,
        routes::coupon::import::import,
        routes::coupon::holders::issue,
        routes::coupon::holders::mine,
        routes::coupon::holders::redeem,
        routes::coupon::holders::cancel_redeem,
        routes::coupon::expiry::expiring,
        routes::coupon::expiry::send_notices,
        routes::invest::create,
        routes::invest::list,
        routes::invest::detail,
        routes::invest::invest,
        routes::invest::mine,
        routes::health::live,
        routes::health::ready,
        crate::metrics::scrape,
        openapi_json,
        docs,
    ),
    modifiers(&CommonResponses, &RequestRules),
    tags(
        (name = "identity", description = "Accounts and sign-in"),
        (name = "points", description = "The prepaid points balance"),
        (name = "catalog", description = "Products"),
        (name = "orders", description = "Orders, paid with points at once"),
        (name = "coupons", description = "Coupon campaigns, their code pools and users' coupons"),
        (name = "investments", description = "Investment products and investments"),
        (name = "operations", description = "Health and metrics"),
        (name = "docs", description = "This document and its interactive page"),
    ),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The bearer scheme, and the answers that follow from an operation's kind:
/// `401` for every secured one, `403` for the admin ones, `503` for every
/// `/api/v1` one, `413` and `415` for those with a JSON body.
#[derive(Debug)]
struct CommonResponses;

const UNAUTHENTICATED: &str = "Unauthenticated";
const FORBIDDEN: &str = "Forbidden";
const UNAVAILABLE: &str = "ServiceUnavailable";
const TOO_LARGE: &str = "PayloadTooLarge";
const UNSUPPORTED: &str = "UnsupportedMediaType";

fn problem_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The token of `POST /api/v1/auth/signup` or `/signin`"))
                    .build(),
            ),
        );
        for (name, description) in [
            (
                UNAUTHENTICATED,
                "`UNAUTHENTICATED`: the token is missing, malformed, expired or tampered with",
            ),
            (FORBIDDEN, "`FORBIDDEN`: the caller is not an admin"),
            (
                UNAVAILABLE,
                "`SERVICE_UNAVAILABLE`: Postgres or Redis is down, or (on a money write) too many writes of its kind are in flight; retry after `Retry-After` seconds. On an idempotent write the outcome is unknown when a backing service failed (it may have committed); a write shed for load says in its `detail` that it was not run. Either way, retry with the same `Idempotency-Key`",
            ),
            (
                TOO_LARGE,
                "`PAYLOAD_TOO_LARGE`: the JSON body is over the size limit",
            ),
            (
                UNSUPPORTED,
                "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`",
            ),
        ] {
            components
                .responses
                .insert(name.to_owned(), problem_response(description));
        }

        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common(path, operation);
            }
        }
    }
}

fn add_common(path: &str, operation: &mut Operation) {
    let mut add = |status: &str, name: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    if secured {
        add("401", UNAUTHENTICATED);
        if path.starts_with("/api/v1/admin/") {
            add("403", FORBIDDEN);
        }
    }
    if path.starts_with("/api/v1/") {
        add("503", UNAVAILABLE);
    }
    let json_body = match &operation.request_body {
        Some(RefOr::T(body)) => body.content.contains_key("application/json"),
        _ => false,
    };
    if json_body {
        add("413", TOO_LARGE);
        add("415", UNSUPPORTED);
    }
}

/// What the derive cannot say about request data:
/// - each idempotent write has its own example `Idempotency-Key`: keys are
///   scoped to the caller, not the route, so one example shared by all
///   three would make a client (or a fuzzer) that copies them get
///   `422 IDEMPOTENCY_KEY_REUSED` on the second;
/// - a `PERCENT` campaign takes a `discountValue` of 1 to 100 (an `if` /
///   `then` of JSON Schema 2020-12);
/// - an order's lines are `uniqueItems` (each product once; JSON Schema
///   cannot say "distinct by `productId`", this is the part it can);
/// - a product patch takes `stock` or `stockDelta`, not both.
#[derive(Debug)]
struct RequestRules;

/// The example `Idempotency-Key` of each idempotent write, by operation id.
const KEY_EXAMPLES: [(&str, &str); 3] = [
    ("chargePoints", "charge-2026-12-01-7f3c9a2e"),
    ("placeOrder", "order-2026-12-01-5b8e1d40"),
    ("invest", "invest-2026-12-01-c2a94f17"),
];

impl Modify for RequestRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let Some(operation) = item.post.as_mut() else {
                continue;
            };
            let Some((_, example)) = KEY_EXAMPLES
                .iter()
                .find(|(id, _)| operation.operation_id.as_deref() == Some(id))
            else {
                continue;
            };
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(header) = parameter
                    && header.name == "Idempotency-Key"
                {
                    *header = ParameterBuilder::from(header.clone())
                        .example(Some(json!(example)))
                        .build();
                }
            }
        }
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        if let Some(RefOr::T(Schema::Object(patch))) = schemas.get_mut("ProductPatch") {
            patch
                .extensions
                .get_or_insert_with(Default::default)
                .insert(
                    "not".to_owned(),
                    json!({"required": ["stock", "stockDelta"]}),
                );
        }
        if let Some(RefOr::T(Schema::Object(order))) = schemas.get_mut("PlaceOrderRequest")
            && let Some(RefOr::T(Schema::Array(items))) = order.properties.get_mut("items")
        {
            items.unique_items = true;
        }
        if let Some(RefOr::T(Schema::Object(campaign))) = schemas.get_mut("NewCampaign") {
            let rules = campaign.extensions.get_or_insert_with(Default::default);
            rules.insert(
                "if".to_owned(),
                json!({"properties": {"discountType": {"const": "PERCENT"}}, "required": ["discountType"]}),
            );
            rules.insert(
                "then".to_owned(),
                json!({"properties": {"discountValue": {"maximum": 100}}}),
            );
        }
    }
}

/// The first-generation investment routes, listed under their own tag
/// when `APP_LEGACY_INVEST_API` is on.
#[derive(OpenApi)]
#[openapi(
    paths(
        routes::legacy_invest::products,
        routes::legacy_invest::invest,
        routes::legacy_invest::my_invest,
    ),
    tags((name = routes::legacy_invest::TAG, description = "The first-generation investment API (shared/API.md), for existing clients behind the gateway: `X-USER-ID` and `X-Gateway-Secret` headers, answers in a `{result, code, message, data, status}` envelope. On only with `APP_LEGACY_INVEST_API=true`.")),
)]
struct LegacyDoc;

/// The document, rendered once per process.
static DOCUMENT: LazyLock<Option<String>> = LazyLock::new(|| ApiDoc::openapi().to_json().ok());

/// The document with the first-generation routes.
static DOCUMENT_WITH_LEGACY: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.merge(LegacyDoc::openapi());
    doc.to_json().ok()
});

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/api-docs/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document of every endpoint", content_type = "application/json")),
)]
async fn openapi_json(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let legacy_on = req
        .app_data::<web::Data<routes::legacy_invest::LegacyInvest>>()
        .is_some();
    let document = if legacy_on {
        &DOCUMENT_WITH_LEGACY
    } else {
        &DOCUMENT
    };
    match document.as_deref() {
        Some(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.to_owned())),
        None => {
            tracing::error!("the OpenAPI document could not be rendered");
            Err(ApiError::internal())
        }
    }
}

/// Interactive API documentation
///
/// Redirects to `/docs/`, Swagger UI served by this service (no internet
/// needed). Use "Authorize" with a token from sign-in to try secured calls.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "docs",
    responses((status = 308, description = "To `/docs/`, an HTML page",
        headers(("Location" = String, description = "`docs/`, relative to this path")))),
)]
async fn docs() -> HttpResponse {
    // Relative, so the page still works behind a proxy that adds a prefix.
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "docs/"))
        .finish()
}

/// `GET /api-docs/openapi.json`, `GET /docs` and the Swagger UI files under `/docs/`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(OPENAPI_JSON).route(web::get().to(openapi_json)))
        .service(web::resource("/docs").route(web::get().to(docs)))
        .service(
            SwaggerUi::new("/docs/{_:.*}").config(
                Config::new([OPENAPI_JSON])
                    .persist_authorization(true)
                    .try_it_out_enabled(true)
                    // No badge from the public validator: nothing leaves the page.
                    .validator_url("none"),
            ),
        );
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT.as_deref().expect("rendered")).expect("JSON")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn secured_operations_answer_401_admin_ones_403_and_public_ones_neither() {
        let doc = document();
        let me = &doc["paths"]["/api/v1/me"]["get"];
        assert_eq!(
            me["responses"]["401"]["$ref"],
            "#/components/responses/Unauthenticated"
        );
        assert!(me["responses"].get("403").is_none());
        let admin = &doc["paths"]["/api/v1/admin/products"]["post"];
        assert_eq!(
            admin["responses"]["403"]["$ref"],
            "#/components/responses/Forbidden"
        );
        assert!(admin["responses"].get("415").is_some(), "a JSON body");
        let signup = &doc["paths"]["/api/v1/auth/signup"]["post"];
        assert!(signup.get("security").is_none());
        assert!(signup["responses"].get("401").is_none());
        assert!(signup["responses"].get("503").is_some());
        let live = &doc["paths"]["/health/live"]["get"];
        assert!(live["responses"].get("503").is_none());
    }

    #[test]
    fn every_operation_has_a_unique_id() {
        let doc = document();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let id = operation["operationId"].as_str();
                assert!(id.is_some(), "{method} {path} has no operationId");
                ids.push(id.unwrap_or_default().to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids repeat");
    }

    /// What the server refuses with 400 must be outside the documented
    /// request schema, or a fuzzer that trusts the document (schemathesis)
    /// reports "schema-valid request rejected"; each of these was one.
    #[test]
    fn request_schemas_carry_the_rules_the_server_enforces() {
        use crate::schema::{
            COUPON_CODE_PATTERN, EXPIRING_CURSOR_PATTERN, csv_header_pattern, trimmed_text_pattern,
        };
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
        let name_200 = trimmed_text_pattern(200);
        for (schema, name) in [
            ("NewProduct", "name"),
            ("ProductPatch", "name"),
            ("NewCampaign", "name"),
            ("NewInvestProduct", "title"),
        ] {
            assert_eq!(
                field(schema, name)["pattern"],
                name_200.as_str(),
                "{schema}.{name}"
            );
        }
        assert_eq!(
            field("SignUpRequest", "name")["pattern"],
            trimmed_text_pattern(100).as_str()
        );
        assert_eq!(
            field("ProductPatch", "name")["type"],
            serde_json::json!(["string", "null"]),
            "null keeps the name"
        );
        for (schema, optional) in [("SignUpRequest", "name"), ("ProductPatch", "name")] {
            let required = schemas[schema]["required"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                !required.contains(&Value::from(optional)),
                "{schema}.{optional}"
            );
        }
        assert!(
            schemas["NewProduct"]["required"]
                .as_array()
                .is_some_and(|r| r.contains(&Value::from("name")))
        );
        assert_eq!(
            field("PlaceOrderRequest", "couponCode")["pattern"],
            COUPON_CODE_PATTERN
        );

        let max_amount = domain::invest::InvestAmount::MAX as f64;
        for (schema, name) in [
            ("InvestRequest", "investAmount"),
            ("NewInvestProduct", "totalInvestingAmount"),
        ] {
            assert_eq!(
                field(schema, name)["minimum"].as_f64(),
                Some(1.0),
                "{schema}.{name}"
            );
            assert_eq!(
                field(schema, name)["maximum"].as_f64(),
                Some(max_amount),
                "{schema}.{name}"
            );
        }
        assert_eq!(
            field("NewCampaign", "discountValue")["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            field("NewCampaign", "maxDiscountAmount")["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            field("NewCampaign", "validDays")["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            field("NewCampaign", "validDays")["maximum"].as_f64(),
            Some(3650.0)
        );

        for (schema, name) in [
            ("NewInvestProduct", "startedAt"),
            ("NewInvestProduct", "finishedAt"),
            ("NewCampaign", "issueStartsAt"),
            ("NewCampaign", "issueEndsAt"),
        ] {
            assert_eq!(
                field(schema, name)["pattern"],
                crate::schema::INSTANT_PATTERN,
                "{schema}.{name}"
            );
            assert_eq!(field(schema, name)["format"], "date-time");
        }
        for schema in ["OrderItemRequest", "InvestRequest"] {
            assert_eq!(
                field(schema, "productId")["minimum"].as_f64(),
                Some(1.0),
                "{schema}"
            );
        }
        assert_eq!(field("PlaceOrderRequest", "items")["uniqueItems"], true);
        assert_eq!(
            schemas["ProductPatch"]["not"]["required"],
            serde_json::json!(["stock", "stockDelta"])
        );
        let coupon = field("PlaceOrderRequest", "couponCode");
        assert!(
            coupon.get("default").is_some_and(Value::is_null),
            "no coupon unless one is named: {coupon}"
        );
        let campaign = &schemas["NewCampaign"];
        assert_eq!(
            campaign["if"]["properties"]["discountType"]["const"],
            "PERCENT"
        );
        assert_eq!(
            campaign["then"]["properties"]["discountValue"]["maximum"].as_f64(),
            Some(100.0)
        );
        // Keys are scoped to the caller, not the route: each idempotent
        // write shows its own, so copying the examples never reuses one.
        let mut keys = Vec::new();
        for (path, id) in [
            ("/api/v1/points/charge", "chargePoints"),
            ("/api/v1/orders", "placeOrder"),
            ("/api/v1/investments", "invest"),
        ] {
            let operation = &doc["paths"][path]["post"];
            assert_eq!(operation["operationId"], id);
            let key = operation["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
                .expect("the Idempotency-Key header");
            assert_eq!(key["required"], true, "{path}");
            keys.push(key["example"].as_str().expect("an example key").to_owned());
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 3, "{keys:?}");

        let expiring = &doc["paths"]["/api/v1/admin/coupons/expiring"]["get"]["parameters"];
        let after = expiring
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "after"))
            .expect("the after parameter");
        assert_eq!(after["schema"]["pattern"], EXPIRING_CURSOR_PATTERN);
        let csv = &doc["paths"]["/api/v1/admin/coupon-campaigns/{id}/codes/import"]["post"]["requestBody"]
            ["content"]["text/csv"]["schema"];
        assert_eq!(csv["pattern"], csv_header_pattern().as_str());
    }

    /// A field an endpoint does not know is refused (shared/API.md), so
    /// every JSON request body, and every object nested in one, says
    /// `additionalProperties: false`.
    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let mut names = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("an item").values() {
                let body = &operation["requestBody"]["content"]["application/json"]["schema"];
                if let Some(target) = body["$ref"].as_str() {
                    names.push(target.rsplit('/').next().expect("a name").to_owned());
                }
            }
        }
        names.push("OrderItemRequest".to_owned());
        names.sort();
        names.dedup();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            assert_eq!(
                schemas[&name]["additionalProperties"], false,
                "{name} must refuse unknown fields"
            );
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().expect("a reference");
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }
}
