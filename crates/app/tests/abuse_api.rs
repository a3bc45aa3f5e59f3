//! Abuse limits end to end: failed sign-ins per login and per client
//! address, attempts per user on orders, coupon issues and investments, all
//! answered `429 RATE_LIMITED` with `Retry-After`; and the request-head and
//! JSON-depth limits.

mod support;

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use support::{Options, Reply, TestApp, testkit_suffix};

fn with(vars: &[(&str, &str)]) -> Options {
    Options {
        extra: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Options::default()
    }
}

async fn sign_in(app: &TestApp, login: &str, password: &str, forwarded: Option<&str>) -> Reply {
    let body = json!({"loginId": login, "password": password}).to_string();
    let mut headers = vec![("content-type", "application/json")];
    if let Some(f) = forwarded {
        headers.push(("x-forwarded-for", f));
    }
    app.send(Method::POST, "/api/v1/auth/signin", &headers, Some(&body))
        .await
}

fn assert_limited(reply: &Reply) {
    reply.assert_problem(429, "RATE_LIMITED");
    let secs: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {:?}", reply.headers));
    assert!(secs >= 1, "{secs}");
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_login_while_good_ones_never_count() {
    let app = TestApp::spawn_with(with(&[
        ("APP_SIGNIN_LIMIT_PER_LOGIN", "3/10m"),
        ("APP_SIGNIN_LIMIT_PER_ADDRESS", "off"),
    ]))
    .await;
    app.sign_up("alice").await;
    app.sign_up("bob").await;

    for _ in 0..10 {
        assert_eq!(
            sign_in(&app, "alice", "password-123", None).await.status,
            200
        );
    }
    for _ in 0..3 {
        sign_in(&app, "alice", "wrong-password", None)
            .await
            .assert_problem(401, "INVALID_CREDENTIALS");
    }
    let limited = sign_in(&app, "alice", "wrong-password", None).await;
    assert_limited(&limited);
    let secs: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((199..=200).contains(&secs), "one slot per 200 s: {secs}");
    // Even the right password waits now: the guesser cannot tell.
    assert_limited(&sign_in(&app, "alice", "password-123", None).await);
    // An unknown login is limited the same way, so limits reveal no accounts.
    for _ in 0..3 {
        sign_in(&app, "nobody", "wrong-password", None)
            .await
            .assert_problem(401, "INVALID_CREDENTIALS");
    }
    assert_limited(&sign_in(&app, "nobody", "wrong-password", None).await);
    // Other logins are not touched.
    assert_eq!(sign_in(&app, "bob", "password-123", None).await.status, 200);
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address_across_logins() {
    // Behind one trusted proxy, the client is the last X-Forwarded-For entry.
    let app = TestApp::spawn_with(with(&[
        ("APP_SIGNIN_LIMIT_PER_LOGIN", "off"),
        ("APP_SIGNIN_LIMIT_PER_ADDRESS", "4/10m"),
        ("APP_PROXY_HOPS", "1"),
    ]))
    .await;
    app.sign_up("carol").await;

    for n in 0..4 {
        let login = format!("guess{n}");
        sign_in(&app, &login, "wrong-password", Some("203.0.113.9"))
            .await
            .assert_problem(401, "INVALID_CREDENTIALS");
    }
    assert_limited(&sign_in(&app, "guess9", "wrong-password", Some("203.0.113.9")).await);
    // Forging an earlier entry does not buy a fresh budget: the proxy's is what counts.
    assert_limited(
        &sign_in(
            &app,
            "guess9",
            "wrong-password",
            Some("198.51.100.1, 203.0.113.9"),
        )
        .await,
    );
    // Another client behind the same proxy signs in as usual.
    assert_eq!(
        sign_in(&app, "carol", "password-123", Some("198.51.100.1"))
            .await
            .status,
        200
    );
}

/// Fires `n` calls of `attempt` at once and returns their statuses.
async fn fire<F, Fut>(n: usize, attempt: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(attempt(i))).collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("task"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_firing_orders_issues_and_investments_is_stopped_per_user_and_kind() {
    let app = Arc::new(TestApp::spawn_with(with(&[("APP_ATTEMPT_LIMIT_PER_USER", "5/10m")])).await);
    let script = app.sign_up("script").await;
    let bystander = app.sign_up("bystander").await;
    app.charge(&script, 1_000_000).await;
    app.charge(&bystander, 1_000_000).await;
    let product = app.create_product("Hot item", 100, 1_000).await;

    let replies = fire(40, |i| {
        let (app, token) = (Arc::clone(&app), script.clone());
        async move {
            app.post_idempotent(
                "/api/v1/orders",
                &format!("script-{i}"),
                &json!({"items": [{"productId": product, "quantity": 1}]}),
                &token,
            )
            .await
        }
    })
    .await;
    let placed = replies.iter().filter(|r| r.status == 201).count();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(placed, 5, "exactly the quota gets through");
    assert_eq!(limited.len(), 35, "the rest is limited, nothing else");
    limited.iter().for_each(|r| assert_limited(r));
    let script_id = app
        .scalar("SELECT id AS n FROM users WHERE login_id = 'script'")
        .await;
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM orders WHERE user_id = {script_id}"
        ))
        .await,
        5
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT stock AS n FROM products WHERE id = {product}"
        ))
        .await,
        995
    );

    // Coupon issues and investments have budgets of their own.
    let issues = fire(8, |_| {
        let (app, token) = (Arc::clone(&app), script.clone());
        async move {
            app.post(
                "/api/v1/coupon-campaigns/999999/issue",
                &json!({}),
                Some(&token),
            )
            .await
        }
    })
    .await;
    assert_eq!(issues.iter().filter(|r| r.status == 404).count(), 5);
    assert_eq!(issues.iter().filter(|r| r.status == 429).count(), 3);
    let invests = fire(8, |i| {
        let (app, token) = (Arc::clone(&app), script.clone());
        async move {
            app.post_idempotent(
                "/api/v1/investments",
                &format!("invest-{i}"),
                &json!({"productId": 999_999, "investAmount": 1_000}),
                &token,
            )
            .await
        }
    })
    .await;
    assert_eq!(invests.iter().filter(|r| r.status == 404).count(), 5);
    assert_eq!(invests.iter().filter(|r| r.status == 429).count(), 3);

    // Another user is not held back by the script.
    let order = app
        .post_idempotent(
            "/api/v1/orders",
            "bystander-1",
            &json!({"items": [{"productId": product, "quantity": 1}]}),
            &bystander,
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
}

#[tokio::test]
async fn a_limited_write_stores_nothing_under_its_key_so_a_later_retry_is_placed() {
    let app = TestApp::spawn_with(with(&[("APP_ATTEMPT_LIMIT_PER_USER", "1/1s")])).await;
    let token = app.sign_up("retrier").await;
    app.charge(&token, 10_000).await;
    let product = app.create_product("Tea", 100, 10).await;
    let body = json!({"items": [{"productId": product, "quantity": 1}]});

    let first = app
        .post_idempotent("/api/v1/orders", "k1", &body, &token)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_limited(
        &app.post_idempotent("/api/v1/orders", "k2", &body, &token)
            .await,
    );

    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let retry = app
        .post_idempotent("/api/v1/orders", "k2", &body, &token)
        .await;
    assert_eq!(retry.status, 201, "the 429 was not stored: {}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn by_default_a_keen_buyer_is_never_limited_and_a_script_is() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("keen").await;
    let path = "/api/v1/coupon-campaigns/999999/issue";

    // The bucket refills from the first attempt on, so the clock starts there.
    let started = std::time::Instant::now();
    // A person refreshing "claim" as fast as they can click, and then some.
    for _ in 0..50 {
        assert_eq!(app.post(path, &json!({}), Some(&token)).await.status, 404);
    }
    // A script: the default quota (a burst of 300, then 5 a second) stops it.
    let mut statuses = Vec::new();
    for _ in 0..300 {
        statuses.push(app.post(path, &json!({}), Some(&token)).await.status);
    }
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let served = 50 + statuses.iter().filter(|s| **s == 404).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (300..=300 + refilled).contains(&served),
        "{served} served, {refilled} refilled"
    );
    assert_eq!(served + limited, 350, "nothing but 404 and 429");
    assert!(limited > 0);
}

#[tokio::test]
async fn oversized_request_heads_and_deeply_nested_json_are_refused_with_problems() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("heads").await;

    let long_value = "v".repeat(9 * 1024);
    let reply = app
        .send(
            Method::GET,
            "/api/v1/me",
            &[("x-filler", &long_value)],
            None,
        )
        .await;
    reply.assert_problem(431, "REQUEST_TOO_LARGE");
    assert!(reply.header("x-request-id").is_some());

    let value = "v".repeat(6 * 1024);
    let many = [
        ("x-a", value.as_str()),
        ("x-b", value.as_str()),
        ("x-c", value.as_str()),
    ];
    app.send(Method::GET, "/health/live", &many, None)
        .await
        .assert_problem(431, "REQUEST_TOO_LARGE");

    let long_query = format!("/api/v1/products?q={}", "a".repeat(9 * 1024));
    app.get(&long_query, Some(&token))
        .await
        .assert_problem(414, "REQUEST_TOO_LARGE");

    // Just under the limits is served as usual.
    let bearer = format!("Bearer {token}");
    let fine = app
        .send(
            Method::GET,
            "/api/v1/me",
            &[("authorization", &bearer), ("x-filler", &value)],
            None,
        )
        .await;
    assert_eq!(fine.status, 200, "{}", fine.text);

    let nested = format!("{{\"amount\":{}1{}}}", "[".repeat(40), "]".repeat(40));
    let key = format!("deep-{}", testkit_suffix());
    let deep = app
        .send(
            Method::POST,
            "/api/v1/points/charge",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("idempotency-key", &key),
            ],
            Some(&nested),
        )
        .await;
    deep.assert_problem(400, "VALIDATION_FAILED");
    assert!(
        deep.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nests deeper than 32")),
        "{}",
        deep.text
    );
}
