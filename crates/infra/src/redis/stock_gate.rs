//! The Redis stock gate: a counter per product (`stock:{id}`) in front of
//! the order transaction.
//!
//! One Lua script checks every line of an order and then decrements them
//! all, or none, atomically on the Redis server: a sold-out product is
//! refused without a Postgres transaction. A missing counter (first order,
//! Redis restarted, an admin changed the stock) is rebuilt from Postgres by
//! one instance at a time (the `stock-rebuild:{id}` lock, `SET NX`).
//!
//! The counter may drift from Postgres: above it (a rebuild while orders are
//! in flight, a reservation given back after a rebuild), which Postgres'
//! guarded decrement absorbs; or below it (a reservation never given back
//! because its request died, a rebuild racing an admin's restock), which
//! would refuse sales Postgres could make. Every counter therefore lives at
//! most [`COUNTER_TTL`](super::COUNTER_TTL) and is then rebuilt from Postgres, and a product that
//! Postgres refuses is forgotten at once. In Redis Cluster, a
//! multi-product order's keys live in different slots; the script would then
//! reserve per product and give back the earlier ones on a refusal.

use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis::Script;
use diesel::OptionalExtension as _;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::catalog::ProductId;
use domain::error::Unavailable;
use domain::ordering::{GateDecision, GateHolder, Quantity, StockGate};

use super::counter::{Counters, Rebuilt};
use super::{RedisKeys, unavailable};
use crate::postgres::{Postgres, unavailable as pg_unavailable};

/// KEYS: the line counters, then the holder's marker; ARGV: the quantities,
/// then the marker's lifetime in ms.
/// `{2, 0}`: the holder came through a moment ago; `{-1, i}`: counter i is
/// missing; `{0, i}`: counter i is too low; `{1, 0}`: every counter was
/// decremented and the holder marked.
const RESERVE: &str = r"
local n = #KEYS - 1
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return {2, 0} end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {-1, i} end
end
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i])) < tonumber(ARGV[i]) then return {0, i} end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[i], ARGV[i])
end
redis.call('SET', KEYS[n + 1], 1, 'PX', ARGV[n + 1])
return {1, 0}";

/// How long a holder's mark lasts: longer than an order can wait for its
/// batch, and than a client's quick retry takes.
pub const HOLDER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Gives back only to counters that still exist (a forgotten one is rebuilt
/// from Postgres, which never lost those units).
const RELEASE: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1";

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

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
    pub fn new(pool: Pool, keys: RedisKeys, pg: Postgres) -> Self {
        Self {
            counters: Counters::new(pool, keys, pg),
        }
    }

    fn key(&self, product: ProductId) -> String {
        self.counters.key(&format!("stock:{product}"))
    }

    /// Bypasses the gate, marking the holder as for a reservation, so that
    /// its retries are not refused while it is in flight.
    async fn bypass(&self, marker: &str) -> Result<GateDecision, Unavailable> {
        let mut conn = self.counters.connection().await?;
        let set: Option<String> = deadpool_redis::redis::cmd("SET")
            .arg(marker)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(HOLDER_TTL.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(if set.is_some() {
            GateDecision::Bypass
        } else {
            GateDecision::Repeated
        })
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
        holder: GateHolder<'a>,
        lines: &[(ProductId, Quantity)],
    ) -> Result<GateDecision, Unavailable> {
        let mut keys: Vec<String> = lines.iter().map(|(p, _)| self.key(*p)).collect();
        let marker = self.counters.key(&format!(
            "order-holder:{}:{}",
            holder.user_id,
            holder.key.as_str()
        ));
        keys.push(marker.clone());
        let mut quantities: Vec<i64> = lines.iter().map(|(_, q)| q.get()).collect();
        let ttl_ms = i64::try_from(HOLDER_TTL.as_millis()).unwrap_or(i64::MAX);
        quantities.push(ttl_ms);
        // A few rounds at most: each round rebuilds one missing counter.
        for _ in 0..=lines.len() {
            let mut conn = self.counters.connection().await?;
            let mut script = RESERVE_SCRIPT.prepare_invoke();
            for key in &keys {
                script.key(key);
            }
            for q in &quantities {
                script.arg(*q);
            }
            let (status, index): (i64, usize) =
                script.invoke_async(&mut conn).await.map_err(unavailable)?;
            drop(conn);
            let product = index
                .checked_sub(1)
                .and_then(|i| lines.get(i))
                .map(|(p, _)| *p);
            match (status, product) {
                (1, _) => return Ok(GateDecision::Reserved),
                (2, _) => return Ok(GateDecision::Repeated),
                (0, Some(product)) => return Ok(GateDecision::SoldOut(product)),
                (-1, Some(product)) => match self.rebuild(product).await? {
                    Rebuilt::Ready => {}
                    Rebuilt::Unknown | Rebuilt::Busy => return self.bypass(&marker).await,
                },
                _ => return self.bypass(&marker).await,
            }
        }
        self.bypass(&marker).await
    }

    async fn release(&self, lines: &[(ProductId, Quantity)]) -> Result<(), Unavailable> {
        let mut conn = self.counters.connection().await?;
        let mut script = RELEASE_SCRIPT.prepare_invoke();
        for (product, quantity) in lines {
            script.key(self.key(*product));
            script.arg(quantity.get());
        }
        let _: i64 = script.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn forget(&self, product: ProductId) -> Result<(), Unavailable> {
        self.counters.forget(&self.key(product)).await
    }
}
