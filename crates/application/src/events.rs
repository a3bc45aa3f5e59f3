//! The outbox relay's step: move one batch of pending events to one sink.
//!
//! Append first, then mark published for that sink: a crash in between
//! publishes the batch again (at-least-once), never loses it. Each sink has
//! its own relay and its own progress, so a sink that is down holds back
//! only its own copy. The job that calls this runs on one instance at a time
//! per sink (a Redis lock) and retries with backoff while the sink is down.

use std::sync::Arc;

use domain::error::Unavailable;
use domain::events::{EventSink, Outbox, Sink};

pub struct RelayOutbox {
    outbox: Arc<dyn Outbox>,
    sink: Sink,
    target: Arc<dyn EventSink>,
    batch: usize,
}

impl std::fmt::Debug for RelayOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOutbox")
            .field("sink", &self.sink)
            .field("batch", &self.batch)
            .finish()
    }
}

impl RelayOutbox {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        sink: Sink,
        target: Arc<dyn EventSink>,
        batch: usize,
    ) -> Self {
        Self {
            outbox,
            sink,
            target,
            batch: batch.max(1),
        }
    }

    /// The sink this relay publishes to.
    pub fn sink(&self) -> Sink {
        self.sink
    }

    /// How far behind publishing to this sink is (for the metrics).
    ///
    /// # Errors
    /// [`Unavailable`] when the outbox cannot be read.
    pub async fn backlog(&self) -> Result<domain::events::OutboxBacklog, Unavailable> {
        self.outbox.backlog(self.sink).await
    }

    /// The batch size: a full batch means more may be waiting.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Publishes up to one batch; returns how many events were published.
    ///
    /// # Errors
    /// [`Unavailable`] when the outbox or the sink fails.
    pub async fn relay_batch(&self) -> Result<usize, Unavailable> {
        let events = self.outbox.pending(self.sink, self.batch).await?;
        if events.is_empty() {
            return Ok(0);
        }
        self.target.append(&events).await?;
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        self.outbox.mark_published(self.sink, &ids).await?;
        Ok(events.len())
    }
}

#[cfg(test)]
mod tests {
    use domain::events::{MockEventSink, MockOutbox, OutboxEvent};
    use mockall::Sequence;

    use super::*;

    fn event(id: i64) -> OutboxEvent {
        OutboxEvent {
            id,
            event_id: format!("e-{id}"),
            event_type: "order.paid".into(),
            key: id.to_string(),
            payload: format!("{{\"orderId\":{id}}}"),
        }
    }

    #[tokio::test]
    async fn appends_the_batch_in_order_then_marks_it_published_for_its_own_sink() {
        let mut seq = Sequence::new();
        let mut outbox = MockOutbox::new();
        let mut sink = MockEventSink::new();
        outbox
            .expect_pending()
            .withf(|sink, limit| *sink == Sink::Kafka && *limit == 100)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(vec![event(1), event(2)]));
        sink.expect_append()
            .withf(|events| events.iter().map(|e| e.id).collect::<Vec<_>>() == [1, 2])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        outbox
            .expect_mark_published()
            .withf(|sink, ids| *sink == Sink::Kafka && ids == [1, 2])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));

        let published = RelayOutbox::new(Arc::new(outbox), Sink::Kafka, Arc::new(sink), 100)
            .relay_batch()
            .await;

        assert_eq!(published.expect("relayed"), 2);
    }

    #[tokio::test]
    async fn a_failing_sink_marks_nothing_so_the_batch_is_retried() {
        let mut outbox = MockOutbox::new();
        outbox.expect_pending().returning(|_, _| Ok(vec![event(1)]));
        outbox.expect_mark_published().never();
        let mut sink = MockEventSink::new();
        sink.expect_append()
            .returning(|_| Err(Unavailable::new("redis", "connection refused")));

        let result = RelayOutbox::new(Arc::new(outbox), Sink::Stream, Arc::new(sink), 10)
            .relay_batch()
            .await;

        assert!(matches!(result, Err(u) if u.service() == "redis"));
    }

    #[tokio::test]
    async fn nothing_pending_touches_no_sink() {
        let mut outbox = MockOutbox::new();
        outbox.expect_pending().returning(|_, _| Ok(vec![]));
        let mut sink = MockEventSink::new();
        sink.expect_append().never();

        let published = RelayOutbox::new(Arc::new(outbox), Sink::Stream, Arc::new(sink), 10)
            .relay_batch()
            .await;

        assert_eq!(published.expect("ran"), 0);
    }
}
