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
        reply.assert_invalid_field(field);
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

/// Issues a code of `campaign` to the token's user and returns it.
async fn issue_code(app: &TestApp, campaign: i64, token: &str) -> String {
    let reply = app
        .post(
            &format!("/api/v1/coupon-campaigns/{campaign}/issue"),
            &json!({}),
            Some(token),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["code"].as_str().expect("code").to_owned()
}

async fn campaign_with_codes(app: &TestApp, body: Value, codes: i64) -> i64 {
    let admin = app.admin_token().await;
    let id = app
        .post("/api/v1/admin/coupon-campaigns", &body, Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let generated = app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{id}/codes"),
            &json!({"count": codes}),
            Some(&admin),
        )
        .await;
    assert_eq!(generated.status, 201, "{}", generated.text);
    id
}

#[tokio::test]
async fn issue_list_use_and_cancel_a_coupon() {
    let app = TestApp::spawn().await;
    let id = campaign_with_codes(&app, campaign(), 3).await;
    let token = app.sign_up("holder").await;

    let issued = app
        .post(
            &format!("/api/v1/coupon-campaigns/{id}/issue"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let code = issued.body["code"].as_str().expect("code").to_owned();
    assert_eq!(issued.body["status"], "ISSUED");
    assert_eq!(issued.body["campaignId"], id);
    assert_eq!(issued.body["campaignName"], "Winter sale");
    let issued_at =
        chrono::DateTime::parse_from_rfc3339(issued.body["issuedAt"].as_str().expect("issuedAt"))
            .expect("rfc3339");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(issued.body["expiresAt"].as_str().expect("expiresAt"))
            .expect("rfc3339");
    assert_eq!(expires_at - issued_at, chrono::Duration::days(7));

    app.post(
        &format!("/api/v1/coupon-campaigns/{id}/issue"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_ALREADY_ISSUED");
    let view = app
        .get(&format!("/api/v1/coupon-campaigns/{id}"), Some(&token))
        .await;
    assert_eq!(
        (
            view.body["issuedCount"].as_i64(),
            view.body["remainingCount"].as_i64()
        ),
        (Some(1), Some(2))
    );

    let mine = app.get("/api/v1/coupons", Some(&token)).await;
    assert_eq!(mine.body["totalCount"], 1);
    assert_eq!(mine.body["items"][0]["code"], code.as_str());

    let used = app
        .post(
            &format!("/api/v1/coupons/{code}/use"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (used.status, used.body["status"].as_str()),
        (200, Some("USED")),
        "{}",
        used.text
    );
    assert!(used.body["usedAt"].is_string());
    app.post(
        &format!("/api/v1/coupons/{code}/use"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_ALREADY_USED");
    assert_eq!(
        app.get("/api/v1/coupons?status=USED", Some(&token))
            .await
            .body["totalCount"],
        1
    );
    assert_eq!(
        app.get("/api/v1/coupons?status=ISSUED", Some(&token))
            .await
            .body["totalCount"],
        0
    );

    let back = app
        .post(
            &format!("/api/v1/coupons/{code}/cancel-use"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (back.status, back.body["status"].as_str()),
        (200, Some("ISSUED")),
        "{}",
        back.text
    );
    app.post(
        &format!("/api/v1/coupons/{code}/cancel-use"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_NOT_USED");

    // Another user's code is not found, and neither is a code that cannot exist.
    let stranger = app.sign_up("stranger").await;
    app.post(
        &format!("/api/v1/coupons/{code}/use"),
        &json!({}),
        Some(&stranger),
    )
    .await
    .assert_problem(404, "COUPON_NOT_FOUND");
    app.post(
        "/api/v1/coupons/not-a-code/use",
        &json!({}),
        Some(&stranger),
    )
    .await
    .assert_problem(404, "COUPON_NOT_FOUND");
    app.get("/api/v1/coupons?status=LOST", Some(&token))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn an_expired_coupon_cannot_be_used_and_lists_as_expired() {
    let app = TestApp::spawn().await;
    let id = campaign_with_codes(&app, campaign(), 1).await;
    let token = app.sign_up("late").await;
    let code = issue_code(&app, id, &token).await;
    app.scalar("WITH x AS (UPDATE coupons SET issued_at = now() - interval '8 days', expires_at = now() - interval '1 day' RETURNING 1) SELECT count(*) AS n FROM x").await;

    app.post(
        &format!("/api/v1/coupons/{code}/use"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_EXPIRED");
    let expired = app
        .get("/api/v1/coupons?status=EXPIRED", Some(&token))
        .await;
    assert_eq!(expired.body["items"][0]["status"], "EXPIRED");
}

#[tokio::test]
async fn a_closed_window_and_an_empty_pool_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("eager").await;
    let mut later = campaign();
    later["issueStartsAt"] = json!("2099-01-01T00:00:00Z");
    let not_yet = campaign_with_codes(&app, later, 1).await;
    let mut over = campaign();
    over["issueStartsAt"] = json!("2020-01-01T00:00:00Z");
    over["issueEndsAt"] = json!("2020-02-01T00:00:00Z");
    let ended = campaign_with_codes(&app, over, 1).await;
    let tiny = campaign_with_codes(&app, campaign(), 1).await;
    let first = app.sign_up("first").await;

    for id in [not_yet, ended] {
        app.post(
            &format!("/api/v1/coupon-campaigns/{id}/issue"),
            &json!({}),
            Some(&token),
        )
        .await
        .assert_problem(409, "CAMPAIGN_NOT_ACTIVE");
    }
    assert_eq!(
        app.post(
            &format!("/api/v1/coupon-campaigns/{tiny}/issue"),
            &json!({}),
            Some(&first)
        )
        .await
        .status,
        201
    );
    app.post(
        &format!("/api/v1/coupon-campaigns/{tiny}/issue"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_SOLD_OUT");
    app.post(
        "/api/v1/coupon-campaigns/999999/issue",
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(404, "CAMPAIGN_NOT_FOUND");
}

/// 300 issue attempts by 100 users (through the gateway header) on a pool of
/// 25; asserts what any path must guarantee and returns the campaign id.
/// With `warm`, one more code is issued first, so the gate is built before
/// the rush (otherwise the opening burst may race its rebuild).
async fn issue_rush(app: &TestApp, warm: bool) -> i64 {
    let id = campaign_with_codes(app, campaign(), if warm { 26 } else { 25 }).await;
    if warm {
        let first = app
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/coupon-campaigns/{id}/issue"),
                &[
                    ("X-USER-ID", "warm-up"),
                    ("X-Gateway-Secret", support::GATEWAY_SECRET),
                ],
                None,
            )
            .await;
        assert_eq!(first.status, 201, "{}", first.text);
    }
    let path = format!("/api/v1/coupon-campaigns/{id}/issue");
    let replies = futures_util::future::join_all((0..300).map(|i| {
        let user = format!("rusher-{}", i % 100);
        let path = &path;
        async move {
            app.send(
                reqwest::Method::POST,
                path,
                &[
                    ("X-USER-ID", &user),
                    ("X-Gateway-Secret", support::GATEWAY_SECRET),
                ],
                None,
            )
            .await
        }
    }))
    .await;

    let issued = replies.iter().filter(|r| r.status == 201).count();
    let refused = replies
        .iter()
        .filter(|r| {
            r.status == 409
                && (r.body["code"] == "COUPON_SOLD_OUT"
                    || r.body["code"] == "COUPON_ALREADY_ISSUED")
        })
        .count();
    assert_eq!(
        (issued, refused),
        (25, 275),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let holders = if warm { 26 } else { 25 };
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM coupons WHERE campaign_id = {id} AND owner_id IS NOT NULL"
        ))
        .await,
        holders
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(DISTINCT owner_id) AS n FROM coupons WHERE campaign_id = {id}"
        ))
        .await,
        holders,
        "nobody has two"
    );
    let codes: std::collections::HashSet<String> = replies
        .iter()
        .filter(|r| r.status == 201)
        .filter_map(|r| r.body["code"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(codes.len(), 25, "25 distinct codes");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_attempts_by_a_hundred_users_on_a_pool_of_25() {
    let app = TestApp::spawn_with(support::Options {
        trusted_user_header: Some("X-USER-ID".into()),
        ..support::Options::headroom()
    })
    .await;

    let id = issue_rush(&app, true).await;

    // The Redis gate took the rush: its counter is spent, its set holds the
    // 25 and the warm-up user.
    let mut conn = app.redis.connect().await;
    let left: Option<i64> = deadpool_redis::redis::cmd("GET")
        .arg(format!("{}coupon:{{{id}}}:left", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis");
    let holders: i64 = deadpool_redis::redis::cmd("SCARD")
        .arg(format!("{}coupon:{{{id}}}:users", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis");
    assert_eq!((left, holders), (Some(0), 26));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_rush_with_redis_unreachable_is_decided_by_postgres() {
    let services = testkit::services().await;
    let redis = testkit::TcpProxy::start(testkit::target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(support::Options {
        trusted_user_header: Some("X-USER-ID".into()),
        redis_via: Some(redis.addr()),
        ..support::Options::headroom()
    })
    .await;
    redis.cut();

    issue_rush(&app, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_uses_of_one_code_let_exactly_one_through() {
    let app = TestApp::spawn().await;
    let id = campaign_with_codes(&app, campaign(), 1).await;
    let token = app.sign_up("double").await;
    let code = issue_code(&app, id, &token).await;

    let path = format!("/api/v1/coupons/{code}/use");
    let replies = futures_util::future::join_all(
        (0..10).map(|_| async { app.post(&path, &json!({}), Some(&token)).await }),
    )
    .await;

    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1);
    assert!(
        replies
            .iter()
            .filter(|r| r.status != 200)
            .all(|r| r.body["code"] == "COUPON_ALREADY_USED")
    );
}

/// A user holding one coupon of a campaign with `rule`, and money to pay.
async fn holder_of(app: &TestApp, login: &str, rule: Value) -> (String, String) {
    let id = campaign_with_codes(app, rule, 5).await;
    let token = app.sign_up(login).await;
    app.charge(&token, 100_000).await;
    let code = issue_code(app, id, &token).await;
    (token, code)
}

fn order_with(product: i64, quantity: i64, code: &str) -> Value {
    json!({"items": [{"productId": product, "quantity": quantity}], "couponCode": code})
}

#[tokio::test]
async fn an_order_with_a_coupon_pays_less_and_uses_the_coupon() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 6_000, 100).await;
    let amount = json!({"name": "3000 off", "discountType": "AMOUNT", "discountValue": 3_000, "minOrderAmount": 10_000, "validDays": 7});
    let (token, code) = holder_of(&app, "couponer", amount).await;

    let paid = app
        .post_idempotent(
            "/api/v1/orders",
            "with-coupon",
            &order_with(tea, 2, &code),
            &token,
        )
        .await;

    assert_eq!(paid.status, 201, "{}", paid.text);
    assert_eq!(paid.body["totalAmount"], 12_000);
    assert_eq!(
        (
            paid.body["discountAmount"].as_i64(),
            paid.body["paidAmount"].as_i64()
        ),
        (Some(3_000), Some(9_000))
    );
    assert_eq!(paid.body["couponCode"], code.as_str());
    assert_eq!(
        app.get("/api/v1/points", Some(&token)).await.body["balance"],
        91_000
    );
    let mine = app.get("/api/v1/coupons", Some(&token)).await;
    assert_eq!(mine.body["items"][0]["status"], "USED");

    // Spent: another order cannot use it, and cancel-use cannot undo an order.
    app.post_idempotent(
        "/api/v1/orders",
        "again",
        &order_with(tea, 2, &code),
        &token,
    )
    .await
    .assert_problem(409, "COUPON_NOT_APPLICABLE");
    app.post(
        &format!("/api/v1/coupons/{code}/cancel-use"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_ALREADY_USED");
}

#[tokio::test]
async fn a_code_in_any_case_is_the_same_code_at_use_cancel_use_and_order() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 6_000, 100).await;
    let amount = json!({"name": "3000 off", "discountType": "AMOUNT", "discountValue": 3_000, "validDays": 7});
    let (token, code) = holder_of(&app, "anycase", amount).await;
    // Generated codes are Crockford base32: 16 characters, nearly all letters.
    let lower = code.to_ascii_lowercase();
    let mixed: String = code
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect();
    assert_ne!(lower, code, "the code has letters");

    let used = app
        .post(
            &format!("/api/v1/coupons/{lower}/use"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(used.status, 200, "{}", used.text);
    assert_eq!(
        (used.body["code"].as_str(), used.body["status"].as_str()),
        (Some(code.as_str()), Some("USED")),
        "shown in upper case"
    );
    let back = app
        .post(
            &format!("/api/v1/coupons/{mixed}/cancel-use"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(
        (back.body["code"].as_str(), back.body["status"].as_str()),
        (Some(code.as_str()), Some("ISSUED"))
    );

    let paid = app
        .post_idempotent(
            "/api/v1/orders",
            "lower-case-coupon",
            &order_with(tea, 2, &lower),
            &token,
        )
        .await;
    assert_eq!(paid.status, 201, "{}", paid.text);
    assert_eq!(paid.body["couponCode"], code.as_str());
    assert_eq!(paid.body["discountAmount"], 3_000);
    let mine = app.get("/api/v1/coupons", Some(&token)).await;
    assert_eq!(mine.body["items"][0]["code"], code.as_str());
    assert_eq!(mine.body["items"][0]["status"], "USED");
    // Used by the order, in whatever case it is named.
    app.post(
        &format!("/api/v1/coupons/{mixed}/use"),
        &json!({}),
        Some(&token),
    )
    .await
    .assert_problem(409, "COUPON_ALREADY_USED");
}

#[tokio::test]
async fn a_percent_coupon_is_capped_and_a_minimum_order_is_enforced() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 10_000, 100).await;
    let percent = json!({"name": "20%", "discountType": "PERCENT", "discountValue": 20, "maxDiscountAmount": 5_000, "minOrderAmount": 20_000, "validDays": 7});
    let (token, code) = holder_of(&app, "percenter", percent).await;

    app.post_idempotent(
        "/api/v1/orders",
        "too-small",
        &order_with(tea, 1, &code),
        &token,
    )
    .await
    .assert_problem(409, "COUPON_NOT_APPLICABLE");
    let capped = app
        .post_idempotent(
            "/api/v1/orders",
            "capped",
            &order_with(tea, 5, &code),
            &token,
        )
        .await;

    assert_eq!(capped.status, 201, "{}", capped.text);
    assert_eq!(
        (
            capped.body["totalAmount"].as_i64(),
            capped.body["discountAmount"].as_i64()
        ),
        (Some(50_000), Some(5_000))
    );
}

#[tokio::test]
async fn someone_elses_or_an_expired_coupon_does_not_apply() {
    let app = TestApp::spawn().await;
    let tea = app.create_product("Tea", 10_000, 100).await;
    let rule = json!({"name": "1000 off", "discountType": "AMOUNT", "discountValue": 1_000, "validDays": 7});
    let (_owner, code) = holder_of(&app, "owner", rule.clone()).await;
    let (thief, _) = holder_of(&app, "thief", rule).await;

    app.post_idempotent(
        "/api/v1/orders",
        "steal",
        &order_with(tea, 1, &code),
        &thief,
    )
    .await
    .assert_problem(409, "COUPON_NOT_APPLICABLE");
    app.scalar("WITH x AS (UPDATE coupons SET issued_at = now() - interval '9 days', expires_at = now() - interval '1 day' WHERE owner_id IS NOT NULL RETURNING 1) SELECT count(*) AS n FROM x").await;
    let thiefs_code = app.get("/api/v1/coupons", Some(&thief)).await.body["items"][0]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    app.post_idempotent(
        "/api/v1/orders",
        "expired",
        &order_with(tea, 1, &thiefs_code),
        &thief,
    )
    .await
    .assert_problem(409, "COUPON_NOT_APPLICABLE");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM orders").await, 0);
}

/// Five users each holding a coupon of one campaign; returns their tokens.
async fn five_holders(app: &TestApp) -> Vec<String> {
    let id = campaign_with_codes(app, campaign(), 5).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let token = app.sign_up(&format!("holder-{i}")).await;
        let issued = app
            .post(
                &format!("/api/v1/coupon-campaigns/{id}/issue"),
                &json!({}),
                Some(&token),
            )
            .await;
        assert_eq!(issued.status, 201, "{}", issued.text);
        tokens.push(token);
    }
    tokens
}

#[tokio::test]
async fn the_expiring_list_pages_through_one_utc_day_with_a_cursor() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tokens = five_holders(&app).await;
    // Three expire on 2030-01-02 (UTC), one the day after, one is used.
    app.scalar(
        "WITH x AS (UPDATE coupons SET expires_at = CASE \
           WHEN id % 5 IN (1, 2, 3) THEN timestamptz '2030-01-02T00:00:00Z' + (id || ' minutes')::interval \
           ELSE timestamptz '2030-01-03T01:00:00Z' END \
         WHERE owner_id IS NOT NULL RETURNING 1) SELECT count(*) AS n FROM x",
    )
    .await;

    let first = app
        .get(
            "/api/v1/admin/coupons/expiring?date=2030-01-02&limit=2",
            Some(&admin),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(2));
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let second = app
        .get(
            &format!("/api/v1/admin/coupons/expiring?date=2030-01-02&limit=2&after={cursor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(second.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(second.body["nextCursor"], Value::Null);
    let mut seen: Vec<&str> = first.body["items"]
        .as_array()
        .into_iter()
        .chain(second.body["items"].as_array())
        .flatten()
        .filter_map(|c| c["code"].as_str())
        .collect();
    seen.dedup();
    assert_eq!(seen.len(), 3, "each coupon once, in expiry order");

    app.get(
        "/api/v1/admin/coupons/expiring?date=2030-13-01",
        Some(&admin),
    )
    .await
    .assert_problem(400, "VALIDATION_FAILED");
    app.get("/api/v1/admin/coupons/expiring", Some(&tokens[0]))
        .await
        .assert_problem(403, "FORBIDDEN");
    let today = app
        .get("/api/v1/admin/coupons/expiring", Some(&admin))
        .await;
    assert_eq!(today.body["items"], json!([]), "nothing expires today");
}

/// Found by probing what the schemathesis run could not reach: chrono read
/// these, Postgres refused the instant ("timestamp out of range") and the
/// client got a 503 as if Postgres were down.
#[tokio::test]
async fn the_expiring_list_refuses_days_and_cursors_outside_what_it_can_hold_with_400() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;

    for query in [
        "date=-4800-01-01",
        "date=-0001-01-01",
        "date=+12345-01-01",
        "date=2030-1-2",
    ] {
        app.get(
            &format!("/api/v1/admin/coupons/expiring?{query}"),
            Some(&admin),
        )
        .await
        .assert_invalid_field("date");
    }
    for query in [
        "after=-999999999999999999.1",
        "after=1.-1",
        "after=",
        "after=1234567890123456789.1",
    ] {
        app.get(
            &format!("/api/v1/admin/coupons/expiring?{query}"),
            Some(&admin),
        )
        .await
        .assert_invalid_field("after");
    }

    for query in [
        "date=0000-01-01",
        "date=9999-12-31",
        "date=2030-01-02&after=999999999999999999.999999999999999999",
        "date=2030-01-02&after=0.0",
    ] {
        let reply = app
            .get(
                &format!("/api/v1/admin/coupons/expiring?{query}"),
                Some(&admin),
            )
            .await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.text);
        assert_eq!(reply.body["items"], json!([]), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_notice_runs_at_once_notify_each_due_coupon_exactly_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tokens = five_holders(&app).await;
    // Three are due within 3 days, one is further out, one is used.
    app.scalar(
        "WITH x AS (UPDATE coupons SET expires_at = CASE \
           WHEN id % 5 IN (1, 2, 3) THEN now() + interval '2 days' \
           ELSE now() + interval '5 days' END \
         WHERE owner_id IS NOT NULL RETURNING 1) SELECT count(*) AS n FROM x",
    )
    .await;
    let used = app.get("/api/v1/coupons", Some(&tokens[0])).await.body["items"][0]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    app.post(
        &format!("/api/v1/coupons/{used}/use"),
        &json!({}),
        Some(&tokens[0]),
    )
    .await;
    let due = app
        .scalar("SELECT count(*) AS n FROM coupons WHERE used_at IS NULL AND expires_at <= now() + interval '3 days'")
        .await;

    let path = "/api/v1/admin/jobs/coupon-expiry-notices";
    let empty = json!({});
    let (a, b) = tokio::join!(
        app.post(path, &empty, Some(&admin)),
        app.post(path, &empty, Some(&admin))
    );

    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.text, b.text);
    let sent =
        a.body["notified"].as_i64().unwrap_or(-1) + b.body["notified"].as_i64().unwrap_or(-1);
    assert_eq!(sent, due, "each due coupon once between the two runs");
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM coupons WHERE notified_at IS NOT NULL")
            .await,
        due
    );
    let again = app.post(path, &json!({}), Some(&admin)).await;
    assert_eq!(again.body["notified"], 0, "nobody is told twice");
}

/// A notice output that remembers each notice's id, or that dies after
/// `dies_after` notices, as a process killed mid-run would.
#[derive(Default)]
struct Recording {
    ids: std::sync::Mutex<Vec<String>>,
    dies_after: Option<usize>,
}

impl Recording {
    fn ids(&self) -> Vec<String> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl domain::coupon::Notifier for Recording {
    fn notify(
        &self,
        notice: &domain::coupon::ExpiryNotice,
    ) -> Result<(), domain::error::Unavailable> {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Some(ids.len()) == self.dies_after {
            drop(ids);
            panic!("killed between writing and marking");
        }
        ids.push(notice.notice_id().as_str().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn a_notice_run_killed_mid_batch_loses_no_notice_and_repeats_only_under_the_same_id() {
    use std::sync::Arc;
    use std::time::Duration;

    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    five_holders(&app).await;
    app.scalar(
        "WITH x AS (UPDATE coupons SET expires_at = now() + interval '2 days' \
         WHERE owner_id IS NOT NULL RETURNING 1) SELECT count(*) AS n FROM x",
    )
    .await;
    let lifetime = Duration::from_secs(1);
    let pg = infra::postgres::connect_pool(&infra::postgres::PgPoolSettings {
        url: app.db.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("pool");
    let notices = |notifier: Arc<Recording>| {
        application::coupon::SendExpiryNotices::new(
            Arc::new(infra::postgres::PgExpiryStore::new(pg.clone())),
            notifier,
            Arc::new(infra::clock::SystemClock),
            lifetime,
        )
    };
    let killed = Arc::new(Recording {
        dies_after: Some(2),
        ..Recording::default()
    });
    let survivor = Arc::new(Recording::default());
    let next = notices(Arc::clone(&survivor));

    let dead = notices(Arc::clone(&killed));
    let crash = tokio::spawn(async move { dead.execute().await }).await;
    let while_claimed = next.execute().await.expect("ran");
    tokio::time::sleep(lifetime + Duration::from_millis(300)).await;
    let after_lapse = next.execute().await.expect("ran");
    tokio::time::sleep(lifetime + Duration::from_millis(300)).await;
    let once_more = next.execute().await.expect("ran");

    assert!(crash.expect_err("the run died").is_panic());
    assert_eq!(
        while_claimed, 0,
        "the dead run's claims hold until they lapse"
    );
    assert_eq!(after_lapse, 5, "every due coupon is told");
    assert_eq!(once_more, 0, "a notice marked sent is never sent again");
    let (written_before, sent) = (killed.ids(), survivor.ids());
    assert_eq!(written_before.len(), 2);
    assert!(
        written_before.iter().all(|id| sent.contains(id)),
        "the repeats carry the ids of the first writing: {written_before:?} in {sent:?}"
    );
    let mut distinct = sent.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "one notice per coupon");
    let trigger = app
        .post(
            "/api/v1/admin/jobs/coupon-expiry-notices",
            &json!({}),
            Some(&admin),
        )
        .await;
    assert_eq!(trigger.status, 200, "{}", trigger.text);
    assert_eq!(trigger.body, json!({"notified": 0}));
}

async fn import(app: &TestApp, campaign: i64, csv: String, token: &str) -> support::Reply {
    let auth = format!("Bearer {token}");
    app.send(
        reqwest::Method::POST,
        &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes/import"),
        &[("authorization", &auth), ("content-type", "text/csv")],
        Some(&csv),
    )
    .await
}

#[tokio::test]
async fn an_import_reports_duplicates_and_bad_lines_exactly() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let first = campaign_with_codes(&app, campaign(), 1).await;
    let existing: String = {
        use diesel::QueryableByName;
        #[derive(QueryableByName)]
        struct Code {
            #[diesel(sql_type = diesel::sql_types::Text)]
            code: String,
        }
        let mut conn = app.db.connect().await;
        diesel_async::RunQueryDsl::get_result::<Code>(
            diesel::sql_query("SELECT code FROM coupons LIMIT 1"),
            &mut conn,
        )
        .await
        .expect("a code")
        .code
    };
    let second = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    // `import-0001` is IMPORT-0001 again (codes are case-insensitive); only
    // the `code` column is read, so `AB,CDEF` is the code AB (too short).
    let csv = format!(
        "code\nIMPORT-0001\nIMPORT-0002\nimport-0001\nbad code\n{existing}\n\nAB,CDEF\nimport-0003\n"
    );

    let report = import(&app, second, csv, &admin).await;

    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.body["imported"], 3);
    assert_eq!(
        report.body["duplicates"], 2,
        "one within the file, one of the other campaign"
    );
    assert_eq!(report.body["rejectedCount"], 2);
    assert_eq!(
        report.body["rejected"],
        json!([
            {"line": 5, "reason": "must be 4 to 64 characters of A-Z, 0-9 or '-'"},
            {"line": 8, "reason": "must be 4 to 64 characters of A-Z, 0-9 or '-'"},
        ])
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM coupons WHERE campaign_id = {second} \
             AND code IN ('IMPORT-0001', 'IMPORT-0002', 'IMPORT-0003')"
        ))
        .await,
        3,
        "stored upper-cased"
    );
    let view = app
        .get(&format!("/api/v1/coupon-campaigns/{second}"), Some(&admin))
        .await;
    assert_eq!(view.body["totalCodes"], 3);
    assert_eq!(
        app.get(&format!("/api/v1/coupon-campaigns/{first}"), Some(&admin))
            .await
            .body["totalCodes"],
        1
    );
}

/// The codes SHEET-0001 and SHEET-0002 as spreadsheets export them.
const SPREADSHEET_FILES: &[(&str, &str)] = &[
    (
        "extra columns",
        "code,note\nsheet-0001,first\nSHEET-0002,second\n",
    ),
    (
        "a quoted field with a comma",
        "note,code\n\"first, of two\",sheet-0001\n\"second, \"\"last\"\"\",\"SHEET-0002\"\n",
    ),
    ("CRLF", "code\r\nSHEET-0001\r\nsheet-0002\r\n"),
    ("a byte-order mark", "\u{feff}code\nSHEET-0001\nSHEET-0002"),
    (
        "all of these",
        "\u{feff}\"Note\",\"CODE\",\"added\"\r\n\"first, \"\"really\"\"\",Sheet-0001,2026-01-01\r\n\
         \"second\r\nof two lines\",\"sheet-0002\",\r\n,,\r\n",
    ),
];

#[tokio::test]
async fn spreadsheet_exports_import_their_code_column() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    for (name, csv) in SPREADSHEET_FILES {
        let id = app
            .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
            .await
            .body["id"]
            .as_i64()
            .expect("id");

        let report = import(&app, id, (*csv).to_owned(), &admin).await;

        assert_eq!(report.status, 200, "{name}: {}", report.text);
        assert_eq!(
            report.body,
            json!({"imported": 2, "duplicates": 0, "rejected": [], "rejectedCount": 0}),
            "{name}"
        );
        assert_eq!(
            app.scalar(&format!(
                "SELECT count(*) AS n FROM coupons WHERE campaign_id = {id} \
                 AND code IN ('SHEET-0001', 'SHEET-0002')"
            ))
            .await,
            2,
            "{name}: stored upper-cased"
        );
        // The next file holds the same codes: free them for it.
        app.scalar(&format!(
            "WITH x AS (DELETE FROM coupons WHERE campaign_id = {id} RETURNING 1) \
             SELECT count(*) AS n FROM x"
        ))
        .await;
    }
}

#[tokio::test]
async fn a_hundred_thousand_lines_import_in_one_request() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let id = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let mut csv = String::with_capacity(1_600_000);
    csv.push_str("code\n");
    for i in 0..100_000 {
        csv.push_str(&format!("BULK-{i:010}\n"));
    }

    let report = import(&app, id, csv, &admin).await;

    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(
        (
            report.body["imported"].as_i64(),
            report.body["duplicates"].as_i64()
        ),
        (Some(100_000), Some(0))
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM coupons WHERE campaign_id = {id}"
        ))
        .await,
        100_000
    );
}

#[tokio::test]
async fn an_import_needs_the_header_an_existing_campaign_and_an_admin() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("importer").await;
    let id = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");

    for no_code_column in [
        "AAAA-0001\n",
        "codes,note\nAAAA-0001,x\n",
        "\u{feff}note\r\nAAAA-0001\r\n",
        "\"co,de\",x\nAAAA-0001,x\n",
        "",
    ] {
        let reply = import(&app, id, no_code_column.into(), &admin).await;
        reply.assert_invalid_field("body");
        assert_eq!(
            reply.body["detail"], "body: the header row has no `code` column",
            "{no_code_column:?}"
        );
    }
    import(&app, 999_999, "code\nAAAA-0001\n".into(), &admin)
        .await
        .assert_problem(404, "CAMPAIGN_NOT_FOUND");
    import(&app, id, "code\nAAAA-0001\n".into(), &user)
        .await
        .assert_problem(403, "FORBIDDEN");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM coupons").await, 0);
}

#[tokio::test]
async fn the_cli_imports_a_file_and_prints_the_same_summary() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let id = app
        .post("/api/v1/admin/coupon-campaigns", &campaign(), Some(&admin))
        .await
        .body["id"]
        .as_i64()
        .expect("id");
    let file = std::env::temp_dir().join(format!("codes-{}.csv", support::testkit_suffix()));
    std::fs::write(
        &file,
        "\u{feff}code,note\r\nCLI-00001,\"a, b\"\r\ncli-00002,\r\nCli-00001,again\r\nno!,\r\n",
    )
    .expect("temp file");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["coupons", "import", "--campaign", &id.to_string()])
        .arg(&file)
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &app.redis.url)
        .env("APP_REDIS_KEY_PREFIX", &app.redis.prefix)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("binary runs");
    let _ = std::fs::remove_file(&file);

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(
        summary,
        json!({
            "imported": 2, "duplicates": 1, "rejectedCount": 1,
            "rejected": [{"line": 5, "reason": "must be 4 to 64 characters of A-Z, 0-9 or '-'"}],
        })
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM coupons WHERE campaign_id = {id}"
        ))
        .await,
        2
    );

    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args([
            "coupons",
            "import",
            "--campaign",
            "999999",
            "/nonexistent.csv",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &app.redis.url)
        .output()
        .await
        .expect("binary runs");
    assert!(!missing.status.success());
}
