//! The [`PointsStore`] on Postgres: wallets, their ledger, and idempotent charges.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Int8;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::idempotency::{
    Fingerprint, IdempotencyKey, IdempotencyStore, IdempotentOutcome, IdempotentRequest, Record,
    StoredResponse, Written,
};
use domain::identity::UserId;
use domain::money::Points;
use domain::paging::{Page, PageRequest};
use domain::points::{
    ChargeAmount, ChargeError, ChargeReceipt, LedgerEntry, LedgerKind, MAX_BALANCE, PointsStore,
    Wallet,
};

use super::idempotency;
use super::paging::page_of;
use super::prepared::prepared;
use super::schema::{point_ledger, wallets};
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgPointsStore {
    db: Postgres,
    /// How long a stored idempotent response is replayed.
    retention: Duration,
}

impl std::fmt::Debug for PgPointsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPointsStore")
            .field("retention", &self.retention)
            .finish()
    }
}

impl PgPointsStore {
    pub fn new(db: Postgres, retention: Duration) -> Self {
        Self { db, retention }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = point_ledger, check_for_backend(diesel::pg::Pg))]
struct LedgerRow {
    id: i64,
    kind: String,
    amount: i64,
    balance_after: i64,
    order_id: Option<i64>,
    created_at: DateTime<Utc>,
}

impl LedgerRow {
    fn into_entry(self) -> Result<LedgerEntry, Unavailable> {
        let corrupt = || unavailable(format!("point_ledger row {} is invalid", self.id));
        Ok(LedgerEntry {
            id: self.id,
            kind: LedgerKind::parse(&self.kind).ok_or_else(corrupt)?,
            amount: Points::new(self.amount).ok_or_else(corrupt)?,
            balance_after: Points::new(self.balance_after).ok_or_else(corrupt)?,
            order_id: self.order_id,
            created_at: self.created_at,
        })
    }
}

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = Int8)]
    balance: i64,
}

/// Adds `amount` unless the balance would pass `max`; `None` when refused.
/// One statement: creates the wallet on the first charge, and the guard in
/// `WHERE` makes the check and the write one atomic step.
async fn add_to_wallet(
    conn: &mut diesel_async::AsyncPgConnection,
    user_id: i64,
    amount: i64,
    max: i64,
) -> QueryResult<Option<i64>> {
    prepared(
        "INSERT INTO wallets (user_id, balance) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE \
            SET balance = wallets.balance + EXCLUDED.balance, updated_at = now() \
          WHERE wallets.balance + EXCLUDED.balance <= $3 \
         RETURNING balance",
    )
    .bind::<Int8, _>(user_id)
    .bind::<Int8, _>(amount)
    .bind::<Int8, _>(max)
    .get_result::<Balance>(conn)
    .await
    .optional()
    .map(|row| row.map(|b| b.balance))
}

#[async_trait]
impl PointsStore for PgPointsStore {
    async fn wallet(&self, user_id: UserId) -> Result<Wallet, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let balance: Option<i64> = wallets::table
                    .find(user_id.get())
                    .select(wallets::balance)
                    .first(&mut *conn)
                    .await
                    .optional()
                    .map_err(unavailable)?;
                let balance = Points::new(balance.unwrap_or(0))
                    .ok_or_else(|| unavailable(format!("wallet {user_id} is negative")))?;
                Ok(Wallet { user_id, balance })
            })
            .await
    }

    async fn history(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<LedgerEntry>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let mine = point_ledger::table.filter(point_ledger::user_id.eq(user_id.get()));
                let total: i64 = mine
                    .count()
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let rows = mine
                    .order(point_ledger::id.desc())
                    .offset(page.offset())
                    .limit(page.limit())
                    .select(LedgerRow::as_select())
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                page_of(rows, LedgerRow::into_entry, page, total)
            })
            .await
    }

    async fn charge(
        &self,
        amount: ChargeAmount,
        request: IdempotentRequest<ChargeReceipt, ChargeError>,
    ) -> Result<Written<ChargeReceipt, ChargeError>, Unavailable> {
        let request = &request;
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                idempotency::guarded(&mut conn, request, self.retention, async |tx| {
                    let user_id = request.user_id.get();
                    let charged = amount.points();
                    let Some(balance) =
                        add_to_wallet(tx, user_id, charged.get(), MAX_BALANCE.get()).await?
                    else {
                        return Ok(Err(ChargeError::BalanceLimitExceeded {
                            max: MAX_BALANCE.get(),
                        }));
                    };
                    diesel::insert_into(point_ledger::table)
                        .values((
                            point_ledger::user_id.eq(user_id),
                            point_ledger::kind.eq(LedgerKind::Charge.as_str()),
                            point_ledger::amount.eq(charged.get()),
                            point_ledger::balance_after.eq(balance),
                        ))
                        .execute(tx)
                        .await?;
                    Ok(Ok(ChargeReceipt {
                        user_id: request.user_id,
                        balance: Points::new(balance).unwrap_or(Points::ZERO),
                        charged,
                    }))
                })
                .await
            })
            .await
    }
}

/// The idempotency records: refusals decided before any effect, and the
/// purge of records past their retention.
#[derive(Clone)]
pub struct PgIdempotencyStore {
    db: Postgres,
    retention: Duration,
}

impl std::fmt::Debug for PgIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIdempotencyStore")
            .field("retention", &self.retention)
            .finish()
    }
}

#[async_trait]
impl IdempotencyStore for PgIdempotencyStore {
    async fn refuse(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        response: StoredResponse,
    ) -> Result<IdempotentOutcome, Unavailable> {
        // A key held for a moment (the writer behind storing this very
        // refusal, a batch about to commit the key's first request) is
        // waited for briefly, so the caller gets the key's answer rather
        // than IDEMPOTENCY_IN_PROGRESS; a key held longer is in progress.
        const WAITS_MS: [u64; 3] = [10, 20, 40];
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let mut waits = WAITS_MS.iter();
                loop {
                    let outcome = idempotency::refuse(
                        &mut conn,
                        user_id,
                        key,
                        fingerprint,
                        response.clone(),
                        self.retention,
                    )
                    .await?;
                    match (outcome, waits.next()) {
                        (IdempotentOutcome::InProgress, Some(ms)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
                        }
                        (outcome, _) => return Ok(outcome),
                    }
                }
            })
            .await
    }

    async fn record(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Record>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                idempotency::record(&mut conn, user_id, key, self.retention).await
            })
            .await
    }
}

impl PgIdempotencyStore {
    pub fn new(db: Postgres, retention: Duration) -> Self {
        Self { db, retention }
    }

    /// Writes refusals recorded at the fast path in one statement; says
    /// which were not written: those whose key had a record already, which
    /// keeps it, and those whose key a running transaction held.
    ///
    /// # Errors
    /// [`Unavailable`] when Postgres fails; nothing was written.
    pub(crate) async fn write_refusals(
        &self,
        rows: Vec<super::AnswerRow>,
    ) -> Result<super::RefusalsWritten, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                idempotency::write_refusals(&mut conn, rows)
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    /// Deletes every expired record, in batches so no statement runs long.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// [`Unavailable`] when Postgres fails.
    pub async fn purge(&self) -> Result<usize, Unavailable> {
        const BATCH: i64 = 5_000;
        let mut total = 0;
        loop {
            let deleted = self
                .db
                .timed(async {
                    let mut conn = self.db.conn().await?;
                    idempotency::purge_expired(&mut conn, self.retention, BATCH)
                        .await
                        .map_err(unavailable)
                })
                .await?;
            total += deleted;
            if i64::try_from(deleted).unwrap_or(0) < BATCH {
                return Ok(total);
            }
        }
    }
}
