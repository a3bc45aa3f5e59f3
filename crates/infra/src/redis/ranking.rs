//! The popular-products ranking on Redis, fed by the order event stream.
//!
//! A consumer group (`popular`) reads `events:orders`; each event adds its
//! items' quantities to the sorted set of the hour it happened in
//! (`popular:{h}:YYYYMMDDHH`, kept 73 h). The add and a `popular:{h}:seen:<eventId>`
//! marker are one Lua script, so an event delivered twice (the relay is
//! at-least-once) counts once. Reading sums the last 72 hourly sets.
//!
//! The window is counted in whole hours: it covers the current hour and the
//! 71 before it. The Postgres fallback counts the exact 72 hours.

use std::sync::LazyLock;

use super::RedisPool;
use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, Utc};
use deadpool_redis::redis::{Script, Value, cmd};
use domain::catalog::{POPULAR_WINDOW_HOURS, ProductId, ProductSales, SalesRanking, rank};
use domain::error::Unavailable;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};
use serde::Deserialize;

use super::stream::ORDER_EVENTS;
use super::{RedisKeys, slots, unavailable};

const GROUP: &str = "popular";
/// Dedupe markers live longer than the window an event can count in.
const SEEN_TTL_SECS: i64 = 4 * 24 * 3600;
const BUCKET_TTL_SECS: i64 = (POPULAR_WINDOW_HOURS + 1) * 3600;

/// KEYS: seen marker, hour bucket. ARGV: seen ttl, bucket ttl, then
/// (product id, quantity) pairs. Returns 1 when counted, 0 for a duplicate.
const COUNT_ONCE: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  for i = 3, #ARGV, 2 do
    redis.call('ZINCRBY', KEYS[2], ARGV[i + 1], ARGV[i])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0";

static COUNT_ONCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COUNT_ONCE));

#[derive(Clone)]
pub struct RedisSalesRanking {
    pool: RedisPool,
    keys: RedisKeys,
    stream: String,
}

impl std::fmt::Debug for RedisSalesRanking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSalesRanking")
            .field("stream", &self.stream)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaidEvent {
    #[serde(rename = "type")]
    kind: String,
    event_id: String,
    occurred_at: DateTime<Utc>,
    items: Vec<PaidItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaidItem {
    product_id: i64,
    quantity: i64,
}

fn bucket(keys: &RedisKeys, at: DateTime<Utc>) -> String {
    slots::popular_hour(keys, &at.format("%Y%m%d%H").to_string())
}

impl RedisSalesRanking {
    pub fn new(pool: RedisPool, keys: RedisKeys) -> Self {
        let stream = keys.key(ORDER_EVENTS);
        Self { pool, keys, stream }
    }

    /// Creates the consumer group (from the start of the stream) if missing.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn ensure_group(&self) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let created: Result<(), _> = cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Reads up to `count` new events as `consumer`, counts each once, and
    /// acknowledges them. Returns how many events were handled.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails (unacknowledged events are read again).
    pub async fn consume(&self, consumer: &str, count: usize) -> Result<usize, Unavailable> {
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(count)
            .block(300);
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let reply: Option<StreamReadReply> =
            redis::AsyncCommands::xread_options(&mut conn, &[&self.stream], &[">"], &options)
                .await
                .map_err(unavailable)?;
        drop(conn);
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        for entry in &entries {
            let payload: String = entry.get("payload").unwrap_or_default();
            self.count_once(&payload).await?;
            self.ack(&entry.id).await?;
        }
        Ok(entries.len())
    }

    /// Takes over events another consumer read but left unacknowledged for
    /// `min_idle` (it died), and counts them. Returns how many.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: std::time::Duration,
    ) -> Result<usize, Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let reply: StreamAutoClaimReply = redis::AsyncCommands::xautoclaim_options(
            &mut conn,
            &self.stream,
            GROUP,
            consumer,
            usize::try_from(min_idle.as_millis()).unwrap_or(60_000),
            "0-0",
            StreamAutoClaimOptions::default().count(100),
        )
        .await
        .map_err(unavailable)?;
        drop(conn);
        for entry in &reply.claimed {
            let payload: String = entry.get("payload").unwrap_or_default();
            self.count_once(&payload).await?;
            self.ack(&entry.id).await?;
        }
        Ok(reply.claimed.len())
    }

    async fn ack(&self, id: &str) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let _: i64 = cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Adds one event's quantities unless its id was counted before.
    async fn count_once(&self, payload: &str) -> Result<bool, Unavailable> {
        let Ok(event) = serde_json::from_str::<PaidEvent>(payload) else {
            tracing::warn!("skipping an unreadable event in the order stream");
            return Ok(false);
        };
        if event.kind != "order.paid" {
            // Other order events are not sales.
            return Ok(false);
        }
        let mut script = COUNT_ONCE_SCRIPT.prepare_invoke();
        script
            .key(slots::popular_seen(&self.keys, &event.event_id))
            .key(bucket(&self.keys, event.occurred_at))
            .arg(SEEN_TTL_SECS)
            .arg(BUCKET_TTL_SECS);
        for item in &event.items {
            script.arg(item.product_id).arg(item.quantity);
        }
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let counted: i64 = script.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(counted == 1)
    }
}

#[async_trait]
impl SalesRanking for RedisSalesRanking {
    async fn top(&self, limit: usize) -> Result<Vec<ProductSales>, Unavailable> {
        let now = Utc::now();
        let buckets: Vec<String> = (0..POPULAR_WINDOW_HOURS)
            .map(|h| bucket(&self.keys, now - Span::hours(h)))
            .collect();
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let reply: Value = cmd("ZUNION")
            .arg(buckets.len())
            .arg(&buckets)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let pairs: Vec<(String, f64)> = redis::from_redis_value(reply).map_err(unavailable)?;
        let sales = pairs
            .into_iter()
            .filter_map(|(member, score)| {
                #[allow(clippy::cast_possible_truncation)]
                let sold = score.round() as i64;
                Some(ProductSales {
                    product_id: ProductId::new(member.parse().ok()?),
                    sold,
                })
            })
            .collect();
        Ok(rank(sales, limit))
    }
}
