//! The idempotency guard every money write runs inside its own transaction.
//!
//! ```text
//! BEGIN
//!   pg_try_advisory_xact_lock(user, key)   -- taken: another request with this key runs → InProgress
//!   SELECT stored response                 -- fresh and same fingerprint → Replayed; other → KeyReused
//!   … the write's effect …                 -- the caller's guarded statements
//!   INSERT stored response                 -- same transaction as the effect
//! COMMIT                                   -- lock released with the transaction
//! ```
//!
//! Because the lock is transaction-scoped, a crashed instance or a dropped
//! connection releases it with the rollback: there is never a stale
//! "in progress" row to clean up. The record and the effect commit together
//! or not at all. A failure of Postgres rolls back both, so nothing is stored
//! and a retry runs again.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Bytea, Double, Int2, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::{IdempotentOutcome, IdempotentRequest, StoredResponse};

/// What the guard decided before the effect.
pub(crate) enum Begin {
    /// This request owns the key: run the effect, then [`finish`].
    Proceed,
    /// No effect may run; answer this.
    Decided(IdempotentOutcome),
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Int2)]
    response_status: i16,
    #[diesel(sql_type = Text)]
    response_content_type: String,
    #[diesel(sql_type = Bytea)]
    response_body: Vec<u8>,
    #[diesel(sql_type = Bool)]
    fresh: bool,
}

/// Takes the key's lock and looks for a stored response. Call inside the
/// transaction that will hold the effect.
pub(crate) async fn begin<T, E>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    retention: Duration,
) -> diesel::QueryResult<Begin> {
    let user_id = request.user_id.get();
    let key = request.key.as_str();
    let lock =
        diesel::sql_query("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked")
            .bind::<Text, _>(format!("idem:{user_id}:{key}"))
            .get_result::<Locked>(conn)
            .await?;
    if !lock.locked {
        return Ok(Begin::Decided(IdempotentOutcome::InProgress));
    }
    let stored = diesel::sql_query(
        "SELECT fingerprint, response_status, response_content_type, response_body, \
                created_at > now() - make_interval(secs => $3) AS fresh \
           FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind::<Int8, _>(user_id)
    .bind::<Text, _>(key)
    .bind::<Double, _>(retention.as_secs_f64())
    .get_result::<StoredRow>(conn)
    .await;
    match stored {
        Ok(row) if row.fresh => {
            if row.fingerprint == request.fingerprint.as_str() {
                Ok(Begin::Decided(IdempotentOutcome::Replayed(
                    StoredResponse {
                        status: u16::try_from(row.response_status).unwrap_or(500),
                        content_type: row.response_content_type,
                        body: row.response_body,
                    },
                )))
            } else {
                Ok(Begin::Decided(IdempotentOutcome::KeyReused))
            }
        }
        // Expired (kept past the retention, not yet purged): a new request.
        Ok(_) | Err(diesel::result::Error::NotFound) => Ok(Begin::Proceed),
        Err(e) => Err(e),
    }
}

/// Stores the response of the request that ran, in the effect's transaction.
pub(crate) async fn finish<T, E>(
    conn: &mut AsyncPgConnection,
    request: &IdempotentRequest<T, E>,
    response: &StoredResponse,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO idempotency_keys \
             (user_id, key, fingerprint, response_status, response_content_type, response_body) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id, key) DO UPDATE SET \
             fingerprint = EXCLUDED.fingerprint, response_status = EXCLUDED.response_status, \
             response_content_type = EXCLUDED.response_content_type, \
             response_body = EXCLUDED.response_body, created_at = now()",
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

/// Deletes stored responses older than `retention`, a batch at a time.
/// Returns how many were deleted.
pub(crate) async fn purge_expired(
    conn: &mut AsyncPgConnection,
    retention: Duration,
    batch: i64,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE ctid IN ( \
             SELECT ctid FROM idempotency_keys \
              WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Int8, _>(batch)
    .execute(conn)
    .await
}
