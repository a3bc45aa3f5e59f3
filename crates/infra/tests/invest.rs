//! The Postgres invest store and the Redis invest gate against real servers.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use chrono::Utc;
use deadpool_redis::redis::cmd;
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotentOutcome, IdempotentRequest, StoredResponse,
};
use domain::identity::{LoginId, NewUser, Role, UserId, UserName, UserRepository};
use domain::invest::{
    InvestAdmission, InvestAmount, InvestError, InvestGate, InvestOrder, InvestProductId,
    InvestStore, InvestTitle, Investment, NewInvestProduct, RecruitingWindow,
};
use domain::money::Points;
use futures_util::future::join_all;
use infra::postgres::{PgInvestStore, PgPoolSettings, PgUserRepository, Postgres, connect_pool};
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

fn store(pg: &Postgres) -> PgInvestStore {
    PgInvestStore::new(pg.clone(), Duration::from_secs(86_400))
}

/// A product of `total` recruiting from an hour ago to an hour ahead.
async fn open_product(pg: &Postgres, total: i64) -> InvestProductId {
    let now = Utc::now();
    store(pg)
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

async fn a_user(pg: &Postgres) -> UserId {
    let login = LoginId::parse("investor").expect("valid");
    PgUserRepository::new(pg.clone())
        .create(NewUser {
            name: UserName::from_login_id(&login),
            login_id: login,
            password_hash: None,
            role: Role::User,
        })
        .await
        .expect("user")
        .id
}

/// Invests straight through the store (no use case, no gate) under `key`.
async fn invest(
    pg: &Postgres,
    user_id: UserId,
    key: &str,
    product_id: InvestProductId,
    amount_of: i64,
    at: DateTime<Utc>,
) -> Result<Investment, InvestError> {
    let request = IdempotentRequest {
        user_id,
        key: IdempotencyKey::parse(key).expect("valid"),
        fingerprint: Fingerprint::new(key.to_owned()),
        render: Arc::new(|result: &Result<Investment, InvestError>| StoredResponse {
            status: if result.is_ok() { 201 } else { 409 },
            content_type: "text/plain".into(),
            body: Vec::new(),
        }),
    };
    let order = InvestOrder {
        user_id,
        product_id,
        amount: amount(amount_of),
        at,
    };
    let placed = store(pg).invest(order, request).await.expect("postgres");
    assert!(matches!(placed.outcome, IdempotentOutcome::Executed(_)));
    placed.ran.expect("ran now")
}

/// The use case checks the rules on a read first; the store must hold them
/// on its own, at the instant it is given, in the guarded update.
#[tokio::test]
async fn the_guarded_update_holds_the_window_and_the_target_on_its_own() {
    let f = fixture().await;
    let user = a_user(&f.pg).await;
    let product = open_product(&f.pg, 1_000).await;
    let window = store(&f.pg)
        .get(product)
        .await
        .expect("read")
        .expect("exists")
        .window;
    let closed = Err(InvestError::NotInRecruitingPeriod {
        product_id: product,
    });
    let second = chrono::Duration::seconds(1);

    let early = invest(
        &f.pg,
        user,
        "early",
        product,
        10,
        window.started_at() - second,
    )
    .await;
    let late = invest(
        &f.pg,
        user,
        "late",
        product,
        10,
        window.finished_at() + second,
    )
    .await;
    assert_eq!((early, late), (closed.clone(), closed));
    let first = invest(&f.pg, user, "first", product, 100, window.started_at()).await;
    let last = invest(&f.pg, user, "last", product, 100, window.finished_at()).await;
    assert!(first.is_ok() && last.is_ok(), "both edges are inside");
    assert_eq!(
        first.expect("ok").invested_at,
        window.started_at(),
        "dated at the instant given"
    );

    let now = Utc::now();
    assert_eq!(
        invest(&f.pg, user, "over", product, 801, now).await,
        Err(InvestError::AmountExceedsRemaining {
            product_id: product,
            remaining: Points::new(800).expect("valid"),
        })
    );
    assert!(invest(&f.pg, user, "rest", product, 800, now).await.is_ok());
    assert_eq!(
        invest(&f.pg, user, "more", product, 1, now).await,
        Err(InvestError::SoldOut {
            product_id: product
        })
    );
    let unknown = InvestProductId::new(987_654);
    assert_eq!(
        invest(&f.pg, user, "unknown", unknown, 1, now).await,
        Err(InvestError::ProductNotFound {
            product_id: unknown
        })
    );

    let after = store(&f.pg)
        .get(product)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(after.current.get(), 1_000);
    assert_eq!(after.investors, 1, "three investments, one investor");
    let mine = store(&f.pg)
        .mine(
            user,
            domain::paging::PageRequest::new(None, None).expect("valid"),
        )
        .await
        .expect("read");
    assert_eq!(mine.total_count, 3, "refusals leave no investment behind");
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
