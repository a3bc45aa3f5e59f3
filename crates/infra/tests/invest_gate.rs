//! The Redis invest gate and the Postgres invest store against real servers.

use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::cmd;
use domain::invest::{
    InvestAdmission, InvestAmount, InvestGate, InvestProductId, InvestStore, InvestTitle,
    NewInvestProduct, RecruitingWindow,
};
use domain::money::Points;
use futures_util::future::join_all;
use infra::postgres::{PgInvestStore, PgPoolSettings, Postgres, connect_pool};
use infra::redis::{RedisInvestGate, RedisKeys, RedisPoolSettings};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use testkit::{TestDb, TestRedis};

struct Fixture {
    _db: TestDb,
    redis: TestRedis,
    pg: Postgres,
    gate: RedisInvestGate,
}

async fn fixture() -> Fixture {
    let db = TestDb::create().await;
    let redis = TestRedis::create().await;
    let pg = connect_pool(&PgPoolSettings {
        url: db.url.clone(),
        max_size: 4,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("postgres pool");
    let pool = infra::redis::connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 16,
        timeout: Duration::from_secs(2),
    })
    .expect("redis pool");
    let gate = RedisInvestGate::new(pool, RedisKeys::new(redis.prefix.clone()), pg.clone());
    Fixture {
        _db: db,
        redis,
        pg,
        gate,
    }
}

fn amount(v: i64) -> InvestAmount {
    InvestAmount::new(v).expect("valid amount")
}

async fn open_product(pg: &Postgres, total: i64) -> InvestProductId {
    let now = Utc::now();
    PgInvestStore::new(pg.clone(), Duration::from_secs(86_400))
        .create(NewInvestProduct {
            title: InvestTitle::parse("Solar farm").expect("valid"),
            total: amount(total),
            window: RecruitingWindow::new(
                now - chrono::Duration::hours(1),
                now + chrono::Duration::hours(1),
            )
            .expect("valid"),
        })
        .await
        .expect("created")
        .id
}

async fn counter(f: &Fixture, product: InvestProductId) -> Option<i64> {
    let mut conn = f.redis.connect().await;
    cmd("GET")
        .arg(format!("{}invest:{product}:left", f.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

#[tokio::test]
async fn the_counter_is_built_from_postgres_and_a_refusal_takes_nothing() {
    let f = fixture().await;
    let product = open_product(&f.pg, 1_000).await;

    assert_eq!(
        f.gate.reserve(product, amount(300)).await.expect("gate"),
        InvestAdmission::Reserved
    );
    assert_eq!(counter(&f, product).await, Some(700));
    assert_eq!(
        f.gate.reserve(product, amount(701)).await.expect("gate"),
        InvestAdmission::Refused {
            remaining: Points::new(700).expect("valid")
        }
    );
    assert_eq!(
        counter(&f, product).await,
        Some(700),
        "a refusal takes nothing"
    );
    assert_eq!(
        f.gate.reserve(product, amount(700)).await.expect("gate"),
        InvestAdmission::Reserved
    );
    f.gate.release(product, amount(300)).await.expect("gate");
    assert_eq!(counter(&f, product).await, Some(300));

    // Forgotten, it starts again from Postgres, where nothing was invested.
    f.gate.forget(product).await.expect("gate");
    assert_eq!(counter(&f, product).await, None);
    f.gate.release(product, amount(5)).await.expect("gate");
    assert_eq!(
        counter(&f, product).await,
        None,
        "no give-back to a forgotten counter"
    );
    assert_eq!(
        f.gate.reserve(product, amount(1)).await.expect("gate"),
        InvestAdmission::Reserved
    );
    assert_eq!(counter(&f, product).await, Some(999));
}

#[tokio::test]
async fn an_unknown_product_is_left_to_postgres() {
    let f = fixture().await;
    assert_eq!(
        f.gate
            .reserve(InvestProductId::new(987_654), amount(1))
            .await
            .expect("gate"),
        InvestAdmission::Bypass
    );
}

/// The property the Lua script exists for: under any interleaving, a
/// refused amount is larger than what is left at the end. A plain `DECRBY`
/// followed by a give-back on a negative result breaks it: while a
/// too-large amount is held, a small one that fits is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_refuse_an_amount_that_fits() {
    let f = fixture().await;
    let product = open_product(&f.pg, 5_000).await;
    let mut rng = StdRng::seed_from_u64(6);
    let amounts: Vec<i64> = (0..400).map(|_| rng.random_range(1..=100)).collect();

    let gate = &f.gate;
    let decisions = join_all(
        amounts
            .iter()
            .map(|&a| async move { (a, gate.reserve(product, amount(a)).await.expect("gate")) }),
    )
    .await;

    let left = counter(&f, product).await.expect("built");
    let reserved: i64 = decisions
        .iter()
        .filter(|(_, d)| *d == InvestAdmission::Reserved)
        .map(|(a, _)| a)
        .sum();
    assert_eq!(reserved + left, 5_000, "every unit is reserved or left");
    assert!(left >= 0);
    for (a, decision) in &decisions {
        if let InvestAdmission::Refused { remaining } = decision {
            assert!(
                *a > left,
                "{a} was refused although {left} is left at the end"
            );
            assert!(
                *a > remaining.get(),
                "refused {a} with {remaining} reported left"
            );
        }
    }
    assert!(
        decisions
            .iter()
            .any(|(_, d)| matches!(d, InvestAdmission::Refused { .. })),
        "demand exceeded the target"
    );
}
