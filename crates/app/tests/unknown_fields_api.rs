//! A field an endpoint does not know is refused, never ignored
//! (shared/API.md, conventions): `400 VALIDATION_FAILED` naming it, and
//! nothing written. One case per endpoint family; the first-generation
//! invest routes, which ignore unknown fields, are in `legacy_invest_api`.

mod support;

use serde_json::{Value, json};
use support::{Reply, TestApp};

/// Asserts the refusal names `field` in both `field` and `detail`.
fn assert_unknown(reply: &Reply, field: &str) {
    reply.assert_invalid_field(field);
    assert_eq!(reply.body["field"], field, "{}", reply.text);
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.scalar(sql).await
}

#[tokio::test]
async fn identity_bodies_refuse_unknown_fields() {
    let app = TestApp::spawn().await;
    let signup = app
        .post(
            "/api/v1/auth/signup",
            &json!({"loginId": "typo-user", "password": "password-123", "nickname": "T"}),
            None,
        )
        .await;
    assert_unknown(&signup, "nickname");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM users WHERE login_id = 'typo-user'"
        )
        .await,
        0,
        "no account was made"
    );

    app.sign_up("known-user").await;
    let signin = app
        .post(
            "/api/v1/auth/signin",
            &json!({"loginId": "known-user", "password": "password-123", "rememberMe": true}),
            None,
        )
        .await;
    assert_unknown(&signin, "rememberMe");
}

#[tokio::test]
async fn a_charge_with_an_unknown_field_charges_nothing() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("charger").await;
    let reply = app
        .post_idempotent(
            "/api/v1/points/charge",
            "typo-charge",
            &json!({"amount": 5_000, "currency": "KRW"}),
            &token,
        )
        .await;
    assert_unknown(&reply, "currency");
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        0
    );
}

#[tokio::test]
async fn catalog_bodies_refuse_unknown_fields_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let create = app
        .post(
            "/api/v1/admin/products",
            &json!({"name": "Tea", "price": 1_000, "stock": 5, "colour": "green"}),
            Some(&admin),
        )
        .await;
    assert_unknown(&create, "colour");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM products").await, 0);

    let id = app.create_product("Tea", 1_000, 5).await;
    // A typo of `stock` would otherwise be a restock that silently did nothing.
    let patch = app
        .patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"stok": 50}),
            &admin,
        )
        .await;
    assert_unknown(&patch, "stok");
    let product = app
        .get(&format!("/api/v1/products/{id}"), Some(&admin))
        .await;
    assert_eq!(product.body["stock"], 5);
}

#[tokio::test]
async fn an_order_line_with_an_unknown_field_takes_nothing() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Mug", 1_000, 5).await;
    let token = app.sign_up("buyer").await;
    app.charge(&token, 10_000).await;

    let reply = app
        .post_idempotent(
            "/api/v1/orders",
            "typo-order",
            &json!({"items": [{"productId": product, "quantity": 1, "qty": 3}]}),
            &token,
        )
        .await;
    assert_unknown(&reply, "items[0].qty");
    let top = app
        .post_idempotent(
            "/api/v1/orders",
            "typo-order-2",
            &json!({"items": [{"productId": product, "quantity": 1}], "coupon": "X"}),
            &token,
        )
        .await;
    assert_unknown(&top, "coupon");
    assert_eq!(
        app.get(&format!("/api/v1/products/{product}"), Some(&token))
            .await
            .body["stock"],
        5
    );
    assert_eq!(count(&app, "SELECT count(*) AS n FROM orders").await, 0);
}

#[tokio::test]
async fn coupon_bodies_refuse_unknown_fields() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let campaign =
        json!({"name": "Winter", "discountType": "AMOUNT", "discountValue": 500, "validDays": 7});
    let mut typo = campaign.clone();
    typo["discountRate"] = json!(5);
    let refused = app
        .post("/api/v1/admin/coupon-campaigns", &typo, Some(&admin))
        .await;
    assert_unknown(&refused, "discountRate");
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM coupon_campaigns").await,
        0
    );

    let created = app
        .post("/api/v1/admin/coupon-campaigns", &campaign, Some(&admin))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().expect("an id");
    let codes = app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
            &json!({"count": 10, "prefix": "WIN"}),
            Some(&admin),
        )
        .await;
    assert_unknown(&codes, "prefix");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM coupons").await, 0);
}

#[tokio::test]
async fn invest_bodies_refuse_unknown_fields() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let product = json!({
        "title": "Solar farm",
        "totalInvestingAmount": 1_000_000,
        "startedAt": "2000-01-01T00:00:00Z",
        "finishedAt": "2999-01-01T00:00:00Z",
    });
    let mut typo: Value = product.clone();
    typo["targetAmount"] = json!(5);
    let refused = app
        .post("/api/v1/admin/invest-products", &typo, Some(&admin))
        .await;
    assert_unknown(&refused, "targetAmount");

    let created = app
        .post("/api/v1/admin/invest-products", &product, Some(&admin))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["productId"].as_i64().expect("an id");
    let token = app.sign_up("investor").await;
    let invest = app
        .post_idempotent(
            "/api/v1/investments",
            "typo-invest",
            &json!({"productId": id, "investAmount": 1_000, "memo": "x"}),
            &token,
        )
        .await;
    assert_unknown(&invest, "memo");
    assert_eq!(
        app.get(&format!("/api/v1/invest-products/{id}"), Some(&token))
            .await
            .body["currentInvestingAmount"],
        0
    );
}
