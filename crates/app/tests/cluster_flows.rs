//! The acceptance flows on a Redis Cluster (`APP_REDIS_CLUSTER_NODES`): 3
//! masters, each with a replica, that `tests/redis-cluster/run.sh` starts
//! and names in `TEST_REDIS_CLUSTER_NODES`. Every gate script, the lock, the
//! rate limits, the order stream and the ranking run on it; a script whose
//! keys were in different slots would be refused (`CROSSSLOT`) and answer
//! 503 here.
//!
//! ```sh
//! tests/redis-cluster/run.sh      # starts the cluster, runs these and the failover step
//! ```
#![cfg(feature = "redis-cluster-tests")]

mod support;

use std::time::{Duration, Instant};

use deadpool_redis::redis;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Options, TestApp};

fn cluster_nodes() -> String {
    std::env::var("TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "TEST_REDIS_CLUSTER_NODES is not set: run tests/redis-cluster/run.sh, which starts a \
             Redis Cluster (3 masters, 3 replicas) and names its nodes"
        )
    })
}

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("APP_REDIS_CLUSTER_NODES".to_owned(), cluster_nodes())];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    TestApp::spawn_with(Options {
        extra: vars,
        ..Options::default()
    })
    .await
}

async fn buyer(app: &TestApp, name: &str) -> String {
    let token = app
        .sign_up(&format!("{name}-{}", support::testkit_suffix()))
        .await;
    app.charge(&token, 1_000_000).await;
    token
}

fn codes(replies: &[support::Reply]) -> Vec<String> {
    replies
        .iter()
        .map(|r| match r.body["code"].as_str() {
            Some(code) if r.status >= 400 => format!("{} {code}", r.status),
            _ => r.status.to_string(),
        })
        .collect()
}

fn count(codes: &[String], wanted: &str) -> usize {
    codes.iter().filter(|c| *c == wanted).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_sell_exactly_the_stock_and_a_refused_line_gives_back_the_others() {
    let app = spawn(&[]).await;
    let a = app.create_product("A", 100, 5).await;
    let b = app.create_product("B", 100, 3).await;
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(buyer(&app, &format!("ab{i}")).await);
    }

    // Twelve orders of one A and one B each: B runs out after three; every
    // refused order's A is given back.
    let both = json!({"items": [{"productId": a, "quantity": 1}, {"productId": b, "quantity": 1}]});
    let replies = join_all(tokens.iter().enumerate().map(|(i, token)| {
        let both = both.clone();
        let app = &app;
        async move {
            app.post_idempotent("/api/v1/orders", &format!("ab-{i}"), &both, token)
                .await
        }
    }))
    .await;
    let got = codes(&replies);
    assert_eq!(count(&got, "201"), 3, "{got:?}");
    assert_eq!(count(&got, "409 OUT_OF_STOCK"), 9, "{got:?}");

    // What is left of A (two units) still sells, and no more.
    let one_a = json!({"items": [{"productId": a, "quantity": 1}]});
    let more = join_all((0..4).map(|i| {
        let (app, token, one_a) = (&app, &tokens[i], one_a.clone());
        async move {
            app.post_idempotent("/api/v1/orders", &format!("a-{i}"), &one_a, token)
                .await
        }
    }))
    .await;
    let got = codes(&more);
    assert_eq!(
        count(&got, "201"),
        2,
        "A's reservations were given back: {got:?}"
    );
    assert_eq!(count(&got, "409 OUT_OF_STOCK"), 2, "{got:?}");

    assert_eq!(
        app.scalar(&format!("SELECT stock AS n FROM products WHERE id = {a}"))
            .await,
        0
    );
    assert_eq!(
        app.scalar(&format!("SELECT stock AS n FROM products WHERE id = {b}"))
            .await,
        0
    );
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 5);

    // A retry of a refused order replays its answer.
    let refused = replies
        .iter()
        .position(|r| r.status == 409)
        .expect("a refused order");
    let again = app
        .post_idempotent(
            "/api/v1/orders",
            &format!("ab-{refused}"),
            &both,
            &tokens[refused],
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body, replies[refused].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupons_are_issued_once_per_user_up_to_the_pool() {
    let app = spawn(&[]).await;
    let admin = app.admin_token().await;
    let campaign = app
        .post(
            "/api/v1/admin/coupon-campaigns",
            &json!({
                "name": "Cluster sale", "discountType": "PERCENT", "discountValue": 10,
                "maxDiscountAmount": 5_000, "minOrderAmount": 10_000, "validDays": 7,
            }),
            Some(&admin),
        )
        .await
        .body["id"]
        .as_i64()
        .expect("campaign id");
    let generated = app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes"),
            &json!({"count": 5}),
            Some(&admin),
        )
        .await;
    assert_eq!(generated.status, 201, "{}", generated.text);
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(buyer(&app, &format!("c{i}")).await);
    }
    let issue = format!("/api/v1/coupon-campaigns/{campaign}/issue");
    let replies = join_all(tokens.iter().enumerate().map(|(i, token)| {
        let (app, issue) = (&app, &issue);
        async move {
            app.post_idempotent(issue, &format!("c-{i}"), &json!({}), token)
                .await
        }
    }))
    .await;
    let got = codes(&replies);
    assert_eq!(count(&got, "201"), 5, "{got:?}");
    assert_eq!(count(&got, "409 COUPON_SOLD_OUT"), 7, "{got:?}");
    let winner = replies
        .iter()
        .position(|r| r.status == 201)
        .expect("issued");
    app.post_idempotent(&issue, "c-again", &json!({}), &tokens[winner])
        .await
        .assert_problem(409, "COUPON_ALREADY_ISSUED");
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(DISTINCT owner_id) AS n FROM coupons WHERE campaign_id = {campaign}"
        ))
        .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn investments_never_pass_the_target() {
    let app = spawn(&[]).await;
    let admin = app.admin_token().await;
    let now = chrono::Utc::now();
    let product = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Cluster farm", "totalInvestingAmount": 1_000,
                "startedAt": (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "finishedAt": (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
            Some(&admin),
        )
        .await
        .body["productId"]
        .as_i64()
        .expect("productId");
    let mut tokens = Vec::new();
    for i in 0..15 {
        tokens.push(buyer(&app, &format!("i{i}")).await);
    }
    let body = json!({"productId": product, "investAmount": 100});
    let replies = join_all(tokens.iter().enumerate().map(|(i, token)| {
        let (app, body) = (&app, body.clone());
        async move {
            app.post_idempotent("/api/v1/investments", &format!("i-{i}"), &body, token)
                .await
        }
    }))
    .await;
    let got = codes(&replies);
    assert_eq!(count(&got, "201"), 10, "{got:?}");
    assert_eq!(count(&got, "409 SOLD_OUT"), 5, "{got:?}");
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        1_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_limited_across_the_cluster() {
    let app = spawn(&[
        ("APP_SIGNIN_LIMIT_PER_LOGIN", "3/10m"),
        ("APP_SIGNIN_LIMIT_PER_ADDRESS", "off"),
    ])
    .await;
    let login = format!("rl-{}", support::testkit_suffix());
    app.sign_up(&login).await;
    let wrong = json!({"loginId": login, "password": "wrong-password"});
    for _ in 0..3 {
        app.post("/api/v1/auth/signin", &wrong, None)
            .await
            .assert_problem(401, "INVALID_CREDENTIALS");
    }
    app.post("/api/v1/auth/signin", &wrong, None)
        .await
        .assert_problem(429, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_reach_the_stream_and_the_ranking() {
    let app = spawn(&[]).await;
    let product = app.create_product("Ranked", 100, 10).await;
    let token = buyer(&app, "ranked").await;
    let body = json!({"items": [{"productId": product, "quantity": 2}]});
    for i in 0..3 {
        let reply = app
            .post_idempotent("/api/v1/orders", &format!("r-{i}"), &body, &token)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }

    // The relay (under its lock) appended the events to the stream on the cluster.
    let nodes: Vec<String> = cluster_nodes()
        .split(',')
        .map(|n| format!("redis://{n}"))
        .collect();
    let client = redis::cluster::ClusterClient::new(nodes).expect("cluster client");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("cluster answers");
    let stream = format!("{}events:orders", app.redis.prefix);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut entries = 0;
    while Instant::now() < deadline {
        entries = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .expect("XLEN");
        if entries >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries, 3, "three events in {stream}");

    // The ranking consumed them (its script adds an hour's counts and the
    // seen mark together; the read sums 72 hourly keys at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let popular: Value = app.get("/api/v1/products/popular", Some(&token)).await.body;
        let sold = popular
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == product))
            .map(|p| p["soldQuantity"].clone());
        if sold == Some(json!(6)) {
            break;
        }
        assert!(Instant::now() < deadline, "popular: {popular}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counted: i64 = redis::cmd("ZSCORE")
        .arg(format!(
            "{}popular:{{h}}:{}",
            app.redis.prefix,
            chrono::Utc::now().format("%Y%m%d%H")
        ))
        .arg(product.to_string())
        .query_async::<Option<f64>>(&mut conn)
        .await
        .expect("ZSCORE")
        .map_or(0, |s| s as i64);
    assert_eq!(counted, 6, "counted by the Redis ranking on the cluster");
}
