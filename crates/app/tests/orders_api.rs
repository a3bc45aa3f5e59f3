//! Catalogue and orders over HTTP: every error code, all-or-nothing, no oversell.

mod support;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};

const ORDERS: &str = "/api/v1/orders";

fn items(lines: &[(i64, i64)]) -> Value {
    json!({"items": lines.iter().map(|(p, q)| json!({"productId": p, "quantity": q})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn admins_manage_products_and_everyone_reads_them() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("shopper").await;

    let created = app
        .post(
            "/api/v1/admin/products",
            &json!({"name": " Green tea ", "price": 1_500, "stock": 10}),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().expect("id");
    assert_eq!(
        created.body,
        json!({"id": id, "name": "Green tea", "price": 1_500, "stock": 10})
    );

    let patched = app
        .patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"stockDelta": 15}),
            &admin,
        )
        .await;
    assert_eq!(
        patched.body,
        json!({"id": id, "name": "Green tea", "price": 1_500, "stock": 25}),
        "{}",
        patched.text
    );

    let detail = app
        .get(&format!("/api/v1/products/{id}"), Some(&user))
        .await;
    assert_eq!(detail.body["stock"], 25);
    let list = app.get("/api/v1/products?size=5", Some(&user)).await;
    assert_eq!(
        (
            list.body["totalCount"].as_i64(),
            list.body["items"][0]["id"].as_i64()
        ),
        (Some(1), Some(id))
    );

    app.post(
        "/api/v1/admin/products",
        &json!({"name": "x", "price": 1, "stock": 1}),
        Some(&user),
    )
    .await
    .assert_problem(403, "FORBIDDEN");
    let missing = app.get("/api/v1/products/999999", Some(&user)).await;
    missing.assert_problem(404, "PRODUCT_NOT_FOUND");
    let patch_missing = app
        .patch(
            "/api/v1/admin/products/999999",
            &json!({"price": 5}),
            &admin,
        )
        .await;
    patch_missing.assert_problem(404, "PRODUCT_NOT_FOUND");
    for (body, field) in [
        (json!({"name": "", "price": 1, "stock": 1}), "name"),
        (
            json!({"name": "n".repeat(201), "price": 1, "stock": 1}),
            "name",
        ),
        (json!({"name": "ok", "price": -1, "stock": 1}), "price"),
        (json!({"name": "ok", "price": 1, "stock": -1}), "stock"),
    ] {
        let reply = app
            .post("/api/v1/admin/products", &body, Some(&admin))
            .await;
        reply.assert_invalid_field(field);
    }
}

#[tokio::test]
async fn an_order_takes_stock_and_points_and_is_listed_and_sent_as_an_event() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 1_500, 10).await;
    let cup = app.create_product("Cup", 700, 5).await;
    let token = app.sign_up("buyer").await;
    app.charge(&token, 50_000).await;

    let placed = app
        .post_idempotent(ORDERS, "o-1", &items(&[(cup, 3), (tea, 2)]), &token)
        .await;

    assert_eq!(placed.status, 201, "{}", placed.text);
    let order = &placed.body;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["totalAmount"], 5_100);
    assert_eq!(
        (
            order["discountAmount"].as_i64(),
            order["paidAmount"].as_i64()
        ),
        (Some(0), Some(5_100))
    );
    assert_eq!(order["couponCode"], Value::Null);
    assert_eq!(
        order["items"],
        json!([
            {"productId": tea, "name": "Tea", "quantity": 2, "unitPrice": 1_500, "lineTotal": 3_000},
            {"productId": cup, "name": "Cup", "quantity": 3, "unitPrice": 700, "lineTotal": 2_100},
        ])
    );
    let order_id = order["orderId"].as_i64().expect("orderId");

    // A read that follows the order sees the decrement.
    assert_eq!(
        app.get(&format!("/api/v1/products/{tea}"), Some(&token))
            .await
            .body["stock"],
        8
    );
    assert_eq!(
        app.get(&format!("/api/v1/products/{cup}"), Some(&token))
            .await
            .body["stock"],
        2
    );
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        44_900
    );
    let history = app.get("/api/v1/points/history", Some(&token)).await;
    assert_eq!(history.body["items"][0]["kind"], "PAYMENT");
    assert_eq!(history.body["items"][0]["orderId"], order_id);
    assert_eq!(history.body["items"][0]["balanceAfter"], 44_900);

    let again = app
        .post_idempotent(ORDERS, "o-2", &items(&[(tea, 1)]), &token)
        .await;
    let list = app.get(ORDERS, Some(&token)).await;
    assert_eq!(list.body["totalCount"], 2);
    assert_eq!(
        list.body["items"][0]["orderId"], again.body["orderId"],
        "newest first"
    );
    let one = app.get(&format!("{ORDERS}/{order_id}"), Some(&token)).await;
    assert_eq!(one.body, placed.body);

    let other = app.sign_up("stranger").await;
    app.get(&format!("{ORDERS}/{order_id}"), Some(&other))
        .await
        .assert_problem(404, "ORDER_NOT_FOUND");
    assert_eq!(app.get(ORDERS, Some(&other)).await.body["totalCount"], 0);

    // The order.paid event was written with the order.
    let mut conn = app.db.connect().await;
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Payload {
        #[diesel(sql_type = diesel::sql_types::Text)]
        payload: String,
    }
    let rows: Vec<Payload> = diesel::sql_query(format!(
        "SELECT payload::text AS payload FROM outbox WHERE (payload->>'orderId')::bigint = {order_id}"
    ))
    .load(&mut conn)
    .await
    .expect("outbox");
    assert_eq!(rows.len(), 1);
    let event: Value = serde_json::from_str(&rows[0].payload).expect("json");
    assert_eq!(event["type"], "order.paid");
    assert_eq!(event["paidAmount"], 5_100);
    assert_eq!(event["items"].as_array().map(Vec::len), Some(2));
    assert!(event["eventId"].as_str().is_some_and(|id| id.len() == 36));
}

#[tokio::test]
async fn an_order_is_all_or_nothing() {
    // Without the gate (Redis cut), so that Postgres itself takes the tea,
    // runs out of cups, and must give the tea back.
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        extra: vec![("APP_DEPENDENCY_TIMEOUT".into(), "500ms".into())],
        ..Options::default()
    })
    .await;
    redis.cut();
    let tea = app.create_product("Tea", 1_000, 10).await;
    let cup = app.create_product("Cup", 1_000, 2).await;
    let token = app.sign_up("unlucky").await;
    app.charge(&token, 9_000).await;

    let short = app
        .post_idempotent(
            ORDERS,
            "too-many-cups",
            &items(&[(tea, 3), (cup, 3)]),
            &token,
        )
        .await;

    short.assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(short.body["productId"], cup);
    // The tea taken before the cup ran out was given back, and nothing was paid.
    assert_eq!(
        app.get(&format!("/api/v1/products/{tea}"), Some(&token))
            .await
            .body["stock"],
        10
    );
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        9_000
    );
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 0);
    assert_eq!(app.scalar("SELECT count(*) AS n FROM outbox").await, 0);

    let poor = app
        .post_idempotent(ORDERS, "too-dear", &items(&[(tea, 10)]), &token)
        .await;
    poor.assert_problem(409, "INSUFFICIENT_BALANCE");
    assert_eq!(
        app.get(&format!("/api/v1/products/{tea}"), Some(&token))
            .await
            .body["stock"],
        10
    );

    // Refusals are stored and replayed like successes.
    let replayed = app
        .post_idempotent(
            ORDERS,
            "too-many-cups",
            &items(&[(tea, 3), (cup, 3)]),
            &token,
        )
        .await;
    assert_eq!(
        (replayed.status, replayed.text.as_str()),
        (409, short.text.as_str())
    );
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn every_refusal_of_an_order_has_its_code() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 1_000, 10).await;
    let token = app.sign_up("picky").await;
    app.charge(&token, 10_000).await;

    let unknown = app
        .post_idempotent(ORDERS, "u", &items(&[(tea, 1), (987_654, 1)]), &token)
        .await;
    unknown.assert_problem(404, "PRODUCT_NOT_FOUND");
    assert_eq!(unknown.body["productId"], 987_654);

    let coupon = app
        .post_idempotent(
            ORDERS,
            "c",
            &json!({"items": [{"productId": tea, "quantity": 1}], "couponCode": "NOSUCH-CODE"}),
            &token,
        )
        .await;
    coupon.assert_problem(409, "COUPON_NOT_APPLICABLE");

    let many: Vec<(i64, i64)> = (1..=51).map(|i| (i, 1)).collect();
    for (i, (body, field)) in [
        (json!({"items": []}), "items"),
        (items(&many), "items"),
        (items(&[(tea, 0)]), "items[0].quantity"),
        (items(&[(tea, 1_001)]), "items[0].quantity"),
        (items(&[(tea, 1), (tea, 2)]), "items"),
        (json!({"items": [{"productId": tea}]}), "quantity"),
        (
            json!({"items": [{"productId": tea, "quantity": 1}], "couponCode": "not a code"}),
            "couponCode",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app
            .post_idempotent(ORDERS, &format!("v-{i}"), &body, &token)
            .await;
        reply.assert_invalid_field(field);
    }
    app.post(ORDERS, &items(&[(tea, 1)]), Some(&token))
        .await
        .assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");
    app.post_idempotent(ORDERS, "anon", &items(&[(tea, 1)]), "not-a-token")
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    assert_eq!(
        app.get(&format!("/api/v1/products/{tea}"), Some(&token))
            .await
            .body["stock"],
        10
    );
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        10_000
    );
}

#[tokio::test]
async fn a_replayed_order_is_placed_once() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 1_000, 10).await;
    let token = app.sign_up("twice").await;
    app.charge(&token, 10_000).await;

    let first = app
        .post_idempotent(ORDERS, "same", &items(&[(tea, 2)]), &token)
        .await;
    let again = app
        .post_idempotent(ORDERS, "same", &items(&[(tea, 2)]), &token)
        .await;

    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 1);
    assert_eq!(
        app.get(&format!("/api/v1/products/{tea}"), Some(&token))
            .await
            .body["stock"],
        8
    );
}

/// 100 orders by 20 buyers for one product with 10 units, all at once.
/// Returns (paid, refused as out of stock).
async fn rush(app: &TestApp, hot: i64) -> (usize, usize) {
    let mut buyers = Vec::new();
    for i in 0..20 {
        let token = app.sign_up(&format!("rush-{i}")).await;
        app.charge(&token, 100_000).await;
        buyers.push(token);
    }
    let replies = join_all((0..100).map(|i| {
        let token = buyers[i % buyers.len()].clone();
        async move {
            app.post_idempotent(ORDERS, &format!("rush-{i}"), &items(&[(hot, 1)]), &token)
                .await
        }
    }))
    .await;
    let paid = replies.iter().filter(|r| r.status == 201).count();
    let sold_out = replies
        .iter()
        .filter(|r| r.status == 409 && r.body["code"] == "OUT_OF_STOCK")
        .count();
    (paid, sold_out)
}

/// What a sale must leave behind, gate or no gate.
async fn assert_sold_exactly_ten(app: &TestApp, hot: i64) {
    assert_eq!(
        app.scalar(&format!("SELECT stock AS n FROM products WHERE id = {hot}"))
            .await,
        0
    );
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 10);
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM point_ledger WHERE kind = 'PAYMENT'")
            .await,
        10
    );
    assert_eq!(
        app.scalar(
            "SELECT coalesce(sum(amount), 0)::bigint AS n FROM point_ledger WHERE kind = 'PAYMENT'"
        )
        .await,
        10_000
    );
    assert_eq!(
        app.scalar("SELECT sum(balance)::bigint AS n FROM wallets")
            .await,
        20 * 100_000 - 10_000
    );
    assert_eq!(app.scalar("SELECT count(*) AS n FROM outbox").await, 10);
}

async fn gate_counter(app: &TestApp, product: i64) -> Option<i64> {
    let mut conn = app.redis.connect().await;
    deadpool_redis::redis::cmd("GET")
        .arg(format!("{}stock:{{{product}}}", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_orders_for_ten_units_sell_exactly_ten() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let hot = app.create_product("Hot item", 1_000, 10).await;

    let (paid, sold_out) = rush(&app, hot).await;

    assert_eq!((paid, sold_out), (10, 90));
    assert_sold_exactly_ten(&app, hot).await;
    // Every answer is stored under its key, the gate's refusals included.
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'rush-%'")
            .await,
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_unreachable_postgres_alone_still_sells_exactly_ten() {
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        ..Options::headroom()
    })
    .await;
    let hot = app.create_product("Hot item", 1_000, 10).await;
    redis.cut();

    let (paid, sold_out) = rush(&app, hot).await;

    assert_eq!((paid, sold_out), (10, 90));
    assert_sold_exactly_ten(&app, hot).await;
    // Postgres refused the 90 itself, and stored each refusal.
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'rush-%'")
            .await,
        100
    );
}

#[tokio::test]
async fn an_admin_restock_reaches_the_gate_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let item = app.create_product("Rare", 1_000, 1).await;
    let token = app.sign_up("collector").await;
    app.charge(&token, 10_000).await;

    assert_eq!(
        app.post_idempotent(ORDERS, "a", &items(&[(item, 1)]), &token)
            .await
            .status,
        201
    );
    app.post_idempotent(ORDERS, "b", &items(&[(item, 1)]), &token)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(gate_counter(&app, item).await, Some(0));

    let restocked = app
        .patch(
            &format!("/api/v1/admin/products/{item}"),
            &json!({"stockDelta": 3}),
            &admin,
        )
        .await;
    assert_eq!(restocked.status, 200, "{}", restocked.text);

    assert_eq!(
        app.post_idempotent(ORDERS, "c", &items(&[(item, 1)]), &token)
            .await
            .status,
        201
    );
    assert_eq!(
        gate_counter(&app, item).await,
        Some(2),
        "rebuilt from Postgres, then taken"
    );
}

#[tokio::test]
async fn a_gate_refusal_names_the_product_and_is_replayed() {
    let app = TestApp::spawn().await;
    let item = app.create_product("Single", 1_000, 1).await;
    let token = app.sign_up("late").await;
    app.charge(&token, 10_000).await;
    assert_eq!(
        app.post_idempotent(ORDERS, "first", &items(&[(item, 1)]), &token)
            .await
            .status,
        201
    );
    assert_eq!(
        gate_counter(&app, item).await,
        Some(0),
        "the gate knows it is sold out"
    );

    let refused = app
        .post_idempotent(ORDERS, "second", &items(&[(item, 1)]), &token)
        .await;
    let replayed = app
        .post_idempotent(ORDERS, "second", &items(&[(item, 1)]), &token)
        .await;

    refused.assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(refused.body["productId"], item);
    assert_eq!(
        (replayed.status, replayed.text.as_str()),
        (409, refused.text.as_str())
    );
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    app.post_idempotent(ORDERS, "second", &items(&[(item, 2)]), &token)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn a_reservation_is_given_back_when_the_balance_is_short() {
    let app = TestApp::spawn().await;
    let item = app.create_product("Dear", 5_000, 3).await;
    let token = app.sign_up("short").await;
    app.charge(&token, 1_000).await;

    app.post_idempotent(ORDERS, "too-dear", &items(&[(item, 2)]), &token)
        .await
        .assert_problem(409, "INSUFFICIENT_BALANCE");

    assert_eq!(
        gate_counter(&app, item).await,
        Some(3),
        "the gate got its 2 units back"
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT stock AS n FROM products WHERE id = {item}"
        ))
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_taking_two_products_in_opposite_orders_never_deadlock() {
    // Postgres alone (Redis cut), so every order takes its row locks there.
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        ..Options::headroom()
    })
    .await;
    redis.cut();
    let a = app.create_product("A", 100, 1_000).await;
    let b = app.create_product("B", 100, 1_000).await;
    let mut buyers = Vec::new();
    for i in 0..10 {
        let token = app.sign_up(&format!("pair-{i}")).await;
        app.charge(&token, 100_000).await;
        buyers.push(token);
    }

    let replies = join_all((0..80).map(|i| {
        let token = buyers[i % buyers.len()].clone();
        // Half list A first, half B first: the store must lock in id order anyway.
        let lines = if i % 2 == 0 {
            [(a, 1), (b, 1)]
        } else {
            [(b, 1), (a, 1)]
        };
        let app = &app;
        async move {
            app.post_idempotent(ORDERS, &format!("pair-{i}"), &items(&lines), &token)
                .await
        }
    }))
    .await;

    // A deadlock would abort a transaction (SQLSTATE 40P01) and answer 503.
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(
        app.scalar(&format!("SELECT stock AS n FROM products WHERE id = {a}"))
            .await,
        920
    );
    assert_eq!(
        app.scalar(&format!("SELECT stock AS n FROM products WHERE id = {b}"))
            .await,
        920
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_its_first_request_holds_the_last_unit_is_never_refused_as_sold_out() {
    use diesel_async::{RunQueryDsl as _, TransactionManager as _};
    let app = TestApp::spawn().await;
    // Products four ids apart share an order lane.
    let busy = app.create_product("Busy", 1_000, 10).await;
    for filler in 1..4 {
        app.create_product(&format!("Filler {filler}"), 1_000, 10)
            .await;
    }
    let item = app.create_product("Last", 1_000, 1).await;
    assert_eq!(item, busy + 4);
    let token = app.sign_up("clicker").await;
    app.charge(&token, 10_000).await;
    let other = app.sign_up("other").await;
    app.charge(&other, 10_000).await;
    // Another writer holds `busy`: the lane's batch for it waits, and the
    // first request for `item` waits in the lane's queue behind it, holding
    // the last unit at the gate.
    let mut blocker = app.db.connect().await;
    diesel_async::AnsiTransactionManager::begin_transaction(&mut blocker)
        .await
        .expect("begin");
    diesel::sql_query(format!(
        "SELECT id FROM products WHERE id = {busy} FOR UPDATE"
    ))
    .execute(&mut blocker)
    .await
    .expect("lock");
    let send = |key: &'static str, product: i64, token: String| {
        let url = app.url(ORDERS);
        tokio::spawn(async move {
            support::Reply::from(
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&items(&[(product, 1)]))
                    .send()
                    .await
                    .expect("sent"),
            )
            .await
        })
    };
    let blocked = send("blocked", busy, other.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let first = send("double-click", item, token.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let retry = send("double-click", item, token.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    diesel_async::AnsiTransactionManager::commit_transaction(&mut blocker)
        .await
        .expect("commit");
    let (blocked, first, retry) = (
        blocked.await.expect("blocked"),
        first.await.expect("first"),
        retry.await.expect("retry"),
    );

    assert_eq!(blocked.status, 201);
    assert_eq!(
        first.status, 201,
        "the first request buys the last unit: {}",
        first.text
    );
    assert!(
        (retry.status == 201 && retry.header("idempotent-replayed") == Some("true"))
            || (retry.status == 409 && retry.body["code"] == "IDEMPOTENCY_IN_PROGRESS"),
        "the retry is the first answer or in progress, never OUT_OF_STOCK: {} {}",
        retry.status,
        retry.text
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM order_items WHERE product_id = {item}"
        ))
        .await,
        1,
        "one order for the last unit"
    );
    let again = app
        .post_idempotent(ORDERS, "double-click", &items(&[(item, 1)]), &token)
        .await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (201, Some("true"))
    );
}
