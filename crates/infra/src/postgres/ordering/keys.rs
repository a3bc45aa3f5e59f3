//! The first step of a batch: every order's idempotency key, claimed for the
//! whole batch in two statements.
//!
//! Each key's transaction-scoped advisory lock is try-locked and its record
//! read, as [`guarded`](crate::postgres::idempotency::guarded) does for one key. An
//! order whose key is held elsewhere, or appears twice in the batch, is in
//! progress; one whose key has a fresh record is answered from it (a replay
//! or a reused key). Those orders do not run. A record kept past the
//! retention but not yet purged is deleted: its key is new again.

use std::collections::HashSet;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Double, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::{IdempotentOutcome, IdempotentRequest};

use super::error::BatchError;
use crate::postgres::idempotency::{StoredRow, lock_name};
use crate::postgres::prepared::prepared;

/// What the keys say about the orders of a batch, by position.
pub(super) struct Claims {
    /// The orders that must not run, with their answer.
    pub settled: Vec<(usize, IdempotentOutcome)>,
    /// The orders that run, in arrival order.
    pub live: Vec<usize>,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Int8)]
    n: i64,
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct Record {
    #[diesel(sql_type = Int8)]
    n: i64,
    #[diesel(embed)]
    record: StoredRow,
}

/// Claims the key of each of `requests` (a batch's, in arrival order).
pub(super) async fn claim_keys<T, E>(
    tx: &mut AsyncPgConnection,
    requests: &[&IdempotentRequest<T, E>],
    retention: Duration,
) -> Result<Claims, BatchError> {
    let mut settled = Vec::new();
    // Advisory locks are re-entrant within a session: a second order with a
    // key already in this batch is a concurrent duplicate, so it is in progress.
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        if seen.insert(lock_name(r.user_id, &r.key)) {
            firsts.push(i);
        } else {
            settled.push((i, IdempotentOutcome::InProgress));
        }
    }
    let names: Vec<String> = firsts
        .iter()
        .map(|&i| lock_name(requests[i].user_id, &requests[i].key))
        .collect();
    let locks: Vec<Locked> = prepared(
        "SELECT n, pg_try_advisory_xact_lock(hashtextextended(k, 0)) AS locked \
           FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind::<Array<Text>, _>(&names)
    .load(tx)
    .await?;
    let mut held = Vec::with_capacity(firsts.len());
    for lock in &locks {
        let i = firsts[position(lock.n)];
        if lock.locked {
            held.push(i);
        } else {
            settled.push((i, IdempotentOutcome::InProgress));
        }
    }
    if held.is_empty() {
        return Ok(Claims {
            settled,
            live: held,
        });
    }
    let (users, keys) = user_keys(requests, &held);
    let records: Vec<Record> = prepared(
        "SELECT t.n, k.fingerprint, k.response_status, k.response_content_type, k.response_body, \
                k.created_at > now() - make_interval(secs => $1) AS fresh \
           FROM unnest($2::int8[], $3::text[]) WITH ORDINALITY AS t(user_id, key, n) \
           JOIN idempotency_keys k ON k.user_id = t.user_id AND k.key = t.key",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Array<Int8>, _>(&users)
    .bind::<Array<Text>, _>(&keys)
    .load(tx)
    .await?;
    let mut answered = HashSet::new();
    let mut stale = Vec::new();
    for r in records {
        let i = held[position(r.n)];
        if r.record.fresh {
            answered.insert(i);
            settled.push((i, r.record.into_outcome(&requests[i].fingerprint)));
        } else {
            stale.push(i); // kept past the retention, not yet purged: a new request
        }
    }
    if !stale.is_empty() {
        let (users, keys) = user_keys(requests, &stale);
        prepared(
            "DELETE FROM idempotency_keys k USING unnest($1::int8[], $2::text[]) AS t(user_id, key) \
              WHERE k.user_id = t.user_id AND k.key = t.key",
        )
        .bind::<Array<Int8>, _>(&users)
        .bind::<Array<Text>, _>(&keys)
        .execute(tx)
        .await?;
    }
    let live = held.into_iter().filter(|i| !answered.contains(i)).collect();
    Ok(Claims { settled, live })
}

/// The (user, key) columns of the requests at `at`.
fn user_keys<'a, T, E>(
    requests: &[&'a IdempotentRequest<T, E>],
    at: &[usize],
) -> (Vec<i64>, Vec<&'a str>) {
    at.iter()
        .map(|&i| (requests[i].user_id.get(), requests[i].key.as_str()))
        .unzip()
}

/// An ordinality (1-based) as an index.
fn position(n: i64) -> usize {
    usize::try_from(n - 1).unwrap_or(usize::MAX)
}
