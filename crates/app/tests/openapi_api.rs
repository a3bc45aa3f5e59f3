//! `GET /api-docs/openapi.json` and `GET /docs`: the OpenAPI 3.1 document
//! covers the whole contract of API.md and every documented operation is
//! really routed; the Swagger UI page and its assets come from the app itself.

mod support;

use serde_json::Value;
use support::TestApp;

/// Every operation of API.md, in OpenAPI form.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/signup"),
    ("post", "/api/v1/auth/signin"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/points"),
    ("post", "/api/v1/points/charge"),
    ("get", "/api/v1/points/history"),
    ("get", "/api/v1/products"),
    ("get", "/api/v1/products/{id}"),
    ("get", "/api/v1/products/popular"),
    ("post", "/api/v1/admin/products"),
    ("patch", "/api/v1/admin/products/{id}"),
    ("post", "/api/v1/orders"),
    ("get", "/api/v1/orders"),
    ("get", "/api/v1/orders/{id}"),
    ("post", "/api/v1/admin/coupon-campaigns"),
    ("get", "/api/v1/coupon-campaigns/{id}"),
    ("post", "/api/v1/admin/coupon-campaigns/{id}/codes"),
    ("post", "/api/v1/admin/coupon-campaigns/{id}/codes/import"),
    ("post", "/api/v1/coupon-campaigns/{id}/issue"),
    ("get", "/api/v1/coupons"),
    ("post", "/api/v1/coupons/{code}/use"),
    ("post", "/api/v1/coupons/{code}/cancel-use"),
    ("get", "/api/v1/admin/coupons/expiring"),
    ("post", "/api/v1/admin/jobs/coupon-expiry-notices"),
    ("post", "/api/v1/admin/invest-products"),
    ("get", "/api/v1/invest-products"),
    ("get", "/api/v1/invest-products/{id}"),
    ("post", "/api/v1/investments"),
    ("get", "/api/v1/investments/me"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/api-docs/openapi.json"),
    ("get", "/docs"),
];

/// The operations API.md exempts from `Authorization`.
const PUBLIC: &[&str] = &[
    "/api/v1/auth/signup",
    "/api/v1/auth/signin",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/api-docs/openapi.json",
    "/docs",
];

const IDEMPOTENT: &[&str] = &[
    "/api/v1/points/charge",
    "/api/v1/orders",
    "/api/v1/investments",
];

async fn document(app: &TestApp) -> Value {
    let reply = app.get("/api-docs/openapi.json", None).await;
    assert_eq!(reply.status, 200, "no token needed: {}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        reply.header("content-type")
    );
    assert!(reply.header("x-request-id").is_some(), "the edge ran");
    reply.body
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_the_whole_contract() {
    let app = TestApp::spawn().await;

    let doc = document(&app).await;

    let version = doc["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1"), "{version}");
    for (method, path) in CONTRACT {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
        let security = &operation["security"];
        if PUBLIC.contains(path) {
            assert!(security.is_null(), "{method} {path} needs no token");
        } else {
            assert_eq!(
                security,
                &serde_json::json!([{"bearer": []}]),
                "{method} {path} needs a bearer token"
            );
            assert_eq!(
                operation["responses"]["401"]["$ref"], "#/components/responses/Unauthenticated",
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "The token of `POST /api/v1/auth/signup` or `/signin`"})
    );
}

#[tokio::test]
async fn the_document_describes_headers_media_types_and_problems_as_served() {
    let app = TestApp::spawn().await;

    let doc = document(&app).await;

    for path in IDEMPOTENT {
        let params = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        assert!(
            params.iter().any(|p| p["name"] == "Idempotency-Key"
                && p["in"] == "header"
                && p["required"] == true),
            "{path}: {params:?}"
        );
        assert!(
            doc["paths"][path]["post"]["responses"]["422"].is_object(),
            "{path}: IDEMPOTENCY_KEY_REUSED"
        );
    }
    let import = &doc["paths"]["/api/v1/admin/coupon-campaigns/{id}/codes/import"]["post"];
    assert!(
        import["requestBody"]["content"]["text/csv"].is_object(),
        "{import}"
    );
    let order_409 = &doc["paths"]["/api/v1/orders"]["post"]["responses"]["409"];
    assert!(
        order_409["content"]["application/problem+json"]["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/Problem")),
        "{order_409}"
    );
    assert!(
        order_409["description"]
            .as_str()
            .is_some_and(|d| d.contains("OUT_OF_STOCK")),
        "{order_409}"
    );
    let schemas = &doc["components"]["schemas"];
    let problem_required = &schemas["Problem"]["required"];
    for member in ["title", "status", "code", "detail"] {
        assert!(
            problem_required
                .as_array()
                .is_some_and(|r| r.iter().any(|m| m == member)),
            "Problem.{member} is required: {problem_required}"
        );
    }
    let page = &doc["paths"]["/api/v1/products"]["get"]["parameters"];
    for name in ["page", "size"] {
        assert!(
            page.as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "query")),
            "{name}: {page}"
        );
    }
    // The enums as the handlers serialize them.
    assert_eq!(schemas["OrderStatus"]["enum"], serde_json::json!(["PAID"]));
    assert_eq!(
        schemas["DiscountType"]["enum"],
        serde_json::json!(["AMOUNT", "PERCENT"])
    );
    assert_eq!(
        schemas["CouponStatus"]["enum"],
        serde_json::json!(["ISSUED", "USED", "EXPIRED"])
    );
    assert_eq!(
        schemas["InvestStatus"]["enum"],
        serde_json::json!(["ONGOING", "COMPLETE"])
    );
    let order = &schemas["Order"]["properties"];
    for field in [
        "orderId",
        "status",
        "items",
        "totalAmount",
        "discountAmount",
        "paidAmount",
        "couponCode",
        "createdAt",
    ] {
        assert!(order[field].is_object(), "Order.{field}: {order}");
    }
}

/// Every documented operation reaches a handler: none falls through to the
/// unknown-route 404 or a 405, so the document cannot name a path the router
/// does not have.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= CONTRACT.len());

    for (path, item) in paths {
        let concrete = path.replace("{id}", "1").replace("{code}", "ABCD-1234");
        assert!(!concrete.contains('{'), "{path}: an unexpected parameter");
        for method in item.as_object().expect("a path item").keys() {
            let method: reqwest::Method = method.to_uppercase().parse().expect("a method");
            let reply = app.send(method.clone(), &concrete, &[], None).await;
            let unrouted =
                (reply.status == 404 && reply.body["code"] == "NOT_FOUND") || reply.status == 405;
            assert!(
                !unrouted,
                "{method} {concrete}: {} {}",
                reply.status, reply.text
            );
        }
    }
}

/// The `href`/`src` values of an HTML page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for piece in html.split(attr).skip(1) {
            if let Some(value) = piece.split('"').next() {
                out.push(value.to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_by_the_app_itself() {
    let app = TestApp::spawn().await;

    let res = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(res.status(), 200, "after the redirect");
    let page_url = res.url().clone();
    assert_eq!(page_url.path(), "/docs/");
    assert!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        res.headers().get("content-type")
    );
    let html = res.text().await.expect("body");
    let assets = links(&html);
    for needed in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        assert!(
            assets.iter().any(|a| a.ends_with(needed)),
            "{needed} in {assets:?}"
        );
    }
    for asset in &assets {
        assert!(
            !asset.starts_with("http:") && !asset.starts_with("https:") && !asset.starts_with("//"),
            "{asset}: the page must work offline"
        );
        let url = page_url.join(asset).expect("a relative URL");
        assert!(url.path().starts_with("/docs/"), "{url}");
        let asset_res = app.http.get(url.clone()).send().await.expect("sent");
        assert_eq!(asset_res.status(), 200, "{url}");
        let body = asset_res.bytes().await.expect("body");
        assert!(!body.is_empty(), "{url}");
        if asset.ends_with("swagger-initializer.js") {
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("/api-docs/openapi.json"),
                "the page loads our document: {text}"
            );
            assert!(
                text.contains(r#""validatorUrl": "none""#),
                "no call to the public validator: {text}"
            );
        }
    }

    let missing = app.get("/docs/no-such-file.js", None).await;
    missing.assert_problem(404, "NOT_FOUND");
}
