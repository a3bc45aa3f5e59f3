//! Points over HTTP: balance, charge, history, and the idempotency contract.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};

const CHARGE: &str = "/api/v1/points/charge";

async fn user_id(app: &TestApp, token: &str) -> i64 {
    app.get("/api/v1/me", Some(token)).await.body["userId"]
        .as_i64()
        .expect("userId")
}

#[tokio::test]
async fn charge_then_read_the_balance_and_the_history_newest_first() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("payer").await;
    let id = user_id(&app, &token).await;

    let before = app.get("/api/v1/points", Some(&token)).await;
    assert_eq!(before.body, json!({"userId": id, "balance": 0}));

    let first = app
        .post_idempotent(CHARGE, "c-1", &json!({"amount": 5_000}), &token)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.body,
        json!({"userId": id, "balance": 5_000, "chargedAmount": 5_000})
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    let second = app
        .post_idempotent(CHARGE, "c-2", &json!({"amount": 3_000}), &token)
        .await;
    assert_eq!(second.body["balance"], 8_000);

    let balance = app.get("/api/v1/points", Some(&token)).await;
    assert_eq!(balance.body["balance"], 8_000);
    let history = app
        .get("/api/v1/points/history?size=10", Some(&token))
        .await;
    assert_eq!(history.status, 200, "{}", history.text);
    assert_eq!(history.body["totalCount"], 2);
    let items = history.body["items"].as_array().expect("items");
    assert_eq!(
        (items[0]["kind"].as_str(), items[0]["amount"].as_i64()),
        (Some("CHARGE"), Some(3_000))
    );
    assert_eq!(items[0]["balanceAfter"], 8_000);
    assert_eq!(items[1]["balanceAfter"], 5_000);
    assert!(items[0]["id"].as_i64() > items[1]["id"].as_i64());
    assert!(items[0].get("orderId").is_none(), "no order for a charge");
    assert!(
        items[0]["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test]
async fn points_need_a_token() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/points", None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    app.post(CHARGE, &json!({"amount": 5_000}), None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_charge_without_an_idempotency_key_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("nokey").await;

    let reply = app
        .post(CHARGE, &json!({"amount": 5_000}), Some(&token))
        .await;
    reply.assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");

    let too_long = app
        .post_idempotent(CHARGE, &"k".repeat(129), &json!({"amount": 5_000}), &token)
        .await;
    too_long.assert_problem(400, "VALIDATION_FAILED");
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        0
    );
}

#[tokio::test]
async fn amounts_outside_one_thousand_to_one_million_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("bounds").await;

    for (i, amount) in [999, 1_000_001, 0, -5_000].into_iter().enumerate() {
        let reply = app
            .post_idempotent(
                CHARGE,
                &format!("b-{i}"),
                &json!({"amount": amount}),
                &token,
            )
            .await;
        reply.assert_problem(400, "INVALID_CHARGE_AMOUNT");
    }
    let not_a_number = app
        .post_idempotent(CHARGE, "b-x", &json!({"amount": "5000"}), &token)
        .await;
    not_a_number.assert_problem(400, "VALIDATION_FAILED");
    assert!(
        not_a_number.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("amount")
    );
    let fraction = app
        .post_idempotent(CHARGE, "b-y", &json!({"amount": 1000.5}), &token)
        .await;
    fraction.assert_problem(400, "VALIDATION_FAILED");

    for amount in [1_000, 1_000_000] {
        let ok = app
            .post_idempotent(
                CHARGE,
                &format!("ok-{amount}"),
                &json!({"amount": amount}),
                &token,
            )
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        1_001_000
    );
}

#[tokio::test]
async fn an_invalid_amount_is_a_business_answer_stored_under_its_key() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("stored-400").await;

    let first = app
        .post_idempotent(CHARGE, "small", &json!({"amount": 999}), &token)
        .await;
    let again = app
        .post_idempotent(CHARGE, "small", &json!({"amount": 999}), &token)
        .await;
    let other = app
        .post_idempotent(CHARGE, "small", &json!({"amount": 5_000}), &token)
        .await;

    first.assert_problem(400, "INVALID_CHARGE_AMOUNT");
    assert_eq!(
        (again.status, again.text.as_str()),
        (400, first.text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    other.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        0
    );
}

#[tokio::test]
async fn a_key_with_bytes_outside_visible_ascii_is_invalid_not_missing() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("utf8-key").await;
    let key =
        reqwest::header::HeaderValue::from_bytes("키-1".as_bytes()).expect("obs-text is allowed");

    let reply = app
        .http
        .post(app.url(CHARGE))
        .bearer_auth(&token)
        .header("Idempotency-Key", key)
        .json(&json!({"amount": 5_000}))
        .send()
        .await
        .expect("sent");

    let reply = support::Reply::from(reply).await;
    reply.assert_problem(400, "VALIDATION_FAILED");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key")
    );
}

#[tokio::test]
async fn a_replay_returns_the_same_bytes_and_charges_once() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("replayer").await;

    let first = app
        .post_idempotent(CHARGE, "same-key", &json!({"amount": 7_000}), &token)
        .await;
    let again = app
        .post_idempotent(CHARGE, "same-key", &json!({"amount": 7_000}), &token)
        .await;
    // The same request, written differently, is still the same request:
    // spaced out, or with the amount as JSON Schema's integer `7.0e3`.
    let written = |body: &'static str| {
        let request = app
            .http
            .post(app.url(CHARGE))
            .bearer_auth(&token)
            .header("Idempotency-Key", "same-key")
            .header("content-type", "application/json")
            .body(body)
            .send();
        async move { support::Reply::from(request.await.expect("sent")).await }
    };
    let spaced = written("{ \"amount\" :  7000 }").await;
    let exponent = written("{\"amount\":7.0e3}").await;

    assert_eq!(first.status, 200);
    assert_eq!((again.status, spaced.status), (200, 200));
    assert_eq!(exponent.status, 200, "{}", exponent.text);
    assert_eq!(again.text, first.text, "byte-identical body");
    assert_eq!(spaced.text, first.text);
    assert_eq!(exponent.text, first.text);
    assert_eq!(exponent.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        7_000
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        1
    );
}

#[tokio::test]
async fn another_user_may_use_the_same_key() {
    let app = TestApp::spawn().await;
    let alice = app.sign_up("key-alice").await;
    let bob = app.sign_up("key-bob").await;

    let a = app
        .post_idempotent(CHARGE, "shared", &json!({"amount": 2_000}), &alice)
        .await;
    let b = app
        .post_idempotent(CHARGE, "shared", &json!({"amount": 2_000}), &bob)
        .await;

    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(b.header("idempotent-replayed"), None, "bob's request ran");
    assert_eq!(
        app.get("/api/v1/points", Some(&alice)).await.body["balance"],
        2_000
    );
    assert_eq!(
        app.get("/api/v1/points", Some(&bob)).await.body["balance"],
        2_000
    );
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("reuser").await;
    app.post_idempotent(CHARGE, "k", &json!({"amount": 2_000}), &token)
        .await;

    let reused = app
        .post_idempotent(CHARGE, "k", &json!({"amount": 9_000}), &token)
        .await;

    reused.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        2_000
    );
}

#[tokio::test]
async fn the_balance_cap_refusal_is_stored_and_replayed() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("rich").await;
    let id = user_id(&app, &token).await;
    app.post_idempotent(CHARGE, "seed", &json!({"amount": 1_000}), &token)
        .await;
    app.scalar(&format!("WITH u AS (UPDATE wallets SET balance = 99999000 WHERE user_id = {id} RETURNING 1) SELECT count(*) AS n FROM u")).await;

    let to_the_cap = app
        .post_idempotent(CHARGE, "cap-1", &json!({"amount": 1_000}), &token)
        .await;
    assert_eq!(
        to_the_cap.body["balance"], 100_000_000,
        "{}",
        to_the_cap.text
    );
    let over = app
        .post_idempotent(CHARGE, "cap-2", &json!({"amount": 1_000}), &token)
        .await;
    over.assert_problem(409, "BALANCE_LIMIT_EXCEEDED");
    let replayed = app
        .post_idempotent(CHARGE, "cap-2", &json!({"amount": 1_000}), &token)
        .await;

    assert_eq!(replayed.status, 409);
    assert_eq!(replayed.text, over.text);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replayed.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        100_000_000
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        2,
        "seed and cap-1 only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_requests_with_one_key_charge_exactly_once() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let token = app.sign_up("racer").await;

    let replies = join_all((0..64).map(|_| async {
        app.post_idempotent(CHARGE, "one-key", &json!({"amount": 10_000}), &token)
            .await
    }))
    .await;

    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    for reply in replies.iter().filter(|r| r.status == 409) {
        reply.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS");
    }
    let fresh = replies
        .iter()
        .filter(|r| r.status == 200 && r.header("idempotent-replayed").is_none());
    assert_eq!(fresh.count(), 1, "exactly one request ran");
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        10_000
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_charges_sum_exactly() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let token = app.sign_up("many").await;
    let amounts: Vec<i64> = (0..200).map(|i| 1_000 + i * 37).collect();

    let replies = join_all(amounts.iter().enumerate().map(|(i, amount)| {
        let token = token.clone();
        let app = &app;
        async move {
            app.post_idempotent(
                CHARGE,
                &format!("k-{i}"),
                &json!({"amount": amount}),
                &token,
            )
            .await
        }
    }))
    .await;

    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let expected: i64 = amounts.iter().sum();
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        expected
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        200
    );
    assert_eq!(
        app.scalar("SELECT coalesce(sum(amount), 0)::bigint AS n FROM point_ledger")
            .await,
        expected
    );
    // Every ledger row's balance_after is a distinct step of the running total.
    assert_eq!(
        app.scalar("SELECT max(balance_after) AS n FROM point_ledger")
            .await,
        expected
    );
    assert_eq!(
        app.scalar("SELECT count(DISTINCT balance_after) AS n FROM point_ledger")
            .await,
        200
    );
}

/// Runs `sql` on `conn` (a connection the test holds open).
async fn exec(conn: &mut diesel_async::AsyncPgConnection, sql: &str) {
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Waits until a backend of the test database waits on a lock.
async fn until_a_request_waits_on_a_lock(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .scalar(
            "SELECT count(*) AS n FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
        < 1
    {
        assert!(Instant::now() < deadline, "no request reached the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_charge(
    app: &TestApp,
    token: &str,
    key: &str,
    amount: i64,
) -> tokio::task::JoinHandle<support::Reply> {
    let http = app.http.clone();
    let url = app.url(CHARGE);
    let (token, key) = (token.to_owned(), key.to_owned());
    tokio::spawn(async move {
        let res = http
            .post(url)
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"amount": amount}))
            .send()
            .await
            .expect("sent");
        support::Reply::from(res).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_request_while_the_first_runs_is_409_in_progress() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("patient").await;
    let id = user_id(&app, &token).await;
    app.post_idempotent(CHARGE, "seed", &json!({"amount": 1_000}), &token)
        .await;
    // Hold the wallet row so the first request stays inside its transaction.
    let mut blocker = app.db.connect().await;
    exec(&mut blocker, "BEGIN").await;
    exec(
        &mut blocker,
        &format!("SELECT 1 FROM wallets WHERE user_id = {id} FOR UPDATE"),
    )
    .await;
    let first = spawn_charge(&app, &token, "slow", 2_000);
    until_a_request_waits_on_a_lock(&app).await;

    let second = app
        .post_idempotent(CHARGE, "slow", &json!({"amount": 2_000}), &token)
        .await;

    second.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS");
    assert_eq!(second.header("retry-after"), Some("1"));
    exec(&mut blocker, "ROLLBACK").await;
    let first = first.await.expect("joined");
    assert_eq!(
        (first.status, first.body["balance"].as_i64()),
        (200, Some(3_000))
    );
    let third = app
        .post_idempotent(CHARGE, "slow", &json!({"amount": 2_000}), &token)
        .await;
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    assert_eq!(third.text, first.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lost_during_a_charge_is_503_and_leaves_nothing_half_written() {
    let services = testkit::services().await;
    let pg = TcpProxy::start(target_of(&services.postgres_url)).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(pg.addr()),
        ..Options::default()
    })
    .await;
    let token = app.sign_up("unlucky").await;
    let id = user_id(&app, &token).await;
    let seed = app
        .post_idempotent(CHARGE, "seed", &json!({"amount": 1_000}), &token)
        .await;
    assert_eq!(seed.status, 200);

    // An uncommitted record for the same key (never visible to the charge's
    // lookup) makes the charge wait at its very last statement: the wallet
    // and the ledger are already written inside its transaction.
    let mut blocker = app.db.connect().await;
    exec(&mut blocker, "BEGIN").await;
    exec(
        &mut blocker,
        &format!(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, response_status, \
             response_content_type, response_body) VALUES ({id}, 'doomed', 'x', 200, 'x', '')"
        ),
    )
    .await;
    let charge = spawn_charge(&app, &token, "doomed", 4_000);
    until_a_request_waits_on_a_lock(&app).await;

    // Postgres goes away before the charge commits.
    pg.cut();
    let started = Instant::now();
    let reply = charge.await.expect("joined");
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    // A 503 on a write cannot know whether it committed; it says so.
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("the outcome is unknown") && detail.contains("same Idempotency-Key"),
        "{detail}"
    );
    // Answered, not hung (how fast is the fault runner's to measure).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    exec(&mut blocker, "ROLLBACK").await;
    pg.restore();

    // Nothing of the lost charge was committed: not the balance, not the
    // ledger, not the idempotency record.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.scalar("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'").await > 0 {
        assert!(Instant::now() < deadline, "the lost transaction is still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.scalar(&format!(
            "SELECT balance AS n FROM wallets WHERE user_id = {id}"
        ))
        .await,
        1_000
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        1
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM idempotency_keys WHERE key = 'doomed'")
            .await,
        0
    );

    // So the client's retry with the same key runs, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = loop {
        let reply = app
            .post_idempotent(CHARGE, "doomed", &json!({"amount": 4_000}), &token)
            .await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(retry.body["balance"], 5_000);
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger").await,
        2
    );
}
