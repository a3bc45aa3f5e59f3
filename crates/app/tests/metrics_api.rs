//! `GET /metrics`: Prometheus text with HTTP, pool, outbox and business series.

mod support;

use serde_json::json;
use support::TestApp;

/// The value of the series `line_prefix` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_business_outcomes_once() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("counted").await;
    app.charge(&token, 10_000).await;
    let tea = app.create_product("Tea", 1_000, 1).await;
    let order = json!({"items": [{"productId": tea, "quantity": 1}]});

    let paid = app
        .post_idempotent("/api/v1/orders", "m-1", &order, &token)
        .await;
    assert_eq!(paid.status, 201, "{}", paid.text);
    let replay = app
        .post_idempotent("/api/v1/orders", "m-1", &order, &token)
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    app.post_idempotent("/api/v1/orders", "m-2", &order, &token)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    let id = paid.body["orderId"].as_i64().expect("id");
    app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;

    let scrape = app.get("/metrics", None).await;

    assert_eq!(scrape.status, 200, "no token needed: {}", scrape.text);
    assert!(
        scrape
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        scrape.header("content-type")
    );
    let text = &scrape.text;
    assert_eq!(
        value(text, "orders_paid_total"),
        Some(1.0),
        "a replay counts no second order"
    );
    assert_eq!(
        value(text, r#"order_refusals_total{code="OUT_OF_STOCK"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            text,
            r#"http_requests_total{method="POST",route="/api/v1/orders",status="201"}"#
        ),
        Some(2.0),
        "the replay is a request all the same"
    );
    assert_eq!(
        value(
            text,
            r#"http_requests_total{method="GET",route="/api/v1/orders/{id}",status="200"}"#
        ),
        Some(1.0),
        "by route pattern, not by path"
    );
    assert!(
        !text.contains(&format!("/api/v1/orders/{id}\"")),
        "no raw ids in labels"
    );
    assert!(
        value(
            text,
            r#"http_request_duration_seconds_count{method="POST",route="/api/v1/orders",status="409"}"#
        ) == Some(1.0)
    );
    // APP_DB_POOL_SIZE 8 over APP_WORKERS 2: a share of 4 for each thread
    // that has used the pool (both workers may serve, and background jobs).
    let max =
        value(text, r#"pool_connections{pool="postgres",state="max"}"#).expect("the pool's bound");
    assert!(
        max >= 4.0 && max % 4.0 == 0.0,
        "the bound of the threads' shares of APP_DB_POOL_SIZE: {max}"
    );
    assert_eq!(
        value(
            text,
            r#"pool_connections{pool="postgres_order_lanes",state="max"}"#
        ),
        Some(4.0),
        "the order batches' own pool"
    );
    assert!(value(text, r#"pool_connections{pool="redis",state="open"}"#).is_some());
    assert!(value(text, r#"outbox_unpublished_events{sink="stream"}"#).is_some_and(|n| n <= 1.0));
    assert!(
        value(
            text,
            r#"outbox_oldest_unpublished_age_seconds{sink="stream"}"#
        )
        .is_some_and(|s| s >= 0.0)
    );
}

#[tokio::test]
async fn investments_and_coupon_issues_are_counted() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let token = app.sign_up("investor").await;
    let now = chrono::Utc::now();
    let product = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Wind",
                "totalInvestingAmount": 1_000,
                "startedAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
                "finishedAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            }),
            Some(&admin),
        )
        .await
        .body["productId"]
        .as_i64()
        .expect("id");
    let invest = |amount: i64| json!({"productId": product, "investAmount": amount});
    assert_eq!(
        app.post_idempotent("/api/v1/investments", "i-1", &invest(700), &token)
            .await
            .status,
        201
    );
    app.post_idempotent("/api/v1/investments", "i-2", &invest(400), &token)
        .await
        .assert_problem(409, "AMOUNT_EXCEEDS_REMAINING");
    let campaign = app
        .post(
            "/api/v1/admin/coupon-campaigns",
            &json!({"name": "M", "discountType": "AMOUNT", "discountValue": 100, "validDays": 7}),
            Some(&admin),
        )
        .await
        .body["id"]
        .as_i64()
        .expect("campaign id");
    app.post(
        &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes"),
        &json!({"count": 1}),
        Some(&admin),
    )
    .await;
    let issue = format!("/api/v1/coupon-campaigns/{campaign}/issue");
    assert_eq!(app.post(&issue, &json!({}), Some(&token)).await.status, 201);
    app.post(&issue, &json!({}), Some(&token))
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");

    let text = app.get("/metrics", None).await.text;

    assert_eq!(value(&text, "investments_total"), Some(1.0));
    assert_eq!(value(&text, "invested_amount_total"), Some(700.0));
    assert_eq!(
        value(
            &text,
            r#"investment_refusals_total{code="AMOUNT_EXCEEDS_REMAINING"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "coupons_issued_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"coupon_issue_refusals_total{code="COUPON_ALREADY_ISSUED"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_outbox_backlog_shows_events_that_cannot_reach_the_stream() {
    let services = testkit::services().await;
    let redis = testkit::TcpProxy::start(testkit::target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(support::Options {
        redis_via: Some(redis.addr()),
        ..support::Options::default()
    })
    .await;
    let token = app.sign_up("backlogged").await;
    app.charge(&token, 10_000).await;
    let tea = app.create_product("Tea", 1_000, 5).await;
    redis.cut();

    for key in ["b-1", "b-2"] {
        let order = json!({"items": [{"productId": tea, "quantity": 1}]});
        let reply = app
            .post_idempotent("/api/v1/orders", key, &order, &token)
            .await;
        assert_eq!(
            reply.status, 201,
            "Postgres alone takes orders: {}",
            reply.text
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    let text = app.get("/metrics", None).await.text;

    assert_eq!(
        value(&text, r#"outbox_unpublished_events{sink="stream"}"#),
        Some(2.0)
    );
    assert!(
        value(
            &text,
            r#"outbox_oldest_unpublished_age_seconds{sink="stream"}"#
        )
        .is_some_and(|s| s >= 1.0),
        "{text}"
    );
}
