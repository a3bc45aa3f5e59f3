//! Investments over HTTP: the flow, every error code, and the target never
//! exceeded under concurrent investors, with and without the Redis gate.

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Value, json};
use support::{Options, TestApp};
use testkit::{TcpProxy, target_of};

const ADMIN_PRODUCTS: &str = "/api/v1/admin/invest-products";
const PRODUCTS: &str = "/api/v1/invest-products";
const INVEST: &str = "/api/v1/investments";
const MINE: &str = "/api/v1/investments/me";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A product body recruiting from `from` to `to` hours from now.
fn product_body(title: &str, total: i64, from: i64, to: i64) -> Value {
    let now = Utc::now();
    json!({
        "title": title,
        "totalInvestingAmount": total,
        "startedAt": ts(now + Duration::hours(from)),
        "finishedAt": ts(now + Duration::hours(to)),
    })
}

async fn create(app: &TestApp, admin: &str, body: &Value) -> i64 {
    let reply = app.post(ADMIN_PRODUCTS, body, Some(admin)).await;
    assert_eq!(reply.status, 201, "creating a product: {}", reply.text);
    reply.body["productId"].as_i64().expect("productId")
}

/// A product open now (from an hour ago to an hour ahead).
async fn open_product(app: &TestApp, total: i64) -> i64 {
    let admin = app.admin_token().await;
    create(app, &admin, &product_body("Solar farm", total, -1, 1)).await
}

fn invest_body(product: i64, amount: i64) -> Value {
    json!({"productId": product, "investAmount": amount})
}

async fn detail(app: &TestApp, product: i64, token: &str) -> Value {
    let reply = app.get(&format!("{PRODUCTS}/{product}"), Some(token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

#[tokio::test]
async fn admins_open_products_and_everyone_reads_the_open_ones() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("reader").await;

    let forbidden = app
        .post(ADMIN_PRODUCTS, &product_body("x", 100, -1, 1), Some(&user))
        .await;
    forbidden.assert_problem(403, "FORBIDDEN");
    app.post(ADMIN_PRODUCTS, &product_body("x", 100, -1, 1), None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    app.get(PRODUCTS, None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");

    for (body, field) in [
        (product_body("  ", 100, -1, 1), "title"),
        (product_body("x", 0, -1, 1), "totalInvestingAmount"),
        (product_body("x", -5, -1, 1), "totalInvestingAmount"),
        (product_body("x", 100, 1, 1), "finishedAt"),
        (product_body("x", 100, 2, 1), "finishedAt"),
        (
            json!({"title": "x", "totalInvestingAmount": 100}),
            "startedAt",
        ),
        (
            json!({"title": "x", "totalInvestingAmount": 100, "startedAt": "yesterday", "finishedAt": "2030-01-01T00:00:00Z"}),
            "startedAt",
        ),
    ] {
        app.post(ADMIN_PRODUCTS, &body, Some(&admin))
            .await
            .assert_invalid_field(field);
    }

    let created = app
        .post(
            ADMIN_PRODUCTS,
            &product_body("  Old wind park  ", 1_000_000, -3, 2),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let old = created.body["productId"].as_i64().expect("id");
    assert_eq!(created.body["title"], "Old wind park", "trimmed");
    assert_eq!(created.body["totalInvestingAmount"], 1_000_000);
    assert_eq!(created.body["currentInvestingAmount"], 0);
    assert_eq!(created.body["investingCnt"], 0);
    assert_eq!(created.body["investStatus"], "ONGOING");
    let newer = create(&app, &admin, &product_body("Solar roof", 500, -1, 1)).await;
    let future = create(&app, &admin, &product_body("Tidal", 500, 1, 2)).await;
    let past = create(&app, &admin, &product_body("Coal", 500, -3, -1)).await;

    let list = app.get(PRODUCTS, Some(&user)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<i64> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["productId"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [newer, old], "open products only, newest start first");
    assert_eq!(
        (
            &list.body["page"],
            &list.body["size"],
            &list.body["totalCount"]
        ),
        (&json!(0), &json!(20), &json!(2))
    );
    let second = app
        .get(&format!("{PRODUCTS}?page=1&size=1"), Some(&user))
        .await;
    assert_eq!(second.body["items"][0]["productId"], old);
    assert_eq!(second.body["totalCount"], 2);
    app.get(&format!("{PRODUCTS}?size=101"), Some(&user))
        .await
        .assert_invalid_field("size");

    // Any product can be read by id, open or not.
    let tidal = detail(&app, future, &user).await;
    assert_eq!(tidal["title"], "Tidal");
    assert!(
        tidal["startedAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(detail(&app, past, &user).await["investStatus"], "ONGOING");
    let missing = app.get(&format!("{PRODUCTS}/987654"), Some(&user)).await;
    missing.assert_problem(404, "INVEST_PRODUCT_NOT_FOUND");
    app.get(&format!("{PRODUCTS}/not-a-number"), Some(&user))
        .await
        .assert_problem(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn investing_adds_up_counts_each_investor_once_and_lists_each_investment() {
    let app = TestApp::spawn().await;
    let product = open_product(&app, 10_000).await;
    let alice = app.sign_up("alice").await;
    let bob = app.sign_up("bob").await;
    let carol = app.sign_up("carol").await;

    let first = app
        .post_idempotent(INVEST, "a-1", &invest_body(product, 3_000), &alice)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["productId"], product);
    assert_eq!(first.body["investAmount"], 3_000);
    assert!(first.body["investmentId"].as_i64().is_some());
    assert!(first.body["investedAt"].is_string());
    let again = app
        .post_idempotent(INVEST, "a-2", &invest_body(product, 2_000), &alice)
        .await;
    assert_eq!(again.status, 201, "{}", again.text);

    let halfway = detail(&app, product, &carol).await;
    assert_eq!(halfway["currentInvestingAmount"], 5_000);
    assert_eq!(halfway["investingCnt"], 1, "alice counts once");
    assert_eq!(halfway["investStatus"], "ONGOING");

    let rest = app
        .post_idempotent(INVEST, "b-1", &invest_body(product, 5_000), &bob)
        .await;
    assert_eq!(rest.status, 201, "{}", rest.text);
    let full = detail(&app, product, &carol).await;
    assert_eq!(full["currentInvestingAmount"], 10_000);
    assert_eq!(full["investingCnt"], 2);
    assert_eq!(full["investStatus"], "COMPLETE");
    // Complete but still inside its window: still listed.
    let list = app.get(PRODUCTS, Some(&carol)).await;
    assert_eq!(list.body["items"][0]["investStatus"], "COMPLETE");

    // A replay answers the same and invests nothing more.
    let replay = app
        .post_idempotent(INVEST, "a-1", &invest_body(product, 3_000), &alice)
        .await;
    assert_eq!((replay.status, &replay.body), (201, &first.body));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    app.post_idempotent(INVEST, "a-1", &invest_body(product, 1), &alice)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.scalar("SELECT count(*) AS n FROM investments").await, 3);

    let mine = app.get(MINE, Some(&alice)).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.body["totalCount"], 2);
    let rows = mine.body["items"].as_array().expect("items");
    assert_eq!(
        rows[0]["investmentId"], again.body["investmentId"],
        "newest first"
    );
    assert_eq!(rows[0]["myInvestingAmount"], 2_000);
    assert_eq!(rows[1]["investmentId"], first.body["investmentId"]);
    assert_eq!(rows[1]["myInvestingAmount"], 3_000);
    assert_eq!(rows[1]["investedAt"], first.body["investedAt"]);
    for row in rows {
        assert_eq!(row["productId"], product);
        assert_eq!(row["title"], "Solar farm");
        assert_eq!(row["totalInvestingAmount"], 10_000);
    }
    let paged = app
        .get(&format!("{MINE}?page=1&size=1"), Some(&alice))
        .await;
    assert_eq!(paged.body["items"][0]["myInvestingAmount"], 3_000);
    assert_eq!(app.get(MINE, Some(&bob)).await.body["totalCount"], 1);
    let none = app.get(MINE, Some(&carol)).await;
    assert_eq!(
        (&none.body["totalCount"], &none.body["items"]),
        (&json!(0), &json!([]))
    );
    app.get(MINE, None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn every_refusal_of_an_investment_has_its_code_and_takes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let token = app.sign_up("investor").await;
    let product = create(&app, &admin, &product_body("Small", 1_000, -1, 1)).await;
    let future = create(&app, &admin, &product_body("Later", 1_000, 1, 2)).await;
    let past = create(&app, &admin, &product_body("Over", 1_000, -2, -1)).await;

    let no_key = app
        .post(INVEST, &invest_body(product, 10), Some(&token))
        .await;
    no_key.assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");
    app.post_idempotent(INVEST, "k", &invest_body(product, 10), "not-a-token")
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    for (body, field) in [
        (invest_body(product, 0), "investAmount"),
        (invest_body(product, -10), "investAmount"),
        (invest_body(product, 1_000_000_000_001), "investAmount"),
        (json!({"productId": product}), "investAmount"),
        (json!({"investAmount": 10}), "productId"),
        (json!({"productId": "one", "investAmount": 10}), "productId"),
    ] {
        app.post_idempotent(INVEST, "bad", &body, &token)
            .await
            .assert_invalid_field(field);
    }

    let unknown = app
        .post_idempotent(INVEST, "unknown", &invest_body(987_654, 10), &token)
        .await;
    unknown.assert_problem(404, "INVEST_PRODUCT_NOT_FOUND");
    assert_eq!(unknown.body["productId"], 987_654);
    for (key, closed) in [("early", future), ("late", past)] {
        app.post_idempotent(INVEST, key, &invest_body(closed, 10), &token)
            .await
            .assert_problem(409, "NOT_IN_RECRUITING_PERIOD");
    }

    assert_eq!(
        app.post_idempotent(INVEST, "six", &invest_body(product, 600), &token)
            .await
            .status,
        201
    );
    let over = app
        .post_idempotent(INVEST, "over", &invest_body(product, 401), &token)
        .await;
    over.assert_problem(409, "AMOUNT_EXCEEDS_REMAINING");
    assert_eq!(over.body["remainingAmount"], 400);
    assert_eq!(
        detail(&app, product, &token).await["currentInvestingAmount"],
        600,
        "never partly accepted"
    );
    assert_eq!(
        app.post_idempotent(INVEST, "four", &invest_body(product, 400), &token)
            .await
            .status,
        201,
        "exactly what remains"
    );
    let sold_out = app
        .post_idempotent(INVEST, "one-more", &invest_body(product, 1), &token)
        .await;
    sold_out.assert_problem(409, "SOLD_OUT");
    assert_eq!(sold_out.body["remainingAmount"], 0);

    // Refusals are stored and replayed like successes.
    let replayed = app
        .post_idempotent(INVEST, "over", &invest_body(product, 401), &token)
        .await;
    assert_eq!((replayed.status, &replayed.text), (409, &over.text));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.scalar("SELECT count(*) AS n FROM investments").await, 2);
    assert_eq!(
        app.scalar(&format!(
            "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
        ))
        .await,
        1_000
    );
}

/// What one rush investment got: (investor, amount, status, code).
type Answer = (usize, i64, u16, String);

/// 300 investments of random amounts (1..=200) by 50 investors, all at once.
async fn rush(app: &TestApp, product: i64, seed: u64) -> Vec<Answer> {
    let mut investors = Vec::new();
    for i in 0..50 {
        investors.push(app.sign_up(&format!("investor-{i}")).await);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let plan: Vec<(usize, i64)> = (0..300)
        .map(|i| (i % investors.len(), rng.random_range(1..=200)))
        .collect();
    join_all(plan.iter().enumerate().map(|(i, &(who, amount))| {
        let token = investors[who].clone();
        async move {
            let reply = app
                .post_idempotent(
                    INVEST,
                    &format!("rush-{i}"),
                    &invest_body(product, amount),
                    &token,
                )
                .await;
            let code = reply.body["code"].as_str().unwrap_or_default().to_owned();
            (who, amount, reply.status, code)
        }
    }))
    .await
}

/// What any rush must leave behind, gate or no gate. Returns what is left.
async fn assert_never_over_and_exactly_counted(
    app: &TestApp,
    product: i64,
    answers: &[Answer],
) -> i64 {
    let admin = app.admin_token().await;
    let view = detail(app, product, &admin).await;
    let current = view["currentInvestingAmount"].as_i64().expect("current");
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.2 == 201).collect();
    for (_, amount, status, code) in answers {
        assert!(
            *status == 201
                || (*status == 409 && (code == "SOLD_OUT" || code == "AMOUNT_EXCEEDS_REMAINING")),
            "investing {amount} answered {status} {code}"
        );
    }
    assert_eq!(
        accepted.iter().map(|a| a.1).sum::<i64>(),
        current,
        "accepted amounts add up to the product's total"
    );
    assert!(
        current <= 5_000,
        "the target of 5,000 was exceeded: {current}"
    );
    let investors: BTreeSet<usize> = accepted.iter().map(|a| a.0).collect();
    assert_eq!(view["investingCnt"], investors.len(), "distinct investors");
    assert_eq!(
        app.scalar(&format!("SELECT coalesce(sum(amount), 0)::bigint AS n FROM investments WHERE product_id = {product}"))
            .await,
        current
    );
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM investments").await,
        i64::try_from(accepted.len()).expect("small")
    );
    assert_eq!(
        app.scalar("SELECT count(DISTINCT user_id) AS n FROM investments")
            .await,
        i64::try_from(investors.len()).expect("small")
    );
    // Nobody was refused whose amount fits in what is left at the end: what
    // is left only shrinks, so it fitted when they asked too.
    let left = 5_000 - current;
    for (_, amount, status, code) in answers {
        if *status == 409 {
            assert!(
                *amount > left,
                "{amount} was refused ({code}) but {left} is left"
            );
        }
    }
    // Every answer is stored under its key, refusals included.
    assert_eq!(
        app.scalar("SELECT count(*) AS n FROM idempotency_keys WHERE key LIKE 'rush-%'")
            .await,
        300
    );
    left
}

async fn gate_counter(app: &TestApp, product: i64) -> Option<i64> {
    let mut conn = app.redis.connect().await;
    deadpool_redis::redis::cmd("GET")
        .arg(format!("{}invest:{{{product}}}:left", app.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_that_drifted_above_postgres_is_overruled_and_forgotten() {
    let app = TestApp::spawn().await;
    let product = open_product(&app, 1_000).await;
    let token = app.sign_up("drift").await;
    let first = app
        .post_idempotent(INVEST, "d-0", &invest_body(product, 100), &token)
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        gate_counter(&app, product).await,
        Some(900),
        "built on first use"
    );
    let mut conn = app.redis.connect().await;
    let key = format!("{}invest:{{{product}}}:left", app.redis.prefix);
    let ttl: i64 = deadpool_redis::redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("redis answers");
    assert!(
        (1..=30).contains(&ttl),
        "a counter lives at most 30 s: {ttl}"
    );

    // The counter drifts far above the truth (say, a rebuild raced
    // investments in flight), and a burst arrives: the gate admits them
    // all, Postgres takes what fits and refuses the rest.
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg(&key)
        .arg(1_000_000)
        .query_async(&mut conn)
        .await
        .expect("redis answers");
    let app = &app;
    let statuses = join_all((1..=30).map(|i| {
        let token = token.clone();
        async move {
            app.post_idempotent(
                INVEST,
                &format!("d-{i}"),
                &invest_body(product, 100),
                &token,
            )
            .await
            .status
        }
    }))
    .await;

    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 9);
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(
        detail(app, product, &token).await["currentInvestingAmount"],
        1_000
    );
    // Refused by Postgres, the gate forgot the product: its counter is gone
    // or was rebuilt from Postgres, never the drifted 1,000,000 minus a few.
    let counter = gate_counter(app, product).await;
    assert!(counter.is_none_or(|c| c <= 900), "{counter:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_investments_never_exceed_the_target() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let product = open_product(&app, 5_000).await;

    let answers = rush(&app, product, 300).await;

    let left = assert_never_over_and_exactly_counted(&app, product, &answers).await;
    assert!(
        answers.iter().any(|a| a.2 == 409),
        "demand exceeded the target"
    );
    // The gate ends holding exactly what Postgres says is left.
    assert_eq!(gate_counter(&app, product).await, Some(left));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_unreachable_postgres_alone_never_exceeds_the_target() {
    let services = testkit::services().await;
    let redis = TcpProxy::start(target_of(&services.redis_url)).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.addr()),
        ..Options::headroom()
    })
    .await;
    let product = open_product(&app, 5_000).await;
    redis.cut();

    let answers = rush(&app, product, 301).await;

    assert_never_over_and_exactly_counted(&app, product, &answers).await;
    assert!(
        answers.iter().any(|a| a.2 == 409),
        "demand exceeded the target"
    );
}

/// Twenty investments by each of ten users, all at once and all accepted:
/// however their transactions interleave, each user counts once. (Whether a
/// user invested before is read only after the product row is locked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_investments_by_one_user_count_once() {
    let app = TestApp::spawn_with(Options::headroom()).await;
    let product = open_product(&app, 1_000_000).await;
    let mut investors = Vec::new();
    for i in 0..10 {
        investors.push(app.sign_up(&format!("eager-{i}")).await);
    }

    let app = &app;
    let statuses = join_all((0..200).map(|i| {
        let token = investors[i % investors.len()].clone();
        async move {
            app.post_idempotent(
                INVEST,
                &format!("eager-{i}"),
                &invest_body(product, 7),
                &token,
            )
            .await
            .status
        }
    }))
    .await;

    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let view = detail(app, product, &investors[0]).await;
    assert_eq!(view["currentInvestingAmount"], 200 * 7);
    assert_eq!(view["investingCnt"], 10);
}
