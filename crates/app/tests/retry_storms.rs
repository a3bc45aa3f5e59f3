//! Retries never refuse themselves (issue 14): many simultaneous copies of
//! one request, spread over two instances of the service on one database
//! and one Redis, give exactly one effect. Every answer is that effect, its
//! replay, or `409 IDEMPOTENCY_IN_PROGRESS`, also when the request takes
//! more than half of what is left. For coupon issue, which has no key, one
//! user's simultaneous issues give one coupon and every other answer is
//! `409 COUPON_ALREADY_ISSUED`.

mod support;

use chrono::{Duration, SecondsFormat, Utc};
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Options, Reply, Sibling, TestApp};

/// Copies of one request per round, and fresh keys (rounds) per write.
const COPIES: usize = 32;
const ROUNDS: usize = 3;

/// Two instances of the service on one database and one Redis.
struct Pair {
    app: TestApp,
    sibling: Sibling,
}

impl Pair {
    async fn start() -> Self {
        let app = TestApp::spawn_with(Options::headroom()).await;
        let sibling = app.spawn_sibling().await;
        Self { app, sibling }
    }

    /// `COPIES` copies of one POST at once, alternating between the two
    /// instances; `key` is the `Idempotency-Key`, if any.
    async fn storm(&self, path: &str, key: Option<&str>, body: &Value, token: &str) -> Vec<Reply> {
        let bases = [self.app.base.as_str(), self.sibling.base.as_str()];
        join_all((0..COPIES).map(|i| {
            let mut req = self
                .app
                .http
                .post(format!("{}{path}", bases[i % 2]))
                .bearer_auth(token)
                .json(body);
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            async move { Reply::from(req.send().await.expect("request sent")).await }
        }))
        .await
    }
}

/// Checks a storm's answers: exactly one fresh effect with `status`, every
/// other answer its byte-identical replay or `409 IDEMPOTENCY_IN_PROGRESS`.
/// Returns the effect's body.
fn one_effect(replies: &[Reply], status: u16) -> Value {
    let fresh: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == status && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one copy runs: {:?}",
        replies
            .iter()
            .map(|r| (r.status, r.text.as_str()))
            .collect::<Vec<_>>()
    );
    let effect = fresh[0];
    for reply in replies {
        if std::ptr::eq(reply, effect) {
            continue;
        }
        match reply.status {
            409 => reply.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS"),
            s if s == status => {
                assert_eq!(reply.header("idempotent-replayed"), Some("true"));
                assert_eq!(reply.text, effect.text, "a replay is the same bytes");
            }
            other => panic!("a copy was answered {other}: {}", reply.text),
        }
    }
    effect.body.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_a_charge_charge_once() {
    let pair = Pair::start().await;
    let token = pair.app.sign_up("charger").await;

    for round in 0..ROUNDS {
        let replies = pair
            .storm(
                "/api/v1/points/charge",
                Some(&format!("charge-{round}")),
                &json!({"amount": 600_000}),
                &token,
            )
            .await;
        let receipt = one_effect(&replies, 200);
        assert_eq!(receipt["chargedAmount"], 600_000);
    }

    assert_eq!(
        pair.app.scalar("SELECT balance AS n FROM wallets").await,
        600_000 * i64::try_from(ROUNDS).expect("small"),
        "one charge per key"
    );
    assert_eq!(
        pair.app
            .scalar("SELECT count(*) AS n FROM point_ledger WHERE kind = 'CHARGE'")
            .await,
        i64::try_from(ROUNDS).expect("small")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_an_order_taking_most_of_the_stock_place_it_once() {
    let pair = Pair::start().await;
    let token = pair.app.sign_up("buyer").await;
    pair.app.charge(&token, 1_000_000).await;

    for round in 0..ROUNDS {
        // 6 of 10 units: a copy that counted its first copy's reservation
        // as someone else's would be refused as out of stock.
        let product = pair
            .app
            .create_product(&format!("hot-{round}"), 1_000, 10)
            .await;
        let replies = pair
            .storm(
                "/api/v1/orders",
                Some(&format!("order-{round}")),
                &json!({"items": [{"productId": product, "quantity": 6}]}),
                &token,
            )
            .await;
        let order = one_effect(&replies, 201);
        assert_eq!(order["paidAmount"], 6_000, "{order}");
        assert_eq!(
            pair.app
                .scalar(&format!(
                    "SELECT stock AS n FROM products WHERE id = {product}"
                ))
                .await,
            4,
            "the stock was taken once"
        );
    }

    let rounds = i64::try_from(ROUNDS).expect("small");
    assert_eq!(
        pair.app.scalar("SELECT count(*) AS n FROM orders").await,
        rounds
    );
    assert_eq!(
        pair.app.scalar("SELECT balance AS n FROM wallets").await,
        1_000_000 - 6_000 * rounds,
        "paid once per key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_an_investment_taking_most_of_what_remains_invest_once() {
    let pair = Pair::start().await;
    let admin = pair.app.admin_token().await;
    let token = pair.app.sign_up("investor").await;
    let now = Utc::now();
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);

    for round in 0..ROUNDS {
        let created = pair
            .app
            .post(
                "/api/v1/admin/invest-products",
                &json!({
                    "title": format!("Solar farm {round}"),
                    "totalInvestingAmount": 1_000_000,
                    "startedAt": ts(now - Duration::hours(1)),
                    "finishedAt": ts(now + Duration::hours(1)),
                }),
                Some(&admin),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let product = created.body["productId"].as_i64().expect("productId");

        // 600,000 of 1,000,000: more than half of what remains.
        let replies = pair
            .storm(
                "/api/v1/investments",
                Some(&format!("invest-{round}")),
                &json!({"productId": product, "investAmount": 600_000}),
                &token,
            )
            .await;
        let investment = one_effect(&replies, 201);
        assert_eq!(investment["investAmount"], 600_000);
        assert_eq!(
            pair.app
                .scalar(&format!(
                    "SELECT current_amount AS n FROM invest_products WHERE id = {product}"
                ))
                .await,
            600_000,
            "invested once"
        );
    }

    assert_eq!(
        pair.app
            .scalar("SELECT count(*) AS n FROM investments")
            .await,
        i64::try_from(ROUNDS).expect("small")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_issues_by_one_user_give_one_coupon() {
    let pair = Pair::start().await;
    let admin = pair.app.admin_token().await;
    let created = pair
        .app
        .post(
            "/api/v1/admin/coupon-campaigns",
            &json!({
                "name": "Rush", "discountType": "AMOUNT", "discountValue": 1_000,
                "minOrderAmount": 0, "validDays": 7,
            }),
            Some(&admin),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let campaign = created.body["id"].as_i64().expect("id");
    let codes = pair
        .app
        .post(
            &format!("/api/v1/admin/coupon-campaigns/{campaign}/codes"),
            &json!({"count": 100}),
            Some(&admin),
        )
        .await;
    assert_eq!(codes.status, 201, "{}", codes.text);

    for round in 0..ROUNDS {
        let token = pair.app.sign_up(&format!("rusher{round}")).await;
        let replies = pair
            .storm(
                &format!("/api/v1/coupon-campaigns/{campaign}/issue"),
                None,
                &json!({}),
                &token,
            )
            .await;
        let issued: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
        assert_eq!(issued.len(), 1, "one coupon per user");
        for reply in replies.iter().filter(|r| r.status != 201) {
            reply.assert_problem(409, "COUPON_ALREADY_ISSUED");
        }
    }

    let rounds = i64::try_from(ROUNDS).expect("small");
    assert_eq!(
        pair.app
            .scalar("SELECT count(*) AS n FROM coupons WHERE owner_id IS NOT NULL")
            .await,
        rounds
    );
    assert_eq!(
        pair.app
            .scalar("SELECT count(DISTINCT owner_id) AS n FROM coupons")
            .await,
        rounds
    );
}
