//! Order events on Kafka, for the data platform: the outbox relay's second
//! [`EventSink`], on when `APP_KAFKA_BROKERS` is set.
//!
//! - Topic `order-events` (created when missing, with the configured number
//!   of partitions). Each record is keyed by its order's id and placed by
//!   Kafka's own default partitioner (murmur2 of the key), so a Java or
//!   Python producer would put the same order on the same partition; its
//!   value is the same JSON as the Redis stream entry's `payload`, and it
//!   carries the headers `eventId` and `type`.
//! - Delivery is at least once, in commit order per key: a relay appends a
//!   batch, partition by partition, each partition's records in outbox
//!   order, and marks the batch published only when every partition has
//!   acknowledged it. `rskafka` has no idempotent producer, so a batch sent
//!   again after a failure may appear twice: consumers dedupe on the
//!   `eventId` header, as they do on the stream.
//! - The client connects lazily and again after any failure (a broker that
//!   restarted may have lost the topic, which is then created again). Every
//!   call is bounded by the configured timeout; the relay backs off and the
//!   events wait in the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::error::Unavailable;
use domain::events::{EventSink, OutboxEvent};
use futures_util::future::try_join_all;
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tokio::sync::Mutex;

/// The topic the data platform reads.
pub const ORDER_EVENTS_TOPIC: &str = "order-events";

/// The largest fetch a reader asks for; whole batches fit in it.
const FETCH_MAX_BYTES: i32 = 8 * 1024 * 1024;

/// The most record bytes one produce call carries: below a broker's
/// default message limit (1 MB), so a backlog of large orders is sent in
/// several calls instead of being refused whole, again and again.
const PRODUCE_MAX_BYTES: usize = 512 * 1024;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic when this service creates it.
    pub partitions: i32,
    /// Replication factor of the topic when this service creates it.
    pub replication: i16,
    /// The longest one connect, produce or fetch may take.
    pub timeout: Duration,
}

impl KafkaSettings {
    /// The settings for `brokers` (comma-separated `host:port` list), with
    /// the topic `order-events`.
    pub fn new(brokers: &str, partitions: i32, replication: i16, timeout: Duration) -> Self {
        Self {
            brokers: brokers
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
                .collect(),
            topic: ORDER_EVENTS_TOPIC.to_owned(),
            partitions,
            replication,
            timeout,
        }
    }
}

fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Unavailable {
    Unavailable::new("kafka", err)
}

/// Runs `call` within the settings' timeout.
async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, KafkaError>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(unavailable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// A connected client and one partition client per partition of the topic,
/// indexed by partition id.
struct Connected {
    partitions: Vec<PartitionClient>,
}

/// Connects, creates the topic when it is missing, and opens every
/// partition.
async fn connect(settings: &KafkaSettings) -> Result<Connected, Unavailable> {
    let timeout = settings.timeout;
    let client: Client = bounded(
        timeout,
        ClientBuilder::new(settings.brokers.clone())
            .client_id("points-service")
            // rskafka retries forever by default; the relay has its own
            // backoff, so a call gives up within the timeout.
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
                deadline: Some(timeout),
            })
            .build(),
    )
    .await?;
    let mut count = topic_partitions(&client, settings).await?;
    if count.is_none() {
        let controller = client.controller_client().map_err(unavailable)?;
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let created = tokio::time::timeout(
            timeout,
            controller.create_topic(
                settings.topic.clone(),
                settings.partitions,
                settings.replication,
                timeout_ms,
            ),
        )
        .await
        .map_err(|_| unavailable("creating the topic took too long"))?;
        match created {
            Ok(()) => tracing::info!(
                topic = %settings.topic,
                partitions = settings.partitions,
                "created the Kafka topic"
            ),
            // Another instance created it meanwhile.
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => {}
            Err(err) => return Err(unavailable(err)),
        }
        count = topic_partitions(&client, settings).await?;
    }
    // A topic just created may not list its partitions yet: try again
    // later rather than guess how many it has.
    let count = count.ok_or_else(|| unavailable("the topic lists no partitions yet"))?;
    let mut partitions = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for partition in 0..count {
        partitions.push(
            bounded(
                timeout,
                client.partition_client(
                    settings.topic.clone(),
                    partition,
                    UnknownTopicHandling::Retry,
                ),
            )
            .await?,
        );
    }
    Ok(Connected { partitions })
}

/// The topic's partition count, or `None` when it does not exist.
async fn topic_partitions(
    client: &Client,
    settings: &KafkaSettings,
) -> Result<Option<i32>, Unavailable> {
    let topics = bounded(settings.timeout, client.list_topics()).await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == settings.topic)
        .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
        .filter(|n| *n > 0))
}

/// Kafka's default partitioner: `murmur2(key) & 0x7fffffff % partitions`
/// (`org.apache.kafka.common.utils.Utils.murmur2`, also kafka-python's), so
/// this service places a key where any ordinary producer would.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    let positive = murmur2(key) & 0x7fff_ffff;
    usize::try_from(positive).unwrap_or(0) % partitions.max(1)
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes an int length; keys here are far below 2^32 bytes.
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// `records` in order, cut into runs of at most `max_bytes` each (a record
/// larger than that goes alone).
fn chunks(records: Vec<Record>, max_bytes: usize) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut size = 0;
    for record in records {
        let bytes = record.approximate_size();
        match out.last_mut() {
            Some(last) if size + bytes <= max_bytes => {
                size += bytes;
                last.push(record);
            }
            _ => {
                size = bytes;
                out.push(vec![record]);
            }
        }
    }
    out
}

/// The outbox relay's Kafka sink.
pub struct KafkaEventSink {
    settings: KafkaSettings,
    connected: Mutex<Option<Arc<Connected>>>,
}

impl std::fmt::Debug for KafkaEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventSink")
            .field("brokers", &self.settings.brokers)
            .field("topic", &self.settings.topic)
            .finish()
    }
}

impl KafkaEventSink {
    /// A sink that connects on its first append (the service starts while
    /// the broker is down; only the Kafka copy waits).
    pub fn new(settings: KafkaSettings) -> Self {
        Self {
            settings,
            connected: Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<Arc<Connected>, Unavailable> {
        let mut slot = self.connected.lock().await;
        if let Some(connected) = slot.as_ref() {
            return Ok(Arc::clone(connected));
        }
        let connected = Arc::new(connect(&self.settings).await?);
        *slot = Some(Arc::clone(&connected));
        Ok(connected)
    }

    async fn produce(
        &self,
        connected: &Connected,
        events: &[OutboxEvent],
    ) -> Result<(), Unavailable> {
        let partitions = connected.partitions.len();
        let now = chrono::Utc::now();
        // Each partition's records in outbox order.
        let mut batches: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for event in events {
            let partition = partition_for(event.key.as_bytes(), partitions);
            batches.entry(partition).or_default().push(Record {
                key: Some(event.key.as_bytes().to_vec()),
                value: Some(event.payload.as_bytes().to_vec()),
                headers: BTreeMap::from([
                    ("eventId".to_owned(), event.event_id.as_bytes().to_vec()),
                    ("type".to_owned(), event.event_type.as_bytes().to_vec()),
                ]),
                timestamp: now,
            });
        }
        let timeout = self.settings.timeout;
        // Partitions in parallel; each partition's chunks one after the
        // other, so its records stay in outbox order.
        try_join_all(batches.into_iter().map(|(partition, records)| {
            let client = &connected.partitions[partition];
            async move {
                for chunk in chunks(records, PRODUCE_MAX_BYTES) {
                    bounded(timeout, client.produce(chunk, Compression::NoCompression)).await?;
                }
                Ok::<(), Unavailable>(())
            }
        }))
        .await?;
        Ok(())
    }
}

#[async_trait]
impl EventSink for KafkaEventSink {
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), Unavailable> {
        if events.is_empty() {
            return Ok(());
        }
        let connected = self.connection().await?;
        let produced = self.produce(&connected, events).await;
        if produced.is_err() {
            // Connect again next time: the broker may have restarted without
            // the topic, or moved a partition's leader.
            *self.connected.lock().await = None;
        }
        produced
    }
}

/// One record read back from the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub partition: usize,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: BTreeMap<String, String>,
}

/// Reads the topic partition by partition from given offsets, like a
/// console consumer (`app events tail --sink kafka`, the tests). It keeps
/// no offsets in Kafka: the caller carries them.
pub struct KafkaTopicReader {
    connected: Connected,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaTopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTopicReader")
            .field("partitions", &self.connected.partitions.len())
            .finish()
    }
}

impl KafkaTopicReader {
    /// Connects (creating the topic when it is missing, as the relay would).
    ///
    /// # Errors
    /// [`Unavailable`] when the brokers do not answer in time.
    pub async fn connect(settings: &KafkaSettings) -> Result<Self, Unavailable> {
        Ok(Self {
            connected: connect(settings).await?,
            timeout: settings.timeout,
        })
    }

    pub fn partitions(&self) -> usize {
        self.connected.partitions.len()
    }

    /// Where reading `partition` starts: its earliest kept record, or its
    /// end (only what arrives from now on).
    ///
    /// # Errors
    /// [`Unavailable`] when the broker fails or does not answer in time.
    pub async fn start_offset(
        &self,
        partition: usize,
        from_start: bool,
    ) -> Result<i64, Unavailable> {
        let client = self.partition(partition)?;
        let at = if from_start {
            OffsetAt::Earliest
        } else {
            OffsetAt::Latest
        };
        bounded(self.timeout, client.get_offset(at)).await
    }

    fn partition(&self, partition: usize) -> Result<&PartitionClient, Unavailable> {
        self.connected
            .partitions
            .get(partition)
            .ok_or_else(|| unavailable(format!("no partition {partition}")))
    }

    /// Records of `partition` from `offset` on, waiting up to `max_wait` for
    /// the first (capped below the timeout).
    ///
    /// # Errors
    /// [`Unavailable`] when the broker fails or does not answer in time.
    pub async fn fetch(
        &self,
        partition: usize,
        offset: i64,
        max_wait: Duration,
    ) -> Result<Vec<KafkaRecord>, Unavailable> {
        let client = self.partition(partition)?;
        let wait = max_wait.min(self.timeout / 2);
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let (records, _high_watermark) = bounded(
            self.timeout,
            client.fetch_records(offset, 1..FETCH_MAX_BYTES, wait_ms),
        )
        .await?;
        Ok(records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .map(|r| KafkaRecord {
                partition,
                offset: r.offset,
                key: r
                    .record
                    .key
                    .map(|k| String::from_utf8_lossy(&k).into_owned()),
                value: String::from_utf8_lossy(&r.record.value.unwrap_or_default()).into_owned(),
                headers: r
                    .record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`), so a key lands
    /// where the Java client would put it.
    #[test]
    fn murmur2_matches_kafkas_partitioner() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key).cast_signed(),
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition_within_range() {
        for id in 0..1000u32 {
            let key = id.to_string();
            let partition = partition_for(key.as_bytes(), 3);
            assert!(partition < 3);
            assert_eq!(partition, partition_for(key.as_bytes(), 3));
        }
        assert_eq!(partition_for(b"anything", 1), 0);
    }

    #[test]
    fn a_large_batch_is_cut_in_order_below_the_limit() {
        let record = |n: usize| Record {
            key: Some(n.to_string().into_bytes()),
            value: Some(vec![b'x'; 300]),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        };
        let records: Vec<Record> = (0..100).map(record).collect();
        let cut = chunks(records.clone(), 1_000);
        assert!(
            cut.iter()
                .all(|c| c.iter().map(Record::approximate_size).sum::<usize>() <= 1_000)
        );
        assert_eq!(cut.concat(), records, "every record once, in order");
        assert_eq!(
            chunks(vec![record(1)], 10).len(),
            1,
            "an oversized record goes alone"
        );
        assert!(chunks(Vec::new(), 10).is_empty());
    }

    #[test]
    fn brokers_are_split_and_trimmed() {
        let settings = KafkaSettings::new(" a:1, b:2,,", 3, 1, Duration::from_secs(5));
        assert_eq!(settings.brokers, ["a:1", "b:2"]);
        assert_eq!(settings.topic, "order-events");
    }
}
