//! The [`Outbox`] on Postgres: the `outbox` table written by order placement.
//! Each sink's progress is a column of its own (`published_at` for the Redis
//! stream, `kafka_published_at` for Kafka), each with a partial index of the
//! rows it still owes, so one sink's backlog never slows the other's reads.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_types::{Array, Double, Int8, Text};
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::events::{Outbox, OutboxBacklog, OutboxEvent, Sink};

use super::prepared::prepared;
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgOutbox {
    db: Postgres,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgOutbox")
    }
}

impl PgOutbox {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

/// One sink's statements: the same three, on its own column.
struct Statements {
    backlog: &'static str,
    pending: &'static str,
    mark: &'static str,
}

/// Spelled out per sink (not formatted at run time): each is a prepared
/// statement with a fixed text, served by that sink's partial index.
macro_rules! statements {
    ($column:literal) => {
        Statements {
            backlog: concat!(
                "SELECT count(*) AS unpublished, \
                        coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                          AS oldest_age_seconds \
                   FROM outbox WHERE ",
                $column,
                " IS NULL"
            ),
            pending: concat!(
                "SELECT id, event_id::text AS event_id, event_type, \
                        coalesce(payload->>'orderId', event_id::text) AS key, payload::text AS payload \
                   FROM outbox WHERE ",
                $column,
                " IS NULL ORDER BY id LIMIT $1"
            ),
            mark: concat!(
                "UPDATE outbox SET ",
                $column,
                " = now() WHERE id = ANY($1)"
            ),
        }
    };
}

const STREAM: Statements = statements!("published_at");
const KAFKA: Statements = statements!("kafka_published_at");

fn statements(sink: Sink) -> &'static Statements {
    match sink {
        Sink::Stream => &STREAM,
        Sink::Kafka => &KAFKA,
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    payload: String,
}

#[derive(QueryableByName)]
struct BacklogRow {
    #[diesel(sql_type = Int8)]
    unpublished: i64,
    #[diesel(sql_type = Double)]
    oldest_age_seconds: f64,
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn backlog(&self, sink: Sink) -> Result<OutboxBacklog, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                // Served by the sink's partial index on unpublished rows.
                let row: BacklogRow = prepared(statements(sink).backlog)
                    .get_result(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(OutboxBacklog {
                    unpublished: row.unpublished,
                    oldest_age_seconds: row.oldest_age_seconds.max(0.0),
                })
            })
            .await
    }

    async fn pending(&self, sink: Sink, limit: usize) -> Result<Vec<OutboxEvent>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let rows: Vec<Row> = prepared(statements(sink).pending)
                    .bind::<Int8, _>(i64::try_from(limit).unwrap_or(i64::MAX))
                    .load(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(rows
                    .into_iter()
                    .map(|r| OutboxEvent {
                        id: r.id,
                        event_id: r.event_id,
                        event_type: r.event_type,
                        key: r.key,
                        payload: r.payload,
                    })
                    .collect())
            })
            .await
    }

    async fn mark_published(&self, sink: Sink, ids: &[i64]) -> Result<(), Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                prepared(statements(sink).mark)
                    .bind::<Array<Int8>, _>(ids)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
    }
}
