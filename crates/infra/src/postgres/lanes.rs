//! The lanes every batched write runs on: queues of waiting writes, each
//! drained by one task that runs them in batches, one transaction each.
//!
//! A store hands a write to one of [`LANES`] lanes, chosen by a key of its
//! own (the order's first product, the investment's product), and waits for
//! its answer. A lane runs one batch at a time: the writes that arrived while
//! the previous batch ran (up to [`MAX_BATCH`]) go into one transaction. A
//! write that arrives at an idle lane is a batch of one and waits for nobody;
//! a sale's writes for one hot row queue on one lane and share its lock wait
//! and its commit instead of queueing on the row's lock.
//!
//! What a batch decides and writes is the store's [`Batch`]: the order
//! store's (`ordering::batch`) and the invest store's (`invest::batch`).
//! This module owns what they share: the queues, dropping writes whose
//! caller gave up, surviving a panic, and the transaction around the batch
//! (begin; try-lock the keys; read their records and the batch's rows in
//! one pipeline; the store's batch for the writes the keys leave; commit,
//! or roll back everything). A batch is committed whole or
//! rolled back whole, and every write is answered after the commit, so each
//! is durable before it is answered. Its neighbour `batch_keys` claims and
//! answers a batch's idempotency keys.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use domain::error::Unavailable;
use domain::idempotency::{IdempotentRequest, Written};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use super::batch_keys::{Answers, Claims, lock_keys, read_records};
use super::idempotency::rollback_all;
use super::{Postgres, unavailable};

/// How many batches of one store run at once. Each running batch holds one
/// connection of the lanes' pool. Batches of different lanes may lock the
/// same rows and then wait for each other, in one lock order, so never in a
/// cycle.
pub const LANES: usize = 4;

/// The most writes in one transaction: bounds a batch's statement sizes and
/// the time its first write waits for its last.
pub const MAX_BATCH: usize = 128;

/// Writes waiting for a lane; past this, `submit` waits to hand one over.
const LANE_QUEUE: usize = 1024;

/// What one batch of a store does inside its transaction, once the lane
/// has claimed the batch's keys.
pub(crate) trait Batch: Send + Sync + 'static {
    /// One write waiting in a batch.
    type Entry: Send + Sync + 'static;
    /// What a write makes when it is taken.
    type Value: Send + 'static;
    /// Why a write is refused.
    type Refusal: Send + 'static;
    /// What the writes are, for logs and errors ("order", "investment").
    const KIND: &'static str;

    /// What [`lock`](Self::lock) read: the rows the writes are decided
    /// against, held locked until the commit.
    type Locked: Send;

    /// The keyed request of `entry`.
    fn request(entry: &Self::Entry) -> &IdempotentRequest<Self::Value, Self::Refusal>;

    /// Locks and reads the rows every one of `entries` would be decided
    /// against (all of them: it runs pipelined with the read of the keys'
    /// records, before it is known which writes run), in the transaction
    /// open on `conn`. Its statements go out in the order they are awaited
    /// or polled, after the keys' try-locks.
    fn lock(
        &self,
        conn: &AsyncPgConnection,
        entries: &[Self::Entry],
    ) -> impl Future<Output = Result<Self::Locked, BatchError>> + Send;

    /// Decides and writes the `live` entries (positions in `entries`, in
    /// arrival order; never empty) on the rows `locked` holds, in the
    /// transaction open on `tx`, giving each its answer in `answers` and
    /// storing the answers with the effects.
    fn run(
        &self,
        tx: &mut AsyncPgConnection,
        entries: &[Self::Entry],
        live: &[usize],
        locked: Self::Locked,
        answers: &mut Answers<Self::Value, Self::Refusal>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

/// What becomes of one write of a batch of `B`.
pub(crate) type Answer<B> = Written<<B as Batch>::Value, <B as Batch>::Refusal>;

/// Why a batch did not commit. Every write in it then answers 503 and
/// nothing is stored under its key, so a retry runs again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    /// A statement failed (or the connection did).
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The database disagreed with what the batch decided in memory, or the
    /// batch could not answer every write: a bug, never a business refusal.
    #[error("{0}")]
    Inconsistent(String),
}

impl BatchError {
    pub(crate) fn inconsistent(why: impl Into<String>) -> Self {
        Self::Inconsistent(why.into())
    }

    /// Fails unless exactly the `want` rows of `table` the batch decided on
    /// passed the guards of its write (`got`).
    pub(crate) fn unless_rows(table: &str, got: i64, want: usize) -> Result<(), Self> {
        if usize::try_from(got) == Ok(want) {
            Ok(())
        } else {
            Err(Self::inconsistent(format!(
                "{table}: {got} rows passed the guard, {want} were decided"
            )))
        }
    }
}

/// A write and where its answer goes.
struct Job<B: Batch> {
    entry: B::Entry,
    reply: oneshot::Sender<Result<Answer<B>, Unavailable>>,
}

/// A store's lanes; they stop when the last clone is dropped.
pub(crate) struct Lanes<B: Batch> {
    queues: Arc<[mpsc::Sender<Job<B>>]>,
}

impl<B: Batch> Clone for Lanes<B> {
    fn clone(&self) -> Self {
        Self {
            queues: Arc::clone(&self.queues),
        }
    }
}

impl<B: Batch> Lanes<B> {
    /// Starts [`LANES`] lanes running `batch` on connections of `db`, on the
    /// current Tokio runtime; a key's record answers it for `retention`.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub(crate) fn start(batch: B, db: &Postgres, retention: Duration) -> Self {
        let batch = Arc::new((batch, retention));
        let queues: Vec<mpsc::Sender<Job<B>>> = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(run_lane(db.clone(), Arc::clone(&batch), rx));
                tx
            })
            .collect();
        Self {
            queues: queues.into(),
        }
    }

    /// Hands `entry` to the lane of `key` (`key` modulo [`LANES`]) and waits
    /// for its answer. A caller that stops waiting before its batch starts
    /// takes its write out of it.
    ///
    /// # Errors
    /// [`Unavailable`] when the lane has stopped or the batch failed.
    pub(crate) async fn submit(&self, key: i64, entry: B::Entry) -> Result<Answer<B>, Unavailable> {
        let lane = usize::try_from(key.rem_euclid(LANES as i64)).unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        self.queues[lane]
            .send(Job { entry, reply })
            .await
            .map_err(|_| unavailable(format!("the {} lane has stopped", B::KIND)))?;
        answer
            .await
            .map_err(|_| unavailable(format!("the {} lane dropped a write", B::KIND)))?
    }
}

/// Runs the lane's batches until its store is dropped.
async fn run_lane<B: Batch>(
    db: Postgres,
    batch: Arc<(B, Duration)>,
    mut queue: mpsc::Receiver<Job<B>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A caller that gave up waiting (it answered 503, or its client left)
        // must not be charged later: its write is dropped before it runs.
        let (entries, replies): (Vec<B::Entry>, Vec<_>) = jobs
            .drain(..)
            .filter(|job| !job.reply.is_closed())
            .map(|job| (job.entry, job.reply))
            .unzip();
        if entries.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        // A panic in a batch must not stop the lane for good.
        let (batch, retention) = (&batch.0, batch.1);
        let answers = AssertUnwindSafe(db.timed(run_batch(&db, batch, &entries, retention)))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(kind = B::KIND, "a batch panicked; its writes answer 503");
                Err(Unavailable::new(
                    "postgres",
                    format!("the {} batch failed", B::KIND),
                ))
            });
        tracing::debug!(
            kind = B::KIND,
            writes = entries.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answers.is_ok(),
            "batch"
        );
        match answers {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that gave up is answered by its key's record on retry.
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(err) => {
                let reason = err.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Unavailable::new("postgres", reason.clone())));
                }
            }
        }
    }
}

/// One batch in one transaction: committed whole, or rolled back whole.
async fn run_batch<B: Batch>(
    db: &Postgres,
    batch: &B,
    entries: &[B::Entry],
    retention: Duration,
) -> Result<Vec<Answer<B>>, Unavailable> {
    type Tm = AnsiTransactionManager;
    let mut conn = db.conn().await?;
    let tx: &mut AsyncPgConnection = &mut conn;
    Tm::begin_transaction(tx).await.map_err(unavailable)?;
    let answers = match claim_and_run(tx, batch, entries, retention).await {
        Ok(answers) => answers,
        Err(err) => {
            rollback_all(tx).await;
            return Err(match err {
                BatchError::Query(e) => unavailable(e),
                BatchError::Inconsistent(why) => {
                    tracing::error!(kind = B::KIND, %why, "a batch was rolled back");
                    unavailable(why)
                }
            });
        }
    };
    if let Err(e) = Tm::commit_transaction(tx).await {
        rollback_all(tx).await;
        return Err(unavailable(e));
    }
    Ok(answers)
}

/// Claims the batch's keys; the writes they do not answer run in `batch`.
///
/// The keys are try-locked first, alone: a record is read only under its
/// key's lock. Then the records and the batch's rows are read in one
/// pipeline (diesel-async sends the statements of futures polled together
/// without waiting for each answer; Postgres still runs them one after
/// another, in the order sent), so a batch costs a round trip for those
/// reads together rather than one each.
async fn claim_and_run<B: Batch>(
    tx: &mut AsyncPgConnection,
    batch: &B,
    entries: &[B::Entry],
    retention: Duration,
) -> Result<Vec<Answer<B>>, BatchError> {
    let requests: Vec<_> = entries.iter().map(B::request).collect();
    let locks = lock_keys(tx, &requests).await?;
    let (Claims { live, mut answers }, locked) = futures_util::future::try_join(
        read_records(tx, &requests, locks, retention),
        batch.lock(tx, entries),
    )
    .await?;
    if !live.is_empty() {
        batch.run(tx, entries, &live, locked, &mut answers).await?;
    }
    answers.all()
}
