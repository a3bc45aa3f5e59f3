//! The [`Outbox`] on Postgres: the `outbox` table written by order placement.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_types::{Array, Double, Int8, Text};
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::events::{Outbox, OutboxBacklog, OutboxEvent};

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

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Int8)]
    id: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
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
    async fn backlog(&self) -> Result<OutboxBacklog, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                // Served by the partial index on unpublished rows.
                let row: BacklogRow = prepared(
                    "SELECT count(*) AS unpublished, \
                            coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                              AS oldest_age_seconds \
                       FROM outbox WHERE published_at IS NULL",
                )
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

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEvent>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let rows: Vec<Row> = prepared(
                    "SELECT id, event_id::text AS event_id, event_type, payload::text AS payload \
                       FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                )
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
                        payload: r.payload,
                    })
                    .collect())
            })
            .await
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                prepared("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
                    .bind::<Array<Int8>, _>(ids)
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
    }
}
