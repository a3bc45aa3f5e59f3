//! The Redis stock gate: a counter per product (`stock:{id}`) in front of
//! the order transaction.
//!
//! One Lua script (shared with the invest gate, `counter.rs`) checks every
//! line of an order and then decrements them all, or none, and marks the
//! order's holder, atomically on the Redis server: a sold-out product is
//! refused without a Postgres transaction. A missing counter (first order,
//! Redis restarted, an admin changed the stock) is rebuilt from Postgres by
//! one instance at a time (the `stock-rebuild:{id}` lock, `SET NX`).
//!
//! The counter may drift from Postgres: above it (a rebuild while orders are
//! in flight, an order slower than its lease), which Postgres' guarded
//! decrement absorbs; or below it (a rebuild racing an admin's restock),
//! which would refuse sales Postgres could make. A reservation whose
//! request died (its instance killed) is a lease, given back within
//! [`RESERVATION_LEASE`](super::RESERVATION_LEASE). Every counter lives at
//! most [`COUNTER_TTL`](super::COUNTER_TTL) and is then rebuilt from Postgres, and a product that
//! Postgres refuses is forgotten at once. On a Redis Cluster, a
//! multi-product order's counters live in different slots: the order is
//! then reserved product by product, and a refusal gives back the earlier
//! ones (`counter.rs`).

use super::RedisPool;
use async_trait::async_trait;
use diesel::OptionalExtension as _;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::catalog::ProductId;
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};
use domain::ordering::{Quantity, StockGate};

use super::counter::{Counters, Rebuilt};
use super::refusals::RedisRefusals;
use super::{RedisKeys, slots};
use crate::postgres::{Postgres, unavailable as pg_unavailable};

#[derive(Clone)]
pub struct RedisStockGate {
    counters: Counters,
}

impl std::fmt::Debug for RedisStockGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStockGate")
            .field("prefix", &self.counters.prefix())
            .finish()
    }
}

impl RedisStockGate {
    pub fn new(pool: RedisPool, keys: RedisKeys, pg: Postgres) -> Self {
        Self {
            counters: Counters::new(pool, keys, pg),
        }
    }

    /// The same gate, recording a refused order's answer under its key in
    /// the reservation's own script, when the order carries its answers
    /// (`domain::gate::RefusalAnswers`), and queueing it on `refusals` for
    /// Postgres: one Redis round trip for a refusal instead of two.
    #[must_use]
    pub fn recording_on(self, refusals: RedisRefusals) -> Self {
        Self {
            counters: self.counters.recording_on(refusals),
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

    fn key(&self, product: ProductId) -> String {
        slots::stock(self.counters.keys(), product)
    }

    fn amounts(&self, lines: &[(ProductId, Quantity)]) -> Vec<(String, i64)> {
        lines.iter().map(|(p, q)| (self.key(*p), q.get())).collect()
    }

    /// Sets the counter from the product's stock in Postgres.
    async fn rebuild(&self, product: ProductId) -> Result<Rebuilt, Unavailable> {
        let load = || {
            let pg = self.counters.pg();
            pg.timed(async {
                use crate::postgres::schema_products as products;
                let mut conn = pg.conn().await?;
                products::table
                    .find(product.get())
                    .select(products::stock)
                    .first::<i64>(&mut *conn)
                    .await
                    .optional()
                    .map_err(pg_unavailable)
            })
        };
        self.counters
            .rebuild(
                &self.key(product),
                &format!("stock-rebuild:{product}"),
                load,
            )
            .await
    }
}

#[async_trait]
impl StockGate for RedisStockGate {
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<Admission<ProductId>, Unavailable> {
        let admission = self
            .counters
            .reserve(holder, "order", &self.amounts(lines), |index| {
                self.rebuild(lines[index].0)
            })
            .await?;
        Ok(admission.map_refusal(|short| lines[short.index].0))
    }

    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<(), Unavailable> {
        self.counters
            .release(holder, "order", &self.amounts(lines))
            .await
    }

    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<(), Unavailable> {
        self.counters
            .confirm(holder, "order", &self.amounts(lines))
            .await
    }

    async fn forget(&self, product: ProductId) -> Result<(), Unavailable> {
        self.counters.forget(&self.key(product)).await
    }
}
