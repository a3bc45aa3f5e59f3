//! Restocks that lose no sale (shared/API.md, catalogue): `stockDelta` adds
//! to the stock as it is at that moment; an absolute `stock` needs
//! `If-Match` with the product's `ETag`, which every write to the product,
//! a sale included, moves on.

mod support;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use support::{Options, Reply, TestApp};

const ORDERS: &str = "/api/v1/orders";

fn path(id: i64) -> String {
    format!("/api/v1/admin/products/{id}")
}

async fn patch_if(app: &TestApp, id: i64, token: &str, tag: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    app.send(
        Method::PATCH,
        &path(id),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("if-match", tag),
        ],
        Some(body),
    )
    .await
}

async fn etag(app: &TestApp, id: i64, token: &str) -> String {
    let read = app
        .get(&format!("/api/v1/products/{id}"), Some(token))
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
    read.header("etag")
        .expect("every product read answers ETag")
        .to_owned()
}

#[tokio::test]
async fn an_absolute_stock_needs_the_current_etag() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let id = app.create_product("Tea", 1_000, 5).await;

    app.patch(&path(id), &json!({"stock": 9}), &admin)
        .await
        .assert_problem(428, "PRECONDITION_REQUIRED");
    patch_if(&app, id, &admin, "*", r#"{"stock": 9}"#)
        .await
        .assert_problem(428, "PRECONDITION_REQUIRED");
    app.patch(&path(id), &json!({"stock": 9, "stockDelta": 1}), &admin)
        .await
        .assert_invalid_field("stockDelta");
    patch_if(&app, id, &admin, "1234", r#"{"stock": 9}"#)
        .await
        .assert_invalid_field("If-Match");
    // A well-formed tag this service never issued names no version.
    patch_if(&app, id, &admin, r#""v1""#, r#"{"stock": 9}"#)
        .await
        .assert_problem(412, "PRECONDITION_FAILED");

    let tag = etag(&app, id, &admin).await;
    let set = patch_if(&app, id, &admin, &tag, r#"{"stock": 9}"#).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.body["stock"], 9);
    let moved = set.header("etag").expect("the new ETag").to_owned();
    assert_ne!(moved, tag, "the write moved the version");

    // The tag read before that write is stale now: nothing changes.
    patch_if(&app, id, &admin, &tag, r#"{"stock": 1}"#)
        .await
        .assert_problem(412, "PRECONDITION_FAILED");
    patch_if(&app, id, &admin, &format!("W/{moved}"), r#"{"stock": 1}"#)
        .await
        .assert_problem(412, "PRECONDITION_FAILED");
    assert_eq!(etag(&app, id, &admin).await, moved);

    // A sale moves the version too: a stock read before it is stale.
    let buyer = app.sign_up("tea-buyer").await;
    app.charge(&buyer, 5_000).await;
    let order = app
        .post_idempotent(
            ORDERS,
            "one-tea",
            &json!({"items": [{"productId": id, "quantity": 1}]}),
            &buyer,
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    patch_if(&app, id, &admin, &moved, r#"{"stock": 9}"#)
        .await
        .assert_problem(412, "PRECONDITION_FAILED");
    let product = app
        .get(&format!("/api/v1/products/{id}"), Some(&admin))
        .await;
    assert_eq!(product.body["stock"], 8, "the sold unit stays sold");
}

#[tokio::test]
async fn a_delta_adds_to_the_stock_as_it_is_and_never_below_zero() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let id = app.create_product("Mug", 1_000, 5).await;

    let added = app
        .patch(&path(id), &json!({"stockDelta": 7}), &admin)
        .await;
    assert_eq!(
        (added.status, added.body["stock"].as_i64()),
        (200, Some(12))
    );
    let taken = app
        .patch(&path(id), &json!({"stockDelta": -12}), &admin)
        .await;
    assert_eq!((taken.status, taken.body["stock"].as_i64()), (200, Some(0)));
    app.patch(&path(id), &json!({"stockDelta": -1}), &admin)
        .await
        .assert_problem(409, "INSUFFICIENT_STOCK");
    app.patch(&path(999_999), &json!({"stockDelta": 1}), &admin)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    let full = app.create_product("Full", 1, i64::MAX - 1).await;
    app.patch(&path(full), &json!({"stockDelta": 2}), &admin)
        .await
        .assert_invalid_field("stockDelta");
    // With If-Match, the delta and the other fields apply only at that version.
    let tag = etag(&app, id, &admin).await;
    let renamed = patch_if(
        &app,
        id,
        &admin,
        &tag,
        r#"{"name":"Big mug","stockDelta":3}"#,
    )
    .await;
    assert_eq!(
        (
            renamed.status,
            renamed.body["name"].as_str(),
            renamed.body["stock"].as_i64()
        ),
        (200, Some("Big mug"), Some(3)),
        "{}",
        renamed.text
    );
    patch_if(&app, id, &admin, &tag, r#"{"stockDelta":3}"#)
        .await
        .assert_problem(412, "PRECONDITION_FAILED");
    assert_eq!(
        app.get(&format!("/api/v1/products/{id}"), Some(&admin))
            .await
            .body["stock"],
        3
    );
}

/// 500 buyers rush a product while the admin restocks it ten times by
/// `stockDelta`: every unit sold is counted once, and units sold plus
/// stock left is the initial stock plus every delta.
#[tokio::test]
async fn restocks_during_a_500_order_rush_lose_no_sale() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let admin = app.admin_token().await;
    let initial = 200;
    let id = app.create_product("Hot item", 100, initial).await;
    let mut buyers = Vec::new();
    for i in 0..50 {
        let token = app.sign_up(&format!("rusher-{i}")).await;
        app.charge(&token, 10_000).await;
        buyers.push(token);
    }

    let orders = (0..500).map(|n| {
        let (app, token) = (&app, &buyers[n % buyers.len()]);
        async move {
            app.post_idempotent(
                ORDERS,
                &format!("rush-{n}"),
                &json!({"items": [{"productId": id, "quantity": 1}]}),
                token,
            )
            .await
        }
    });
    let restocks = (0..10).map(|_| {
        let (app, admin) = (&app, &admin);
        async move {
            app.patch(&path(id), &json!({"stockDelta": 25}), admin)
                .await
        }
    });
    let (orders, restocks) = tokio::join!(join_all(orders), join_all(restocks));

    for restock in &restocks {
        assert_eq!(restock.status, 200, "{}", restock.text);
    }
    let mut sold = 0;
    for order in &orders {
        match order.status {
            201 => sold += 1,
            409 => assert_eq!(order.body["code"], "OUT_OF_STOCK", "{}", order.text),
            other => panic!("unexpected {other}: {}", order.text),
        }
    }
    let left = app
        .get(&format!("/api/v1/products/{id}"), Some(&admin))
        .await
        .body["stock"]
        .as_i64()
        .expect("stock");
    let in_orders = app
        .scalar(&format!(
            "SELECT coalesce(sum(quantity), 0)::bigint AS n FROM order_items WHERE product_id = {id}"
        ))
        .await;
    assert_eq!(in_orders, sold, "each paid order holds its unit");
    assert_eq!(sold + left, initial + 10 * 25, "sold {sold}, left {left}");
    assert!(
        sold >= initial,
        "the initial stock at least was sold: {sold}"
    );
}
