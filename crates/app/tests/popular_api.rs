//! Popular products: top 5 sold over the last 72 hours, from the event
//! stream, exactly once per event, and from Postgres when Redis is down.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};

const POPULAR: &str = "/api/v1/products/popular";

/// Six products and one order per (product, quantity); returns the ids and
/// the expected top 5 as (id, sold).
async fn sell(app: &TestApp) -> (Vec<i64>, Vec<(i64, i64)>) {
    let mut ids = Vec::new();
    for name in ["A", "B", "C", "D", "E", "F"] {
        ids.push(app.create_product(name, 100, 100).await);
    }
    let token = app
        .sign_up(&format!("fan-{}", support::testkit_suffix()))
        .await;
    app.charge(&token, 100_000).await;
    let sold = [
        (ids[1], 5),
        (ids[0], 3),
        (ids[2], 3),
        (ids[3], 2),
        (ids[4], 1),
        (ids[5], 1),
    ];
    for (i, (product, quantity)) in sold.iter().enumerate() {
        let reply = app
            .post_idempotent(
                "/api/v1/orders",
                &format!("p-{i}"),
                &json!({"items": [{"productId": product, "quantity": quantity}]}),
                &token,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    // B 5, then A and C tie at 3 (lower id first), D 2, then E and F tie at 1: E.
    let expected = vec![
        (ids[1], 5),
        (ids[0], 3),
        (ids[2], 3),
        (ids[3], 2),
        (ids[4], 1),
    ];
    (ids, expected)
}

fn ranking(body: &Value) -> Vec<(i64, i64)> {
    body.as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    (
                        p["id"].as_i64().unwrap_or(0),
                        p["soldQuantity"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Units of `product` counted by the Redis ranking this hour (not the SQL fallback).
async fn redis_score(app: &TestApp, product: i64) -> Option<f64> {
    let mut conn = app.redis.connect().await;
    let bucket = format!(
        "{}popular:{{h}}:{}",
        app.redis.prefix,
        chrono::Utc::now().format("%Y%m%d%H")
    );
    deadpool_redis::redis::cmd("ZSCORE")
        .arg(bucket)
        .arg(product)
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

/// Polls until the Redis ranking counted `sold` units of `product`.
async fn until_counted(app: &TestApp, product: i64, sold: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_score(app, product).await != Some(sold) {
        assert!(
            Instant::now() < deadline,
            "the consumer did not count product {product}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `popular` until it shows `expected` or `within` passes.
async fn popular_until(
    app: &TestApp,
    token: &str,
    expected: &[(i64, i64)],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let reply = app.get(POPULAR, Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if ranking(&reply.body) == expected || Instant::now() > deadline {
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_top_five_come_from_the_order_events() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("browser").await;
    assert_eq!(app.get(POPULAR, Some(&token)).await.body, json!([]));

    let (ids, expected) = sell(&app).await;
    until_counted(&app, ids[1], 5.0).await;
    let body = popular_until(&app, &token, &expected, Duration::from_secs(10)).await;

    assert_eq!(ranking(&body), expected);
    assert_eq!(body[0]["name"], "B");
    assert_eq!(body[0]["price"], 100);
    // The ranking is Redis', fed by the stream: the events were counted there.
    let mut conn = app.redis.connect().await;
    let seen: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{}popular:{{h}}:seen:*", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis");
    assert_eq!(seen.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_twice_is_counted_once() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("browser").await;
    let (ids, expected) = sell(&app).await;
    until_counted(&app, ids[1], 5.0).await;
    assert_eq!(
        ranking(&popular_until(&app, &token, &expected, Duration::from_secs(10)).await),
        expected
    );

    // Every event is in the stream once.
    let stream_len = || async {
        let mut conn = app.redis.connect().await;
        deadpool_redis::redis::cmd("XLEN")
            .arg(format!("{}events:orders", app.redis.prefix))
            .query_async::<i64>(&mut conn)
            .await
            .expect("redis")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_len().await < 6 {
        assert!(Instant::now() < deadline, "not every event was published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // As if the relay died after appending a batch but before marking it:
    // every event is published again.
    app.scalar(
        "WITH r AS (UPDATE outbox SET published_at = NULL RETURNING 1) SELECT count(*) AS n FROM r",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .scalar("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        .await
        > 0
    {
        assert!(Instant::now() < deadline, "the relay did not publish again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the consumer read the duplicates, and the 1 s cache expire.
    tokio::time::sleep(Duration::from_millis(2_000)).await;

    let mut conn = app.redis.connect().await;
    let entries: i64 = deadpool_redis::redis::cmd("XLEN")
        .arg(format!("{}events:orders", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis");
    assert_eq!(entries, 12, "every event is in the stream twice");

    let body = app.get(POPULAR, Some(&token)).await.body;
    assert_eq!(ranking(&body), expected, "duplicates did not count");
    assert_eq!(
        redis_score(&app, ids[1]).await,
        Some(5.0),
        "counted once in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_ranking_comes_from_postgres() {
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        extra: vec![("APP_DEPENDENCY_TIMEOUT".into(), "500ms".into())],
        ..Options::default()
    })
    .await;
    let token = app.sign_up("browser").await;
    redis.cut();

    let (_, expected) = sell(&app).await;
    let reply = app.get(POPULAR, Some(&token)).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(ranking(&reply.body), expected);
}

#[tokio::test]
async fn popular_needs_a_token() {
    let app = TestApp::spawn().await;
    app.get(POPULAR, None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");
}
