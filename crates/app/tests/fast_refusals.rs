//! A gate's refusals over HTTP: recorded in Redis, answered and replayed
//! from there, written to Postgres behind, and never turned into an effect
//! by a retry while only Redis has them (`docs/idempotency.md`).

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Options, TestApp};

const ORDERS: &str = "/api/v1/orders";

fn one_of(product: i64, quantity: i64) -> Value {
    json!({"items": [{"productId": product, "quantity": quantity}]})
}

/// Waits until `sql` counts `want` (the write-behind is asynchronous); no
/// claim about how fast, only that it lands.
async fn eventually(app: &TestApp, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = app.scalar(sql).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {n}, not {want}, after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A product with one unit, sold: every further order is refused at the gate.
async fn sold_out(app: &TestApp, token: &str) -> i64 {
    let item = app.create_product("Last one", 1_000, 1).await;
    app.charge(token, 10_000).await;
    let first = app
        .post_idempotent(ORDERS, "winner", &one_of(item, 1), token)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    item
}

/// Whether Redis holds a refusal record for the token's user and `key`.
async fn recorded_in_redis(app: &TestApp, token: &str, key: &str) -> bool {
    let user_id = app.get("/api/v1/me", Some(token)).await.body["userId"]
        .as_i64()
        .expect("userId");
    let mut redis = app.redis.connect().await;
    deadpool_redis::redis::cmd("EXISTS")
        .arg(format!("{}refusal:{user_id}:{key}", app.redis.prefix))
        .query_async(&mut redis)
        .await
        .expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rush_of_gate_refusals_is_replayed_byte_for_byte_and_reaches_postgres() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let token = app.sign_up("late-crowd").await;
    let item = sold_out(&app, &token).await;

    let refused = join_all((0..40).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            app.post_idempotent(ORDERS, &format!("late-{i}"), &one_of(item, 1), token)
                .await
        }
    }))
    .await;
    for reply in &refused {
        reply.assert_problem(409, "OUT_OF_STOCK");
        assert_eq!(reply.header("idempotent-replayed"), None);
    }

    let again = app
        .post_idempotent(ORDERS, "late-7", &one_of(item, 1), &token)
        .await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (409, refused[7].text.as_str()),
        "the same bytes again"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.post_idempotent(ORDERS, "late-7", &one_of(item, 2), &token)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");

    eventually(
        &app,
        "SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'late-%'",
        40,
    )
    .await;
    let stored = app
        .scalar(&format!(
            "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'late-7' \
               AND response_status = 409 \
               AND response_body = convert_to('{}', 'UTF8')",
            refused[7].text.replace('\'', "''")
        ))
        .await;
    assert_eq!(stored, 1, "Postgres holds the bytes that were sent");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 1);
}

#[tokio::test]
async fn a_retry_of_a_refusal_only_redis_holds_is_answered_from_it_after_a_restock() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let token = app.sign_up("patient").await;
    let item = sold_out(&app, &token).await;
    let refused = app
        .post_idempotent(ORDERS, "too-late", &one_of(item, 1), &token)
        .await;
    refused.assert_problem(409, "OUT_OF_STOCK");
    // The window: the record is in Redis and not (yet) in Postgres.
    eventually(
        &app,
        "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'too-late'",
        1,
    )
    .await;
    app.scalar(
        "WITH d AS (DELETE FROM idempotency_keys WHERE key = 'too-late' RETURNING 1) \
         SELECT count(*) AS n FROM d",
    )
    .await;
    assert!(
        recorded_in_redis(&app, &token, "too-late").await,
        "Redis holds the refusal"
    );

    let restocked = app
        .patch(
            &format!("/api/v1/admin/products/{item}"),
            &json!({"stockDelta": 5}),
            &admin,
        )
        .await;
    assert_eq!(restocked.status, 200, "{}", restocked.text);
    let retried = app
        .post_idempotent(ORDERS, "too-late", &one_of(item, 1), &token)
        .await;

    assert_eq!(
        (retried.status, retried.text.as_str()),
        (409, refused.text.as_str()),
        "the recorded refusal, not a sale"
    );
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 1);
    assert_eq!(
        app.scalar(&format!(
            "SELECT stock AS n FROM products WHERE id = {item}"
        ))
        .await,
        5
    );
    let fresh = app
        .post_idempotent(ORDERS, "new-key", &one_of(item, 1), &token)
        .await;
    assert_eq!(fresh.status, 201, "the restock sells: {}", fresh.text);
}

#[tokio::test]
async fn a_paid_order_retried_after_redis_lost_its_data_is_replayed_though_sold_out() {
    // Redis knows nothing of the key any more (restarted without
    // persistence, or the gate's mark lapsed): the rebuilt counter says
    // sold out, the gate refuses and records, and Postgres' record of the
    // order answers.
    let app = TestApp::spawn().await;
    let token = app.sign_up("winner").await;
    let item = app.create_product("Last one", 1_000, 1).await;
    app.charge(&token, 10_000).await;
    let paid = app
        .post_idempotent(ORDERS, "winner", &one_of(item, 1), &token)
        .await;
    assert_eq!(paid.status, 201, "{}", paid.text);

    app.redis.lose_everything().await;
    let retried = app
        .post_idempotent(ORDERS, "winner", &one_of(item, 1), &token)
        .await;
    let reused = app
        .post_idempotent(ORDERS, "winner", &one_of(item, 2), &token)
        .await;

    assert_eq!(
        (retried.status, retried.text.as_str()),
        (201, paid.text.as_str()),
        "the order, not OUT_OF_STOCK"
    );
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    reused.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert!(
        !recorded_in_redis(&app, &token, "winner").await,
        "no refusal stays recorded under a paid key"
    );
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 1);
}

#[tokio::test]
async fn a_refused_investment_is_replayed_and_reaches_postgres() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let now = chrono::Utc::now();
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let created = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Small round",
                "totalInvestingAmount": 1_000,
                "startedAt": at(now - chrono::Duration::hours(1)),
                "finishedAt": at(now + chrono::Duration::hours(1)),
            }),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let product = created.body["productId"].as_i64().expect("productId");
    let token = app.sign_up("investor").await;
    app.charge(&token, 10_000).await;
    let body = |amount: i64| json!({"productId": product, "investAmount": amount});
    let filled = app
        .post_idempotent("/api/v1/investments", "fill", &body(1_000), &token)
        .await;
    assert_eq!(filled.status, 201, "{}", filled.text);

    let refused = app
        .post_idempotent("/api/v1/investments", "over", &body(100), &token)
        .await;
    let again = app
        .post_idempotent("/api/v1/investments", "over", &body(100), &token)
        .await;

    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(
        (again.status, again.text.as_str()),
        (409, refused.text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.post_idempotent("/api/v1/investments", "over", &body(200), &token)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert!(
        recorded_in_redis(&app, &token, "over").await,
        "the refusal was recorded at the fast path"
    );
    eventually(
        &app,
        "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'over' AND response_status = 409",
        1,
    )
    .await;
}
