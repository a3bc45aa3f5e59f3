//! Coupon campaigns and code generation over HTTP.

mod support;

use serde_json::{Value, json};
use support::TestApp;

fn campaign() -> Value {
    json!({
        "name": "Winter sale", "discountType": "PERCENT", "discountValue": 10,
        "maxDiscountAmount": 5_000, "minOrderAmount": 10_000, "validDays": 7,
    })
}

#[tokio::test]
async fn an_admin_creates_a_campaign_fills_its_pool_and_anyone_sees_the_counts() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("saver").await;

    let created = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().expect("id");
    assert_eq!(created.body["discountType"], "PERCENT");
    assert_eq!(created.body["maxDiscountAmount"], 5_000);
    assert_eq!(created.body["minOrderAmount"], 10_000);
    assert_eq!(created.body["validDays"], 7);

    let generated = app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
            &json!({"count": 1_000}),
            Some(&admin),
        )
        .await;
    assert_eq!(generated.status, 201, "{}", generated.text);
    assert_eq!(
        generated.body,
        json!({"campaignId": id, "generated": 1_000})
    );

    let view = app
        .get(&format!("/api/v1/coupon-campaigns/{id}"), Some(&user))
        .await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert_eq!(view.body["name"], "Winter sale");
    assert_eq!(
        (
            view.body["totalCodes"].as_i64(),
            view.body["issuedCount"].as_i64()
        ),
        (Some(1_000), Some(0))
    );
    assert_eq!(view.body["remainingCount"], 1_000);

    // 16 characters of Crockford base32, all distinct.
    assert_eq!(
        app.scalar("SELECT count(DISTINCT code) AS n FROM coupons")
            .await,
        1_000
    );
    assert_eq!(
        app.scalar(
            "SELECT count(*) AS n FROM coupons WHERE code ~ '^[0-9ABCDEFGHJKMNPQRSTVWXYZ]{16}$'"
        )
        .await,
        1_000
    );
}

#[tokio::test]
async fn campaigns_are_for_admins_and_validated_field_by_field() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("nosy").await;

    app.post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&user))
        .await
        .assert_problem(403, "FORBIDDEN");
    let mut cases = Vec::new();
    for (key, value, field) in [
        ("discountType", json!("FREE"), "discountType"),
        ("discountValue", json!(101), "discountValue"),
        ("discountValue", json!(0), "discountValue"),
        ("maxDiscountAmount", json!(0), "maxDiscountAmount"),
        ("minOrderAmount", json!(-1), "minOrderAmount"),
        ("validDays", json!(0), "validDays"),
        ("name", json!(""), "name"),
        ("issueEndsAt", json!("2026-01-01T00:00:00Z"), "issueEndsAt"),
    ] {
        let mut body = campaign();
        body[key] = value;
        if key == "issueEndsAt" {
            body["issueStartsAt"] = json!("2026-02-01T00:00:00Z");
        }
        cases.push((body, field));
    }
    for (body, field) in cases {
        let reply = app
            .post("/api/v1/admin/coupon-campaigns", &body, Some(&admin))
            .await;
        reply.assert_problem(400, "VALIDATION_FAILED");
        assert!(
            reply.body["detail"].as_str().unwrap_or("").contains(field),
            "{body}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn generation_counts_are_bounded_and_campaigns_must_exist() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let id = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");

    for count in [0, 1_000_001, -3] {
        app.post(
            &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
            &json!({"count": count}),
            Some(&admin),
        )
        .await
        .assert_problem(400, "VALIDATION_FAILED");
    }
    app.post(
        "/api/v1/admin/coupon-campaigns/999999/codes",
        &json!({"count": 5}),
        Some(&admin),
    )
    .await
    .assert_problem(404, "CAMPAIGN_NOT_FOUND");
    app.get("/api/v1/coupon-campaigns/999999", Some(&admin))
        .await
        .assert_problem(404, "CAMPAIGN_NOT_FOUND");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM coupons").await, 0);
}
