//! `APP_DEMO_DATA=true` seeds an empty database once, and every seeded
//! thing can be used at once through the API.

mod support;

use serde_json::json;
use support::{Options, TestApp};

#[tokio::test]
async fn demo_data_is_seeded_once_and_usable_at_once() {
    let app = TestApp::spawn_with(Options {
        extra: vec![("APP_DEMO_DATA".into(), "true".into())],
        ..Options::default()
    })
    .await;
    // A second instance on the same database finds it seeded.
    let sibling = app.spawn_sibling().await;
    sibling.stop().await;

    let token = app.sign_up("visitor").await;
    let products = app.get("/api/v1/products", Some(&token)).await;
    assert_eq!(products.body["totalCount"], 3, "{}", products.text);
    let funds = app.get("/api/v1/invest-products", Some(&token)).await;
    assert_eq!(funds.body["totalCount"], 1, "{}", funds.text);
    let fund = &funds.body["items"][0];
    assert_eq!(fund["investStatus"], "ONGOING");
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM coupon_campaigns")
            .await,
        1
    );
    let campaign = app.scalar("SELECT id AS n FROM coupon_campaigns").await;

    // Try everything: a coupon, an order with it, an investment.
    let coupon = app
        .post(
            &format!("/api/v1/coupon-campaigns/{campaign}/issue"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(coupon.status, 201, "{}", coupon.text);
    app.charge(&token, 100_000).await;
    let mug = products.body["items"][2]["id"].as_i64().expect("id");
    let order = app
        .post_idempotent(
            "/api/v1/orders",
            "demo-order",
            &json!({"items": [{"productId": mug, "quantity": 1}], "couponCode": coupon.body["code"]}),
            &token,
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    assert_eq!(order.body["discountAmount"], 2_500, "10% of 25,000");
    let invested = app
        .post_idempotent(
            "/api/v1/investments",
            "demo-invest",
            &json!({"productId": fund["productId"], "investAmount": 50_000}),
            &token,
        )
        .await;
    assert_eq!(invested.status, 201, "{}", invested.text);
}
