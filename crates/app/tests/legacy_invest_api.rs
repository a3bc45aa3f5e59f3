//! The first-generation investment API (`APP_LEGACY_INVEST_API=true`,
//! shared/API.md "Investments, first-generation wire format"): its own
//! examples replayed, every refusal in its envelope, and the target never
//! exceeded while legacy and `/api/v1` investors rush one product together.

mod support;

use chrono::{Duration, SecondsFormat, Utc};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Options, Reply, TestApp};

/// With headroom: the concurrency test fires 40 investments at once.
async fn spawn(on: bool) -> TestApp {
    let mut extra = Options::headroom().extra;
    extra.push((
        "APP_TRUSTED_GATEWAY_SECRET".to_owned(),
        support::GATEWAY_SECRET.to_owned(),
    ));
    if on {
        extra.push(("APP_LEGACY_INVEST_API".to_owned(), "true".to_owned()));
    }
    TestApp::spawn_with(Options {
        extra,
        ..Options::default()
    })
    .await
}

/// An investment product open now, created through `/api/v1`.
async fn open_product(app: &TestApp, title: &str, total: i64) -> i64 {
    let admin = app.admin_token().await;
    let now = Utc::now();
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let reply = app
        .post(
            "/api/v1/admin/invest-products",
            &json!({
                "title": title, "totalInvestingAmount": total,
                "startedAt": ts(now - Duration::hours(1)),
                "finishedAt": ts(now + Duration::hours(1)),
            }),
            Some(&admin),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["productId"].as_i64().expect("productId")
}

/// A request as the gateway forwards it for `user`.
async fn legacy(
    app: &TestApp,
    method: Method,
    path: &str,
    user: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut headers = vec![("X-Gateway-Secret", support::GATEWAY_SECRET)];
    if let Some(user) = user {
        headers.push(("X-USER-ID", user));
    }
    let body = body.map(Value::to_string);
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.send(method, path, &headers, body.as_deref()).await
}

async fn invest(app: &TestApp, user: &str, product: i64, amount: i64) -> Reply {
    legacy(
        app,
        Method::POST,
        "/api/invest",
        Some(user),
        Some(&json!({"investAmount": amount, "productId": product})),
    )
    .await
}

fn assert_timestamp(value: &Value) {
    let text = value.as_str().expect("a string");
    assert!(
        first_generation_time(text),
        "not YYYY-MM-DDTHH:MM:SS[.ffffff] in UTC without an offset: {text}"
    );
}

/// `YYYY-MM-DDTHH:MM:SS` optionally followed by `.` and six digits.
fn first_generation_time(text: &str) -> bool {
    let (main, fraction) = text.split_once('.').unwrap_or((text, ""));
    chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%dT%H:%M:%S").is_ok()
        && (fraction.is_empty()
            || (fraction.len() == 6 && fraction.bytes().all(|b| b.is_ascii_digit())))
}

#[tokio::test]
async fn the_first_generation_examples_answer_as_the_section_says() {
    let app = spawn(true).await;
    let product = open_product(&app, "Solar farm", 1_000).await;

    // GET /api/product?page=0&size=10
    let listed = legacy(&app, Method::GET, "/api/product?page=0&size=10", None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.header("content-type"), Some("application/json"));
    assert_eq!(
        (
            &listed.body["result"],
            &listed.body["code"],
            &listed.body["message"],
            &listed.body["status"]
        ),
        (&json!(true), &json!("01"), &Value::Null, &json!(200))
    );
    assert_eq!(listed.body["data"]["totalCount"], 1);
    let row = &listed.body["data"]["list"][0];
    assert_eq!(row["productId"], product);
    assert_eq!(row["title"], "Solar farm");
    assert_eq!(row["totalInvestingAmount"], 1_000);
    assert_eq!(row["currentInvestingAmount"], 0);
    assert_eq!(row["investingCnt"], 0);
    assert_eq!(row["investStatus"], "ONGOING");
    assert_timestamp(&row["startedAt"]);
    assert_timestamp(&row["finishedAt"]);

    // POST /api/invest with X-USER-ID: user4
    let invested = invest(&app, "user4", product, 10).await;
    assert_eq!(invested.status, 200, "{}", invested.text);
    assert_eq!(
        invested.body,
        json!({"result": true, "code": "01", "message": null, "data": "OK", "status": 200})
    );
    // Unknown fields are ignored here, as the first generation ignored them.
    let extra = legacy(
        &app,
        Method::POST,
        "/api/invest",
        Some("user4"),
        Some(&json!({"investAmount": 20, "productId": product, "channel": "app"})),
    )
    .await;
    assert_eq!(extra.body["result"], true, "{}", extra.text);

    // The same through /api/v1: user4 was provisioned on first sight.
    let detail = legacy(&app, Method::GET, "/api/product?page=0&size=10", None, None).await;
    assert_eq!(detail.body["data"]["list"][0]["currentInvestingAmount"], 30);
    assert_eq!(detail.body["data"]["list"][0]["investingCnt"], 1);
}

#[tokio::test]
async fn my_investments_have_one_row_per_product_with_the_callers_total() {
    let app = spawn(true).await;
    let first = open_product(&app, "First", 1_000).await;
    let second = open_product(&app, "Second", 1_000).await;
    for amount in [10, 20, 5] {
        assert_eq!(
            invest(&app, "user4", first, amount).await.body["result"],
            true
        );
    }
    assert_eq!(invest(&app, "user4", second, 7).await.body["result"], true);
    assert_eq!(
        invest(&app, "someone-else", first, 100).await.body["result"],
        true
    );

    let mine = legacy(
        &app,
        Method::GET,
        "/api/product/my/invest?page=0&size=10",
        Some("user4"),
        None,
    )
    .await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.body["result"], true);
    assert_eq!(mine.body["data"]["totalCount"], 2);
    let list = mine.body["data"]["list"].as_array().expect("list");
    // Newest first: the second product was invested in last.
    assert_eq!(list[0]["productId"], second);
    assert_eq!(list[0]["myInvestingAmount"], 7);
    assert_eq!(list[1]["productId"], first);
    assert_eq!(list[1]["myInvestingAmount"], 35);
    assert_eq!(list[1]["title"], "First");
    assert_eq!(list[1]["totalInvestingAmount"], 1_000);
    for row in list {
        assert_eq!(row["userId"], "user4", "the header's value");
        assert_timestamp(&row["investDate"]);
    }
    let paged = legacy(
        &app,
        Method::GET,
        "/api/product/my/invest?page=1&size=1",
        Some("user4"),
        None,
    )
    .await;
    assert_eq!(paged.body["data"]["totalCount"], 2);
    assert_eq!(paged.body["data"]["list"][0]["productId"], first);
}

#[tokio::test]
async fn refusals_and_errors_come_in_the_envelope() {
    let app = spawn(true).await;
    let product = open_product(&app, "Tiny", 10).await;
    assert_eq!(
        invest(&app, "user4", product, 10).await.body["result"],
        true
    );

    // Sold out: HTTP 200, the refusal in the envelope; an amount above what
    // remains answers the same.
    let sold_out = invest(&app, "user5", product, 1).await;
    assert_eq!(sold_out.status, 200);
    assert_eq!(
        sold_out.body,
        json!({"result": false, "code": "SOLD_OUT", "message": "Product is sold out : ", "data": null, "status": 200})
    );
    let bigger = open_product(&app, "Bigger", 50).await;
    let too_much = invest(&app, "user5", bigger, 51).await;
    assert_eq!(
        (too_much.status, &too_much.body["code"]),
        (200, &json!("SOLD_OUT"))
    );

    // A missing or empty X-USER-ID: 400 in the envelope and on the response.
    for user in [None, Some("")] {
        let missing = legacy(
            &app,
            Method::POST,
            "/api/invest",
            user,
            Some(&json!({"investAmount": 1, "productId": product})),
        )
        .await;
        assert_eq!(missing.status, 400);
        assert_eq!(
            missing.body,
            json!({"result": false, "code": "MISSING_X_USER_ID", "message": "Missing X-USER-ID header value : ", "data": null, "status": 400})
        );
    }

    // Without the gateway's secret, or with a wrong one: 401.
    for secret in [None, Some("wrong-secret")] {
        let mut headers = vec![("X-USER-ID", "user4"), ("content-type", "application/json")];
        if let Some(secret) = secret {
            headers.push(("X-Gateway-Secret", secret));
        }
        let reply = app
            .send(
                Method::POST,
                "/api/invest",
                &headers,
                Some(r#"{"investAmount":1,"productId":1}"#),
            )
            .await;
        assert_eq!(
            (reply.status, &reply.body["code"], &reply.body["status"]),
            (401, &json!("UNAUTHENTICATED"), &json!(401))
        );
        assert_eq!(reply.body["result"], false);
        let listed = app
            .send(Method::GET, "/api/product", &headers[..1], None)
            .await;
        assert_eq!(listed.status, 401);
    }
    // A header never names an account with a password.
    app.sign_up("has-password").await;
    let named = invest(&app, "has-password", bigger, 1).await;
    assert_eq!(
        (named.status, &named.body["code"]),
        (401, &json!("UNAUTHENTICATED"))
    );

    // An unknown product, a malformed body, an amount below 1.
    let unknown = invest(&app, "user4", 999_999, 1).await;
    assert_eq!(
        (
            unknown.status,
            &unknown.body["code"],
            &unknown.body["status"]
        ),
        (404, &json!("PRODUCT_NOT_FOUND"), &json!(404))
    );
    let malformed = app
        .send(
            Method::POST,
            "/api/invest",
            &[
                ("X-USER-ID", "user4"),
                ("X-Gateway-Secret", support::GATEWAY_SECRET),
            ],
            Some("{not json"),
        )
        .await;
    assert_eq!(
        (malformed.status, &malformed.body["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
    let zero = invest(&app, "user4", bigger, 0).await;
    assert_eq!(
        (zero.status, &zero.body["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_and_without_one_each_request_invests() {
    let app = spawn(true).await;
    let product = open_product(&app, "Keyed", 1_000).await;
    let body = json!({"investAmount": 10, "productId": product}).to_string();
    let headers = [
        ("X-USER-ID", "user4"),
        ("X-Gateway-Secret", support::GATEWAY_SECRET),
        ("content-type", "application/json"),
        ("Idempotency-Key", "legacy-retry-1"),
    ];
    let first = app
        .send(Method::POST, "/api/invest", &headers, Some(&body))
        .await;
    let again = app
        .send(Method::POST, "/api/invest", &headers, Some(&body))
        .await;
    assert_eq!(
        first.body,
        json!({"result": true, "code": "01", "message": null, "data": "OK", "status": 200})
    );
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Without a key: two requests, two investments.
    invest(&app, "user4", product, 10).await;
    invest(&app, "user4", product, 10).await;
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        30
    );
}

#[tokio::test]
async fn the_routes_exist_only_when_the_setting_is_on() {
    let off = spawn(false).await;
    for path in ["/api/product", "/api/product/my/invest"] {
        let reply = legacy(&off, Method::GET, path, Some("user4"), None).await;
        reply.assert_problem(404, "NOT_FOUND");
    }
    let document = off.get("/api-docs/openapi.json", None).await.body;
    assert!(document["paths"].get("/api/invest").is_none());

    let on = spawn(true).await;
    let document = on.get("/api-docs/openapi.json", None).await.body;
    for path in ["/api/product", "/api/invest", "/api/product/my/invest"] {
        let operation = document["paths"][path]
            .as_object()
            .and_then(|ops| ops.values().next())
            .unwrap_or_else(|| panic!("{path} is listed"));
        assert_eq!(
            operation["tags"][0], "investments (first generation)",
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_and_v1_investors_together_never_pass_the_target() {
    let app = spawn(true).await;
    let product = open_product(&app, "Rush", 2_000).await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(app.sign_up(&format!("v1-{i}")).await);
    }
    let legacy_side = (0..20).map(|i| {
        let app = &app;
        async move { invest(app, &format!("legacy-{i}"), product, 100).await.body["result"] == true }
    });
    let v1_side = tokens.iter().enumerate().map(|(i, token)| {
        let app = &app;
        async move {
            app.post_idempotent(
                "/api/v1/investments",
                &format!("v1-{i}"),
                &json!({"productId": product, "investAmount": 100}),
                token,
            )
            .await
            .status
                == 201
        }
    });
    let (legacy_ok, v1_ok) = tokio::join!(join_all(legacy_side), join_all(v1_side));
    let succeeded = legacy_ok.iter().chain(&v1_ok).filter(|ok| **ok).count();
    assert_eq!(succeeded, 20, "exactly the target's worth of investments");
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        2_000
    );
    assert_eq!(
        app.scalar(&format!("SELECT coalesce(sum(amount), 0)::int8 AS n FROM investments WHERE product_id = {product}"))
            .await,
        2_000
    );
}

/// Over the investments' in-flight bound, a first-generation investment is
/// shed in its envelope (HTTP 503, `Retry-After`, "not run"), stores nothing
/// under its key, and runs as a first request when retried with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shed_investment_answers_in_the_envelope_and_runs_when_retried() {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            (
                "APP_TRUSTED_GATEWAY_SECRET".to_owned(),
                support::GATEWAY_SECRET.to_owned(),
            ),
            ("APP_LEGACY_INVEST_API".to_owned(), "true".to_owned()),
            ("APP_MAX_IN_FLIGHT_INVESTMENTS".to_owned(), "1".to_owned()),
            ("APP_ADMISSION_WAIT".to_owned(), "0".to_owned()),
            ("APP_DEPENDENCY_TIMEOUT".to_owned(), "30s".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let product = open_product(&app, "Crowded", 1_000_000).await;
    let body = json!({"investAmount": 10, "productId": product}).to_string();
    let send = |i: usize| {
        let (app, body) = (&app, &body);
        async move {
            let user = format!("crowd-{}", i % 10);
            let key = format!("legacy-busy-{i}");
            let headers = [
                ("X-USER-ID", user.as_str()),
                ("X-Gateway-Secret", support::GATEWAY_SECRET),
                ("content-type", "application/json"),
                ("Idempotency-Key", key.as_str()),
            ];
            app.send(Method::POST, "/api/invest", &headers, Some(body))
                .await
        }
    };

    let replies = join_all((0..100).map(send)).await;

    let ok = json!({"result": true, "code": "01", "message": null, "data": "OK", "status": 200});
    let mut shed = Vec::new();
    for (i, reply) in replies.iter().enumerate() {
        if reply.body == ok {
            continue;
        }
        assert_eq!(reply.status, 503, "{i}: {}", reply.text);
        assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.text);
        assert_eq!(
            (
                &reply.body["result"],
                &reply.body["code"],
                &reply.body["status"]
            ),
            (&json!(false), &json!("SERVICE_UNAVAILABLE"), &json!(503)),
            "{}",
            reply.text
        );
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("not run"), "{message}");
        shed.push(i);
    }
    assert!(
        !shed.is_empty(),
        "a burst of 100 over a bound of 1 sheds some"
    );
    let keys: Vec<String> = shed.iter().map(|i| format!("legacy-busy-{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    app.assert_no_record_under(&keys).await;
    // Retried one at a time (under the bound), each runs as a first request.
    for i in &shed {
        let reply = send(*i).await;
        assert_eq!(reply.body, ok, "{i}: {}", reply.text);
        assert_eq!(reply.header("idempotent-replayed"), None, "{i} ran afresh");
    }
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        100 * 10
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) AS n FROM investments WHERE product_id = {product}"
        ))
        .await,
        100
    );
}
