//! The Postgres invest store and the Redis invest gate against real servers.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::cmd;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use domain::gate::{Admission, Holder};
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotentRequest, StoredResponse, Written,
};
use domain::identity::{LoginId, NewUser, Role, UserId, UserName, UserRepository};
use domain::invest::{
    InvestAmount, InvestError, InvestGate, InvestOrder, InvestProductId, InvestStore, InvestTitle,
    Investment, NewInvestProduct, RecruitingWindow,
};
use domain::money::Points;
use futures_util::future::join_all;
use infra::postgres::{PgInvestStore, PgPoolSettings, PgUserRepository, Postgres, connect_pool};
use infra::redis::{RedisInvestGate, RedisKeys, RedisPoolSettings};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use testkit::{TestDb, TestRedis};

struct Fixture {
    db: TestDb,
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
        db,
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
    product_between(
        pg,
        total,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    )
    .await
}

async fn product_between(
    pg: &Postgres,
    total: i64,
    from: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
) -> InvestProductId {
    store(pg)
        .create(NewInvestProduct {
            title: InvestTitle::parse("Solar farm").expect("valid"),
            total: amount(total),
            window: RecruitingWindow::new(from, until).expect("valid"),
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
) -> Result<Investment, InvestError> {
    invest_through(&store(pg), user_id, key, product_id, amount_of).await
}

/// The store's request for an investment under `key`.
fn invest_request(user_id: UserId, key: &str) -> IdempotentRequest<Investment, InvestError> {
    IdempotentRequest {
        user_id,
        key: IdempotencyKey::parse(key).expect("valid"),
        fingerprint: Fingerprint::new(key.to_owned()),
        render: Arc::new(|result: &Result<Investment, InvestError>| StoredResponse {
            status: if result.is_ok() { 201 } else { 409 },
            content_type: "text/plain".into(),
            body: Vec::new(),
        }),
    }
}

/// Invests through `store` under `key`; the investment must run now.
async fn invest_through(
    store: &PgInvestStore,
    user_id: UserId,
    key: &str,
    product_id: InvestProductId,
    amount_of: i64,
) -> Result<Investment, InvestError> {
    let request = invest_request(user_id, key);
    let order = InvestOrder {
        user_id,
        product_id,
        amount: amount(amount_of),
    };
    match store.invest(order, request).await.expect("postgres") {
        Written::Executed { result, .. } => result,
        other => panic!("expected it to run now, got {other:?}"),
    }
}

/// The use case checks the rules on a read first; the store must hold them
/// on its own, at the database's clock, in the guarded update.
#[tokio::test]
async fn the_guarded_update_holds_the_window_and_the_target_on_its_own() {
    let f = fixture().await;
    let user = a_user(&f.pg).await;
    let product = open_product(&f.pg, 1_000).await;
    let now = Utc::now();
    let minute = chrono::Duration::minutes(1);
    let hour = chrono::Duration::hours(1);
    let ended = product_between(&f.pg, 1_000, now - hour, now - minute).await;
    let upcoming = product_between(&f.pg, 1_000, now + minute, now + hour).await;

    for (key, closed) in [("ended", ended), ("upcoming", upcoming)] {
        assert_eq!(
            invest(&f.pg, user, key, closed, 10).await,
            Err(InvestError::NotInRecruitingPeriod { product_id: closed })
        );
    }
    let before = Utc::now();
    let first = invest(&f.pg, user, "first", product, 100)
        .await
        .expect("inside the window");
    let after = Utc::now();
    assert!(
        (before - chrono::Duration::seconds(1)..=after + chrono::Duration::seconds(1))
            .contains(&first.invested_at),
        "dated by the database's clock: {} not near {before}",
        first.invested_at
    );
    assert!(invest(&f.pg, user, "second", product, 100).await.is_ok());

    assert_eq!(
        invest(&f.pg, user, "over", product, 801).await,
        Err(InvestError::AmountExceedsRemaining {
            product_id: product,
            remaining: Points::new(800).expect("valid"),
        })
    );
    assert!(invest(&f.pg, user, "rest", product, 800).await.is_ok());
    assert_eq!(
        invest(&f.pg, user, "more", product, 1).await,
        Err(InvestError::SoldOut {
            product_id: product
        })
    );
    let unknown = InvestProductId::new(987_654);
    assert_eq!(
        invest(&f.pg, user, "unknown", unknown, 1).await,
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

/// One clock for the window (issue 14): an investment that reached the
/// product a moment before the close, but got to its row only after it, is
/// refused. The row is held by another transaction meanwhile, as a hot
/// product's row is held by the investments ahead of it.
#[tokio::test]
async fn an_investment_that_reaches_the_row_after_the_close_is_refused() {
    let f = fixture().await;
    let user = a_user(&f.pg).await;
    let closes = Utc::now() + chrono::Duration::milliseconds(1_500);
    let product = product_between(
        &f.pg,
        1_000,
        Utc::now() - chrono::Duration::hours(1),
        closes,
    )
    .await;
    let mut holder = AsyncPgConnection::establish(&f.db.url)
        .await
        .expect("connect");
    diesel::sql_query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    diesel::sql_query("SELECT id FROM invest_products WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Int8, _>(product.get())
        .execute(&mut holder)
        .await
        .expect("lock the row");

    let pg = f.pg.clone();
    let waiting = tokio::spawn(async move { invest(&pg, user, "late", product, 100).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the investment waits for the row");
    let until_closed = (closes - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_closed + Duration::from_millis(200)).await;
    diesel::sql_query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("commit");

    assert_eq!(
        waiting.await.expect("joined"),
        Err(InvestError::NotInRecruitingPeriod {
            product_id: product
        })
    );
    let after = store(&f.pg)
        .get(product)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(after.current.get(), 0, "nothing was taken");
    assert_eq!(after.investors, 0);
}

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    n: i64,
}

/// The numbers `sql` selects as `n`.
async fn numbers(f: &Fixture, sql: &str) -> Vec<i64> {
    let mut conn = f.db.connect().await;
    diesel::sql_query(sql)
        .load::<Number>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.n)
        .collect()
}

/// Many investments at once in one product go through shared batches (one
/// store, so one set of lanes): each is still taken whole or refused in
/// arrival order, the target holds, investors are counted once, and every
/// request is answered and its answer stored under its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_simultaneous_investments_in_one_product_are_batched_and_never_exceed_it() {
    let f = fixture().await;
    let users: Vec<UserId> = numbers(
        &f,
        "INSERT INTO users (login_id, name) SELECT 'u' || g, 'u' FROM generate_series(1, 30) g \
         RETURNING id::int8 AS n",
    )
    .await
    .into_iter()
    .map(UserId::new)
    .collect();
    let product = open_product(&f.pg, 10_000).await;
    let mut rng = StdRng::seed_from_u64(14);
    let amounts: Vec<i64> = (0..200).map(|_| rng.random_range(1..=150)).collect();
    assert!(
        amounts.iter().sum::<i64>() > 10_000,
        "demand exceeds the target"
    );
    let shared = store(&f.pg);

    let results = join_all(amounts.iter().enumerate().map(|(i, &a)| {
        let (store, user) = (&shared, users[i % users.len()]);
        async move { invest_through(store, user, &format!("k{i}"), product, a).await }
    }))
    .await;

    let accepted: Vec<&Investment> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let taken: i64 = accepted.iter().map(|i| i.amount.get()).sum();
    let after = shared.get(product).await.expect("read").expect("exists");
    assert_eq!(
        after.current.get(),
        taken,
        "the product holds what was accepted"
    );
    assert!(taken <= 10_000);
    let one = |sql: &'static str| numbers(&f, sql);
    assert_eq!(
        one("SELECT sum(amount)::int8 AS n FROM investments").await,
        [taken]
    );
    let investors: std::collections::HashSet<UserId> = accepted.iter().map(|i| i.user_id).collect();
    assert_eq!(
        after.investors,
        i64::try_from(investors.len()).expect("small")
    );
    assert_eq!(
        one("SELECT count(DISTINCT user_id)::int8 AS n FROM investments").await,
        [after.investors]
    );
    for (a, result) in amounts.iter().zip(&results) {
        match result {
            Ok(_) => {}
            Err(InvestError::SoldOut { .. }) => assert_eq!(taken, 10_000),
            Err(InvestError::AmountExceedsRemaining { remaining, .. }) => {
                assert!(*a > remaining.get(), "refused {a} with {remaining} left");
                assert!(
                    *a > 10_000 - taken,
                    "refused {a} although it fits in the end"
                );
            }
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(
        one("SELECT count(*)::int8 AS n FROM idempotency_keys").await,
        [200],
        "every request's answer is stored under its key"
    );
    // A batch reads the database's clock once and dates all its investments
    // with it; investments made one transaction each all differ.
    let rows = one("SELECT count(*)::int8 AS n FROM investments").await;
    let instants = one("SELECT count(DISTINCT invested_at)::int8 AS n FROM investments").await;
    assert!(
        instants < rows,
        "{rows:?} investments at {instants:?} instants: no batch held two"
    );
}

async fn counter(f: &Fixture, product: InvestProductId) -> Option<i64> {
    let mut conn = f.redis.connect().await;
    cmd("GET")
        .arg(format!("{}invest:{{{product}}}:left", f.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis answers")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).expect("valid")
}

#[tokio::test]
async fn the_counter_is_built_from_postgres_and_a_refusal_takes_nothing() {
    let f = fixture().await;
    let product = open_product(&f.pg, 1_000).await;
    let user = UserId::new(1);
    let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
    let holder = |k| Holder::keyed(user, k);

    assert_eq!(
        f.gate
            .reserve(holder(&a), product, amount(300))
            .await
            .expect("gate"),
        Admission::Reserved
    );
    assert_eq!(counter(&f, product).await, Some(700));
    assert_eq!(
        f.gate
            .reserve(holder(&b), product, amount(701))
            .await
            .expect("gate"),
        Admission::Refused(Points::new(700).expect("valid"))
    );
    assert_eq!(
        counter(&f, product).await,
        Some(700),
        "a refusal takes nothing"
    );
    assert_eq!(
        f.gate
            .reserve(holder(&c), product, amount(700))
            .await
            .expect("gate"),
        Admission::Reserved
    );
    for _ in 0..2 {
        f.gate
            .release(holder(&a), product, amount(300))
            .await
            .expect("gate");
    }
    assert_eq!(
        counter(&f, product).await,
        Some(300),
        "given back once, however often released"
    );

    // Forgotten, it starts again from Postgres, where nothing was invested.
    f.gate.forget(product).await.expect("gate");
    assert_eq!(counter(&f, product).await, None);
    f.gate
        .release(holder(&c), product, amount(700))
        .await
        .expect("gate");
    assert_eq!(
        counter(&f, product).await,
        None,
        "no give-back to a forgotten counter"
    );
    assert_eq!(
        f.gate
            .reserve(holder(&d), product, amount(1))
            .await
            .expect("gate"),
        Admission::Reserved
    );
    assert_eq!(counter(&f, product).await, Some(999));
}

#[tokio::test]
async fn an_unknown_product_is_left_to_postgres() {
    let f = fixture().await;
    assert_eq!(
        f.gate
            .reserve(
                Holder::keyed(UserId::new(1), &key("x")),
                InvestProductId::new(987_654),
                amount(1)
            )
            .await
            .expect("gate"),
        Admission::Bypass
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
    let keys: Vec<IdempotencyKey> = (0..amounts.len()).map(|i| key(&format!("k{i}"))).collect();
    let decisions = join_all(amounts.iter().zip(&keys).map(|(&a, k)| async move {
        let holder = Holder::keyed(UserId::new(1), k);
        (
            a,
            gate.reserve(holder, product, amount(a))
                .await
                .expect("gate"),
        )
    }))
    .await;

    let left = counter(&f, product).await.expect("built");
    let reserved: i64 = decisions
        .iter()
        .filter(|(_, d)| *d == Admission::Reserved)
        .map(|(a, _)| a)
        .sum();
    assert_eq!(reserved + left, 5_000, "every unit is reserved or left");
    assert!(left >= 0);
    for (a, decision) in &decisions {
        if let Admission::Refused(remaining) = decision {
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
            .any(|(_, d)| matches!(d, Admission::Refused(_))),
        "demand exceeded the target"
    );
}

/// The lanes plan each statement once per connection, on the tables as they
/// are then; here, empty. Every plan they cached must still probe the
/// tables that grow with each investment by index, or a sale's investments
/// get slower with every one before them (docs/reliability.md, "Soak").
#[tokio::test]
async fn the_lanes_plans_made_on_empty_tables_probe_the_growing_ones_by_index() {
    let f = fixture().await;
    let lanes = infra::postgres::connect_batch_pool(&PgPoolSettings {
        url: f.db.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("lanes pool");
    let store = PgInvestStore::with_lanes(f.pg.clone(), &lanes, Duration::from_secs(86_400));
    let product = open_product(&f.pg, 1_000).await;
    let user = a_user(&f.pg).await;
    // A first investment, a second by the same investor, a retry of the
    // first (answered from its stored record) and one of the second past the
    // retention (run again): every statement of a batch.
    invest_through(&store, user, "first", product, 10)
        .await
        .expect("invested");
    invest_through(&store, user, "second", product, 20)
        .await
        .expect("invested");
    let retry = store
        .invest(
            InvestOrder {
                user_id: user,
                product_id: product,
                amount: amount(10),
            },
            invest_request(user, "first"),
        )
        .await
        .expect("postgres");
    assert!(
        matches!(retry, Written::Replayed(_)),
        "the retry is answered from the record, got {retry:?}"
    );
    // A key whose record outlived the retention is a new request: its
    // record is deleted and the investment made again.
    let mut conn = f.db.connect().await;
    diesel::sql_query(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'second'",
    )
    .execute(&mut conn)
    .await
    .expect("aged");
    invest_through(&store, user, "second", product, 20)
        .await
        .expect("invested again");
    let product_row = store
        .get(product)
        .await
        .expect("postgres")
        .expect("product");
    assert_eq!(product_row.investors, 1, "one investor, counted once");
    assert_eq!(
        product_row.current,
        Points::new(50).expect("valid"),
        "three investments, the retry not again"
    );

    let scans = infra::postgres::plan_audit::unkeyed_scans(&lanes)
        .await
        .expect("plans");
    assert!(
        scans.is_empty(),
        "plans that scan a growing table: {scans:#?}"
    );
}
