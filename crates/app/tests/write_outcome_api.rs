//! A 503 tells the truth (issue 18, item 7): when a backing service fails
//! an idempotent write, the server cannot always know whether the write
//! committed (a timeout while Postgres commits; an order whose lane wait
//! ended while its batch ran). Every write's 503 says the outcome is
//! unknown and to retry with the same key; the retry then has exactly one
//! effect. A read's 503 stays the plain "retry later".

mod support;

use serde_json::json;
use support::{Options, Reply, TestApp};
use testkit::{TcpProxy, target_of};

fn assert_outcome_unknown(reply: &Reply) {
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("the outcome is unknown") && detail.contains("same Idempotency-Key"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_and_an_investment_failed_by_postgres_say_the_outcome_is_unknown() {
    let services = testkit::services().await;
    let pg = TcpProxy::start(target_of(&services.postgres_url)).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(pg.addr()),
        extra: vec![("APP_DEPENDENCY_TIMEOUT".into(), "500ms".into())],
        ..Options::default()
    })
    .await;
    let admin = app.admin_token().await;
    let product = app.create_product("Lamp", 1_000, 5).await;
    let created = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": "Wind farm",
                "totalInvestingAmount": 1_000_000,
                "startedAt": "2000-01-01T00:00:00Z",
                "finishedAt": "2999-01-01T00:00:00Z",
            }),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let fund = created.body["productId"].as_i64().expect("an id");
    let token = app.sign_up("outage-buyer").await;
    app.charge(&token, 10_000).await;
    let order = json!({"items": [{"productId": product, "quantity": 1}]});
    let investment = json!({"productId": fund, "investAmount": 2_000});

    pg.cut();
    let ordered = app
        .post_idempotent("/api/v1/orders", "lamp", &order, &token)
        .await;
    let invested = app
        .post_idempotent("/api/v1/investments", "wind", &investment, &token)
        .await;
    let balance = app.get("/api/v1/points", Some(&token)).await;
    pg.restore();

    assert_outcome_unknown(&ordered);
    assert_outcome_unknown(&invested);
    balance.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(
        !balance.text.contains("outcome"),
        "a read has no outcome to doubt: {}",
        balance.text
    );

    // The retries with the same keys have exactly one effect each. The
    // deadline only bounds the wait for the pool to reconnect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut retried = (0, 0);
    while std::time::Instant::now() < deadline {
        let o = app
            .post_idempotent("/api/v1/orders", "lamp", &order, &token)
            .await;
        let i = app
            .post_idempotent("/api/v1/investments", "wind", &investment, &token)
            .await;
        retried = (o.status, i.status);
        if retried == (201, 201) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(retried, (201, 201), "the service came back");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 1);
    assert_eq!(app.scalar("SELECT count(*) AS n FROM investments").await, 1);
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        10_000 - 1_000,
        "the order was paid once"
    );
    assert_eq!(
        app.get(&format!("/api/v1/invest-products/{fund}"), Some(&token))
            .await
            .body["currentInvestingAmount"],
        2_000
    );
}
