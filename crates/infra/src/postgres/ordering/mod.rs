//! The [`OrderStore`] on Postgres: orders are combined into batches, one
//! transaction each, under the idempotency guard.
//!
//! `place` hands the order to one of [`LANES`] lanes, chosen by its first
//! product, and waits for its answer. A lane runs one batch at a time: the
//! orders that arrived while the previous batch ran (up to [`MAX_BATCH`])
//! go into one transaction ([`batch`]). An order that arrives at an idle
//! lane is a batch of one and waits for nobody; a sale's orders for one hot
//! product queue on one lane and share its lock wait and its commit instead
//! of queueing on the product's row lock.
//!
//! Each order is still decided on its own, answered on its own, and durable
//! before it is answered: the reply is sent after the batch commits.
//!
//! The files of this adapter import each other in one direction only:
//! `batch` (the steps of one batch) uses `keys` (claim the idempotency
//! keys), `lock` (lock the rows, load the domain's books), `rows` (one
//! struct per table row) and `write` (the one statement, which uses `rows`);
//! `rows` uses `event` (the outbox payload). `read` serves `get` and `list`,
//! and `error` (why a batch fails) is used by all the steps.

mod batch;
mod error;
mod event;
mod keys;
mod lock;
mod read;
mod rows;
mod write;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use domain::error::Unavailable;
use domain::idempotency::IdempotentRequest;
use domain::identity::UserId;
use domain::ordering::{Order, OrderId, OrderStore, PlaceOrderError, PricedOrder};
use domain::paging::{Page, PageRequest};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use self::batch::{Entry, Placed, place_batch};
use self::error::BatchError;
use super::idempotency::rollback_all;
use super::{Postgres, unavailable};

/// How many batches run at once. An order's lane is its lowest product id
/// modulo this, so a sale's orders of one product share a lane; other orders
/// spread over the lanes. Batches of different lanes may lock the same rows
/// and then wait for each other, in one lock order, so never in a cycle.
/// Each running batch holds one connection of the lanes' pool.
pub const LANES: usize = 4;

/// The most orders in one transaction: bounds a batch's statement sizes and
/// the time its first order waits for its last.
pub const MAX_BATCH: usize = 128;

/// Orders waiting for a lane; past this, `place` waits to hand one over.
const LANE_QUEUE: usize = 1024;

/// An order and where its answer goes.
struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<Placed, Unavailable>>,
}

#[derive(Clone)]
pub struct PgOrderStore {
    db: Postgres,
    lanes: Arc<[mpsc::Sender<Job>]>,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgOrderStore")
    }
}

impl PgOrderStore {
    /// Reads through `db`; runs the batches on `lanes`, which should be a
    /// pool of its own with [`LANES`] connections, so that a burst of reads
    /// never keeps a batch waiting for a connection (and the lanes' prepared
    /// statements stay warm). Starts the lanes on the current Tokio runtime;
    /// they stop when the store and its clones are dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(db: Postgres, lanes: &Postgres, retention: Duration) -> Self {
        let lanes: Vec<mpsc::Sender<Job>> = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                tokio::spawn(run_lane(lanes.clone(), retention, rx));
                tx
            })
            .collect();
        Self {
            db,
            lanes: lanes.into(),
        }
    }
}

/// The lane of an order: by its lowest product id (lines are in product-id order).
fn lane_of(order: &PricedOrder) -> usize {
    let first = order
        .lines
        .as_slice()
        .first()
        .map_or(0, |l| l.product_id.get());
    usize::try_from(first.rem_euclid(LANES as i64)).unwrap_or(0)
}

/// Runs the lane's batches until the store is dropped.
async fn run_lane(db: Postgres, retention: Duration, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A caller that gave up waiting (it answered 503, or its client left)
        // must not be charged later: its order is dropped before it runs.
        let (entries, replies): (Vec<Entry>, Vec<_>) = jobs
            .drain(..)
            .filter(|job| !job.reply.is_closed())
            .map(|job| (job.entry, job.reply))
            .unzip();
        if entries.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        // A panic in a batch must not stop the lane for good.
        let answers = AssertUnwindSafe(db.timed(run_batch(&db, &entries, retention)))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("an order batch panicked; its orders answer 503");
                Err(Unavailable::new("postgres", "the order batch failed"))
            });
        tracing::debug!(
            orders = entries.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answers.is_ok(),
            "order batch"
        );
        match answers {
            Ok(placements) => {
                for (reply, placement) in replies.into_iter().zip(placements) {
                    // A caller that gave up is answered by its key's record on retry.
                    let _ = reply.send(Ok(placement));
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
async fn run_batch(
    db: &Postgres,
    entries: &[Entry],
    retention: Duration,
) -> Result<Vec<Placed>, Unavailable> {
    type Tm = AnsiTransactionManager;
    let mut conn = db.conn().await?;
    let tx: &mut AsyncPgConnection = &mut conn;
    Tm::begin_transaction(tx).await.map_err(unavailable)?;
    match place_batch(tx, entries, retention).await {
        Ok(placements) => {
            if let Err(e) = Tm::commit_transaction(tx).await {
                rollback_all(tx).await;
                return Err(unavailable(e));
            }
            Ok(placements)
        }
        Err(err) => {
            rollback_all(tx).await;
            Err(match err {
                BatchError::Query(e) => unavailable(e),
                BatchError::Inconsistent(why) => {
                    tracing::error!(%why, "an order batch was rolled back");
                    unavailable(why)
                }
            })
        }
    }
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn place(
        &self,
        order: PricedOrder,
        request: IdempotentRequest<Order, PlaceOrderError>,
    ) -> Result<Placed, Unavailable> {
        let lane = &self.lanes[lane_of(&order)];
        let (reply, answer) = oneshot::channel();
        self.db
            .timed(async {
                lane.send(Job {
                    entry: Entry { order, request },
                    reply,
                })
                .await
                .map_err(|_| unavailable("the order lane has stopped"))?;
                answer
                    .await
                    .map_err(|_| unavailable("the order lane dropped an order"))?
            })
            .await
    }

    async fn get(&self, user_id: UserId, id: OrderId) -> Result<Option<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                read::find(&mut conn, user_id, id).await
            })
            .await
    }

    async fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                read::page(&mut conn, user_id, page).await
            })
            .await
    }
}
