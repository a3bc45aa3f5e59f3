//! Gate refusals recorded in Redis and written to Postgres behind, against
//! real servers: the record, the writer, a full queue, the gate that
//! answers a recorded key before anything else, and the stock gate that
//! records an order's refusal in the step that refuses it.

use std::time::Duration;

use deadpool_redis::redis::cmd;
use diesel_async::RunQueryDsl as _;
use domain::catalog::ProductId;
use domain::gate::{Admission, Holder, RefusalAnswers};
use domain::idempotency::{
    FastRefusals, Fingerprint, IdempotencyKey, IdempotencyStore, IdempotentOutcome, Record,
    StoredResponse,
};
use domain::identity::UserId;
use domain::invest::{InvestAmount, InvestGate, InvestProductId};
use domain::ordering::{Quantity, StockGate};
use infra::postgres::{PgIdempotencyStore, PgPoolSettings, Postgres, connect_pool};
use infra::redis::{
    RedisInvestGate, RedisKeys, RedisPool, RedisPoolSettings, RedisRefusals, RedisStockGate,
    RefusalWriter, write_behind,
};
use testkit::{TestDb, TestRedis};
use tokio::sync::watch;

const DAY: Duration = Duration::from_secs(86_400);
/// How long a refusal waits for its batch here: where no writer runs, its
/// Redis record answers after this.
const WAIT: Duration = Duration::from_millis(300);
const USER: UserId = UserId::new(7);

struct Fixture {
    db: TestDb,
    redis: TestRedis,
    pg: Postgres,
    pool: RedisPool,
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
        max_size: 4,
        timeout: Duration::from_secs(2),
    })
    .expect("redis pool");
    Fixture {
        db,
        redis,
        pg,
        pool,
    }
}

impl Fixture {
    fn keys(&self) -> RedisKeys {
        RedisKeys::new(self.redis.prefix.clone())
    }

    fn write_behind(&self, capacity: usize) -> (RedisRefusals, RefusalWriter) {
        self.write_behind_to(PgIdempotencyStore::new(self.pg.clone(), DAY), WAIT)
            .with_capacity(capacity)
    }

    fn write_behind_to(&self, store: PgIdempotencyStore, wait: Duration) -> WriteBehind {
        WriteBehind {
            pool: self.pool.clone(),
            keys: self.keys(),
            store,
            wait,
        }
    }

    /// The fast path with its writer running, and the writer's stop.
    fn running(&self) -> (RedisRefusals, Running) {
        let (refusals, writer) = self.write_behind(16);
        (refusals, Running::start(writer))
    }

    async fn in_redis(&self, key: &str) -> bool {
        let mut conn = self.redis.connect().await;
        cmd("EXISTS")
            .arg(format!("{}refusal:{USER}:{key}", self.redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("redis")
    }

    /// The stored status of (USER, key) in Postgres, 0 when none.
    async fn in_postgres(&self, key: &str) -> i64 {
        use diesel::QueryableByName;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.connect().await;
        diesel::sql_query(format!(
            "SELECT coalesce(max(response_status), 0)::bigint AS n FROM idempotency_keys \
              WHERE user_id = {} AND key = '{key}'",
            USER.get()
        ))
        .get_result::<N>(&mut conn)
        .await
        .expect("query")
        .n
    }
}

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("valid key")
}

fn fingerprint(raw: &str) -> Fingerprint {
    Fingerprint::new(raw.into())
}

fn sold_out(body: &str) -> StoredResponse {
    StoredResponse {
        status: 409,
        content_type: "application/problem+json".into(),
        body: body.as_bytes().to_vec(),
    }
}

async fn refuse(refusals: &RedisRefusals, raw: &str, fp: &str, body: &str) -> IdempotentOutcome {
    refusals
        .refuse(USER, &key(raw), &fingerprint(fp), sold_out(body))
        .await
        .expect("recorded")
}

struct WriteBehind {
    pool: RedisPool,
    keys: RedisKeys,
    store: PgIdempotencyStore,
    wait: Duration,
}

impl WriteBehind {
    fn with_capacity(self, capacity: usize) -> (RedisRefusals, RefusalWriter) {
        write_behind(self.pool, self.keys, self.store, DAY, capacity, self.wait)
    }
}

/// A writer running in the background.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(writer: RefusalWriter) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(writer.run(stopped));
        Self { stop, task }
    }

    fn abort(self) {
        self.task.abort();
    }

    /// Stops the writer once it has written what is queued.
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the writer stops")
            .expect("the writer does not panic");
    }
}

/// Records a refusal with no writer running: it is recorded and queued,
/// and its request is `Unavailable`, its batch never landing in time.
async fn recorded_unanswered(refusals: &RedisRefusals, raw: &str, fp: &str, body: &str) {
    let unanswered = refusals
        .refuse(USER, &key(raw), &fingerprint(fp), sold_out(body))
        .await;
    assert!(
        unanswered.is_err(),
        "not answered before Postgres holds it: {unanswered:?}"
    );
}

/// Runs the writer until it has written everything queued and stopped.
async fn flush(writer: RefusalWriter) {
    let (_stop, stopped) = watch::channel(true);
    tokio::time::timeout(Duration::from_secs(20), writer.run(stopped))
        .await
        .expect("the writer stops");
}

#[tokio::test]
async fn a_key_is_recorded_once_and_a_copy_that_finds_its_record_is_left_to_postgres() {
    let f = fixture().await;
    let (refusals, writer) = f.running();

    let first = refuse(&refusals, "k", "f1", "{\"first\":\n1}").await;
    // Copies that passed the gate before the first recorded: the first's
    // record may still wait for its batch, so it is not their answer.
    let again = refusals
        .refuse(USER, &key("k"), &fingerprint("f1"), sold_out("{}"))
        .await;
    let reused = refusals
        .refuse(USER, &key("k"), &fingerprint("f2"), sold_out("{}"))
        .await;

    assert_eq!(
        first,
        IdempotentOutcome::Executed(sold_out("{\"first\":\n1}"))
    );
    assert!(again.is_err() && reused.is_err(), "Postgres decides them");
    writer.stop().await;
    assert_eq!(f.in_postgres("k").await, 409, "the first, written once");
    assert_eq!(refusals.queued(), 0);
}

/// Stores a record of `key`'s effect, as a paid order or investment leaves
/// it: `fp`, 201, `{}`; `age` old.
async fn effect_in_postgres(f: &Fixture, key: &str, fp: &str, age: &str) {
    let mut conn = f.db.connect().await;
    diesel::sql_query(format!(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, response_status, \
             response_content_type, response_body, created_at) \
         VALUES ({}, '{key}', '{fp}', 201, 'application/json', '\\x7b7d', \
                 now() - interval '{age}')",
        USER.get()
    ))
    .execute(&mut conn)
    .await
    .expect("a record of the key's effect");
}

fn paid() -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: b"{}".to_vec(),
    }
}

#[tokio::test]
async fn a_refusal_is_answered_once_postgres_holds_it() {
    let f = fixture().await;
    let (refusals, writer) = f.running();

    for raw in ["a", "b"] {
        assert_eq!(
            refuse(&refusals, raw, "f", "{}").await,
            IdempotentOutcome::Executed(sold_out("{}"))
        );
        assert_eq!(
            f.in_postgres(raw).await,
            409,
            "in Postgres before the answer"
        );
    }

    assert!(f.in_redis("a").await && f.in_redis("b").await);
    assert_eq!(refusals.queued(), 0);
    writer.stop().await;
}

#[tokio::test]
async fn a_refusal_of_a_key_postgres_has_an_effect_of_is_answered_by_that_effect() {
    // A paid order's key, retried once its gate mark has lapsed (or Redis
    // lost its data) and the product has sold out: Redis knows nothing of
    // the key, so the gate refuses and records; Postgres' record answers.
    let f = fixture().await;
    effect_in_postgres(&f, "paid", "f", "1 minute").await;
    effect_in_postgres(&f, "other", "other", "1 minute").await;
    let (refusals, writer) = f.running();

    let retried = refuse(&refusals, "paid", "f", "{}").await;
    let reused = refuse(&refusals, "other", "f", "{}").await;

    assert_eq!(
        retried,
        IdempotentOutcome::Replayed(paid()),
        "the same request: its effect's answer"
    );
    assert_eq!(reused, IdempotentOutcome::KeyReused, "another request");
    assert_eq!(
        (f.in_postgres("paid").await, f.in_postgres("other").await),
        (201, 201),
        "the effects' records stay"
    );
    assert!(
        !f.in_redis("paid").await && !f.in_redis("other").await,
        "their Redis records are dropped, so Postgres answers the keys"
    );
    assert_eq!(
        refuse(&refusals, "paid", "f", "{}").await,
        IdempotentOutcome::Replayed(paid()),
        "and again"
    );
    writer.stop().await;
}

#[tokio::test]
async fn a_refusal_replaces_a_record_past_the_retention() {
    let f = fixture().await;
    effect_in_postgres(&f, "old", "other", "2 days").await;
    let (refusals, writer) = f.running();

    let refused = refuse(&refusals, "old", "f", "{}").await;

    assert_eq!(refused, IdempotentOutcome::Executed(sold_out("{}")));
    assert_eq!(f.in_postgres("old").await, 409, "the refusal replaced it");
    assert!(f.in_redis("old").await);
    writer.stop().await;
}

#[tokio::test]
async fn while_postgres_fails_a_refusal_is_unavailable_and_nothing_more_is_recorded() {
    let f = fixture().await;
    let down = connect_pool(&PgPoolSettings {
        url: "postgres://nobody@127.0.0.1:1/none".into(),
        max_size: 1,
        timeout: Duration::from_millis(200),
        statement_timeout: Duration::from_secs(1),
    })
    .expect("a pool is made without connecting");
    // A wait far past the test's own bound: only the failed write ends it.
    let (refusals, writer) = f
        .write_behind_to(PgIdempotencyStore::new(down, DAY), Duration::from_secs(600))
        .with_capacity(16);
    let writer = Running::start(writer);

    let first = tokio::time::timeout(
        Duration::from_secs(30),
        refusals.refuse(USER, &key("first"), &fingerprint("f"), sold_out("{}")),
    )
    .await
    .expect("told when its batch fails");
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        refusals.refuse(USER, &key("second"), &fingerprint("f"), sold_out("{}")),
    )
    .await
    .expect("not waiting for a batch while the writes fail");

    assert!(first.is_err(), "not answered from Redis alone: {first:?}");
    assert!(
        f.in_redis("first").await,
        "its record stays, to be written once Postgres is back"
    );
    assert!(second.is_err(), "the caller stores it in Postgres itself");
    assert!(
        !f.in_redis("second").await,
        "nothing recorded while the writes fail"
    );
    writer.abort();
}

#[tokio::test]
async fn a_refusal_a_retry_wrote_through_first_keeps_its_redis_record() {
    // A retry inside the window writes the gate's record through to
    // Postgres (the pipeline's replay); the writer then meets that very
    // record, and the key must keep answering from Redis as a replay.
    let f = fixture().await;
    let (refusals, writer) = f.write_behind(16);
    recorded_unanswered(&refusals, "k", "f", "{\"code\":\"OUT_OF_STOCK\"}").await;
    PgIdempotencyStore::new(f.pg.clone(), DAY)
        .refuse(
            USER,
            &key("k"),
            &fingerprint("f"),
            sold_out("{\"code\":\"OUT_OF_STOCK\"}"),
        )
        .await
        .expect("written through");

    flush(writer).await;

    assert_eq!(f.in_postgres("k").await, 409);
    assert!(f.in_redis("k").await, "the same record is not dropped");
}

#[tokio::test]
async fn a_refusal_whose_key_a_running_transaction_holds_waits_for_it_and_never_meets_its_insert() {
    let f = fixture().await;
    let mut held = f.db.connect().await;
    // A guarded transaction (a retry's order, say) holds the key's lock and
    // stores its answer with a plain insert, which a row written behind
    // meanwhile would fail on the primary key.
    for sql in [
        "BEGIN".to_owned(),
        format!(
            "SELECT pg_advisory_xact_lock(hashtextextended('idem:{}:held', 0))",
            USER.get()
        ),
    ] {
        diesel::sql_query(sql)
            .execute(&mut held)
            .await
            .expect("the transaction runs");
    }
    let (refusals, writer) = f.write_behind(16);
    recorded_unanswered(&refusals, "held", "f", "{}").await;
    recorded_unanswered(&refusals, "free", "f", "{}").await;
    let flushing = tokio::spawn(flush(writer));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.in_postgres("free").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the free key is written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.in_postgres("held").await,
        0,
        "not written while the key is held"
    );
    assert!(!flushing.is_finished(), "the held row waits in the writer");
    for sql in [
        format!(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, response_status, \
                 response_content_type, response_body) \
             VALUES ({}, 'held', 'f', 201, 'application/json', '\\x7b7d')",
            USER.get()
        ),
        "COMMIT".to_owned(),
    ] {
        diesel::sql_query(sql)
            .execute(&mut held)
            .await
            .expect("the transaction stores its answer and commits");
    }
    flushing.await.expect("the writer stops");

    assert_eq!(
        f.in_postgres("held").await,
        201,
        "the effect's answer stays"
    );
    assert!(
        !f.in_redis("held").await,
        "its Redis record is dropped, so Postgres answers the key"
    );
}

#[tokio::test]
async fn a_stopped_writer_leaves_later_refusals_to_postgres() {
    let f = fixture().await;
    let (refusals, writer) = f.write_behind(16);
    flush(writer).await;

    let late = refusals
        .refuse(USER, &key("late"), &fingerprint("f"), sold_out("{}"))
        .await;

    assert!(late.is_err(), "the caller stores it in Postgres itself");
    assert!(!f.in_redis("late").await, "nothing recorded");
}

#[tokio::test]
async fn a_full_queue_records_nothing() {
    let f = fixture().await;
    let (refusals, _writer) = f.write_behind(1);
    recorded_unanswered(&refusals, "one", "f", "{}").await;

    let second = refusals
        .refuse(USER, &key("two"), &fingerprint("f"), sold_out("{}"))
        .await;

    assert!(second.is_err(), "the caller stores it in Postgres itself");
    assert!(!f.in_redis("two").await);
}

#[tokio::test]
async fn the_gate_answers_a_recorded_key_before_its_counter_or_a_bypass() {
    let f = fixture().await;
    let (refusals, writer) = f.running();
    refuse(&refusals, "k", "f", "{\"code\":\"SOLD_OUT\"}").await;
    // No such product: without the record, the gate would bypass.
    let gate = RedisInvestGate::new(f.pool.clone(), f.keys(), f.pg.clone());
    let amount = InvestAmount::new(100).expect("valid");
    let product = InvestProductId::new(999);

    let recorded = gate
        .reserve(Holder::keyed(USER, &key("k")), product, amount)
        .await
        .expect("gate answers");
    let other = gate
        .reserve(Holder::keyed(USER, &key("other")), product, amount)
        .await
        .expect("gate answers");

    assert_eq!(
        recorded,
        Admission::Recorded(Record {
            fingerprint: fingerprint("f"),
            response: sold_out("{\"code\":\"SOLD_OUT\"}"),
        })
    );
    assert_eq!(other, Admission::Bypass);
    writer.stop().await;
}

/// A stock gate recording on `refusals`, with product 1's counter at 5 and
/// product 2's at 0.
async fn stock_gate(f: &Fixture, refusals: &RedisRefusals) -> RedisStockGate {
    let mut conn = f.redis.connect().await;
    for (product, left) in [(1, 5), (2, 0)] {
        let _: () = cmd("SET")
            .arg(format!("{}stock:{{{product}}}", f.redis.prefix))
            .arg(left)
            .query_async(&mut conn)
            .await
            .expect("redis");
    }
    RedisStockGate::new(f.pool.clone(), f.keys(), f.pg.clone()).recording_on(refusals.clone())
}

async fn stock_left(f: &Fixture, product: i64) -> i64 {
    let mut conn = f.redis.connect().await;
    cmd("GET")
        .arg(format!("{}stock:{{{product}}}", f.redis.prefix))
        .query_async(&mut conn)
        .await
        .expect("redis")
}

fn lines(products: &[i64]) -> Vec<(ProductId, Quantity)> {
    products
        .iter()
        .map(|p| (ProductId::new(*p), Quantity::new(1).expect("valid")))
        .collect()
}

#[tokio::test]
async fn the_stock_gate_records_the_answer_an_order_carries_and_answers_once_postgres_holds_it() {
    let f = fixture().await;
    let (refusals, writer) = f.running();
    let gate = stock_gate(&f, &refusals).await;
    let fp = fingerprint("f");
    let answers = RefusalAnswers {
        fingerprint: &fp,
        responses: vec![sold_out("{\"p\":1}"), sold_out("{\"p\":2}")],
    };
    let order = key("order");
    let holder = Holder::keyed(USER, &order).answering(Some(&answers));

    let refused = gate.reserve(holder, &lines(&[1, 2])).await.expect("gate");
    assert_eq!(refused, Admission::Answered(ProductId::new(2)));
    assert!(f.in_redis("order").await, "recorded in the refusing step");
    assert_eq!(
        f.in_postgres("order").await,
        409,
        "and in Postgres before the answer"
    );
    assert_eq!(stock_left(&f, 1).await, 5, "nothing was taken");

    let retry = gate.reserve(holder, &lines(&[1, 2])).await.expect("gate");
    assert_eq!(
        retry,
        Admission::Recorded(Record {
            fingerprint: fp.clone(),
            response: sold_out("{\"p\":2}"),
        }),
        "the retry is answered with the refused line's answer"
    );
    assert_eq!(refusals.queued(), 0, "a retry queues nothing");

    let admitted = key("admitted");
    let holder = Holder::keyed(USER, &admitted).answering(Some(&answers));
    let reserved = gate.reserve(holder, &lines(&[1])).await.expect("gate");
    assert_eq!(reserved, Admission::Reserved);
    assert!(
        !f.in_redis("admitted").await,
        "an admitted order records nothing"
    );

    writer.stop().await;
    assert_eq!(f.in_postgres("admitted").await, 0);
}

#[tokio::test]
async fn the_stock_gate_does_not_answer_a_refusal_whose_batch_does_not_land() {
    let f = fixture().await;
    // No writer runs: the batch never lands.
    let (refusals, _writer) = f.write_behind(16);
    let gate = stock_gate(&f, &refusals).await;
    let fp = fingerprint("f");
    let answers = RefusalAnswers {
        fingerprint: &fp,
        responses: vec![sold_out("{\"p\":2}")],
    };
    let order = key("order");
    let holder = Holder::keyed(USER, &order).answering(Some(&answers));

    let refused = gate.reserve(holder, &lines(&[2])).await;

    let err = refused.expect_err("not answered before Postgres holds it");
    assert_eq!(err.service(), "postgres", "{err}");
    assert!(f.in_redis("order").await, "recorded, to be written behind");
    assert_eq!(refusals.queued(), 1);
}

#[tokio::test]
async fn the_stock_gate_answers_a_refused_order_of_a_key_postgres_has_with_that_record() {
    // A paid order's key whose mark lapsed: the counter is short, the
    // script records the refusal, and the batch finds the order's record.
    let f = fixture().await;
    effect_in_postgres(&f, "paid", "f", "1 minute").await;
    let (refusals, writer) = f.running();
    let gate = stock_gate(&f, &refusals).await;
    let fp = fingerprint("f");
    let answers = RefusalAnswers {
        fingerprint: &fp,
        responses: vec![sold_out("{\"p\":2}")],
    };
    let paid_key = key("paid");
    let holder = Holder::keyed(USER, &paid_key).answering(Some(&answers));

    let retried = gate.reserve(holder, &lines(&[2])).await.expect("gate");

    assert_eq!(
        retried,
        Admission::Recorded(Record {
            fingerprint: fp.clone(),
            response: paid(),
        }),
        "the order's record answers, not the refusal"
    );
    assert!(!f.in_redis("paid").await, "the refusal's record is dropped");
    assert_eq!(f.in_postgres("paid").await, 201);
    writer.stop().await;
}

#[tokio::test]
async fn a_stock_gate_whose_queue_is_full_only_refuses_and_the_caller_records() {
    let f = fixture().await;
    let (refusals, _writer) = f.write_behind(1);
    recorded_unanswered(&refusals, "first", "f", "{}").await;
    let gate = stock_gate(&f, &refusals).await;
    let fp = fingerprint("f");
    let answers = RefusalAnswers {
        fingerprint: &fp,
        responses: vec![sold_out("{\"p\":2}")],
    };
    let second = key("second");
    let holder = Holder::keyed(USER, &second).answering(Some(&answers));

    let refused = gate.reserve(holder, &lines(&[2])).await.expect("gate");

    assert_eq!(refused, Admission::Refused(ProductId::new(2)));
    assert!(!f.in_redis("second").await);
}
