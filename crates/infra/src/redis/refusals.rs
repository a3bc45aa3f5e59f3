//! A gate's refusals recorded in Redis first and landed in Postgres in
//! batches (`docs/idempotency.md`, "Refusals at the fast path").
//!
//! A flash sale refuses most of its requests at a gate, and storing each
//! refusal under its key in Postgres, one statement each, was most of a
//! refusal's cost. Here a refusal is recorded with one Redis round trip: a
//! script sets the key's record (`refusal:{user}:{key}`, kept as long as
//! Postgres keeps records) unless the key has one, and answers the existing
//! record instead. A recorded refusal goes on a bounded in-process queue,
//! and [`RefusalWriter`] writes what is queued to `idempotency_keys` in one
//! statement per batch. An order's refusal skips even that script: the
//! stock gate's reservation script records it in the step that refuses
//! ([`Recording`], the same packing and queue).
//!
//! A refusal is answered once its batch has landed ([`Landing`]): Redis
//! cannot say that a key is new to Postgres (a paid order's key whose mark
//! lapsed, or any key after Redis lost its data, has no Redis trace), so
//! the batch's insert is what says it. A key that had another record keeps
//! it, that record answers the request (a replay, or a reused key), and
//! the key's Redis record is dropped. The same record (a retry wrote it
//! through) leaves the Redis record in place. A refusal whose batch fails,
//! or does not land within the request's wait, is not answered from Redis
//! alone: its request is `Unavailable` (its record stays, and is written
//! behind). While the writer's last write failed, nothing new is recorded,
//! and refusals go to Postgres one by one, as without this path.
//!
//! Until its batch lands, a refusal lives only in Redis. The gates' shared
//! reservation script (`counter.rs`) reads the record before anything else,
//! so a retry of that key is answered from it and never reaches the effect.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::RedisPool;
use async_trait::async_trait;
use deadpool_redis::redis::{Script, cmd};
use domain::error::Unavailable;
use domain::gate::RefusalAnswers;
use domain::idempotency::{
    FastRefusals, Fingerprint, IdempotencyKey, IdempotencyStore, IdempotentOutcome, Record,
    StoredResponse,
};
use domain::identity::UserId;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{RedisKeys, unavailable};
use crate::postgres::{AnswerRow, PgIdempotencyStore, RefusalsWritten};

/// How many refusals may wait for Postgres; beyond that a refusal is stored
/// in Postgres by its request, as it was before this path existed.
pub const REFUSAL_QUEUE: usize = 20_000;
/// The most rows one write takes.
const BATCH: usize = 1_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Short, so that the writer finds a Postgres that is back within a second
/// (refusals are not recorded here until it has).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a stopping writer keeps trying to write what is queued.
const FLUSH_ON_STOP: Duration = Duration::from_secs(10);
/// How long a refusal whose key a running transaction holds waits before
/// it is written again.
const BUSY_RETRY: Duration = Duration::from_millis(10);
/// The least time between the starts of two writes while refusals keep
/// coming: a rush's refusals gather into a few large statements (a flash
/// sale of 19,000 refusals took some 1,300 statements of about 15 rows
/// without it), and a lone refusal after a quiet spell is written at once.
/// A refusal waits for its batch, so this is also up to 20 ms of its
/// latency; writing as soon as the last write ended (no pace) measured no
/// faster in a flash sale (`docs/performance.md`, change 15).
const PACE: Duration = Duration::from_millis(20);

/// KEYS: the record; ARGV: the packed record, its lifetime in ms. Returns
/// the record the key has already, or nil when this one was set.
const RECORD: &str = r"
local old = redis.call('GET', KEYS[1])
if old then return old end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";

static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD));

/// Sets `packed` as the refusal record `record` for `ttl_ms` unless the key
/// has one already (the [`RECORD`] script); returns the record it had.
async fn record_unless_recorded(
    conn: &mut super::RedisConnection,
    record: &str,
    packed: &[u8],
    ttl_ms: u64,
) -> Result<Option<Vec<u8>>, Unavailable> {
    RECORD_SCRIPT
        .key(record)
        .arg(packed)
        .arg(ttl_ms)
        .invoke_async(conn)
        .await
        .map_err(unavailable)
}

/// The Redis key of the refusal record of (user, key).
pub(crate) fn record_key(keys: &RedisKeys, user_id: UserId, key: &str) -> String {
    keys.key(&format!("refusal:{user_id}:{key}"))
}

/// `fingerprint \n status \n content type \n body`: neither of the first
/// three holds a line break (a hex digest, a number, a header value), and
/// the body is kept as it is.
fn pack(fingerprint: &Fingerprint, response: &StoredResponse) -> Result<Vec<u8>, Unavailable> {
    let head = format!(
        "{}\n{}\n{}\n",
        fingerprint.as_str(),
        response.status,
        response.content_type
    );
    if head.matches('\n').count() != 3 {
        return Err(Unavailable::new(
            "redis",
            "a fingerprint or content type with a line break cannot be packed",
        ));
    }
    let mut packed = head.into_bytes();
    packed.extend_from_slice(&response.body);
    Ok(packed)
}

/// The record [`pack`] made.
pub(crate) fn unpack(packed: &[u8]) -> Result<Record, Unavailable> {
    let malformed = || unavailable("a refusal record in Redis is malformed");
    let mut parts = packed.splitn(4, |b| *b == b'\n');
    let mut text = || {
        parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_owned)
            .ok_or_else(malformed)
    };
    let fingerprint = Fingerprint::new(text()?);
    let status = text()?.parse::<u16>().map_err(|_| malformed())?;
    let content_type = text()?;
    let body = parts.next().ok_or_else(malformed)?.to_vec();
    Ok(Record {
        fingerprint,
        response: StoredResponse {
            status,
            content_type,
            body,
        },
    })
}

/// A refusal on its way to Postgres, and whom to tell when it has landed.
struct Queued {
    row: AnswerRow,
    /// Taken once the request is told (the batch landed, or failed).
    landed: Option<oneshot::Sender<Landed>>,
}

/// What a batch made of a refusal.
enum Landed {
    /// The key holds this refusal now.
    Stored,
    /// The key had another record, which answers the request; the key's
    /// Redis record was dropped.
    Other(Record),
    /// The write failed (or the writer stopped without writing it).
    Failed,
}

/// A queued refusal, awaited by the request that made it.
pub(crate) struct Landing {
    landed: oneshot::Receiver<Landed>,
    wait: Duration,
}

impl Landing {
    /// Waits for the refusal's batch, within the request's budget:
    /// `None` when Postgres holds the refusal now, the key's other record
    /// when it had one (that record answers; the Redis record was dropped).
    ///
    /// # Errors
    /// [`Unavailable`] (Postgres) when the batch failed or did not land in
    /// time: whether the key had another record is not known, so the
    /// refusal is not answered. Its record stays, and is written behind.
    pub(crate) async fn landed(self) -> Result<Option<Record>, Unavailable> {
        let wait = domain::deadline::remaining(self.wait);
        match tokio::time::timeout(wait, self.landed).await {
            Ok(Ok(Landed::Stored)) => Ok(None),
            Ok(Ok(Landed::Other(record))) => Ok(Some(record)),
            Ok(Ok(Landed::Failed) | Err(_)) => Err(Unavailable::new(
                "postgres",
                "a refusal's batch could not be written to Postgres",
            )),
            Err(_) => Err(Unavailable::new(
                "postgres",
                "a refusal's batch did not land in Postgres in time",
            )),
        }
    }
}

/// Records a gate's refusals in Redis and queues them for Postgres.
#[derive(Clone)]
pub struct RedisRefusals {
    pool: RedisPool,
    keys: RedisKeys,
    /// How long a record lives: as long as Postgres replays records.
    retention: Duration,
    queue: mpsc::Sender<Queued>,
    /// How long a refusal waits for its batch (less when the request's
    /// budget has less left).
    wait: Duration,
    /// Set while the writer's last write failed: nothing is recorded then.
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisRefusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRefusals")
            .field("prefix", &self.keys.prefix())
            .field("queued", &self.queued())
            .finish()
    }
}

/// Writes the queued refusals to Postgres, in batches; run it as a
/// background job with [`RefusalWriter::run`].
pub struct RefusalWriter {
    pool: RedisPool,
    keys: RedisKeys,
    store: PgIdempotencyStore,
    queue: mpsc::Receiver<Queued>,
    failing: Arc<AtomicBool>,
    /// Set once asked to stop: when the writer gives up on Postgres.
    give_up_at: Option<Instant>,
}

impl std::fmt::Debug for RefusalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalWriter")
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// The fast path's two halves: the recorder the pipeline calls, and the
/// writer that empties its queue of `capacity` refusals into `store`. A
/// refusal waits up to `wait` for its batch (the dependency timeout in the
/// service).
pub fn write_behind(
    pool: RedisPool,
    keys: RedisKeys,
    store: PgIdempotencyStore,
    retention: Duration,
    capacity: usize,
    wait: Duration,
) -> (RedisRefusals, RefusalWriter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let failing = Arc::new(AtomicBool::new(false));
    let refusals = RedisRefusals {
        pool: pool.clone(),
        keys: keys.clone(),
        retention,
        queue: tx,
        wait,
        failing: Arc::clone(&failing),
    };
    let writer = RefusalWriter {
        pool,
        keys,
        store,
        queue: rx,
        failing,
        give_up_at: None,
    };
    (refusals, writer)
}

impl RedisRefusals {
    /// Refusals recorded in Redis and not yet written to Postgres.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// `row` for the queue, and its landing for the request to await.
    fn queued_with_landing(&self, row: AnswerRow) -> (Queued, Landing) {
        let (tx, rx) = oneshot::channel();
        let landing = Landing {
            landed: rx,
            wait: self.wait,
        };
        let queued = Queued {
            row,
            landed: Some(tx),
        };
        (queued, landing)
    }

    /// Readies `answers` for a gate's script to record the one it gives
    /// (`counter.rs`): packed as [`FastRefusals::refuse`] packs them, with a
    /// place in the queue taken first, as there, so a refusal the script
    /// records is always written behind. `None` when the queue is full or
    /// an answer cannot be recorded (a 5xx, a line break in a header), or
    /// while the writer's last write failed: the gate then only refuses,
    /// and the pipeline records the refusal.
    pub(crate) fn recording<'a>(
        &self,
        user_id: UserId,
        key: &'a IdempotencyKey,
        answers: &'a RefusalAnswers<'a>,
    ) -> Option<Recording<'a>> {
        if answers.responses.iter().any(|r| r.status >= 500) || self.failing() {
            return None;
        }
        let packed = answers
            .responses
            .iter()
            .map(|response| pack(answers.fingerprint, response))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let place = self.queue.clone().try_reserve_owned().ok()?;
        Some(Recording {
            refusals: self.clone(),
            place,
            user_id,
            key,
            answers,
            packed,
            ttl_ms: u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// A gate's refusal answers ready to be recorded by its script, holding a
/// place in the write-behind queue; made by [`RedisRefusals::recording`].
pub(crate) struct Recording<'a> {
    refusals: RedisRefusals,
    place: OwnedPermit<Queued>,
    user_id: UserId,
    key: &'a IdempotencyKey,
    answers: &'a RefusalAnswers<'a>,
    /// `packed[i]` is recorded when item `i` is refused.
    pub(crate) packed: Vec<Vec<u8>>,
    /// How long a record lives.
    pub(crate) ttl_ms: u64,
}

impl Recording<'_> {
    /// Records the answer to item `index` under `record` with a command of
    /// its own (on a Redis Cluster the record is not in the refusing
    /// script's slot), unless the key has a record already, and queues it
    /// for Postgres when it was set: its landing, to await, or the record
    /// the key had.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails (nothing is queued).
    pub(crate) async fn record(
        self,
        conn: &mut super::RedisConnection,
        record: &str,
        index: usize,
    ) -> Result<Result<Landing, Record>, Unavailable> {
        let Some(packed) = self.packed.get(index) else {
            return Err(unavailable("no answer for the refused item"));
        };
        if let Some(existing) = record_unless_recorded(conn, record, packed, self.ttl_ms).await? {
            return Ok(Err(unpack(&existing)?));
        }
        self.recorded(index)
            .map(Ok)
            .ok_or_else(|| unavailable("no answer for the refused item"))
    }

    /// The script recorded the answer to item `index`: queues it for
    /// Postgres. Returns its landing, to await before it answers (`None`
    /// for an index without an answer, which no script records).
    pub(crate) fn recorded(self, index: usize) -> Option<Landing> {
        let response = self.answers.responses.get(index)?;
        let (queued, landing) = self.refusals.queued_with_landing(row(
            self.user_id,
            self.key,
            self.answers.fingerprint,
            response,
        ));
        self.place.send(queued);
        Some(landing)
    }
}

/// The row a recorded refusal is written behind as.
fn row(
    user_id: UserId,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    response: &StoredResponse,
) -> AnswerRow {
    AnswerRow {
        user_id: user_id.get(),
        key: key.as_str().to_owned(),
        fingerprint: fingerprint.as_str().to_owned(),
        response_status: i16::try_from(response.status).unwrap_or(i16::MAX),
        response_content_type: response.content_type.clone(),
        response_body: response.body.clone(),
    }
}

#[async_trait]
impl FastRefusals for RedisRefusals {
    async fn refuse(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        response: StoredResponse,
    ) -> Result<IdempotentOutcome, Unavailable> {
        if response.status >= 500 {
            return Err(Unavailable::new(
                "redis",
                "a 5xx is never stored under an idempotency key",
            ));
        }
        if self.failing() {
            return Err(Unavailable::new(
                "postgres",
                "refusals are not recorded while their writes to Postgres fail",
            ));
        }
        // A place in the queue before the record: a refusal recorded here
        // is always written behind.
        let place = self
            .queue
            .try_reserve()
            .map_err(|_| Unavailable::new("redis", "the refusal queue is full"))?;
        let packed = pack(fingerprint, &response)?;
        let ttl_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let record = record_key(&self.keys, user_id, key.as_str());
        if record_unless_recorded(&mut conn, &record, &packed, ttl_ms)
            .await?
            .is_some()
        {
            // Another copy of the request recorded first, and may still
            // wait for its batch: its record is not Postgres' word on the
            // key, so Postgres decides (the gate's own check of a record,
            // `Admission::Recorded`, asks Postgres too).
            return Err(Unavailable::new(
                "redis",
                "the key has a refusal recorded already; Postgres decides",
            ));
        }
        drop(conn);
        let (queued, landing) = self.queued_with_landing(row(user_id, key, fingerprint, &response));
        place.send(queued);
        Ok(match landing.landed().await? {
            Some(other) => other.answer(fingerprint),
            None => IdempotentOutcome::Executed(response),
        })
    }
}

impl RefusalWriter {
    /// Writes what is queued as it comes: each write takes everything
    /// queued meanwhile (up to 1,000 rows), and writes start at most every
    /// 20 ms unless a batch is full, so under load the batches grow and
    /// alone a refusal waits one statement. A failed
    /// write is retried with backoff, never dropped. When `stopped` turns
    /// true (or its sender goes), the queue is closed, so late refusals are
    /// stored in Postgres by their requests, and what it holds is written,
    /// trying for up to 10 s if Postgres fails.
    pub async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_write: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                n = self.queue.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = stopped.wait_for(|s| *s) => break,
            }
            if let Some(next) = last_write.map(|t| t + PACE)
                && batch.len() < BATCH
                && Instant::now() < next
            {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => {}
                    () = tokio::time::sleep_until(next) => {}
                }
                while batch.len() < BATCH
                    && let Ok(row) = self.queue.try_recv()
                {
                    batch.push(row);
                }
            }
            last_write = Some(Instant::now());
            self.write(&mut batch, &mut stopped).await;
        }
        self.stop();
        self.queue.close();
        while self.queue.recv_many(&mut batch, BATCH).await > 0 {
            self.write(&mut batch, &mut stopped).await;
        }
    }

    fn stop(&mut self) {
        if self.give_up_at.is_none() {
            self.give_up_at = Some(Instant::now() + FLUSH_ON_STOP);
        }
    }

    /// Writes `batch` and empties it: retries until it is written, or
    /// until the writer is stopping and its time is up. Each refusal's
    /// request is told what became of it ([`Landing`]).
    async fn write(&mut self, batch: &mut Vec<Queued>, stopped: &mut watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let rows = batch.iter().map(|q| q.row.clone()).collect();
            match self.store.write_refusals(rows).await {
                Ok(RefusalsWritten { kept, busy }) => {
                    self.failing.store(false, Ordering::Relaxed);
                    *batch = self.landed(std::mem::take(batch), kept, busy).await;
                    if batch.is_empty() {
                        return;
                    }
                    if self.give_up_at.is_some_and(|t| Instant::now() >= t) {
                        tracing::error!(
                            lost = batch.len(),
                            "stopping without settling these refusals in Postgres; Redis still \
                             answers them until their records expire"
                        );
                        batch.clear();
                        return;
                    }
                    // A running transaction holds these keys for a few
                    // milliseconds; write them once it has ended.
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(err) if self.give_up_at.is_some_and(|t| Instant::now() >= t) => {
                    tracing::error!(
                        error = %err,
                        lost = batch.len(),
                        "stopping without writing these refusals to Postgres; Redis still \
                         answers them until their records expire"
                    );
                    batch.clear();
                    return;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        rows = batch.len(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "writing refusals to Postgres failed; retrying"
                    );
                    // Their requests are answered Unavailable; their records
                    // stay, and are written here once Postgres is back.
                    self.failing.store(true, Ordering::Relaxed);
                    for queued in batch.iter_mut() {
                        queued.land(Landed::Failed);
                    }
                    let stopping = tokio::select! {
                        () = tokio::time::sleep(backoff) => false,
                        _ = stopped.wait_for(|s| *s), if self.give_up_at.is_none() => true,
                    };
                    if stopping {
                        self.stop();
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Tells each written refusal's request, settles those whose key had
    /// another record (`kept`), and returns what must be written again:
    /// the rows a running transaction held (`busy`), and any that could
    /// not be settled yet.
    async fn landed(
        &self,
        batch: Vec<Queued>,
        kept: Vec<(i64, String)>,
        busy: Vec<(i64, String)>,
    ) -> Vec<Queued> {
        let kept: HashSet<(i64, String)> = kept.into_iter().collect();
        let busy: HashSet<(i64, String)> = busy.into_iter().collect();
        let mut again = Vec::new();
        let mut answered = Vec::new();
        let mut dropped = Vec::new();
        let mut seen = HashSet::new();
        for mut queued in batch {
            let id = (queued.row.user_id, queued.row.key.clone());
            if busy.contains(&id) || !seen.insert(id.clone()) {
                // Held by a running transaction; or a second row of one key
                // (Redis lost the first record meanwhile): the statement
                // told about the key, not about this row, so it is settled
                // against the key's record next time.
                again.push(queued);
            } else if !kept.contains(&id) {
                queued.land(Landed::Stored);
            } else {
                match self.settle(&queued.row).await {
                    None => again.push(queued),
                    Some(None) => queued.land(Landed::Stored),
                    Some(Some(other)) => {
                        dropped.push(id);
                        answered.push((queued, other));
                    }
                }
            }
        }
        // The Redis records go first, so that the key's next retry, and
        // this request, are both answered by Postgres' record.
        self.forget(dropped).await;
        for (mut queued, other) in answered {
            queued.land(Landed::Other(other));
        }
        again
    }

    /// Settles a refusal whose key had a record the batch did not see as
    /// its own: `Some(None)` when the key's record is this refusal (a
    /// retry wrote it through) or now holds it (the record had expired),
    /// `Some(Some(other))` when another record answers the key, `None` when
    /// it cannot be told yet (a request of the key in progress, Postgres
    /// failing): written again.
    async fn settle(&self, row: &AnswerRow) -> Option<Option<Record>> {
        let user_id = UserId::new(row.user_id);
        let Ok(key) = IdempotencyKey::parse(&row.key) else {
            return Some(None);
        };
        let fingerprint = Fingerprint::new(row.fingerprint.clone());
        let response = StoredResponse {
            status: u16::try_from(row.response_status).unwrap_or(0),
            content_type: row.response_content_type.clone(),
            body: row.response_body.clone(),
        };
        match self.store.record(user_id, &key).await {
            Ok(Some(record))
                if record.fingerprint == fingerprint && record.response == response =>
            {
                Some(None)
            }
            Ok(Some(other)) => Some(Some(other)),
            // An expired record not yet purged: replaced, as any write's
            // answer replaces it.
            Ok(None) => match self
                .store
                .refuse(user_id, &key, &fingerprint, response)
                .await
            {
                Ok(IdempotentOutcome::Executed(_)) => Some(None),
                Ok(_) | Err(_) => None,
            },
            Err(_) => None,
        }
    }

    /// Drops the Redis records of keys that had another Postgres record, so
    /// that Postgres answers them (a retry's effect, say, rather than the
    /// refusal it replaced).
    async fn forget(&self, kept: Vec<(i64, String)>) {
        if kept.is_empty() {
            return;
        }
        tracing::info!(
            keys = kept.len(),
            "refusals whose keys have a Postgres record already: that record answers them"
        );
        let records: Vec<String> = kept
            .iter()
            .map(|(user_id, key)| record_key(&self.keys, UserId::new(*user_id), key))
            .collect();
        let dropped = async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            cmd("DEL")
                .arg(&records)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(unavailable)
        };
        if let Err(err) = dropped.await {
            tracing::warn!(error = %err, "could not drop refusal records Postgres overrides");
        }
    }
}

impl Queued {
    /// Tells the refusal's request, once.
    fn land(&mut self, landed: Landed) {
        if let Some(tell) = self.landed.take() {
            let _ = tell.send(landed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::{PgPoolSettings, connect_pool};
    use crate::redis::{RedisPoolSettings, connect_pool as connect_redis};
    use diesel_async::RunQueryDsl as _;

    /// The writer meets a key with a record the batch statement did not
    /// see as the row's own (a retry's write-through committed after the
    /// statement's snapshot, or another request's record): it reads the
    /// record afresh, and only another record answers instead.
    #[tokio::test]
    async fn a_kept_row_is_settled_against_the_keys_record_read_afresh() {
        let db = testkit::TestDb::create().await;
        let redis = testkit::TestRedis::create().await;
        let pg = connect_pool(&PgPoolSettings {
            url: db.url.clone(),
            max_size: 2,
            timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        })
        .expect("postgres pool");
        let pool = connect_redis(&RedisPoolSettings {
            url: redis.url.clone(),
            max_size: 2,
            timeout: Duration::from_secs(2),
        })
        .expect("redis pool");
        let day = Duration::from_secs(86_400);
        let (_refusals, writer) = write_behind(
            pool,
            RedisKeys::new(redis.prefix.clone()),
            PgIdempotencyStore::new(pg, day),
            day,
            4,
            Duration::from_secs(1),
        );
        let mut conn = db.connect().await;
        diesel::sql_query(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, response_status, \
                 response_content_type, response_body) VALUES \
               (7, 'same', 'f', 409, 'application/problem+json', '\\x7b7d'), \
               (7, 'other', 'f', 201, 'application/json', '\\x7b7d')",
        )
        .execute(&mut conn)
        .await
        .expect("records");
        let row = |key: &str| AnswerRow {
            user_id: 7,
            key: key.into(),
            fingerprint: "f".into(),
            response_status: 409,
            response_content_type: "application/problem+json".into(),
            response_body: b"{}".to_vec(),
        };

        let same = writer.settle(&row("same")).await;
        let other = writer.settle(&row("other")).await;

        assert_eq!(same, Some(None), "its own record: stored");
        assert_eq!(
            other,
            Some(Some(Record {
                fingerprint: Fingerprint::new("f".into()),
                response: StoredResponse {
                    status: 201,
                    content_type: "application/json".into(),
                    body: b"{}".to_vec(),
                },
            })),
            "another record answers"
        );
    }

    #[test]
    fn a_record_unpacks_to_what_was_packed_body_line_breaks_included() {
        let fingerprint = Fingerprint::new("ab12".into());
        let response = StoredResponse {
            status: 409,
            content_type: "application/problem+json".into(),
            body: b"{\"a\":\n1}\n".to_vec(),
        };
        let packed = pack(&fingerprint, &response).expect("packs");
        assert_eq!(
            unpack(&packed).expect("unpacks"),
            Record {
                fingerprint,
                response
            }
        );
        assert!(unpack(b"ab12\n409").is_err());
    }
}
