//! The [`SalesRanking`] straight from Postgres: exact, and the fallback when
//! the Redis ranking is down. `orders_created_at_idx` keeps it to the orders
//! of the window.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_types::Int8;
use diesel_async::RunQueryDsl;
use domain::catalog::{POPULAR_WINDOW_HOURS, ProductId, ProductSales, SalesRanking};
use domain::error::Unavailable;

use super::prepared::prepared;
use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PgSalesRanking {
    db: Postgres,
}

impl std::fmt::Debug for PgSalesRanking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgSalesRanking")
    }
}

impl PgSalesRanking {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Int8)]
    product_id: i64,
    #[diesel(sql_type = Int8)]
    sold: i64,
}

#[async_trait]
impl SalesRanking for PgSalesRanking {
    async fn top(&self, limit: usize) -> Result<Vec<ProductSales>, Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                let rows: Vec<Row> = prepared(
                    "SELECT i.product_id, sum(i.quantity)::bigint AS sold \
                       FROM orders o JOIN order_items i ON i.order_id = o.id \
                      WHERE o.created_at >= now() - make_interval(hours => $1::int) \
                      GROUP BY i.product_id \
                      ORDER BY sold DESC, i.product_id ASC \
                      LIMIT $2",
                )
                .bind::<Int8, _>(POPULAR_WINDOW_HOURS)
                .bind::<Int8, _>(i64::try_from(limit).unwrap_or(5))
                .load(&mut *conn)
                .await
                .map_err(unavailable)?;
                Ok(rows
                    .into_iter()
                    .map(|r| ProductSales {
                        product_id: ProductId::new(r.product_id),
                        sold: r.sold,
                    })
                    .collect())
            })
            .await
    }
}
