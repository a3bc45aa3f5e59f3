//! The order event stream on Redis (`events:orders`): appended to by the
//! outbox relay, read by consumers (the popular-products ranking, `app
//! events tail`). Each entry has the fields `payload` (the event JSON),
//! `eventId` and `type`.

use std::time::Duration;

use super::RedisPool;
use async_trait::async_trait;
use deadpool_redis::redis::{cmd, pipe};
use domain::error::Unavailable;
use domain::events::{EventSink, OutboxEvent};
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::{RedisKeys, unavailable};

/// The longest a blocking read waits: well below the pool's reply timeout
/// (`APP_DEPENDENCY_TIMEOUT`, at least 500 ms in tests), so a loaded server
/// still answers in time.
const MAX_BLOCK: Duration = Duration::from_millis(200);

/// The stream's name, before the deployment's key prefix.
pub const ORDER_EVENTS: &str = "events:orders";

#[derive(Clone)]
pub struct RedisEventStream {
    pool: RedisPool,
    key: String,
    /// Approximate cap on the stream's length (`XADD MAXLEN ~`).
    max_len: usize,
}

impl std::fmt::Debug for RedisEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStream")
            .field("key", &self.key)
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub payload: String,
}

impl RedisEventStream {
    pub fn new(pool: RedisPool, keys: &RedisKeys, max_len: usize) -> Self {
        Self {
            pool,
            key: keys.key(ORDER_EVENTS),
            max_len,
        }
    }

    /// The stream's full key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Entries after `last_id` (`"0"` for all),
    /// waiting up to `block` for the first. The wait is capped at 200 ms,
    /// below the pool's reply timeout, so callers poll.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn read_after(
        &self,
        last_id: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let options = StreamReadOptions::default()
            .block(usize::try_from(block.min(MAX_BLOCK).as_millis()).unwrap_or(0))
            .count(count);
        let reply: Option<StreamReadReply> =
            redis::AsyncCommands::xread_options(&mut conn, &[&self.key], &[last_id], &options)
                .await
                .map_err(unavailable)?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| StreamEntry {
                payload: entry.get::<String>("payload").unwrap_or_default(),
                id: entry.id,
            })
            .collect())
    }

    /// The id of the newest entry (`"0-0"` for an empty stream), to follow
    /// the stream from now on without missing entries between two reads, as
    /// re-sending `$` would.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn last_id(&self) -> Result<String, Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let newest: Vec<(String, Vec<(String, String)>)> = cmd("XREVRANGE")
            .arg(&self.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    /// The number of entries in the stream.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis fails.
    pub async fn entry_count(&self) -> Result<u64, Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl EventSink for RedisEventStream {
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), Unavailable> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let mut batch = pipe();
        for event in events {
            batch
                .cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg("payload")
                .arg(&event.payload)
                .arg("eventId")
                .arg(&event.event_id)
                .arg("type")
                .arg(&event.event_type)
                .ignore();
        }
        batch
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}
