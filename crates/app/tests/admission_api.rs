//! Admission control end to end (`web::admission`, `docs/reliability.md`,
//! "Overload"): a money write over its family's in-flight bound is answered
//! `503 SERVICE_UNAVAILABLE` with `Retry-After` at once, stores nothing
//! under its key, and runs normally when retried with that key.

mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Options, Reply, TestApp};

/// A tiny bound and no wait, so that a burst is shed; a long dependency
/// timeout, so that no 503 can come from waiting for a connection.
fn tiny_bounds() -> Options {
    Options {
        extra: vec![
            ("APP_MAX_IN_FLIGHT_ORDERS".into(), "2".into()),
            ("APP_MAX_IN_FLIGHT_INVESTMENTS".into(), "1".into()),
            ("APP_ADMISSION_WAIT".into(), "0".into()),
            ("APP_DEPENDENCY_TIMEOUT".into(), "30s".into()),
        ],
        ..Options::default()
    }
}

/// Sends every `(key, body, token)` to `path` at once; each reply with how
/// long it took.
async fn burst(
    app: &TestApp,
    path: &str,
    writes: &[(String, Value, String)],
) -> Vec<(Reply, Duration)> {
    join_all(writes.iter().map(|(key, body, token)| async move {
        let sent = Instant::now();
        let reply = app.post_idempotent(path, key, body, token).await;
        (reply, sent.elapsed())
    }))
    .await
}

/// Checks the shed answers and returns their keys.
fn shed_keys(writes: &[(String, Value, String)], replies: &[(Reply, Duration)]) -> Vec<usize> {
    let mut shed = Vec::new();
    for (i, (reply, _took)) in replies.iter().enumerate() {
        match reply.status {
            201 => {}
            503 => {
                reply.assert_problem(503, "SERVICE_UNAVAILABLE");
                assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.text);
                let detail = reply.body["detail"].as_str().unwrap_or_default();
                // Shed, not a timeout's 503 ("outcome unknown"); how fast
                // it is shed is the overload scenario's to measure.
                assert!(detail.contains("not run"), "{detail}");
                shed.push(i);
            }
            other => panic!("{} got {other}: {}", writes[i].0, reply.text),
        }
    }
    shed
}

async fn metric(app: &TestApp, family: &str) -> i64 {
    let text = app.get("/metrics", None).await.text;
    let line = format!("requests_shed_total{{family=\"{family}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_over_the_bound_are_shed_at_once_store_nothing_and_run_when_retried() {
    let app = TestApp::spawn_with(tiny_bounds()).await;
    let product = app.create_product("Busy item", 100, 1_000).await;
    let mut buyers = Vec::new();
    for i in 0..10 {
        let token = app.sign_up(&format!("busy-{i}")).await;
        app.charge(&token, 100_000).await;
        buyers.push(token);
    }
    let writes: Vec<(String, Value, String)> = (0..150)
        .map(|i| {
            (
                format!("busy-{i}"),
                json!({"items": [{"productId": product, "quantity": 1}]}),
                buyers[i % buyers.len()].clone(),
            )
        })
        .collect();

    let replies = burst(&app, "/api/v1/orders", &writes).await;

    let shed = shed_keys(&writes, &replies);
    assert!(
        !shed.is_empty(),
        "a burst of 150 over a bound of 2 sheds some"
    );
    let keys: Vec<&str> = shed.iter().map(|i| writes[*i].0.as_str()).collect();
    app.assert_no_record_under(&keys).await;
    assert_eq!(metric(&app, "orders").await, shed.len() as i64);
    // Retried one at a time (under the bound), each runs as a first request.
    for i in &shed {
        let (key, body, token) = &writes[*i];
        let reply = app
            .post_idempotent("/api/v1/orders", key, body, token)
            .await;
        assert_eq!(reply.status, 201, "{key}: {}", reply.text);
        assert_eq!(
            reply.header("idempotent-replayed"),
            None,
            "{key} ran afresh"
        );
    }
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 150);
    assert_eq!(
        app.scalar(&format!(
            "SELECT stock AS n FROM products WHERE id = {product}"
        ))
        .await,
        1_000 - 150
    );
    assert_eq!(
        app.scalar("SELECT sum(balance)::bigint AS n FROM wallets")
            .await,
        10 * 100_000 - 150 * 100
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'busy-%'")
            .await,
        150
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn investments_over_the_bound_are_shed_and_the_amount_invested_is_exact() {
    let app = TestApp::spawn_with(tiny_bounds()).await;
    let admin = app.admin_token().await;
    let now = Utc::now();
    let created = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Busy farm",
                "totalInvestingAmount": 1_000_000,
                "startedAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
                "finishedAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            }),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let product = created.body["productId"].as_i64().expect("id");
    let mut investors = Vec::new();
    for i in 0..10 {
        investors.push(app.sign_up(&format!("keen-{i}")).await);
    }
    let writes: Vec<(String, Value, String)> = (0..100)
        .map(|i| {
            (
                format!("keen-{i}"),
                json!({"productId": product, "investAmount": 10 + i}),
                investors[i % investors.len()].clone(),
            )
        })
        .collect();

    let replies = burst(&app, "/api/v1/investments", &writes).await;

    let shed = shed_keys(&writes, &replies);
    assert!(
        !shed.is_empty(),
        "a burst of 100 over a bound of 1 sheds some"
    );
    let keys: Vec<&str> = shed.iter().map(|i| writes[*i].0.as_str()).collect();
    app.assert_no_record_under(&keys).await;
    assert_eq!(metric(&app, "investments").await, shed.len() as i64);
    assert_eq!(
        metric(&app, "orders").await,
        0,
        "families are bounded apart"
    );
    for i in &shed {
        let (key, body, token) = &writes[*i];
        let reply = app
            .post_idempotent("/api/v1/investments", key, body, token)
            .await;
        assert_eq!(reply.status, 201, "{key}: {}", reply.text);
        assert_eq!(
            reply.header("idempotent-replayed"),
            None,
            "{key} ran afresh"
        );
    }
    let total: i64 = (0..100).map(|i| 10 + i).sum();
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        total
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM investments").await,
        100
    );
}
