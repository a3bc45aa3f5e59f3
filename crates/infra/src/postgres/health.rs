//! Readiness probe: one `SELECT 1` through the pool.

use async_trait::async_trait;
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use domain::error::Unavailable;
use domain::health::HealthProbe;

use super::{Postgres, unavailable};

#[derive(Clone)]
pub struct PostgresProbe {
    db: Postgres,
}

impl std::fmt::Debug for PostgresProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresProbe")
    }
}

impl PostgresProbe {
    pub fn new(db: Postgres) -> Self {
        Self { db }
    }
}

#[async_trait]
impl HealthProbe for PostgresProbe {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), Unavailable> {
        self.db
            .timed(async {
                let mut conn = self.db.conn().await?;
                diesel::select(diesel::dsl::sql::<Integer>("1"))
                    .get_result::<i32>(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
    }
}
