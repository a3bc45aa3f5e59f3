//! Events for the external data platform, delivered through a transactional
//! outbox: a change writes its event in the same transaction, and one relay
//! per [`Sink`] appends pending events to that sink afterwards, with its own
//! progress, so a sink that is down delays only its own copy. Delivery is
//! at-least-once; consumers dedupe on `eventId`.

use async_trait::async_trait;

use crate::error::Unavailable;

/// Where the outbox's events go. Each sink has its own relay (one active
/// instance each) and its own record of what it has published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sink {
    /// The Redis stream `events:orders`, which the service's own consumers
    /// read (popular products, `app events tail`). Always on.
    Stream,
    /// The Kafka topic for the data platform, when brokers are configured.
    Kafka,
}

impl Sink {
    /// The sink's name in metrics, logs and lock names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Kafka => "kafka",
        }
    }
}

/// An event written by a transaction and not yet known to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Position in the outbox (publication order).
    pub id: i64,
    /// The event's own id, which consumers dedupe on.
    pub event_id: String,
    pub event_type: String,
    /// What the event is about (an order's id), which a partitioned sink
    /// keys it by, so one subject's events stay in order.
    pub key: String,
    /// The event as JSON text, exactly as published.
    pub payload: String,
}

/// How far the relay is behind: unpublished events and the age of the
/// oldest one (zero when there is none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    pub unpublished: i64,
    pub oldest_age_seconds: f64,
}

/// The outbox table.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` events not yet published to `sink`, oldest first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn pending(&self, sink: Sink, limit: usize) -> Result<Vec<OutboxEvent>, Unavailable>;

    /// Records that these events are in `sink`.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails (the events will be published again).
    async fn mark_published(&self, sink: Sink, ids: &[i64]) -> Result<(), Unavailable>;

    /// The count of events not yet in `sink` and the oldest one's age.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn backlog(&self, sink: Sink) -> Result<OutboxBacklog, Unavailable>;
}

/// A place events are published to: the Redis stream, a Kafka topic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Appends the events, in order for each [`OutboxEvent::key`].
    ///
    /// # Errors
    /// [`Unavailable`] when the sink fails; some events may have been
    /// appended (they will be appended again: consumers dedupe).
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), Unavailable>;
}
