//! Gate reservations as leases, against a real Redis: a reservation that
//! nobody confirms or releases (its instance was killed) comes back once
//! its lease expires; a confirmed one stays taken; a release that comes
//! after its lease was given back gives nothing back twice. The counters
//! are set by hand, as a rebuild from Postgres would set them, so no
//! rebuild runs (Postgres is only there because a gate is built with it).

use std::time::Duration;

use deadpool_redis::redis::cmd;
use domain::catalog::ProductId;
use domain::coupon::{CampaignId, IssueGate, IssueRefusal};
use domain::gate::{Admission, Holder};
use domain::idempotency::IdempotencyKey;
use domain::identity::UserId;
use domain::ordering::{Quantity, StockGate};
use infra::postgres::{PgPoolSettings, Postgres, connect_pool};
use infra::redis::{RedisIssueGate, RedisKeys, RedisPool, RedisPoolSettings, RedisStockGate};
use testkit::{TestDb, TestRedis};

/// Short enough for a test, long enough that a reservation made a moment
/// ago has not expired on a busy machine.
const LEASE: Duration = Duration::from_millis(600);

struct Fixture {
    _db: TestDb,
    redis: TestRedis,
    pg: Postgres,
    pool: RedisPool,
}

async fn fixture() -> Fixture {
    let db = TestDb::create().await;
    let redis = TestRedis::create().await;
    let pg = connect_pool(&PgPoolSettings {
        url: db.url.clone(),
        max_size: 2,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("postgres pool");
    let pool = infra::redis::connect_pool(&RedisPoolSettings {
        url: redis.url.clone(),
        max_size: 4,
        timeout: Duration::from_secs(2),
    })
    .expect("redis pool");
    Fixture {
        _db: db,
        redis,
        pg,
        pool,
    }
}

impl Fixture {
    fn keys(&self) -> RedisKeys {
        RedisKeys::new(self.redis.prefix.clone())
    }

    fn stock_gate(&self) -> RedisStockGate {
        RedisStockGate::new(self.pool.clone(), self.keys(), self.pg.clone()).leasing_for(LEASE)
    }

    fn issue_gate(&self) -> RedisIssueGate {
        RedisIssueGate::new(self.pool.clone(), self.keys(), self.pg.clone()).leasing_for(LEASE)
    }

    async fn set(&self, key: &str, value: i64) {
        let mut conn = self.redis.connect().await;
        let _: () = cmd("SET")
            .arg(format!("{}{key}", self.redis.prefix))
            .arg(value)
            .arg("EX")
            .arg(30)
            .query_async(&mut conn)
            .await
            .expect("redis");
    }

    async fn get(&self, key: &str) -> Option<i64> {
        let mut conn = self.redis.connect().await;
        cmd("GET")
            .arg(format!("{}{key}", self.redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("redis")
    }

    async fn exists(&self, key: &str) -> bool {
        let mut conn = self.redis.connect().await;
        cmd("EXISTS")
            .arg(format!("{}{key}", self.redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("redis")
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).expect("valid")
}

fn line(product: i64, quantity: i64) -> (ProductId, Quantity) {
    (
        ProductId::new(product),
        Quantity::new(quantity).expect("valid quantity"),
    )
}

/// Past the lease, with room for a slow scheduler.
async fn past_the_lease() {
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_order_nobody_settles_gives_its_stock_back_when_its_lease_expires_and_only_once() {
    let f = fixture().await;
    let gate = f.stock_gate();
    f.set("stock:{1}", 3).await;
    f.set("stock:{2}", 1).await;
    let user = UserId::new(1);
    let (dead, late, later) = (key("dead"), key("late"), key("later"));

    // An order on an instance that is then killed: reserved, never settled.
    let both = [line(1, 2), line(2, 1)];
    assert_eq!(
        gate.reserve(Holder::keyed(user, &dead), &both)
            .await
            .expect("gate"),
        Admission::Reserved
    );
    assert_eq!(
        (f.get("stock:{1}").await, f.get("stock:{2}").await),
        (Some(1), Some(0))
    );
    assert_eq!(
        gate.reserve(Holder::keyed(user, &late), &[line(2, 1)])
            .await
            .expect("gate"),
        Admission::Refused(ProductId::new(2)),
        "while the lease lasts, its units are taken"
    );

    past_the_lease().await;
    assert_eq!(
        gate.reserve(Holder::keyed(user, &later), &[line(2, 1)])
            .await
            .expect("gate"),
        Admission::Reserved,
        "the expired lease was given back before the count"
    );
    assert_eq!(f.get("stock:{2}").await, Some(0));
    // Product 1's share comes back with the next reservation on it.
    assert_eq!(
        gate.reserve(Holder::keyed(user, &key("three")), &[line(1, 3)])
            .await
            .expect("gate"),
        Admission::Reserved
    );
    assert_eq!(f.get("stock:{1}").await, Some(0));

    // The "dead" order was only slow: its release now gives back nothing,
    // since its lease was given back already.
    gate.release(Holder::keyed(user, &dead), &both)
        .await
        .expect("gate");
    assert_eq!(
        (f.get("stock:{1}").await, f.get("stock:{2}").await),
        (Some(0), Some(0)),
        "an amount is never given back twice"
    );
}

#[tokio::test]
async fn a_confirmed_order_keeps_its_stock_after_the_lease_and_a_released_one_gives_it_back() {
    let f = fixture().await;
    let gate = f.stock_gate();
    f.set("stock:{5}", 3).await;
    let user = UserId::new(2);
    let (paid, failed) = (key("paid"), key("failed"));

    for k in [&paid, &failed] {
        assert_eq!(
            gate.reserve(Holder::keyed(user, k), &[line(5, 1)])
                .await
                .expect("gate"),
            Admission::Reserved
        );
    }
    gate.confirm(Holder::keyed(user, &paid), &[line(5, 1)])
        .await
        .expect("gate");
    gate.release(Holder::keyed(user, &failed), &[line(5, 1)])
        .await
        .expect("gate");
    assert_eq!(
        f.get("stock:{5}").await,
        Some(2),
        "the released unit is back"
    );
    // The holder's mark outlives the release: a retry of that key (its
    // first copy's outcome may be unknown to its caller) goes to the store,
    // never refused by the gate, and takes nothing.
    assert_eq!(
        gate.reserve(Holder::keyed(user, &failed), &[line(5, 1)])
            .await
            .expect("gate"),
        Admission::Repeated
    );
    assert_eq!(f.get("stock:{5}").await, Some(2));

    past_the_lease().await;
    assert_eq!(
        gate.reserve(Holder::keyed(user, &key("next")), &[line(5, 2)])
            .await
            .expect("gate"),
        Admission::Reserved
    );
    assert_eq!(
        gate.reserve(Holder::keyed(user, &key("last")), &[line(5, 1)])
            .await
            .expect("gate"),
        Admission::Refused(ProductId::new(5)),
        "the confirmed unit stays sold after its lease"
    );
    assert_eq!(f.get("stock:{5}").await, Some(0));

    // A forgotten counter drops its leases with it.
    assert!(f.exists("stock:{5}:leases").await);
    gate.forget(ProductId::new(5)).await.expect("gate");
    assert!(!f.exists("stock:{5}:leases").await);
}

#[tokio::test]
async fn a_coupon_hold_nobody_settles_comes_back_when_its_lease_expires() {
    let f = fixture().await;
    let gate = f.issue_gate();
    let (open, kept) = (CampaignId::new(1), CampaignId::new(2));
    for campaign in [open, kept] {
        f.set(&format!("coupon:{{{campaign}}}:left"), 1).await;
    }
    let (dead, waiting, confirmed) = (UserId::new(1), UserId::new(2), UserId::new(3));

    assert_eq!(
        gate.reserve(Holder::user(dead), open).await.expect("gate"),
        Admission::Reserved
    );
    assert_eq!(
        gate.reserve(Holder::user(waiting), open)
            .await
            .expect("gate"),
        Admission::Refused(IssueRefusal::SoldOut)
    );
    past_the_lease().await;
    assert_eq!(
        gate.reserve(Holder::user(waiting), open)
            .await
            .expect("gate"),
        Admission::Reserved,
        "the dead instance's hold was given back"
    );
    // Its user holds nothing now, and the code is taken by another.
    assert_eq!(
        gate.reserve(Holder::user(dead), open).await.expect("gate"),
        Admission::Refused(IssueRefusal::SoldOut)
    );
    // A late release of the expired hold gives nothing back.
    gate.release(Holder::user(dead), open).await.expect("gate");
    assert_eq!(f.get(&format!("coupon:{{{open}}}:left")).await, Some(0));

    // A confirmed hold outlives its lease.
    assert_eq!(
        gate.reserve(Holder::user(confirmed), kept)
            .await
            .expect("gate"),
        Admission::Reserved
    );
    gate.confirm(Holder::user(confirmed), kept)
        .await
        .expect("gate");
    past_the_lease().await;
    assert_eq!(
        gate.reserve(Holder::user(waiting), kept)
            .await
            .expect("gate"),
        Admission::Refused(IssueRefusal::SoldOut)
    );
    assert_eq!(
        gate.reserve(Holder::user(confirmed), kept)
            .await
            .expect("gate"),
        Admission::Refused(IssueRefusal::AlreadyIssued)
    );
}
