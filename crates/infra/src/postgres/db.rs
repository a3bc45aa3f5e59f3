//! The handle every Postgres adapter shares: the pool, plus a client-side
//! limit on each operation.
//!
//! Postgres' `statement_timeout` only helps while the server answers. When the
//! server hangs or the network drops packets without closing the connection,
//! only a client-side timeout keeps a request from waiting for minutes, so
//! every repository operation runs through [`Postgres::timed`].

use std::future::Future;
use std::time::Duration;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use domain::error::Unavailable;

use super::{PgPool, unavailable};
use crate::thread_sets::{ThreadSets, total_status};

/// Where connections come from: one pool, or a pool per thread
/// ([`ThreadSets`]: a connection's driver task runs on the thread that
/// opened it).
#[derive(Clone)]
enum Pools {
    One(PgPool),
    PerThread(Arc<ThreadSets<PgPool>>),
}

/// The pool and the longest any one operation may take.
#[derive(Clone)]
pub struct Postgres {
    pools: Pools,
    op_timeout: Duration,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("max_size", &self.status().max_size)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl Postgres {
    /// Connections from `pool`, shared by every thread.
    pub fn new(pool: PgPool, op_timeout: Duration) -> Self {
        Self {
            pools: Pools::One(pool),
            op_timeout,
        }
    }

    /// Connections from a pool per thread, each built by `make`.
    pub fn per_thread(
        make: impl Fn() -> PgPool + Send + Sync + 'static,
        op_timeout: Duration,
    ) -> Self {
        Self {
            pools: Pools::PerThread(Arc::new(ThreadSets::new(make))),
            op_timeout,
        }
    }

    /// Connections open, idle and waited for, over every pool (for gauges).
    pub fn status(&self) -> deadpool::managed::Status {
        match &self.pools {
            Pools::One(pool) => pool.status(),
            Pools::PerThread(sets) => total_status(sets.all().iter().map(PgPool::status)),
        }
    }

    /// How long one repository operation may take ([`timed`](Self::timed)).
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// A pooled connection, within the pool's own wait and connect timeouts.
    ///
    /// # Errors
    /// [`Unavailable`] when none can be had in time.
    pub async fn conn(&self) -> Result<PgConn, Unavailable> {
        let pool = match &self.pools {
            Pools::One(pool) => pool.clone(),
            Pools::PerThread(sets) => sets.local(),
        };
        pool.get()
            .await
            .map(|c| PgConn(Some(c)))
            .map_err(unavailable)
    }

    /// Runs one repository operation, giving up with [`Unavailable`] when it
    /// takes longer than the operation timeout. Dropping the operation closes
    /// its connection if a transaction was open ([`PgConn`]), else returns it
    /// to the pool, which discards it if the server closed it.
    ///
    /// # Errors
    /// The operation's own error, or `Unavailable` on timeout.
    pub async fn timed<T, E: From<Unavailable>>(
        &self,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        // The operation timeout, or what is left of the request's budget.
        let limit = domain::deadline::remaining(self.op_timeout);
        match tokio::time::timeout(limit, op).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(format!("operation timed out after {limit:?}")).into()),
        }
    }
}

/// A pooled connection that never goes back to the pool inside a transaction.
///
/// When a request's future is dropped halfway through a transaction (its
/// client went away, or [`Postgres::timed`] gave up), a plain pooled
/// connection would return to the pool with the transaction still open,
/// holding its row locks and its idempotency key's lock until someone reused
/// it. This wrapper closes such a connection instead, so the server rolls the
/// transaction back and frees the locks at once. (Postgres'
/// `idle_in_transaction_session_timeout`, set on every connection, bounds the
/// case where the close cannot reach the server.)
pub struct PgConn(Option<Object<AsyncPgConnection>>);

impl Deref for PgConn {
    type Target = Object<AsyncPgConnection>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("PgConn holds its connection until dropped")
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .expect("PgConn holds its connection until dropped")
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            let status = <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(&mut conn);
            if !matches!(status.transaction_depth(), Ok(None)) {
                tracing::warn!("closing a connection dropped inside a transaction");
                drop(Object::take(conn));
            }
        }
    }
}
