//! The Redis invest gate: per product, a counter of what can still be
//! invested (`invest:{id}:left`) in front of the investment transaction.
//!
//! One Lua script compares the amount with the counter and takes it only if
//! it fits, atomically on the Redis server. A refusal leaves the counter
//! untouched. That is the point: with a plain `DECRBY` followed by "went
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

use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis::Script;
use diesel::OptionalExtension as _;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::invest::{InvestAdmission, InvestAmount, InvestGate, InvestProductId};
use domain::money::Points;

use super::counter::{Counters, Rebuilt};
use super::{RedisKeys, unavailable};
use crate::postgres::{Postgres, unavailable as pg_unavailable};

/// `{-1, 0}`: no counter; `{0, left}`: the amount does not fit (nothing
/// taken); `{1, left}`: taken, `left` remains.
const RESERVE: &str = r"
local left = redis.call('GET', KEYS[1])
if not left then return {-1, 0} end
left = tonumber(left)
local amount = tonumber(ARGV[1])
if left < amount then return {0, left} end
return {1, redis.call('DECRBY', KEYS[1], amount)}";

/// Gives back only to a counter that still exists (a forgotten one is
/// rebuilt from Postgres, which never took the amount).
const RELEASE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 1";

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

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
    pub fn new(pool: Pool, keys: RedisKeys, pg: Postgres) -> Self {
        Self {
            counters: Counters::new(pool, keys, pg),
        }
    }

    fn key(&self, product: InvestProductId) -> String {
        self.counters.key(&format!("invest:{product}:left"))
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
    async fn reserve(
        &self,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<InvestAdmission, Unavailable> {
        let key = self.key(product);
        // Two rounds at most: the second follows a rebuild.
        for _ in 0..2 {
            let mut conn = self.counters.connection().await?;
            let (status, left): (i64, i64) = RESERVE_SCRIPT
                .key(&key)
                .arg(amount.get())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            drop(conn);
            match status {
                1 => return Ok(InvestAdmission::Reserved),
                0 => {
                    return Ok(InvestAdmission::Refused {
                        remaining: Points::new(left).unwrap_or(Points::ZERO),
                    });
                }
                _ => match self.rebuild(product).await? {
                    Rebuilt::Ready => {}
                    Rebuilt::Unknown | Rebuilt::Busy => return Ok(InvestAdmission::Bypass),
                },
            }
        }
        Ok(InvestAdmission::Bypass)
    }

    async fn release(
        &self,
        product: InvestProductId,
        amount: InvestAmount,
    ) -> Result<(), Unavailable> {
        let mut conn = self.counters.connection().await?;
        let _: i64 = RELEASE_SCRIPT
            .key(self.key(product))
            .arg(amount.get())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn forget(&self, product: InvestProductId) -> Result<(), Unavailable> {
        self.counters.forget(&self.key(product)).await
    }
}
