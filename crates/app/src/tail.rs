//! `app events tail`: prints the order events from the Redis stream as they
//! arrive, one JSON line each on standard output, like a console consumer.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use infra::redis::{RedisEventStream, RedisKeys, RedisPoolSettings, connect_pool};

use crate::config::Config;

/// Follows the stream until `stop` resolves. With `from_start`, first prints
/// every entry still in the stream.
///
/// # Errors
/// When Redis cannot be reached or standard output is closed.
pub async fn events_tail(
    config: &Config,
    from_start: bool,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = connect_pool(&RedisPoolSettings {
        url: config.redis_url.clone(),
        max_size: 2,
        timeout: config.dependency_timeout,
    })?;
    let stream = RedisEventStream::new(
        pool,
        &RedisKeys::new(config.redis_key_prefix.clone()),
        config.events_max_len,
    );
    tokio::pin!(stop);
    let mut last = loop {
        if from_start {
            break "0".to_owned();
        }
        let newest = tokio::select! {
            newest = stream.last_id() => newest,
            () = &mut stop => return Ok(()),
        };
        match newest {
            Ok(id) => break id,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the event stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let read = tokio::select! {
            read = stream.read_after(&last, Duration::from_secs(2), 100) => read,
            () = &mut stop => return Ok(()),
        };
        match read {
            Ok(entries) => {
                for entry in entries {
                    writeln!(out, "{}", entry.payload).context("writing to standard output")?;
                    last = entry.id;
                }
                out.flush().context("writing to standard output")?;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the event stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
