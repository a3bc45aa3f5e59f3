//! A batch's idempotency keys, for every batched write (orders,
//! investments): claimed for the whole batch in two statements
//! ([`lock_keys`], then [`read_records`]), then answered ([`Answers`]).
//!
//! Each key's transaction-scoped advisory lock is try-locked and its record
//! read, as [`guarded`](crate::postgres::idempotency::guarded) does for one key. A
//! write whose key is held elsewhere, or appears twice in the batch, is in
//! progress; one whose key has a fresh record is answered from it (a replay
//! or a reused key). Those writes do not run. A record kept past the
//! retention but not yet purged is deleted: its key is new again.
//!
//! Every write that runs is answered with its rendered response, stored by
//! the batch's one statement together with its effect; a 5xx is never
//! stored, it fails the batch instead (as under `guarded`).

use std::collections::HashSet;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Bytea, Double, Int2, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::idempotency::{IdempotentOutcome, IdempotentRequest, Written};

use super::idempotency::{StoredRow, lock_name};
use super::lanes::BatchError;
use super::prepared::prepared;
use super::unnest::unnest_rows;

/// What the keys say about the writes of a batch, by position.
pub(crate) struct Claims<T, E> {
    /// The writes that run, in arrival order.
    pub live: Vec<usize>,
    /// Already the answers of the writes that must not run.
    pub answers: Answers<T, E>,
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

/// The keys of a batch after their try-locks, before their records are read.
pub(crate) struct Locks {
    /// Writes settled already: their key is held elsewhere or twice here.
    settled: Vec<(usize, IdempotentOutcome)>,
    /// The writes whose key this batch holds, in arrival order.
    held: Vec<usize>,
}

/// Try-locks the key of each of `requests` (a batch's, in arrival order).
/// The first half of a claim; [`read_records`] is the second, and must be
/// sent after this one has returned (a record is read under its lock).
pub(crate) async fn lock_keys<T, E>(
    conn: &AsyncPgConnection,
    requests: &[&IdempotentRequest<T, E>],
) -> Result<Locks, BatchError> {
    let mut settled = Vec::new();
    // Advisory locks are re-entrant within a session: a second write with a
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
    .load(&mut &*conn)
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
    Ok(Locks { settled, held })
}

/// Reads the records of the keys `locks` holds and settles the writes they
/// answer (a replay or a reused key); a record kept past the retention but
/// not yet purged is deleted, its key new again. Takes `&AsyncPgConnection`
/// so that its read can be pipelined with other statements of the batch.
pub(crate) async fn read_records<T, E>(
    conn: &AsyncPgConnection,
    requests: &[&IdempotentRequest<T, E>],
    locks: Locks,
    retention: Duration,
) -> Result<Claims<T, E>, BatchError> {
    let Locks { mut settled, held } = locks;
    if held.is_empty() {
        return Ok(Claims {
            answers: Answers::new(requests.len(), settled),
            live: held,
        });
    }
    let (users, keys) = user_keys(requests, &held);
    // Both statements probe the primary key once per request, in a shape
    // whose plan is an index lookup even when it is first planned on an
    // empty table: the lanes pin each statement's first plan for the
    // connection's life (see `invest::batch::lock_books`).
    let records: Vec<Record> = prepared(
        "SELECT t.n, k.fingerprint, k.response_status, k.response_content_type, k.response_body, \
                k.created_at > now() - make_interval(secs => $1) AS fresh \
           FROM unnest($2::int8[], $3::text[]) WITH ORDINALITY AS t(user_id, key, n) \
           CROSS JOIN LATERAL (SELECT * FROM idempotency_keys i \
                                WHERE i.user_id = t.user_id AND i.key = t.key LIMIT 1) AS k",
    )
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<Array<Int8>, _>(&users)
    .bind::<Array<Text>, _>(&keys)
    .load(&mut &*conn)
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
            "DELETE FROM idempotency_keys d \
              USING (SELECT k.row FROM unnest($1::int8[], $2::text[]) AS t(user_id, key) \
                     CROSS JOIN LATERAL (SELECT ctid AS row FROM idempotency_keys i \
                                          WHERE i.user_id = t.user_id AND i.key = t.key \
                                          LIMIT 1) AS k) AS found \
              WHERE d.ctid = found.row",
        )
        .bind::<Array<Int8>, _>(&users)
        .bind::<Array<Text>, _>(&keys)
        .execute(&mut &*conn)
        .await?;
    }
    let live = held.into_iter().filter(|i| !answered.contains(i)).collect();
    Ok(Claims {
        answers: Answers::new(requests.len(), settled),
        live,
    })
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

unnest_rows! {
    /// A row of `idempotency_keys`: a write's answer under its key (a
    /// batch's, or a gate refusal written behind, `redis/refusals.rs`).
    #[derive(Clone)]
    pub(crate) struct AnswerRow {
        user_id: i64 as Int8,
        key: String as Text,
        fingerprint: String as Text,
        response_status: i16 as Int2,
        response_content_type: String as Text,
        response_body: Vec<u8> as Bytea,
    }
}

/// The answers of a batch's writes, by position: those its keys settled,
/// then those that ran, with the rows that store the latter's answers.
pub(crate) struct Answers<T, E> {
    written: Vec<Option<Written<T, E>>>,
    rows: Vec<AnswerRow>,
}

impl<T, E> Answers<T, E> {
    /// The answers of a batch of `n` writes whose keys `settled` some.
    fn new(n: usize, settled: Vec<(usize, IdempotentOutcome)>) -> Self {
        let mut written: Vec<Option<Written<T, E>>> = (0..n).map(|_| None).collect();
        for (i, outcome) in settled {
            // A key with a record that answers nothing new is in progress.
            written[i] = Some(Written::answered(outcome).unwrap_or(Written::InProgress));
        }
        Self {
            written,
            rows: Vec::new(),
        }
    }

    /// Answers write `i`, which ran, with `result` rendered for `request`,
    /// to be stored under its key.
    ///
    /// # Errors
    /// [`BatchError::Inconsistent`] for a 5xx response, which is never stored.
    pub fn ran(
        &mut self,
        i: usize,
        request: &IdempotentRequest<T, E>,
        result: Result<T, E>,
    ) -> Result<(), BatchError> {
        let response = request.render(&result);
        if response.status >= 500 {
            return Err(BatchError::inconsistent(format!(
                "refusing to store a {} response under an idempotency key",
                response.status
            )));
        }
        self.rows.push(AnswerRow {
            user_id: request.user_id.get(),
            key: request.key.as_str().to_owned(),
            fingerprint: request.fingerprint.as_str().to_owned(),
            response_status: i16::try_from(response.status).unwrap_or(500),
            response_content_type: response.content_type.clone(),
            response_body: response.body.clone(),
        });
        self.written[i] = Some(Written::Executed { result, response });
        Ok(())
    }

    /// The rows that store the answers of the writes that ran so far (once:
    /// they are taken).
    pub fn rows(&mut self) -> Vec<AnswerRow> {
        std::mem::take(&mut self.rows)
    }

    /// Every write's answer, in arrival order.
    ///
    /// # Errors
    /// [`BatchError::Inconsistent`] when a write went unanswered.
    pub fn all(self) -> Result<Vec<Written<T, E>>, BatchError> {
        self.written
            .into_iter()
            .map(|a| a.ok_or_else(|| BatchError::inconsistent("a write went unanswered")))
            .collect()
    }
}
