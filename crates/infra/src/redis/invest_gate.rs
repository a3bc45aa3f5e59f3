//! The Redis invest gate: per product, a counter of what can still be
//! invested (`invest:{id}:left`) in front of the investment transaction.
//!
//! One Lua script (shared with the stock gate, `counter.rs`) compares the
//! amount with the counter and takes it only if it fits, and marks the
//! investment's holder, atomically on the Redis server. A refusal leaves the
//! counter untouched. A copy of a request in flight (same user and key)
//! finds the mark and is never refused because its own first copy took
//! what was left. That is the point: with a plain `DECRBY` followed by "went
//! negative? give it back", a refused amount is taken for an instant, and an
//! investor arriving in that instant is refused although their amount fits
//! (see `docs/concurrency.md`). With the script, the counter only ever
//! holds what committed investments and reservations in flight leave over.
//!
//! A missing counter (first investment, Redis restarted) is rebuilt from
//! Postgres (`total_amount - current_amount`) by one instance at a time, and
//! lives at most [`COUNTER_TTL`](super::COUNTER_TTL). A counter above the truth
//! (a rebuild while investments were in flight) only admits more than
//! Postgres will take, and Postgres' guarded update refuses the excess; the
//! product is then forgotten and rebuilt. Distinct investors are not kept
//! here: they decide nothing at the gate, and Postgres counts them in the
//! same transaction as the amount.

use super::RedisPool;
use async_trait::async_trait;
use diesel::OptionalExtension as _;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};
use domain::invest::{InvestAmount, InvestGate, InvestProductId};
use domain::money::Points;

use super::counter::{Counters, Rebuilt};
use super::{RedisKeys, slots};
use crate::postgres::{Postgres, unavailable as pg_unavailable};

#[derive(Clone)]
pub struct RedisInvestGate {
    counters: Counters,
}

impl std::fmt::Debug for RedisInvestGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInvestGate")
            .field("prefix", &self.counters.prefix())
            .finish()
    }
}

impl RedisInvestGate {
    pub fn new(pool: RedisPool, keys: RedisKeys, pg: Postgres) -> Self {
        Self {
            counters: Counters::new(pool, keys, pg),
        }
    }

    /// The same gate with reservations that last `lease` unconfirmed
    /// (default [`RESERVATION_LEASE`](super::RESERVATION_LEASE)).
    #[must_use]
    pub fn leasing_for(self, lease: std::time::Duration) -> Self {
        Self {
            counters: self.counters.leasing_for(lease),
        }
    }

    fn key(&self, product: InvestProductId) -> String {
        slots::invest_left(self.counters.keys(), product)
    }

    /// Sets the counter to what Postgres says is left.
    async fn rebuild(&self, product: InvestProductId) -> Result<Rebuilt, Unavailable> {
        let load = || {
            let pg = self.counters.pg();
            pg.timed(async {
                use crate::postgres::schema_invest_products as p;
                let mut conn = pg.conn().await?;
                p::table
                    .find(product.get())
                    .select(p::total_amount - p::current_amount)
                    .first::<i64>(&mut *conn)
                    .await
                    .optional()
                    .map_err(pg_unavailable)
            })
        };
        self.counters
            .rebuild(
                &self.key(product),
                &format!("invest-rebuild:{product}"),
                load,
            )
            .await
    }
}

#[async_trait]
impl InvestGate for RedisInvestGate {
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<Admission<Points>, Unavailable> {
        let admission = self
            .counters
            .reserve(
                holder,
                "invest",
                &[(self.key(product), amount.get())],
                |_| self.rebuild(product),
            )
            .await?;
        Ok(admission.map_refusal(|short| Points::new(short.left).unwrap_or(Points::ZERO)))
    }

    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<(), Unavailable> {
        self.counters
            .release(holder, "invest", &[(self.key(product), amount.get())])
            .await
    }

    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<(), Unavailable> {
        self.counters
            .confirm(holder, "invest", &[(self.key(product), amount.get())])
            .await
    }

    async fn forget(&self, product: InvestProductId) -> Result<(), Unavailable> {
        self.counters.forget(&self.key(product)).await
    }
}
