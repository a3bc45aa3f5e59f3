//! The Postgres order store against a real server: many orders at once go
//! through shared batches, and each is still decided, answered and recorded
//! on its own.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use domain::catalog::{ProductId, ProductName};
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotentRequest, StoredResponse, Written,
};
use domain::identity::UserId;
use domain::money::Points;
use domain::ordering::{
    CouponCode, Order, OrderId, OrderLine, OrderStore, PlaceOrderError, PricedOrder, Quantity,
};
use futures_util::future::join_all;
use infra::postgres::{PgOrderStore, PgPoolSettings, Postgres, connect_batch_pool, connect_pool};
use testkit::TestDb;

/// What became of one order handed to the store.
type Placement = Written<Order, PlaceOrderError>;

/// What ran now: the order's id or its refusal; `None` when nothing ran.
fn ran(p: &Placement) -> Option<Result<OrderId, PlaceOrderError>> {
    p.executed()
        .map(|result| result.as_ref().map(|o| o.id).map_err(Clone::clone))
}

struct Fixture {
    db: TestDb,
    store: Arc<PgOrderStore>,
    /// The lanes' pool, to look at the plans its connections cached.
    lanes: Postgres,
}

async fn fixture() -> Fixture {
    let db = TestDb::create().await;
    let settings = PgPoolSettings {
        url: db.url.clone(),
        max_size: 8,
        timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    };
    let pg: Postgres = connect_pool(&settings).expect("postgres pool");
    // The lanes' own pool, planned as the service plans it.
    let lanes = connect_batch_pool(&settings).expect("postgres pool");
    let store = Arc::new(PgOrderStore::new(pg, &lanes, Duration::from_secs(86_400)));
    Fixture { db, store, lanes }
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

impl Fixture {
    async fn exec(&self, sql: &str) {
        let mut conn = self.db.connect().await;
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn number(&self, sql: &str) -> i64 {
        let mut conn = self.db.connect().await;
        diesel::sql_query(format!("SELECT ({sql})::int8 AS id"))
            .get_result::<Id>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .id
    }

    /// `n` users, each with a wallet of `balance`; returns their ids.
    async fn users(&self, n: i64, balance: i64) -> Vec<UserId> {
        self.exec(&format!(
            "INSERT INTO users (login_id, name) SELECT 'u' || g, 'u' FROM generate_series(1, {n}) g"
        ))
        .await;
        self.exec(&format!(
            "INSERT INTO wallets (user_id, balance) SELECT id, {balance} FROM users"
        ))
        .await;
        let mut conn = self.db.connect().await;
        diesel::sql_query("SELECT id FROM users ORDER BY id")
            .load::<Id>(&mut conn)
            .await
            .expect("users")
            .into_iter()
            .map(|r| UserId::new(r.id))
            .collect()
    }

    async fn product(&self, price: i64, stock: i64) -> ProductId {
        let mut conn = self.db.connect().await;
        let row: Id = diesel::sql_query(
            "INSERT INTO products (name, price, stock) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind::<Text, _>("hot")
        .bind::<BigInt, _>(price)
        .bind::<BigInt, _>(stock)
        .get_result(&mut conn)
        .await
        .expect("product");
        ProductId::new(row.id)
    }

    /// A coupon `code` of 10 points off, issued to `owner`, valid for 7 days
    /// (in a campaign of its own).
    async fn owned_coupon(&self, owner: UserId, code: &str) {
        self.exec(&format!(
            "WITH c AS (INSERT INTO coupon_campaigns (name, discount_type, discount_value, valid_days) \
                        VALUES ('c', 'AMOUNT', 10, 7) RETURNING id) \
             INSERT INTO coupons (campaign_id, code, owner_id, issued_at, expires_at) \
             SELECT id, '{code}', {}, now(), now() + interval '7 days' FROM c",
            owner.get()
        ))
        .await;
    }

    async fn place(&self, order: PricedOrder, key: String) -> Placement {
        self.store
            .place(order.clone(), request(order.user_id, &key))
            .await
            .expect("placed")
    }
}

fn request(user_id: UserId, key: &str) -> IdempotentRequest<Order, PlaceOrderError> {
    IdempotentRequest {
        user_id,
        key: IdempotencyKey::parse(key).expect("valid key"),
        fingerprint: Fingerprint::new(format!("fp-{key}")),
        render: Arc::new(|result: &Result<Order, PlaceOrderError>| StoredResponse {
            status: if result.is_ok() { 201 } else { 409 },
            content_type: "text/plain".into(),
            body: match result {
                Ok(order) => format!("order {}", order.id.get()).into_bytes(),
                Err(e) => format!("{e:?}").into_bytes(),
            },
        }),
    }
}

/// An order of one unit of each of `products` (in id order) at `price` each.
fn order_of(user: UserId, products: &[ProductId], price: i64) -> PricedOrder {
    let unit = Points::new(price).expect("valid");
    let total = Points::new(price * products.len() as i64).expect("valid");
    PricedOrder {
        user_id: user,
        lines: products
            .iter()
            .map(|&product_id| OrderLine {
                product_id,
                name: ProductName::parse("p").expect("valid"),
                quantity: Quantity::new(1).expect("valid"),
                unit_price: unit,
                line_total: unit,
            })
            .collect(),
        total,
        discount: Points::ZERO,
        paid: total,
        coupon: None,
    }
}

fn order(user: UserId, product: ProductId, price: i64, coupon: Option<&str>) -> PricedOrder {
    let price = Points::new(price).expect("valid");
    PricedOrder {
        user_id: user,
        lines: vec![OrderLine {
            product_id: product,
            name: ProductName::parse("hot").expect("valid"),
            quantity: Quantity::new(1).expect("valid"),
            unit_price: price,
            line_total: price,
        }],
        total: price,
        discount: Points::ZERO,
        paid: price,
        coupon: coupon.map(|c| CouponCode::parse(c).expect("valid")),
    }
}

fn paid(placements: &[Placement]) -> usize {
    placements.iter().filter(|p| p.committed()).count()
}

#[tokio::test]
async fn a_hundred_simultaneous_orders_for_sixty_units_sell_exactly_sixty() {
    let f = fixture().await;
    let users = f.users(100, 1_000).await;
    let hot = f.product(300, 60).await;

    let placements = join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| f.place(order(*u, hot, 300, None), format!("k{i}"))),
    )
    .await;

    assert_eq!(paid(&placements), 60);
    let refused = placements
        .iter()
        .filter(|p| ran(p) == Some(Err(PlaceOrderError::OutOfStock { product_id: hot })))
        .count();
    assert_eq!(refused, 40, "the rest are refused as out of stock");
    assert!(
        placements
            .iter()
            .all(|p| matches!(p, Written::Executed { .. })),
        "every order was answered on its own"
    );
    assert_eq!(f.number("SELECT stock FROM products").await, 0);
    assert_eq!(f.number("SELECT count(*) FROM orders").await, 60);
    assert_eq!(
        f.number("SELECT sum(1000 - balance) FROM wallets").await,
        60 * 300,
        "money taken = units sold × price"
    );
    assert_eq!(
        f.number("SELECT count(*) FROM point_ledger WHERE kind = 'PAYMENT'")
            .await,
        60
    );
    assert_eq!(f.number("SELECT count(*) FROM outbox").await, 60);
    assert_eq!(
        f.number("SELECT count(*) FROM idempotency_keys").await,
        100,
        "refusals are recorded too"
    );
    assert_eq!(
        f.number(
            "SELECT count(*) FROM orders o JOIN point_ledger l ON l.order_id = o.id \
              JOIN wallets w ON w.user_id = o.user_id \
             WHERE l.balance_after = w.balance AND l.amount = o.paid_amount"
        )
        .await,
        60,
        "each payment's ledger row matches its order and the wallet"
    );
}

#[tokio::test]
async fn each_order_answers_with_its_own_order_and_replays_it() {
    let f = fixture().await;
    let users = f.users(20, 1_000).await;
    let hot = f.product(100, 1_000).await;

    let placements = join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| f.place(order(*u, hot, 100, None), format!("k{i}"))),
    )
    .await;
    let again = f.place(order(users[3], hot, 100, None), "k3".into()).await;

    let mut ids: Vec<i64> = placements
        .iter()
        .map(|p| match ran(p) {
            Some(Ok(id)) => id.get(),
            other => panic!("not paid: {other:?}"),
        })
        .collect();
    for (p, user) in placements.iter().zip(&users) {
        let Written::Executed { ref response, .. } = *p else {
            panic!("{p:?}")
        };
        let Some(Ok(id)) = ran(p) else {
            panic!("{p:?}")
        };
        assert_eq!(
            String::from_utf8_lossy(&response.body),
            format!("order {}", id.get())
        );
        let owner = f
            .number(&format!(
                "SELECT user_id FROM orders WHERE id = {}",
                id.get()
            ))
            .await;
        assert_eq!(owner, user.get(), "the order belongs to its caller");
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "twenty distinct orders");
    assert_eq!(
        again,
        Written::Replayed(match &placements[3] {
            Written::Executed { response, .. } => response.clone(),
            other => panic!("{other:?}"),
        }),
        "a replay runs nothing"
    );
    assert_eq!(f.number("SELECT count(*) FROM orders").await, 20);
}

#[tokio::test]
async fn simultaneous_orders_of_one_payer_never_overdraw_the_balance() {
    let f = fixture().await;
    let users = f.users(1, 1_000).await;
    let hot = f.product(300, 100).await;

    let placements =
        join_all((0..10).map(|i| f.place(order(users[0], hot, 300, None), format!("k{i}")))).await;

    assert_eq!(paid(&placements), 3, "1,000 pays for three orders of 300");
    assert_eq!(
        placements
            .iter()
            .filter(|p| ran(p) == Some(Err(PlaceOrderError::InsufficientBalance)))
            .count(),
        7
    );
    assert_eq!(f.number("SELECT balance FROM wallets").await, 100);
    assert_eq!(f.number("SELECT stock FROM products").await, 97);
}

#[tokio::test]
async fn one_key_sent_many_times_at_once_places_one_order() {
    let f = fixture().await;
    let users = f.users(1, 100_000).await;
    let hot = f.product(100, 100).await;

    let placements =
        join_all((0..10).map(|_| f.place(order(users[0], hot, 100, None), "same".into()))).await;

    assert_eq!(paid(&placements), 1);
    assert!(
        placements.iter().all(|p| matches!(
            p,
            Written::Executed { .. } | Written::InProgress | Written::Replayed(_)
        )),
        "{placements:?}"
    );
    assert_eq!(f.number("SELECT count(*) FROM orders").await, 1);
    assert_eq!(f.number("SELECT stock FROM products").await, 99);
}

#[tokio::test]
async fn a_coupon_raced_by_simultaneous_orders_is_consumed_once() {
    let f = fixture().await;
    let users = f.users(1, 100_000).await;
    let hot = f.product(100, 100).await;
    f.owned_coupon(users[0], "RACE-CODE").await;

    let placements = join_all((0..8).map(|i| {
        f.place(
            order(users[0], hot, 100, Some("RACE-CODE")),
            format!("k{i}"),
        )
    }))
    .await;

    assert_eq!(paid(&placements), 1);
    assert_eq!(
        placements
            .iter()
            .filter(|p| ran(p) == Some(Err(PlaceOrderError::CouponNotApplicable)))
            .count(),
        7
    );
    assert_eq!(
        f.number(
            "SELECT count(*) FROM coupons c JOIN orders o ON o.id = c.used_order_id \
              WHERE c.used_at IS NOT NULL AND o.coupon_code = c.code"
        )
        .await,
        1,
        "the coupon names the one order that used it"
    );
    assert_eq!(f.number("SELECT stock FROM products").await, 99);
}

#[tokio::test]
async fn batches_of_different_lanes_sharing_products_and_payers_never_deadlock() {
    let f = fixture().await;
    let users = f.users(10, 100_000).await;
    let (a, b, shared) = (
        f.product(10, 1_000).await,
        f.product(10, 1_000).await,
        f.product(10, 1_000).await,
    );
    assert_ne!(
        a.get().rem_euclid(4),
        b.get().rem_euclid(4),
        "the two kinds of order go to different lanes"
    );

    // Both kinds lock `shared` and the same wallets, from two lanes at once.
    let placements = join_all((0..80).map(|i| {
        let first = if i % 2 == 0 { a } else { b };
        f.place(
            order_of(users[i % users.len()], &[first, shared], 10),
            format!("k{i}"),
        )
    }))
    .await;

    assert_eq!(paid(&placements), 80, "every order paid, none failed");
    assert_eq!(
        f.number(&format!(
            "SELECT stock FROM products WHERE id = {}",
            shared.get()
        ))
        .await,
        920
    );
    assert_eq!(
        f.number("SELECT sum(100000 - balance) FROM wallets").await,
        80 * 20
    );
}

#[tokio::test]
async fn an_order_whose_caller_gave_up_while_it_waited_for_its_lane_is_never_placed() {
    use diesel_async::{AnsiTransactionManager, TransactionManager as _};
    let f = fixture().await;
    let users = f.users(2, 10_000).await;
    let busy = f.product(100, 10).await;
    for _ in 0..3 {
        f.product(100, 10).await;
    }
    let queued = f.product(100, 10).await; // four ids on: the same lane
    let mut blocker = f.db.connect().await;
    AnsiTransactionManager::begin_transaction(&mut blocker)
        .await
        .expect("begin");
    diesel::sql_query(format!(
        "SELECT id FROM products WHERE id = {} FOR UPDATE",
        busy.get()
    ))
    .execute(&mut blocker)
    .await
    .expect("lock");
    let running = {
        let store = Arc::clone(&f.store);
        let o = order(users[0], busy, 100, None);
        tokio::spawn(async move { store.place(o.clone(), request(o.user_id, "running")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let abandoned = {
        let store = Arc::clone(&f.store);
        let o = order(users[1], queued, 100, None);
        tokio::spawn(async move { store.place(o.clone(), request(o.user_id, "gone")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    abandoned.abort(); // the client went away while its order waited
    let _ = abandoned.await;
    AnsiTransactionManager::commit_transaction(&mut blocker)
        .await
        .expect("commit");
    let running = running.await.expect("joined").expect("placed");
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(running.committed());
    assert_eq!(
        f.number(&format!(
            "SELECT count(*) FROM order_items WHERE product_id = {}",
            queued.get()
        ))
        .await,
        0,
        "the abandoned order was dropped, not charged"
    );
    assert_eq!(
        f.number(&format!(
            "SELECT balance FROM wallets WHERE user_id = {}",
            users[1].get()
        ))
        .await,
        10_000
    );
}

/// Sessions of this test's database waiting for a lock.
const LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity \
                           WHERE datname = current_database() AND wait_event_type = 'Lock'";

#[tokio::test]
async fn a_coupon_that_expires_while_its_order_waits_for_the_coupon_lock_is_refused() {
    use diesel_async::{AnsiTransactionManager, TransactionManager as _};
    let f = fixture().await;
    let users = f.users(1, 1_000).await;
    let hot = f.product(100, 10).await;
    f.exec(
        "INSERT INTO coupon_campaigns (name, discount_type, discount_value, valid_days) \
         VALUES ('c', 'AMOUNT', 10, 7)",
    )
    .await;
    f.exec(&format!(
        "INSERT INTO coupons (campaign_id, code, owner_id, issued_at, expires_at) \
         SELECT id, 'SOON-GONE', {}, now(), now() + interval '2 seconds' \
           FROM coupon_campaigns",
        users[0].get()
    ))
    .await;
    let mut holder = f.db.connect().await;
    AnsiTransactionManager::begin_transaction(&mut holder)
        .await
        .expect("begin");
    diesel::sql_query("SELECT code FROM coupons WHERE code = 'SOON-GONE' FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("lock");

    let waiting = {
        let store = Arc::clone(&f.store);
        let o = order(users[0], hot, 100, Some("SOON-GONE"));
        tokio::spawn(async move { store.place(o.clone(), request(o.user_id, "late")).await })
    };
    for _ in 0..50 {
        if f.number(LOCK_WAITS).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.number("SELECT count(*) FROM coupons WHERE expires_at > clock_timestamp()")
            .await,
        1,
        "the coupon was still valid when the order began to wait for it"
    );
    assert!(
        f.number(LOCK_WAITS).await > 0,
        "the order waits for the coupon's lock"
    );
    for _ in 0..50 {
        let unexpired = "SELECT count(*) FROM coupons WHERE expires_at > clock_timestamp()";
        if f.number(unexpired).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    AnsiTransactionManager::commit_transaction(&mut holder)
        .await
        .expect("release the lock");
    let placement = waiting.await.expect("joined").expect("placed");

    assert_eq!(
        ran(&placement),
        Some(Err(PlaceOrderError::CouponNotApplicable))
    );
    assert_eq!(f.number("SELECT balance FROM wallets").await, 1_000);
    assert_eq!(f.number("SELECT stock FROM products").await, 10);
    assert_eq!(f.number("SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        f.number("SELECT count(*) FROM coupons WHERE used_at IS NULL")
            .await,
        1
    );
}

/// The lanes plan each statement once per connection, on the tables as they
/// are then; here, nearly empty. Every plan they cached must still probe the
/// tables that grow with each order (orders, their lines, the ledger, the
/// outbox, the coupons, the stored answers) by index, or a sale's orders get
/// slower with every one before them (docs/reliability.md, "Soak").
#[tokio::test]
async fn the_lanes_plans_made_on_empty_tables_probe_the_growing_ones_by_index() {
    let f = fixture().await;
    let users = f.users(2, 10_000).await;
    let hot = f.product(100, 100).await;
    f.owned_coupon(users[0], "PLAN-CODE").await;
    // An order with a coupon, one without, a refusal (the coupon used up),
    // a retry answered from its record and one past the retention: every
    // statement of a batch.
    let with_coupon = f
        .place(order(users[0], hot, 100, Some("PLAN-CODE")), "a".into())
        .await;
    assert!(with_coupon.committed(), "{with_coupon:?}");
    let plain = f.place(order(users[1], hot, 100, None), "b".into()).await;
    assert!(plain.committed(), "{plain:?}");
    let refused = f
        .place(order(users[0], hot, 100, Some("PLAN-CODE")), "c".into())
        .await;
    assert_eq!(
        ran(&refused),
        Some(Err(PlaceOrderError::CouponNotApplicable))
    );
    let retry = f.place(order(users[1], hot, 100, None), "b".into()).await;
    assert!(matches!(retry, Written::Replayed(_)), "{retry:?}");
    // A key whose record outlived the retention is a new request: its
    // record is deleted and the order placed again.
    f.exec("UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'b'")
        .await;
    let after_retention = f.place(order(users[1], hot, 100, None), "b".into()).await;
    assert!(after_retention.committed(), "{after_retention:?}");
    assert_eq!(f.number("SELECT count(*) FROM orders").await, 3);
    assert_eq!(f.number("SELECT stock FROM products").await, 97);

    let scans = infra::postgres::plan_audit::unkeyed_scans(&f.lanes)
        .await
        .expect("plans");
    assert!(
        scans.is_empty(),
        "plans that scan a growing table: {scans:#?}"
    );
}
