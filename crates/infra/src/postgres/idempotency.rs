//! The idempotency guard every money write runs inside: [`guarded`].
//!
//! ```text
//! BEGIN
//!   pg_try_advisory_xact_lock(user, key)  -- held by another transaction → InProgress
//!   SELECT stored response                -- fresh: same fingerprint → Replayed, other → KeyReused
//!   SAVEPOINT
//!     … the effect …                      -- the caller's guarded statements
//!   RELEASE, or ROLLBACK TO SAVEPOINT     -- a business refusal undoes the effect's partial writes
//!   render the response                   -- a 5xx is never stored: the whole transaction rolls back
//!   INSERT stored response                -- the primary key backs up the lock
//! COMMIT                                  -- the lock is released with the transaction
//! ```
//!
//! The record and the effect commit together or not at all. The lock is
//! transaction-scoped, so a rolled-back or dead transaction frees it; a
//! connection dropped mid-transaction is closed rather than pooled
//! ([`PgConn`](super::PgConn)), and Postgres ends transactions left idle. The
//! guard must be the first thing in its transaction, which must stay READ
//! COMMITTED so the lookup sees rows committed before the lock was taken.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Bytea, Double, Int2, Int8, Text};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use domain::error::Unavailable;
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotentOutcome, IdempotentRequest, Record, StoredResponse,
    Written,
};
use domain::identity::UserId;

use super::batch_keys::AnswerRow;
use super::prepared::prepared;
use super::unavailable;

type Tm = AnsiTransactionManager;

/// An effect run under the guard: `Ok(Ok(_))` commits it, `Ok(Err(_))` is a
/// business refusal (its writes are rolled back, its answer is stored),
/// `Err(_)` is a database failure (nothing is stored).
///
/// The same shape as diesel-async's transaction callbacks: an async closure
/// over the connection whose future is `Send`.
pub(crate) trait Effect<'c, T, E>:
    AsyncFnOnce(&'c mut AsyncPgConnection) -> diesel::QueryResult<Result<T, E>>
    + FnOnce(&'c mut AsyncPgConnection) -> <Self as Effect<'c, T, E>>::Fut
{
    type Fut: Future<Output = diesel::QueryResult<Result<T, E>>> + Send;
}

impl<'c, F, Fut, T, E> Effect<'c, T, E> for F
where
    F: AsyncFnOnce(&'c mut AsyncPgConnection) -> diesel::QueryResult<Result<T, E>>
        + FnOnce(&'c mut AsyncPgConnection) -> Fut,
    Fut: Future<Output = diesel::QueryResult<Result<T, E>>> + Send,
{
    type Fut = Fut;
}

/// Runs `effect` at most once per (user, key), storing its rendered response
/// in the same transaction. See the module documentation.
///
/// # Errors
/// [`Unavailable`] when Postgres fails or the response would be a 5xx; then
/// nothing was committed, so a retry runs again.
pub(crate) async fn guarded<T, E, F>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    retention: Duration,
    effect: F,
) -> Result<Written<T, E>, Unavailable>
where
    F: for<'c> Effect<'c, T, E>,
{
    Tm::begin_transaction(conn).await.map_err(unavailable)?;
    let outcome = run(conn, request, retention, effect).await;
    match outcome {
        Ok(outcome) => {
            if let Err(e) = Tm::commit_transaction(conn).await {
                rollback_all(conn).await;
                return Err(unavailable(e));
            }
            Ok(outcome)
        }
        Err(err) => {
            rollback_all(conn).await;
            Err(err)
        }
    }
}

async fn run<T, E, F>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    retention: Duration,
    effect: F,
) -> Result<Written<T, E>, Unavailable>
where
    F: for<'c> Effect<'c, T, E>,
{
    if let Some(decided) = begin(conn, request, retention).await.map_err(unavailable)? {
        return Ok(decided);
    }
    Tm::begin_transaction(conn).await.map_err(unavailable)?; // SAVEPOINT
    let result = match effect(conn).await.map_err(unavailable)? {
        Ok(value) => {
            Tm::commit_transaction(conn).await.map_err(unavailable)?; // RELEASE SAVEPOINT
            Ok(value)
        }
        Err(refusal) => {
            Tm::rollback_transaction(conn).await.map_err(unavailable)?; // ROLLBACK TO SAVEPOINT
            Err(refusal)
        }
    };
    let response = request.render(&result);
    if response.status >= 500 {
        return Err(unavailable(format!(
            "refusing to store a {} response under an idempotency key",
            response.status
        )));
    }
    finish(conn, request, &response)
        .await
        .map_err(unavailable)?;
    Ok(Written::Executed { result, response })
}

/// Rolls back every open level (savepoints, then the transaction).
pub(crate) async fn rollback_all(conn: &mut AsyncPgConnection) {
    while matches!(
        Tm::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(Some(_))
    ) {
        if Tm::rollback_transaction(conn).await.is_err() {
            // The connection is broken; `PgConn` will close it.
            return;
        }
    }
}

#[derive(QueryableByName)]
struct Refused {
    #[diesel(sql_type = Bool)]
    locked: bool,
    #[diesel(sql_type = Bool)]
    stored: bool,
}

/// Stores a refusal that was decided before any effect (an amount outside
/// the limits, a product the stock gate says is sold out), under the same
/// guard: a replay, a reused key or a key in progress is answered as for any
/// other write.
///
/// A flash sale's refusals take this path by the thousand, so the common
/// case is one statement, its own transaction: it takes the key's lock and
/// inserts the answer where no record exists. Only a key that already has a
/// record (a replay, a reused key, an expired record) goes through the full
/// [`guarded`] transaction.
///
/// `conn` must not be inside a transaction.
///
/// # Errors
/// [`Unavailable`] when Postgres fails.
pub(crate) async fn refuse(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    response: StoredResponse,
    retention: Duration,
) -> Result<IdempotentOutcome, Unavailable> {
    if response.status >= 500 {
        return Err(unavailable(format!(
            "refusing to store a {} response under an idempotency key",
            response.status
        )));
    }
    // The lock CTE is referenced twice, so it is evaluated once, before the
    // insert that depends on it; the lock is held until the statement ends.
    let first = prepared(
        "WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked), \
              ins AS ( \
                INSERT INTO idempotency_keys \
                    (user_id, key, fingerprint, response_status, response_content_type, response_body) \
                SELECT $2, $3, $4, $5, $6, $7 FROM lock WHERE locked \
                ON CONFLICT (user_id, key) DO NOTHING RETURNING 1) \
         SELECT (SELECT locked FROM lock) AS locked, EXISTS (SELECT 1 FROM ins) AS stored",
    )
    .bind::<Text, _>(lock_name(user_id, key))
    .bind::<Int8, _>(user_id.get())
    .bind::<Text, _>(key.as_str())
    .bind::<Text, _>(fingerprint.as_str())
    .bind::<Int2, _>(i16::try_from(response.status).unwrap_or(500))
    .bind::<Text, _>(&response.content_type)
    .bind::<Bytea, _>(&response.body)
    .get_result::<Refused>(conn)
    .await
    .map_err(unavailable)?;
    match first {
        Refused { locked: false, .. } => return Ok(IdempotentOutcome::InProgress),
        Refused { stored: true, .. } => return Ok(IdempotentOutcome::Executed(response)),
        Refused { .. } => {} // a record exists: decide as any write does
    }
    let request: IdempotentRequest<(), ()> = IdempotentRequest {
        user_id,
        key: key.clone(),
        fingerprint: fingerprint.clone(),
        render: Arc::new(move |_| response.clone()),
    };
    Ok(
        match guarded(conn, &request, retention, async |_| Ok(Err(()))).await? {
            Written::Executed { response, .. } => IdempotentOutcome::Executed(response),
            Written::Replayed(response) => IdempotentOutcome::Replayed(response),
            Written::KeyReused => IdempotentOutcome::KeyReused,
            Written::InProgress => IdempotentOutcome::InProgress,
        },
    )
}

/// The key's record while it answers the key; `None` without one, or
/// while it is past the retention.
///
/// # Errors
/// [`Unavailable`] when Postgres fails.
pub(crate) async fn record(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<Option<Record>, Unavailable> {
    let row = stored(conn, user_id, key, retention)
        .await
        .map_err(unavailable)?;
    Ok(row.filter(|row| row.fresh).map(StoredRow::into_record))
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A key's record as the guards read it (the order batch embeds it).
#[derive(QueryableByName)]
pub(crate) struct StoredRow {
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Int2)]
    response_status: i16,
    #[diesel(sql_type = Text)]
    response_content_type: String,
    #[diesel(sql_type = Bytea)]
    response_body: Vec<u8>,
    /// Younger than the retention: it still answers its key.
    #[diesel(sql_type = Bool)]
    pub(crate) fresh: bool,
}

/// What the key's advisory lock is taken on (hashed by Postgres).
pub(crate) fn lock_name(user_id: UserId, key: &IdempotencyKey) -> String {
    lock_name_of(user_id.get(), key.as_str())
}

fn lock_name_of(user_id: i64, key: &str) -> String {
    format!("idem:{user_id}:{key}")
}

/// Takes the key's lock and looks for a stored response: `Some` when no
/// effect may run. An expired record is deleted, so the key starts afresh.
async fn begin<T, E>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    retention: Duration,
) -> diesel::QueryResult<Option<Written<T, E>>> {
    let user_id = request.user_id.get();
    let key = request.key.as_str();
    let lock = prepared("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked")
        .bind::<Text, _>(lock_name(request.user_id, &request.key))
        .get_result::<Locked>(conn)
        .await?;
    if !lock.locked {
        return Ok(Some(Written::InProgress));
    }
    match stored(conn, request.user_id, &request.key, retention).await? {
        Some(row) if row.fresh => Ok(Some(row.answer(&request.fingerprint))),
        Some(_) => {
            // Kept past the retention, not yet purged: a new request.
            prepared("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2")
                .bind::<Int8, _>(user_id)
                .bind::<Text, _>(key)
                .execute(conn)
                .await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The stored answer for (user, key), fresh or not.
async fn stored(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &IdempotencyKey,
    retention: Duration,
) -> diesel::QueryResult<Option<StoredRow>> {
    use diesel::OptionalExtension as _;
    prepared(
        "SELECT fingerprint, response_status, response_content_type, response_body, \
                created_at > now() - make_interval(secs => $1) AS fresh \
           FROM idempotency_keys WHERE user_id = $2 AND key = $3",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Int8, _>(user_id.get())
    .bind::<Text, _>(key.as_str())
    .get_result::<StoredRow>(conn)
    .await
    .optional()
}

impl StoredRow {
    /// What a fresh record answers a write with `fingerprint`: nothing runs.
    pub(crate) fn answer<T, E>(self, fingerprint: &Fingerprint) -> Written<T, E> {
        Written::answered(self.into_outcome(fingerprint)).unwrap_or(Written::KeyReused)
    }

    /// What a fresh record answers a request with `fingerprint`: its
    /// response again for the same request, `KeyReused` for another.
    pub(crate) fn into_outcome(self, fingerprint: &Fingerprint) -> IdempotentOutcome {
        self.into_record().answer(fingerprint)
    }

    fn into_record(self) -> Record {
        Record {
            fingerprint: Fingerprint::new(self.fingerprint),
            response: StoredResponse {
                status: u16::try_from(self.response_status).unwrap_or(500),
                content_type: self.response_content_type,
                body: self.response_body,
            },
        }
    }
}

/// Stores the response. A plain INSERT: if the lock were ever bypassed, the
/// primary key would fail the second writer and roll back its effect.
async fn finish<T, E>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    response: &StoredResponse,
) -> diesel::QueryResult<()> {
    prepared(
        "INSERT INTO idempotency_keys \
             (user_id, key, fingerprint, response_status, response_content_type, response_body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<Int8, _>(request.user_id.get())
    .bind::<Text, _>(request.key.as_str())
    .bind::<Text, _>(request.fingerprint.as_str())
    .bind::<Int2, _>(i16::try_from(response.status).unwrap_or(500))
    .bind::<Text, _>(&response.content_type)
    .bind::<Bytea, _>(&response.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Each row's key is try-locked first, as a guarded transaction or an order
/// batch locks it: a row whose key a running transaction holds is not
/// written now (that transaction may be storing the key's answer, and its
/// plain insert must not meet this one), and while this statement holds a
/// key, a transaction that tries it answers "in progress". A row whose key
/// has this very record already (written through by a retry, `same`; the
/// statement's snapshot does not see its own inserts) is done, not kept.
/// `same` reads the statement's snapshot, taken before the key's lock was
/// tried: a record committed in between conflicts with the insert yet is
/// not seen there, so a row that is neither written nor `same` is only a
/// candidate, settled by a statement of its own (`RefusalsWritten::kept`).
const WRITE_REFUSALS: &str = "WITH t AS MATERIALIZED ( \
         SELECT u.*, pg_try_advisory_xact_lock(hashtextextended(u.lock_name, 0)) AS free \
           FROM unnest($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::bytea[], \
                       $7::text[]) \
             AS u(user_id, key, fingerprint, response_status, response_content_type, \
                  response_body, lock_name)), \
     ins AS ( \
         INSERT INTO idempotency_keys \
             (user_id, key, fingerprint, response_status, response_content_type, response_body) \
         SELECT user_id, key, fingerprint, response_status, response_content_type, response_body \
           FROM t WHERE free \
         ON CONFLICT (user_id, key) DO NOTHING \
         RETURNING user_id, key) \
     SELECT t.user_id, t.key, t.free, \
            EXISTS (SELECT 1 FROM ins WHERE ins.user_id = t.user_id AND ins.key = t.key) AS written, \
            EXISTS (SELECT 1 FROM idempotency_keys k \
                     WHERE k.user_id = t.user_id AND k.key = t.key \
                       AND k.fingerprint = t.fingerprint \
                       AND k.response_status = t.response_status \
                       AND k.response_body = t.response_body) AS same \
       FROM t";

#[derive(QueryableByName)]
struct WrittenKey {
    #[diesel(sql_type = Int8)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    free: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    written: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same: bool,
}

/// What became of refusals written behind: the (user, key) of the rows
/// not written. Every other row's key holds that very row now.
#[derive(Default)]
pub(crate) struct RefusalsWritten {
    /// Not written because the key had a record already that did not look
    /// like the row to the statement (the effect of a retry decided while
    /// the refusal waited, an expired record not yet purged, or the same
    /// row committed by a retry after the statement's snapshot was taken):
    /// each is settled by [`refuse`], which sees the latest record.
    pub kept: Vec<(i64, String)>,
    /// Not written because a running transaction held the key: to be
    /// written again once it ends.
    pub busy: Vec<(i64, String)>,
}

/// Writes refusals recorded at the fast path, one statement for them all,
/// each under its key's lock (see [`WRITE_REFUSALS`]).
pub(crate) async fn write_refusals(
    conn: &mut AsyncPgConnection,
    rows: Vec<AnswerRow>,
) -> diesel::QueryResult<RefusalsWritten> {
    let names: Vec<String> = rows
        .iter()
        .map(|r| lock_name_of(r.user_id, &r.key))
        .collect();
    let outcomes: Vec<WrittenKey> = AnswerRow::bind_all(rows, prepared(WRITE_REFUSALS))
        .bind::<diesel::sql_types::Array<Text>, _>(names)
        .load(conn)
        .await?;
    let mut done = RefusalsWritten::default();
    for o in outcomes {
        if !o.free {
            done.busy.push((o.user_id, o.key));
        } else if !o.written && !o.same {
            done.kept.push((o.user_id, o.key));
        }
    }
    Ok(done)
}

/// Deletes stored responses older than `retention`, a batch at a time.
/// Rows another transaction holds (an order batch deleting a stale record
/// for its key) are skipped, so the purge never waits in a lock cycle.
/// Returns how many were deleted.
pub(crate) async fn purge_expired(
    conn: &mut AsyncPgConnection,
    retention: Duration,
    batch: i64,
) -> diesel::QueryResult<usize> {
    prepared(
        "DELETE FROM idempotency_keys WHERE ctid IN ( \
             SELECT ctid FROM idempotency_keys \
              WHERE created_at < now() - make_interval(secs => $1) LIMIT $2 \
                FOR UPDATE SKIP LOCKED)",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Int8, _>(batch)
    .execute(conn)
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use diesel_async::AsyncConnection as _;
    use domain::idempotency::{IdempotencyKey, IdempotentOutcome};

    use super::*;
    use crate::postgres::{PgPoolSettings, Postgres, connect_pool};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    async fn setup() -> (testkit::TestDb, Postgres, UserId) {
        let db = testkit::TestDb::create().await;
        let pg = connect_pool(&PgPoolSettings {
            url: db.url.clone(),
            max_size: 2,
            timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        })
        .expect("pool");
        let mut conn = pg.conn().await.expect("conn");
        diesel::sql_query("INSERT INTO users (login_id, name) VALUES ('guard', 'guard')")
            .execute(&mut *conn)
            .await
            .expect("user");
        let id: i64 = diesel::select(diesel::dsl::sql::<Int8>("(SELECT id FROM users)"))
            .get_result(&mut *conn)
            .await
            .expect("id");
        (db, pg, UserId::new(id))
    }

    fn request(user_id: UserId, status_on_refusal: u16) -> IdempotentRequest<(), &'static str> {
        IdempotentRequest {
            user_id,
            key: IdempotencyKey::parse("k").expect("valid"),
            fingerprint: Fingerprint::new("f".into()),
            render: Arc::new(move |result| StoredResponse {
                status: if result.is_ok() {
                    200
                } else {
                    status_on_refusal
                },
                content_type: "text/plain".into(),
                body: format!("{result:?}").into_bytes(),
            }),
        }
    }

    async fn count(pg: &Postgres, sql: &str) -> i64 {
        let mut conn = pg.conn().await.expect("conn");
        diesel::select(diesel::dsl::sql::<Int8>(sql))
            .get_result(&mut *conn)
            .await
            .expect(sql)
    }

    /// An effect that writes a wallet row, then refuses.
    async fn write_then_refuse(
        tx: &mut AsyncPgConnection,
        user: UserId,
    ) -> diesel::QueryResult<Result<(), &'static str>> {
        diesel::sql_query("INSERT INTO wallets (user_id, balance) VALUES ($1, 500)")
            .bind::<Int8, _>(user.get())
            .execute(tx)
            .await?;
        Ok(Err("OUT_OF_STOCK"))
    }

    #[tokio::test]
    async fn a_refusal_after_partial_writes_rolls_them_back_but_stores_its_answer() {
        let (_db, pg, user) = setup().await;
        let mut conn = pg.conn().await.expect("conn");

        let outcome = guarded(&mut conn, &request(user, 409), DAY, async |tx| {
            write_then_refuse(tx, user).await
        })
        .await
        .expect("ran");

        assert!(
            matches!(outcome, Written::Executed { result: Err("OUT_OF_STOCK"), ref response } if response.status == 409),
            "{outcome:?}"
        );
        assert_eq!(
            count(&pg, "(SELECT count(*) FROM wallets)").await,
            0,
            "partial write rolled back"
        );
        assert_eq!(
            count(
                &pg,
                "(SELECT count(*) FROM idempotency_keys WHERE response_status = 409)"
            )
            .await,
            1
        );
    }

    #[tokio::test]
    async fn a_5xx_answer_is_never_stored_and_its_effect_is_rolled_back() {
        let (_db, pg, user) = setup().await;
        let mut conn = pg.conn().await.expect("conn");

        let result = guarded(&mut conn, &request(user, 503), DAY, async |tx| {
            write_then_refuse(tx, user).await
        })
        .await;

        assert!(result.is_err());
        assert_eq!(count(&pg, "(SELECT count(*) FROM wallets)").await, 0);
        assert_eq!(
            count(&pg, "(SELECT count(*) FROM idempotency_keys)").await,
            0
        );
    }

    #[tokio::test]
    async fn a_connection_dropped_inside_a_transaction_frees_its_locks_at_once() {
        let (db, pg, _user) = setup().await;
        let mut conn = pg.conn().await.expect("conn");
        Tm::begin_transaction(&mut **conn).await.expect("begin");
        diesel::sql_query("SELECT pg_advisory_xact_lock(4242)")
            .execute(&mut *conn)
            .await
            .expect("lock");

        // What happens when a request's future is dropped mid-transaction.
        drop(conn);

        let mut other = AsyncPgConnection::establish(&db.url)
            .await
            .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let free: bool = diesel::select(diesel::dsl::sql::<Bool>("pg_try_advisory_lock(4242)"))
                .get_result(&mut other)
                .await
                .expect("try");
            if free {
                break;
            }
            // Without the guard the lock stays held by an idle pooled
            // connection until Postgres' idle-in-transaction timeout (10 s here).
            assert!(
                Instant::now() < deadline,
                "the dropped transaction still holds its lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn refusal(body: &str) -> StoredResponse {
        StoredResponse {
            status: 409,
            content_type: "application/problem+json".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn a_refusal_is_stored_once_then_replayed_or_refused_as_a_reused_key() {
        let (_db, pg, user) = setup().await;
        let key = IdempotencyKey::parse("k").expect("valid");
        let (same, other) = (Fingerprint::new("f".into()), Fingerprint::new("g".into()));
        let mut conn = pg.conn().await.expect("conn");

        let first = refuse(&mut conn, user, &key, &same, refusal("first"), DAY).await;
        let again = refuse(&mut conn, user, &key, &same, refusal("second"), DAY).await;
        let reused = refuse(&mut conn, user, &key, &other, refusal("third"), DAY).await;

        assert!(
            matches!(first, Ok(IdempotentOutcome::Executed(ref r)) if r.body == b"first"),
            "{first:?}"
        );
        assert!(
            matches!(again, Ok(IdempotentOutcome::Replayed(ref r)) if r.body == b"first"),
            "the first answer is replayed: {again:?}"
        );
        assert!(
            matches!(reused, Ok(IdempotentOutcome::KeyReused)),
            "{reused:?}"
        );
        assert_eq!(
            count(&pg, "(SELECT count(*) FROM idempotency_keys)").await,
            1
        );
    }

    #[tokio::test]
    async fn a_keys_record_is_found_while_it_is_fresh() {
        let (_db, pg, user) = setup().await;
        let (key, none) = (
            IdempotencyKey::parse("k").expect("valid"),
            IdempotencyKey::parse("none").expect("valid"),
        );
        let fingerprint = Fingerprint::new("f".into());
        let mut conn = pg.conn().await.expect("conn");
        refuse(&mut conn, user, &key, &fingerprint, refusal("first"), DAY)
            .await
            .expect("stored");

        let found = record(&mut conn, user, &key, DAY).await.expect("read");
        assert_eq!(
            found,
            Some(Record {
                fingerprint,
                response: refusal("first"),
            })
        );
        assert_eq!(
            record(&mut conn, user, &none, DAY).await.expect("read"),
            None
        );
        let expired = record(&mut conn, user, &key, Duration::ZERO).await;
        assert_eq!(expired.expect("read"), None, "past the retention");
    }

    #[tokio::test]
    async fn a_5xx_refusal_is_never_stored() {
        let (_db, pg, user) = setup().await;
        let key = IdempotencyKey::parse("k").expect("valid");
        let mut conn = pg.conn().await.expect("conn");
        let mut response = refusal("down");
        response.status = 503;

        let outcome = refuse(
            &mut conn,
            user,
            &key,
            &Fingerprint::new("f".into()),
            response,
            DAY,
        )
        .await;

        assert!(outcome.is_err(), "{outcome:?}");
        drop(conn);
        assert_eq!(
            count(&pg, "(SELECT count(*) FROM idempotency_keys)").await,
            0
        );
    }

    #[tokio::test]
    async fn a_refusal_for_a_key_whose_first_request_runs_is_in_progress_and_stores_nothing() {
        let (_db, pg, user) = setup().await;
        let key = IdempotencyKey::parse("k").expect("valid");
        let fingerprint = Fingerprint::new("f".into());
        let mut running = pg.conn().await.expect("conn");
        Tm::begin_transaction(&mut **running).await.expect("begin");
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<Text, _>(lock_name(user, &key))
            .execute(&mut *running)
            .await
            .expect("the first request's lock");
        let mut conn = pg.conn().await.expect("conn");

        let outcome = refuse(&mut conn, user, &key, &fingerprint, refusal("x"), DAY).await;

        assert!(
            matches!(outcome, Ok(IdempotentOutcome::InProgress)),
            "{outcome:?}"
        );
        drop(conn); // the pool has two connections
        assert_eq!(
            count(&pg, "(SELECT count(*) FROM idempotency_keys)").await,
            0
        );
    }
}
