//! Events for the external data platform, delivered through a transactional
//! outbox: a change writes its event in the same transaction, and a relay
//! appends pending events to a stream afterwards. Delivery is at-least-once;
//! consumers dedupe on `eventId`.

use async_trait::async_trait;

use crate::error::Unavailable;

/// An event written by a transaction and not yet known to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Position in the outbox (publication order).
    pub id: i64,
    /// The event's own id, which consumers dedupe on.
    pub event_id: String,
    pub event_type: String,
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
    /// Up to `limit` unpublished events, oldest first.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEvent>, Unavailable>;

    /// Records that these events are in the stream.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails (the events will be published again).
    async fn mark_published(&self, ids: &[i64]) -> Result<(), Unavailable>;

    /// The unpublished events' count and the oldest one's age.
    ///
    /// # Errors
    /// [`Unavailable`] when the store fails.
    async fn backlog(&self) -> Result<OutboxBacklog, Unavailable>;
}

/// The stream consumers read (Redis stream `events:orders`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventStream: Send + Sync {
    /// Appends the events in order.
    ///
    /// # Errors
    /// [`Unavailable`] when the stream fails; some events may have been
    /// appended (they will be appended again: consumers dedupe).
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), Unavailable>;
}
