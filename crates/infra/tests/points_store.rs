//! The Postgres points store and its idempotency guard against a real database.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotentRequest, StoredResponse, Written,
};
use domain::identity::{LoginId, NewUser, Role, UserId, UserName, UserRepository};
use domain::points::{ChargeAmount, ChargeError, ChargeReceipt, PointsStore};
use infra::postgres::{
    PgIdempotencyStore, PgPointsStore, PgPoolSettings, PgUserRepository, Postgres, connect_pool,
};
use testkit::TestDb;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn pool(db: &TestDb) -> Postgres {
    connect_pool(&PgPoolSettings {
        url: db.url.clone(),
        max_size: 4,
        timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
    })
    .expect("pool")
}

async fn a_user(pg: &Postgres) -> UserId {
    let login = LoginId::parse("store-user").expect("valid");
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

/// Renders the new balance as the body, so tests can tell responses apart.
fn request(
    user_id: UserId,
    key: &str,
    fingerprint: &str,
) -> IdempotentRequest<ChargeReceipt, ChargeError> {
    IdempotentRequest {
        user_id,
        key: IdempotencyKey::parse(key).expect("valid"),
        fingerprint: Fingerprint::new(fingerprint.to_owned()),
        render: Arc::new(|result| StoredResponse {
            status: if result.is_ok() { 200 } else { 409 },
            content_type: "text/plain".into(),
            body: match result {
                Ok(r) => r.balance.to_string().into_bytes(),
                Err(e) => e.to_string().into_bytes(),
            },
        }),
    }
}

fn amount(n: i64) -> ChargeAmount {
    ChargeAmount::new(n).expect("valid amount")
}

async fn exec(db: &TestDb, sql: &str) {
    let mut conn = db.connect().await;
    diesel::sql_query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn a_key_older_than_the_retention_is_a_new_request() {
    let db = TestDb::create().await;
    let pg = pool(&db);
    let user = a_user(&pg).await;
    let store = PgPointsStore::new(pg.clone(), DAY);
    let first = store
        .charge(amount(2_000), request(user, "old-key", "f1"))
        .await
        .expect("ran");
    assert!(matches!(first, Written::Executed { .. }));

    exec(
        &db,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
    )
    .await;
    let again = store
        .charge(amount(3_000), request(user, "old-key", "f2"))
        .await
        .expect("ran");

    let Written::Executed { response, .. } = again else {
        panic!("an expired key runs again, got {again:?}");
    };
    assert_eq!(response.body, b"5000");
    assert_eq!(
        store.wallet(user).await.expect("wallet").balance.get(),
        5_000
    );
}

#[tokio::test]
async fn a_key_within_the_retention_replays_or_refuses_another_request() {
    let db = TestDb::create().await;
    let pg = pool(&db);
    let user = a_user(&pg).await;
    let store = PgPointsStore::new(pg, DAY);
    store
        .charge(amount(2_000), request(user, "k", "f1"))
        .await
        .expect("ran");

    let replay = store
        .charge(amount(2_000), request(user, "k", "f1"))
        .await
        .expect("ran");
    let reuse = store
        .charge(amount(9_000), request(user, "k", "f2"))
        .await
        .expect("ran");

    assert_eq!(
        replay,
        Written::Replayed(StoredResponse {
            status: 200,
            content_type: "text/plain".into(),
            body: b"2000".to_vec(),
        })
    );
    assert_eq!(reuse, Written::KeyReused);
    assert_eq!(
        store.wallet(user).await.expect("wallet").balance.get(),
        2_000
    );
}

#[tokio::test]
async fn a_key_whose_lock_is_held_is_in_progress_and_runs_nothing() {
    let db = TestDb::create().await;
    let pg = pool(&db);
    let user = a_user(&pg).await;
    let store = PgPointsStore::new(pg, DAY);
    // Another transaction owns the key, as a first request still running would.
    let mut other = db.connect().await;
    diesel::sql_query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    diesel::sql_query(format!(
        "SELECT pg_advisory_xact_lock(hashtextextended('idem:{}:busy', 0))",
        user.get()
    ))
    .execute(&mut other)
    .await
    .expect("lock");

    let outcome = store
        .charge(amount(2_000), request(user, "busy", "f"))
        .await
        .expect("ran");

    assert_eq!(outcome, Written::InProgress);
    assert_eq!(store.wallet(user).await.expect("wallet").balance.get(), 0);
    // When the holder ends, even by crashing (its connection just drops),
    // the key is free again: the server releases the lock as it notices.
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        let outcome = store
            .charge(amount(2_000), request(user, "busy", "f"))
            .await
            .expect("ran");
        if outcome != Written::InProgress || std::time::Instant::now() > deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(matches!(outcome, Written::Executed { .. }), "{outcome:?}");
}

#[tokio::test]
async fn the_janitor_purges_only_expired_records() {
    let db = TestDb::create().await;
    let pg = pool(&db);
    let user = a_user(&pg).await;
    let store = PgPointsStore::new(pg.clone(), DAY);
    for key in ["old-1", "old-2", "fresh"] {
        store
            .charge(amount(1_000), request(user, key, key))
            .await
            .expect("ran");
    }
    exec(
        &db,
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key LIKE 'old-%'",
    )
    .await;

    let purged = PgIdempotencyStore::new(pg, DAY)
        .purge()
        .await
        .expect("purged");

    assert_eq!(purged, 2);
    let fresh_replays = store
        .charge(amount(1_000), request(user, "fresh", "fresh"))
        .await
        .expect("ran");
    assert!(matches!(fresh_replays, Written::Replayed(_)));
}
