//! The authorization matrix: every admin endpoint refuses a user (403) and
//! an anonymous caller (401) and changes nothing; every user-scoped
//! endpoint keeps one user's resources away from another (404, or absent
//! from their lists); idempotency keys belong to their user.

mod support;

use chrono::{Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, TestApp};

/// What user A owns after the set-up, and B's token.
struct World {
    app: TestApp,
    admin: String,
    a: String,
    b: String,
    product: i64,
    campaign: i64,
    invest_product: i64,
    a_order: i64,
    a_coupon: String,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (a, b) = (app.sign_up("owner").await, app.sign_up("stranger").await);
    app.charge(&a, 100_000).await;
    app.charge(&b, 100_000).await;
    let product = app.create_product("Lamp", 1_000, 100).await;
    let campaign = app
        .post(
            "/api/v1/admin/coupon-campaigns",
            &json!({"name": "c", "discountType": "AMOUNT", "discountValue": 100, "validDays": 7}),
            Some(&admin),
        )
        .await
        .body["id"]
        .as_i64()
        .expect("campaign");
    let generated = app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes"),
            &json!({"count": 10}),
            Some(&admin),
        )
        .await;
    assert_eq!(generated.status, 201, "{}", generated.text);
    let now = Utc::now();
    let invest_product = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Farm", "totalInvestingAmount": 1_000_000,
                "startedAt": (now - Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
                "finishedAt": (now + Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
            Some(&admin),
        )
        .await
        .body["productId"]
        .as_i64()
        .expect("invest product");
    let a_coupon = app
        .post(
            &format!("/api/v1/coupon-campaigns/{campaign}/issue"),
            &json!({}),
            Some(&a),
        )
        .await
        .body["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let ordered = app
        .post_idempotent(
            "/api/v1/orders",
            "a-order",
            &json!({"items": [{"productId": product, "quantity": 1}]}),
            &a,
        )
        .await;
    assert_eq!(ordered.status, 201, "{}", ordered.text);
    let invested = app
        .post_idempotent(
            "/api/v1/investments",
            "a-invest",
            &json!({"productId": invest_product, "investAmount": 5_000}),
            &a,
        )
        .await;
    assert_eq!(invested.status, 201, "{}", invested.text);
    World {
        a_order: ordered.body["orderId"].as_i64().expect("order id"),
        app,
        admin,
        a,
        b,
        product,
        campaign,
        invest_product,
        a_coupon,
    }
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Idempotency-Key", "authz")];
    let content_type = if path.ends_with("/import") {
        "text/csv"
    } else {
        "application/json"
    };
    headers.push(("content-type", content_type));
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    app.send(method.clone(), path, &headers, Some(body)).await
}

#[tokio::test]
async fn every_admin_endpoint_refuses_a_user_and_an_anonymous_caller_and_changes_nothing() {
    let w = world().await;
    let (p, c) = (w.product, w.campaign);
    let today = Utc::now().date_naive();
    let admin_calls: Vec<(Method, String, String)> = vec![
        (Method::GET, "/api/v1/admin/users".into(), String::new()),
        (
            Method::POST,
            "/api/v1/admin/products".into(),
            json!({"name": "x", "price": 1, "stock": 1}).to_string(),
        ),
        (
            Method::PATCH,
            format!("/api/v1/admin/products/{p}"),
            json!({"stockDelta": 1}).to_string(),
        ),
        (
            Method::POST,
            "/api/v1/admin/coupon-campaigns".into(),
            json!({"name": "x", "discountType": "AMOUNT", "discountValue": 1, "validDays": 1})
                .to_string(),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/coupon-campaigns/{c}/codes"),
            json!({"count": 5}).to_string(),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/coupon-campaigns/{c}/codes/import"),
            "code\nAUTHZ-CODE-1\n".into(),
        ),
        (
            Method::GET,
            format!("/api/v1/admin/coupons/expiring?date={today}"),
            String::new(),
        ),
        (
            Method::POST,
            "/api/v1/admin/jobs/coupon-expiry-notices".into(),
            String::new(),
        ),
        (
            Method::POST,
            "/api/v1/admin/invest-products".into(),
            json!({"title": "x", "totalInvestingAmount": 1,
                   "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2030-01-01T00:00:00Z"})
            .to_string(),
        ),
    ];
    let before = counts(&w.app).await;

    for (method, path, body) in &admin_calls {
        call(&w.app, method, path, body, Some(&w.b))
            .await
            .assert_problem(403, "FORBIDDEN");
        call(&w.app, method, path, body, None)
            .await
            .assert_problem(401, "UNAUTHENTICATED");
    }

    assert_eq!(counts(&w.app).await, before, "nothing changed");
    // The same calls go through for the admin (so the matrix tests real routes).
    for (method, path, body) in &admin_calls {
        let reply = call(&w.app, method, path, body, Some(&w.admin)).await;
        assert!(
            reply.status < 300,
            "{method} {path} as admin: {}",
            reply.text
        );
    }
}

/// What an admin call could change: products and their stock, campaigns,
/// codes, invest products, notices sent.
async fn counts(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT count(*) AS n FROM products",
        "SELECT sum(stock)::int8 AS n FROM products",
        "SELECT count(*) AS n FROM coupon_campaigns",
        "SELECT count(*) AS n FROM coupons",
        "SELECT count(*) AS n FROM invest_products",
        "SELECT count(*) FILTER (WHERE notified_at IS NOT NULL) AS n FROM coupons",
    ] {
        out.push(app.scalar(sql).await);
    }
    out
}

#[tokio::test]
async fn another_users_order_coupon_and_history_are_not_found_or_absent() {
    let w = world().await;
    let (app, b) = (&w.app, w.b.as_str());

    app.get(&format!("/api/v1/orders/{}", w.a_order), Some(b))
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    for action in ["use", "cancel-use"] {
        app.post(
            &format!("/api/v1/coupons/{}/{action}", w.a_coupon),
            &json!({}),
            Some(b),
        )
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    }
    app.post_idempotent(
        "/api/v1/orders",
        "b-with-a-coupon",
        &json!({"items": [{"productId": w.product, "quantity": 1}], "couponCode": w.a_coupon}),
        b,
    )
    .await
    .assert_problem(409, "COUPON_NOT_APPLICABLE");

    for list in [
        "/api/v1/orders",
        "/api/v1/coupons",
        "/api/v1/investments/me",
    ] {
        let reply = app.get(list, Some(b)).await;
        assert_eq!(reply.status, 200, "{list}: {}", reply.text);
        assert_eq!(reply.body["totalCount"], 0, "{list} as B: {}", reply.text);
        let mine = app.get(list, Some(&w.a)).await;
        assert_eq!(mine.body["totalCount"], 1, "{list} as A: {}", mine.text);
    }
    let history = app.get("/api/v1/points/history", Some(b)).await;
    assert!(
        history.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["kind"] == "CHARGE"),
        "B's history holds only B's charge: {}",
        history.text
    );
    assert_eq!(
        app.get("/api/v1/points", Some(b)).await.body["balance"],
        100_000,
        "B paid nothing"
    );
    let coupon_owner = app
        .scalar(&format!(
            "SELECT count(*) AS n FROM coupons WHERE code = '{}' AND used_at IS NULL",
            w.a_coupon
        ))
        .await;
    assert_eq!(coupon_owner, 1, "A's coupon is untouched");
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_its_user() {
    let w = world().await;
    let body = json!({"productId": w.invest_product, "investAmount": 5_000});

    // B reuses A's key with the same body: B's own investment, not A's replay.
    let b = w
        .app
        .post_idempotent("/api/v1/investments", "a-invest", &body, &w.b)
        .await;

    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(b.header("idempotent-replayed"), None);
    assert_eq!(
        w.app.scalar("SELECT count(*) AS n FROM investments").await,
        2
    );
}

#[tokio::test]
async fn every_user_endpoint_refuses_an_anonymous_caller() {
    let w = world().await;
    let calls: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/api/v1/me".into(), Value::Null),
        (Method::GET, "/api/v1/points".into(), Value::Null),
        (
            Method::POST,
            "/api/v1/points/charge".into(),
            json!({"amount": 1_000}),
        ),
        (Method::GET, "/api/v1/points/history".into(), Value::Null),
        (Method::GET, "/api/v1/products".into(), Value::Null),
        (
            Method::GET,
            format!("/api/v1/products/{}", w.product),
            Value::Null,
        ),
        (Method::GET, "/api/v1/products/popular".into(), Value::Null),
        (
            Method::POST,
            "/api/v1/orders".into(),
            json!({"items": [{"productId": w.product, "quantity": 1}]}),
        ),
        (Method::GET, "/api/v1/orders".into(), Value::Null),
        (
            Method::GET,
            format!("/api/v1/orders/{}", w.a_order),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/api/v1/coupon-campaigns/{}", w.campaign),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/coupon-campaigns/{}/issue", w.campaign),
            json!({}),
        ),
        (Method::GET, "/api/v1/coupons".into(), Value::Null),
        (
            Method::POST,
            format!("/api/v1/coupons/{}/use", w.a_coupon),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/coupons/{}/cancel-use", w.a_coupon),
            json!({}),
        ),
        (Method::GET, "/api/v1/invest-products".into(), Value::Null),
        (
            Method::GET,
            format!("/api/v1/invest-products/{}", w.invest_product),
            Value::Null,
        ),
        (
            Method::POST,
            "/api/v1/investments".into(),
            json!({"productId": w.invest_product, "investAmount": 1}),
        ),
        (Method::GET, "/api/v1/investments/me".into(), Value::Null),
    ];

    for (method, path, body) in &calls {
        let raw = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        call(&w.app, method, path, &raw, None)
            .await
            .assert_problem(401, "UNAUTHENTICATED");
        call(&w.app, method, path, &raw, Some("not-a-token"))
            .await
            .assert_problem(401, "UNAUTHENTICATED");
    }
}
