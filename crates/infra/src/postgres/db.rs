//! The handle every Postgres adapter shares: the pool, plus a client-side
//! limit on each operation.
//!
//! Postgres' `statement_timeout` only helps while the server answers. When the
//! server hangs or the network drops packets without closing the connection,
//! only a client-side timeout keeps a request from waiting for minutes, so
//! every repository operation runs through [`Postgres::timed`].

use std::future::Future;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Object;
use domain::error::Unavailable;

use super::{PgPool, unavailable};

/// The pool and the longest any one operation may take.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    op_timeout: Duration,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Postgres")
            .field("max_size", &status.max_size)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl Postgres {
    pub fn new(pool: PgPool, op_timeout: Duration) -> Self {
        Self { pool, op_timeout }
    }

    /// The underlying pool (for gauges and start-up code).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection, within the pool's own wait and connect timeouts.
    ///
    /// # Errors
    /// [`Unavailable`] when none can be had in time.
    pub async fn conn(&self) -> Result<Object<AsyncPgConnection>, Unavailable> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Runs one repository operation, giving up with [`Unavailable`] when it
    /// takes longer than the operation timeout. Dropping the operation returns
    /// its connection to the pool, where it is checked before reuse.
    ///
    /// # Errors
    /// The operation's own error, or `Unavailable` on timeout.
    pub async fn timed<T, E: From<Unavailable>>(
        &self,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(result) => result,
            Err(_) => {
                Err(unavailable(format!("operation timed out after {:?}", self.op_timeout)).into())
            }
        }
    }
}
