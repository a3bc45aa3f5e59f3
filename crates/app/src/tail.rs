//! `app events tail`: prints the order events as they arrive, one JSON line
//! each on standard output, like a console consumer: from the Redis stream,
//! or with `--sink kafka` from the Kafka topic (`APP_KAFKA_BROKERS`).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use domain::events::Sink;
use infra::kafka::KafkaTopicReader;
use infra::redis::{RedisEventStream, RedisKeys};

use crate::config::Config;

/// Follows `sink` until `stop` resolves. With `from_start`, first prints
/// every event the sink still keeps.
///
/// # Errors
/// When the sink cannot be reached (Kafka: at start), when Kafka is not
/// configured, or when standard output is closed.
pub async fn events_tail(
    config: &Config,
    sink: Sink,
    from_start: bool,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    match sink {
        Sink::Stream => stream_tail(config, from_start, out, stop).await,
        Sink::Kafka => kafka_tail(config, from_start, out, stop).await,
    }
}

async fn kafka_tail(
    config: &Config,
    from_start: bool,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = config
        .kafka
        .as_ref()
        .context("--sink kafka needs APP_KAFKA_BROKERS")?;
    let reader = KafkaTopicReader::connect(settings)
        .await
        .context("connecting to Kafka")?;
    let mut next = Vec::with_capacity(reader.partitions());
    for partition in 0..reader.partitions() {
        next.push(
            reader
                .start_offset(partition, from_start)
                .await
                .context("reading the topic's offsets")?,
        );
    }
    tokio::pin!(stop);
    // Each partition in turn; each wait is short, so none starves the others.
    let wait = Duration::from_millis(200) / u32::try_from(next.len().max(1)).unwrap_or(1);
    loop {
        for (partition, offset) in next.iter_mut().enumerate() {
            let read = tokio::select! {
                read = reader.fetch(partition, *offset, wait) => read,
                () = &mut stop => return Ok(()),
            };
            match read {
                Ok(records) => {
                    for record in records {
                        writeln!(out, "{}", record.value).context("writing to standard output")?;
                        *offset = record.offset + 1;
                    }
                    out.flush().context("writing to standard output")?;
                }
                Err(err) => {
                    tracing::warn!(partition, error = %err, "cannot read the Kafka topic; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

async fn stream_tail(
    config: &Config,
    from_start: bool,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = config.redis_pool(2)?;
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
