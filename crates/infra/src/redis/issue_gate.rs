//! The Redis gate in front of coupon issue: per campaign, a counter of
//! codes left (`coupon:{id}:left`) and the set of users holding one
//! (`coupon:{id}:users`). One Lua script admits a user only if the counter is
//! positive and the user is not in the set, and takes one unit and adds the
//! user atomically: the late majority of a rush is refused without touching
//! Postgres.
//!
//! A hold is a lease (`coupon:{id}:leases`, users scored by deadline): the
//! issue confirms it after its commit or releases it; one nobody settled
//! by its deadline (its instance was killed) is given back by the next
//! reservation, in the same script, before it looks at the user or the
//! counter. Both keys are rebuilt from Postgres by one instance at a time
//! (lock), dropping the leases, and live at most
//! [`COUNTER_TTL`](super::COUNTER_TTL), so a gate that drifted otherwise
//! heals within that time.
//! Postgres (`FOR UPDATE SKIP LOCKED` and the unique index) stays the final
//! guard either way.

use std::sync::LazyLock;
use std::time::Duration;

use super::RedisPool;
use async_trait::async_trait;
use deadpool_redis::redis::{Script, cmd, pipe};
use diesel::QueryableByName;
use diesel::sql_types::Int8;
use diesel_async::RunQueryDsl;
use domain::coupon::{CampaignId, IssueGate, IssueRefusal};
use domain::error::Unavailable;
use domain::gate::{Admission, Holder};

use super::COUNTER_TTL;
use super::{RedisKeys, RedisLock, slots, unavailable};
use crate::postgres::{Postgres, prepared, unavailable as pg_unavailable};

/// KEYS: codes left, holders, leases; ARGV: the user, the lease in ms.
/// Expired holds are given back first. -1: not built; 2: already holds
/// one; 0: none left; 1: admitted under a lease.
const RESERVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', KEYS[3], user)
  if redis.call('SREM', KEYS[2], user) == 1 then redis.call('INCR', KEYS[1]) end
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 2 end
if tonumber(redis.call('GET', KEYS[1])) <= 0 then return 0 end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
return 1";

/// KEYS: codes left, holders, leases; ARGV: the user. Gives back a user's
/// hold once: only one whose lease is still there (an expired one was
/// given back already) and who is still in the set.
const RELEASE: &str = r"
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 1
  and redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('INCR', KEYS[1])
end
return 1";

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

#[derive(Clone)]
pub struct RedisIssueGate {
    pool: RedisPool,
    keys: RedisKeys,
    lock: RedisLock,
    pg: Postgres,
    /// How long a hold lasts unconfirmed.
    lease: Duration,
}

impl std::fmt::Debug for RedisIssueGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIssueGate")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = Int8)]
    owner_id: i64,
}

#[derive(QueryableByName)]
struct Left {
    #[diesel(sql_type = Int8)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    known: bool,
}

impl RedisIssueGate {
    pub fn new(pool: RedisPool, keys: RedisKeys, pg: Postgres) -> Self {
        let lock = RedisLock::new(pool.clone(), keys.clone());
        Self {
            pool,
            keys,
            lock,
            pg,
            lease: super::RESERVATION_LEASE,
        }
    }

    /// The same gate with holds that last `lease` unconfirmed.
    #[must_use]
    pub fn leasing_for(self, lease: Duration) -> Self {
        Self { lease, ..self }
    }

    fn leases_key(&self, campaign: CampaignId) -> String {
        super::counter::leases_of(&self.left_key(campaign))
    }
    fn left_key(&self, campaign: CampaignId) -> String {
        slots::coupon_left(&self.keys, campaign)
    }

    fn users_key(&self, campaign: CampaignId) -> String {
        slots::coupon_users(&self.keys, campaign)
    }

    /// Builds both keys from Postgres; `false` when another instance is at it.
    async fn rebuild(&self, campaign: CampaignId) -> Result<bool, Unavailable> {
        let Some(lease) = self
            .lock
            .try_acquire(
                &format!("coupon-rebuild:{campaign}"),
                Duration::from_secs(10),
            )
            .await?
        else {
            // Someone else is rebuilding: wait for the counter briefly.
            for _ in 0..100 {
                let mut conn = self.pool.get().await.map_err(unavailable)?;
                let exists: bool = cmd("EXISTS")
                    .arg(self.left_key(campaign))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if exists {
                    return Ok(true);
                }
                drop(conn);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Ok(false);
        };
        let counts = self
            .pg
            .timed(async {
                let mut conn = self.pg.conn().await?;
                let left: Left = prepared(
                    "SELECT (SELECT count(*) FROM coupons WHERE campaign_id = $1 AND owner_id IS NULL) AS n, \
                            EXISTS (SELECT 1 FROM coupon_campaigns WHERE id = $2) AS known",
                )
                .bind::<Int8, _>(campaign.get())
                .bind::<Int8, _>(campaign.get())
                .get_result(&mut *conn)
                .await
                .map_err(pg_unavailable)?;
                if !left.known {
                    return Ok(None);
                }
                let owners: Vec<Owner> = prepared(
                    "SELECT owner_id FROM coupons WHERE campaign_id = $1 AND owner_id IS NOT NULL",
                )
                .bind::<Int8, _>(campaign.get())
                .load(&mut *conn)
                .await
                .map_err(pg_unavailable)?;
                Ok::<_, Unavailable>(Some((left.n, owners)))
            })
            .await;
        let result = match counts {
            // An unknown campaign is left to the use case, which says so.
            Ok(None) => Ok(false),
            Ok(Some((left, owners))) => {
                let (left_key, users_key) = (self.left_key(campaign), self.users_key(campaign));
                let mut batch = pipe();
                batch
                    .atomic()
                    .cmd("DEL")
                    .arg(&users_key)
                    .arg(self.leases_key(campaign))
                    .ignore();
                for chunk in owners.chunks(1_000) {
                    batch
                        .cmd("SADD")
                        .arg(&users_key)
                        .arg(chunk.iter().map(|o| o.owner_id).collect::<Vec<_>>())
                        .ignore();
                }
                batch
                    .cmd("EXPIRE")
                    .arg(&users_key)
                    .arg(COUNTER_TTL.as_secs() + 5)
                    .ignore();
                // The counter last: its existence means "built".
                batch
                    .cmd("SET")
                    .arg(&left_key)
                    .arg(left)
                    .arg("EX")
                    .arg(COUNTER_TTL.as_secs())
                    .ignore();
                let mut conn = self.pool.get().await.map_err(unavailable)?;
                batch
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)
                    .map(|()| true)
            }
            Err(e) => Err(e),
        };
        let _ = lease.release().await;
        result
    }
}

#[async_trait]
impl IssueGate for RedisIssueGate {
    async fn reserve<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<Admission<IssueRefusal>, Unavailable> {
        for _ in 0..2 {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            let decision: i64 = RESERVE_SCRIPT
                .key(self.left_key(campaign))
                .key(self.users_key(campaign))
                .key(self.leases_key(campaign))
                .arg(holder.user_id.get())
                .arg(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            drop(conn);
            match decision {
                1 => return Ok(Admission::Reserved),
                0 => return Ok(Admission::Refused(IssueRefusal::SoldOut)),
                2 => return Ok(Admission::Refused(IssueRefusal::AlreadyIssued)),
                _ => {
                    if !self.rebuild(campaign).await? {
                        return Ok(Admission::Bypass);
                    }
                }
            }
        }
        Ok(Admission::Bypass)
    }

    async fn release<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let _: i64 = RELEASE_SCRIPT
            .key(self.left_key(campaign))
            .key(self.users_key(campaign))
            .key(self.leases_key(campaign))
            .arg(holder.user_id.get())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn confirm<'a>(
        &self,
        holder: Holder<'a>,
        campaign: CampaignId,
    ) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let _: i64 = cmd("ZREM")
            .arg(self.leases_key(campaign))
            .arg(holder.user_id.get())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn forget(&self, campaign: CampaignId) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let _: i64 = cmd("DEL")
            .arg(self.left_key(campaign))
            .arg(self.users_key(campaign))
            .arg(self.leases_key(campaign))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
