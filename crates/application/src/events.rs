//! The outbox relay's step: move one batch of pending events to the stream.
//!
//! Append first, then mark published: a crash in between publishes the batch
//! again (at-least-once), never loses it. The job that calls this runs on one
//! instance at a time (a Redis lock) and retries with backoff while the
//! stream is down.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::events::{EventStream, Outbox};

pub struct RelayOutbox {
    outbox: Arc<dyn Outbox>,
    stream: Arc<dyn EventStream>,
    batch: usize,
}

impl std::fmt::Debug for RelayOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOutbox")
            .field("batch", &self.batch)
            .finish()
    }
}

impl RelayOutbox {
    pub fn new(outbox: Arc<dyn Outbox>, stream: Arc<dyn EventStream>, batch: usize) -> Self {
        Self {
            outbox,
            stream,
            batch: batch.max(1),
        }
    }

    /// How far behind publishing is (for the metrics).
    ///
    /// # Errors
    /// [`Unavailable`] when the outbox cannot be read.
    pub async fn backlog(&self) -> Result<domain::events::OutboxBacklog, Unavailable> {
        self.outbox.backlog().await
    }

    /// The batch size: a full batch means more may be waiting.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Publishes up to one batch; returns how many events were published.
    ///
    /// # Errors
    /// [`Unavailable`] when the outbox or the stream fails.
    pub async fn relay_batch(&self) -> Result<usize, Unavailable> {
        let events = self.outbox.pending(self.batch).await?;
        if events.is_empty() {
            return Ok(0);
        }
        self.stream.append(&events).await?;
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        self.outbox.mark_published(&ids).await?;
        Ok(events.len())
    }
}

#[cfg(test)]
mod tests {
    use domain::events::{MockEventStream, MockOutbox, OutboxEvent};
    use mockall::Sequence;

    use super::*;

    fn event(id: i64) -> OutboxEvent {
        OutboxEvent {
            id,
            event_id: format!("e-{id}"),
            event_type: "order.paid".into(),
            payload: format!("{{\"orderId\":{id}}}"),
        }
    }

    #[tokio::test]
    async fn appends_the_batch_in_order_then_marks_it_published() {
        let mut seq = Sequence::new();
        let mut outbox = MockOutbox::new();
        let mut stream = MockEventStream::new();
        outbox
            .expect_pending()
            .withf(|limit| *limit == 100)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![event(1), event(2)]));
        stream
            .expect_append()
            .withf(|events| events.iter().map(|e| e.id).collect::<Vec<_>>() == [1, 2])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        outbox
            .expect_mark_published()
            .withf(|ids| ids == [1, 2])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));

        let published = RelayOutbox::new(Arc::new(outbox), Arc::new(stream), 100)
            .relay_batch()
            .await;

        assert_eq!(published.expect("relayed"), 2);
    }

    #[tokio::test]
    async fn a_failing_stream_marks_nothing_so_the_batch_is_retried() {
        let mut outbox = MockOutbox::new();
        outbox.expect_pending().returning(|_| Ok(vec![event(1)]));
        outbox.expect_mark_published().never();
        let mut stream = MockEventStream::new();
        stream
            .expect_append()
            .returning(|_| Err(Unavailable::new("redis", "connection refused")));

        let result = RelayOutbox::new(Arc::new(outbox), Arc::new(stream), 10)
            .relay_batch()
            .await;

        assert!(matches!(result, Err(u) if u.service() == "redis"));
    }

    #[tokio::test]
    async fn nothing_pending_touches_no_stream() {
        let mut outbox = MockOutbox::new();
        outbox.expect_pending().returning(|_| Ok(vec![]));
        let mut stream = MockEventStream::new();
        stream.expect_append().never();

        let published = RelayOutbox::new(Arc::new(outbox), Arc::new(stream), 10)
            .relay_batch()
            .await;

        assert_eq!(published.expect("ran"), 0);
    }
}
